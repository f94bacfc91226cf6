"""Batched image-quality metrics on the 0..255 scale.

Example:

>>> import numpy as np
>>> a = np.zeros([2, 16, 16, 3], np.uint8); b = a + 10
>>> [round(v, 2) for v in psnr(a, b).numpy().tolist()]
[28.13, 28.13]
"""

from __future__ import annotations

import tensorflow as tf

from distort.conventions import to_float_batch


def psnr(images, references) -> tf.Tensor:
    """Peak signal-to-noise ratio in dB, one value per image (max value 255).

    Args:
        images: Distorted or restored images, NHWC, uint8 or float on 0..255.
        references: Clean images of the same shape.

    Returns:
        A float32 tensor `[N]`; identical images give `inf`.
    """
    a, _, _ = to_float_batch(images)
    b, _, _ = to_float_batch(references)
    _check_same_shape(a, b)
    return tf.image.psnr(a, b, max_val=255.0)


def ssim(images, references) -> tf.Tensor:
    """Structural similarity (Gaussian window 11, sigma 1.5), one value per image.

    Args:
        images: Distorted or restored images, NHWC, uint8 or float on 0..255,
            at least 11x11.
        references: Clean images of the same shape.

    Returns:
        A float32 tensor `[N]` in [-1, 1]; identical images give 1.
    """
    a, _, _ = to_float_batch(images)
    b, _, _ = to_float_batch(references)
    _check_same_shape(a, b)
    return tf.image.ssim(a, b, max_val=255.0)


def _check_same_shape(a: tf.Tensor, b: tf.Tensor) -> None:
    if a.shape.is_fully_defined() and b.shape.is_fully_defined() and a.shape != b.shape:
        raise ValueError(f"images and references must have the same shape. "
                         f"Received: {a.shape} and {b.shape}")

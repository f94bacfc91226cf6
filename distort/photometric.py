"""Photometric distortions: changes of the pixel values that keep the image's structure.

Example:

>>> import numpy as np
>>> int(contrast(np.full([2, 16, 16, 3], 200, np.uint8), 0.5, gray=100.0).numpy().max())
150
"""

from __future__ import annotations

import tensorflow as tf

from distort.conventions import check_levels, from_float_batch, to_float_batch


def contrast(images, alpha, gray: str | float = "mean"):
    """Contrast reduction by blending with a gray image (Dodge & Karam).

    `out = (1 - alpha) * image + alpha * gray`: alpha = 0 is the identity and
    alpha = 1 a flat gray image.

    Args:
        images: Images (see `distort.conventions`).
        alpha: Blending weight of the gray image in [0, 1]; a number or one
            per image.
        gray: "mean" (default): each image's mean luminance (Haeberli's
            interpolation, which Dodge & Karam cite); or a fixed gray value in
            0..255.

    Returns:
        The images with reduced contrast, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> float(contrast(np.array([[[[0.0, 0, 0]], [[255, 255, 255]]]]), 1.0)[0, 0, 0, 0])
    127.5
    """
    images, alpha = check_levels(images, "alpha", alpha, 0.0, 1.0)
    if not (gray == "mean" or (isinstance(gray, (int, float)) and 0 <= gray <= 255)):
        raise ValueError(f"gray must be 'mean' or a value in [0, 255]. Received: gray={gray!r}")
    x, dtype, single = to_float_batch(images)
    if gray == "mean":
        if x.shape[-1] == 3:
            lum = tf.tensordot(x, tf.constant([0.299, 0.587, 0.114]), axes=[[3], [0]])[..., None]
        else:
            lum = x
        g = tf.reduce_mean(lum, axis=[1, 2, 3], keepdims=True)
    else:
        g = tf.constant(float(gray))
    a = tf.reshape(tf.cast(alpha, tf.float32), [-1, 1, 1, 1])
    return from_float_batch((1.0 - a) * x + a * g, dtype, single)

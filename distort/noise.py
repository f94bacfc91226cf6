"""Additive noise.

Zhou et al.'s combined distortion (two blurs, then Gaussian noise) lives with
the blurs: `distort.blur.combined`.

Example:

>>> import numpy as np
>>> awgn(np.full([2, 16, 16, 3], 128, np.uint8), 20.0, seed=0).dtype
tf.uint8
"""

from __future__ import annotations

import tensorflow as tf

from distort.conventions import check_levels, from_float_batch, seed_tensor, to_float_batch


def awgn(images, sigma, seed: int | None = None, clip: bool = True):
    """Additive white Gaussian noise, per pixel and channel.

    Args:
        images: Images (see `distort.conventions`).
        sigma: Noise standard deviation on the 0..255 scale, >= 0; a number or
            one per image.
        seed: Noise seed, an integer in `[0, 2**31 - 1]`; `None` draws fresh noise.
        clip: Clip to 0..255 (default). `False` keeps float outputs unclipped,
            as the original DeepCorrect code did (uint8 outputs are always clipped).

    Returns:
        The noisy images, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> y = awgn(np.full([1, 64, 64, 3], 128.0, np.float32), 10.0, seed=1)
    >>> 9.0 < float(np.std(y)) < 11.0
    True
    """
    s0 = seed_tensor(seed)
    images, sigma = check_levels(images, "sigma", sigma)
    x, dtype, single = to_float_batch(images)
    s = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1, 1, 1])
    y = x + s * tf.random.stateless_normal(tf.shape(x), s0)
    if not clip and dtype != tf.uint8:
        y = tf.cast(y, dtype)
        return y[0] if single else y
    return from_float_batch(y, dtype, single)

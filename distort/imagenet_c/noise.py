"""ImageNet-C noise: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle.

Each takes images (NHWC or HWC, uint8 or float on 0..255), a severity 1..5
(or one per image) and a seed; the same seed gives the same bytes, and
`seed=None` draws fresh noise. The noise is drawn per pixel and channel, on
the 0..1 scale, with the reference's constants
(`distort.imagenet_c.constants.SEVERITIES`).

Example:

>>> import numpy as np
>>> from distort.imagenet_c import noise
>>> noise.gaussian_noise(np.full([1, 32, 32, 3], 128, np.uint8), 1, seed=0).shape
TensorShape([1, 32, 32, 3])
"""

from __future__ import annotations

import tensorflow as tf

from distort.imagenet_c.common import corrupt, corruption_doc, params


@corruption_doc("The noisy images", seed="Noise seed; `None` draws fresh noise.")
def gaussian_noise(images, severity, seed: int | None = None):
    """Additive Gaussian noise: `x + N(0, c)` on the 0..1 scale, c = 0.08 .. 0.38.

    Example:

    >>> import numpy as np
    >>> y = gaussian_noise(np.full([1, 64, 64, 3], 128.0, np.float32), 1, seed=0)
    >>> 19.0 < float(np.std(y)) < 22.0
    True
    """
    def fn(x, s, seed):
        return x + params("gaussian_noise", s) * tf.random.stateless_normal(tf.shape(x), seed)

    return corrupt(images, severity, fn, seed)


@corruption_doc("The noisy images", seed="Noise seed; `None` draws fresh noise.")
def shot_noise(images, severity, seed: int | None = None):
    """Poisson (photon) noise: `Poisson(x * c) / c` on the 0..1 scale, c = 60 .. 3.

    Example:

    >>> import numpy as np
    >>> int(shot_noise(np.zeros([8, 8, 3], np.uint8), 5, seed=0).numpy().max())
    0
    """
    def fn(x, s, seed):
        c = float(params("shot_noise", s))
        return tf.random.stateless_poisson(tf.shape(x), seed, x * c, dtype=tf.float32) / c

    return corrupt(images, severity, fn, seed)


@corruption_doc("The noisy images", seed="Noise seed; `None` draws fresh noise.")
def impulse_noise(images, severity, seed: int | None = None):
    """Salt-and-pepper noise: a fraction c of the values set to 0 or 1, half each.

    scikit-image's `random_noise(mode="s&p", amount=c)`: every value (pixel
    and channel) is hit with probability c = 0.03 .. 0.27, and a hit is salt
    (1) or pepper (0) with probability 1/2.

    Example:

    >>> import numpy as np
    >>> y = impulse_noise(np.full([1, 64, 64, 3], 128, np.uint8), 5, seed=0).numpy()
    >>> sorted(set(np.unique(y).tolist()))
    [0, 128, 255]
    """
    def fn(x, s, seed):
        u = tf.random.stateless_uniform(tf.concat([[2], tf.shape(x)], 0), seed)
        hit = u[0] < params("impulse_noise", s)
        salt = u[1] < 0.5
        return tf.where(hit, tf.where(salt, 1.0, 0.0), x)

    return corrupt(images, severity, fn, seed)


@corruption_doc("The noisy images", seed="Noise seed; `None` draws fresh noise.")
def speckle_noise(images, severity, seed: int | None = None):
    """Multiplicative noise: `x + x * N(0, c)` on the 0..1 scale, c = 0.15 .. 0.6.

    Example:

    >>> import numpy as np
    >>> int(speckle_noise(np.zeros([8, 8, 3], np.uint8), 5, seed=0).numpy().max())
    0
    """
    def fn(x, s, seed):
        return x + x * params("speckle_noise", s) * tf.random.stateless_normal(tf.shape(x), seed)

    return corrupt(images, severity, fn, seed)

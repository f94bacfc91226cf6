"""ImageNet-C digital corruptions: brightness, contrast, saturate, elastic, pixelate, JPEG.

Each takes images (NHWC or HWC, uint8 or float on 0..255) and a severity
1..5 (or one per image); elastic_transform also takes a seed. The ImageNet-C
contrast is registered as `imagenet_c.contrast`, apart from Dodge & Karam's
`contrast` of `distort.photometric` (a blend with the mean luminance).

Example:

>>> import numpy as np
>>> from distort.imagenet_c import digital
>>> digital.pixelate(np.zeros([1, 32, 32, 3], np.uint8), 5).shape
TensorShape([1, 32, 32, 3])
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from distort.codecs import jpeg
from distort.imagenet_c.common import (corrupt, corruption_doc, fold_seed, gaussian_filter, params,
                                       static_size)


@corruption_doc("The brighter images")
def brightness(images, severity):
    """ImageNet-C brightness: `c` (0.1 .. 0.5) added to the HSV value, clipped to 1.

    Example:

    >>> import numpy as np
    >>> int(brightness(np.zeros([4, 4, 3], np.uint8), 1).numpy().max())
    26
    """
    def fn(x, s, _):
        hsv = tf.image.rgb_to_hsv(x)
        value = tf.clip_by_value(hsv[..., 2:] + params("brightness", s), 0.0, 1.0)
        return tf.image.hsv_to_rgb(tf.concat([hsv[..., :2], value], -1))

    return corrupt(images, severity, fn, colour=True)


@corruption_doc("The flatter images")
def contrast(images, severity):
    """ImageNet-C contrast: each channel's deviation from its mean times c (0.4 .. 0.05).

    Example:

    >>> import numpy as np
    >>> contrast(np.array([[[0.0], [200.0]]]), 1).numpy().ravel().tolist()
    [60.0, 140.0]
    """
    def fn(x, s, _):
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        return (x - mean) * params("contrast", s) + mean

    return corrupt(images, severity, fn)


@corruption_doc("The images")
def saturate(images, severity):
    """ImageNet-C saturate: the HSV saturation times a, plus b, clipped to [0, 1].

    (a, b) = (0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2): the first two
    severities desaturate, the last three saturate (and, as the reference, turn
    gray pixels, whose hue is 0, slightly red).

    Example:

    >>> import numpy as np
    >>> saturate(np.full([1, 4, 4, 3], 100, np.uint8), 5).numpy()[0, 0, 0].tolist()
    [100, 80, 80]
    """
    def fn(x, s, _):
        factor, offset = params("saturate", s)
        hsv = tf.image.rgb_to_hsv(x)
        sat = tf.clip_by_value(hsv[..., 1:2] * factor + offset, 0.0, 1.0)
        return tf.image.hsv_to_rgb(tf.concat([hsv[..., :1], sat, hsv[..., 2:]], -1))

    return corrupt(images, severity, fn, colour=True)


def _reflect(coord: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """SciPy's "reflect" (half-sample symmetric) of float coordinates into [-0.5, size - 0.5]."""
    size = tf.cast(size, coord.dtype)
    period = 2.0 * size
    m = tf.math.floormod(coord + 0.5, period)
    return tf.where(m >= size, period - m, m) - 0.5


@corruption_doc(
    "The warped images",
    static=True,
    seed="Seed of the fields; `None` draws fresh ones.",
    uniforms=("Optional draws in [0, 1) of shape `[N, 2, H, W]` (the row field's, then the "
              "column field's... in the reference's order: first dx, then dy) instead of the "
              "seeded ones."),
)
def elastic_transform(images, severity, seed: int | None = None, uniforms=None):
    """ImageNet-C elastic transform (the `imagecorruptions` package's version).

    Two fields of uniform noise in +-0.5% of the height, blurred (Gaussian,
    sigma 1% of each side, truncated at 3 sigma, reflected) and scaled by
    alpha = 12.5 .. 30, move every pixel; the image is sampled there with
    bilinear interpolation and a reflected border (SciPy's `map_coordinates`,
    order 1, mode "reflect").

    Example:

    >>> import numpy as np
    >>> int(elastic_transform(np.full([1, 32, 32, 3], 9, np.uint8), 5, seed=0).numpy().max())
    9
    """
    def fn(x, s, seed):
        alpha = params("elastic_transform", s)
        h, w = static_size(x, "elastic_transform")
        n = tf.shape(x)[0]
        u = (tf.random.stateless_uniform(tf.stack([n, 2, h, w]), fold_seed(seed, 0))
             if uniforms is None else tf.cast(uniforms, tf.float32))
        limit = h * 0.005
        fields = gaussian_filter(tf.transpose(limit * (2.0 * u - 1.0), [0, 2, 3, 1]),
                                 (h * 0.01, w * 0.01), border="reflect", truncate=3) * alpha
        dx, dy = fields[..., 0], fields[..., 1]
        rows = _reflect(tf.range(h, dtype=tf.float32)[None, :, None] + dy, h)
        cols = _reflect(tf.range(w, dtype=tf.float32)[None, None, :] + dx, w)
        r0, c0 = tf.floor(rows), tf.floor(cols)
        fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
        flat = tf.reshape(x, tf.stack([n, h * w, tf.shape(x)[3]]))

        def at(r, c):
            r = tf.cast(tf.clip_by_value(r, 0, h - 1), tf.int32)
            c = tf.cast(tf.clip_by_value(c, 0, w - 1), tf.int32)
            return tf.gather(flat, r * w + c, batch_dims=1)

        top = at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc
        bottom = at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
        return top * (1 - fr) + bottom * fr

    return corrupt(images, severity, fn, seed)


def _box_windows(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's BOX downscaling of an axis: each output pixel's window and 22-bit weight.

    Pillow's box filter takes input pixel j into output pixel i when
    `(j - center + 0.5) / scale` is in (-0.5, 0.5], all with the same weight
    1/n, which its 8-bit path rounds to a multiple of 2**-22.

    Returns:
        `(first, stop, weight)`: window [first, stop) and integer weight per output pixel.
    """
    scale = size / out
    first, stop, weight = [], [], []
    for i in range(out):
        center = (i + 0.5) * scale
        j = np.arange(max(int(center - scale * 0.5 + 0.5), 0),
                      min(int(center + scale * 0.5 + 0.5), size))
        t = (j - center + 0.5) / scale
        j = j[(t > -0.5) & (t <= 0.5)]
        first.append(j[0])
        stop.append(j[-1] + 1)
        weight.append(np.floor(0.5 + 2**22 / len(j)))
    return np.array(first), np.array(stop), np.array(weight, np.int64)


@tf.function(jit_compile=True)
def _box_pass(x: tf.Tensor, size: int, out: int, axis: int) -> tf.Tensor:
    """One Pillow BOX pass along `axis`: window sums, Pillow's fixed point, rounded half up.

    The values keep 12 fractional bits (exact for 8-bit images) and the sums are
    formed in float64, where Pillow's integer arithmetic is exact.
    """
    first, stop, weight = _box_windows(size, out)
    x = tf.round(tf.cast(x, tf.float64) * 4096.0)
    sums = 0.0
    for k in range(int((stop - first).max())):
        index = np.minimum(first + k, size - 1)
        mask = (first + k < stop).astype(np.float64)
        shape = [1, 1, 1, 1]
        shape[axis] = out
        sums += tf.gather(x, index, axis=axis) * tf.constant(mask.reshape(shape))
    total = sums * tf.constant(weight.astype(np.float64).reshape(shape))
    return tf.cast(tf.floor((total + 2.0**33) / 2.0**34), tf.float32)


@corruption_doc("The pixelated images", static=True)
def pixelate(images, severity):
    """ImageNet-C pixelate: Pillow's BOX downscale by c (0.6 .. 0.25), NEAREST upscale.

    The thumbnail is `int(side * c)` pixels per side, each pixel the mean of
    the box it covers (in Pillow's fixed point, rounded after each axis); the
    upscale repeats each thumbnail pixel (Pillow's nearest neighbours).

    Example:

    >>> import numpy as np
    >>> int(pixelate(np.full([1, 32, 32, 3], 5, np.uint8), 5).numpy().max())
    5
    """
    def fn(x, s, _):
        h, w = static_size(x, "pixelate")
        c = params("pixelate", s)
        th, tw = max(int(h * c), 1), max(int(w * c), 1)
        # Pillow resamples the columns, then the rows, rounding to 8 bits after each pass.
        small = _box_pass(_box_pass(x, w, tw, axis=2), h, th, axis=1)
        rows = np.minimum(((np.arange(h) + 0.5) * th / h).astype(np.int64), th - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * tw / w).astype(np.int64), tw - 1)
        return tf.gather(tf.gather(small, rows, axis=1), cols, axis=2)

    return corrupt(images, severity, fn, scale=255.0)


@corruption_doc("The decoded images")
def jpeg_compression(images, severity):
    """ImageNet-C JPEG: libjpeg at quality 25, 18, 15, 10, 7, as Pillow saves and reads it.

    `distort.jpeg` (4:2:0 chroma subsampling), decoded with libjpeg's accurate
    integer DCT, Pillow's default (`distort.jpeg` decodes with the fast DCT by
    default, up to 3 grey levels away from Pillow's pixels).

    Example:

    >>> import numpy as np
    >>> jpeg_compression(np.zeros([1, 16, 16, 3], np.uint8), 5).shape
    TensorShape([1, 16, 16, 3])
    """
    def fn(x, s, _):
        return jpeg(x, params("jpeg_compression", s), dct_method="INTEGER_ACCURATE")

    return corrupt(images, severity, fn, scale=255.0)

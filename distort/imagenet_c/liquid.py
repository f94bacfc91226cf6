"""ImageNet-C spatter: water drops (severities 1-3) or mud (4-5) from a blurred noise field.

The reference builds the water drops with OpenCV (Canny edges, a distance
transform, histogram equalisation, an emboss filter); here each of those
steps is a batched TensorFlow op written after OpenCV's definition, so that
the whole corruption runs in `tf.data` without OpenCV.

Example:

>>> import numpy as np
>>> from distort.imagenet_c import liquid
>>> liquid.spatter(np.zeros([1, 32, 32, 3], np.uint8), 4, seed=0).shape
TensorShape([1, 32, 32, 3])
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from distort.imagenet_c.common import (corrupt, corruption_doc, gaussian_filter, params,
                                       separable_filter)
from distort.convolution import pad

# Water is pale turquoise, mud brown (RGB on 0..1).
WATER = (175 / 255.0, 238 / 255.0, 238 / 255.0)
MUD = (63 / 255.0, 42 / 255.0, 20 / 255.0)
DISTANCE_LIMIT = 20.0


def _correlate3(x: tf.Tensor, kernel: np.ndarray, border: str) -> tf.Tensor:
    """Correlates a `[N, H, W, 1]` float batch with a 3 x 3 kernel (VALID after padding)."""
    k = tf.constant(np.asarray(kernel, np.float32).reshape(3, 3, 1, 1))
    return tf.nn.conv2d(pad(x, (1, 1), (1, 1), border), k, 1, "VALID")


def box_blur3(x: tf.Tensor) -> tf.Tensor:
    """OpenCV's `blur(x, (3, 3))`: the 3 x 3 mean, reflect-101 border."""
    third = np.full(3, 1.0 / 3.0)
    return separable_filter(x, third, third, "mirror")


def canny(image: tf.Tensor, low: float = 50.0, high: float = 150.0) -> tf.Tensor:
    """OpenCV's `Canny(image, low, high)` (3 x 3 Sobel, L1 magnitude) on a uint8-valued batch.

    Sobel gradients (edges repeated), non-maximum suppression along the
    gradient's direction rounded to 0, 45, 90 or 135 degrees, then hysteresis:
    pixels above `high` are edges, and so are pixels above `low` connected to
    an edge (8-neighbours), grown until nothing changes.

    Args:
        image: `[N, H, W, 1]` float batch of integer values 0..255.
        low: Lower hysteresis threshold.
        high: Upper hysteresis threshold.

    Returns:
        `[N, H, W, 1]` float batch of 0 and 1 (edge).
    """
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    gx = _correlate3(image, sobel, "nearest")
    gy = _correlate3(image, sobel.T, "nearest")
    mag = tf.abs(gx) + tf.abs(gy)
    m = tf.pad(mag, [[0, 0], [1, 1], [1, 1], [0, 0]])
    h, w = tf.shape(image)[1], tf.shape(image)[2]

    def at(dy, dx):
        return m[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    ax, ay = tf.abs(gx), tf.abs(gy)
    tan22 = math.tan(math.radians(22.5))
    horizontal = ay < ax * tan22  # gradient along x: compare left and right
    vertical = ay > ax / tan22
    same_sign = (gx * gy) >= 0
    # OpenCV keeps a maximum against the previous neighbour with ">" and the next with ">=".
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d1 = (mag > at(-1, -1)) & (mag > at(1, 1))
    keep_d2 = (mag > at(-1, 1)) & (mag > at(1, -1))
    keep = tf.where(horizontal, keep_h,
                    tf.where(vertical, keep_v, tf.where(same_sign, keep_d1, keep_d2)))
    candidate = keep & (mag > low)
    strong = candidate & (mag > high)
    return _hysteresis(tf.cast(strong, tf.float32), tf.cast(candidate, tf.float32))


@tf.function(jit_compile=True)
def _hysteresis(strong: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
    """Grows the strong edges into the 8-connected candidates until nothing changes."""
    h, w = tf.shape(strong)[1], tf.shape(strong)[2]

    def grow(edges, _):
        p = tf.pad(edges, [[0, 0], [1, 1], [1, 1], [0, 0]])
        near = edges
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near = tf.maximum(near, p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w])
        grown = tf.maximum(edges, candidate * near)
        return grown, tf.reduce_any(grown > edges)

    edges, changed = grow(strong, None)
    edges, _ = tf.while_loop(lambda e, c: c, grow, (edges, changed))
    return edges


CHAMFER_5 = tuple(
    (dy, dx, 1.0 if abs(dy) + abs(dx) == 1 else 1.4 if abs(dy) == abs(dx) == 1 else 2.1969)
    for dy in range(-2, 3) for dx in range(-2, 3)
    if (dy, dx) != (0, 0) and not (abs(dy) == 2 and abs(dx) in (0, 2)))


@tf.function(jit_compile=True)
def _relax_distances(d: tf.Tensor, limit: float) -> tf.Tensor:
    """Relaxes chamfer distances over the 5 x 5 neighbourhood until they are stable."""
    h, w = tf.shape(d)[1], tf.shape(d)[2]

    def relax(d, _):
        p = tf.pad(d, [[0, 0], [2, 2], [2, 2], [0, 0]], constant_values=limit)
        best = d
        for dy, dx, cost in CHAMFER_5:
            best = tf.minimum(best, p[:, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w] + cost)
        return best, tf.reduce_any(best < d)

    d, changed = relax(d, None)
    d, _ = tf.while_loop(lambda d, c: c, relax, (d, changed))
    return d


def distance_to_edges(edges: tf.Tensor, limit: float = DISTANCE_LIMIT) -> tf.Tensor:
    """OpenCV's `distanceTransform(DIST_L2, 5)` to the edges, cut at `limit`.

    The 5 x 5 chamfer distance (steps 1, 1.4 and 2.1969) to the nearest edge
    pixel, by repeated relaxation over the 5 x 5 neighbourhood until it is
    stable or every distance is at the limit.

    Args:
        edges: `[N, H, W, 1]` batch, 1 on edges.
        limit: The distances are cut at this value (the reference's threshold).

    Returns:
        The distances, float32, at most `limit`.
    """
    d = tf.where(edges > 0, 0.0, limit)
    return tf.minimum(_relax_distances(d, limit), limit)


def equalize_histogram(x: tf.Tensor) -> tf.Tensor:
    """OpenCV's `equalizeHist` per image of a `[N, H, W, 1]` batch of integers 0..255."""
    n = tf.shape(x)[0]
    v = tf.cast(tf.reshape(x, [n, -1]), tf.int32)
    hist = tf.cast(tf.math.bincount(v, minlength=256, maxlength=256, axis=-1), tf.float32)
    cdf = tf.cumsum(hist, axis=1)
    first = tf.argmax(hist > 0, axis=1, output_type=tf.int32)
    lowest = tf.gather(cdf, first, batch_dims=1)[:, None]
    total = cdf[:, -1:]
    scale = 255.0 / tf.maximum(total - lowest, 1.0)
    lut = tf.round((cdf - lowest) * scale)
    lut = tf.where(tf.range(256)[None, :] <= first[:, None], 0.0, lut)
    flat = tf.cast(first, tf.float32)[:, None] * tf.ones_like(lut)
    lut = tf.where(total == lowest, flat, lut)  # one value only: OpenCV keeps it
    return tf.reshape(tf.gather(lut, v, batch_dims=1), tf.shape(x))


def water_mask(liquid: tf.Tensor, intensity: float) -> tf.Tensor:
    """The reference's water-drop intensity from the thresholded liquid layer (`[N, H, W, 1]`)."""
    layer = tf.floor(liquid * 255.0)  # astype(uint8)
    dist = distance_to_edges(canny(layer))
    dist = tf.floor(box_blur3(dist))  # blur, then astype(uint8)
    dist = equalize_histogram(dist)
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
    dist = tf.clip_by_value(_correlate3(dist, emboss, "mirror"), 0.0, 255.0)  # CV_8U
    dist = tf.round(box_blur3(dist))  # blur of uint8 stays uint8 (rounded)
    m = layer * dist
    peak = tf.reduce_max(m, axis=[1, 2, 3], keepdims=True)
    return tf.math.divide_no_nan(m, peak) * intensity


@corruption_doc(
    "The spattered images",
    seed="Seed of the noise; `None` draws fresh noise.",
    noise="Optional standard normal noise `[N, H, W]` instead of the seeded one.",
)
def spatter(images, severity, seed: int | None = None, noise=None):
    """ImageNet-C spatter: water drops (severities 1-3) or mud splashes (4-5).

    A normal field (mean 0.65 or 0.67, std 0.3 or 0.4) is blurred
    (scikit-image's `gaussian`, sigma 4 .. 1) and cut below 0.65 .. 0.69. Water
    (severities 1-3): the drops' intensity comes from the distance to their
    Canny edges, equalised and embossed as the reference does with OpenCV, and
    pale turquoise is added. Mud (4-5): the drops, blurred again (sigma 1.5)
    and kept above 0.8, replace the image with brown.

    Example:

    >>> import numpy as np
    >>> spatter(np.zeros([1, 32, 32, 3], np.uint8), 1, seed=0).shape
    TensorShape([1, 32, 32, 3])
    """
    def fn(x, s, seed):
        mean, std, sigma, threshold, strength, mud = params("spatter", s)
        shape = tf.shape(x)
        z = (tf.random.stateless_normal(shape[:3], seed) if noise is None
             else tf.cast(noise, tf.float32))
        liquid = gaussian_filter((mean + std * z)[..., None], sigma)
        liquid = tf.where(liquid < threshold, 0.0, liquid)
        if not mud:
            m = water_mask(liquid, strength)
            return x + m * tf.constant(WATER)
        m = gaussian_filter(tf.cast(liquid > threshold, tf.float32), strength)
        m = tf.where(m < 0.8, 0.0, m)
        return x * (1.0 - m) + m * tf.constant(MUD)

    return corrupt(images, severity, fn, seed, colour=True)

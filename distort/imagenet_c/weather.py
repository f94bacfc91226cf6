"""ImageNet-C weather: snow, frost and fog (spatter is in `distort.imagenet_c.liquid`).

Each takes images (NHWC or HWC, uint8 or float on 0..255), a severity 1..5
(or one per image) and a seed, and builds its layer as the reference does,
from seeded stateless random fields. Each also accepts the random draws
themselves (`noise=`, `angle=`, `texture=`, ...), which makes it a
deterministic function of them: that is how the tests compare it with the
reference's own draws.

Example:

>>> import numpy as np
>>> from distort.imagenet_c import weather
>>> weather.fog(np.zeros([1, 32, 32, 3], np.uint8), 1, seed=0).shape
TensorShape([1, 32, 32, 3])
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from distort.imagenet_c.common import (
    clipped_zoom,
    corrupt,
    corruption_doc,
    fold_seed,
    line_blur,
    params,
    static_size,
    zoomed_size,
)
from distort.imagenet_c.constants import FROST_FILES, FROST_TEXTURES_USED


# ----------------------------------------------------------------------------
# Fog: a plasma fractal (diamond-square) added to the image
# ----------------------------------------------------------------------------
def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for 0), as the reference's helper."""
    return 1 if n == 0 else 2 ** (int(n) - 1).bit_length()


def plasma_draws(seed: tf.Tensor, n, mapsize: int) -> list[tf.Tensor]:
    """The uniform draws of `plasma_fractal`: per level, `[3, N, k, k]` in [0, 1).

    Level j (k = 2**j) draws the squares' and both diamonds' values.
    """
    return [tf.random.stateless_uniform(tf.stack([3, n, 2**j, 2**j]), fold_seed(seed, j))
            for j in range(int(math.log2(mapsize)))]


def plasma_fractal(draws: list[tf.Tensor], wibbledecay: float) -> tf.Tensor:
    """The reference's diamond-square plasma fractal, for a batch, from its draws.

    The reference fills a `mapsize x mapsize` map (periodic) level by level:
    each square's centre is the mean of its corners, each diamond's centre
    the mean of its four neighbours, plus `wibble * U(-wibble, wibble)`;
    wibble starts at 100 and is divided by `wibbledecay` at every level. Here
    each level's grid doubles by interleaving the old points with the new.

    Args:
        draws: Per level, uniform draws in [0, 1) of shape `[3, N, k, k]`
            (squares, then the two kinds of diamonds, in the reference's order).
        wibbledecay: The decay of the random amplitude per level.

    Returns:
        `[N, mapsize, mapsize]` float32 maps scaled to [0, 1].
    """
    grid = tf.zeros_like(draws[0][0])  # [N, 1, 1]
    wibble = 100.0
    for u in draws:
        noise = tf.cast(wibble * wibble, tf.float32) * (2.0 * u - 1.0)
        corners = grid + tf.roll(grid, -1, axis=1)
        squares = (corners + tf.roll(corners, -1, axis=2)) / 4 + noise[0]
        left = (squares + tf.roll(squares, 1, axis=1) + grid + tf.roll(grid, -1, axis=2)) / 4 + noise[1]
        top = (squares + tf.roll(squares, 1, axis=2) + grid + tf.roll(grid, -1, axis=1)) / 4 + noise[2]
        shape = tf.shape(grid)
        even = tf.reshape(tf.stack([grid, left], -1), [shape[0], shape[1], 2 * shape[2]])
        odd = tf.reshape(tf.stack([top, squares], -1), [shape[0], shape[1], 2 * shape[2]])
        grid = tf.reshape(tf.stack([even, odd], 2), [shape[0], 2 * shape[1], 2 * shape[2]])
        wibble /= wibbledecay
    grid -= tf.reduce_min(grid, axis=[1, 2], keepdims=True)
    return grid / tf.reduce_max(grid, axis=[1, 2], keepdims=True)


@corruption_doc(
    "The foggy images",
    static=True,
    seed="Seed of the fractal; `None` draws a fresh one.",
    draws="Optional draws for `plasma_fractal` instead of seeded ones.",
)
def fog(images, severity, seed: int | None = None, draws: list | None = None):
    """ImageNet-C fog: a plasma fractal added to the image, then rescaled.

    `x + c * plasma` (c = 1.5 .. 3, the fractal on a map of the next power of
    two of the larger side, cropped), times `max(x) / (max(x) + c)`.

    Example:

    >>> import numpy as np
    >>> y = fog(np.zeros([1, 32, 32, 3], np.uint8), 1, seed=0).numpy()
    >>> int(y.max())
    0
    """
    def fn(x, s, seed):
        strength, decay = params("fog", s)
        h, w = static_size(x, "fog")
        size = next_power_of_2(max(h, w, int(x.shape[-1])))
        u = draws if draws is not None else plasma_draws(seed, tf.shape(x)[0], size)
        u = [tf.cast(d, tf.float32) for d in u]
        plasma = plasma_fractal(u, decay)[:, :h, :w, None]
        peak = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True)
        return (x + strength * plasma) * peak / (peak + strength)

    return corrupt(images, severity, fn, seed)


# ----------------------------------------------------------------------------
# Frost: a crop of a frost photo blended in
# ----------------------------------------------------------------------------
def frost_folder() -> Path:
    """The folder of the `imagecorruptions` package's frost photos.

    Returns:
        The folder holding frost1.png .. frost6.jpg.

    Raises:
        FileNotFoundError: If the `imagecorruptions` package (or its fork
            `imagecorruptions-imaug`, which installs the same files) is not
            installed; `frost(..., textures=folder)` takes any folder with
            the six files instead.
    """
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is not None and spec.origin is not None:
        folder = Path(spec.origin).parent / "frost"
        if all((folder / f).is_file() for f in FROST_FILES):
            return folder
    raise FileNotFoundError(
        "frost needs the frost photos of the imagecorruptions package, which is not "
        "installed: pip install imagecorruptions-imaug (or pass textures= a folder with "
        f"{', '.join(FROST_FILES)})")


def cubic_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV's `resize(..., INTER_CUBIC)` (a = -0.75, edges repeated), rounded to uint8.

    Args:
        image: A uint8 `[H, W, C]` array.
        height: Output rows.
        width: Output columns.

    Returns:
        The resized uint8 array (OpenCV's fixed-point sums may differ by one level).
    """
    def weights(n_in: int, n_out: int):
        f = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        base = np.floor(f).astype(np.int64)
        t = f - base
        a = -0.75
        w = np.stack([((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                      ((a + 2) * t - (a + 3)) * t * t + 1,
                      ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1], -1)
        w = np.concatenate([w, 1 - w.sum(-1, keepdims=True)], -1)
        index = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
        return index, w

    ri, rw = weights(image.shape[0], height)
    ci, cw = weights(image.shape[1], width)
    x = image.astype(np.float64)
    rows = np.einsum("ok,okwc->owc", rw, x[ri])
    out = np.einsum("pk,opkc->opc", cw, rows[:, ci])
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def frost_textures(height: int, width: int, folder: str | None = None) -> tuple[np.ndarray, ...]:
    """The frost photos resized as the reference does for images of a size.

    Each photo is scaled so that it covers the image (factor 1 if it does
    already, else the larger of the two ratios), times 1.1, with OpenCV's
    bicubic rule, in RGB.

    Args:
        height: Image rows.
        width: Image columns.
        folder: Folder of frost1.png .. frost6.jpg (default: `frost_folder()`).

    Returns:
        The six resized uint8 photos `[h, w, 3]`.
    """
    root = Path(folder) if folder is not None else frost_folder()
    out = []
    for name in FROST_FILES:
        with Image.open(root / name) as im:
            photo = np.asarray(im.convert("RGB"))
        fh, fw = photo.shape[:2]
        scale = 1.1 * max(1.0, height / fh, width / fw)
        out.append(cubic_resize(photo, int(np.ceil(fh * scale)), int(np.ceil(fw * scale))))
    return tuple(out)


@corruption_doc(
    "The frosted images",
    static=True,
    seed="Seed of the photo and crop; `None` draws fresh ones.",
    texture="Optional photo index (0..5), a number or one per image, instead of the random one.",
    offset=("Optional crop corner `(row, column)`, or one per image (`[N, 2]`), instead of the "
            "random one (with `texture`)."),
    textures="Folder of the frost photos (default: the package's).",
)
def frost(images, severity, seed: int | None = None, texture=None, offset=None,
          textures: str | os.PathLike | None = None):
    """ImageNet-C frost: `a * x + b * crop of a frost photo` on the 0..255 scale.

    One of the reference's first five frost photos (the sixth is never drawn
    there either) is drawn per image, resized as `frost_textures` does and
    cropped at a random position; (a, b) go from (1, 0.4) to (0.6, 0.75).
    The photos are the `imagecorruptions` package's (see `frost_folder`).

    Raises:
        FileNotFoundError: If the frost photos are not found.

    Example:

    >>> import numpy as np
    >>> frost(np.zeros([1, 32, 32, 3], np.uint8), 1, seed=0).shape
    TensorShape([1, 32, 32, 3])
    """
    def fn(x, s, seed):
        image_weight, frost_weight = params("frost", s)
        h, w = static_size(x, "frost")
        photos = frost_textures(h, w, None if textures is None else str(textures))
        rows = max(p.shape[0] for p in photos)
        cols = max(p.shape[1] for p in photos)
        stack = np.zeros([len(photos), rows, cols, 3], np.float32)
        for i, p in enumerate(photos):
            stack[i, : p.shape[0], : p.shape[1]] = p
        sizes = tf.constant([[p.shape[0] - h, p.shape[1] - w] for p in photos], tf.float32)
        n = tf.shape(x)[0]
        if texture is None:
            index = tf.random.stateless_uniform([n], fold_seed(seed, 0), 0, FROST_TEXTURES_USED,
                                                dtype=tf.int32)
        else:
            index = tf.broadcast_to(tf.cast(texture, tf.int32), [n])
        if offset is None:
            u = tf.random.stateless_uniform([n, 2], fold_seed(seed, 1))
            corner = tf.cast(tf.floor(u * tf.maximum(tf.gather(sizes, index), 1.0)), tf.int32)
        else:
            corner = tf.broadcast_to(tf.cast(offset, tf.int32), [n, 2])
        flat = tf.reshape(tf.constant(stack), [-1, 3])
        r = corner[:, 0, None, None] + tf.range(h)[None, :, None]
        c = corner[:, 1, None, None] + tf.range(w)[None, None, :]
        layer = tf.gather(flat, (index[:, None, None] * rows + r) * cols + c)
        return image_weight * x + frost_weight * layer

    return corrupt(images, severity, fn, seed, colour=True, scale=255.0)


# ----------------------------------------------------------------------------
# Snow: a zoomed, thresholded, motion-blurred noise layer and its mirror image
# ----------------------------------------------------------------------------
@corruption_doc(
    "The snowy images",
    static=True,
    seed="Seed of the noise and angles; `None` draws fresh ones.",
    noise=("Optional standard normal noise `[N, H, W]` instead of the seeded one (it is scaled "
           "to the severity's mean and std)."),
    angle="Optional angle in degrees (a number or one per image).",
)
def snow(images, severity, seed: int | None = None, noise=None, angle=None):
    """ImageNet-C snow: flakes from zoomed noise, motion-blurred, on a whitened image.

    As the reference, per image: normal noise (mean 0.1 .. 0.55, std 0.3) is
    zoomed by 2 .. 4.5 (bilinear centre crop), cut below a threshold, blurred
    along a line at an angle in [-135, -45] degrees (`motion_blur`'s line),
    quantised to 8 bits and added twice (itself and turned by 180 degrees) to
    the image blended with `max(x, 1.5 * gray + 0.5)`.

    Example:

    >>> import numpy as np
    >>> snow(np.zeros([1, 32, 32, 3], np.uint8), 1, seed=0).shape
    TensorShape([1, 32, 32, 3])
    """
    def fn(x, s, seed):
        mean, std, zoom, threshold, radius, sigma, weight = params("snow", s)
        h, w = static_size(x, "snow")
        n = tf.shape(x)[0]
        z = (tf.random.stateless_normal(tf.stack([n, h, w]), fold_seed(seed, 0))
             if noise is None else tf.cast(noise, tf.float32))
        layer = clipped_zoom((mean + std * z)[..., None], zoom, zoomed_size(h, zoom),
                             zoomed_size(w, zoom))
        layer = tf.clip_by_value(tf.where(layer < threshold, 0.0, layer), 0.0, 1.0)
        angles = (tf.random.stateless_uniform([n], fold_seed(seed, 1), -135.0, -45.0, tf.float64)
                  if angle is None else tf.broadcast_to(tf.cast(angle, tf.float64), [n]))
        layer = line_blur(layer, angles, radius, sigma)
        layer = tf.round(layer * 255.0)[:, :h, :w] / 255.0
        gray = tf.tensordot(x, tf.constant([0.299, 0.587, 0.114]), [[3], [0]])[..., None]
        x = weight * x + (1 - weight) * tf.maximum(x, gray * 1.5 + 0.5)
        return x + layer + tf.reverse(layer, [1, 2])

    return corrupt(images, severity, fn, seed, colour=True)

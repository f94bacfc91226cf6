"""Distortions as batched TensorFlow ops.

Images are NHWC (or a single HWC image) with 1 or 3 channels, either float32
on the 0..255 scale or uint8. Every op returns the same shape and dtype,
clipped to 0..255 and, for uint8, rounded. The ops run eagerly, inside
`tf.function` and inside `tf.data` maps. Random ops take a `seed`: the same
seed gives the same output, and `seed=None` draws a fresh one.

A level is a Python number (one level for the whole batch) or a 1-D array or
tensor with one level per image (exactly one per image). The kernel blurs
refuse a level whose kernel is wider than the image can use (its half-width
larger than the image's shorter side); each op's docstring gives its bound.

Example:

>>> import numpy as np, distort
>>> images = np.full([2, 32, 32, 3], 128, np.uint8)
>>> distort.gaussian_blur(images, 1.5).dtype
tf.uint8
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from distort import kernels
from robustkit.checks import check_level
from robustkit.seeds import check_seed

BORDERS = ("reflect", "constant", "nearest", "mirror")


# ----------------------------------------------------------------------------
# Input and output conventions
# ----------------------------------------------------------------------------
def to_float_batch(images) -> tuple[tf.Tensor, tf.DType, bool]:
    """Validates images and returns them as a float32 NHWC batch.

    Same as `check_batch`, the batch cast to float32.
    """
    x, dtype, single = check_batch(images)
    return tf.cast(x, tf.float32), dtype, single


def check_batch(images) -> tuple[tf.Tensor, tf.DType, bool]:
    """Validates images and returns them as an NHWC batch of their own dtype.

    Args:
        images: An NHWC batch or one HWC image, uint8 or float (0..255), with
            1 or 3 channels.

    Returns:
        `(batch, dtype, single)`: the batch, the input dtype, and whether the
        input was a single image.

    Raises:
        ValueError: On a wrong rank or channel count, an empty batch, or
            (eagerly) NaN/inf values.
    """
    x = tf.convert_to_tensor(images)
    dtype = x.dtype
    if dtype not in (tf.uint8, tf.float16, tf.float32, tf.float64):
        raise TypeError(f"images must be uint8 or float (0..255). Received dtype: {dtype.name}")
    rank = x.shape.rank
    if rank not in (3, 4):
        raise ValueError(
            "images must be a batch [N, H, W, C] or one image [H, W, C]. "
            f"Received shape: {x.shape}"
        )
    single = rank == 3
    if single:
        x = x[tf.newaxis]
    channels = x.shape[-1]
    if channels is not None and channels not in (1, 3):
        raise ValueError(
            "images must have 1 (gray) or 3 (RGB) channels. "
            f"Received {channels} channels (shape {x.shape})"
        )
    if tf.executing_eagerly():
        if x.shape[0] == 0 or 0 in x.shape[1:3]:
            raise ValueError(f"images must not be empty. Received shape: {x.shape}")
        if dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(x))):
            raise ValueError("images must be finite: received NaN or inf values")
    return x, dtype, single


def cast_back(x: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """Clips float values to 0..255 and casts them to `dtype` (rounded for uint8)."""
    x = tf.clip_by_value(x, 0.0, 255.0)
    return tf.cast(tf.round(x) if dtype == tf.uint8 else x, dtype)


def from_float_batch(x: tf.Tensor, dtype: tf.DType, single: bool) -> tf.Tensor:
    """Clips a float batch to 0..255 and casts it back (rounded for uint8)."""
    x = cast_back(x, dtype)
    return x[0] if single else x


def seed_tensor(seed) -> tf.Tensor:
    """Returns a stateless-RNG seed of shape [2]; `None` draws a fresh one.

    Args:
        seed: An integer in `[0, robustkit.seeds.SEED_MAX]` (checked by
            `robustkit.seeds.check_seed`), None, or an integer tensor: a scalar,
            or a stateless seed of shape [2] as the pipelines pass.

    Returns:
        An int64 tensor of shape [2].

    Raises:
        TypeError: For a seed that is not an integer (a bool, a float).
        ValueError: For a negative or too large seed.
    """
    if seed is None:
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    if isinstance(seed, (tf.Tensor, tf.Variable)):
        seed = tf.cast(seed, tf.int64)
        return tf.stack([seed, tf.zeros_like(seed)]) if seed.shape.rank == 0 else seed
    return tf.constant([check_seed(seed), 0], tf.int64)


def per_image_seeds(seed: tf.Tensor, n) -> tf.Tensor:
    """Derives one int64 seed per image from a stateless seed."""
    return tf.random.stateless_uniform([n], seed, maxval=2**31 - 1, dtype=tf.int64)


def _levels(name: str, level, low: float = 0.0, high: float = np.inf):
    """Validates a level: a number, or one per image (a 1-D array/tensor)."""
    if isinstance(level, tf.Tensor) and not tf.executing_eagerly():
        return tf.cast(level, tf.float32)
    arr = np.asarray(level.numpy() if isinstance(level, tf.Tensor) else level)
    if arr.ndim == 0:
        return check_level(name, arr.item(), low, high)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a number or a 1-D array of per-image levels. "
                         f"Received shape: {arr.shape}")
    for v in arr.tolist():
        check_level(name, v, low, high)
    return tf.constant(arr, tf.float32)


@dataclass(frozen=True)
class KernelSupport:
    """How wide a blur's kernel is at a level, for the image-size bound.

    A kernel blur refuses a level whose window is wider than `2 * L + 1`
    pixels, `L` the shorter side of the images: the padding then at most
    triples each side. (A wider kernel with a reflect border is not the same as
    any narrower one, so levels are refused rather than capped.)

    Attributes:
        formula: The window's width as a formula of the level, e.g. "4*sigma+1".
        width: The width (pixels, not rounded) at a level.
        largest: The largest level whose width is at most `2 * L + 1`, given `L`
            (a Python number or a tensor).
        bound: `largest` as text, e.g. "min(height, width) / 2".
    """

    formula: str
    width: Callable[[float], float]
    largest: Callable[[Any], Any]
    bound: str


def _static_batch(images) -> tuple[int | None, int | None, int | None]:
    """`(N, H, W)` of images as far as they are known without running anything."""
    shape = tf.TensorShape(images.shape if hasattr(images, "shape") else np.shape(images))
    if shape.rank not in (3, 4):
        return None, None, None
    dims = shape.as_list()
    return (1, dims[0], dims[1]) if len(dims) == 3 else (dims[0], dims[1], dims[2])


def _text(value: float) -> str:
    """A pixel count: an integer without a decimal point, else two decimals."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.2f}"


def check_levels(images, name: str, level, low: float = 0.0, high: float = np.inf,
                 support: KernelSupport | None = None):
    """Validates a level against its range and against the images it is for.

    Args:
        images: The images (see the module conventions).
        name: The level's argument name, for messages.
        level: A number, or a 1-D array or tensor with one level per image.
        low: Smallest allowed level.
        high: Largest allowed level.
        support: For a kernel blur, its window (see `KernelSupport`): levels
            whose window is wider than `2 * min(height, width) + 1` are refused.

    Returns:
        `(images, level)`: the level as a Python float (one for the batch) or a
        float32 tensor, and the images, both gated in a graph by
        `tf.debugging` asserts of what can only be checked when it runs.

    Raises:
        ValueError: Eagerly (or when shapes and levels are static) for a level
            out of range, a count of per-image levels other than the number of
            images, or a kernel wider than the image allows.
        TypeError: For a level that is not a number.

    Example:

    >>> import numpy as np
    >>> check_levels(np.zeros([2, 8, 8, 3]), "sigma", 1.5)[1]
    1.5
    """
    level = _levels(name, level, low, high)
    n, height, width = _static_batch(images)
    tensor = isinstance(level, tf.Tensor)
    if tensor and level.shape.rank == 1 and n is not None and level.shape[0] is not None \
            and level.shape[0] != n:
        raise ValueError(f"{name} must be a scalar or one level per image ({n} images). "
                         f"Received: {level.shape[0]} levels")
    values = None
    if not tensor:
        values = [level]
    elif tf.executing_eagerly() or tf.get_static_value(level) is not None:
        values = np.reshape(tf.get_static_value(level), [-1]).tolist()
    if support is not None and values and height is not None and width is not None:
        side = min(height, width)
        top = max(values)
        formula = "" if support.formula == name else f"{support.formula} = "
        if top > support.largest(side):
            raise ValueError(
                f"{name}={top} needs a {formula}{_text(support.width(top))}-pixel "
                f"window, larger than the 2*{side}+1 the {height}x{width} image allows; {name} "
                f"must be <= {float(support.largest(side))} for this image")
    if tf.executing_eagerly():
        return images, level
    needs_count = tensor and level.shape.rank != 0 and (
        n is None or level.shape.rank is None or level.shape[0] is None)
    needs_size = support is not None and (values is None or height is None or width is None)
    if not (needs_count or needs_size):
        return images, level
    x = tf.convert_to_tensor(images)
    shape = tf.shape(x)
    level = tf.cast(level, tf.float32)
    asserts = []
    if needs_count:
        count = 1 if x.shape.rank == 3 else shape[0]
        asserts.append(tf.debugging.assert_equal(
            tf.size(level), count,
            message=f"{name} must be a scalar or one level per image"))
    if needs_size:
        side = tf.cast(tf.minimum(shape[-3], shape[-2]), tf.float32)
        asserts.append(tf.debugging.assert_less_equal(
            level, support.largest(side),
            message=f"{name} needs a {support.formula}-pixel window, larger than the "
                    f"2*min(height, width)+1 the images allow: {name} must be <= {support.bound}"))
    with tf.control_dependencies(asserts):
        return tf.identity(x), tf.identity(level)


# ----------------------------------------------------------------------------
# Borders and convolution
# ----------------------------------------------------------------------------
def _border_source(i: tf.Tensor, n: tf.Tensor, mode: str) -> tf.Tensor:
    """Maps indices `i` (any shape, any integers) of an axis of length `n` inside it."""
    if mode == "nearest":
        return tf.clip_by_value(i, 0, n - 1)
    if mode == "reflect":  # d c b a | a b c d | d c b a   (scipy "reflect")
        period = 2 * n
        m = tf.math.floormod(i, period)
        return tf.where(m >= n, period - 1 - m, m)
    # "mirror": d c b | a b c d | c b a   (scipy "mirror", cv2 REFLECT_101)
    period = tf.maximum(2 * n - 2, 1)
    m = tf.math.floormod(i, period)
    return tf.minimum(tf.where(m >= n, period - m, m), n - 1)


def pad(x: tf.Tensor, rows: tuple[int, int], cols: tuple[int, int], border: str = "reflect"):
    """Pads an NHWC batch spatially.

    Args:
        x: An NHWC batch (any dtype).
        rows: Pixels to add (above, below).
        cols: Pixels to add (left, right).
        border: "reflect" (scipy's reflect, the default), "constant" (zeros,
            as the original DeepCorrect code's cv2 call), "nearest" or "mirror".

    Returns:
        The padded batch.
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}. Received: border={border!r}")
    if border == "constant":
        return tf.pad(x, [[0, 0], list(rows), list(cols), [0, 0]])
    # Only the border strips are gathered; the image is copied whole, which is much faster
    # than gathering every column when the channels are few.
    for axis, (before, after) in ((1, rows), (2, cols)):
        n = tf.shape(x)[axis]
        head = tf.gather(x, _border_source(tf.range(-before, 0), n, border), axis=axis)
        tail = tf.gather(x, _border_source(tf.range(n, n + after), n, border), axis=axis)
        x = tf.concat([head, x, tail], axis)
    return x


def convolve(images, kernel, border: str = "reflect") -> tf.Tensor:
    """Convolves every channel of every image with a 2-D kernel.

    Args:
        images: Images (see the module conventions).
        kernel: A 2-D kernel shared by the batch, or a 3-D `[N, k, k]` stack
            with one kernel per image.
        border: See `pad`.

    Returns:
        The filtered images, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> convolve(np.ones([1, 8, 8, 3], np.float32), np.ones([3, 3]) / 9).shape
    TensorShape([1, 8, 8, 3])
    """
    return _filter(images, lambda f, shape: _convolve(f, kernel, border, shape[3]))


def _filter(images, fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Runs `fn(folded batch, [N, H, W, C])` on images in the folded layout.

    `fn` gets the batch folded (see `_fold`) in the input's dtype, so that
    folding and padding move uint8 bytes, and returns float32. The result is
    cast back before unfolding.
    """
    x, dtype, single = check_batch(images)
    shape = tf.shape(x)
    y = cast_back(fn(_fold(x), shape), dtype)
    y = _unfold(y, shape)
    return y[0] if single else y


def _fold(x: tf.Tensor) -> tf.Tensor:
    """`[N, H, W, C]` -> `[1, H, W, N * C]`: the batch becomes channels.

    Depthwise convolutions vectorise over channels, so three channels waste
    most of a SIMD register; N * C channels fill them.
    """
    shape = tf.shape(x)
    return tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, shape[1], shape[2], shape[0] * shape[3]])


def _unfold(y: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """Inverse of `_fold` for a batch of `shape` `[N, H, W, C]`."""
    return tf.transpose(tf.reshape(y, [shape[1], shape[2], shape[0], shape[3]]), [2, 0, 1, 3])


def _depthwise(folded: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """Correlates every channel of a folded batch with one `[kh, kw]` kernel (VALID)."""
    k = tf.tile(kernel[:, :, None, None], [1, 1, tf.shape(folded)[-1], 1])
    return tf.nn.depthwise_conv2d(folded, k, [1, 1, 1, 1], "VALID")


def _static_kernel(kernel) -> np.ndarray | None:
    """A constant odd-sized 2-D kernel cropped to its nonzero part (kept centred), or None."""
    k = tf.get_static_value(kernel) if isinstance(kernel, tf.Tensor) else kernel
    if k is None:
        return None
    k = np.asarray(k, np.float32)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0 or not np.any(k):
        return None
    rows, cols = np.nonzero(k)
    r = int(np.abs(rows - k.shape[0] // 2).max())
    c = int(np.abs(cols - k.shape[1] // 2).max())
    return k[k.shape[0] // 2 - r : k.shape[0] // 2 + r + 1, k.shape[1] // 2 - c : k.shape[1] // 2 + c + 1]


def _factor(k: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Splits a 2-D kernel into `(column, row)` 1-D kernels if it is rank 1, else None."""
    if k.shape[0] == 1:
        return np.ones([1], np.float32), k[0]
    if k.shape[1] == 1:
        return k[:, 0], np.ones([1], np.float32)
    u, s, vt = np.linalg.svd(k.astype(np.float64))
    if s[1] > 1e-7 * s[0]:
        return None
    col, row = u[:, 0] * np.sqrt(s[0]), vt[0] * np.sqrt(s[0])
    if np.abs(np.outer(col, row) - k).max() > 1e-6 * np.abs(k).max():
        return None
    return col.astype(np.float32), row.astype(np.float32)


def _convolve(f: tf.Tensor, kernel, border: str, channels) -> tf.Tensor:
    """Convolves a folded batch `[1, H, W, N * C]` (see `_fold`); returns float32.

    Args:
        f: The folded batch, uint8 or float (padded before the cast to float).
        kernel: A 2-D kernel shared by the batch or one `[N, k, k]` kernel per image.
        border: See `pad`.
        channels: C, the channels of each image.
    """
    if not isinstance(kernel, tf.Tensor):
        kernel = np.asarray(kernel, np.float32)
    if len(kernel.shape) == 2:
        static = _static_kernel(kernel)
        if static is not None:
            kernel = static
            factors = _factor(static)
            if factors is not None:
                # Rank 1 (axis-aligned boxes, Gaussians): two 1-D passes.
                return _separable(f, factors[0], border, factors[1])
        kh, kw = kernel.shape
        if kh == 1 and kw == 1:
            return tf.cast(f, tf.float32) * kernel[0, 0]
        fp = _float(pad(f, (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), border))
        # Correlation with the flipped kernel is convolution.
        return _depthwise(fp, tf.reverse(tf.convert_to_tensor(kernel, tf.float32), [0, 1]))
    half = tf.shape(kernel)[1] // 2
    fp = _float(pad(f, (half, half), (half, half), border))
    k = tf.reverse(kernel, [1, 2])  # [n, k, k]
    k = tf.repeat(tf.transpose(k, [1, 2, 0]), channels, axis=2)[:, :, :, None]  # [k, k, n*c, 1]
    return tf.nn.depthwise_conv2d(fp, k, [1, 1, 1, 1], "VALID")


def _crop_kernels(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops `[N, k, k]` kernels to one window size that holds each kernel's nonzeros.

    Each kernel keeps its own window position, so sparse kernels off the centre (the
    random walks) shrink to a few taps. Returns `(cropped [N, h, w], first rows [N],
    first columns [N])`, the offsets int32.
    """

    def extent(mask: np.ndarray) -> tuple[np.ndarray, int]:  # mask [N, k]
        first = np.where(mask.any(1), mask.argmax(1), 0)
        last = np.where(mask.any(1), mask.shape[1] - 1 - mask[:, ::-1].argmax(1), 0)
        size = int((last - first).max(initial=0)) + 1
        return np.minimum(first, mask.shape[1] - size).astype(np.int32), size

    nonzero = stack != 0
    rows, h = extent(nonzero.any(2))
    cols, w = extent(nonzero.any(1))
    row_index = rows[:, None, None] + np.arange(h)[None, :, None]
    col_index = cols[:, None, None] + np.arange(w)[None, None, :]
    cropped = stack[np.arange(len(stack))[:, None, None], row_index, col_index]
    return cropped.astype(np.float32), rows, cols


def _convolve_sparse(x: tf.Tensor, kernel: tf.Tensor, border: str) -> tf.Tensor:
    """Convolves image i of an NHWC batch with `kernel[i]` (`[N, k, k]`, k odd).

    For sparse kernels such as the random walks (at most 5 nonzero weights in 9x9): the
    flipped kernels are cropped to one window size around each kernel's own nonzero
    weights (`_crop_kernels`), each image is cut at its kernel's window position from the
    padded batch, and each is correlated with its small kernel on its own. For a batch of
    32 walks of 4 steps the window is about 4x5 taps instead of 9x9. Only zero weights
    are dropped, so the outputs are those of a dense convolution with the whole kernels
    (identical on the photos checked). Dense kernels are faster folded (`_convolve`).

    Returns the batch in its own dtype, clipped (and rounded for uint8) as `cast_back`
    does; each image is cast back while it is still in the cache.
    """
    flipped = tf.reverse(tf.convert_to_tensor(kernel, tf.float32), [1, 2])  # correlation
    k, rows, cols = tf.numpy_function(_crop_kernels, [flipped], [tf.float32, tf.int32, tf.int32],
                                      stateful=False)
    k.set_shape([None, None, None])
    rows.set_shape([None])
    cols.set_shape([None])
    half = tf.shape(kernel)[1] // 2
    shape = tf.shape(x)
    padded = pad(x, (half, half), (half, half), border)
    window = tf.stack([shape[1] + tf.shape(k)[1] - 1, shape[2] + tf.shape(k)[2] - 1, shape[3]])

    def one_image(args):
        image, row, col, taps = args
        cut = _float(tf.slice(image, tf.stack([row, col, 0]), window))
        taps = tf.tile(taps[:, :, None, None], [1, 1, shape[3], 1])
        return cast_back(tf.nn.depthwise_conv2d(cut[None], taps, [1, 1, 1, 1], "VALID")[0], x.dtype)

    return tf.map_fn(one_image, (padded, rows, cols, k),
                     fn_output_signature=tf.TensorSpec([None, None, None], x.dtype))


def _float(x: tf.Tensor) -> tf.Tensor:
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def _separable(f: tf.Tensor, column: np.ndarray, border: str, row: np.ndarray | None = None):
    """Convolves a folded batch with `outer(column, row)` (row defaults to column), 1-D passes."""
    row = column if row is None else row
    rv, rh = len(column) // 2, len(row) // 2
    y = _float(pad(f, (rv, rv), (rh, rh), border) if rv or rh else f)
    # Vertical first, as before folding: the float sums, and so the outputs, stay identical.
    for k, taps in ((column, [-1, 1]), (row, [1, -1])):
        if len(k) > 1:
            y = _depthwise(y, tf.constant(np.reshape(k[::-1], taps), tf.float32))
        elif k[0] != 1:
            y = y * float(k[0])
    return y


def _stack_kernels(make: Callable[[float, int], np.ndarray], levels, seeds) -> tf.Tensor:
    """Builds one kernel per image with NumPy, zero-padded to a common size."""

    def build(levels_np, seeds_np):
        ks = [make(float(lv), int(sd)) for lv, sd in zip(levels_np, seeds_np)]
        # The common size is the widest nonzero extent: zero rims cost as much as weights.
        half = max(int(np.abs(np.argwhere(k) - k.shape[0] // 2).max(initial=0)) for k in ks)
        out = np.zeros([len(ks), 2 * half + 1, 2 * half + 1], np.float32)
        for i, k in enumerate(ks):
            c, r = k.shape[0] // 2, min(half, k.shape[0] // 2)
            out[i, half - r : half + r + 1, half - r : half + r + 1] = k[c - r : c + r + 1, c - r : c + r + 1]
        return out

    out = tf.numpy_function(build, [levels, seeds], tf.float32, stateful=False)
    out.set_shape([None, None, None])
    return out


def _kernel_blur(images, level, make, border, seed=None, random=False, sparse=False) -> tf.Tensor:
    """Applies `make(level, seed) -> kernel`, shared or one kernel per image.

    A deterministic kernel at one level is built once and shared; random
    kernels (`random=True`) and per-image levels get one kernel per image.
    `sparse=True` convolves each image with its own cropped kernel
    (`_convolve_sparse`), for kernels with few nonzero weights.
    """
    if isinstance(level, float) and not random:
        kernel = make(level, 0)
        return _filter(images, lambda f, shape: _convolve(f, kernel, border, shape[3]))

    def per_image_kernels(shape):
        seeds = per_image_seeds(seed_tensor(seed), shape[0])
        levels = tf.broadcast_to(tf.cast(level, tf.float32), shape[:1])
        return _stack_kernels(make, levels, seeds)

    if sparse:
        x, _, single = check_batch(images)
        y = _convolve_sparse(x, per_image_kernels(tf.shape(x)), border)
        return y[0] if single else y
    return _filter(images,
                   lambda f, shape: _convolve(f, per_image_kernels(shape), border, shape[3]))


# ----------------------------------------------------------------------------
# The distortions
# ----------------------------------------------------------------------------
# Kernels of half-width `level` (a window of 2 * level + 1): disks, walks, "combined".
RADIUS_SUPPORT = {
    name: KernelSupport(f"2*{name}+1", lambda v: 2 * v + 1, lambda side: side,
                        "min(height, width)")
    for name in ("radius", "size", "max_level")
}


def _check_window(images, window: int):
    """Refuses an explicit Gaussian window wider than `2 * min(height, width) + 1`."""
    _, height, width = _static_batch(images)
    if height is not None and width is not None:
        side = min(height, width)
        if window > 2 * side + 1:
            raise ValueError(f"window={window} is larger than the 2*{side}+1 the {height}x{width} "
                             f"image allows; window must be <= {2 * side + 1} for this image")
        return images
    x = tf.convert_to_tensor(images)
    side = tf.minimum(tf.shape(x)[-3], tf.shape(x)[-2])
    check = tf.debugging.assert_less_equal(
        window, 2 * side + 1,
        message=f"window={window} is larger than the 2*min(height, width)+1 the images allow")
    with tf.control_dependencies([check]):
        return tf.identity(x)


def gaussian_blur(images, sigma, window: str | int = "4sigma+1", border: str = "reflect"):
    """Gaussian blur (Dodge & Karam; DeepCorrect; QRNet).

    The window may be at most `2 * L + 1` pixels wide, `L` the images'
    shorter side: sigma <= L / 2 with "4sigma+1", (L + 1) / 2 with
    "4sigma-1", L / 4 with "8sigma+1"; an explicit window <= 2 * L + 1.

    Args:
        images: Images (see the module conventions).
        sigma: Standard deviation in pixels, >= 0; a number or one per image.
        window: Window rule, see `distort.kernels.gaussian_window`:
            "4sigma+1" (default, the DeepCorrect code), "4sigma-1" (QRNet).
        border: "reflect" (default) or "constant" (zero padding, as the
            original DeepCorrect code), "nearest", "mirror".

    Returns:
        The blurred images, same shape and dtype.

    Raises:
        ValueError: For a negative or non-finite sigma, a count of per-image
            sigmas other than the number of images, or a window wider than
            the images allow (eagerly; a `tf.debugging` assert in a graph).

    Example:

    >>> import numpy as np
    >>> gaussian_blur(np.zeros([1, 16, 16, 3], np.float32), 2.0).shape
    TensorShape([1, 16, 16, 3])
    """
    kernels.gaussian_window(0.0, window)  # checks the window argument
    if isinstance(window, str):
        per_sigma, offset = kernels.WINDOW_WIDTHS[window]
        extra = "" if offset == 1 else f"+{1 - offset}"
        support = KernelSupport(window.replace("sigma", "*sigma"),
                                lambda s: per_sigma * s + offset,
                                lambda side: (2 * side + 1 - offset) / per_sigma,
                                f"(2*min(height, width){extra})/{per_sigma}")
        images, sigma = check_levels(images, "sigma", sigma, support=support)
    else:
        images, sigma = check_levels(images, "sigma", sigma)
        images = _check_window(images, int(window))
    if isinstance(sigma, float):
        k = kernels.gaussian_1d(sigma, window)
        return _filter(images, lambda f, _: _separable(f, k, border))
    return _kernel_blur(images, sigma, lambda s, _: kernels.gaussian(s, window), border)


def defocus_blur(images, radius, border: str = "reflect"):
    """Defocus blur with an anti-aliased uniform disk (Zhou; Vasiljevic).

    The radius may be at most the images' shorter side (a window of at most
    `2 * L + 1` pixels, see `KernelSupport`).

    Args:
        images: Images (see the module conventions).
        radius: Disk radius in pixels, >= 0; a number or one per image.
        border: See `pad`.

    Returns:
        The blurred images, same shape and dtype.

    Raises:
        ValueError: For a bad radius, a count of per-image radii other than
            the number of images, or a radius above the images' shorter side.

    Example:

    >>> import numpy as np
    >>> defocus_blur(np.zeros([16, 16, 3], np.uint8), 2).shape
    TensorShape([16, 16, 3])
    """
    images, radius = check_levels(images, "radius", radius, support=RADIUS_SUPPORT["radius"])
    return _kernel_blur(images, radius, lambda r, _: kernels.disk(r), border)


def motion_blur(images, length, angle: float = 0.0, border: str = "reflect"):
    """Linear motion blur with a one-pixel-wide box (Vasiljevic).

    The length may be at most `2 * L + 1` pixels, `L` the images' shorter
    side (see `KernelSupport`).

    Args:
        images: Images (see the module conventions).
        length: Box length in pixels, >= 1; a number or one per image.
        angle: Direction in degrees: 0 horizontal (default), 90 vertical.
        border: See `pad`.

    Returns:
        The blurred images, same shape and dtype.

    Raises:
        ValueError: For a bad length, a count of per-image lengths other than
            the number of images, or a length above `2 * L + 1`.

    Example:

    >>> import numpy as np
    >>> motion_blur(np.zeros([16, 16, 3], np.uint8), 4, angle=90).shape
    TensorShape([16, 16, 3])
    """
    images, length = check_levels(images, "length", length, low=1.0,
                                  support=KernelSupport("length", float, lambda side: 2 * side + 1,
                                                        "2*min(height, width)+1"))
    return _kernel_blur(images, length, lambda n, _: kernels.box(n, angle), border)


def random_walk_blur(images, size, seed: int | None = None, border: str = "reflect"):
    """Zhou et al.'s random-walk motion blur, a different walk per image.

    The walk may take at most `L` steps, `L` the images' shorter side (a
    window of at most `2 * L + 1` pixels, see `KernelSupport`).

    Args:
        images: Images (see the module conventions).
        size: Walk length in one-pixel steps, >= 0; a number or one per image.
        seed: Seed of the walks, an integer in `[0, 2**31 - 1]`; `None` draws
            fresh walks.
        border: See `pad`.

    Returns:
        The blurred images, same shape and dtype.

    Raises:
        ValueError: For a bad size or seed, a count of per-image sizes other
            than the number of images, or more steps than the shorter side.

    Example:

    >>> import numpy as np
    >>> random_walk_blur(np.zeros([2, 16, 16, 3], np.uint8), 3, seed=0).shape
    TensorShape([2, 16, 16, 3])
    """
    seed_tensor(seed)  # checks the seed before any work
    images, size = check_levels(images, "size", size, support=RADIUS_SUPPORT["size"])
    return _kernel_blur(images, size, kernels.random_walk, border, seed, random=True, sparse=True)


def camera_shake(images, seed: int | None = None, border: str = "reflect"):
    """Vasiljevic et al.'s camera-shake blur, a different trajectory per image.

    Its kernel is always 17 x 17 pixels (`distort.kernels.camera_shake`), so
    there is no level to bound.

    Args:
        images: Images (see the module conventions).
        seed: Seed of the trajectories, an integer in `[0, 2**31 - 1]`;
            `None` draws fresh ones.
        border: See `pad`.

    Returns:
        The blurred images, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> camera_shake(np.zeros([2, 32, 32, 3], np.uint8), seed=0).shape
    TensorShape([2, 32, 32, 3])
    """
    seed_tensor(seed)  # checks the seed before any work
    return _kernel_blur(images, 0.0, lambda _, s: kernels.camera_shake(s), border, seed,
                        random=True)


def awgn(images, sigma, seed: int | None = None, clip: bool = True):
    """Additive white Gaussian noise, per pixel and channel.

    Args:
        images: Images (see the module conventions).
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


def contrast(images, alpha, gray: str | float = "mean"):
    """Contrast reduction by blending with a gray image (Dodge & Karam).

    `out = (1 - alpha) * image + alpha * gray`: alpha = 0 is the identity and
    alpha = 1 a flat gray image.

    Args:
        images: Images (see the module conventions).
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


def combined(images, max_level: float = 4.0, seed: int | None = None, border: str = "reflect"):
    """Zhou et al.'s combined distortion: motion blur, defocus blur and noise.

    For every image, the random-walk length, the disk radius and the noise
    standard deviation (0..255 scale) are each drawn uniformly from
    [0, max_level]. max_level may be at most the images' shorter side (the
    walk's and the disk's windows then fit, see `KernelSupport`).

    Args:
        images: Images (see the module conventions).
        max_level: Upper end of the uniform level range, >= 0 (4 in the paper).
        seed: Seed of the levels, walks and noise, an integer in
            `[0, 2**31 - 1]`; `None` draws fresh ones.
        border: See `pad`.

    Returns:
        The distorted images, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> combined(np.zeros([2, 16, 16, 3], np.uint8), seed=0).shape
    TensorShape([2, 16, 16, 3])
    """
    s = seed_tensor(seed)
    max_level = check_level("max_level", max_level)
    images, max_level = check_levels(images, "max_level", max_level,
                                     support=RADIUS_SUPPORT["max_level"])
    x, dtype, single = to_float_batch(images)
    n = tf.shape(x)[0]
    levels = tf.random.stateless_uniform([3, n], s, 0.0, tf.cast(max_level, tf.float32))
    walk_seeds = per_image_seeds(s + [0, 1], n)
    walks = _stack_kernels(kernels.random_walk, levels[0], walk_seeds)
    disks = _stack_kernels(lambda r, _: kernels.disk(r), levels[1], walk_seeds)
    shape = tf.shape(x)
    y = _unfold(_convolve(_convolve(_fold(x), walks, border, shape[3]), disks, border, shape[3]),
                shape)
    noise = tf.random.stateless_normal(tf.shape(x), s + [0, 2])
    y = y + tf.reshape(levels[2], [-1, 1, 1, 1]) * noise
    return from_float_batch(y, dtype, single)

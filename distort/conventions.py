"""The conventions every distortion shares: images, levels and seeds.

Images are NHWC (or a single HWC image) with 1 or 3 channels, either float32
on the 0..255 scale or uint8. Every distortion returns the same shape and
dtype, clipped to 0..255 and, for uint8, rounded. The distortions run eagerly,
inside `tf.function` and inside `tf.data` maps. Random ones take a `seed`: the
same seed gives the same output, and `seed=None` draws a fresh one.

A level is a Python number (one level for the whole batch) or a 1-D array or
tensor with one level per image (exactly one per image). The kernel blurs
refuse a level whose kernel is wider than the image can use (its half-width
larger than the image's shorter side, see `KernelSupport`); each blur's
docstring gives its bound.

This module checks and converts; `distort.convolution`, `distort.blur`,
`distort.noise`, `distort.photometric`, `distort.codecs` and
`distort.imagenet_c` build on it.

Example:

>>> import numpy as np
>>> batch, dtype, single = to_float_batch(np.zeros([8, 8, 3], np.uint8))
>>> batch.shape, dtype.name, single
(TensorShape([1, 8, 8, 3]), 'uint8', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from robustkit.checks import check_level
from robustkit.seeds import check_seed


def to_float_batch(images) -> tuple[tf.Tensor, tf.DType, bool]:
    """Validates images and returns them as a float32 NHWC batch.

    Same as `check_batch`, the batch cast to float32; `from_float_batch`
    undoes it.

    Args:
        images: An NHWC batch or one HWC image, uint8 or float (0..255), with
            1 or 3 channels.

    Returns:
        `(batch, dtype, single)`: the float32 batch, the input dtype, and
        whether the input was a single image.

    Example:

    >>> import numpy as np
    >>> to_float_batch(np.zeros([2, 4, 4, 1], np.uint8))[0].dtype
    tf.float32
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
        TypeError: For a dtype other than uint8 or float.
        ValueError: On a wrong rank or channel count, an empty batch, or
            (eagerly) NaN/inf values.

    Example:

    >>> import numpy as np
    >>> check_batch(np.zeros([4, 4, 3], np.uint8))[0].shape
    TensorShape([1, 4, 4, 3])
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
    """Clips float values to 0..255 and casts them to `dtype` (rounded for uint8).

    Args:
        x: A float tensor of any shape.
        dtype: The images' own dtype, as `check_batch` returns it.

    Returns:
        `x` clipped and cast, same shape.

    Example:

    >>> cast_back(tf.constant([-3.0, 127.6, 300.0]), tf.uint8).numpy().tolist()
    [0, 128, 255]
    """
    x = tf.clip_by_value(x, 0.0, 255.0)
    return tf.cast(tf.round(x) if dtype == tf.uint8 else x, dtype)


def from_float_batch(x: tf.Tensor, dtype: tf.DType, single: bool) -> tf.Tensor:
    """Clips a float batch to 0..255 and casts it back (rounded for uint8).

    The inverse of `to_float_batch`.

    Args:
        x: A float NHWC batch.
        dtype: The images' own dtype.
        single: Whether the input was one HWC image (the batch axis is dropped).

    Returns:
        The images in their own dtype and rank.

    Example:

    >>> import numpy as np
    >>> x, dtype, single = to_float_batch(np.zeros([4, 4, 3], np.uint8))
    >>> from_float_batch(x + 0.6, dtype, single).shape
    TensorShape([4, 4, 3])
    """
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

    Example:

    >>> seed_tensor(7).numpy().tolist()
    [7, 0]
    """
    if seed is None:
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    if isinstance(seed, (tf.Tensor, tf.Variable)):
        seed = tf.cast(seed, tf.int64)
        return tf.stack([seed, tf.zeros_like(seed)]) if seed.shape.rank == 0 else seed
    return tf.constant([check_seed(seed), 0], tf.int64)


def per_image_seeds(seed: tf.Tensor, n) -> tf.Tensor:
    """Derives one int64 seed per image from a stateless seed.

    The random blurs build image i's kernel from seed i.

    Args:
        seed: A stateless seed of shape [2] (see `seed_tensor`).
        n: The number of images (an integer or a scalar tensor).

    Returns:
        An int64 tensor of shape [n], each in `[0, 2**31 - 1)`.

    Example:

    >>> per_image_seeds(seed_tensor(7), 4).shape
    TensorShape([4])
    """
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

    Example:

    >>> import numpy as np
    >>> disk = KernelSupport("2*radius+1", lambda r: 2 * r + 1, lambda side: side,
    ...                      "min(height, width)")
    >>> check_levels(np.zeros([1, 8, 8, 3]), "radius", 3.0, support=disk)[1]
    3.0
    """

    formula: str
    width: Callable[[float], float]
    largest: Callable[[Any], Any]
    bound: str


def static_batch(images) -> tuple[int | None, int | None, int | None]:
    """Returns `(N, H, W)` of images as far as they are known without running anything.

    Args:
        images: An NHWC batch or one HWC image (an array, a tensor, a symbolic
            tensor).

    Returns:
        The number of images, the height and the width, each None where it is
        unknown (all three for a rank other than 3 or 4).

    Example:

    >>> import numpy as np
    >>> static_batch(np.zeros([5, 7, 3]))
    (1, 5, 7)
    """
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
        images: The images (see the conventions above).
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
    n, height, width = static_batch(images)
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


"""The kernel blurs: Gaussian, defocus, motion, random-walk, camera shake, combined.

Each blur builds its point-spread function with `distort.kernels` and
convolves with `distort.convolution`: one kernel shared by the batch at one
deterministic level, one kernel per image for per-image levels and random
kernels. Levels, images and seeds follow `distort.conventions`; a level whose
kernel is wider than `2 * L + 1` pixels (`L` the images' shorter side) is
refused, and each blur's docstring gives its bound.

Example:

>>> import numpy as np
>>> images = np.full([2, 32, 32, 3], 128, np.uint8)
>>> gaussian_blur(images, 1.5).dtype
tf.uint8
"""

from __future__ import annotations

import tensorflow as tf

from distort import kernels
from distort.conventions import (KernelSupport, check_batch, check_levels, from_float_batch,
                                 per_image_seeds, seed_tensor, static_batch, to_float_batch)
from distort.convolution import (apply_folded, convolve_folded, convolve_separable,
                                 convolve_sparse, fold, stack_kernels, unfold)
from robustkit.checks import check_level

# Kernels of half-width `level` (a window of 2 * level + 1): disks, walks, "combined".
RADIUS_SUPPORT = {
    name: KernelSupport(f"2*{name}+1", lambda v: 2 * v + 1, lambda side: side,
                        "min(height, width)")
    for name in ("radius", "size", "max_level")
}


def _check_window(images, window: int):
    """Refuses an explicit Gaussian window wider than `2 * min(height, width) + 1`."""
    _, height, width = static_batch(images)
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
        images: Images (see `distort.conventions`).
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
        return apply_folded(images, lambda f, _: convolve_separable(f, k, border))
    return _kernel_blur(images, sigma, lambda s, _: kernels.gaussian(s, window), border)


def defocus_blur(images, radius, border: str = "reflect"):
    """Defocus blur with an anti-aliased uniform disk (Zhou; Vasiljevic).

    The radius may be at most the images' shorter side (a window of at most
    `2 * L + 1` pixels, see `KernelSupport`).

    Args:
        images: Images (see `distort.conventions`).
        radius: Disk radius in pixels, >= 0; a number or one per image.
        border: See `distort.convolution.pad`.

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
        images: Images (see `distort.conventions`).
        length: Box length in pixels, >= 1; a number or one per image.
        angle: Direction in degrees: 0 horizontal (default), 90 vertical.
        border: See `distort.convolution.pad`.

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
        images: Images (see `distort.conventions`).
        size: Walk length in one-pixel steps, >= 0; a number or one per image.
        seed: Seed of the walks, an integer in `[0, 2**31 - 1]`; `None` draws
            fresh walks.
        border: See `distort.convolution.pad`.

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
        images: Images (see `distort.conventions`).
        seed: Seed of the trajectories, an integer in `[0, 2**31 - 1]`;
            `None` draws fresh ones.
        border: See `distort.convolution.pad`.

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


def combined(images, max_level: float = 4.0, seed: int | None = None, border: str = "reflect"):
    """Zhou et al.'s combined distortion: motion blur, defocus blur and noise.

    For every image, the random-walk length, the disk radius and the noise
    standard deviation (0..255 scale) are each drawn uniformly from
    [0, max_level]. max_level may be at most the images' shorter side (the
    walk's and the disk's windows then fit, see `KernelSupport`).

    Args:
        images: Images (see `distort.conventions`).
        max_level: Upper end of the uniform level range, >= 0 (4 in the paper).
        seed: Seed of the levels, walks and noise, an integer in
            `[0, 2**31 - 1]`; `None` draws fresh ones.
        border: See `distort.convolution.pad`.

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
    walks = stack_kernels(kernels.random_walk, levels[0], walk_seeds)
    disks = stack_kernels(lambda r, _: kernels.disk(r), levels[1], walk_seeds)
    shape = tf.shape(x)
    y = convolve_folded(fold(x), walks, border, shape[3])
    y = unfold(convolve_folded(y, disks, border, shape[3]), shape)
    noise = tf.random.stateless_normal(tf.shape(x), s + [0, 2])
    y = y + tf.reshape(levels[2], [-1, 1, 1, 1]) * noise
    return from_float_batch(y, dtype, single)


def _kernel_blur(images, level, make, border, seed=None, random=False, sparse=False) -> tf.Tensor:
    """Applies `make(level, seed) -> kernel`, shared or one kernel per image.

    A deterministic kernel at one level is built once and shared; random
    kernels (`random=True`) and per-image levels get one kernel per image.
    `sparse=True` convolves each image with its own cropped kernel
    (`convolve_sparse`), for kernels with few nonzero weights.
    """
    if isinstance(level, float) and not random:
        kernel = make(level, 0)
        return apply_folded(images, lambda f, shape: convolve_folded(f, kernel, border, shape[3]))

    def per_image_kernels(shape):
        seeds = per_image_seeds(seed_tensor(seed), shape[0])
        levels = tf.broadcast_to(tf.cast(level, tf.float32), shape[:1])
        return stack_kernels(make, levels, seeds)

    if sparse:
        x, _, single = check_batch(images)
        y = convolve_sparse(x, per_image_kernels(tf.shape(x)), border)
        return y[0] if single else y
    return apply_folded(
        images, lambda f, shape: convolve_folded(f, per_image_kernels(shape), border, shape[3]))


"""One entry point for every distortion: `apply(images, name, level, seed)`.

The table of names, level arguments and level ranges lives here; a distortion
named with its levels and options as one value is `distort.Distortion`
(`distort.spec`).

Example:

>>> import numpy as np, distort
>>> images = np.zeros([2, 16, 16, 3], np.uint8)
>>> distort.apply(images, "awgn", 20, seed=0).shape
TensorShape([2, 16, 16, 3])
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Mapping

import tensorflow as tf

from distort import blur, codecs, imagenet_c, noise, photometric
from distort.convolution import convolve
from robustkit.seeds import check_seed

# name -> (function, name of its level argument, fixed options, random?)
DISTORTIONS: dict[str, tuple[Callable, str | None, dict, bool]] = {
    "gaussian_blur": (blur.gaussian_blur, "sigma", {}, False),
    "awgn": (noise.awgn, "sigma", {}, True),
    "contrast": (photometric.contrast, "alpha", {}, False),
    "jpeg": (codecs.jpeg, "quality", {}, False),
    "jpeg2000": (codecs.jpeg2000, "psnr", {}, False),
    "defocus_blur": (blur.defocus_blur, "radius", {}, False),
    "motion_blur": (blur.motion_blur, "length", {}, False),
    "motion_blur_horizontal": (blur.motion_blur, "length", {"angle": 0.0}, False),
    "motion_blur_vertical": (blur.motion_blur, "length", {"angle": 90.0}, False),
    "random_walk_blur": (blur.random_walk_blur, "size", {}, True),
    "camera_shake": (blur.camera_shake, None, {}, True),
    "combined": (blur.combined, "max_level", {}, True),
}


# name -> (low, high) of its levels; distortions not listed take levels >= 0.
LEVEL_RANGES: dict[str, tuple[float, float]] = {
    "contrast": (0.0, 1.0),
    "jpeg": (1.0, 100.0),
    "jpeg2000": codecs.JPEG2000_PSNR_RANGE,
    "motion_blur": (1.0, math.inf),
    "motion_blur_horizontal": (1.0, math.inf),
    "motion_blur_vertical": (1.0, math.inf),
    "camera_shake": (0.0, 1.0),
}

# The ImageNet-C corruptions, "imagenet_c.<name>", their level the severity 1..5.
DISTORTIONS.update(imagenet_c.registry_entries())
LEVEL_RANGES.update({name: (1.0, 5.0) for name in imagenet_c.registry_entries()})


def level_range(name: str) -> tuple[float, float]:
    """Returns the `(low, high)` range of a distortion's levels.

    Args:
        name: A name from `names()`.

    Returns:
        The smallest and largest allowed level (high may be `math.inf`).

    Example:

    >>> level_range("jpeg")
    (1.0, 100.0)
    """
    return LEVEL_RANGES.get(check_name(name), (0.0, math.inf))


def names() -> list[str]:
    """Returns the names `apply` accepts.

    Example:

    >>> "awgn" in names()
    True
    """
    return sorted(DISTORTIONS)


def check_name(name: str) -> str:
    """Raises a ValueError listing the known names if `name` is unknown.

    Example:

    >>> check_name("jpeg")
    'jpeg'
    """
    if name not in DISTORTIONS:
        raise ValueError(f"name must be one of {names()}. Received: name={name!r}")
    return name


def is_random(name: str) -> bool:
    """Whether a distortion draws random numbers (and so takes a seed).

    Example:

    >>> is_random("awgn"), is_random("jpeg")
    (True, False)
    """
    return DISTORTIONS[check_name(name)][3]


def apply(images, name: str, level, seed: int | None = None, **options):
    """Applies a distortion by name at a level.

    Args:
        images: NHWC or HWC images, uint8 or float on 0..255.
        name: A name from `names()`, e.g. "gaussian_blur", "awgn", "jpeg".
        level: The distortion's level: sigma for blur and noise, alpha for
            contrast, quality for JPEG, target PSNR for JPEG2000, radius for
            defocus, length for motion blur, steps for the random walk, the
            maximum level for "combined", and 0 (off) or 1 (on) for
            "camera_shake". A number or one level per image.
        seed: Seed of random distortions (ignored by deterministic ones, but
            checked): an integer in `[0, robustkit.seeds.SEED_MAX]`, None for
            fresh randomness, or a stateless seed tensor of shape [2].
        **options: Further keyword arguments of the distortion's function
            (for example `window="4sigma-1"` or `border="constant"`).

    Returns:
        The distorted images, same shape and dtype.

    Raises:
        ValueError: For an unknown name, or a level outside the distortion's
            range (the message names the level's own argument, e.g. `sigma`).
        TypeError: For a seed that is not an integer.

    Example:

    >>> import numpy as np
    >>> apply(np.zeros([8, 8, 3], np.uint8), "jpeg", 10).shape
    TensorShape([8, 8, 3])
    """
    fn, arg, fixed, random = DISTORTIONS[check_name(name)]
    if not isinstance(seed, tf.Tensor):
        seed = check_seed(seed, optional=True)
    kwargs = {**fixed, **options}
    if random:
        kwargs["seed"] = seed
    if arg is None:
        return _switch(images, name, level, fn, kwargs)
    return fn(images, level, **kwargs)


def _switch(images, name: str, level, fn: Callable, kwargs: dict):
    """Applies a distortion without a level (camera shake) when `level` is 1, not when 0."""
    if isinstance(level, tf.Tensor) and not tf.executing_eagerly():
        on = tf.debugging.assert_equal(
            tf.logical_or(tf.equal(level, 0.0), tf.equal(level, 1.0)), True,
            message=f"level must be 0 (off) or 1 (on) for {name!r}")
        with tf.control_dependencies([on]):
            return tf.cond(tf.reduce_all(tf.equal(level, 1.0)), lambda: fn(images, **kwargs),
                           lambda: convolve(images, [[1.0]]))
    value = level.numpy() if isinstance(level, tf.Tensor) else level
    try:
        ok = float(value) in (0.0, 1.0)
    except (TypeError, ValueError):
        ok = False
    if isinstance(value, bool) or not ok:
        raise ValueError(f"level must be 0 (off) or 1 (on) for {name!r}. Received: level={value!r}")
    return fn(images, **kwargs) if float(value) == 1.0 else convolve(images, [[1.0]])


def check_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Raises a TypeError unless every option is a keyword of the distortion's function.

    Args:
        name: A name from `names()`.
        options: Keyword options for `apply`, e.g. `{"window": "4sigma-1"}`.

    Returns:
        The options, as a new dict.

    Raises:
        ValueError: For an unknown name.
        TypeError: For an option the distortion's function does not take.

    Example:

    >>> check_options("gaussian_blur", {"window": "4sigma-1"})
    {'window': '4sigma-1'}
    """
    fn, arg, fixed, _ = DISTORTIONS[check_name(name)]
    taken = set(inspect.signature(fn).parameters) - {"images", "seed", arg} - set(fixed)
    unknown = sorted(set(options) - taken)
    if unknown:
        raise TypeError(f"options of {name!r} must be among {sorted(taken)}. Received: {unknown}")
    return dict(options)

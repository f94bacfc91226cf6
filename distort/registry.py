"""One entry point for every distortion: `apply(images, name, level, seed)`.

Example:

>>> import numpy as np, distort
>>> images = np.zeros([2, 16, 16, 3], np.uint8)
>>> distort.apply(images, "awgn", 20, seed=0).shape
TensorShape([2, 16, 16, 3])
"""

from __future__ import annotations

import functools
import math
from typing import Callable

from distort import codecs, ops

# name -> (function, name of its level argument, fixed options, random?)
DISTORTIONS: dict[str, tuple[Callable, str | None, dict, bool]] = {
    "gaussian_blur": (ops.gaussian_blur, "sigma", {}, False),
    "awgn": (ops.awgn, "sigma", {}, True),
    "contrast": (ops.contrast, "alpha", {}, False),
    "jpeg": (codecs.jpeg, "quality", {}, False),
    "jpeg2000": (codecs.jpeg2000, "psnr", {}, False),
    "defocus_blur": (ops.defocus_blur, "radius", {}, False),
    "motion_blur": (ops.motion_blur, "length", {}, False),
    "motion_blur_horizontal": (ops.motion_blur, "length", {"angle": 0.0}, False),
    "motion_blur_vertical": (ops.motion_blur, "length", {"angle": 90.0}, False),
    "random_walk_blur": (ops.random_walk_blur, "size", {}, True),
    "camera_shake": (ops.camera_shake, None, {}, True),
    "combined": (ops.combined, "max_level", {}, True),
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
    """Returns the names `apply` accepts."""
    return sorted(DISTORTIONS)


def check_name(name: str) -> str:
    """Raises a ValueError listing the known names if `name` is unknown."""
    if name not in DISTORTIONS:
        raise ValueError(f"name must be one of {names()}. Received: name={name!r}")
    return name


def is_random(name: str) -> bool:
    """Whether a distortion draws random numbers (and so takes a seed)."""
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
        seed: Seed of random distortions (ignored by deterministic ones).
        **options: Further keyword arguments of the distortion's function
            (for example `window="4sigma-1"` or `border="constant"`).

    Returns:
        The distorted images, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> apply(np.zeros([8, 8, 3], np.uint8), "jpeg", 10).shape
    TensorShape([8, 8, 3])
    """
    fn, arg, fixed, random = DISTORTIONS[check_name(name)]
    kwargs = {**fixed, **options}
    if random:
        kwargs["seed"] = seed
    if arg is None:
        if level not in (0, 1):
            raise ValueError(f"level must be 0 (off) or 1 (on) for {name!r}. Received: level={level}")
        return fn(images, **kwargs) if level == 1 else ops.convolve(images, [[1.0]])
    return fn(images, level, **kwargs)


def distortion(name: str, **options) -> Callable:
    """Returns `fn(images, level, seed=None)` for one distortion, options bound."""
    check_name(name)
    return functools.partial(apply, name=name, **options)

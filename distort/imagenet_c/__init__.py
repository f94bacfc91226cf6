"""Every ImageNet-C corruption (Hendrycks & Dietterich 2019) as seeded, batched TensorFlow ops.

The fifteen benchmark corruptions and the four held-out ones of
`imagecorruptions.get_corruption_names("all")`, at the reference's five
severities (`distort.imagenet_c.constants.SEVERITIES`). Every op takes
images (NHWC or HWC, uint8 or float on 0..255, 1 or 3 channels), a
severity 1..5 (or one per image) and, if it is random, a seed: the same seed
gives the same bytes, also in another process. They run eagerly, in
`tf.function` and in `tf.data`.

In `distort`'s registry (`distort.apply`, sweeps, pipelines, the command
line) they are named `imagenet_c.<name>`, with the severity as the level:
`distort.apply(images, "imagenet_c.fog", 3, seed=0)`. The prefix keeps them
apart from the seed papers' distortions of the same name (`defocus_blur`,
`motion_blur`, `gaussian_blur`, `contrast`), which follow other definitions.
The preset `imagenet_c` lists the fifteen at severities 1..5, the preset
`imagenet_c_extra` the four held-out ones.

Example:

>>> import numpy as np
>>> from distort import imagenet_c
>>> images = np.zeros([2, 32, 32, 3], np.uint8)
>>> imagenet_c.fog(images, 3, seed=0).shape
TensorShape([2, 32, 32, 3])
>>> imagenet_c.registry_name("fog")
'imagenet_c.fog'
"""

from __future__ import annotations

import importlib
from typing import Callable

from distort.imagenet_c.constants import ALL, COMMON, FAMILIES, HELD_OUT, SEVERITIES

PREFIX = "imagenet_c."

# corruption -> (module of distort.imagenet_c, random?). The modules (and TensorFlow)
# are imported on first use, so that the presets can list the names cheaply.
CORRUPTIONS: dict[str, tuple[str, bool]] = {
    "gaussian_noise": ("noise", True),
    "shot_noise": ("noise", True),
    "impulse_noise": ("noise", True),
    "defocus_blur": ("blur", False),
    "glass_blur": ("blur", True),
    "motion_blur": ("blur", True),
    "zoom_blur": ("blur", False),
    "snow": ("weather", True),
    "frost": ("weather", True),
    "fog": ("weather", True),
    "brightness": ("digital", False),
    "contrast": ("digital", False),
    "elastic_transform": ("digital", True),
    "pixelate": ("digital", False),
    "jpeg_compression": ("digital", False),
    "speckle_noise": ("noise", True),
    "gaussian_blur": ("blur", False),
    "spatter": ("liquid", True),
    "saturate": ("digital", False),
}


def corruption(name: str) -> Callable:
    """The function of a corruption, `fn(images, severity[, seed])`, by its name."""
    module, _ = CORRUPTIONS[check_corruption(name)]
    return getattr(importlib.import_module(f"distort.imagenet_c.{module}"), name)


def is_random(name: str) -> bool:
    """Whether a corruption draws random numbers (and so takes a seed)."""
    return CORRUPTIONS[check_corruption(name)][1]


def registry_name(name: str) -> str:
    """The registry's name of a corruption: "fog" -> "imagenet_c.fog"."""
    return PREFIX + check_corruption(name)


def corruption_name(name: str) -> str:
    """The corruption of a registry name: "imagenet_c.fog" (or "fog") -> "fog"."""
    return check_corruption(name[len(PREFIX):] if name.startswith(PREFIX) else name)


def check_corruption(name: str) -> str:
    """Raises a ValueError listing the corruptions if `name` is not one of them."""
    if name not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {list(ALL)}. Received: corruption={name!r}")
    return name


def registry_entries() -> dict[str, tuple[Callable, str, dict, bool]]:
    """The corruptions as `distort.registry.DISTORTIONS` entries (level: the severity)."""
    return {PREFIX + name: (corruption(name), "severity", {}, random)
            for name, (_, random) in CORRUPTIONS.items()}


def __getattr__(name: str):
    if name in CORRUPTIONS:
        value = corruption(name)
    elif name == "frost_folder":
        value = importlib.import_module("distort.imagenet_c.weather").frost_folder
    else:
        raise AttributeError(f"module 'distort.imagenet_c' has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = ["ALL", "COMMON", "CORRUPTIONS", "FAMILIES", "HELD_OUT", "PREFIX", "SEVERITIES",
           "check_corruption", "corruption", "corruption_name", "frost_folder", "is_random",
           "registry_entries", "registry_name", *CORRUPTIONS]

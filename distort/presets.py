"""Distortion levels of the papers, as one plain table.

`PRESETS[name]` maps a distortion name to its levels (or, for random
distortions, to the range levels are drawn from) and carries the paper's
own notes in `"meta"`.

Example:

>>> from distort.presets import PRESETS, levels
>>> levels("deepcorrect_cifar", "awgn")
(5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
"""

from __future__ import annotations

from distort.imagenet_c.constants import COMMON as _IMAGENET_C_COMMON
from distort.imagenet_c.constants import HELD_OUT as _IMAGENET_C_HELD_OUT


def _steps(start: float, stop: float, step: float) -> tuple[float, ...]:
    n = int(round((stop - start) / step)) + 1
    return tuple(round(start + i * step, 6) for i in range(n))


PRESETS: dict[str, dict] = {
    # Dodge & Karam 2016, Section III: five distortions, their levels.
    "dodge_karam": {
        "gaussian_blur": _steps(1, 9, 1),
        "awgn": _steps(10, 100, 10),
        "contrast": _steps(0, 1, 0.1),
        "jpeg": _steps(2, 20, 2),
        "jpeg2000": _steps(20, 40, 2),
        "meta": {"paper": "Dodge & Karam 2016", "blur_window": "4sigma+1",
                 "note": "JPEG2000 levels are target PSNRs in dB; contrast is the gray blend weight."},
    },
    # DeepCorrect (Borkar & Karam 2019), Section 3: six levels per distortion.
    "deepcorrect_imagenet": {
        "gaussian_blur": _steps(1, 6, 1),
        "awgn": (10.0, 20.0, 40.0, 60.0, 80.0, 100.0),
        "meta": {"paper": "Borkar & Karam 2019 (ImageNet)", "blur_window": "4sigma+1"},
    },
    "deepcorrect_cifar": {
        "gaussian_blur": _steps(0.5, 3, 0.5),
        "awgn": _steps(5, 30, 5),
        "meta": {"paper": "Borkar & Karam 2019 (CIFAR-100)", "blur_window": "4sigma+1"},
    },
    # QRNet (Takagi et al. 2019), Section IV: five levels, blur window 4 sigma - 1.
    "qrnet": {
        "awgn": _steps(20, 100, 20),
        "gaussian_blur": _steps(2, 10, 2),
        "meta": {"paper": "Takagi et al. 2019", "blur_window": "4sigma-1"},
    },
    # Zhou et al. 2017: each level drawn uniformly from [0, 4].
    "zhou": {
        "random_walk_blur": (0.0, 4.0),
        "defocus_blur": (0.0, 4.0),
        "awgn": (0.0, 4.0),
        "combined": (4.0,),
        "meta": {"paper": "Zhou et al. 2017", "sampling": "uniform range (low, high)"},
    },
    # Vasiljevic et al. 2016, Table 1: photos resized to a short side of 384 px (the
    # canonical scale), blurred and quantized, then resized to the network's scale
    # (256 px short side, 224 crop for a 224-input network).
    "vasiljevic": {
        "defocus_blur": (2.0, 4.0, 6.0, 8.0),
        "motion_blur_horizontal": (4.0, 8.0),
        "motion_blur_vertical": (4.0, 8.0),
        "camera_shake": (1.0,),
        "gaussian_blur": (4.0, 8.0),
        "meta": {"paper": "Vasiljevic et al. 2016", "canonical_scale": 384,
                 "note": "camera_shake has no level: 1.0 means 'on'."},
    },
    # Hendrycks & Dietterich 2019: the fifteen ImageNet-C corruptions at severities 1..5
    # (the constants of each severity: distort.imagenet_c.constants.SEVERITIES).
    "imagenet_c": {
        **{f"imagenet_c.{name}": (1, 2, 3, 4, 5) for name in _IMAGENET_C_COMMON},
        "meta": {"paper": "Hendrycks & Dietterich 2019", "canonical_scale": 256,
                 "note": "levels are severities; ImageNet-C corrupts 224-px center crops."},
    },
    # The four held-out ImageNet-C corruptions (speckle noise, Gaussian blur, spatter, saturate).
    "imagenet_c_extra": {
        **{f"imagenet_c.{name}": (1, 2, 3, 4, 5) for name in _IMAGENET_C_HELD_OUT},
        "meta": {"paper": "Hendrycks & Dietterich 2019", "canonical_scale": 256,
                 "note": "levels are severities; held out from the mCE."},
    },
}


def preset_names() -> list[str]:
    """Returns the names of the presets."""
    return sorted(PRESETS)


def get(name: str) -> dict:
    """Returns one preset (distortion name -> levels), without its metadata.

    Raises:
        ValueError: If the preset does not exist.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {preset_names()}. Received: preset={name!r}")
    return {k: v for k, v in PRESETS[name].items() if k != "meta"}


def levels(preset: str, distortion: str) -> tuple[float, ...]:
    """Returns the levels a preset gives for one distortion.

    Raises:
        ValueError: If the preset or the distortion is unknown to it.
    """
    table = get(preset)
    if distortion not in table:
        raise ValueError(
            f"distortion must be one of {sorted(table)} for preset {preset!r}. "
            f"Received: distortion={distortion!r}"
        )
    return tuple(float(v) for v in table[distortion])


def blur_window(preset: str) -> str:
    """Returns the Gaussian window rule a preset uses."""
    get(preset)
    return PRESETS[preset]["meta"].get("blur_window", "4sigma+1")


def canonical_scale(preset: str) -> int | None:
    """Returns the short side (px) a preset distorts photos at, or None for any.

    Example:

    >>> canonical_scale("vasiljevic")
    384
    """
    get(preset)
    return PRESETS[preset]["meta"].get("canonical_scale")


def options(preset: str) -> dict[str, dict]:
    """Returns the per-distortion options a preset implies (its blur window).

    Example:

    >>> options("qrnet")
    {'gaussian_blur': {'window': '4sigma-1'}}
    """
    return {"gaussian_blur": {"window": blur_window(preset)}}

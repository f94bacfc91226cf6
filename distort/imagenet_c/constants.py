"""The constants of the ImageNet-C reference code, one table per corruption.

`SEVERITIES[name]` holds the five parameter sets of a corruption, severity 1
first, exactly as `make_imagenet_c.py` (Hendrycks & Dietterich 2019) and the
`imagecorruptions` package define them; `ALEXNET_ERRORS` and
`ALEXNET_CLEAN_ERROR` are the baseline of the mean Corruption Error.

Example:

>>> from distort.imagenet_c.constants import SEVERITIES, COMMON
>>> SEVERITIES["gaussian_noise"][0], len(COMMON)
(0.08, 15)
"""

from __future__ import annotations

# The fifteen corruptions of the benchmark, in the paper's order (noise, blur,
# weather, digital), then the four held-out ("validation") ones.
COMMON: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
HELD_OUT: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL: tuple[str, ...] = COMMON + HELD_OUT

FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": COMMON[0:3],
    "blur": COMMON[3:7],
    "weather": COMMON[7:11],
    "digital": COMMON[11:15],
    "held_out": HELD_OUT,
}

SEVERITIES: dict[str, tuple] = {
    # Standard deviation on the 0..1 scale.
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    # Photons per unit intensity: Poisson(x * c) / c.
    "shot_noise": (60, 25, 12, 5, 3),
    # Fraction of values set to 0 or 1 (salt and pepper, half each).
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    # Standard deviation of the multiplicative noise: x + x * N(0, c).
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    # (disk radius, sigma of the anti-aliasing Gaussian).
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    # (sigma, largest shift, shuffle passes).
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    # (radius: the line has 2 * radius + 1 taps, sigma of its Gaussian weights).
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    # The zoom factors (numpy.arange(start, stop, step)), averaged with the image.
    "zoom_blur": ((1.0, 1.11, 0.01), (1.0, 1.16, 0.01), (1.0, 1.21, 0.02),
                  (1.0, 1.26, 0.02), (1.0, 1.31, 0.03)),
    # Sigma of the Gaussian blur (scikit-image, truncated at 4 sigma, nearest border).
    "gaussian_blur": (1, 2, 3, 4, 6),
    # (snow mean, snow std, zoom, threshold, motion radius, motion sigma, image weight).
    "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8),
             (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
             (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    # (image weight, frost weight).
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    # (fog strength, plasma fractal's wibble decay).
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    # (liquid mean, liquid std, liquid sigma, threshold, intensity or mud sigma, mud?).
    "spatter": ((0.65, 0.3, 4, 0.69, 0.6, 0),
                (0.65, 0.3, 3, 0.68, 0.6, 0),
                (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1),
                (0.67, 0.4, 1, 0.65, 1.5, 1)),
    # Added to the HSV value.
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    # Factor of the deviation from each channel's mean.
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    # (factor, offset) of the HSV saturation.
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    # alpha of the displacement field (250 * c); its sigma is 1% of the size.
    "elastic_transform": (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12),
    # Size factor of the box-filtered thumbnail, shown back with nearest neighbours.
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    # JPEG quality.
    "jpeg_compression": (25, 18, 15, 10, 7),
}

# AlexNet's top-1 error on ImageNet-C, averaged over the five severities, per
# corruption (the reference code's `get_ce_alexnet` table), and on the clean
# validation set: the baseline of the mean Corruption Error and its relative form.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
ALEXNET_CLEAN_ERROR = 0.4348

# Frost textures of the reference package (the reference draws among the first five).
FROST_FILES: tuple[str, ...] = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg",
                                "frost5.jpg", "frost6.jpg")
FROST_TEXTURES_USED = 5

"""Image distortions of the robustness papers, as seeded TensorFlow ops.

The reading path: `kernels` (point-spread functions), `ops` and `codecs` (the
distortions), `presets` (the papers' levels), `pipeline` (`tf.data`),
`layers` (Keras preprocessing layers), `data` (loaders), `metrics`, `sweep`.

Example:

>>> import numpy as np, distort
>>> images = np.zeros([4, 32, 32, 3], np.uint8)
>>> distort.apply(images, "gaussian_blur", 2.0).shape
TensorShape([4, 32, 32, 3])
"""

from distort import kernels, presets
from distort.codecs import glymur_available, jpeg, jpeg2000
from distort.ops import (
    awgn,
    camera_shake,
    combined,
    contrast,
    convolve,
    defocus_blur,
    gaussian_blur,
    motion_blur,
    random_walk_blur,
)
from distort.presets import PRESETS
from distort.registry import DISTORTIONS, apply, distortion, is_random, names

__all__ = [
    "DISTORTIONS", "PRESETS", "apply", "awgn", "camera_shake", "combined", "contrast",
    "convolve", "defocus_blur", "distortion", "gaussian_blur", "glymur_available",
    "is_random", "jpeg", "jpeg2000", "kernels", "motion_blur", "names", "presets",
    "random_walk_blur",
]

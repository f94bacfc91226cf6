"""Image distortions of the robustness papers, as seeded TensorFlow ops.

The reading path: `kernels` (point-spread functions), `conventions` (images,
levels, seeds), `convolution`, then the distortions: `blur`, `noise`,
`photometric`, `codecs` and `imagenet_c`; `registry` (`apply` by name),
`spec` (`Distortion`: a name with its levels and options, the one value every
entry point takes), `presets` (the papers' levels), `pipeline` (`tf.data`),
`layers` (Keras preprocessing layers), `metrics`, `sweep`. Loaders and the
other shared plumbing live in `robustkit`.

The names below are imported on first use, so that `import distort` (and the
`distort` command line, before it knows what it will run) does not load
TensorFlow.

Example:

>>> import numpy as np, distort
>>> images = np.zeros([4, 32, 32, 3], np.uint8)
>>> distort.apply(images, "gaussian_blur", 2.0).shape
TensorShape([4, 32, 32, 3])
>>> blur = distort.Distortion("gaussian_blur", [1, 2], {"window": "4sigma-1"})
>>> blur(images, 2.0).shape
TensorShape([4, 32, 32, 3])
>>> distort.as_distortions({"awgn": [10, 20]})[0].levels
(10.0, 20.0)
"""

from __future__ import annotations

import importlib
import importlib.util

# Public name -> the module that defines it (a module itself for "kernels", "presets").
_EXPORTS = {
    "kernels": "distort.kernels",
    "presets": "distort.presets",
    "PRESETS": "distort.presets",
    "glymur_available": "distort.codecs",
    "jpeg": "distort.codecs",
    "jpeg2000": "distort.codecs",
    "awgn": "distort.noise",
    "camera_shake": "distort.blur",
    "combined": "distort.blur",
    "contrast": "distort.photometric",
    "convolve": "distort.convolution",
    "defocus_blur": "distort.blur",
    "gaussian_blur": "distort.blur",
    "motion_blur": "distort.blur",
    "random_walk_blur": "distort.blur",
    "DISTORTIONS": "distort.registry",
    "apply": "distort.registry",
    "is_random": "distort.registry",
    "names": "distort.registry",
    "Distortion": "distort.spec",
    "as_distortions": "distort.spec",
    "check_seed": "robustkit.seeds",
    "benchmark": "distort.corruption_benchmark",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        value = module if module.__name__ == f"distort.{name}" else getattr(module, name)
    elif not name.startswith("_") and importlib.util.find_spec(f"distort.{name}") is not None:
        value = importlib.import_module(f"distort.{name}")  # a submodule, e.g. distort.blur
    else:
        raise AttributeError(f"module 'distort' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

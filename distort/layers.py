"""Keras preprocessing layers that distort images during training.

Each layer distorts a random fraction of every training batch at a random
level and passes images through unchanged at inference, like Keras's own
random augmentation layers. `RandomDistortion` takes any name of
`distort.names()`; the nine layers below it are bound to one distortion each,
with the papers' levels as defaults. They are registered and serialisable, so a
model that contains them saves to `.keras` and loads with `safe_mode=True`.

The layers subclass `keras.layers.Layer`, the public base of Keras 3 (its
preprocessing base, `DataLayer`, is internal). Their ops are TensorFlow's
(`distort.pipeline.distort_batch`), so they run inside a model and inside a
`tf.data` map alike, with the TensorFlow backend.

Example:

>>> import keras, numpy as np
>>> layer = GaussianBlur(levels=[1.0, 2.0], seed=0)
>>> y = layer(np.zeros([4, 32, 32, 3], np.float32), training=True)
>>> tuple(y.shape)
(4, 32, 32, 3)
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from distort import pipeline, registry
from robustkit.seeds import check_seed


@keras.saving.register_keras_serializable(package="distort")
class RandomDistortion(keras.layers.Layer):
    """Distorts a fraction of each training batch with a named distortion.

    At inference (`training` false or None) the layer returns its inputs.

    Args:
        distortion: A name from `distort.names()`.
        levels: Levels to draw from (a list), or `(low, high)` with
            `sampling="uniform"`.
        fraction: Fraction of each batch to distort, in [0, 1] (the last
            images of the batch). 0.5 by default.
        sampling: "choice" (default) or "uniform".
        seed: Seed of the layer's random draws, an integer in `[0, 2**31 - 1]`,
            or None (default) for fresh randomness.
        options: Extra keyword options of the distortion (e.g.
            `{"window": "4sigma-1"}`). None by default.
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: For an unknown distortion, levels outside its range, a bad
            sampling or seed, or a fraction outside [0, 1].

    Example:

    >>> import numpy as np
    >>> layer = RandomDistortion("defocus_blur", [2.0], fraction=1.0, seed=0,
    ...                          options={"border": "constant"})
    >>> layer(np.zeros([2, 16, 16, 3], np.float32), training=True).shape
    TensorShape([2, 16, 16, 3])
    """

    def __init__(self, distortion: str, levels: Sequence[float], fraction: float = 0.5,
                 sampling: str = "choice", seed: int | None = None, options: dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        registry.check_name(distortion)
        seed = check_seed(seed, optional=True)
        pipeline.check_sampled_levels(distortion, levels, sampling)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1]. Received: fraction={fraction}")
        self.distortion = distortion
        self.levels = [float(v) for v in levels]
        self.fraction = float(fraction)
        self.sampling = sampling
        self.seed = seed
        self.options = dict(options or {})
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    def call(self, inputs, training=None):
        if not training:
            return inputs
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        return pipeline.distort_batch(inputs, {self.distortion: self.levels}, seed, self.fraction,
                                      self.sampling, **self.options)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(distortion=self.distortion, levels=self.levels, fraction=self.fraction,
                      sampling=self.sampling, seed=self.seed, options=self.options)
        return config


class PresetDistortion(RandomDistortion):
    """Base of the layers bound to one distortion, named by `DISTORTION`.

    A subclass sets `DISTORTION` and gives its default levels in its own
    `__init__`. Its config leaves the distortion out (the class names it), and
    a `distortion` argument is ignored.

    Args:
        levels: Levels to draw from (see `RandomDistortion`).
        **kwargs: `fraction`, `sampling`, `seed`, `options` (see
            `RandomDistortion`) and standard layer arguments.

    Example:

    >>> import keras
    >>> @keras.saving.register_keras_serializable(package="example")
    ... class Sharp(PresetDistortion):
    ...     DISTORTION = "gaussian_blur"
    ...     def __init__(self, levels=(0.5,), **kwargs):
    ...         super().__init__(levels, **kwargs)
    >>> "distortion" in Sharp(seed=0).get_config()
    False
    """

    DISTORTION: str = ""

    def __init__(self, levels: Sequence[float], **kwargs):
        kwargs.pop("distortion", None)
        super().__init__(self.DISTORTION, levels, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("distortion")
        return config


@keras.saving.register_keras_serializable(package="distort")
class GaussianBlur(PresetDistortion):
    """Random Gaussian blur (`distort.blur.gaussian_blur`).

    Args:
        levels: Standard deviations in pixels to draw from. Defaults to
            DeepCorrect's CIFAR levels, (0.5, 1.0, 1.5, 2.0, 2.5, 3.0).
        **kwargs: `fraction`, `sampling`, `seed`, `options` (e.g.
            `{"window": "4sigma-1"}`), see `RandomDistortion`, and standard
            layer arguments.

    Example:

    >>> import numpy as np
    >>> layer = GaussianBlur(levels=[1.0, 2.0], seed=0)
    >>> layer(np.zeros([4, 32, 32, 3], np.float32), training=True).shape
    TensorShape([4, 32, 32, 3])
    """

    DISTORTION = "gaussian_blur"

    def __init__(self, levels: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0), **kwargs):
        super().__init__(levels, **kwargs)


@keras.saving.register_keras_serializable(package="distort")
class AWGN(PresetDistortion):
    """Random additive white Gaussian noise (`distort.noise.awgn`).

    Args:
        levels: Noise standard deviations on the 0..255 scale to draw from.
            Defaults to DeepCorrect's CIFAR levels, (5, 10, 15, 20, 25, 30).
        **kwargs: `fraction`, `sampling`, `seed`, `options`, see
            `RandomDistortion`, and standard layer arguments.

    Example:

    >>> import numpy as np
    >>> layer = AWGN(levels=[30.0], fraction=1.0, seed=0)
    >>> y = layer(np.full([2, 16, 16, 3], 128.0, np.float32), training=True)
    >>> 20 < float(np.std(y)) < 40
    True
    """

    DISTORTION = "awgn"

    def __init__(self, levels: Sequence[float] = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0), **kwargs):
        super().__init__(levels, **kwargs)


@keras.saving.register_keras_serializable(package="distort")
class Contrast(PresetDistortion):
    """Random contrast reduction (`distort.photometric.contrast`).

    Args:
        levels: Blend weights of the gray image in [0, 1] to draw from.
            Defaults to (0.2, 0.4, 0.6, 0.8), from Dodge & Karam's range.
        **kwargs: `fraction`, `sampling`, `seed`, `options` (e.g.
            `{"gray": 128.0}`), see `RandomDistortion`, and standard layer
            arguments.

    Example:

    >>> import numpy as np
    >>> layer = Contrast(levels=[1.0], fraction=1.0, seed=0, options={"gray": 128.0})
    >>> float(layer(np.zeros([2, 8, 8, 3], np.float32), training=True).numpy().max())
    128.0
    """

    DISTORTION = "contrast"

    def __init__(self, levels: Sequence[float] = (0.2, 0.4, 0.6, 0.8), **kwargs):
        super().__init__(levels, **kwargs)


@keras.saving.register_keras_serializable(package="distort")
class JPEG(PresetDistortion):
    """Random JPEG compression (`distort.codecs.jpeg`).

    Args:
        levels: JPEG qualities in [1, 100] to draw from. Defaults to Dodge &
            Karam's, (2, 4, ..., 20).
        **kwargs: `fraction`, `sampling`, `seed`, `options`, see
            `RandomDistortion`, and standard layer arguments.

    Example:

    >>> import numpy as np
    >>> layer = JPEG(levels=[10], seed=0)
    >>> layer(np.zeros([4, 32, 32, 3], np.float32), training=True).shape
    TensorShape([4, 32, 32, 3])
    """

    DISTORTION = "jpeg"

    def __init__(self, levels: Sequence[float] = (2, 4, 6, 8, 10, 12, 14, 16, 18, 20), **kwargs):
        super().__init__(levels, **kwargs)


@keras.saving.register_keras_serializable(package="distort")
class JPEG2000(PresetDistortion):
    """Random JPEG2000 compression (`distort.codecs.jpeg2000`, needs glymur).

    Args:
        levels: Target PSNRs in dB to draw from. Defaults to every other of
            Dodge & Karam's, (20, 24, 28, 32, 36, 40).
        **kwargs: `fraction`, `sampling`, `seed`, `options`, see
            `RandomDistortion`, and standard layer arguments.

    Example:

    >>> import numpy as np
    >>> layer = JPEG2000(levels=[30], seed=0)
    >>> layer(np.zeros([2, 32, 32, 3], np.float32), training=True).shape
    TensorShape([2, 32, 32, 3])
    """

    DISTORTION = "jpeg2000"

    def __init__(self, levels: Sequence[float] = (20, 24, 28, 32, 36, 40), **kwargs):
        super().__init__(levels, **kwargs)


@keras.saving.register_keras_serializable(package="distort")
class DefocusBlur(PresetDistortion):
    """Random defocus (disk) blur (`distort.blur.defocus_blur`).

    Args:
        levels: Disk radii in pixels to draw from. Defaults to Vasiljevic et
            al.'s, (2, 4, 6, 8).
        **kwargs: `fraction`, `sampling`, `seed`, `options` (e.g.
            `{"border": "constant"}`), see `RandomDistortion`, and standard
            layer arguments.

    Example:

    >>> import numpy as np
    >>> layer = DefocusBlur(seed=0)
    >>> layer(np.zeros([4, 32, 32, 3], np.float32), training=True).shape
    TensorShape([4, 32, 32, 3])
    """

    DISTORTION = "defocus_blur"

    def __init__(self, levels: Sequence[float] = (2.0, 4.0, 6.0, 8.0), **kwargs):
        super().__init__(levels, **kwargs)


@keras.saving.register_keras_serializable(package="distort")
class MotionBlur(PresetDistortion):
    """Random linear (box) motion blur (`distort.blur.motion_blur`).

    Args:
        levels: Box lengths in pixels to draw from. Defaults to Vasiljevic et
            al.'s, (4, 8).
        **kwargs: `fraction`, `sampling`, `seed`, `options` (e.g.
            `{"angle": 90.0}`), see `RandomDistortion`, and standard layer
            arguments.

    Example:

    >>> import numpy as np
    >>> layer = MotionBlur(seed=0, options={"angle": 90.0})
    >>> layer(np.zeros([4, 32, 32, 3], np.float32), training=True).shape
    TensorShape([4, 32, 32, 3])
    """

    DISTORTION = "motion_blur"

    def __init__(self, levels: Sequence[float] = (4.0, 8.0), **kwargs):
        super().__init__(levels, **kwargs)


@keras.saving.register_keras_serializable(package="distort")
class RandomWalkBlur(PresetDistortion):
    """Random-walk motion blur (Zhou; `distort.blur.random_walk_blur`).

    Args:
        levels: Walk lengths in one-pixel steps to draw from. Defaults to the
            whole steps of Zhou et al.'s range [0, 4], (1, 2, 3, 4).
        **kwargs: `fraction`, `sampling`, `seed`, `options`, see
            `RandomDistortion`, and standard layer arguments.

    Example:

    >>> import numpy as np
    >>> layer = RandomWalkBlur(seed=0)
    >>> layer(np.zeros([4, 32, 32, 3], np.float32), training=True).shape
    TensorShape([4, 32, 32, 3])
    """

    DISTORTION = "random_walk_blur"

    def __init__(self, levels: Sequence[float] = (1.0, 2.0, 3.0, 4.0), **kwargs):
        super().__init__(levels, **kwargs)


@keras.saving.register_keras_serializable(package="distort")
class CameraShake(PresetDistortion):
    """Camera-shake blur (Vasiljevic; `distort.blur.camera_shake`).

    Args:
        levels: 1 (on) or 0 (off) for each draw. Defaults to (1.0,): every
            distorted image is shaken.
        **kwargs: `fraction`, `sampling`, `seed`, `options`, see
            `RandomDistortion`, and standard layer arguments.

    Example:

    >>> import numpy as np
    >>> layer = CameraShake(seed=0)
    >>> layer(np.zeros([4, 32, 32, 3], np.float32), training=True).shape
    TensorShape([4, 32, 32, 3])
    """

    DISTORTION = "camera_shake"

    def __init__(self, levels: Sequence[float] = (1.0,), **kwargs):
        super().__init__(levels, **kwargs)

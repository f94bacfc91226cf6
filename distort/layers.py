"""Keras preprocessing layers that distort images during training.

Each layer distorts a random fraction of every training batch at a random
level and passes images through unchanged at inference, like Keras's own
random augmentation layers. They are registered and serialisable, so a model
that contains them saves to `.keras` and loads with `safe_mode=True`.

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

    Args:
        distortion: A name from `distort.names()`.
        levels: Levels to draw from (a list), or `(low, high)` with
            `sampling="uniform"`.
        fraction: Fraction of each batch to distort, in [0, 1] (the last
            images of the batch). 0.5 by default.
        sampling: "choice" or "uniform".
        seed: Seed of the layer's random draws, an integer in `[0, 2**31 - 1]`,
            or None for fresh randomness.
        options: Extra keyword options of the distortion (e.g.
            `{"window": "4sigma-1"}`).
        **kwargs: Standard layer arguments.
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


def _preset_layer(distortion: str, default_levels: Sequence[float], doc: str):
    """Builds a `RandomDistortion` subclass bound to one distortion."""

    class Layer(RandomDistortion):
        def __init__(self, levels: Sequence[float] = tuple(default_levels), **kwargs):
            kwargs.pop("distortion", None)
            super().__init__(distortion, levels, **kwargs)

        def get_config(self):
            config = super().get_config()
            config.pop("distortion")
            return config

    Layer.__doc__ = f"{doc}\n\n    Default levels: {list(default_levels)}. See `RandomDistortion`."
    return Layer


# Layer name -> (distortion, default levels, summary). Default levels are the
# DeepCorrect CIFAR levels for blur and noise, Dodge & Karam's for the rest.
LAYER_TABLE = {
    "GaussianBlur": ("gaussian_blur", (0.5, 1.0, 1.5, 2.0, 2.5, 3.0), "Random Gaussian blur."),
    "AWGN": ("awgn", (5.0, 10.0, 15.0, 20.0, 25.0, 30.0), "Random additive white Gaussian noise."),
    "Contrast": ("contrast", (0.2, 0.4, 0.6, 0.8), "Random contrast reduction."),
    "JPEG": ("jpeg", (2, 4, 6, 8, 10, 12, 14, 16, 18, 20), "Random JPEG compression."),
    "JPEG2000": ("jpeg2000", (20, 24, 28, 32, 36, 40), "Random JPEG2000 compression."),
    "DefocusBlur": ("defocus_blur", (2.0, 4.0, 6.0, 8.0), "Random defocus (disk) blur."),
    "MotionBlur": ("motion_blur", (4.0, 8.0), "Random linear (box) motion blur."),
    "RandomWalkBlur": ("random_walk_blur", (1.0, 2.0, 3.0, 4.0), "Random-walk motion blur (Zhou)."),
    "CameraShake": ("camera_shake", (1.0,), "Camera-shake blur (Vasiljevic)."),
}

GaussianBlur = _preset_layer(*LAYER_TABLE["GaussianBlur"])
AWGN = _preset_layer(*LAYER_TABLE["AWGN"])
Contrast = _preset_layer(*LAYER_TABLE["Contrast"])
JPEG = _preset_layer(*LAYER_TABLE["JPEG"])
JPEG2000 = _preset_layer(*LAYER_TABLE["JPEG2000"])
DefocusBlur = _preset_layer(*LAYER_TABLE["DefocusBlur"])
MotionBlur = _preset_layer(*LAYER_TABLE["MotionBlur"])
RandomWalkBlur = _preset_layer(*LAYER_TABLE["RandomWalkBlur"])
CameraShake = _preset_layer(*LAYER_TABLE["CameraShake"])

for _name in LAYER_TABLE:
    _cls = globals()[_name]
    _cls.__name__ = _cls.__qualname__ = _name
    globals()[_name] = keras.saving.register_keras_serializable(package="distort", name=_name)(_cls)

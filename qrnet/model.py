"""The QRNet restorer: a U-Net-like encoder-decoder (Takagi et al., IEEE Access 2019).

Paper: "Quality Recovery Network for Image Classification of Distorted Images" (QRNet),
Section III-A and Table 1.

The restorer maps images on the 0..255 scale to images on the same scale, so it sits in
front of any classifier that reads `distort` images. The encoder repeats
`(3x3 conv + ReLU) x 2 -> 2x2 max pooling`; the decoder repeats
`stride-2 transposed conv -> concatenation with the encoder output of the same size ->
(3x3 conv + ReLU) x 2`. Filters use He initialisation, dropout (0.2) follows the deepest
encoder stage and the bottleneck (as in U-Net) and a 1x1 convolution with a sigmoid gives the
output. At the paper's depth (4) the network has 34 layers, input, concatenation and dropout
included; `paper_layer_count` counts them.

Inputs whose height or width is not a multiple of `2**depth` are reflect-padded on the
bottom and right and cropped back, so any image size works.

Everything here is a registered Keras object, so restorers round-trip through `.keras` files
with `keras.models.load_model(path, safe_mode=True)`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from robustkit.preprocessing import MODES, ImagePreprocessing
from robustkit.seeds import check_seed
from robustkit.training_checks import derived_seed

__all__ = [
    "PREPROCESSING_MODES",
    "PRESETS",
    "CropToReference",
    "ImagePreprocessing",
    "QRNet",
    "ReflectPadToMultiple",
    "build_qrnet",
    "paper_layer_count",
    "qrnet_from_preset",
]

# Named configurations. "paper" is Table 1 of the paper (224x224 inputs, GPU sized);
# "cpu" is a narrow version that trains on 32x32 images on a laptop CPU.
PRESETS: dict[str, dict[str, Any]] = {
    "qrnet_paper": {
        "config": {"base_width": 64, "depth": 4, "small": False, "dropout": 0.2},
        "description": "QRNet of Table 1: 4 stages, 64-1024 filters, two convs per stage.",
    },
    "qrnet_small_paper": {
        "config": {"base_width": 64, "depth": 4, "small": True, "dropout": 0.2},
        "description": "Small QRNet of Table 3: as qrnet_paper with one conv per stage.",
    },
    "qrnet_cpu": {
        "config": {"base_width": 16, "depth": 3, "small": False, "dropout": 0.2},
        "description": "CPU-sized QRNet for 32x32 images: 3 stages, 16-128 filters.",
    },
    "qrnet_tiny": {
        "config": {"base_width": 4, "depth": 2, "small": False, "dropout": 0.2},
        "description": "Test-sized QRNet: 2 stages, 4-16 filters.",
    },
}

# Layer types that make up the network of Table 1. The scaling, padding and cropping
# layers are implementation details and are not counted.
_PAPER_LAYER_TYPES = (
    layers.InputLayer,
    layers.Conv2D,
    layers.Conv2DTranspose,
    layers.MaxPooling2D,
    layers.Concatenate,
    layers.Dropout,
)


@keras.saving.register_keras_serializable(package="qrnet")
class ReflectPadToMultiple(layers.Layer):
    """Reflect-pads the bottom and right of NHWC images to a multiple of `multiple`.

    Reflection excludes the edge pixel (NumPy's "reflect" mode) and wraps around for pads
    longer than the image, so any size, including 1, is padded. Works with unknown
    (dynamic) height and width.

    Args:
        multiple: int >= 1, the height and width of the output are the smallest multiples
            of it that are at least the input's. Defaults to 16.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Example:

    >>> import numpy as np
    >>> pad = ReflectPadToMultiple(4)
    >>> x = np.arange(3, dtype="float32").reshape(1, 1, 3, 1)
    >>> np.asarray(pad(x))[0, 0, :, 0].tolist()
    [0.0, 1.0, 2.0, 1.0]
    """

    def __init__(self, multiple: int = 16, **kwargs):
        super().__init__(**kwargs)
        if int(multiple) != multiple or multiple < 1:
            raise ValueError(f"multiple must be an integer >= 1. Received: multiple={multiple}")
        self.multiple = int(multiple)

    def _padded(self, size):
        return ((size + self.multiple - 1) // self.multiple) * self.multiple

    def _reflect_axis(self, x, axis: int):
        static = x.shape[axis]
        if static is not None and static % self.multiple == 0:
            return x
        size = ops.shape(x)[axis]
        index = ops.arange(self._padded(size), dtype="int32")
        period = ops.maximum(2 * size - 2, 1)
        folded = ops.mod(index, period)
        source = ops.where(folded < size, folded, period - folded)
        return ops.take(x, source, axis=axis)

    def call(self, inputs):
        return self._reflect_axis(self._reflect_axis(inputs, 1), 2)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        height = None if height is None else self._padded(height)
        width = None if width is None else self._padded(width)
        return (batch, height, width, channels)

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="qrnet")
class CropToReference(layers.Layer):
    """Crops NHWC images to the height and width of a reference batch (top-left corner).

    Called on `[images, reference]`; undoes `ReflectPadToMultiple`.

    Example:

    >>> import numpy as np
    >>> crop = CropToReference()
    >>> crop([np.zeros((1, 8, 8, 2)), np.zeros((1, 5, 7, 3))]).shape
    TensorShape([1, 5, 7, 2])
    """

    def call(self, inputs):
        images, reference = inputs
        shape = ops.shape(reference)
        return images[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shape):
        images_shape, reference_shape = input_shape
        return (images_shape[0], reference_shape[1], reference_shape[2], images_shape[3])


# The preprocessing layer lives in `robustkit.preprocessing`; qrnet re-exports it.
PREPROCESSING_MODES = tuple(MODES)


def he_normal(seed: int | None, name: str) -> keras.initializers.Initializer:
    """He-normal initializer of the layer `name`: seeded from `(seed, name)`, or fresh.

    Example:

    >>> he_normal(0, "enc1_conv1").get_config()["seed"] == derived_seed(0, "enc1_conv1")
    True
    >>> he_normal(None, "enc1_conv1").get_config()["seed"] is None
    True
    """
    return keras.initializers.HeNormal(None if seed is None else derived_seed(seed, name))


def _dropout(x, rate: float, name: str, seed: int | None):
    layer_seed = None if seed is None else derived_seed(seed, name)
    return layers.Dropout(rate, seed=layer_seed, name=name)(x)


def _conv_relu(x, filters: int, name: str, seed: int | None = None):
    return layers.Conv2D(
        filters,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=he_normal(seed, name),
        name=name,
    )(x)


def _conv_stack(x, filters: int, convs: int, name: str, seed: int | None = None):
    for index in range(1, convs + 1):
        x = _conv_relu(x, filters, f"{name}_conv{index}", seed)
    return x


def encoder_stage(x, filters: int, convs: int, dropout: float, name: str,
                  seed: int | None = None):
    """One encoder stage: `convs` 3x3 convs with ReLU, optional dropout, 2x2 max pooling.

    Args:
        x: NHWC tensor.
        filters: number of filters of each convolution.
        convs: number of 3x3 convolutions (2 for QRNet, 1 for small QRNet).
        dropout: dropout rate after the convolutions; 0 adds no dropout layer.
        name: prefix for the layer names.
        seed: seed of the initial weights and the dropout (each layer's own, derived from
            it and the layer's name); None draws fresh ones. Defaults to None.

    Returns:
        `(skip, pooled)`: the stage's output before pooling (for the skip connection) and the
        pooled tensor for the next stage.
    """
    x = _conv_stack(x, filters, convs, name, seed)
    if dropout > 0:
        x = _dropout(x, dropout, f"{name}_dropout", seed)
    return x, layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def decoder_stage(x, skip, filters: int, convs: int, name: str, seed: int | None = None):
    """One decoder stage: stride-2 transposed conv, concatenation with `skip`, 3x3 convs.

    Args:
        x: NHWC tensor from the stage below.
        skip: encoder output with twice the height and width of `x`.
        filters: number of filters of each convolution.
        convs: number of 3x3 convolutions after the concatenation.
        name: prefix for the layer names.
        seed: seed of the initial weights, as for `encoder_stage`. Defaults to None.

    Returns:
        The stage's output tensor, the size of `skip`.
    """
    x = layers.Conv2DTranspose(
        filters,
        2,
        strides=2,
        padding="same",
        activation="relu",
        kernel_initializer=he_normal(seed, f"{name}_upconv"),
        name=f"{name}_upconv",
    )(x)
    x = layers.Concatenate(axis=-1, name=f"{name}_concat")([x, skip])
    return _conv_stack(x, filters, convs, name, seed)


def qrnet_graph(images, base_width: int, depth: int, small: bool, dropout: float,
                seed: int | None = None):
    """Builds the QRNet graph on a symbolic 0..255 image tensor.

    Args:
        images: symbolic NHWC tensor on 0..255 (a `keras.Input`).
        base_width: filters of the first stage; stage `i` has `base_width * 2**i`.
        depth: number of encoder (and decoder) stages; the bottleneck is below them.
        small: one 3x3 convolution per stage instead of two.
        dropout: dropout rate after the deepest encoder stage and the bottleneck.
        seed: seed of the initial weights and of the dropout layers (each layer's own,
            derived from it and the layer's name); None draws fresh ones. Defaults to None.

    Returns:
        Symbolic tensor of restored images on 0..255, the shape of `images`.
    """
    convs = 1 if small else 2
    channels = images.shape[-1]
    x = layers.Rescaling(1.0 / 255.0, name="scale_in")(images)
    x = ReflectPadToMultiple(2**depth, name="pad")(x)
    skips = []
    for stage in range(depth):
        stage_dropout = dropout if stage == depth - 1 else 0.0
        skip, x = encoder_stage(
            x, base_width * 2**stage, convs, stage_dropout, name=f"enc{stage + 1}", seed=seed
        )
        skips.append(skip)
    x = _conv_stack(x, base_width * 2**depth, convs, "bottleneck", seed)
    if dropout > 0:
        x = _dropout(x, dropout, "bottleneck_dropout", seed)
    for stage in reversed(range(depth)):
        x = decoder_stage(x, skips[stage], base_width * 2**stage, convs, name=f"dec{stage + 1}",
                          seed=seed)
    x = layers.Conv2D(
        channels, 1, activation="sigmoid", kernel_initializer=he_normal(seed, "output_conv"),
        name="output_conv",
    )(x)
    x = CropToReference(name="crop")([x, images])
    return layers.Rescaling(255.0, name="scale_out")(x)


MAX_DEPTH = 8  # 2**8 = 256: deeper stages pool photos below one pixel and double filters 8 times


def _validate(base_width, depth, dropout, input_shape) -> None:
    for argument, value, high in (("base_width", base_width, None), ("depth", depth, MAX_DEPTH)):
        allowed = "an integer >= 1" if high is None else f"an integer in [1, {high}]"
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{argument} must be {allowed}. Received: {argument}={value!r}")
        if value < 1 or (high is not None and value > high):
            raise ValueError(f"{argument} must be {allowed}. Received: {argument}={value!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.number)):
        raise TypeError(f"dropout must be a number in [0, 1). Received: dropout={dropout!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ValueError(
            "input_shape must be (height, width, channels) with known channels. "
            f"Received: input_shape={input_shape}"
        )


@keras.saving.register_keras_serializable(package="qrnet")
class QRNet(keras.Model):
    """QRNet restorer as a functional model (Takagi et al., IEEE Access 2019, Sec. III-A).

    Maps distorted images on 0..255 to restored images on 0..255 of the same shape.

    Args:
        base_width: int >= 1, filters of the first stage (64 in the paper); stage `i` has
            `base_width * 2**i` filters and the bottleneck `base_width * 2**depth`.
        depth: int >= 1, number of pooling stages (4 in the paper).
        small: bool, "small QRNet" of Table 3: one 3x3 conv per stage instead of two.
            Defaults to False.
        dropout: float in [0, 1), dropout rate after the deepest encoder stage and the
            bottleneck. Defaults to 0.2.
        input_shape: `(height, width, channels)`; height and width may be None. Sizes that
            are not multiples of `2**depth` are reflect-padded and cropped back.
            Defaults to `(None, None, 3)`.
        name: model name. Defaults to `"qrnet"`.
        seed: seed of the initial weights and of the dropout layers, an integer in
            `[0, 2**31 - 1]` (each layer draws from its own seed, derived from it and the
            layer's name, kept in the saved config), so the same seed gives the same
            restorer in any process; None draws fresh weights. Defaults to 0.
        **kwargs: other `keras.Model` arguments (`dtype`, `trainable`).

    Example:

    >>> import numpy as np
    >>> restorer = QRNet(base_width=4, depth=2)
    >>> restorer.predict(np.zeros((1, 17, 23, 3), "float32"), verbose=0).shape
    (1, 17, 23, 3)
    """

    def __init__(
        self,
        base_width: int = 64,
        depth: int = 4,
        small: bool = False,
        dropout: float = 0.2,
        input_shape: tuple[int | None, int | None, int] = (None, None, 3),
        name: str = "qrnet",
        seed: int | None = 0,
        **kwargs,
    ):
        input_shape = tuple(input_shape)
        _validate(base_width, depth, dropout, input_shape)
        seed = check_seed(seed, optional=True)
        # === Functional Model ===
        images = keras.Input(shape=input_shape, name="images")
        restored = qrnet_graph(
            images, int(base_width), int(depth), bool(small), float(dropout), seed
        )
        super().__init__(inputs=images, outputs=restored, name=name, **kwargs)
        self.seed = seed

        # === Config ===
        self.base_width = int(base_width)
        self.depth = int(depth)
        self.small = bool(small)
        self.dropout = float(dropout)
        self.image_shape = input_shape

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "base_width": self.base_width,
            "depth": self.depth,
            "small": self.small,
            "dropout": self.dropout,
            "input_shape": list(self.image_shape),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["input_shape"] = tuple(config.get("input_shape", (None, None, 3)))
        return cls(**config)


def build_qrnet(
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    base_width: int = 64,
    depth: int = 4,
    small: bool = False,
    dropout: float = 0.2,
    name: str = "qrnet",
    seed: int | None = 0,
) -> QRNet:
    """Builds a QRNet restorer (see `QRNet` for the arguments).

    Returns:
        A `QRNet` functional model from 0..255 images to 0..255 images.

    Example:

    >>> restorer = build_qrnet(base_width=4, depth=2, small=True)
    >>> restorer.output_shape
    (None, None, None, 3)
    """
    return QRNet(
        base_width=base_width,
        depth=depth,
        small=small,
        dropout=dropout,
        input_shape=input_shape,
        name=name,
        seed=seed,
    )


def qrnet_from_preset(preset: str, **overrides) -> QRNet:
    """Builds a QRNet from a named entry of `PRESETS`, with optional overrides.

    Args:
        preset: a key of `PRESETS`.
        **overrides: `QRNet` arguments that replace the preset's.

    Returns:
        A `QRNet`.

    Example:

    >>> qrnet_from_preset("qrnet_tiny", dropout=0.0).depth
    2
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
    return QRNet(**{**PRESETS[preset]["config"], **overrides})


def paper_layer_count(model: keras.Model) -> int:
    """Counts the layers of a QRNet the way Table 1 of the paper does.

    Input, convolution, transposed convolution, pooling, concatenation and dropout layers
    count; the scaling, padding and cropping layers this implementation adds do not.

    Args:
        model: a QRNet (or any functional model).

    Returns:
        The number of counted layers (34 for the paper's configuration).

    Example:

    >>> paper_layer_count(build_qrnet(base_width=4, depth=4))
    34
    """
    return sum(isinstance(layer, _PAPER_LAYER_TYPES) for layer in model.layers)

"""Correction units: the residual blocks of DeepCorrect (Figure 7, Table 10).

A correction unit maps the `channels` most distortion-susceptible filter
outputs of a conv layer to corrected outputs of the same shape:
`output = input + F(input)`, where `F` is

    1x1 conv (width) -> [BN] -> ReLU
    -> kxk conv (width) -> [BN] -> ReLU      (repeated `inner_convs` times)
    -> 1x1 conv (channels), zero-initialised

Every convolution has a bias and there is no batch norm on the input, which
matches the authors' AlexNet code and the parameter counts of Table 10
exactly. The last 1x1 conv starts at zero (kernel and bias), so a unit is the
identity when created and a freshly wrapped model gives exactly the outputs of
the pretrained model (the authors' code did not do this; their CIFAR units start
from a perturbed model).

Paper: Borkar & Karam, "DeepCorrect: Correcting DNN models against image
distortions", https://arxiv.org/abs/1705.02406.

Example:

```python
import numpy as np
from deepcorrect.units import CorrectionUnit

unit = CorrectionUnit(72, preset="cw", kernel_size=5)
unit.build((None, 55, 55, 72))
assert sum(w.numpy().size for w in unit.trainable_weights) == 270_288  # Table 10
x = np.random.rand(1, 55, 55, 72).astype("float32")
np.testing.assert_array_equal(unit(x), x)  # identity at initialisation
```
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from deepcorrect.checks import check_momentum
from deepcorrect.layers import PACKAGE, validate_channel_indices
from robustkit.seeds import check_seed
from robustkit.training_checks import derived_seed

# Table 10 of the paper, as data. `width`: "same" (critically wide, one
# filter per corrected channel), "half" (bottleneck) or a fixed number.
# `inner_kernel`: None uses the unit's `kernel_size`, a number overrides it.
# `large_kernel_dilations`: dilation rates of the inner convs when the unit's
# `kernel_size` is larger than `inner_kernel` (the "lite" unit replaces a 5x5
# pair by a 3x3 pair with dilations 1 and 2).
UNIT_PRESETS: dict[str, dict[str, Any]] = {
    "cw": {
        "description": "critically wide: width = corrected channels (Deepcorr-5)",
        "width": "same",
        "inner_convs": 2,
        "inner_kernel": None,
        "large_kernel_dilations": None,
        "batch_norm": True,
    },
    "lite": {
        "description": "fixed width 128, 3x3 inner convs (Deepcorr-5-lite)",
        "width": 128,
        "inner_convs": 2,
        "inner_kernel": 3,
        "large_kernel_dilations": (1, 2),
        "batch_norm": True,
    },
    "bottleneck": {
        "description": "width = half the corrected channels, three 3x3 inner "
        "convs (Deepcorr-5-bottleneck)",
        "width": "half",
        "inner_convs": 3,
        "inner_kernel": 3,
        "large_kernel_dilations": None,
        "batch_norm": True,
    },
    "no_bn": {
        "description": "critically wide without batch norm (Deepcorr-5-no-bn)",
        "width": "same",
        "inner_convs": 2,
        "inner_kernel": None,
        "large_kernel_dilations": None,
        "batch_norm": False,
    },
}


def check_preset(preset: str, name: str = "preset") -> dict[str, Any]:
    """Returns the `UNIT_PRESETS` entry for `preset`, or raises ValueError.

    Args:
        preset: a key of `UNIT_PRESETS`.
        name: argument name used in the error message. Defaults to `"preset"`.

    Returns:
        The preset's table entry.

    Example:

    >>> check_preset("lite")["width"]
    128
    """
    if preset not in UNIT_PRESETS:
        raise ValueError(
            f"{name} must be one of {sorted(UNIT_PRESETS)}. "
            f"Received: {name}={preset!r}"
        )
    return UNIT_PRESETS[preset]


def resolve_width(width_rule: str | int, channels: int) -> int:
    """Correction width D for a preset's width rule and `channels` channels.

    Example:

    >>> resolve_width("half", 72), resolve_width("same", 72), resolve_width(128, 72)
    (36, 72, 128)
    """
    if width_rule == "same":
        return channels
    if width_rule == "half":
        return max(1, (channels + 1) // 2)
    return int(width_rule)


def initializer_seed(initializer: keras.initializers.Initializer) -> int | None:
    """The integer seed of a random initializer, or None (unseeded or not random).

    Example:

    >>> initializer_seed(keras.initializers.HeNormal(seed=3)), initializer_seed("zeros")
    (3, None)
    """
    seed = keras.initializers.get(initializer).get_config().get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def seeded_initializer(
    initializer: keras.initializers.Initializer, seed: int | None
) -> keras.initializers.Initializer:
    """A new copy of `initializer`, with `seed` as its seed when it takes one.

    Args:
        initializer: a Keras initializer (or its name).
        seed: the new seed; None keeps the initializer's own.

    Returns:
        A new initializer instance (no state shared with `initializer`).

    Example:

    >>> seeded_initializer(keras.initializers.get("he_normal"), 5).get_config()["seed"]
    5
    """
    config = keras.initializers.serialize(keras.initializers.get(initializer))
    inner = config.get("config", {})
    if seed is not None and "seed" in inner:
        config = {**config, "config": {**inner, "seed": int(seed)}}
    return keras.initializers.deserialize(config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CorrectionUnit(keras.layers.Layer):
    """A DeepCorrect correction unit: `output = input + F(input)`.

    Args:
        channels: number of corrected channels (the unit's input and output
            channels, `beta_i * N_i` in the paper).
        preset: one of `UNIT_PRESETS`: `"cw"` (critically wide, the default),
            `"lite"`, `"bottleneck"` or `"no_bn"`.
        kernel_size: spatial size k of the inner convs. Defaults to 3 (the
            paper uses 5 for AlexNet's conv1). Presets with a fixed inner
            kernel ("lite", "bottleneck") use 3x3, and "lite" dilates its pair
            of 3x3 convs (rates 1, 2) when `kernel_size` is larger than 3.
        width: correction width D; overrides the preset's width. Defaults to
            None (use the preset).
        dilation_rates: one dilation rate per inner conv; overrides the
            preset. Defaults to None (use the preset).
        kernel_initializer: initializer of every conv but the last, which
            always starts at zero. Defaults to `"he_normal"`.
        seed: None (the default) or an integer in `[0, 2**31 - 1]`: sets the
            seed of `kernel_initializer` (kept in the saved config). With a
            seed, here or in the initializer, each conv draws from its own seed
            derived from it and the conv's name, so the same seed gives the
            same initial weights in any process and no two convs start alike.
            None with an unseeded initializer draws fresh weights.
        kernel_regularizer: optional regularizer on every conv kernel (the
            lambda * R(W) term of the paper's Eq. 5). Defaults to None.
        channel_indices: None (the default) for a unit whose input is the
            `channels` corrected channels. Otherwise the unit reads a conv
            layer's full output and corrects the channels at these positions
            (`len(channel_indices) == channels`), leaving every other channel
            bit for bit as it was. The gather is folded into the first 1x1
            conv and the scatter into the last one (their kernels are
            zero-padded to the full channel count at call time), so no
            separate gather/scatter pass over the activations is needed. The
            weights, and so the parameter counts, are those of the plain unit.
        bn_momentum: momentum of the unit's batch norms, in [0, 1). Defaults
            to 0.99 (Keras's). Their moving statistics start at mean 0 and
            variance 1 and need about `1 / (1 - bn_momentum)` steps to forget
            that start, so a run of a hundred steps wants 0.9.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, ...).

    Batch norm inside the unit is trainable and follows the `training` flag:
    batch statistics while training, moving averages at inference.

    Example:

    >>> unit = CorrectionUnit(72, preset="bottleneck")
    >>> unit.build((None, 27, 27, 72))
    >>> sum(w.numpy().size for w in unit.trainable_weights)  # Table 10
    40680
    """

    def __init__(
        self,
        channels: int,
        preset: str = "cw",
        kernel_size: int = 3,
        width: int | None = None,
        dilation_rates: Sequence[int] | None = None,
        kernel_initializer: Any = "he_normal",
        kernel_regularizer: Any = None,
        channel_indices: Sequence[int] | None = None,
        bn_momentum: float = 0.99,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        spec = check_preset(preset)
        if int(channels) < 1:
            raise ValueError(
                f"channels must be a positive integer. Received: channels={channels}"
            )
        if int(kernel_size) < 1:
            raise ValueError(
                "kernel_size must be a positive integer. "
                f"Received: kernel_size={kernel_size}"
            )
        self.channels = int(channels)
        self.preset = preset
        self.kernel_size = int(kernel_size)
        self.width = int(width) if width is not None else None
        self.seed = None if seed is None else check_seed(seed)
        self.kernel_initializer = seeded_initializer(
            keras.initializers.get(kernel_initializer), self.seed
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

        self.correction_width = (
            self.width
            if self.width is not None
            else resolve_width(spec["width"], self.channels)
        )
        self.inner_kernel = spec["inner_kernel"] or self.kernel_size
        if dilation_rates is None:
            large = spec["large_kernel_dilations"]
            if large is not None and self.kernel_size > self.inner_kernel:
                dilation_rates = large
            else:
                dilation_rates = (1,) * spec["inner_convs"]
        self.dilation_rates = tuple(int(r) for r in dilation_rates)
        if len(self.dilation_rates) != spec["inner_convs"]:
            raise ValueError(
                f"dilation_rates must have {spec['inner_convs']} entries for "
                f"preset={preset!r}. Received: dilation_rates={dilation_rates}"
            )
        self.batch_norm = spec["batch_norm"]
        self.bn_momentum = check_momentum(bn_momentum, "bn_momentum")
        self.channel_indices = (
            None if channel_indices is None else [int(i) for i in channel_indices]
        )
        if self.channel_indices is not None and len(self.channel_indices) != self.channels:
            raise ValueError(
                f"channel_indices must hold channels={self.channels} indices. "
                f"Received: channel_indices={list(channel_indices)}"
            )
        self.stack = self._make_stack()

    def _conv(self, filters: int, kernel: int, dilation: int, name: str, last=False):
        return keras.layers.Conv2D(
            filters,
            kernel,
            padding="same",
            dilation_rate=dilation,
            kernel_initializer="zeros" if last else self._fresh_initializer(name),
            bias_initializer="zeros",
            kernel_regularizer=self.kernel_regularizer,
            name=name,
        )

    def _fresh_initializer(self, name: str) -> keras.initializers.Initializer:
        """A new initializer per conv; a seeded one gets a seed of its own for `name`."""
        seed = initializer_seed(self.kernel_initializer)
        return seeded_initializer(
            self.kernel_initializer, None if seed is None else derived_seed(seed, name)
        )

    def _make_stack(self) -> list[keras.layers.Layer]:
        """The residual branch F as an ordered list of layers."""
        width = self.correction_width
        convs = [self._conv(width, 1, 1, "conv_in")]
        convs += [
            self._conv(width, self.inner_kernel, rate, f"conv_{i + 1}")
            for i, rate in enumerate(self.dilation_rates)
        ]
        stack: list[keras.layers.Layer] = []
        for i, conv in enumerate(convs):
            stack.append(conv)
            if self.batch_norm:
                stack.append(
                    keras.layers.BatchNormalization(momentum=self.bn_momentum, name=f"bn_{i}")
                )
            stack.append(keras.layers.ReLU(name=f"relu_{i}"))
        stack.append(self._conv(self.channels, 1, 1, "conv_out", last=True))
        return stack

    def build(self, input_shape):
        if self.channel_indices is None:
            if input_shape[-1] != self.channels:
                raise ValueError(
                    f"CorrectionUnit(channels={self.channels}) needs inputs with "
                    f"{self.channels} channels. Received input shape: {input_shape}"
                )
        else:
            total = input_shape[-1]
            validate_channel_indices(self.channel_indices, total, "channel_indices")
            # Row of each input channel in the zero-padded 1x1 kernels: its
            # rank among the corrected channels, or `channels` (a zero row).
            self._padded_rows = np.full(total, self.channels, dtype="int32")
            self._padded_rows[self.channel_indices] = np.arange(self.channels)
        shape = tuple(input_shape[:-1]) + (self.channels,)
        for layer in self.stack:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def _run_inner(self, hidden, training):
        for layer in self.stack[1:-1]:
            if isinstance(layer, keras.layers.BatchNormalization):
                hidden = layer(hidden, training=training)
            else:
                hidden = layer(hidden)
        return hidden

    def _padded(self, tensor, axis: int):
        """`tensor` with a zero slice appended on `axis`, gathered to full width."""
        zero_shape = list(tensor.shape)
        zero_shape[axis] = 1
        padded = ops.concatenate([tensor, ops.zeros(zero_shape, tensor.dtype)], axis=axis)
        return ops.take(padded, self._padded_rows, axis=axis)

    @staticmethod
    def _pointwise(inputs, kernel, bias):
        """A 1x1 conv with the given (zero-padded) kernel and bias."""
        kernel = ops.cast(kernel, inputs.dtype)
        outputs = ops.conv(inputs, kernel, strides=1, padding="same")
        return outputs + ops.cast(bias, inputs.dtype)

    def call(self, inputs, training=None):
        conv_in, conv_out = self.stack[0], self.stack[-1]
        if self.channel_indices is None:
            hidden = conv_in(inputs)
            return inputs + conv_out(self._run_inner(hidden, training))
        hidden = self._pointwise(
            inputs, self._padded(conv_in.kernel, axis=2), conv_in.bias
        )
        hidden = self._run_inner(hidden, training)
        residual = self._pointwise(
            hidden,
            self._padded(conv_out.kernel, axis=3),
            self._padded(conv_out.bias, axis=0),
        )
        return inputs + residual

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def multiply_adds(self, height: int, width: int) -> int:
        """Multiply-accumulates of one forward pass on a `height x width` map.

        Counts conv kernels only, as Table 10 of the paper does for its
        "FLOPs" (for 72 channels, k=5 on AlexNet's 55x55 conv1 map: 8.15e8).
        With `channel_indices`, the zero-padded 1x1 convs do more work than
        this (the full channel count in place of `channels`).

        Example:

        >>> CorrectionUnit(192).multiply_adds(13, 13)
        124600320
        """
        total = 0
        in_channels = self.channels
        for layer in self.stack:
            if isinstance(layer, keras.layers.Conv2D):
                kh, kw = layer.kernel_size
                total += kh * kw * in_channels * layer.filters
                in_channels = layer.filters
        return total * int(height) * int(width)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "preset": self.preset,
                "kernel_size": self.kernel_size,
                "width": self.width,
                "dilation_rates": list(self.dilation_rates),
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                )
                if self.kernel_regularizer is not None
                else None,
                "channel_indices": self.channel_indices,
                "bn_momentum": self.bn_momentum,
                "seed": self.seed,
            }
        )
        return config

"""`wrap`: insert correction units into any Keras CNN by graph rewriting.

For each chosen conv layer, the top-beta ranked output channels are gathered,
run through a `CorrectionUnit`, and scattered back into their original
positions, before the layer's batch norm and activation (the paper's footnotes
6 and 7). By default the gather and scatter are folded into the unit's first
and last 1x1 convs (`fused=True`); `fused=False` uses explicit
`GatherChannels` and `ScatterChannels` layers instead. A conv with a built-in activation (VGG16's `Conv2D(...,
activation="relu")`) is split into the linear conv and a separate `Activation`
layer, so the unit sees the pre-activation output. Every other channel and
every other layer is left as it was.

The rewrite walks the functional graph in topological order and calls a copy of
each layer, with the pretrained weights, on the new tensors. Sequential models
and nested models (such as a `keras.applications` model inside a classifier)
are inlined, so the result is one flat functional model whose layer names are
those of the original's leaf layers. The input model is not modified.

Example:

```python
import numpy as np
import keras
import deepcorrect

inputs = keras.Input((32, 32, 3))
x = keras.layers.Conv2D(8, 3, name="conv1")(inputs)
x = keras.layers.BatchNormalization(name="bn1")(x)
x = keras.layers.ReLU()(x)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(10, activation="softmax")(x)
pretrained = keras.Model(inputs, outputs)

model = deepcorrect.wrap(pretrained, {"conv1": [3, 0, 5, 1, 2, 4, 6, 7]})
images = np.random.rand(2, 32, 32, 3).astype("float32")
np.testing.assert_allclose(model(images), pretrained(images), atol=1e-6)
```
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping, Sequence, Union

import keras
import numpy as np

from deepcorrect.batch_norm import check_train_batch_norm, trained_batch_norms
from deepcorrect.checks import check_model, check_momentum
from deepcorrect.graph import batch_norms_by_input, flatten, leaf_layers
from deepcorrect.graph import is_graph_model as is_model
from deepcorrect.layers import GatherChannels, ScatterChannels, validate_channel_indices
from deepcorrect.units import CorrectionUnit, check_preset
from robustkit.seeds import check_seed
from robustkit.training_checks import derived_seed

CONV_LAYER_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)
# Layers counted by `train_head` (Deepcorr-kc trains the last k of these).
HEAD_LAYER_TYPES = CONV_LAYER_TYPES + (keras.layers.Dense,)

# A custom unit: `factory(channels, kernel_size, name) -> keras.layers.Layer`.
UnitFactory = Callable[[int, int, str], keras.layers.Layer]
UnitSpec = Union[str, UnitFactory]


@dataclasses.dataclass(frozen=True)
class Correction:
    """What `wrap` does to one conv layer.

    Attributes:
        layer_name: name of the corrected conv layer.
        channels: number of output channels N of that layer.
        indices: the corrected channel indices, most susceptible first.
        unit: a `UNIT_PRESETS` name or a unit factory.
        kernel_size: inner kernel size of the unit.
        bn_momentum: momentum of the unit's batch norms; None for Keras's
            default (0.99).
    """

    layer_name: str
    channels: int
    indices: tuple[int, ...]
    unit: UnitSpec
    kernel_size: int
    bn_momentum: float | None = None


# ---------------------------------------------------------------------------
# Model inspection.


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The conv layers of `model` (nested models included) in graph order.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c")])
    >>> [layer.name for layer in conv_layers(m)]
    ['c']
    """
    check_model(model)
    return [layer for layer in leaf_layers(model) if isinstance(layer, CONV_LAYER_TYPES)]


def conv_output_channels(layer: keras.layers.Layer) -> int:
    """Number of output channels of a (built) conv layer.

    Example:

    >>> conv = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    >>> conv.build((None, 8, 8, 5))
    >>> conv_output_channels(conv)
    10
    """
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return int(layer.kernel.shape[-2]) * int(layer.depth_multiplier)
    return int(layer.filters)


def _layer_table(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Leaf layers by name; names must be unique once nested models are inlined."""
    table: dict[str, keras.layers.Layer] = {}
    for layer in leaf_layers(model):
        if layer.name in table:
            raise ValueError(
                "Layer names must be unique across nested models, because "
                f"`wrap` inlines them. The name {layer.name!r} is used twice "
                f"in model {model.name!r}."
            )
        table[layer.name] = layer
    return table


# ---------------------------------------------------------------------------
# Planning: which layers, which channels, which unit.


def ranked_order(ranks: Any, layer_name: str) -> np.ndarray:
    """Ordered channel indices (most susceptible first) of one layer.

    Args:
        ranks: a `{layer_name: indices}` mapping, or any object with an
            `order(layer_name)` method (such as `deepcorrect.Ranking`).
        layer_name: the conv layer.

    Returns:
        The indices as a 1-D numpy array.

    Example:

    >>> ranked_order({"conv1": [2, 0, 1]}, "conv1").tolist()
    [2, 0, 1]
    """
    if hasattr(ranks, "order") and callable(ranks.order):
        return np.asarray(ranks.order(layer_name))
    return np.asarray(ranks[layer_name])


def ranked_layer_names(ranks: Any) -> list[str]:
    """Layer names a ranking covers (`layer_names` attribute or mapping keys)."""
    if hasattr(ranks, "order") and callable(ranks.order):
        return list(ranks.layer_names)
    if isinstance(ranks, Mapping):
        return list(ranks.keys())
    raise ValueError(
        "ranks must be a dict {layer_name: ordered channel indices} or a "
        f"Ranking (an object with an `order` method). Received: ranks={ranks!r}"
    )


def corrected_count(beta: float, channels: int) -> int:
    """How many of `channels` filters beta corrects: round(beta * N), at least 1.

    Example:

    >>> corrected_count(0.75, 96), corrected_count(0.5, 384), corrected_count(0.01, 8)
    (72, 192, 1)
    """
    return max(1, min(channels, math.floor(beta * channels + 0.5)))


def _check_beta(beta: Any, argument: str = "beta") -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating)):
        raise ValueError(
            f"{argument} must be a number in (0, 1]. Received: {argument}={beta!r}"
        )
    if not 0.0 < float(beta) <= 1.0:
        raise ValueError(f"{argument} must be in (0, 1]. Received: {argument}={beta}")
    return float(beta)


def _check_kernel_size(kernel_size: Any, argument: str = "kernel_size") -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)):
        raise ValueError(
            f"{argument} must be a positive integer. "
            f"Received: {argument}={kernel_size!r}"
        )
    if kernel_size < 1:
        raise ValueError(
            f"{argument} must be a positive integer. Received: {argument}={kernel_size}"
        )
    return int(kernel_size)


def _check_unit(unit: Any, argument: str = "unit") -> UnitSpec:
    if callable(unit):
        return unit
    check_preset(unit, name=argument)
    return unit


def _per_layer(value: Any, name: str, layers: Sequence[str], argument: str) -> Any:
    """The value of a scalar-or-per-layer-dict option for one layer."""
    if isinstance(value, Mapping):
        if name not in value:
            raise ValueError(
                f"{argument} is a per-layer dict, so it needs an entry for every "
                f"corrected layer {list(layers)}; {name!r} is missing. "
                f"Received: {argument}={dict(value)}"
            )
        return value[name]
    return value


def _check_layer_names(
    names: Sequence[str], table: Mapping[str, keras.layers.Layer], argument: str
) -> None:
    conv_names = [n for n, layer in table.items() if isinstance(layer, CONV_LAYER_TYPES)]
    for name in names:
        if name not in table:
            raise ValueError(
                f"{argument} names an unknown layer {name!r}. Allowed values "
                f"(the model's conv layers): {conv_names}"
            )
        layer = table[name]
        if not isinstance(layer, CONV_LAYER_TYPES):
            raise ValueError(
                f"{argument} names {name!r}, a {type(layer).__name__} layer, but "
                f"only conv layers ({', '.join(t.__name__ for t in CONV_LAYER_TYPES)}) "
                f"can be corrected. Allowed values: {conv_names}"
            )
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(
                f"Only channels_last conv layers can be corrected; {name!r} has "
                f"data_format={layer.data_format!r}."
            )


def _check_per_layer_keys(value: Any, argument: str, conv_names: Sequence[str]) -> None:
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in conv_names]
        if unknown:
            raise ValueError(
                f"{argument} has entries for unknown layers {unknown}. Allowed "
                f"values (the model's conv layers): {list(conv_names)}"
            )


def choose_layers(
    model: keras.Model,
    ranks: Any,
    layers: Sequence[str] | None = None,
    first: int | None = None,
) -> list[str]:
    """Names of the conv layers to correct, in graph order.

    Args:
        model: the pretrained model.
        ranks: the ranking (dict or `Ranking`); every chosen layer needs one.
        layers: explicit layer names. Defaults to None.
        first: correct the first `first` ranked conv layers, in graph order
            (Deepcorr-k when every conv layer is ranked). Defaults to None.
            With neither `layers` nor `first`, every ranked layer is corrected.

    Returns:
        The chosen layer names, ordered as in the model.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)),
    ...                       keras.layers.Conv2D(4, 3, name="a"),
    ...                       keras.layers.Conv2D(4, 3, name="b")])
    >>> choose_layers(m, {"a": [0], "b": [1]}, first=1)
    ['a']
    """
    check_model(model)
    table = _layer_table(model)
    convs = [n for n, layer in table.items() if isinstance(layer, CONV_LAYER_TYPES)]
    if not convs:
        raise ValueError(
            f"model {model.name!r} has no conv layers "
            f"({', '.join(t.__name__ for t in CONV_LAYER_TYPES)}), so there is "
            "nothing to correct."
        )
    ranked = ranked_layer_names(ranks)
    if layers is not None and first is not None:
        raise ValueError(
            "Pass either layers or first, not both. "
            f"Received: layers={layers}, first={first}"
        )
    if first is not None:
        _check_layer_names(ranked, table, "ranks")
        ranked_convs = [n for n in convs if n in set(ranked)]
        if isinstance(first, bool) or not isinstance(first, (int, np.integer)) or not (
            1 <= first <= len(ranked_convs)
        ):
            raise ValueError(
                f"first must be an integer in [1, {len(ranked_convs)}] (the "
                f"number of ranked conv layers). Received: first={first}"
            )
        chosen = ranked_convs[: int(first)]
        argument = "first"
    elif layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        chosen = list(layers)
        argument = "layers"
        if not chosen:
            raise ValueError(
                f"layers must name at least one conv layer. Allowed values: {convs}"
            )
    else:
        chosen = ranked
        argument = "ranks"
    _check_layer_names(chosen, table, argument)
    missing = [n for n in chosen if n not in ranked]
    if missing:
        raise ValueError(
            f"ranks has no channel order for the layers {missing} chosen by "
            f"{argument}. Ranked layers: {ranked}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{argument} names a layer twice. Received: {chosen}")
    return [n for n in convs if n in set(chosen)]


def plan_corrections(
    model: keras.Model,
    ranks: Any,
    beta: float | Mapping[str, float] = 0.5,
    unit: UnitSpec | Mapping[str, UnitSpec] = "cw",
    layers: Sequence[str] | None = None,
    first: int | None = None,
    kernel_size: int | Mapping[str, int] = 3,
    unit_bn_momentum: float | None = None,
) -> list[Correction]:
    """Validates `wrap`'s arguments and returns one `Correction` per layer.

    Arguments are those of `wrap`.

    Returns:
        The corrections, in graph order.

    Raises:
        ValueError: see `wrap`.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c")])
    >>> plan_corrections(m, {"c": [3, 1, 0, 2]})[0].indices
    (3, 1)
    """
    check_model(model)
    if unit_bn_momentum is not None:
        unit_bn_momentum = check_momentum(unit_bn_momentum, "unit_bn_momentum")
        if callable(unit) or (isinstance(unit, Mapping) and any(map(callable, unit.values()))):
            raise ValueError(
                "unit_bn_momentum sets the batch norms of preset units; a unit factory "
                "builds its own layers. Received: a callable unit with "
                f"unit_bn_momentum={unit_bn_momentum}"
            )
    check = getattr(ranks, "check_model", None)
    if callable(check):  # a Ranking: its layers and filter counts must fit the model
        check(model, argument="ranks")
    chosen = choose_layers(model, ranks, layers=layers, first=first)
    table = _layer_table(model)
    convs = [n for n, layer in table.items() if isinstance(layer, CONV_LAYER_TYPES)]
    for value, argument in ((beta, "beta"), (unit, "unit"), (kernel_size, "kernel_size")):
        _check_per_layer_keys(value, argument, convs)
    plan = []
    for name in chosen:
        channels = conv_output_channels(table[name])
        layer_beta = _check_beta(
            _per_layer(beta, name, chosen, "beta"),
            f"beta[{name!r}]" if isinstance(beta, Mapping) else "beta",
        )
        order = validate_channel_indices(
            ranked_order(ranks, name), channels, f"ranks[{name!r}]"
        )
        count = corrected_count(layer_beta, channels)
        if len(order) < count:
            raise ValueError(
                f"ranks[{name!r}] orders {len(order)} channels, but beta="
                f"{layer_beta} corrects {count} of {channels}; rank at least "
                f"{count} channels."
            )
        plan.append(
            Correction(
                layer_name=name,
                channels=channels,
                indices=tuple(order[:count]),
                unit=_check_unit(_per_layer(unit, name, chosen, "unit")),
                kernel_size=_check_kernel_size(
                    _per_layer(kernel_size, name, chosen, "kernel_size")
                ),
                bn_momentum=unit_bn_momentum,
            )
        )
    return plan


# ---------------------------------------------------------------------------
# The graph rewrite.


def _accepts(function: Any, argument: str) -> bool:
    try:
        return argument in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _accepts_training(layer: Any) -> bool:
    return _accepts(layer.call, "training")


def _has_activation(layer: keras.layers.Layer) -> bool:
    return layer.get_config().get("activation", "linear") not in ("linear", None)


class GraphRewriter:
    """Rebuilds a model layer by layer, inserting correction blocks.

    Every layer is copied (config and weights), so the input model is never
    modified; a layer called several times (shared) is copied once. Nested
    Functional and Sequential models are inlined.

    Args:
        corrections: the `Correction`s to apply, by layer name. Defaults to
            none (a plain flattening copy).
        fused: fold the gather and scatter into preset units' 1x1 convs
            (`CorrectionUnit(channel_indices=...)`) instead of separate
            `GatherChannels`/`ScatterChannels` layers. Defaults to True.
        seed: seed of the units' initial weights: the unit of layer `name`
            gets `derived_seed(seed, name + "_unit")`. None draws fresh
            weights. Defaults to None.

    Example:

    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> copy = GraphRewriter().rebuild(m)
    >>> [w.shape for w in copy.weights] == [w.shape for w in m.weights]
    True
    """

    def __init__(
        self,
        corrections: Mapping[str, Correction] | None = None,
        fused: bool = True,
        seed: int | None = None,
    ):
        self.corrections = dict(corrections or {})
        self.fused = fused
        self.seed = seed
        self.copies: dict[int, Any] = {}  # id(original operation) -> copy
        self.originals: dict[str, keras.layers.Layer] = {}  # copy name -> original
        self.blocks: dict[str, dict[str, keras.layers.Layer]] = {}
        self.units: list[keras.layers.Layer] = []

    # -- public entry point -------------------------------------------------

    def rebuild(self, model: keras.Model) -> keras.Model:
        """Returns the rewritten copy of `model` as a flat functional model."""
        if not is_model(model):
            raise ValueError(
                "model must be a Functional or Sequential Keras model. "
                f"Received: model of type {type(model).__name__}"
            )
        try:
            reference_inputs = model.inputs
        except (AttributeError, ValueError):
            reference_inputs = None
        if not reference_inputs:
            raise ValueError(
                f"model {model.name!r} is not built; call it on data or build "
                "it with an `Input` first."
            )
        new_inputs = [
            keras.Input(batch_shape=x.shape, dtype=x.dtype, name=self._input_name(x))
            for x in reference_inputs
        ]
        outputs = self._run(model, new_inputs)
        inputs = new_inputs[0] if len(new_inputs) == 1 else new_inputs
        return keras.Model(inputs, outputs, name=model.name)

    # -- graph walking -------------------------------------------------------

    @staticmethod
    def _input_name(tensor: Any) -> str | None:
        history = getattr(tensor, "_keras_history", None)
        return history.operation.name if history is not None else None

    def _run(self, model: keras.Model, inputs: list) -> Any:
        """Calls copies of `model`'s leaf layers on `inputs` (nested models inlined)."""
        graph = flatten(model)
        tensors = dict(zip(graph.inputs, inputs))
        for call in graph.calls:
            args, kwargs = call.fill(tensors)
            if (
                call.training is not None
                and "training" not in kwargs
                and _accepts_training(call.operation)
            ):
                kwargs["training"] = call.training
            outputs = self._call(call.operation, args, kwargs)
            for key, y in zip(call.outputs, keras.tree.flatten(outputs)):
                tensors[key] = y
        return keras.tree.pack_sequence_as(
            graph.output_structure, [tensors[k] for k in graph.outputs]
        )

    def _call(self, operation: Any, args: tuple, kwargs: dict) -> Any:
        if not isinstance(operation, keras.layers.Layer):
            return operation(*args, **kwargs)  # a stateless keras.ops operation
        first_call = id(operation) not in self.copies
        copy = self._copy(operation)
        outputs = copy(*args, **kwargs)
        if first_call and operation.weights:
            copy.set_weights(operation.get_weights())
        correction = self.corrections.get(operation.name)
        if correction is not None:
            outputs = self._correct(operation, correction, outputs)
        return outputs

    def _copy(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        if id(layer) not in self.copies:
            config = layer.get_config()
            if layer.name in self.corrections and _has_activation(layer):
                config["activation"] = "linear"
            copy = layer.__class__.from_config(config)
            self.copies[id(layer)] = copy
            self.originals[copy.name] = layer
        return self.copies[id(layer)]

    # -- the correction block ---------------------------------------------------

    def _block(self, layer: keras.layers.Layer, correction: Correction):
        name = correction.layer_name
        if name not in self.blocks:
            indices = list(correction.indices)
            fused = self.fused and not callable(correction.unit)
            seed = None if self.seed is None else derived_seed(self.seed, f"{name}_unit")
            if callable(correction.unit):
                seeded = seed is not None and _accepts(correction.unit, "seed")
                unit = correction.unit(len(indices), correction.kernel_size, f"{name}_unit",
                                       **({"seed": seed} if seeded else {}))
            else:
                options = {} if correction.bn_momentum is None else {
                    "bn_momentum": correction.bn_momentum}
                options["seed"] = seed
                unit = CorrectionUnit(
                    len(indices),
                    preset=correction.unit,
                    kernel_size=correction.kernel_size,
                    channel_indices=indices if fused else None,
                    name=f"{name}_unit",
                    **options,
                )
            block = {"unit": unit}
            if not fused:
                block["gather"] = GatherChannels(indices, name=f"{name}_gather")
                block["scatter"] = ScatterChannels(
                    indices, correction.channels, name=f"{name}_scatter"
                )
            if _has_activation(layer):
                block["activation"] = keras.layers.Activation(
                    layer.activation, name=f"{name}_activation"
                )
            self.blocks[name] = block
            self.units.append(unit)
        return self.blocks[name]

    def _correct(self, layer: keras.layers.Layer, correction: Correction, conv_output):
        block = self._block(layer, correction)
        if "gather" in block:
            corrected = block["unit"](block["gather"](conv_output))
            outputs = block["scatter"]([conv_output, corrected])
        else:  # a fused unit reads and writes the full conv output
            outputs = block["unit"](conv_output)
        if "activation" in block:
            outputs = block["activation"](outputs)
        return outputs


# ---------------------------------------------------------------------------
# Public API.


def head_layer_names(model: keras.Model, count: int) -> list[str]:
    """Names of the last `count` conv or dense layers of `model`.

    These are the layers Deepcorr-kc trains on top of the units (the paper
    trains the last 3 conv layers of its CIFAR net, and AlexNet's 3 dense
    layers).

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"),
    ...                       keras.layers.Flatten(), keras.layers.Dense(2, name="d")])
    >>> head_layer_names(m, 1)
    ['d']
    """
    check_model(model)
    heads = [layer.name for layer in leaf_layers(model) if isinstance(layer, HEAD_LAYER_TYPES)]
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not (
        0 <= count <= len(heads)
    ):
        raise ValueError(
            f"train_head must be an integer in [0, {len(heads)}] (the model has "
            f"{len(heads)} conv and dense layers). Received: train_head={count}"
        )
    return heads[len(heads) - int(count) :]


# Where `wrap` splices a unit: "auto" (after the conv's batch norm where it has one,
# on the conv output otherwise), the conv's output, or its batch norm's output.
UNIT_SITES = ("auto", "conv", "batch_norm")


def wrap(
    pretrained: keras.Model,
    ranks: Any,
    beta: float | Mapping[str, float] = 0.5,
    unit: UnitSpec | Mapping[str, UnitSpec] = "cw",
    layers: Sequence[str] | None = None,
    first: int | None = None,
    kernel_size: int | Mapping[str, int] = 3,
    train_head: int = 0,
    train_batch_norm: bool | str = False,
    site: str = "auto",
    fused: bool = True,
    unit_bn_momentum: float | None = None,
    seed: int | None = 0,
) -> keras.Model:
    """Adds DeepCorrect correction units to a pretrained model.

    For each chosen conv layer, the `beta * N` top-ranked output channels are
    gathered, corrected by a `CorrectionUnit` and scattered back to their
    positions: after the batch norm that directly follows the conv where there
    is one, on the conv's output otherwise (`site="auto"`, the default), and
    always before the activation. Every pretrained
    layer is frozen (`trainable=False`; in Keras 3 a frozen
    `BatchNormalization` also runs in inference mode, with its moving
    statistics, during training); only the units are trainable, plus the last
    `train_head` conv/dense layers for Deepcorr-kc. The units start as the
    identity, so the wrapped model's outputs equal the pretrained model's.

    Args:
        pretrained: a Functional or Sequential Keras model (nested models are
            inlined). It is not modified.
        ranks: `{layer_name: channel indices, most susceptible first}` or a
            `deepcorrect.Ranking` (anything with `order(layer_name)` and
            `layer_names`). A `Ranking` must fit `pretrained` as
            `Ranking.check_model` requires: every ranked layer must be a conv
            layer of it with the recorded number of filters, even when
            `layers` or `first` picks fewer; another model name only warns.
        beta: fraction of each layer's channels to correct, in (0, 1], or a
            `{layer_name: beta}` dict. Defaults to 0.5 (the paper's CIFAR
            setting; Deepcorr-5 on AlexNet uses 0.75, 0.75, 0.5, 0.5, 0.5).
        unit: a `UNIT_PRESETS` name (`"cw"`, `"lite"`, `"bottleneck"`,
            `"no_bn"`), a factory `(channels, kernel_size, name) -> Layer`, or a
            per-layer dict of these. Defaults to `"cw"`.
        layers: names of the conv layers to correct. Defaults to None: every
            layer in `ranks` (or the first `first` conv layers).
        first: correct the first `first` ranked conv layers, counted from the
            input (Deepcorr-k, when every conv layer is ranked). Defaults to
            None. Not together with `layers`.
        kernel_size: inner kernel size of the units, or a per-layer dict.
            Defaults to 3 (the paper uses 5 for AlexNet's conv1).
        train_head: also train the last `train_head` conv/dense layers of the
            pretrained model, and the batch norms directly after them unless
            they are folded (`deepcorrect.folded_batch_norms`), as `finetune`
            does by default (Deepcorr-kc). Defaults to 0.
        train_batch_norm: also train the `BatchNormalization` layer directly
            after each corrected conv, as the original CIFAR code did. A
            trainable batch norm normalises with the statistics of each batch
            during training, so it absorbs shifts in scale that a unit causes
            instead of amplifying them (a frozen one divides by its moving
            standard deviation). True: train them (a warning names folded
            ones, which training mode would wreck); `"auto"`: train those that
            are not folded; False (the default): only the units train.
        site: where each unit reads and writes. `"auto"` (the default): after
            the batch norm directly following the conv where the conv has one,
            on the conv's output otherwise. `"batch_norm"`: the output of the
            `BatchNormalization` directly after the conv (normalised
            activations, before the activation), so a frozen batch norm does
            not rescale what the unit changes; every corrected conv must have
            one. `"conv"` (the paper's CIFAR code, and this function's default
            before `"auto"`): the conv layer's own output, before its batch
            norm.
        fused: how corrected channels are routed. True (the default): each
            preset unit reads the conv's full output and folds the gather and
            scatter into its first and last 1x1 convs (zero-padded kernels,
            same weights), which avoids two extra passes over the activations.
            False: explicit `GatherChannels` -> unit -> `ScatterChannels`
            layers (always used for custom unit factories). Both give the same
            outputs, and leave the uncorrected channels bit for bit unchanged.
        unit_bn_momentum: momentum of the batch norms inside preset units
            (saved with the model), a number in [0, 1). Defaults to None:
            Keras's 0.99, whose moving statistics need a few hundred steps to
            forget their start (mean 0, variance 1); short runs want less
            (the ImageNet example uses 0.9). The `"no_bn"` preset has none.
        seed: seed of the units' initial weights, an integer in
            `[0, 2**31 - 1]`. The unit of layer `name` draws from
            `robustkit.training_checks.derived_seed(seed, name + "_unit")`, kept
            in its saved config, so the same seed gives the same weights in
            any process. A unit factory that takes a `seed` keyword gets that
            seed too. None draws fresh weights. Defaults to 0.

    Returns:
        A new functional model with the same inputs and outputs.

    Raises:
        TypeError: if `pretrained` is not a Functional or Sequential model.
        ValueError: for a `beta` outside (0, 1], unknown or non-conv layer
            names, invalid channel indices, a `Ranking` that does not fit the
            model, an unknown unit preset, an unknown `site` (or
            `site="batch_norm"` for a conv without a batch norm), or a model
            without conv layers.

    Example:

    >>> pretrained = keras.Sequential([
    ...     keras.Input((16, 16, 3)),
    ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(4, name="logits")])
    >>> model = wrap(pretrained, {"conv1": np.arange(8)}, beta=0.5, unit="bottleneck")
    >>> [w.path.split("/")[0] for w in model.trainable_weights][:1]
    ['conv1_unit']
    """
    check_model(pretrained, "pretrained")
    if site not in UNIT_SITES:
        raise ValueError(f"site must be one of {UNIT_SITES}. Received: site={site!r}")
    seed = check_seed(seed, optional=True)
    check_train_batch_norm(train_batch_norm)
    plan = plan_corrections(
        pretrained,
        ranks,
        beta=beta,
        unit=unit,
        layers=layers,
        first=first,
        kernel_size=kernel_size,
        unit_bn_momentum=unit_bn_momentum,
    )
    after = batch_norms_by_input(pretrained)
    if site == "batch_norm":
        lacking = [c.layer_name for c in plan if c.layer_name not in after]
        if lacking:
            raise ValueError(
                f"site='batch_norm' puts each unit after the batch norm that follows its "
                f"conv, but the convs {lacking} have none. Use site='auto' (after the batch "
                "norm where there is one, on the conv output otherwise) or site='conv'."
            )
    trained = set(head_layer_names(pretrained, train_head))
    head_norms = [bn for name in trained for bn in after.get(name, ())]
    trained.update(trained_batch_norms(pretrained, head_norms, "auto"))  # as Finetune-k
    unit_norms = [bn for c in plan for bn in after.get(c.layer_name, ())]
    trained.update(trained_batch_norms(pretrained, unit_norms, train_batch_norm))
    # A unit is spliced in after the layer it is keyed by: the conv, or its batch norm.
    rewriter = GraphRewriter(
        {(after.get(c.layer_name, [c.layer_name])[0] if site != "conv" else c.layer_name): c
         for c in plan},
        fused=fused,
        seed=seed,
    )
    model = rewriter.rebuild(pretrained)
    for layer in model.layers:
        if layer.name in rewriter.originals:  # a copy of a pretrained layer
            layer.trainable = layer.name in trained
    return model


def trainable_parameters(model: keras.layers.Layer) -> int:
    """Number of trainable parameters of a model or layer (the paper's "# params").

    Example:

    >>> pretrained = keras.Sequential([keras.Input((8, 8, 3)),
    ...                                keras.layers.Conv2D(4, 3, name="c")])
    >>> trainable_parameters(wrap(pretrained, {"c": [0, 1, 2, 3]}, beta=0.5))  # one 2-channel unit
    100
    """
    check_model(model, layer_ok=True)
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def correction_units(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """The correction units of a wrapped model, by corrected layer name.

    Units inside nested models (a wrapped model behind a preprocessing layer,
    as the command line saves it) are found too.

    Example:

    >>> pretrained = keras.Sequential([keras.Input((8, 8, 3)),
    ...                                keras.layers.Conv2D(4, 3, name="c")])
    >>> list(correction_units(wrap(pretrained, {"c": [0, 1, 2, 3]})))
    ['c']
    """
    check_model(model)
    suffix = "_unit"
    return {
        layer.name[: -len(suffix)]: layer
        for layer in leaf_layers(model)
        if layer.name.endswith(suffix) and isinstance(layer, CorrectionUnit)
    }

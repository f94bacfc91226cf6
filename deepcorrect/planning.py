"""Planning `wrap`: which conv layers, which of their filters, and which unit.

`plan_corrections` checks `wrap`'s arguments against the model and turns them
into one `Correction` per corrected conv layer: its filter count, the ranked
filter indices that beta selects (`deepcorrect.graph.corrected_count`), the
unit and its kernel size. `choose_layers` picks the layers (`layers`, `first`,
or every ranked one); `head_layer_names` the conv and dense layers that
Deepcorr-kc trains too. A ranking is a `{layer_name: indices}` dict or a
`deepcorrect.Ranking`; `ranked_order` and `ranked_layer_names` read either.

Example:

```python
import keras
from deepcorrect.planning import plan_corrections

model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c")])
(correction,) = plan_corrections(model, {"c": [3, 1, 0, 2]}, beta=0.5)
correction.indices                                  # (3, 1)
```
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence, Union

import keras
import numpy as np

from deepcorrect.checks import check_model, check_momentum
from deepcorrect.graph import CONV_LAYER_TYPES, corrected_count, filter_count, leaf_layers
from deepcorrect.layers import validate_channel_indices
from deepcorrect.units import check_preset

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
# Rankings: a `{layer_name: indices}` dict or a `Ranking`.


def ranked_order(ranking: Any, layer_name: str) -> np.ndarray:
    """Ordered channel indices (most susceptible first) of one layer.

    Args:
        ranking: a `{layer_name: indices}` mapping, or any object with an
            `order(layer_name)` method (such as `deepcorrect.Ranking`).
        layer_name: the conv layer.

    Returns:
        The indices as a 1-D numpy array.

    Example:

    >>> ranked_order({"conv1": [2, 0, 1]}, "conv1").tolist()
    [2, 0, 1]
    """
    if hasattr(ranking, "order") and callable(ranking.order):
        return np.asarray(ranking.order(layer_name))
    return np.asarray(ranking[layer_name])


def ranked_layer_names(ranking: Any) -> list[str]:
    """Layer names a ranking covers (its `layer_names`, or the mapping's keys).

    Args:
        ranking: a `{layer_name: indices}` mapping, or any object with an
            `order(layer_name)` method and `layer_names` (such as
            `deepcorrect.Ranking`).

    Returns:
        The layer names, in the ranking's order.

    Raises:
        ValueError: for anything else.

    Example:

    >>> ranked_layer_names({"conv1": [2, 0, 1], "conv2": [0]})
    ['conv1', 'conv2']
    """
    if hasattr(ranking, "order") and callable(ranking.order):
        return list(ranking.layer_names)
    if isinstance(ranking, Mapping):
        return list(ranking.keys())
    raise ValueError(
        "ranking must be a dict {layer_name: ordered channel indices} or a "
        f"Ranking (an object with an `order` method). Received: ranking={ranking!r}"
    )


# ---------------------------------------------------------------------------
# Argument checks.


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


# ---------------------------------------------------------------------------
# Plans.


def choose_layers(
    model: keras.Model,
    ranking: Any,
    layers: Sequence[str] | None = None,
    first: int | None = None,
) -> list[str]:
    """Names of the conv layers to correct, in graph order.

    Args:
        model: the pretrained model.
        ranking: the ranking (dict or `Ranking`); every chosen layer needs one.
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
    ranked = ranked_layer_names(ranking)
    if layers is not None and first is not None:
        raise ValueError(
            "Pass either layers or first, not both. "
            f"Received: layers={layers}, first={first}"
        )
    if first is not None:
        _check_layer_names(ranked, table, "ranking")
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
        argument = "ranking"
    _check_layer_names(chosen, table, argument)
    missing = [n for n in chosen if n not in ranked]
    if missing:
        raise ValueError(
            f"ranking has no channel order for the layers {missing} chosen by "
            f"{argument}. Ranked layers: {ranked}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{argument} names a layer twice. Received: {chosen}")
    return [n for n in convs if n in set(chosen)]


def plan_corrections(
    model: keras.Model,
    ranking: Any,
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
    check = getattr(ranking, "check_model", None)
    if callable(check):  # a Ranking: its layers and filter counts must fit the model
        check(model, argument="ranking")
    chosen = choose_layers(model, ranking, layers=layers, first=first)
    table = _layer_table(model)
    convs = [n for n, layer in table.items() if isinstance(layer, CONV_LAYER_TYPES)]
    for value, argument in ((beta, "beta"), (unit, "unit"), (kernel_size, "kernel_size")):
        _check_per_layer_keys(value, argument, convs)
    plan = []
    for name in chosen:
        channels = filter_count(table[name])
        layer_beta = _check_beta(
            _per_layer(beta, name, chosen, "beta"),
            f"beta[{name!r}]" if isinstance(beta, Mapping) else "beta",
        )
        order = validate_channel_indices(
            ranked_order(ranking, name), channels, f"ranking[{name!r}]"
        )
        count = corrected_count(layer_beta, channels)
        if len(order) < count:
            raise ValueError(
                f"ranking[{name!r}] orders {len(order)} channels, but beta="
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


def head_layer_names(model: keras.Model, count: int) -> list[str]:
    """Names of the last `count` conv or dense layers of `model`.

    These are the layers Deepcorr-kc trains on top of the units (the paper
    trains the last 3 conv layers of its CIFAR net, and AlexNet's 3 dense
    layers).

    Args:
        model: the pretrained model.
        count: how many, an integer in [0, number of conv and dense layers]
            (`wrap`'s `train_head`).

    Returns:
        The layer names, in graph order.

    Raises:
        ValueError: for a `count` out of range.

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

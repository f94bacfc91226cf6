"""The graph questions: one walker for Keras functional graphs, and the conv layers in it.

`flatten(model)` turns a Functional or Sequential model (nested models
included) into a `FlatGraph`: the calls of its leaf layers (and of stateless
`keras.ops` operations) in topological order, each reading and writing tensors
named by hashable keys. A nested model is expanded in place: its inputs are
aliased to the tensors it is called on and its outputs to its inner outputs,
so a flat graph has no model calls left. A nested model called twice gets its
inner tensors keyed separately for each call.

`deepcorrect.ranking` runs parts of a flat graph on real tensors (the head and
tail around a swap site); `deepcorrect.rewriter` re-calls copies of the layers
on new symbolic tensors to rebuild a model. Nothing in the model is modified.

This module also answers the questions about layers that ranking, `wrap` and
the baselines share: which layers are convolutions (`CONV_LAYER_TYPES`,
`conv_layers`), how many filters a conv layer has (`filter_count`), whether it
has a built-in activation (`has_activation`), and how many of its filters a
fraction beta corrects (`corrected_count`).

Example:

```python
import keras
from deepcorrect.graph import conv_layers, filter_count, flatten, leaf_layers

inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1")])
inputs = keras.Input((8, 8, 3))
outputs = keras.layers.Conv2D(2, 3, name="c2")(inner(inputs))
model = keras.Model(inputs, outputs)

[layer.name for layer in leaf_layers(model)]        # ['c1', 'c2']
[filter_count(c) for c in conv_layers(model)]       # [4, 2]
flat = flatten(model)
flat.calls[1].inputs == flat.calls[0].outputs       # True: c2 reads c1's output
```
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Hashable

import keras

# The convolutions: the layers ranked, corrected by `wrap` and counted by Finetune-k.
CONV_LAYER_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a leaf layer or operation.

    Attributes:
        operation: the layer (or `keras.ops` operation) called.
        inputs: keys of the tensors it reads, one per symbolic tensor in its
            arguments (in the order of `node.arguments.keras_tensors`).
        outputs: keys of the tensors it returns (flattened).
        arguments: the graph node's `SymbolicArguments` (non-tensor arguments
            and the structure of the call).
        training: the `training` argument of the innermost enclosing nested
            model call, or None (leaf layers then get none added).
    """

    operation: Any
    inputs: tuple[Hashable, ...]
    outputs: tuple[Hashable, ...]
    arguments: Any
    training: Any = None

    def fill(self, values: dict[Hashable, Any]) -> tuple[tuple, dict]:
        """The call's `(args, kwargs)` with tensors read from `values` by key."""
        by_id = {
            id(t): values[k]
            for t, k in zip(self.arguments.keras_tensors, self.inputs)
        }
        return self.arguments.fill_in(by_id)


@dataclasses.dataclass
class FlatGraph:
    """A model as a flat, topologically ordered list of calls.

    Attributes:
        calls: the calls, each after the calls producing its inputs.
        inputs: keys of the model inputs (in `model.inputs` order).
        outputs: keys of the model outputs (flattened `model.output`).
        output_structure: `model.output`, to re-pack outputs with
            `keras.tree.pack_sequence_as`.
    """

    calls: list[Call]
    inputs: list[Hashable]
    outputs: list[Hashable]
    output_structure: Any


def is_graph_model(obj: Any) -> bool:
    """True for Functional and Sequential models (the containers we expand)."""
    return isinstance(obj, keras.Model) and (
        isinstance(obj, keras.Sequential) or hasattr(obj, "_nodes_by_depth")
    )


def functional_of(model: Any) -> Any:
    """The Functional graph behind a Functional or built Sequential model.

    Raises:
        TypeError: for anything but a Functional or Sequential model (a
            subclassed model, a layer, None).
        ValueError: for a Sequential model without an input shape.
    """
    if not is_graph_model(model):
        from deepcorrect.checks import check_model  # here: `checks` imports this module

        check_model(model)
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(
                f"Sequential model {model.name!r} has no graph yet: give it an "
                "Input (keras.Input) or build it with an input shape first."
            )
        return graph
    return model


def flatten(model: keras.Model) -> FlatGraph:
    """The calls of `model`'s leaf layers, nested models expanded, in order.

    Args:
        model: a Functional or Sequential model.

    Returns:
        A `FlatGraph`. Keys of the top-level tensors are `((), id(tensor))`;
        inside a nested model call they carry the path of enclosing calls.

    Raises:
        ValueError: see `functional_of`; or a nested model called on a number
            of tensors other than its number of inputs.
    """
    graph = functional_of(model)
    inputs = [((), id(t)) for t in graph.inputs]
    calls: list[Call] = []
    alias: dict[Hashable, Hashable] = {}
    _expand(graph, (), alias, set(inputs), calls, training=None)

    def key(t: Any) -> Hashable:
        k = ((), id(t))
        return alias.get(k, k)

    structure = graph.output
    return FlatGraph(
        calls=calls,
        inputs=inputs,
        outputs=[key(t) for t in keras.tree.flatten(structure)],
        output_structure=structure,
    )


def _expand(
    graph: Any,
    path: tuple,
    alias: dict[Hashable, Hashable],
    available: set[Hashable],
    calls: list[Call],
    training: Any,
) -> None:
    """Appends the calls of one Functional graph reached through `path`."""

    def key(t: Any) -> Hashable:
        k = (path, id(t))
        return alias.get(k, k)

    by_depth = graph._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            tensors = node.arguments.keras_tensors
            in_keys = tuple(key(t) for t in tensors)
            if any(k not in available for k in in_keys):
                continue  # not reachable from this graph's inputs
            op = node.operation
            if is_graph_model(op):
                inner = functional_of(op)
                if len(tensors) != len(inner.inputs):
                    raise ValueError(
                        f"Nested model {op.name!r} is called with "
                        f"{len(tensors)} tensors but has "
                        f"{len(inner.inputs)} inputs."
                    )
                inner_path = path + (id(node),)
                for t_in, k_outer in zip(inner.inputs, in_keys):
                    alias[(inner_path, id(t_in))] = k_outer
                nested_training = node.arguments.kwargs.get("training", training)
                _expand(inner, inner_path, alias, available, calls, nested_training)
                for t_out, t_inner in zip(node.outputs, inner.outputs):
                    k_inner = (inner_path, id(t_inner))
                    alias[(path, id(t_out))] = alias.get(k_inner, k_inner)
                    available.add(key(t_out))
            else:
                out_keys = tuple(key(t) for t in node.outputs)
                calls.append(Call(op, in_keys, out_keys, node.arguments, training))
                available.update(out_keys)


def leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of `model` that is not a model, in graph order.

    Nested models are expanded; input layers and `keras.ops` operations are
    left out; a layer called several times is listed once.

    Example:

    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    >>> [layer.name for layer in leaf_layers(inner)]
    ['d']
    """
    found: dict[int, keras.layers.Layer] = {}
    for call in flatten(model).calls:
        if isinstance(call.operation, keras.layers.Layer):
            found.setdefault(id(call.operation), call.operation)
    return list(found.values())


def batch_norms_by_input(model: keras.Model) -> dict[str, list[str]]:
    """The `BatchNormalization` layers that read each layer's output directly.

    These are the batch norms that normalise a conv layer's output: the ones
    Finetune-k trains with its conv layers, the ones the original DeepCorrect
    CIFAR code trained with the correction units, and the site of
    `wrap(site="batch_norm")`.

    Args:
        model: a Functional or Sequential model (nested models are expanded).

    Returns:
        `{producing layer name: [batch norm names, in graph order]}`, for the
        layers that have one.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)),
    ...                       keras.layers.Conv2D(4, 3, name="c1"),
    ...                       keras.layers.BatchNormalization(name="bn1"),
    ...                       keras.layers.Conv2D(4, 3, name="c2"),
    ...                       keras.layers.BatchNormalization(name="bn2")])
    >>> batch_norms_by_input(m)
    {'c1': ['bn1'], 'c2': ['bn2']}
    """
    calls = flatten(model).calls
    producer = {
        key: call.operation.name
        for call in calls
        if isinstance(call.operation, keras.layers.Layer)
        for key in call.outputs
    }
    found: dict[str, list[str]] = {}
    for call in calls:
        bn = call.operation
        if isinstance(bn, keras.layers.BatchNormalization) and call.inputs[:1] and (
                call.inputs[0] in producer):
            names = found.setdefault(producer[call.inputs[0]], [])
            if bn.name not in names:
                names.append(bn.name)
    return found


# ---------------------------------------------------------------------------
# Conv layers.


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The conv layers (`CONV_LAYER_TYPES`) of `model`, nested models included, in graph order.

    Args:
        model: a Functional or Sequential model.

    Returns:
        The conv layers, each once.

    Raises:
        TypeError: if `model` is not a Functional or Sequential model.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c")])
    >>> [layer.name for layer in conv_layers(m)]
    ['c']
    """
    return [layer for layer in leaf_layers(model) if isinstance(layer, CONV_LAYER_TYPES)]


def filter_count(layer: keras.layers.Layer) -> int:
    """Number of filters (output channels) of a built conv layer.

    A depthwise conv has `depth_multiplier` filters per input channel; every
    other conv has `filters`.

    Args:
        layer: a built layer of one of `CONV_LAYER_TYPES`.

    Returns:
        The number of output channels.

    Example:

    >>> conv = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    >>> conv.build((None, 8, 8, 5))
    >>> filter_count(conv), filter_count(keras.layers.Conv2D(7, 3))
    (10, 7)
    """
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return int(layer.kernel.shape[-2]) * int(layer.depth_multiplier)
    return int(layer.filters)


def has_activation(layer: keras.layers.Layer) -> bool:
    """Whether `layer` applies a built-in activation (VGG16's `Conv2D(..., activation="relu")`).

    Example:

    >>> has_activation(keras.layers.Conv2D(4, 3, activation="relu"))
    True
    >>> has_activation(keras.layers.Conv2D(4, 3)), has_activation(keras.layers.ReLU())
    (False, False)
    """
    return layer.get_config().get("activation", "linear") not in ("linear", None)


def corrected_count(beta: float, channels: int) -> int:
    """How many of `channels` filters a fraction `beta` corrects: round(beta * N), at least 1.

    Halves round up (the paper's counts), and the count never exceeds `channels`.

    Args:
        beta: the fraction of filters corrected, in (0, 1].
        channels: the layer's number of filters N.

    Returns:
        The number of corrected filters, in [1, channels].

    Example:

    >>> corrected_count(0.75, 96), corrected_count(0.5, 384), corrected_count(0.01, 8)
    (72, 192, 1)
    """
    return max(1, min(channels, math.floor(beta * channels + 0.5)))

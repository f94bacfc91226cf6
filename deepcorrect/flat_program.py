"""A model as a flat program of steps on keyed tensors, and the swap sites of its conv layers.

`deepcorrect.ranking` (Algorithm 1) and `deepcorrect.ideal` run parts of a
model on real tensors: the *head* that computes a conv layer's output (the
*site*) and every *boundary* tensor the rest of the network reads from before
it, then the *tail* downstream of the site, with some of the site's channels
swapped for their clean values. This module builds those pieces.

- `Program(model, split=...)`: the model flattened (`deepcorrect.graph.flatten`,
  nested models expanded) into ordered `Step`s reading and writing keyed
  tensors, in inference mode; a conv with a built-in activation in `split` is
  run as a linear step and an activation step. Nothing in the model changes.
- `site_for(program, layer, site)`: the `Site` of one conv layer: its output
  (`"pre_activation"`) or the end of the batch-norm/activation chain after it
  (`"post_activation"`), the swap point pushed down the per-channel layers
  that commute with a channel swap (`push_swap_point`), and the first
  channel-mixing layer that can be run incrementally (`Mix`).
- `head_fn(program, site)`: a `tf.function` of images returning the site and
  boundary tensors.

Example:

```python
import keras
import numpy as np
from deepcorrect.flat_program import Program, head_fn, site_for

inputs = keras.Input((8, 8, 3))
x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
model = keras.Model(inputs, outputs)

program = Program(model)
site = site_for(program, model.get_layer("conv1"), "pre_activation")
site.channels                                    # 4
tensor, boundary = head_fn(program, site)(np.zeros((2, 8, 8, 3), "float32"))
tensor.shape                                     # (2, 6, 6, 4)
```
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from deepcorrect import graph

__all__ = [
    "CHAIN_TYPES",
    "PER_CHANNEL_TYPES",
    "Mix",
    "Program",
    "Site",
    "Step",
    "apply_preprocess",
    "choose_conv_layers",
    "follow_chain",
    "head_fn",
    "mix_for",
    "push_swap_point",
    "site_for",
]


def _layer_classes(*names: str) -> tuple[type, ...]:
    """The classes of `keras.layers` named `names`, leaving out any this Keras lacks."""
    return tuple(getattr(keras.layers, name) for name in names if hasattr(keras.layers, name))


# Layers that make up the "BN/activation chain" after a conv: per-channel maps
# that keep the channel count and are what `site="post_activation"` walks.
CHAIN_TYPES: tuple[type, ...] = _layer_classes(
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU",
)

# Layers whose output channel c depends only on input channel c (in inference
# mode): the exact method swaps after a chain of them (`push_swap_point`).
PER_CHANNEL_TYPES: tuple[type, ...] = _layer_classes(
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "DepthwiseConv1D", "DepthwiseConv2D",
)


@dataclasses.dataclass
class Step:
    """One layer call: reads `inputs`, writes `outputs` (tensor keys)."""

    layer: Any
    inputs: tuple[Hashable, ...]
    outputs: tuple[Hashable, ...]
    fn: Callable[[dict[Hashable, Any]], list[Any]]
    linear_part: bool = False  # the linear half of a split conv (no activation)


def _call_layer(layer: Any, *args: Any, **kwargs: Any) -> Any:
    """Calls a layer in inference mode (as `Functional.call(training=False)`)."""
    if "training" in getattr(layer, "_call_context_args", ()):
        kwargs["training"] = False
    return layer(*args, **kwargs)


def _call_step(call: graph.Call) -> Step:
    """A step running one call of the flat graph in inference mode."""

    def fn(values: dict) -> list[Any]:
        args, kwargs = call.fill(values)
        return keras.tree.flatten(_call_layer(call.operation, *args, **kwargs))

    return Step(layer=call.operation, inputs=call.inputs, outputs=call.outputs, fn=fn)


def _linear_clone(layer: Any, input_shape: Any) -> Any:
    """A copy of a conv layer with `activation="linear"` and the same weights."""
    config = layer.get_config()
    config["activation"] = "linear"
    config["name"] = layer.name + "_linear"
    clone = type(layer).from_config(config)
    clone.build(input_shape)
    clone.set_weights(layer.get_weights())
    return clone


class Program:
    """A model as an ordered list of steps on keyed tensors.

    Args:
        model: a functional or Sequential Keras model with one input and one
            output (the class scores).
        split: conv layers with a built-in activation to split into a linear
            step (whose output is keyed `("linear", layer.name)`) and an
            activation step.
    """

    def __init__(self, model: keras.Model, split: Iterable[Any] = ()) -> None:
        flat = graph.flatten(model)
        if len(flat.inputs) != 1 or len(flat.outputs) != 1:
            raise ValueError(
                f"rank needs a model with one input and one output; "
                f"{model.name!r} has {len(flat.inputs)} and "
                f"{len(flat.outputs)}."
            )
        self.input = flat.inputs[0]
        self.output = flat.outputs[0]
        split_ids = {id(layer) for layer in split}
        self.steps: list[Step] = []
        for step in map(_call_step, flat.calls):
            if id(step.layer) in split_ids and graph.has_activation(step.layer):
                self.steps.extend(self._split(step))
            else:
                self.steps.append(step)
        self._index()

    def _split(self, step: Step) -> list[Step]:
        layer = step.layer
        node_input = layer._inbound_nodes[0].arguments.keras_tensors[0]
        linear = _linear_clone(layer, node_input.shape)
        activation = keras.layers.Activation(
            layer.activation, name=layer.name + "_activation"
        )
        lin_key = ("linear", layer.name)
        (src,) = step.inputs
        return [
            Step(layer, step.inputs, (lin_key,),
                 lambda v, f=linear, s=src: [f(v[s])], linear_part=True),
            Step(activation, (lin_key,), step.outputs,
                 lambda v, f=activation, k=lin_key: [f(v[k])]),
        ]

    def _index(self) -> None:
        self.producer: dict[Hashable, int] = {}
        self.consumers: dict[Hashable, list[int]] = {}
        for i, step in enumerate(self.steps):
            for k in step.outputs:
                self.producer[k] = i
            for k in step.inputs:
                self.consumers.setdefault(k, []).append(i)

    def steps_of(self, layer: Any) -> list[int]:
        """Indices of the steps that call `layer` (a split conv: its linear part)."""
        return [i for i, s in enumerate(self.steps) if s.layer is layer]

    def run(self, values: dict[Hashable, Any], indices: Sequence[int],
            watch: Callable[[Hashable, Any], None] | None = None) -> dict:
        """Executes the given steps in order, filling `values` in place."""
        for i in indices:
            step = self.steps[i]
            for k, y in zip(step.outputs, step.fn(values)):
                values[k] = y
                if watch is not None:
                    watch(k, y)
        return values

    def ancestors(self, keys: Iterable[Hashable]) -> list[int]:
        """Steps needed to compute `keys` from the model input, in order."""
        needed: set[int] = set()
        stack = [k for k in keys if k in self.producer]
        while stack:
            i = self.producer[stack.pop()]
            if i in needed:
                continue
            needed.add(i)
            stack.extend(k for k in self.steps[i].inputs if k in self.producer)
        return sorted(needed)

    def downstream(self, key: Hashable) -> list[int]:
        """Steps that (transitively) read `key`, in order."""
        reached: set[int] = set()
        stack = [key]
        while stack:
            for i in self.consumers.get(stack.pop(), ()):
                if i not in reached:
                    reached.add(i)
                    stack.extend(self.steps[i].outputs)
        return sorted(reached)

    def boundary(self, key: Hashable, tail: Sequence[int]) -> list[Hashable]:
        """Tensors read by the `tail` steps that the tail does not compute."""
        made = {key} | {k for i in tail for k in self.steps[i].outputs}
        seen: list[Hashable] = []
        for i in tail:
            for k in self.steps[i].inputs:
                if k not in made and k not in seen:
                    seen.append(k)
        return seen


@dataclasses.dataclass
class Site:
    """Where the swaps happen for one ranked layer."""

    layer_name: str
    key: Hashable  # the site tensor (what the approximate method differentiates)
    swap_key: Hashable  # where the exact method stacks and swaps (see push_swap_point)
    channels: int
    channel_axis: int  # axis in the (batched) site tensor
    tail: list[int]  # steps after swap_key (after mix.out_key with a mix)
    boundary: list[Hashable]  # tensors the tail reads from before swap_key
    head: list[int]  # steps computing swap_key and the boundary
    mix: "Mix | None" = None  # the first mixing layer, run incrementally


def site_for(program: Program, layer: Any, site: str, incremental: bool = False) -> Site:
    """Locates the swap site of `layer` and the head/tail/boundary around it.

    With `incremental`, a first mixing layer that `Mix` can run incrementally
    is recorded in `mix`, and the tail starts after it; otherwise the tail
    starts at the swap point (what a swap of several channels at once needs).
    """
    found = program.steps_of(layer)
    if len(found) != 1:
        raise ValueError(
            f"Layer {layer.name!r} is called {len(found)} times in the model; "
            "a shared layer has no single output to rank."
        )
    key = program.steps[found[0]].outputs[0]
    if site == "post_activation":
        if key == ("linear", layer.name):
            key = program.steps[found[0] + 1].outputs[0]
        key = follow_chain(program, key)
    channel_axis = 1 if layer.data_format == "channels_first" else -1
    if program.output != key and not any(
        program.output in program.steps[i].outputs
        for i in program.downstream(key)
    ):
        raise ValueError(f"The model output does not depend on {layer.name!r}.")
    swap_key = push_swap_point(program, key, layer.data_format)
    mix = mix_for(program, swap_key, layer.data_format) if incremental else None
    start = mix.out_key if mix else swap_key
    tail = program.downstream(start)
    boundary = program.boundary(start, tail)
    return Site(
        layer_name=layer.name,
        key=key,
        swap_key=swap_key,
        channels=graph.filter_count(layer),
        channel_axis=channel_axis,
        tail=tail,
        boundary=boundary,
        head=program.ancestors([swap_key, *boundary]),
        mix=mix,
    )


def _per_channel(layer: Any, data_format: str) -> bool:
    """Whether output channel c of `layer` depends on input channel c alone.

    For such a layer f, f(swap_j(clean, dist)) == swap_j(f(clean), f(dist))
    element for element, so the swap can be made after it.
    """
    if not isinstance(layer, PER_CHANNEL_TYPES):
        return False
    if getattr(layer, "data_format", data_format) != data_format:
        return False
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        return name not in ("softmax", "log_softmax")
    if isinstance(layer, keras.layers.BatchNormalization):
        if not layer._inbound_nodes or not isinstance(layer.axis, int):
            return False
        rank = len(layer._inbound_nodes[0].arguments.keras_tensors[0].shape)
        axis = layer.axis
        want = 1 if data_format == "channels_first" else rank - 1
        return axis % rank == want
    if hasattr(layer, "depth_multiplier"):
        return int(layer.depth_multiplier) == 1
    return True


def push_swap_point(program: Program, key: Hashable, data_format: str) -> Hashable:
    """Moves the swap point down a single-consumer chain of per-channel layers.

    Swapping channel j of the site and then running per-channel layers gives
    exactly (element for element) the channel-j swap of the clean and
    distorted outputs of those layers, so the layers run once per image
    instead of once per stacked swap.
    """
    while key != program.output:
        consumers = program.consumers.get(key, [])
        if len(consumers) != 1:
            break
        step = program.steps[consumers[0]]
        if len(step.inputs) != 1 or len(step.outputs) != 1:
            break
        if not _per_channel(step.layer, data_format):
            break
        key = step.outputs[0]
    return key


@dataclasses.dataclass
class Mix:
    """The first channel-mixing layer after the swap point, run incrementally.

    A `Conv2D` (groups=1) or `Dense` layer is linear before its bias and
    activation, so its output for the swap of channel j is

        lin(dist) + bias + lin(e_j * (clean_j - dist_j))

    where `e_j` keeps channel j only. `lin(dist) + bias` is computed once per
    image; the second term reads one input channel, so it costs a factor of
    the layer's input channels less than the layer: a depthwise convolution with
    the layer's kernel slice `W[..., j, :]` (conv), an outer product (dense on
    the channel axis), or a matrix product over channel j's positions
    (flatten, then dense). Then the layer's activation is applied.
    """

    kind: str  # "conv", "dense" or "flatten_dense"
    layer: Any
    out_key: Hashable  # the layer's output; the tail starts after it
    activate: bool  # False for the linear half of a split conv

    def pre_activation(self, x: tf.Tensor) -> tf.Tensor:
        """The layer's output before its activation, for a batch `x`."""
        kernel = tf.convert_to_tensor(self.layer.kernel)
        if self.kind == "conv":
            y = self.layer.convolution_op(x, kernel)
        else:
            if self.kind == "flatten_dense":
                x = tf.reshape(x, [tf.shape(x)[0], -1])
            y = tf.tensordot(x, kernel, [[len(x.shape) - 1], [0]])
        if self.layer.bias is not None:
            y = y + tf.convert_to_tensor(self.layer.bias)
        return y

    def swapped(self, base: tf.Tensor, delta: tf.Tensor,
                filters: tf.Tensor) -> tf.Tensor:
        """The layer's output for each swap, stacked: `(K * B, ...)`.

        Args:
            base: `pre_activation(dist)`, `(B, ..., O)`.
            delta: `clean - dist` at the swap point, `(B, ..., C)`.
            filters: the `K` swapped channels.
        """
        k = tf.shape(filters)[0]
        b = tf.shape(base)[0]
        rank = len(delta.shape)
        kernel = tf.convert_to_tensor(self.layer.kernel)
        width = kernel.shape[-1]
        d = tf.gather(delta, filters, axis=rank - 1)  # (B, ..., K)
        if self.kind == "conv":
            kern = tf.gather(kernel, filters, axis=len(kernel.shape) - 2)
            y = keras.ops.depthwise_conv(
                d, kern, strides=self.layer.strides, padding=self.layer.padding,
                data_format="channels_last", dilation_rate=self.layer.dilation_rate,
            )  # (B, ..., K * O), channel k * O + o
            y = tf.reshape(y, tf.concat([tf.shape(base)[:-1], [k, width]], 0))
            y = tf.transpose(y, [rank - 1, *range(rank - 1), rank])
        else:
            d = tf.transpose(d, [rank - 1, *range(rank - 1)])  # (K, B, ...)
            if self.kind == "dense":
                w = tf.gather(kernel, filters)  # (K, O)
                y = d[..., None] * tf.reshape(w, [-1] + [1] * (rank - 1) + [width])
            else:  # flatten_dense: rows of the kernel at channel j's positions
                w = tf.reshape(kernel, [-1, delta.shape[-1], width])
                w = tf.transpose(tf.gather(w, filters, axis=1), [1, 0, 2])
                y = tf.matmul(tf.reshape(d, [k, b, -1]), w)  # (K, B, O)
        z = y + base[None]
        z = tf.reshape(z, tf.concat([[k * b], tf.shape(base)[1:]], 0))
        if self.activate and self.layer.activation is not None:
            z = self.layer.activation(z)
        return z


def mix_for(program: Program, key: Hashable, data_format: str) -> Mix | None:
    """The incremental first mixing layer reading `key`, or None.

    It must be the single consumer of `key` (or a channels-last `Flatten` that
    is, followed by its single-consumer `Dense`), a plain `Conv2D` with
    `groups=1` or `Dense` (not a subclass, not quantized, float compute as
    stored), on channels-last tensors. Otherwise the swap is run through the
    whole tail.
    """
    if data_format != "channels_last":
        return None

    def single_consumer(k: Hashable) -> Step | None:
        consumers = program.consumers.get(k, [])
        if k == program.output or len(consumers) != 1:
            return None
        step = program.steps[consumers[0]]
        if len(step.inputs) != 1 or len(step.outputs) != 1:
            return None
        return step

    step = single_consumer(key)
    if step is None:
        return None
    layer = step.layer
    kind = None
    if type(layer) is keras.layers.Flatten and layer.data_format == "channels_last":
        step = single_consumer(step.outputs[0])
        if step is not None and type(step.layer) is keras.layers.Dense:
            layer, kind = step.layer, "flatten_dense"
    elif type(layer) is keras.layers.Conv2D:
        if layer.groups == 1 and layer.data_format == "channels_last":
            kind = "conv"
    elif type(layer) is keras.layers.Dense:
        kind = "dense"
    if kind is None or getattr(layer, "quantization_mode", None) is not None:
        return None
    if layer.compute_dtype != layer.variable_dtype:
        return None
    return Mix(kind=kind, layer=layer, out_key=step.outputs[0], activate=not step.linear_part)


def follow_chain(program: Program, key: Hashable) -> Hashable:
    """Walks single-consumer BN/activation layers from `key`; returns the end."""
    while key != program.output:
        consumers = program.consumers.get(key, [])
        if len(consumers) != 1:
            break
        step = program.steps[consumers[0]]
        if not isinstance(step.layer, CHAIN_TYPES) or len(step.inputs) != 1:
            break
        key = step.outputs[0]
    return key


def choose_conv_layers(model: keras.Model, layers: Sequence[str] | None) -> list[Any]:
    """The conv layers named by `layers`, in graph order (all of them for None).

    Args:
        model: a Functional or Sequential model (nested models included).
        layers: conv layer names (one name as a string), or None for every conv layer.

    Returns:
        The layers, each once, in the model's graph order.

    Raises:
        ValueError: for an empty list, a name that is not a conv layer of the
            model (its conv layers are listed), or a model without conv layers.
    """
    convs = graph.conv_layers(model)
    if layers is None:
        if not convs:
            raise ValueError(f"Model {model.name!r} has no conv layer to rank.")
        return convs
    if isinstance(layers, str):
        layers = [layers]
    if len(layers) == 0:
        raise ValueError("layers must name at least one conv layer. Received: layers=[]")
    by_name = {layer.name: layer for layer in convs}
    chosen = []
    for name in layers:
        if name not in by_name:
            all_names = _all_layer_names(model)
            kind = "is not a conv layer" if name in all_names else "is not a layer"
            raise ValueError(
                f"layers: {name!r} {kind} of model {model.name!r}. Conv layers: "
                f"{list(by_name)[:20]}{' ...' if len(by_name) > 20 else ''}"
            )
        chosen.append(by_name[name])
    order = {id(layer): i for i, layer in enumerate(convs)}
    return sorted(dict.fromkeys(chosen), key=lambda l: order[id(l)])


def _all_layer_names(model: keras.Model) -> set[str]:
    return {layer.name for layer in graph.leaf_layers(model)}


def apply_preprocess(preprocess: Callable | None, x: np.ndarray) -> np.ndarray:
    """`preprocess` applied to a copy of `x`, as float32 (`x` itself for None)."""
    if preprocess is None:
        return x
    return np.asarray(preprocess(x.copy()), dtype=np.float32)


def head_fn(program: Program, site: Site) -> Callable:
    """tf.function: images -> (site tensor, [boundary tensors])."""

    @tf.function(reduce_retracing=True, autograph=False)
    def head(x):
        values = program.run({program.input: x}, site.head)
        return values[site.swap_key], [values[k] for k in site.boundary]

    return head

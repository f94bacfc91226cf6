"""The graph rewrite behind `wrap`: a copy of a model with correction blocks spliced in.

`GraphRewriter(corrections).rebuild(model)` walks the model's flattened graph
(`deepcorrect.graph.flatten`) in topological order and calls a copy of each
layer, with the pretrained weights, on new symbolic tensors. Sequential and
nested models are inlined, so the result is one flat functional model whose
layer names are those of the original's leaf layers. After each layer keyed by
a `deepcorrect.planning.Correction` it splices in the correction block: the
unit (fused, or between `GatherChannels` and `ScatterChannels`), then the
activation split off a conv with a built-in one. The input model is not
modified.

Example:

```python
import keras
from deepcorrect.rewriter import GraphRewriter

inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1")])
inputs = keras.Input((4,))
model = keras.Model(inputs, keras.layers.Dense(2, name="d2")(inner(inputs)))
flat = GraphRewriter().rebuild(model)
[layer.name for layer in flat.layers[1:]]           # ['d1', 'd2']
```
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import keras

from deepcorrect.graph import flatten, has_activation, is_graph_model
from deepcorrect.layers import GatherChannels, ScatterChannels
from deepcorrect.planning import Correction
from deepcorrect.units import CorrectionUnit
from robustkit.training_checks import derived_seed


def _accepts(function: Any, argument: str) -> bool:
    try:
        return argument in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _accepts_training(layer: Any) -> bool:
    return _accepts(layer.call, "training")


class GraphRewriter:
    """Rebuilds a model layer by layer, inserting correction blocks.

    Every layer is copied (config and weights), so the input model is never
    modified; a layer called several times (shared) is copied once. Nested
    Functional and Sequential models are inlined.

    Args:
        corrections: the `Correction`s to apply, each keyed by the name of
            the layer whose output it corrects (the conv, or the batch norm
            after it). Defaults to none (a plain flattening copy).
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
        if not is_graph_model(model):
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
            if layer.name in self.corrections and has_activation(layer):
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
            if has_activation(layer):
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

"""`wrap`: insert correction units into any Keras CNN by graph rewriting.

For each chosen conv layer, the top-beta ranked output channels are gathered,
run through a `CorrectionUnit`, and scattered back into their original
positions, before the layer's batch norm and activation (the paper's footnotes
6 and 7). By default the gather and scatter are folded into the unit's first
and last 1x1 convs (`fused=True`); `fused=False` uses explicit
`GatherChannels` and `ScatterChannels` layers instead. A conv with a built-in
activation (VGG16's `Conv2D(..., activation="relu")`) is split into the linear
conv and a separate `Activation` layer, so the unit sees the pre-activation
output. Every other channel and every other layer is left as it was.

`deepcorrect.planning` checks the arguments and decides which filters of which
layers get which unit; `deepcorrect.rewriter` rebuilds the model with the units
spliced in: it calls a copy of each layer, with the pretrained weights, on new
tensors. Sequential models and nested models (such as a `keras.applications`
model inside a classifier) are inlined, so the result is one flat functional
model whose layer names are those of the original's leaf layers. The input
model is not modified.

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

from typing import Any, Mapping, Sequence

import keras
import numpy as np

from deepcorrect.batch_norm import check_train_batch_norm, trained_batch_norms
from deepcorrect.checks import check_model
from deepcorrect.graph import batch_norms_by_input, leaf_layers
from deepcorrect.planning import UnitSpec, head_layer_names, plan_corrections
from deepcorrect.rewriter import GraphRewriter
from deepcorrect.units import CorrectionUnit
from robustkit.seeds import check_seed

# Where `wrap` splices a unit: "auto" (after the conv's batch norm where it has one,
# on the conv output otherwise), the conv's output, or its batch norm's output.
UNIT_SITES = ("auto", "conv", "batch_norm")


def wrap(
    pretrained: keras.Model,
    ranking: Any,
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
        ranking: `{layer_name: channel indices, most susceptible first}` or a
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
            layer in `ranking` (or the first `first` conv layers).
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
        ranking,
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

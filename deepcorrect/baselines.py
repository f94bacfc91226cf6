"""Baselines DeepCorrect is compared against: Finetune-k and plain re-training.

Finetune-k (Section 5.1.1 of the paper) fine-tunes the first k conv layers of
a pretrained model, counted from the input, on a mix of clean and distorted
images, and leaves the rest unchanged; `k="all"` fine-tunes every layer.
Plain re-training trains the same architecture from freshly initialised
weights.

Both return a copy: the input model is never modified. Frozen layers have
`trainable=False`; in Keras 3 a frozen `BatchNormalization` layer also runs in
inference mode during training (it normalises with its moving statistics and
does not update them), unlike Keras 1/2, where a frozen BN still used batch
statistics.

Example:

```python
import keras
import deepcorrect

pretrained = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3))
model = deepcorrect.finetune(pretrained, 3)  # Finetune-3
model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
              loss="sparse_categorical_crossentropy")
```
"""

from __future__ import annotations

from typing import Union

import keras
import numpy as np

from deepcorrect.batch_norm import check_train_batch_norm, trained_batch_norms
from deepcorrect.checks import check_model
from deepcorrect.graph import CONV_LAYER_TYPES, batch_norms_by_input, leaf_layers
from robustkit.seeds import check_seed
from robustkit.training_checks import derived_seed

LayerCount = Union[int, str]


def copy_model(model: keras.Model) -> keras.Model:
    """A structural copy of `model` with its weights copied (not shared).

    Nested models stay nested. Every layer is trainable in the copy.

    Args:
        model: a built Functional or Sequential model.

    Returns:
        The copy.

    Example:

    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> c = copy_model(m)
    >>> all((a == b).all() for a, b in zip(m.get_weights(), c.get_weights()))
    True
    """
    check_model(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = True
    return copy


def finetune_layer_names(
    model: keras.Model, k: LayerCount, train_batch_norm: bool | str = "auto"
) -> list[str]:
    """Names of the layers Finetune-k trains.

    Args:
        model: the pretrained model.
        k: number of conv layers to fine-tune, counted from the input in graph
            order, or `"all"` for every layer.
        train_batch_norm: whether each `BatchNormalization` layer that directly
            follows one of those conv layers (with `k="all"`: every one)
            trains too. `"auto"` (the default): unless it is folded (see
            `deepcorrect.folded_batch_norms`); True: always (warning about
            folded ones); False: never.

    Returns:
        Layer names, in graph order.

    Raises:
        ValueError: for a bad `k` or `train_batch_norm`, or a model without
            conv layers.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)),
    ...                       keras.layers.Conv2D(4, 3, name="c1"),
    ...                       keras.layers.BatchNormalization(name="bn1"),
    ...                       keras.layers.Conv2D(4, 3, name="c2")])
    >>> finetune_layer_names(m, 1)  # bn1 was never trained: it counts as folded
    ['c1']
    >>> _ = m.get_layer("bn1").moving_variance.assign(np.full(4, 2.0, "float32"))
    >>> finetune_layer_names(m, 1)
    ['c1', 'bn1']
    """
    check_train_batch_norm(train_batch_norm)
    check_model(model)
    leaves = leaf_layers(model)
    convs = [layer for layer in leaves if isinstance(layer, CONV_LAYER_TYPES)]
    if not convs:
        raise ValueError(
            f"model {model.name!r} has no conv layers "
            f"({', '.join(t.__name__ for t in CONV_LAYER_TYPES)}) to fine-tune."
        )
    if k == "all":
        norms = [layer.name for layer in leaves
                 if isinstance(layer, keras.layers.BatchNormalization)]
        frozen = set(norms) - trained_batch_norms(model, norms, train_batch_norm)
        return [layer.name for layer in leaves if layer.name not in frozen]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (
        1 <= k <= len(convs)
    ):
        raise ValueError(
            f"k must be an integer in [1, {len(convs)}] (the model has "
            f"{len(convs)} conv layers) or 'all'. Received: k={k!r}"
        )
    chosen = {layer.name for layer in convs[: int(k)]}
    after = batch_norms_by_input(model)
    norms = [bn for name in chosen for bn in after.get(name, ())]
    chosen.update(trained_batch_norms(model, norms, train_batch_norm))
    return [layer.name for layer in leaves if layer.name in chosen]


def finetune(
    pretrained: keras.Model, k: LayerCount, train_batch_norm: bool | str = "auto"
) -> keras.Model:
    """Finetune-k: a copy of `pretrained` whose first k conv layers train.

    The first `k` conv layers (Conv2D, DepthwiseConv2D, SeparableConv2D,
    Conv2DTranspose; in graph order from the input) and, by default, the batch
    norm layers directly after them that are not folded are trainable; every
    other layer is frozen (`trainable=False`, which in Keras 3 also keeps a
    frozen `BatchNormalization` in inference mode during training). `k="all"`
    makes every layer trainable (the paper's Finetune-9 / Finetune-8), batch
    norms by the same rule.

    A folded batch norm (moving mean 0, variance 1, gamma 1: weights whose
    statistics were folded into the convs, such as the shared MobileNetV2
    ones; see `deepcorrect.folded_batch_norms`) would normalise with batch
    statistics while training and wreck the model, so `"auto"` keeps it
    frozen.

    Args:
        pretrained: a Functional or Sequential model; not modified.
        k: number of conv layers to fine-tune, or `"all"`.
        train_batch_norm: `"auto"` (the default) trains the batch norms
            directly following the fine-tuned conv layers unless they are
            folded; True trains them all (with a warning naming the folded
            ones); False trains none.

    Returns:
        A new model with the pretrained weights copied.

    Raises:
        TypeError: if `pretrained` is not a Functional or Sequential model.
        ValueError: if `k` is not in `[1, number of conv layers]` or `"all"`,
            `train_batch_norm` is not True, False or "auto", or the model has
            no conv layers.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)),
    ...                       keras.layers.Conv2D(4, 3, name="c1"),
    ...                       keras.layers.Conv2D(4, 3, name="c2")])
    >>> sorted({w.path.split("/")[-2] for w in finetune(m, 1).trainable_weights})
    ['c1']
    """
    check_model(pretrained, "pretrained")
    names = set(finetune_layer_names(pretrained, k, train_batch_norm))
    model = copy_model(pretrained)
    for layer in leaf_layers(model):
        layer.trainable = layer.name in names
    return model


def reinitialized(pretrained: keras.Model, seed: int | None = 0) -> keras.Model:
    """Plain re-training: the same architecture with fresh, trainable weights.

    Weights are drawn from each layer's initializers, every random initializer
    (and the seed of every `Dropout`-like layer) seeded from `seed` and the
    layer's name, so the same seed gives the same weights in any process. The
    seeds are kept in the layers' configs.

    Args:
        pretrained: a Functional or Sequential model; not modified.
        seed: an integer in `[0, 2**31 - 1]`, or None for fresh weights.
            Defaults to 0.

    Returns:
        A new, untrained model of the same architecture.

    Example:

    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> reinitialized(m).count_params() == m.count_params()
    True
    """
    check_model(pretrained, "pretrained")
    seed = check_seed(seed, optional=True)
    if seed is None:
        model = keras.models.clone_model(pretrained)
    else:
        model = keras.models.clone_model(
            pretrained, clone_function=lambda layer: _seeded_copy(layer, seed), recursive=True
        )
    model.trainable = True
    return model


def _seeded_copy(layer: keras.layers.Layer, seed: int) -> keras.layers.Layer:
    """A fresh copy of `layer` whose random initializers and `seed` are set from `seed`."""
    config = layer.get_config()
    for key, value in config.items():
        inner = value.get("config") if isinstance(value, dict) else None
        if key.endswith("_initializer") and isinstance(inner, dict) and "seed" in inner:
            seeded = derived_seed(seed, f"{layer.name}/{key}")
            config[key] = {**value, "config": {**inner, "seed": seeded}}
    if "seed" in config and config["seed"] is None:
        config["seed"] = derived_seed(seed, f"{layer.name}/seed")
    return layer.__class__.from_config(config)

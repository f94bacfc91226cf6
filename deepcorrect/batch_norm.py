"""Folded batch norms, and which batch norms Finetune-k and `wrap` may train.

Weights converted from inference graphs (TFLite, Coral, ONNX exports) often have their
batch norms *folded*: the statistics were multiplied into the conv before, and every
`BatchNormalization` layer is left as an identity plus a bias (moving mean 0, moving
variance 1 or `1 - epsilon`, gamma 1; beta holds the conv's folded bias). The shared
MobileNetV2 weights are such a model. In Keras 3 a trainable batch norm normalises with
the statistics of each batch while training, statistics that a folded layer never had,
so training it changes the network's outputs completely (Finetune-3 of that MobileNetV2
fell to clean top-1 0.06 in two epochs). A frozen (`trainable=False`) batch norm runs in
inference mode and stays the identity-plus-bias it was.

`folded_batch_norms` finds them, and `trained_batch_norms` applies the rule Finetune-k
and `wrap` share: `train_batch_norm="auto"` trains a batch norm unless it is folded,
`True` trains it anyway (with a warning for folded ones), `False` never trains it. A
batch norm that was never trained (fresh from its initializers) also counts as folded: it
too is an identity whose statistics describe no data.

Example:

```python
import keras
import deepcorrect

model = keras.applications.MobileNetV2(weights="../shared/models/mobilenet_v2_1.0_224.weights.h5")
len(deepcorrect.folded_batch_norms(model))   # 52: every batch norm of it
tuned = deepcorrect.finetune(model, 2)       # the two convs train, their batch norms stay frozen
```
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import keras
import numpy as np

from deepcorrect.graph import leaf_layers

TRAIN_BATCH_NORM_VALUES = (True, False, "auto")


def is_folded(layer: keras.layers.Layer, atol: float = 1e-5) -> bool:
    """Whether a built `BatchNormalization` layer is folded (an identity plus a bias).

    Folded means: every moving mean is 0, every moving variance 1 or `1 - epsilon` (so
    that `gamma / sqrt(variance + epsilon)` is 1), and every gamma 1, each within `atol`.
    Beta, the folded conv bias, may be anything.

    Args:
        layer: a `keras.layers.BatchNormalization` layer.
        atol: the tolerance. Defaults to 1e-5.

    Returns:
        True for a folded (or never trained) batch norm, False otherwise (and for a layer
        that is not a built batch norm).

    Example:

    >>> bn = keras.layers.BatchNormalization()
    >>> bn.build((None, 4))
    >>> is_folded(bn)
    True
    >>> _ = bn.moving_variance.assign(np.full(4, 2.0, "float32"))
    >>> is_folded(bn)
    False
    """
    if not isinstance(layer, keras.layers.BatchNormalization) or not layer.built:
        return False
    mean = np.asarray(layer.moving_mean)
    variance = np.asarray(layer.moving_variance)
    gamma = np.asarray(layer.gamma) if layer.scale else np.ones_like(mean)
    off_variance = np.minimum(np.abs(variance - 1.0), np.abs(variance + layer.epsilon - 1.0))
    return bool(
        np.all(np.abs(mean) <= atol)
        and np.all(off_variance <= atol)
        and np.all(np.abs(gamma - 1.0) <= atol)
    )


def folded_batch_norms(model: keras.Model, atol: float = 1e-5) -> list[str]:
    """Names of the folded `BatchNormalization` layers of `model` (see `is_folded`).

    Args:
        model: a Functional or Sequential model; nested models are searched too.
        atol: the tolerance on mean, variance and gamma. Defaults to 1e-5.

    Returns:
        The names, in graph order.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"),
    ...                       keras.layers.BatchNormalization(name="bn")])
    >>> folded_batch_norms(m)   # never trained: mean 0, variance 1, gamma 1
    ['bn']
    """
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise ValueError(f"atol must be a finite number >= 0. Received: atol={atol!r}")
    return [layer.name for layer in leaf_layers(model) if is_folded(layer, atol)]


def check_train_batch_norm(value: Any, argument: str = "train_batch_norm") -> bool | str:
    """Returns `value` if it is True, False or "auto"; raises ValueError otherwise.

    Example:

    >>> check_train_batch_norm("auto")
    'auto'
    """
    if not any(value is v or (isinstance(v, str) and value == v)
               for v in TRAIN_BATCH_NORM_VALUES):
        raise ValueError(
            f"{argument} must be True, False or 'auto'. Received: {argument}={value!r}"
        )
    return value


def trained_batch_norms(
    model: keras.Model,
    candidates: Iterable[str],
    train_batch_norm: bool | str,
    argument: str = "train_batch_norm",
) -> set[str]:
    """Which of the batch norms `candidates` train, by the `train_batch_norm` rule.

    Args:
        model: the pretrained model the names refer to.
        candidates: names of `BatchNormalization` layers that would train with their conv.
        train_batch_norm: `"auto"`: all but the folded ones; True: all (a warning names
            the folded ones); False: none.
        argument: the argument's name, for messages. Defaults to `"train_batch_norm"`.

    Returns:
        The names that train.

    Raises:
        ValueError: for another `train_batch_norm` value.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"),
    ...                       keras.layers.BatchNormalization(name="bn")])
    >>> trained_batch_norms(m, ["bn"], "auto"), trained_batch_norms(m, ["bn"], False)
    (set(), set())
    """
    check_train_batch_norm(train_batch_norm, argument)
    candidates = set(candidates)
    if train_batch_norm is False or not candidates:
        return set()
    folded = [name for name in folded_batch_norms(model) if name in candidates]
    if train_batch_norm == "auto":
        return candidates - set(folded)
    if folded:
        warnings.warn(
            f"{argument}=True trains the batch norms {folded}, but they are folded (moving "
            "mean 0, moving variance 1, gamma 1: their statistics were folded into the conv "
            "before them, or never learned). A trainable batch norm normalises with batch "
            "statistics while training, which these layers never used, so the model's "
            f"outputs will change completely. Pass {argument}='auto' to keep them frozen.",
            stacklevel=3,
        )
    return candidates

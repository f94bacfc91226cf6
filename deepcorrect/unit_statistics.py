"""Exact moving statistics for the batch norms inside correction units ("precise BN").

A `CorrectionUnit`'s batch norms start with moving mean 0 and variance 1 and move
towards the data by `1 - momentum` per training step: after a short run (80 steps at
Keras's 0.99 keep 45% of the start) the unit computes something else at inference
than it learned in training, and the repaired model loses clean accuracy. Wu & Johnson
("Rethinking 'Batch' in BatchNorm", 2021) call the cure precise BN: after training,
replace the moving averages with the statistics of the training distribution itself.
`refresh_unit_statistics` does that in one forward pass over a dataset: every unit
batch norm gets the mean and (biased) variance of its inputs pooled over every image
and position, exactly, whatever the number of steps trained. `deepcorrect.train` calls
it at the end of every run.

Example:

```python
import deepcorrect
model = deepcorrect.wrap(pretrained, ranking)
deepcorrect.refresh_unit_statistics(model, x_train[:1000])
```
"""

from __future__ import annotations

from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from deepcorrect import checks
from deepcorrect.graph import leaf_layers
from deepcorrect.units import CorrectionUnit


def unit_batch_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The `BatchNormalization` layers inside every `CorrectionUnit` of `model`, in order.

    Args:
        model: A Keras model, e.g. from `deepcorrect.wrap`.

    Returns:
        The unit batch norms (empty for a model without units, or with `no_bn` units).
    """
    found = []
    for layer in leaf_layers(model):
        if isinstance(layer, CorrectionUnit):
            found += [l for l in layer.stack if isinstance(l, keras.layers.BatchNormalization)]
    return found


def _batches(data, batch_size: int) -> Iterable:
    if isinstance(data, tf.data.Dataset):
        for element in data:
            yield element[0] if isinstance(element, (tuple, list)) else element
        return
    for start in range(0, len(data), batch_size):
        yield np.asarray(data[start:start + batch_size], np.float32)


def refresh_unit_statistics(model: keras.Model, data, batch_size: int = 64) -> int:
    """Sets every unit batch norm's moving statistics to its inputs' exact statistics.

    The model runs forward in training mode (the mode its units were trained in: unit
    batch norms normalise with the batch's statistics; frozen layers run in inference
    mode), and each unit batch norm's per-channel mean and biased variance are pooled
    over all images and positions of `data`, weighted by their sizes. Only the moving
    mean and variance change; scales, offsets and every other weight stay as they are.

    Args:
        model: A model with correction units (`deepcorrect.wrap`).
        data: Model inputs `[N, H, W, C]` (already preprocessed as the model expects),
            or a `tf.data.Dataset` of batches (of inputs, or of tuples whose first entry
            is the inputs, as a training dataset yields).
        batch_size: Batch size for an array `data`, an integer >= 1. Statistics are
            pooled exactly, so it changes only the batch statistics the forward pass
            normalises with, as the training batch size does.

    Returns:
        The number of batch norms refreshed (0 when the model has none: nothing runs).

    Raises:
        ValueError: For an empty `data` or a `batch_size` below 1.

    Example:

    >>> import deepcorrect, keras, numpy as np
    >>> unit = deepcorrect.CorrectionUnit(4)
    >>> x = keras.Input((8, 8, 4)); model = keras.Model(x, unit(x))
    >>> deepcorrect.refresh_unit_statistics(model, np.ones((2, 8, 8, 4), "float32"))
    3
    """
    checks.check_model(model)
    from robustkit.training_checks import check_count

    batch_size = check_count("batch_size", batch_size)
    norms = unit_batch_norms(model)
    if not norms:
        return 0
    momenta = [bn.momentum for bn in norms]
    sums = [None] * len(norms)
    count = 0
    try:
        for bn in norms:
            bn.momentum = 0.0  # the moving averages become the batch's statistics
        forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
        for x in _batches(data, batch_size):
            forward(x)
            n = int(x.shape[0])
            count += n
            for i, bn in enumerate(norms):
                mean = bn.moving_mean.numpy().astype(np.float64)
                second = bn.moving_variance.numpy().astype(np.float64) + mean ** 2
                step = (n * mean, n * second)
                sums[i] = step if sums[i] is None else (sums[i][0] + step[0],
                                                        sums[i][1] + step[1])
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
    if count == 0:
        raise ValueError("data must hold at least one image. Received an empty dataset")
    for bn, (total, total_second) in zip(norms, sums):
        mean = total / count
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(np.maximum(total_second / count - mean ** 2, 0.0)
                                  .astype(np.float32))
    return len(norms)

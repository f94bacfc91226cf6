"""Ideal correction: top-1 accuracy when chosen filters get their clean activations.

DeepCorrect (Borkar and Karam, https://arxiv.org/abs/1705.02406, Section 4.1,
Figs. 4 and 5) asks how much accuracy comes back when the outputs of some
filters of one conv layer are perfectly corrected, that is, replaced by the
outputs the same filters give for the clean image. Algorithm 1
(`deepcorrect.rank`) swaps one filter at a time; `ideal_accuracy` swaps any
set of filters at once, so the top-beta ranked filters (Fig. 4) or a fixed
fraction of each layer (Fig. 5) can be scored without training anything.

It runs on the same flattened program as `deepcorrect.rank` (nothing in the
model is modified): the network is run up to the layer's output once for the
clean and once for the distorted images, the chosen channels are taken from
the clean output (`tf.where` on a channel mask, so they are bit-exact copies),
and the rest of the network runs on the mix. As in `rank`, the swap is made
after the per-channel layers that follow the conv (batch norm, ReLU, pooling),
which commute with it. Tensors that the rest of the network reads from before
the layer (a residual shortcut) stay distorted: only this layer's output is
corrected. So swapping every filter of a layer gives the clean accuracy
exactly when nothing downstream reads around the layer (chain-shaped CNNs).

Example:

```python
import numpy as np
import keras
import distort
from deepcorrect.ideal import ideal_accuracy

inputs = keras.Input((8, 8, 3))
x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
x = keras.layers.ReLU()(x)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
rng = np.random.default_rng(0)
clean = rng.uniform(0, 255, (16, 8, 8, 3)).astype("float32")
blurred = np.asarray(distort.apply(clean, "gaussian_blur", 2.0))
labels = rng.integers(0, 3, 16)
ideal_accuracy(model, clean, blurred, labels, "conv1", [[], [0, 2], [0, 1, 2, 3]])
# array([distorted accuracy, two filters corrected, clean accuracy])
```

The module needs the TensorFlow backend of Keras.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from deepcorrect.checks import check_choice, check_labels, check_model
from deepcorrect.flat_program import (
    Program,
    Site,
    apply_preprocess,
    choose_conv_layers,
    head_fn,
    site_for,
)
from deepcorrect.ranking import SITES


def _check_sets(filter_sets: Sequence[Sequence[int]], channels: int, layer_name: str) -> np.ndarray:
    """A `(K, channels)` boolean mask, one row per filter set."""
    if isinstance(filter_sets, (str, bytes)) or len(filter_sets) == 0:
        raise ValueError(
            "filter_sets must be a non-empty list of filter index lists. "
            f"Received: filter_sets={filter_sets!r}"
        )
    mask = np.zeros((len(filter_sets), channels), dtype=bool)
    for k, chosen in enumerate(filter_sets):
        ids = np.asarray(chosen).reshape(-1)
        if ids.size == 0:
            continue
        if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= channels:
            raise ValueError(
                f"filter_sets[{k}] must hold filter indices in [0, {channels - 1}] "
                f"(layer {layer_name!r} has {channels} filters). Received: {ids.tolist()}"
            )
        if np.unique(ids).size != ids.size:
            raise ValueError(
                f"filter_sets[{k}] names a filter twice. Received: {ids.tolist()}"
            )
        mask[k, ids] = True
    return mask


def _masked_counts_fn(program: Program, site: Site) -> Callable:
    """tf.function: correct top-1 predictions for K stacked channel masks.

    Copy `k` of the batch is the distorted site tensor with the channels of
    `mask[k]` taken from the clean one; boundary tensors are the distorted
    ones, tiled.
    """

    @tf.function(reduce_retracing=True)
    def counts(clean, dist, boundary, labels, mask):
        k = tf.shape(mask)[0]
        b = tf.shape(dist)[0]
        rank = len(dist.shape)
        shape = [1] * (rank + 1)
        shape[site.channel_axis % rank + 1] = site.channels
        m = tf.reshape(mask, tf.concat([[k], shape[1:]], 0))
        mixed = tf.where(m, clean[None], dist[None])
        mixed = tf.reshape(mixed, tf.concat([[k * b], tf.shape(dist)[1:]], 0))
        values = {site.swap_key: mixed}
        for key, t in zip(site.boundary, boundary):
            values[key] = tf.tile(t, [k] + [1] * (len(t.shape) - 1))
        values = program.run(values, site.tail)
        pred = tf.argmax(values[program.output], axis=-1, output_type=tf.int64)
        hit = tf.cast(tf.equal(pred, tf.tile(labels, [k])), tf.int32)
        return tf.reduce_sum(tf.reshape(hit, [k, b]), axis=1)

    return counts


class IdealCorrection:
    """Scores filter sets of one conv layer by ideal correction; reusable across images.

    Building it flattens the model and traces the forward passes once, so scoring
    many levels or image batches with one object is much cheaper than calling
    `ideal_accuracy` for each.

    Args:
        model: a functional or Sequential Keras classifier with one input and
            one output of class scores; run in inference mode.
        layer_name: a conv layer of `model`.
        site: `"pre_activation"` (default; the conv's own output, where
            correction units go) or `"post_activation"` (after the batch
            norm/activation chain that follows it); as in `deepcorrect.rank`.

    Raises:
        ValueError: for an unknown or non-conv layer or an unknown site.

    Example:

    >>> scorer = IdealCorrection(model, "conv1")
    >>> [scorer.accuracy(clean, blurred[level], labels, [[0, 3]]) for level in levels]
    """

    def __init__(self, model: keras.Model, layer_name: str, site: str = "pre_activation"):
        check_model(model)
        if keras.backend.backend() != "tensorflow":
            raise ValueError("IdealCorrection needs the TensorFlow backend of Keras.")
        check_choice("site", site, SITES)
        (layer,) = choose_conv_layers(model, [layer_name])
        program = Program(model, split=[layer] if site == "pre_activation" else ())
        self.layer_name = layer_name
        self._site = site_for(program, layer, site, incremental=False)  # several channels
        self.channels = self._site.channels
        self._head = head_fn(program, self._site)
        self._counts = _masked_counts_fn(program, self._site)

    def accuracy(
        self,
        clean: np.ndarray,
        distorted: np.ndarray,
        labels: np.ndarray,
        filter_sets: Sequence[Sequence[int]],
        batch_size: int = 256,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Top-1 accuracy on `distorted` with each set of filters ideally corrected.

        Args:
            clean: `(N, H, W, C)` clean images (the model's input, or what
                `preprocess` maps to it).
            distorted: the distorted versions of `clean`, same shape.
            labels: `N` class indices (or one-hot rows).
            filter_sets: a list of filter index lists; an empty list gives the
                accuracy on the distorted images, all filters of the layer the
                accuracy with the layer's whole output corrected.
            batch_size: samples per forward pass (default 256); several filter
                sets of a chunk of images are stacked into one pass.
            preprocess: optional `fn(images) -> images` applied to both image
                arrays before the model.

        Returns:
            A float array with one accuracy in [0, 1] per filter set.

        Raises:
            ValueError: for mismatched image shapes or labels, or filter indices
                out of range or repeated.
        """
        clean, distorted = np.asarray(clean), np.asarray(distorted)
        if clean.ndim < 2 or clean.shape[0] == 0:
            raise ValueError(f"clean must be a non-empty batch. Received shape {clean.shape}.")
        if distorted.shape != clean.shape:
            raise ValueError(
                f"distorted must have the shape of clean {clean.shape}. "
                f"Received shape {distorted.shape}."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer. Received: batch_size={batch_size!r}"
            )
        labels = check_labels(labels, clean.shape[0])
        mask = _check_sets(filter_sets, self.channels, self.layer_name)
        x_clean = apply_preprocess(preprocess, clean.astype(np.float32))
        x_dist = apply_preprocess(preprocess, distorted.astype(np.float32))
        n = clean.shape[0]
        chunk = min(n, int(batch_size))
        per_call = max(1, int(batch_size) // chunk)
        counts = np.zeros(len(mask), dtype=np.int64)
        for start in range(0, n, chunk):
            s = slice(start, min(start + chunk, n))
            a_clean, _ = self._head(x_clean[s])
            a_dist, boundary = self._head(x_dist[s])
            y = tf.constant(labels[s])
            for k in range(0, len(mask), per_call):
                group = tf.constant(mask[k:k + per_call])
                counts[k:k + per_call] += self._counts(a_clean, a_dist, boundary, y,
                                                       group).numpy()
        return counts / n


def ideal_accuracy(
    model: keras.Model,
    clean: np.ndarray,
    distorted: np.ndarray,
    labels: np.ndarray,
    layer_name: str,
    filter_sets: Sequence[Sequence[int]],
    site: str = "pre_activation",
    batch_size: int = 256,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Top-1 accuracy on distorted images with some filters ideally corrected.

    For each set of filters, the outputs of those filters of `layer_name` are
    replaced by their outputs for the clean images, and the rest of the
    network runs on the mix (see the module docstring). One call of
    `IdealCorrection(model, layer_name, site).accuracy(...)`.

    Args:
        model: a functional or Sequential Keras classifier with one input and
            one output of class scores; run in inference mode.
        clean: `(N, H, W, C)` clean images (the model's input, or what
            `preprocess` maps to it).
        distorted: the distorted versions of `clean`, same shape.
        labels: `N` class indices (or one-hot rows).
        layer_name: a conv layer of `model`.
        filter_sets: a list of filter index lists (see `IdealCorrection.accuracy`).
        site: `"pre_activation"` (default) or `"post_activation"`.
        batch_size: samples per forward pass (default 256).
        preprocess: optional `fn(images) -> images` applied to both image
            arrays before the model.

    Returns:
        A float array with one accuracy in [0, 1] per filter set.

    Raises:
        ValueError: for an unknown or non-conv layer, mismatched image shapes
            or labels, or filter indices out of range or repeated.
    """
    return IdealCorrection(model, layer_name, site).accuracy(
        clean, distorted, labels, filter_sets, batch_size=batch_size, preprocess=preprocess)

"""The exact swap scores: the model's outcome with one filter's output made clean.

For a site (see `deepcorrect.flat_program.site_for`), the head computes the
clean and the distorted site tensors once per chunk of images; the tail then
runs `K` filter swaps in one call, by stacking `K` copies of the chunk, copy
`k` taking channel `j_k` from the clean activations (`tf.where` on a one-hot
mask, so the swapped values are bit-exact copies).

One pass yields, per image, both outcomes the scores read (`Outcomes`): whether
the top-1 prediction is right, and the true class's log-probability.
`baseline_outcomes` records them on the distorted images, `swap_counts` after
each filter swap; `contributions` is each image's share of a filter's priority
(the swap's gain in hits or log-probability), and `weighted_scores` turns the
outcomes into priorities over all images, a subset or a resample of them.

Example:

>>> import numpy as np
>>> base = Outcomes(hits=np.array([[1, 0, 0, 0]]),
...                 log_probs=np.zeros((1, 4), "float32"))
>>> swapped = Outcomes(hits=np.array([[[1, 1, 0, 0], [1, 1, 1, 1]]]),
...                    log_probs=np.zeros((1, 2, 4), "float32"))
>>> scores(swapped, base, "gain").tolist()  # two filters
[0.25, 0.75]
>>> weighted_scores(swapped, base, "gain", np.array([[1, 1, 0, 0]])).tolist()
[[0.5, 0.5]]
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from deepcorrect.flat_program import Program, Site, head_fn
from deepcorrect.ranking.inputs import RankingData

# Probabilities are clipped here before their log (`score="log_prob"` of a
# model that outputs probabilities), so that a probability of 0 counts as
# log(1e-12) = -27.6.
LOG_PROB_EPSILON = 1e-12


@dataclasses.dataclass
class Outcomes:
    """The model's outcome per image: top-1 hits and true-class log-probabilities.

    Attributes:
        hits: 1 where the top-1 prediction is the label, else 0 (int8);
            shape `(levels, images)` for the baseline, `(levels, filters,
            images)` after the swaps.
        log_probs: the label's log-probability (float32), the same shape:
            `log_softmax` of logits, or the log of probabilities clipped
            below at `LOG_PROB_EPSILON`.
    """

    hits: np.ndarray
    log_probs: np.ndarray


def _prepare_fn(site: Site) -> Callable:
    """fn(clean, dist) -> the two tensors `_swap_fn` reads, once per chunk.

    Without a mix: the clean and distorted site tensors. With one: the mixing
    layer's output before its activation on the distorted tensor, and
    `clean - dist`.
    """
    mix = site.mix
    if mix is None:
        return lambda clean, dist: (clean, dist)

    @tf.function(reduce_retracing=True, autograph=False)
    def prepare(clean, dist):
        return mix.pre_activation(dist), clean - dist

    return prepare


def _outcomes(out: tf.Tensor, labels: tf.Tensor, from_logits: bool) -> tuple:
    """Top-1 hits (int8) and the labels' log-probabilities (float32) of `out`."""
    out = tf.cast(out, tf.float32)
    pred = tf.argmax(out, axis=-1, output_type=tf.int64)
    hits = tf.cast(tf.equal(pred, labels), tf.int8)
    if from_logits:
        log_probs = tf.nn.log_softmax(out, axis=-1)
    else:
        log_probs = tf.math.log(tf.maximum(out, LOG_PROB_EPSILON))
    return hits, tf.gather(log_probs, labels, axis=1, batch_dims=1)


def _swap_fn(program: Program, site: Site, from_logits: bool) -> Callable:
    """tf.function: the outcomes of K stacked filter swaps.

    Copy `k` of the batch is the distorted site tensor with channel
    `filters[k]` taken from the clean one (with a mix: the mixing layer's
    output for that swap, see `deepcorrect.flat_program.Mix`); boundary
    tensors are the distorted ones, tiled. Returns the hits and the labels'
    log-probabilities, each of shape `(K, images)`.
    """

    @tf.function(reduce_retracing=True, autograph=False)
    def swap_outcomes(first, second, boundary, labels, filters):
        k = tf.shape(filters)[0]
        b = tf.shape(labels)[0]
        if site.mix is not None:
            values = {site.mix.out_key: site.mix.swapped(first, second, filters)}
        else:
            clean, dist = first, second
            rank = len(dist.shape)
            mask_shape = [1] * (rank + 1)
            mask_shape[site.channel_axis % rank + 1] = site.channels
            mask = tf.one_hot(filters, site.channels, on_value=True, off_value=False)
            mask = tf.reshape(mask, tf.concat([[k], mask_shape[1:]], 0))
            mixed = tf.where(mask, clean[None], dist[None])
            mixed = tf.reshape(mixed, tf.concat([[k * b], tf.shape(dist)[1:]], 0))
            values = {site.swap_key: mixed}
        for key, t in zip(site.boundary, boundary):
            values[key] = tf.tile(t, [k] + [1] * (len(t.shape) - 1))
        values = program.run(values, site.tail)
        hits, log_probs = _outcomes(values[program.output], tf.tile(labels, [k]),
                                    from_logits)
        return tf.reshape(hits, [k, b]), tf.reshape(log_probs, [k, b])

    return swap_outcomes


def _predict_fn(program: Program, from_logits: bool) -> Callable:
    """tf.function: the outcomes of the whole model, per image."""

    @tf.function(reduce_retracing=True, autograph=False)
    def predict_outcomes(x, labels):
        out = program.run({program.input: x}, range(len(program.steps)))
        return _outcomes(out[program.output], labels, from_logits)

    return predict_outcomes


def baseline_outcomes(
    program: Program, data: RankingData, batch_size: int, from_logits: bool
) -> Outcomes:
    """The model's outcomes on the distorted images (`p_b` is their mean hit).

    Args:
        program: the model's flat program.
        data: the ranking images.
        batch_size: images per forward pass.
        from_logits: whether the model outputs logits (else probabilities).

    Returns:
        `Outcomes` of shape `(levels, images)`.
    """
    predict = _predict_fn(program, from_logits)
    shape = (len(data.levels), data.n)
    result = Outcomes(np.zeros(shape, np.int8), np.zeros(shape, np.float32))
    for li in range(len(data.levels)):
        x = data.distorted(li)
        for s in data.chunks(batch_size):
            hits, log_probs = predict(x[s], tf.constant(data.labels[s]))
            result.hits[li, s] = hits.numpy()
            result.log_probs[li, s] = log_probs.numpy()
    return result


def swap_counts(
    program: Program,
    site: Site,
    data: RankingData,
    filter_ids: np.ndarray,
    batch_size: int,
    from_logits: bool,
    progbar: keras.utils.Progbar | None = None,
    timing: dict[str, float] | None = None,
) -> Outcomes:
    """The model's outcomes per image after each filter swap, per level.

    Their sums over images are the correct-prediction counts of Algorithm 1.

    Args:
        program: the model's flat program.
        site: the swap site of the ranked layer.
        data: the ranking images.
        filter_ids: the filters to swap, one at a time.
        batch_size: samples per forward pass; `batch_size // chunk` swaps of a
            chunk of `min(N, batch_size)` images go in one pass.
        from_logits: whether the model outputs logits (else probabilities).
        progbar: a progress bar counting swapped samples, or None (default).
        timing: if given, `timing["tail_seconds"]` and
            `timing["tail_samples"]` accumulate the wall time and the number of
            stacked samples of the tail passes.

    Returns:
        `Outcomes` of shape `(levels, len(filter_ids), images)`.
    """
    head = head_fn(program, site)
    prepare = _prepare_fn(site)
    swap = _swap_fn(program, site, from_logits)
    chunk = min(data.n, batch_size)
    per_call = max(1, batch_size // chunk)
    groups = [filter_ids[i:i + per_call] for i in range(0, len(filter_ids), per_call)]
    shape = (len(data.levels), len(filter_ids), data.n)
    result = Outcomes(np.zeros(shape, np.int8), np.zeros(shape, np.float32))
    done = 0
    for li in range(len(data.levels)):
        x_dist = data.distorted(li)
        for s in data.chunks(chunk):
            clean, _ = head(data.clean[s])
            dist, boundary = head(x_dist[s])
            first, second = prepare(clean, dist)
            labels = tf.constant(data.labels[s])
            start = 0
            for group in groups:
                tick = time.perf_counter()
                hits, log_probs = swap(first, second, boundary, labels,
                                       tf.constant(group, dtype=tf.int32))
                rows = slice(start, start + len(group))
                result.hits[li, rows, s] = hits.numpy()
                result.log_probs[li, rows, s] = log_probs.numpy()
                if timing is not None:
                    timing["tail_seconds"] += time.perf_counter() - tick
                    timing["tail_samples"] += len(group) * (s.stop - s.start)
                start += len(group)
                done += len(group) * (s.stop - s.start)
                if progbar is not None:
                    progbar.update(done)
    return result


def _level_delta(swapped: Outcomes, base: Outcomes, score: str, level: int) -> np.ndarray:
    """`contributions` of one level, shape `(filters, images)`."""
    if score in ("log_prob", "log_prob_magnitude"):
        return (swapped.log_probs[level].astype(np.float64)
                - base.log_probs[level].astype(np.float64))
    return swapped.hits[level].astype(np.float64) - base.hits[level]


def contributions(swapped: Outcomes, base: Outcomes, score: str) -> np.ndarray:
    """Each image's share of each filter's priority, per level.

    The priority of `score="gain"` or `"log_prob"` is the mean of these over
    levels and images.

    Args:
        swapped: `swap_counts`, shape `(levels, filters, images)`.
        base: `baseline_outcomes`, shape `(levels, images)`.
        score: `"gain"` (`hit_swap - hit_base`, in {-1, 0, 1}) or
            `"log_prob"` (`log_prob_swap - log_prob_base`).

    Returns:
        A float64 array of shape `(levels, filters, images)`.

    Raises:
        ValueError: for `"relative_error"`, which is not a mean over images.

    Example:

    >>> base = Outcomes(np.array([[0, 1]]), np.log(np.array([[0.2, 0.6]])))
    >>> swapped = Outcomes(np.array([[[1, 1]]]), np.log(np.array([[[0.8, 0.6]]])))
    >>> contributions(swapped, base, "gain").tolist()
    [[[1.0, 0.0]]]
    """
    if score not in ("gain", "log_prob"):
        raise ValueError(
            "Per-image contributions exist for score='gain' or 'log_prob'. "
            f"Received: score={score!r}"
        )
    return np.stack([_level_delta(swapped, base, score, li)
                     for li in range(base.hits.shape[0])])


def weighted_scores(
    swapped: Outcomes, base: Outcomes, score: str, weights: np.ndarray
) -> np.ndarray:
    """Per-filter scores over weighted images, one row per row of weights.

    Row `r` holds the scores that the images would give if image `i` appeared
    `weights[r, i]` times: an indicator row is a subset of the images, a row of
    counts a bootstrap resample. Per level, the gain is the weighted mean of
    the contributions; `"relative_error"` divides its magnitude by the
    baseline's weighted error rate (0 where that is 0). Levels are averaged;
    `"log_prob_magnitude"` is then the magnitude of the `"log_prob"` score.

    Args:
        swapped: `swap_counts`, shape `(levels, filters, images)`.
        base: `baseline_outcomes`, shape `(levels, images)`.
        score: `"gain"`, `"relative_error"`, `"log_prob"` or `"log_prob_magnitude"`.
        weights: non-negative image weights, shape `(rows, images)`, each row
            with a positive sum.

    Returns:
        A float64 array of shape `(rows, filters)`.
    """
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum(axis=1)[:, None]
    per_level = []
    for li in range(base.hits.shape[0]):
        gain = weights @ _level_delta(swapped, base, score, li).T / total
        if score == "relative_error":
            err = (total - weights @ base.hits[li, :, None]) / total
            with np.errstate(divide="ignore", invalid="ignore"):
                gain = np.where(err > 0, np.abs(gain) / err, 0.0)
        per_level.append(gain)
    mean = np.mean(per_level, axis=0)
    return np.abs(mean) if score == "log_prob_magnitude" else mean


def scores(swapped: Outcomes, base: Outcomes, score: str) -> np.ndarray:
    """Per-filter scores over all images, averaged over levels.

    Args:
        swapped: `swap_counts`, shape `(levels, filters, images)`.
        base: `baseline_outcomes`, shape `(levels, images)`.
        score: `"gain"` (the change in top-1 accuracy), `"relative_error"`
            (`|err_swap - err_base| / err_base`, 0 where `err_base == 0`) or
            `"log_prob"` (the mean change in the label's log-probability) or
            `"log_prob_magnitude"` (its magnitude: a swap that hurts scores as
            high as one that helps, as in the original code).

    Returns:
        A float64 array of shape `(filters,)`.
    """
    return weighted_scores(swapped, base, score, np.ones((1, base.hits.shape[1])))[0]

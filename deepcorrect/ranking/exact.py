"""The exact swap scores: top-1 accuracy with one filter's output made clean.

For a site (see `deepcorrect.flat_program.site_for`), the head computes the
clean and the distorted site tensors once per chunk of images; the tail then
runs `K` filter swaps in one call, by stacking `K` copies of the chunk, copy
`k` taking channel `j_k` from the clean activations (`tf.where` on a one-hot
mask, so the swapped values are bit-exact copies). `baseline_counts` and
`swap_counts` count correct top-1 predictions, `scores` turns the counts into
priorities.

Example:

>>> import numpy as np
>>> counts = np.array([[6, 9]])  # one level, two filters swapped
>>> scores(counts, base=np.array([5]), n=10, score="gain").tolist()
[0.1, 0.4]
"""

from __future__ import annotations

import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from deepcorrect.flat_program import Program, Site, head_fn
from deepcorrect.ranking.inputs import RankingData


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


def _swap_fn(program: Program, site: Site) -> Callable:
    """tf.function counting correct predictions for K stacked filter swaps.

    Copy `k` of the batch is the distorted site tensor with channel
    `filters[k]` taken from the clean one (with a mix: the mixing layer's
    output for that swap, see `deepcorrect.flat_program.Mix`); boundary
    tensors are the distorted ones, tiled. Returns the number of correct top-1 predictions per copy.
    """

    @tf.function(reduce_retracing=True, autograph=False)
    def count_swaps(first, second, boundary, labels, filters):
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
        pred = tf.argmax(values[program.output], axis=-1, output_type=tf.int64)
        hit = tf.cast(tf.equal(pred, tf.tile(labels, [k])), tf.int32)
        return tf.reduce_sum(tf.reshape(hit, [k, b]), axis=1)

    return count_swaps


def _predict_fn(program: Program) -> Callable:
    """tf.function counting correct top-1 predictions of the whole model."""

    @tf.function(reduce_retracing=True, autograph=False)
    def correct(x, labels):
        out = program.run({program.input: x}, range(len(program.steps)))
        pred = tf.argmax(out[program.output], axis=-1, output_type=tf.int64)
        return tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.int32))

    return correct


def baseline_counts(program: Program, data: RankingData, batch_size: int) -> np.ndarray:
    """Correct top-1 predictions on the distorted images, per level (`p_b * N`).

    Args:
        program: the model's flat program.
        data: the ranking images.
        batch_size: images per forward pass.

    Returns:
        An int array of shape `(levels,)`.
    """
    correct = _predict_fn(program)
    counts = np.zeros(len(data.levels), dtype=np.int64)
    for li in range(len(data.levels)):
        x = data.distorted(li)
        for s in data.chunks(batch_size):
            counts[li] += int(correct(x[s], data.labels[s]))
    return counts


def swap_counts(
    program: Program,
    site: Site,
    data: RankingData,
    filter_ids: np.ndarray,
    batch_size: int,
    progbar: keras.utils.Progbar | None,
    timing: dict[str, float] | None = None,
) -> np.ndarray:
    """Correct top-1 predictions after each filter swap, per level.

    Args:
        program: the model's flat program.
        site: the swap site of the ranked layer.
        data: the ranking images.
        filter_ids: the filters to swap, one at a time.
        batch_size: samples per forward pass; `batch_size // chunk` swaps of a
            chunk of `min(N, batch_size)` images go in one pass.
        progbar: a progress bar counting swapped samples, or None.
        timing: if given, `timing["tail_seconds"]` and
            `timing["tail_samples"]` accumulate the wall time and the number of
            stacked samples of the tail passes.

    Returns:
        An int array of shape `(levels, len(filter_ids))`.
    """
    head = head_fn(program, site)
    prepare = _prepare_fn(site)
    swap = _swap_fn(program, site)
    chunk = min(data.n, batch_size)
    per_call = max(1, batch_size // chunk)
    groups = [filter_ids[i:i + per_call] for i in range(0, len(filter_ids), per_call)]
    counts = np.zeros((len(data.levels), len(filter_ids)), dtype=np.int64)
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
                got = swap(first, second, boundary, labels,
                           tf.constant(group, dtype=tf.int32)).numpy()
                if timing is not None:
                    timing["tail_seconds"] += time.perf_counter() - tick
                    timing["tail_samples"] += len(group) * (s.stop - s.start)
                counts[li, start:start + len(group)] += got
                start += len(group)
                done += len(group) * (s.stop - s.start)
                if progbar is not None:
                    progbar.update(done)
    return counts


def scores(counts: np.ndarray, base: np.ndarray, n: int, score: str) -> np.ndarray:
    """Per-filter scores, averaged over levels, from correct-prediction counts.

    Args:
        counts: `swap_counts`, shape `(levels, filters)`.
        base: `baseline_counts`, shape `(levels,)`.
        n: the number of images.
        score: `"gain"` (`(counts - base) / n`) or `"relative_error"`
            (`|err_swap - err_base| / err_base`, 0 where `err_base == 0`).

    Returns:
        A float array of shape `(filters,)`.
    """
    gain = (counts - base[:, None]) / n
    if score == "gain":
        return gain.mean(axis=0)
    err_ref = (n - base[:, None]) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(err_ref > 0, np.abs(gain) / err_ref, 0.0)
    return rel.mean(axis=0)



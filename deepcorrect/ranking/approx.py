"""The approximate ranking (`method="approx"`): a first-order estimate.

One forward and backward pass per distorted image: the loss change of a swap
is approximated by `sum((a_clean - a_distorted) * dLoss/da)` over the filter's
positions, and the priority is its negation (score `"first_order_loss"`). All
sites are differentiated in the same pass.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from deepcorrect.flat_program import Program, Site
from deepcorrect.ranking.inputs import RankingData, outputs_are_logits


def first_order_priorities(
    program: Program,
    sites: list[Site],
    data: RankingData,
    batch_size: int,
    progbar: keras.utils.Progbar | None,
) -> dict[str, np.ndarray]:
    """First-order swap effect per filter, for all sites in one pass per batch.

    The loss is the cross-entropy of the model's output (from logits unless
    the outputs look like probabilities), summed over images and averaged over
    images and levels in the result.

    Args:
        program: the model's flat program.
        sites: the sites of the ranked layers (their `key` is differentiated).
        data: the ranking images.
        batch_size: images per forward/backward pass.
        progbar: a progress bar counting images, or None.

    Returns:
        `{layer_name: priorities}`, one float per filter.
    """
    keys = [site.key for site in sites]
    clean_steps = program.ancestors(keys)
    all_steps = list(range(len(program.steps)))
    from_logits = outputs_are_logits(program, data.clean)
    want = set(keys)

    @tf.function(reduce_retracing=True, autograph=False)
    def clean_sites(x):
        values = program.run({program.input: x}, clean_steps)
        return [values[k] for k in keys]

    @tf.function(reduce_retracing=True, autograph=False)
    def first_order(x, labels, clean):
        with tf.GradientTape() as tape:
            watched = {}

            def watch(key, value):
                if key in want:
                    tape.watch(value)
                    watched[key] = value

            values = program.run({program.input: x}, all_steps, watch)
            out = tf.cast(values[program.output], tf.float32)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                labels, out, from_logits=from_logits))
        grads = tape.gradient(loss, [watched[k] for k in keys])
        sums = []
        for site, c, g in zip(sites, clean, grads):
            d = watched[site.key]
            delta_loss = tf.cast((c - d), tf.float32) * tf.cast(g, tf.float32)
            channel = site.channel_axis % len(d.shape)
            axes = [a for a in range(len(d.shape)) if a != channel]
            sums.append(-tf.reduce_sum(delta_loss, axis=axes))
        return sums

    totals = [np.zeros(site.channels) for site in sites]
    done = 0
    for li in range(len(data.levels)):
        x_dist = data.distorted(li)
        for s in data.chunks(batch_size):
            clean = clean_sites(data.clean[s])
            sums = first_order(x_dist[s], tf.constant(data.labels[s]), clean)
            for t, v in zip(totals, sums):
                t += v.numpy()
            done += s.stop - s.start
            if progbar is not None:
                progbar.update(done)
    scale = 1.0 / (data.n * len(data.levels))
    return {site.layer_name: t * scale for site, t in zip(sites, totals)}



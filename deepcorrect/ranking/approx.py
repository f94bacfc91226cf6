"""The approximate ranking (`method="approx"`): a first-order estimate.

One forward and backward pass per distorted image: the loss change of a swap
is approximated by `sum((a_clean - a_distorted) * dLoss/da)` over the filter's
positions, and the priority is its negation (score `"first_order_loss"`). All
sites are differentiated in the same pass.

The activations `a` are taken where the exact method swaps (`Site.swap_key`):
after the chain of per-channel layers that follows the conv (batch norm, ReLU,
pooling), where a swap of the conv's channel is the same swap. Linearised at
the conv's own output instead, the estimate goes through the max-pooling and
ReLU kinks and agrees far less with the exact ranking (Spearman 0.39-0.44
instead of 0.81-0.97 on conv2 and conv3 of the CIFAR-10 network under blur,
docs/RESULTS.md).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from deepcorrect.flat_program import Program, Site
from deepcorrect.ranking.inputs import RankingData, outputs_are_logits


# Bytes a backward pass holds per byte of forward activations (the activations kept for
# the gradient, the gradients, temporaries), for sizing batches.
BACKWARD_FACTOR = 3


def memory_batch_size(program: Program, image: np.ndarray, batch_size: int,
                      budget: int | None = None) -> int:
    """The largest batch, at most `batch_size`, whose forward/backward pass fits `budget`.

    A forward pass of one image measures the bytes of every tensor of the model;
    a batch needs about `BACKWARD_FACTOR` times that per image. A large network at
    full resolution (MobileNetV2 at 224 px) holds about 100 MB per image, so a
    batch of 256 would need tens of GiB.

    Args:
        program: the model's flat program.
        image: one input image, `[H, W, C]` (as the model sees it).
        batch_size: the batch size asked for.
        budget: bytes a batch may take; None for
            `deepcorrect.adaptation.IN_MEMORY_BYTES` (35% of the memory, 1 to 8 GiB).

    Returns:
        The batch size to use, in `[1, batch_size]`.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    >>> from deepcorrect.flat_program import Program
    >>> memory_batch_size(Program(model), np.zeros((8, 8, 3)), 64, budget=10_000)
    2
    """
    if budget is None:
        from deepcorrect.adaptation import IN_MEMORY_BYTES

        budget = IN_MEMORY_BYTES
    values = program.run({program.input: tf.constant(image[None], tf.float32)},
                         range(len(program.steps)))
    per_image = sum(int(np.prod(v.shape)) * 4 for v in values.values()
                    if hasattr(v, "shape") and None not in tuple(v.shape))
    return int(max(1, min(batch_size, budget // max(1, BACKWARD_FACTOR * per_image))))


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
        sites: the sites of the ranked layers (their `swap_key` is differentiated).
        data: the ranking images.
        batch_size: images per forward/backward pass, at most; fewer when a
            batch would not fit in memory (`memory_batch_size`).
        progbar: a progress bar counting images, or None.

    Returns:
        `{layer_name: priorities}`, one float per filter.
    """
    keys = [site.swap_key for site in sites]
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
            d = watched[site.swap_key]
            delta_loss = tf.cast((c - d), tf.float32) * tf.cast(g, tf.float32)
            channel = site.channel_axis % len(d.shape)
            axes = [a for a in range(len(d.shape)) if a != channel]
            sums.append(-tf.reduce_sum(delta_loss, axis=axes))
        return sums

    batch_size = memory_batch_size(program, data.clean[0], batch_size)
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



"""TENT: test-time adaptation by entropy minimisation, finished as a fixed model.

Wang et al. 2021 ("Tent: fully test-time adaptation by entropy minimization",
https://arxiv.org/abs/2006.10726) adapt a classifier to distorted photos
without labels: the batch norms normalise with each batch's own statistics,
and only their scale and shift (gamma, beta) train, to minimise the mean
entropy of the predictions. The paper uses Adam at learning rate 1e-3 (batch
128) or SGD with momentum 0.9 (batch 64); it degrades when run too long, so
`tent` runs one epoch by default, and `steps` caps it further.

Keras 3 runs a batch norm in training mode only when it is trainable. `tent`
does not go through `fit`: a custom step runs the model's graph call by call,
with the batch norms (and the layers holding some, such as correction units)
called with `training=True` and made trainable, and every other layer called
with `training=False` (no dropout), and it differentiates the entropy with
respect to the gammas and betas alone. Every other weight stays bit for bit
as it was.

What comes back is a fixed model for inference and TF Serving: after training,
the batch norms' moving statistics are re-estimated exactly on the adaptation
images with the final gammas and betas (as `adapt_batch_norm` does), so in
inference mode the model normalises with the statistics it was adapted with,
its outputs do not depend on the batch, and it saves, loads and exports like
any other model. The layers keep the `trainable` flags of the input model.

Folded batch norms (identity statistics) cannot run in training mode without
wrecking the network: pass clean photos as `source_images`, and each layer is
first re-expressed with its clean-input statistics (the same function; see
`deepcorrect.adaptation`), so that batch statistics of distorted photos map
them to the outputs clean photos had. Without them such a model is refused.

Example:

```python
import deepcorrect, distort

noisy = distort.awgn(photos, 20.0, seed=0)
adapted = deepcorrect.tent(model, noisy, steps=20, batch_size=64, seed=0)
```
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from deepcorrect.adaptation import (
    ImageBatches,
    prepare,
    reestimate,
)
from deepcorrect.batch_norm_program import BatchNormProgram
from robustkit.seeds import check_seed
from robustkit.training_checks import check_count, check_rate

# Optimizers of the paper: Adam, or SGD with momentum 0.9.
OPTIMIZERS = ("adam", "sgd")


def mean_entropy(outputs: Any, from_logits: bool) -> tf.Tensor:
    """Mean Shannon entropy (nats) of a batch of predictions.

    Args:
        outputs: `[N, classes]` logits or probabilities.
        from_logits: whether `outputs` are logits.

    Returns:
        A scalar tensor.

    Example:

    >>> round(float(mean_entropy(np.log([[0.5, 0.5]]), from_logits=True)), 4)
    0.6931
    """
    outputs = tf.cast(outputs, tf.float32)
    if from_logits:
        log_p = tf.nn.log_softmax(outputs, axis=-1)
    else:
        log_p = tf.math.log(tf.maximum(outputs, 1e-12))
    return -tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1))


def outputs_logits(program: BatchNormProgram) -> bool:
    """Whether the program's model outputs logits (no softmax on the last layer).

    The last layer called is looked at, inside nested models too.

    Example:

    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization(),
    ...                       keras.layers.Dense(3, activation="softmax")])
    >>> outputs_logits(BatchNormProgram(m))
    False
    """
    last = program.calls[program.producer[program.output_key]].operation
    if isinstance(last, keras.layers.Softmax):
        return False
    config = last.get_config() if isinstance(last, keras.layers.Layer) else {}
    return config.get("activation") != "softmax"


def affine_weights(program: BatchNormProgram) -> list:
    """The scale (gamma) and shift (beta) variables of every batch norm, in graph order.

    Example:

    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization(name="bn")])
    >>> [w.path.split("/", 1)[1] for w in affine_weights(BatchNormProgram(m))]
    ['bn/gamma', 'bn/beta']
    """
    weights = []
    for site in program.sites:
        weights += [w for w in (site.layer.gamma, site.layer.beta) if w is not None]
    return weights


def epoch_order(count: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The image indices of each batch of one epoch, a function of `(seed, epoch)`.

    A shuffled order cut into full batches (the remainder is left out; with
    fewer images than `batch_size`, one batch of all of them).

    Example:

    >>> [len(b) for b in epoch_order(10, 4, seed=0, epoch=0)]
    [4, 4]
    """
    order = np.random.default_rng([seed, epoch]).permutation(count)
    size = min(batch_size, count)
    return [order[i:i + size] for i in range(0, count - size + 1, size)]


def tent(model: keras.Model, images, *, source_images=None, epochs: int = 1,
         steps: int | None = None, learning_rate: float = 1e-3, batch_size: int = 64,
         seed: int = 0, preprocess=None, verbose: int = 0, optimizer: str = "adam",
         from_logits: bool | None = None, check_folded: bool = True) -> keras.Model:
    """TENT: a copy of `model` whose batch-norm scales and shifts minimise prediction entropy.

    Args:
        model: a Functional or Sequential classifier with one input, one output
            and at least one batch norm (nested models and the correction units
            of `deepcorrect.wrap` included). Not modified.
        images: the unlabeled (distorted) photos `[N, H, W, C]`: uint8 or float
            on 0..255 with `preprocess`, or whatever the model takes.
        source_images: clean photos; required for a model with folded
            (identity) batch norms, see the module docstring. Defaults to None.
        epochs: passes over `images`. Defaults to 1 (TENT degrades when run
            long).
        steps: at most this many update steps in all. Defaults to None (every
            batch of every epoch).
        learning_rate: a finite number > 0. Defaults to 1e-3 (the paper's, for
            batches of 64-128).
        batch_size: images per step: the batch whose statistics the batch
            norms use. Defaults to 64. Each epoch uses the full batches of a
            shuffled order; fewer images than this make one batch.
        seed: seed of the shuffling, an integer in [0, 2**31 - 1]: the same seed
            gives the same weights, byte for byte. Defaults to 0.
        preprocess: maps the float32 images to the model's input: a function,
            a `robustkit.preprocessing` mode or family name, or None.
        verbose: 1 shows a progress bar with the entropy. Defaults to 0.
        optimizer: `"adam"` (the default) or `"sgd"` (momentum 0.9).
        from_logits: whether the model outputs logits. Defaults to None:
            logits unless its last layer ends in a softmax.
        check_folded: refuse folded batch norms without `source_images`.
            Defaults to True.

    Returns:
        The adapted copy, for inference: batch norms hold the exact statistics
        of `images` under the trained gammas and betas; `trainable` flags as in
        `model`.

    Raises:
        TypeError: for a model that is not Functional or Sequential, a
            non-integer seed, a non-numeric learning rate or images.
        ValueError: for a model without batch norm (or without any gamma or
            beta), with folded batch norms and no `source_images`; for empty or
            misshapen images, `epochs`, `steps` or `batch_size` below 1, a
            learning rate that is not a finite number > 0, or an unknown
            optimizer.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3)(inputs)
    >>> x = keras.layers.BatchNormalization()(x)
    >>> outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> images = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3))
    >>> adapted = tent(model, images, batch_size=8, check_folded=False)
    >>> len(adapted.weights) == len(model.weights)
    True
    """
    epochs = check_count("epochs", epochs)
    if steps is not None:
        steps = check_count("steps", steps)
    learning_rate = check_rate("learning_rate", learning_rate)
    seed = check_seed(seed)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}. Received: "
                         f"optimizer={optimizer!r}")
    if from_logits not in (None, True, False):
        raise ValueError(f"from_logits must be None, True or False. Received: "
                         f"from_logits={from_logits!r}")
    if keras.backend.backend() != "tensorflow":
        raise ValueError("tent needs the TensorFlow backend of Keras.")
    program, batches = prepare(model, images, source_images, batch_size, preprocess,
                               check_folded, verbose)
    affine = affine_weights(program)
    if not affine:
        raise ValueError(f"model {model.name!r} has batch norms without scale or shift "
                         "(scale=False, center=False): TENT has nothing to train.")
    logits = outputs_logits(program) if from_logits is None else from_logits
    flags = [site.layer.trainable for site in program.sites]
    for site in program.sites:
        site.layer.trainable = True  # Keras 3 uses batch statistics only in a trainable BN
    try:
        _train(program, affine, batches, epochs, steps, learning_rate, seed, optimizer,
               logits, verbose)
    finally:
        for site, flag in zip(program.sites, flags):
            site.layer.trainable = flag
    reestimate(program, batches, None, verbose)
    return program.model


def _train(program: BatchNormProgram, affine: list, batches: ImageBatches, epochs: int,
           steps: int | None, learning_rate: float, seed: int, optimizer: str,
           logits: bool, verbose: int) -> None:
    """The entropy-minimisation steps, on the gammas and betas only."""
    if optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate)
    else:
        opt = keras.optimizers.SGD(learning_rate, momentum=0.9)
    opt.build(affine)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch([w.value for w in affine])
            loss = mean_entropy(program.forward(x, batch_norm_training=True), logits)
        grads = tape.gradient(loss, [w.value for w in affine])
        opt.apply(grads, affine)
        return loss

    per_epoch = len(epoch_order(len(batches), batches.batch_size, seed, 0))
    total = epochs * per_epoch if steps is None else min(steps, epochs * per_epoch)
    bar = keras.utils.Progbar(total, verbose=1 if verbose else 0, unit_name="step",
                              stateful_metrics=["entropy"])
    done = 0
    for epoch in range(epochs):
        for index in epoch_order(len(batches), batches.batch_size, seed, epoch):
            if done == total:
                return
            loss = step(batches.take(index))
            done += 1
            bar.update(done, [("entropy", float(loss))])

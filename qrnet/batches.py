"""Algorithm 1's batches: clean images beside distorted copies of the same images.

Takagi et al., IEEE Access 2019, Algorithm 1: each training batch holds `batch_size // 2`
clean images and a distorted copy of each, the distortion type and level drawn at random per
batch (`paired_batches`); pre-training uses clean images alone (`clean_batches`). Batches are
deterministic under a seed, and with `epochs` each epoch's batches depend on `(seed, epoch)`
alone (see `distort.pipeline.epoch_batches`), so a resumed run sees the same batches.

`distort.pipeline.restoration_dataset` distorts half of a batch of distinct images, one level
per image; these batches pair every image with its own distorted copy, one `(name, level)`
per batch, as the paper does.

Example:

>>> import numpy as np
>>> ds = paired_batches(np.zeros((8, 4, 4, 3), "uint8"), np.arange(8), {"awgn": [10.0]},
...                     batch_size=4)
>>> [tuple(x.shape) for x, (clean, labels) in ds]
[(4, 4, 4, 3), (4, 4, 4, 3), (4, 4, 4, 3), (4, 4, 4, 3)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from distort import registry
from distort.pipeline import epoch_batches
from distort.spec import Distortion, DistortionSpec, entries
from robustkit.training_checks import check_count

__all__ = [
    "DistortFn",
    "check_batch_size",
    "check_images",
    "clean_batches",
    "paired_batches",
    "resolve_distortions",
]

DistortFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def resolve_distortions(
    distortions: DistortFn | DistortionSpec,
    apply_fn: Callable[..., Any] | None = None,
) -> DistortFn:
    """Turns a distortion specification into `distort_fn(images, seed) -> images`.

    Args:
        distortions: a callable `distort_fn(images, seed)` (the escape hatch, returned
            unchanged), or what `distort.as_distortions` reads: `{name: levels}`,
            `[(name, levels), ...]`, a `distort.Distortion` or a list of them. Each call then
            draws one `(distortion, level)` pair uniformly from `seed`, over every level of
            every distortion in the given order, and applies it to the whole batch with
            `apply_fn(images, name, level, seed=..., **options)`.
        apply_fn: the distortion function; defaults to `distort.apply`. With one, names
            outside `distort.names()` are allowed (and their levels not checked).

    Returns:
        A function of a float32 NHWC batch on 0..255 and a stateless seed (int64, shape
        `[2]`) that works inside `tf.data` and `tf.function`.

    Raises:
        ValueError: for no level at all, or (without `apply_fn`) an unknown name, and for a
            level outside its distortion's range.

    Example:

    >>> def shift(images, name, level, seed=None):
    ...     return images + level
    >>> fn = resolve_distortions({"shift": [1.0, 2.0]}, apply_fn=shift)
    >>> out = fn(tf.zeros([1, 2, 2, 3]), tf.constant([0, 1], tf.int64))
    >>> float(out[0, 0, 0, 0]) in (1.0, 2.0)
    True
    """
    if callable(distortions) and not isinstance(distortions, Distortion):
        return distortions
    choices = []
    for name, levels, options in entries(distortions):
        # Check names and levels now, not inside tf.data: a custom apply_fn may add names.
        if apply_fn is None or name in registry.names():
            levels = Distortion(name, levels, options).levels
        choices += [(name, level, options) for level in levels]
    if not choices:
        raise ValueError(f"distortions must name at least one level. Received: {distortions}")
    apply_fn = apply_fn or registry.apply

    def distort_fn(images, seed):
        seed = tf.cast(seed, tf.int64)
        pick = tf.random.stateless_uniform([], seed, 0, len(choices), dtype=tf.int32)
        branch_seed = tf.random.stateless_uniform([2], seed + [0, 1], 0, 2**31 - 1, tf.int64)

        def branch(name, level, options):
            def run():
                return tf.cast(apply_fn(images, name, level, seed=branch_seed, **options),
                               tf.float32)

            return run

        out = tf.switch_case(pick, [branch(*choice) for choice in choices])
        return tf.ensure_shape(out, images.shape)

    return distort_fn


def check_images(images, restorer: keras.Model | None = None, labels=None,
                 single_ok: bool = True) -> np.ndarray:
    """Returns `images` as an array (dtype kept) after checking its shape and values.

    Args:
        images: a batch `(n, h, w, c)`, or one image `(h, w, c)` when `single_ok`, on 0..255.
        restorer: the model the images are for; their channels must match its input.
            Defaults to None (any channel count).
        labels: labels that must match the images in length. Defaults to None.
        single_ok: accept one image of rank 3. Defaults to True.

    Returns:
        The images as a NumPy array, dtype kept.

    Raises:
        TypeError: For images that are not numbers.
        ValueError: For a rank other than 3 or 4 (4 unless `single_ok`), a channel count other than the
            restorer's input, non-finite pixels, or labels of another length.

    Example:

    >>> check_images(np.zeros((2, 4, 4, 3), "uint8"), labels=[0, 1]).shape
    (2, 4, 4, 3)
    """
    array = np.asarray(images)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"images must be numbers on 0..255. Received dtype: {array.dtype}")
    if array.ndim not in ((3, 4) if single_ok else (4,)):
        shapes = "(n, h, w, c) or (h, w, c)" if single_ok else "(n, h, w, c)"
        raise ValueError(f"images must have shape {shapes}. Received: {array.shape}")
    channels = None if restorer is None else restorer.input_shape[-1]
    if channels is not None and array.shape[-1] != channels:
        raise ValueError(f"images must have {channels} channels (the restorer's input). "
                         f"Received shape: {array.shape}")
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        raise ValueError("images must be finite (no NaN or inf pixels)")
    if labels is not None and len(labels) != len(array):
        raise ValueError(f"images and labels must have the same length. "
                         f"Received: {len(array)} images and {len(labels)} labels")
    return array


def check_batch_size(batch_size: int, even: bool) -> None:
    """Raises unless `batch_size` is an integer >= 1, or an even one >= 2 when `even`.

    Args:
        batch_size: the batch size to check.
        even: require an even size >= 2 (half clean, half distorted).

    Raises:
        TypeError, ValueError: naming the argument and the value received.

    Example:

    >>> check_batch_size(4, even=True)
    """
    check_count("batch_size", batch_size, low=2 if even else 1)
    if even and batch_size % 2:
        raise ValueError(f"batch_size must be an even integer >= 2. Received: batch_size={batch_size}")


def _seeded_batches(images, labels, batch_size: int, seed: int, shuffle: bool,
                    epochs: int | None, initial_epoch: int, steps_per_epoch: int | None):
    """`(batch_seed, (images, labels))` batches: one pass, or epochs indexed by number."""
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(len(images), -1)[:, 0].astype("int32")
    if epochs is not None:
        return epoch_batches(images, labels, batch_size=batch_size, seed=seed, shuffle=shuffle,
                             epochs=epochs, initial_epoch=initial_epoch,
                             steps_per_epoch=steps_per_epoch)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=shuffle).batch(2)
    return tf.data.Dataset.zip((seeds, dataset.batch(batch_size)))


def paired_batches(
    images,
    labels,
    distortions: DistortFn | DistortionSpec,
    batch_size: int = 32,
    seed: int = 0,
    shuffle: bool = True,
    apply_fn: Callable[..., Any] | None = None,
    epochs: int | None = None,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
) -> tf.data.Dataset:
    """Batches of Algorithm 1: half clean images, half distorted copies of the same images.

    Each batch takes `batch_size // 2` images, distorts them with one distortion type and
    level drawn at random for the batch, and concatenates clean and distorted images.

    Args:
        images: array `(n, h, w, c)` on 0..255 (uint8 or float).
        labels: integer labels `(n,)`.
        distortions: see `resolve_distortions`.
        batch_size: even number of images per batch. Defaults to 32.
        seed: seed of the shuffling and the distortion draws. With `shuffle=True` each
            epoch draws new orders and distortions (deterministically from `seed`); with
            `shuffle=False` every pass yields the same batches (use it for validation).
        shuffle: shuffle the images each epoch. Defaults to True.
        apply_fn: see `resolve_distortions`.
        epochs: for resumable training: hold epochs `initial_epoch .. epochs - 1` back to
            back, epoch `e`'s order and distortions a function of `(seed, e)` alone (see
            `distort.pipeline.epoch_batches`). Defaults to None (one pass per iteration,
            whose order and draws also depend on TensorFlow's global seed,
            `tf.random.set_seed`; pass `epochs` for batches that depend on `seed` alone).
        initial_epoch: the first epoch held, with `epochs`. Defaults to 0.
        steps_per_epoch: optional cap on batches per epoch, with `epochs`.

    Returns:
        A `tf.data.Dataset` of `(inputs, (clean_targets, labels))`, inputs float32 0..255.

    Example:

    >>> ds = paired_batches(np.zeros((8, 4, 4, 3), "uint8"), np.arange(8),
    ...                     lambda x, seed: x + 255.0, batch_size=4)
    >>> x, (clean, y) = next(iter(ds))
    >>> x.shape, float(x[0].numpy().max()), float(x[2].numpy().min())
    (TensorShape([4, 4, 4, 3]), 0.0, 255.0)
    """
    check_batch_size(batch_size, even=True)
    distort_fn = resolve_distortions(distortions, apply_fn)
    dataset = _seeded_batches(images, labels, batch_size // 2, seed, shuffle, epochs,
                              initial_epoch, steps_per_epoch)

    def pair(batch_seed, batch):
        clean_images, batch_labels = batch
        clean_images = tf.cast(clean_images, tf.float32)
        distorted = distort_fn(clean_images, batch_seed)
        inputs = tf.concat([clean_images, distorted], axis=0)
        targets = tf.concat([clean_images, clean_images], axis=0)
        return inputs, (targets, tf.concat([batch_labels, batch_labels], axis=0))

    dataset = dataset.map(pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def clean_batches(
    images, labels, batch_size: int = 32, seed: int = 0, shuffle: bool = True,
    epochs: int | None = None, initial_epoch: int = 0, steps_per_epoch: int | None = None,
) -> tf.data.Dataset:
    """Batches of clean images as `(images, (images, labels))`, for pre-training.

    Args:
        images: array `(n, h, w, c)` on 0..255.
        labels: integer labels `(n,)`.
        batch_size: images per batch. Defaults to 32.
        seed: shuffling seed. Defaults to 0.
        shuffle: shuffle each epoch. Defaults to True.
        epochs, initial_epoch, steps_per_epoch: as for `paired_batches`.

    Returns:
        A `tf.data.Dataset`.

    Example:

    >>> ds = clean_batches(np.zeros((5, 4, 4, 3), "uint8"), np.arange(5), batch_size=2)
    >>> len(list(ds))
    3
    """
    check_batch_size(batch_size, even=False)
    dataset = _seeded_batches(images, labels, batch_size, seed, shuffle, epochs, initial_epoch,
                              steps_per_epoch)

    def to_pair(batch_seed, batch):
        batch_images, batch_labels = batch
        batch_images = tf.cast(batch_images, tf.float32)
        return batch_images, (batch_images, batch_labels)

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True).prefetch(tf.data.AUTOTUNE)

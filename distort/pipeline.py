"""`tf.data` pipelines that distort images on the fly.

Three builders cover the papers' uses:

- `training_dataset`: batches where a fraction of the images (half by
  default, as DeepCorrect and QRNet do) is distorted at a per-image random
  level, for fine-tuning classifiers or correction units.
- `restoration_dataset`: `(distorted, (clean, label))` pairs for training a
  restorer such as QRNet, half of every batch left clean.
- `evaluation_datasets`: one dataset per level, for sweeps.

Every builder takes its distortion as `distort.as_distortions` reads it (a
name with `levels`, a `distort.Distortion`, a dict name -> levels, or a list),
maps whole batches, prefetches, and is deterministic under its `seed` (the
seed of batch `b` is `[seed, b]`).

Example:

>>> import numpy as np
>>> images = np.zeros([8, 32, 32, 3], np.uint8); labels = np.arange(8)
>>> ds = training_dataset(images, labels, "awgn", [10, 20], batch_size=4, seed=0)
>>> [tuple(x.shape) for x, y in ds]
[(4, 32, 32, 3), (4, 32, 32, 3)]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from distort import registry
from distort.spec import Distortion, DistortionSpec, as_distortions
from robustkit.seeds import check_seed

SAMPLINGS = ("choice", "uniform")


def _as_dataset(images, labels=None) -> tf.data.Dataset:
    """Returns `images` (and `labels`) as a dataset of unbatched elements.

    Args:
        images: A `tf.data.Dataset`, or an array `[N, H, W, C]` with 1 or 3 channels.
        labels: Optional labels `[N]` for an array.

    Returns:
        The dataset.

    Raises:
        ValueError: For an empty array, a wrong rank or channel count, or
            labels of another length.
    """
    if isinstance(images, tf.data.Dataset):
        return images
    _check_images(images, labels)
    if labels is None:
        return tf.data.Dataset.from_tensor_slices(images)
    return tf.data.Dataset.from_tensor_slices((images, labels))


def _check_images(images, labels=None) -> None:
    """Raises unless `images` is a non-empty `[N, H, W, C]` batch (C 1 or 3) matching `labels`."""
    shape = tuple(np.shape(images))
    if len(shape) != 4 or shape[-1] not in (1, 3) or 0 in shape:
        raise ValueError("images must be a non-empty batch [N, H, W, C] with 1 or 3 channels. "
                         f"Received shape: {shape}")
    if labels is not None and len(images) != len(labels):
        raise ValueError(f"images and labels must have the same length. "
                         f"Received: {len(images)} images and {len(labels)} labels")


def check_sampled_levels(name: str, levels: Sequence[float], sampling: str) -> np.ndarray:
    """Validates a distortion name, a sampling mode and the levels to draw from.

    Args:
        name: A distortion name (see `distort.registry.names`).
        levels: The levels, each finite and inside `registry.level_range(name)`.
        sampling: One of `SAMPLINGS`.

    Returns:
        The levels as a float32 vector.

    Raises:
        ValueError: For an unknown name or sampling, no levels, or a level
            outside the distortion's range.
        TypeError: For a level that is not a number.

    Example:

    >>> check_sampled_levels("awgn", [10, 20], "choice").tolist()
    [10.0, 20.0]
    """
    registry.check_name(name)
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}. Received: sampling={sampling!r}")
    levels = Distortion(name, levels).levels
    if not levels:
        raise ValueError("levels must hold at least one level. Received: levels=[]")
    if sampling == "uniform" and len(levels) != 2:
        raise ValueError(
            f"levels must be (low, high) with sampling='uniform'. Received: levels={list(levels)}")
    return np.asarray(levels, np.float32)


def _sampled_distortions(distortion: DistortionSpec, levels=None, sampling: str = "choice",
                        options: dict | None = None) -> list[tuple[Distortion, np.ndarray]]:
    """The distortions one is drawn from per batch, by name, each with its level table.

    Args:
        distortion: A name (with `levels`), a `distort.Distortion`, a dict
            name -> levels, or a list of those (see `distort.as_distortions`);
            each name at most once.
        levels: The levels of a name given alone. Defaults to None.
        sampling: "choice" or "uniform" (each table is then `(low, high)`).
        options: Options added to every distortion. Defaults to None.

    Returns:
        `(distortion, levels as float32)` pairs, sorted by name.

    Raises:
        ValueError: For a name given twice, or what `check_sampled_levels`
            refuses.

    Example:

    >>> [(d.name, t.tolist()) for d, t in _sampled_distortions({"jpeg": [10], "awgn": [5]})]
    [('awgn', [5.0]), ('jpeg', [10.0])]
    """
    found = sorted(as_distortions(distortion, levels, options), key=lambda d: d.name)
    names = [d.name for d in found]
    if len(set(names)) != len(names):
        raise ValueError(f"distortion must name each distortion once. Received: {names}")
    return [(d, check_sampled_levels(d.name, d.levels, sampling)) for d in found]


def random_levels(levels, n, seed: tf.Tensor, sampling: str = "choice") -> tf.Tensor:
    """Draws `n` per-image levels from a list ("choice") or a range ("uniform")."""
    levels = tf.constant(levels, tf.float32)
    if sampling == "uniform":
        return tf.random.stateless_uniform([n], seed, levels[0], levels[1])
    index = tf.random.stateless_uniform([n], seed, 0, tf.shape(levels)[0], dtype=tf.int32)
    return tf.gather(levels, index)


def distort_batch(images: tf.Tensor, distortions: DistortionSpec, seed: tf.Tensor,
                  fraction: float = 0.5, sampling: str = "choice", **options) -> tf.Tensor:
    """Distorts the last `round(fraction * N)` images of a batch.

    One distortion is drawn for the whole batch from `distortions` (QRNet's
    Algorithm 1 draws the type per batch), then one level per image.

    Args:
        images: A batch, uint8 or float on 0..255.
        distortions: The distortions and their levels, each name at most
            once: a dict name -> levels, a `distort.Distortion` or a list (see
            `distort.as_distortions`).
        seed: A stateless seed of shape [2].
        fraction: Fraction of the batch to distort, in [0, 1].
        sampling: "choice" (levels is a list) or "uniform" (levels is a range).
        **options: Options passed to every distortion (e.g. `window=`).

    Returns:
        The batch, its last images distorted, same dtype.

    Example:

    >>> x = tf.zeros([4, 8, 8, 3], tf.uint8)
    >>> out = distort_batch(x, {"awgn": [20.0]}, tf.constant([0, 1], tf.int64))
    >>> bool(tf.reduce_all(out[:2] == 0)), bool(tf.reduce_any(out[2:] != 0))
    (True, True)
    """
    n = tf.shape(images)[0]
    k = tf.cast(tf.round(fraction * tf.cast(n, tf.float32)), tf.int32)
    clean, dirty = images[: n - k], images[n - k :]
    tables = _sampled_distortions(distortions, sampling=sampling, options=options)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)

    def branch(distortion, table):
        def fn():
            lv = random_levels(table, k, seeds[1], sampling)
            if distortion.name == "camera_shake":
                return distortion(dirty, 1, seed=seeds[2])
            if distortion.name == "combined":
                return distortion(dirty, float(table[-1]), seed=seeds[2])
            return distortion(dirty, lv, seed=seeds[2])
        return fn

    if len(tables) == 1:
        out = branch(*tables[0])()
    else:
        which = tf.random.stateless_uniform([], seeds[0], 0, len(tables), dtype=tf.int32)
        out = tf.switch_case(which, [branch(*pair) for pair in tables])
    return tf.concat([clean, tf.cast(out, images.dtype)], axis=0)


def training_dataset(images, labels=None, distortion: DistortionSpec = "gaussian_blur",
                     levels=None, *,
                     fraction: float = 0.5, batch_size: int = 32, seed: int = 0,
                     shuffle: bool = True, repeat: bool = False, sampling: str = "choice",
                     epochs: int | None = None, initial_epoch: int = 0,
                     steps_per_epoch: int | None = None, augment: bool = False,
                     **options) -> tf.data.Dataset:
    """Batches of `(images, labels)` with a fraction distorted at random levels.

    Args:
        images: uint8/float images `[N, H, W, C]`, or a `tf.data.Dataset` of
            unbatched `(image, label)` pairs.
        labels: Labels `[N]` when `images` is an array.
        distortion: A distortion name, a `distort.Distortion`, a dict name
            -> levels, or a list of those (see `distort.as_distortions`);
            with several, one is drawn per batch.
        levels: Levels to draw from (a list), or `(low, high)` with
            `sampling="uniform"`, for a name (or a `Distortion` without
            levels); None when the distortion carries its levels.
        fraction: Fraction of every batch that is distorted (0.5 by default).
        batch_size: Batch size, >= 1.
        seed: Seed of the shuffling, the choice of distortion and levels, and
            random distortions.
        shuffle: Shuffle the images (with `seed`) before batching.
        repeat: Repeat forever (then pass `steps_per_epoch` to `fit`).
        sampling: "choice" or "uniform".
        epochs: For resumable training: hold the batches of epochs
            `initial_epoch .. epochs - 1` back to back, each epoch's order and
            distortions a function of `(seed, epoch)` alone (see
            `epoch_batches`). Needs array images. Default None: one pass,
            reshuffled (from `seed`) each time it is iterated; that order also
            depends on TensorFlow's global seed (`tf.random.set_seed`), so
            pass `epochs` for batches that depend on `seed` alone.
        initial_epoch: The first epoch held, with `epochs`.
        steps_per_epoch: Optional cap on batches per epoch, with `epochs`.
        augment: Flip and shift every image at random before it is distorted
            (`augment_batch`, seeded from the batch's seed), for small
            training sets. Default False: the images as they are.
        **options: Passed to the distortion (e.g. `window="4sigma-1"`).

    Returns:
        A prefetched `tf.data.Dataset` of `(images, labels)` batches, the
        distorted images last in every batch.
    """
    def element(clean, distorted, y):
        return (distorted, y) if y is not None else distorted

    return _distorted_batches(images, labels, distortion, levels, element, fraction=fraction,
                              batch_size=batch_size, seed=seed, shuffle=shuffle, repeat=repeat,
                              sampling=sampling, options=options, epochs=epochs,
                              initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                              augment=augment)


# Folded into a batch's seed for its augmentation, so that its draws are not the distortion's.
AUGMENT_SALT = 0x61756720


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random horizontal flips and shifts, drawn per image (stateless).

    Each image is flipped left-right with probability 1/2, then shifted by a
    whole number of pixels drawn uniformly in `[-s, s]` along each axis, where
    `s` is an eighth of the image's side (4 pixels on CIFAR-10, 28 at 224), the
    borders filled by reflection: the flips and crops of CIFAR and ImageNet
    training, with nothing resized.

    Args:
        images: `[N, H, W, C]` images, any dtype (kept).
        seed: a stateless seed of shape [2]; the same seed gives the same draws.

    Returns:
        The augmented images, same shape and dtype.

    Example:

    >>> x = tf.reshape(tf.range(2 * 8 * 8 * 1), [2, 8, 8, 1])
    >>> augment_batch(x, tf.constant([0, 1])).shape
    TensorShape([2, 8, 8, 1])
    """
    images = tf.convert_to_tensor(images)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    n, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    flip = tf.random.stateless_uniform([n], seeds[0]) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)
    sy, sx = max(1, h // 8), max(1, w // 8)
    dy = tf.random.stateless_uniform([n, 1], seeds[1], 0, 2 * sy + 1, tf.int32)
    dx = tf.random.stateless_uniform([n, 1], seeds[2], 0, 2 * sx + 1, tf.int32)
    padded = tf.pad(images, [[0, 0], [sy, sy], [sx, sx], [0, 0]], mode="REFLECT")
    rows = dy + tf.range(h)[None]
    cols = dx + tf.range(w)[None]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, cols, axis=2, batch_dims=1)


def _distorted_batches(images, labels, distortion, levels, element, *, fraction, batch_size,
                       seed, shuffle, repeat, sampling, options, dtype=None, epochs=None,
                       initial_epoch=0, steps_per_epoch=None, augment=False) -> tf.data.Dataset:
    """Shuffles, batches and distorts; `element(clean, distorted, labels)` shapes each batch."""
    seed = check_seed(seed)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1]. Received: fraction={fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    distortions = [d for d, _ in _sampled_distortions(distortion, levels, sampling, options)]
    if epochs is not None:
        if repeat:
            raise ValueError("repeat must be False when epochs is given")
        if not isinstance(images, tf.data.Dataset):
            _check_images(images, labels)
        batches = epoch_batches(images, labels, batch_size=batch_size, seed=seed,
                                shuffle=shuffle, epochs=epochs, initial_epoch=initial_epoch,
                                steps_per_epoch=steps_per_epoch)
    else:
        ds = _as_dataset(images, labels)
        if shuffle:
            ds = ds.shuffle(_cardinality_or(ds, 10_000), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        batches = ds.batch(batch_size).enumerate().map(
            lambda step, batch: (tf.stack([tf.constant(seed, tf.int64), step]), batch))

    def map_batch(batch_seed, batch):
        x, y = batch if isinstance(batch, tuple) else (batch, None)
        if dtype is not None:
            x = tf.cast(x, dtype)
        if augment:
            x = augment_batch(x, tf.random.experimental.stateless_fold_in(
                tf.cast(batch_seed, tf.int64), AUGMENT_SALT))
        distorted = distort_batch(x, distortions, batch_seed, fraction, sampling)
        return element(x, distorted, y)

    return batches.map(map_batch, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True).prefetch(tf.data.AUTOTUNE)


def epoch_steps(n: int, batch_size: int, cap: int | None = None) -> int:
    """Batches in one epoch of `n` images: `ceil(n / batch_size)`, at most `cap`.

    >>> epoch_steps(100, 32), epoch_steps(100, 32, cap=2)
    (4, 2)
    """
    steps = -(-int(n) // int(batch_size))
    return steps if cap is None else max(1, min(steps, int(cap)))


def epoch_batches(images, labels=None, *, batch_size: int, seed: int = 0, shuffle: bool = True,
                  epochs: int, initial_epoch: int = 0,
                  steps_per_epoch: int | None = None) -> tf.data.Dataset:
    """Batches of epochs `initial_epoch .. epochs - 1`, each a function of `(seed, epoch)` alone.

    Epoch `e` visits the images in the order of a stateless permutation seeded
    with `[seed, e]` (the input order with `shuffle=False`), in batches of
    `batch_size` (the last one smaller), at most `steps_per_epoch` of them.
    Every batch comes with its own stateless seed, folded from `[seed, e]` and
    the batch's index in the epoch. Because nothing depends on how many times
    the dataset was iterated before, a training run resumed at epoch `k` (a
    new process, `initial_epoch=k`) sees exactly the batches that an
    uninterrupted run sees from epoch `k` on. Pass
    `steps_per_epoch=epoch_steps(len(images), batch_size, cap)` and
    `initial_epoch` to `fit`.

    Args:
        images: An array `[N, ...]`.
        labels: Optional array `[N, ...]`.
        batch_size: Images per batch, >= 1.
        seed: The seed of the permutations and of the batch seeds.
        shuffle: Permute the images each epoch.
        epochs: One past the last epoch held.
        initial_epoch: The first epoch held, in `[0, epochs]`.
        steps_per_epoch: Optional cap on batches per epoch.

    Returns:
        A `tf.data.Dataset` of `(batch_seed, images)` or `(batch_seed, (images,
        labels))`, `batch_seed` an int64 vector of 2.

    Example:

    >>> ds = epoch_batches(np.arange(5), batch_size=2, seed=0, epochs=2)
    >>> [len(x) for _, x in ds]
    [2, 2, 1, 2, 2, 1]
    >>> later = [x.numpy().tolist() for _, x in epoch_batches(np.arange(5), batch_size=2, epochs=2,
    ...                                                        initial_epoch=1)]
    >>> later == [x.numpy().tolist() for _, x in ds][3:]
    True
    """
    seed = check_seed(seed)
    if isinstance(images, tf.data.Dataset):
        raise TypeError("images must be an array (not a tf.data.Dataset) for epoch-indexed "
                        "batches")
    n = len(images)
    if labels is not None and len(labels) != n:
        raise ValueError(f"images and labels must have the same length. "
                         f"Received: {n} images and {len(labels)} labels")
    if n == 0:
        raise ValueError("images must not be empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    if not 0 <= initial_epoch <= epochs:
        raise ValueError(f"initial_epoch must be in [0, epochs={epochs}]. "
                         f"Received: initial_epoch={initial_epoch}")
    steps = epoch_steps(n, batch_size, steps_per_epoch)
    x = tf.convert_to_tensor(np.asarray(images))
    y = None if labels is None else tf.convert_to_tensor(np.asarray(labels))
    base = tf.constant(seed, tf.int64)

    def one_epoch(epoch):
        key = tf.stack([base, epoch])
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, key)

        def gather(step, index):
            batch_seed = tf.random.experimental.stateless_fold_in(key, step)
            batch = tf.gather(x, index) if y is None else (tf.gather(x, index), tf.gather(y, index))
            return batch_seed, batch

        return (tf.data.Dataset.from_tensor_slices(order).batch(batch_size).take(steps)
                .enumerate().map(gather))

    return tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)


def restoration_dataset(images, labels=None, distortion: DistortionSpec = "gaussian_blur",
                        levels=None, *,
                        fraction: float = 0.5, batch_size: int = 32, seed: int = 0,
                        shuffle: bool = True, repeat: bool = False, sampling: str = "choice",
                        epochs: int | None = None, initial_epoch: int = 0,
                        steps_per_epoch: int | None = None, augment: bool = False,
                        **options) -> tf.data.Dataset:
    """Batches of `(inputs, (targets, labels))` for training a restorer.

    `inputs` are the images with a fraction distorted (see
    `training_dataset`, which also describes `epochs`, `initial_epoch`,
    `steps_per_epoch` and `augment`); `targets` are the clean images (augmented
    as the inputs are). Without labels the
    batches are `(inputs, targets)`.

    Returns:
        A prefetched `tf.data.Dataset`; images are float32 on 0..255.

    Example:

    >>> from distort import Distortion
    >>> ds = restoration_dataset(np.zeros([4, 8, 8, 3], np.uint8), None,
    ...                          Distortion("awgn", [10, 20]), batch_size=4)
    >>> [tuple(t.shape) for t in next(iter(ds))]
    [(4, 8, 8, 3), (4, 8, 8, 3)]
    """
    def element(clean, distorted, y):
        return (distorted, (clean, y)) if y is not None else (distorted, clean)

    return _distorted_batches(images, labels, distortion, levels, element, fraction=fraction,
                              batch_size=batch_size, seed=seed, shuffle=shuffle, repeat=repeat,
                              sampling=sampling, options=options, dtype=tf.float32,
                              epochs=epochs, initial_epoch=initial_epoch,
                              steps_per_epoch=steps_per_epoch, augment=augment)


def evaluation_datasets(images, labels, distortion: DistortionSpec, levels=None, *,
                        batch_size: int = 64, seed: int = 0, include_clean: bool = True,
                        **options) -> dict[float, tf.data.Dataset]:
    """One dataset of `(distorted images, labels)` per level.

    Args:
        images: uint8/float images `[N, H, W, C]`.
        labels: Labels `[N]`.
        distortion: A distortion name, or one `distort.Distortion` (then
            `levels` may be None: its own levels are evaluated).
        levels: The levels to evaluate.
        batch_size: Batch size.
        seed: Seed of random distortions (batch `b` uses `[seed, b]`).
        include_clean: Add the undistorted images under the level `None`.
        **options: Passed to the distortion.

    Returns:
        A dict level -> dataset, in the order of `levels` (clean first).

    Example:

    >>> sets = evaluation_datasets(np.zeros([4, 8, 8, 3], np.uint8), np.arange(4), "jpeg", [10])
    >>> list(sets)
    [None, 10.0]
    """
    found = as_distortions(distortion, levels, options)
    if len(found) != 1:
        raise ValueError(f"distortion must be one distortion. Received: distortion={distortion!r}")
    spec = found[0]
    seed = check_seed(seed)
    out: dict = {}
    base = _as_dataset(images, labels).batch(batch_size)
    if include_clean:
        out[None] = base.prefetch(tf.data.AUTOTUNE)
    for level in spec.levels:
        def map_batch(step, batch, level=level):
            x, y = batch
            return spec(x, level, seed=tf.stack([tf.constant(seed, tf.int64), step])), y

        out[level] = base.enumerate().map(map_batch, num_parallel_calls=tf.data.AUTOTUNE,
                                          deterministic=True).prefetch(tf.data.AUTOTUNE)
    return out


def _cardinality_or(ds: tf.data.Dataset, default: int) -> int:
    n = int(ds.cardinality())
    return n if n > 0 else default

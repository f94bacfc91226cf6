"""Training QRNet for classifiers: the loss, the trainer and Algorithm 1 of the paper.

The trainer minimises (Takagi et al., IEEE Access 2019, Eq. 4 and 5)

    L1(x*, Q(x)) / 255 + sum_i lambda_i * CE(C_i(P_i(Q(x))), t)

where `Q` is the restorer, `x*` the clean image, `x` its distorted version, `C_i` the
classifiers (frozen), `P_i` each classifier's preprocessing and `t` the integer label. The
L1 term is the mean absolute error on the 0..1 scale (images are on 0..255 and divided by
255), the scale of the paper's sigmoid output for which lambda = 0.01 was chosen.

Named cases (the `mode` argument):

| mode | classifiers | lambdas | trains |
|---|---|---|---|
| `"recnet"` | any (monitored only) | all 0 | restorer |
| `"qrnet"` | exactly 1 | lambda (0.01) | restorer |
| `"mqrnet"` | 2 or more | one per classifier (0.01 each) | restorer |
| `"end_to_end"` | 1 or more | lambda (0.01) | restorer + each classifier's Dense head |

Algorithm 1 (`train`): optional pre-training on clean images, then batches holding equal
numbers of clean images and distorted copies of them, the distortion type and level drawn
at random per batch; Adam at 1e-3, batch 32, early stopping on validation loss with
patience 5, a checkpoint every epoch (atomic writes) and resume.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from robustkit import training_state
from robustkit.io import atomic_path
from distort.pipeline import epoch_steps
from robustkit.seeds import check_seed
from robustkit.training_checks import DivergenceGuard, check_count, check_rate, reseed_generators
from qrnet.model import ImagePreprocessing

__all__ = [
    "DEFAULT_TRAINING",
    "MODES",
    "ClassifierSpec",
    "QualityRecoveryTrainer",
    "TrainingCheckpoint",
    "clean_batches",
    "paired_batches",
    "resolve_distortions",
    "resolve_preprocessing",
    "restore",
    "train",
]

MODES = ("recnet", "qrnet", "mqrnet", "end_to_end")

# Defaults of Section IV-A of the paper.
DEFAULT_TRAINING: dict[str, Any] = {
    "lambda": 0.01,
    "learning_rate": 1e-3,
    "batch_size": 32,
    "epochs": 200,
    "patience": 5,
}

Preprocessing = Callable[[Any], Any] | keras.layers.Layer | str | None
DistortFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass
class ClassifierSpec:
    """A classifier in the loss, with its own input preprocessing and weight.

    Args:
        model: a built Keras classifier returning class probabilities (or logits).
        preprocessing: maps 0..255 RGB images to the classifier's input: a function (e.g.
            `keras.applications.vgg16.preprocess_input`), a layer, a mode name of
            `robustkit.preprocessing.ImagePreprocessing` (`"unit"`, `"tf"`, `"caffe"`, `"mobilenet_v2"`, ...) or None
            for classifiers that read 0..255 images. Defaults to None.
        weight: lambda_i, the weight of this classifier's cross-entropy. None takes the
            trainer's `lambdas`. Defaults to None.
        from_logits: whether the model outputs logits instead of probabilities.
            Defaults to False.
        name: name used in the logged metrics (`ce_<name>`, `acc_<name>`). Defaults to the
            model's name.
    """

    model: keras.Model
    preprocessing: Preprocessing = None
    weight: float | None = None
    from_logits: bool = False
    name: str | None = None


def resolve_preprocessing(preprocessing: Preprocessing) -> Callable[[Any], Any]:
    """The function that maps 0..255 RGB images to a classifier's input.

    Args:
        preprocessing: None (the identity, for classifiers that read 0..255 images), a mode
            or `keras.applications` family name of `robustkit.preprocessing` (`"unit"`, `"tf"`,
            `"caffe"`, `"mobilenet_v2"`, ...; returned as an `ImagePreprocessing` layer, which
            a SavedModel can track), a layer or a function (returned unchanged).

    Returns:
        A callable of a batch of float images.

    Raises:
        ValueError: an unknown mode name, naming the allowed ones.
        TypeError: anything else that is not callable.

    Example:

    >>> import numpy as np
    >>> prepare = resolve_preprocessing("tf")
    >>> np.asarray(prepare(np.array([[[[0.0, 127.5, 255.0]]]], "float32"))).tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """
    if preprocessing is None:
        return lambda images: images
    if isinstance(preprocessing, str):
        try:
            return ImagePreprocessing(preprocessing)
        except ValueError as e:
            raise ValueError(f"preprocessing: {e}") from None
    if not callable(preprocessing):
        raise TypeError(
            "preprocessing must be None, a mode name, a layer or a function. "
            f"Received: preprocessing={preprocessing!r}"
        )
    return preprocessing


def _as_list(value, count: int, argument: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"{argument} must have one entry per classifier ({count}). "
                f"Received: {argument}={value}"
            )
        return list(value)
    return [value] * count


def _unique_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def _head_layers(model: keras.Model, count: int) -> list[keras.layers.Layer]:
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) < count:
        raise ValueError(
            f"head_layers must be between 1 and the number of Dense layers of "
            f"{model.name!r} ({len(dense)}). Received: head_layers={count}"
        )
    return dense[-count:]


def _infer_mode(specs: Sequence[ClassifierSpec], lambdas) -> str:
    weights = [spec.weight for spec in specs]
    lambdas_zero = lambdas is not None and bool(np.all(np.asarray(lambdas, dtype=float) == 0))
    if not specs or lambdas_zero and all(w in (None, 0) for w in weights):
        return "recnet"
    return "qrnet" if len(specs) == 1 else "mqrnet"


def _split_targets(targets):
    if isinstance(targets, Mapping):
        return targets["clean"], targets["labels"]
    clean, labels = targets
    return clean, labels


class QualityRecoveryTrainer(keras.Model):
    """Trains a restorer with the QRNet loss against frozen classifiers.

    Data for `fit` / `evaluate` are `(images, (clean_images, labels))`, images on 0..255
    and integer labels (one-hot labels are reduced with argmax); `paired_batches` builds
    them. Calling the trainer restores images (it is the restorer at inference).

    The classifiers are always run with `training=False` (batch-norm statistics and dropout
    stay as trained). The trainer sets `trainable = False` on every classifier, and in
    `"end_to_end"` mode sets it back on the last `head_layers` Dense layers of each.

    The trainer is a training harness and is not saved itself: save `trainer.restorer`.

    Logged metrics: `loss` (the total), `l1`, and per classifier `ce_<name>` and
    `acc_<name>` (accuracy on restored images), for classifiers with lambda 0 too.

    Args:
        restorer: a Keras model from 0..255 images to 0..255 images (e.g. `qrnet.QRNet`).
        classifiers: a model, a `ClassifierSpec`, or a sequence of them. Defaults to none.
        lambdas: weight of each classifier's cross-entropy: a float for all or one per
            classifier; None means 0.01 (0 in `"recnet"` mode). A `ClassifierSpec.weight`
            takes precedence. Defaults to None.
        mode: one of `MODES`, or None to infer it from the classifiers and lambdas.
            Defaults to None.
        preprocessing: preprocessing of classifiers given as bare models (see
            `ClassifierSpec`): one for all or one per classifier. Defaults to None.
        head_layers: in `"end_to_end"` mode, the number of trailing Dense layers of each
            classifier that train (the paper trains VGG16's three). Defaults to 1.
        pixel_scale: the L1 term is divided by it. Defaults to 255.
        name: model name. Defaults to `"quality_recovery_trainer"`.

    Example:

    >>> import numpy as np, keras
    >>> from qrnet import build_qrnet
    >>> clf = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
    ...                         keras.layers.Dense(10, activation="softmax")], name="clf")
    >>> trainer = QualityRecoveryTrainer(build_qrnet(base_width=4, depth=2), clf,
    ...                                  preprocessing="unit")
    >>> trainer.compile(optimizer="adam")
    >>> x = np.random.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    >>> y = np.arange(4)
    >>> sorted(trainer.evaluate(x, (x, y), verbose=0, return_dict=True))
    ['acc_clf', 'ce_clf', 'l1', 'loss']
    """

    def __init__(
        self,
        restorer: keras.Model,
        classifiers: keras.Model | ClassifierSpec | Sequence = (),
        lambdas: float | Sequence[float] | None = None,
        mode: str | None = None,
        preprocessing: Preprocessing | Sequence[Preprocessing] = None,
        head_layers: int = 1,
        pixel_scale: float = 255.0,
        name: str = "quality_recovery_trainer",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if isinstance(classifiers, (keras.Model, ClassifierSpec)):
            classifiers = [classifiers]
        classifiers = list(classifiers)
        preprocessings = _as_list(preprocessing, len(classifiers), "preprocessing")
        specs = [
            c if isinstance(c, ClassifierSpec) else ClassifierSpec(c, preprocessing=p)
            for c, p in zip(classifiers, preprocessings)
        ]
        mode = _infer_mode(specs, lambdas) if mode is None else mode
        self._check_mode(mode, specs, lambdas)
        default = 0.0 if mode == "recnet" else DEFAULT_TRAINING["lambda"]
        lambdas = _as_list(default if lambdas is None else lambdas, len(specs), "lambdas")
        weights = [float(l if s.weight is None else s.weight) for s, l in zip(specs, lambdas)]
        if any(not np.isfinite(w) or w < 0 for w in weights):
            raise ValueError(f"lambdas must be finite numbers >= 0. Received: lambdas={weights}")
        check_rate("pixel_scale", pixel_scale)
        check_count("head_layers", head_layers)

        self.restorer = restorer
        self.classifiers = [spec.model for spec in specs]
        self.mode = mode
        self.lambdas = weights
        self.from_logits = [spec.from_logits for spec in specs]
        self.classifier_names = _unique_names([spec.name or spec.model.name for spec in specs])
        self.pixel_scale = float(pixel_scale)
        self.head_layers = int(head_layers)
        self._preprocess = [resolve_preprocessing(spec.preprocessing) for spec in specs]
        self._freeze_classifiers()

        self._trackers = {"loss": keras.metrics.Mean(name="loss"), "l1": keras.metrics.Mean("l1")}
        for clf_name in self.classifier_names:
            self._trackers[f"ce_{clf_name}"] = keras.metrics.Mean(name=f"ce_{clf_name}")
            self._trackers[f"acc_{clf_name}"] = keras.metrics.SparseCategoricalAccuracy(
                name=f"acc_{clf_name}"
            )
        self.built = True

    @staticmethod
    def _check_mode(mode, specs, lambdas) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        count = len(specs)
        if mode == "recnet":
            given = [] if lambdas is None else np.ravel(lambdas).tolist()
            given += [s.weight for s in specs if s.weight is not None]
            if any(w != 0 for w in given):
                raise ValueError(f"lambdas must be 0 in mode 'recnet'. Received: lambdas={given}")
        elif mode == "qrnet" and count != 1:
            raise ValueError(f"mode 'qrnet' needs exactly 1 classifier. Received: {count}")
        elif mode == "mqrnet" and count < 2:
            raise ValueError(f"mode 'mqrnet' needs 2 or more classifiers. Received: {count}")
        elif mode == "end_to_end" and count < 1:
            raise ValueError(f"mode 'end_to_end' needs 1 or more classifiers. Received: {count}")

    def _freeze_classifiers(self) -> None:
        for model in self.classifiers:
            if self.mode != "end_to_end":
                model.trainable = False
                continue
            model.trainable = True
            head = _head_layers(model, self.head_layers)
            for layer in model.layers:
                layer.trainable = any(layer is h for h in head)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, inputs, training=None):
        return self.restorer(inputs, training=training)

    def loss_terms(self, images, clean, labels, training: bool = False) -> dict[str, Any]:
        """Computes the loss and its terms on one batch.

        Args:
            images: distorted (or clean) images on 0..255, NHWC.
            clean: the clean target images on 0..255.
            labels: integer class labels, shape `(batch,)` (or one-hot, reduced by argmax).
            training: run the restorer in training mode (dropout on).

        Returns:
            A dict with `loss` (the total), `l1`, `ce_<name>` per classifier and
            `probs_<name>` (the classifier's output on the restored images). Classifiers
            with lambda 0 do not enter `loss`, so its gradient is exactly the L1 one.
        """
        labels = self._integer_labels(labels)
        restored = self.restorer(images, training=training)
        clean = ops.cast(clean, restored.dtype)
        l1 = ops.mean(ops.abs(clean - restored)) / self.pixel_scale
        terms: dict[str, Any] = {"l1": l1}
        loss = l1
        for index, model in enumerate(self.classifiers):
            name = self.classifier_names[index]
            outputs = model(self._preprocess[index](restored), training=False)
            ce = ops.mean(
                keras.losses.sparse_categorical_crossentropy(
                    labels, outputs, from_logits=self.from_logits[index]
                )
            )
            terms[f"ce_{name}"] = ce
            terms[f"probs_{name}"] = outputs
            if self.lambdas[index] != 0:
                loss = loss + self.lambdas[index] * ce
        terms["loss"] = loss
        return terms

    @staticmethod
    def _integer_labels(labels):
        if len(labels.shape) == 2 and labels.shape[-1] != 1:
            return ops.argmax(labels, axis=-1)
        return ops.reshape(labels, (-1,))

    def _update_metrics(self, terms, labels) -> dict[str, Any]:
        labels = self._integer_labels(labels)
        for key in ("loss", "l1", *(f"ce_{n}" for n in self.classifier_names)):
            self._trackers[key].update_state(terms[key])
        for name in self.classifier_names:
            self._trackers[f"acc_{name}"].update_state(labels, terms[f"probs_{name}"])
        return {key: tracker.result() for key, tracker in self._trackers.items()}

    def train_step(self, data):
        images, targets = data[0], data[1]
        clean, labels = _split_targets(targets)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.loss_terms(images, clean, labels, training=True)
        gradients = tape.gradient(terms["loss"], variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(terms, labels)

    def test_step(self, data):
        images, targets = data[0], data[1]
        clean, labels = _split_targets(targets)
        terms = self.loss_terms(images, clean, labels, training=False)
        return self._update_metrics(terms, labels)

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.restorer(images, training=False)

    def gradients(self, images, clean, labels, training: bool = True) -> list:
        """Gradients of the total loss with respect to `trainable_variables`.

        Args:
            images: distorted images on 0..255.
            clean: clean target images on 0..255.
            labels: integer labels.
            training: restorer in training mode (dropout on). Defaults to True.

        Returns:
            A list of gradient tensors (None for variables the loss does not reach).
        """
        with tf.GradientTape() as tape:
            loss = self.loss_terms(images, clean, labels, training=training)["loss"]
        return tape.gradient(loss, self.trainable_variables)


# --- Data: Algorithm 1 batches ------------------------------------------------------------


def _distort_apply():
    import distort  # The distortion package of this project.

    return distort.apply


def resolve_distortions(
    distortions: DistortFn | Mapping[str, Sequence[float]] | Sequence[tuple[str, Sequence[float]]],
    apply_fn: Callable[..., Any] | None = None,
) -> DistortFn:
    """Turns a distortion specification into `distort_fn(images, seed) -> images`.

    Args:
        distortions: a callable `distort_fn(images, seed)` (returned unchanged), or
            `{name: levels}` / `[(name, levels), ...]`: each call then draws one
            `(name, level)` pair uniformly from `seed` and applies it to the whole batch with
            `apply_fn(images, name, level, seed=...)`.
        apply_fn: the distortion function; defaults to `distort.apply`.

    Returns:
        A function of a float32 NHWC batch on 0..255 and a stateless seed (int64, shape
        `[2]`) that works inside `tf.data` and `tf.function`.

    Example:

    >>> def shift(images, name, level, seed=None):
    ...     return images + level
    >>> fn = resolve_distortions({"shift": [1.0, 2.0]}, apply_fn=shift)
    >>> out = fn(tf.zeros([1, 2, 2, 3]), tf.constant([0, 1], tf.int64))
    >>> float(out[0, 0, 0, 0]) in (1.0, 2.0)
    True
    """
    if callable(distortions):
        return distortions
    pairs = list(distortions.items()) if isinstance(distortions, Mapping) else list(distortions)
    choices = [(str(name), float(level)) for name, levels in pairs for level in levels]
    if not choices:
        raise ValueError(f"distortions must name at least one level. Received: {distortions}")
    # Check names and levels now, not inside tf.data: a custom apply_fn may add names.
    from distort import registry
    from robustkit.checks import check_level

    for name, level in choices:
        if name in registry.names():
            check_level(f"distortions[{name!r}]", level, *registry.level_range(name))
        elif apply_fn is None:
            raise ValueError(f"distortions names an unknown distortion {name!r}. Allowed "
                             f"values: {registry.names()}")
    apply_fn = apply_fn or _distort_apply()

    def distort_fn(images, seed):
        seed = tf.cast(seed, tf.int64)
        pick = tf.random.stateless_uniform([], seed, 0, len(choices), dtype=tf.int32)
        branch_seed = tf.random.stateless_uniform([2], seed + [0, 1], 0, 2**31 - 1, tf.int64)

        def branch(name, level):
            def run():
                return tf.cast(apply_fn(images, name, level, seed=branch_seed), tf.float32)

            return run

        out = tf.switch_case(pick, [branch(name, level) for name, level in choices])
        return tf.ensure_shape(out, images.shape)

    return distort_fn


def _check_images(images, restorer: keras.Model | None = None, labels=None,
                  single_ok: bool = True) -> np.ndarray:
    """Returns `images` as an array (dtype kept) after checking its shape and values.

    Raises:
        TypeError: For images that are not numbers.
        ValueError: For a rank other than 3 or 4 (4 unless `single_ok`), a channel count other than the
            restorer's input, non-finite pixels, or labels of another length.
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


def _check_batch_size(batch_size: int, even: bool) -> None:
    check_count("batch_size", batch_size, low=2 if even else 1)
    if even and batch_size % 2:
        raise ValueError(f"batch_size must be an even integer >= 2. Received: batch_size={batch_size}")


def _seeded_batches(images, labels, batch_size: int, seed: int, shuffle: bool,
                    epochs: int | None, initial_epoch: int, steps_per_epoch: int | None):
    """`(batch_seed, (images, labels))` batches: one pass, or epochs indexed by number."""
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(len(images), -1)[:, 0].astype("int32")
    if epochs is not None:
        from distort.pipeline import epoch_batches

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
    distortions: DistortFn | Mapping | Sequence,
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
            `distort.pipeline.epoch_batches`). Defaults to None (one pass per iteration).
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
    _check_batch_size(batch_size, even=True)
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
    _check_batch_size(batch_size, even=False)
    dataset = _seeded_batches(images, labels, batch_size, seed, shuffle, epochs, initial_epoch,
                              steps_per_epoch)

    def to_pair(batch_seed, batch):
        batch_images, batch_labels = batch
        batch_images = tf.cast(batch_images, tf.float32)
        return batch_images, (batch_images, batch_labels)

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True).prefetch(tf.data.AUTOTUNE)


# --- Checkpoints and resume ---------------------------------------------------------------

_PHASES = ("pretrain", "main")


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the training state every epoch with atomic writes, and resumes from it.

    Files in `directory`: `state.json` and `state-<epoch>.weights.h5` (trainer weights with
    the optimizer's and the dropout RNG states; see `robustkit.training_state`), and
    `restorer_last.keras` and `restorer_best.keras` (the restorer alone, best by
    `monitor`). Each is written to a temporary name and moved into place; `state.json`
    (phase, last finished epoch, early-stopping counters, history) goes last and commits the
    epoch, so a process killed at any moment leaves the last finished epoch intact.

    On `fit` start, a saved state of the same phase restores the weights and continues after
    its epoch (or skips the `fit` if early stopping had ended the phase); a state of an
    earlier phase restores the weights and starts at epoch 0; a later phase skips this `fit`.
    `initial_epoch` tells the epoch in advance, for building the data of the remaining
    epochs.

    Args:
        directory: checkpoint folder (created if needed).
        phase: `"pretrain"` or `"main"`. Defaults to `"main"`.
        monitor: metric for `restorer_best.keras`. Defaults to `"val_loss"` (falls back to
            `"loss"` when absent).
        early_stopping: an `EarlyStopping` callback whose counters are saved and restored.
    """

    def __init__(
        self,
        directory: str,
        phase: str = "main",
        monitor: str = "val_loss",
        early_stopping: keras.callbacks.EarlyStopping | None = None,
    ):
        super().__init__()
        if phase not in _PHASES:
            raise ValueError(f"phase must be one of {_PHASES}. Received: phase={phase!r}")
        self.directory = str(directory)
        self.phase = phase
        self.monitor = monitor
        self.early_stopping = early_stopping
        self.best = np.inf
        self.history: list[dict] = []  # The folder is made when the first epoch is saved.

    def read_state(self) -> dict | None:
        """Returns the saved state dict, or None when nothing was saved."""
        return training_state.read_state(self.directory)

    def initial_epoch(self, epochs: int) -> int:
        """The epoch at which this phase's `fit(..., epochs=epochs)` starts, given the state.

        0 without a state or after an earlier phase's; the epoch after the saved one for
        this phase (at least `epochs` if early stopping had ended it); `epochs` (nothing left
        to run) once a later phase has started.
        """
        state = self.read_state()
        if state is None:
            return 0
        saved_phase, this_phase = _PHASES.index(state["phase"]), _PHASES.index(self.phase)
        if saved_phase != this_phase:
            return epochs if saved_phase > this_phase else 0
        if state.get("stopped"):
            return max(epochs, state["epoch"] + 1)
        return state["epoch"] + 1

    def on_train_begin(self, logs=None):
        state = self.read_state()
        if state is None:
            return
        epochs = self.params.get("epochs", 0)
        self.model._initial_epoch = self.initial_epoch(epochs)
        if _PHASES.index(state["phase"]) > _PHASES.index(self.phase):
            self.model.stop_training = True
            return
        training_state.restore_state(self.directory, self.model)
        if state["phase"] != self.phase:
            return
        self.best = state.get("best", np.inf)
        self.history = state.get("history", [])
        if self.early_stopping is not None and "early_stopping" in state:
            self.early_stopping.wait = state["early_stopping"]["wait"]
            self.early_stopping.best = state["early_stopping"]["best"]

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        self.history.append({"epoch": epoch, **logs})
        restorer = getattr(self.model, "restorer", None)
        if restorer is not None:
            self._save_restorer(restorer, "restorer_last.keras")
        value = logs.get(self.monitor, logs.get("loss"))
        if value is not None and value < self.best:
            self.best = value
            if restorer is not None:
                self._save_restorer(restorer, "restorer_best.keras")
        # "stopped": early stopping ended the phase; a rerun does not train it further.
        # Reaching the epoch limit does not count, so a rerun with more epochs continues.
        state = {
            "phase": self.phase,
            "epoch": epoch,
            "stopped": bool(self.model.stop_training),
            "best": self.best,
            "history": self.history,
        }
        if self.early_stopping is not None and self.early_stopping.best is not None:
            # Place this callback after the EarlyStopping one: its counters are then those
            # of the epoch just finished.
            state["early_stopping"] = {
                "wait": int(self.early_stopping.wait),
                "best": float(self.early_stopping.best),
            }
        training_state.save_state(self.directory, self.model, state)

    def _save_restorer(self, restorer: keras.Model, filename: str) -> None:
        with atomic_path(os.path.join(self.directory, filename)) as temporary:
            restorer.save(temporary)


# --- Algorithm 1 --------------------------------------------------------------------------


def train(
    trainer: QualityRecoveryTrainer,
    images,
    labels,
    distortions: DistortFn | Mapping | Sequence,
    validation: tuple[Any, Any] | None = None,
    epochs: int = DEFAULT_TRAINING["epochs"],
    pretrain_epochs: int = 0,
    batch_size: int = DEFAULT_TRAINING["batch_size"],
    learning_rate: float = DEFAULT_TRAINING["learning_rate"],
    patience: int | None = DEFAULT_TRAINING["patience"],
    checkpoint_dir: str | None = None,
    seed: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: str | int = "auto",
    apply_fn: Callable[..., Any] | None = None,
    steps_per_epoch: int | None = None,
) -> dict[str, list[float]]:
    """Trains a restorer by the paper's Algorithm 1.

    Pre-trains on clean images for `pretrain_epochs`, then trains on batches holding clean
    images and distorted copies (`paired_batches`) with early stopping on the validation
    loss. With `checkpoint_dir`, every epoch is checkpointed and a rerun resumes.

    Args:
        trainer: a `QualityRecoveryTrainer`; compiled here with Adam if not compiled yet.
        images: training images `(n, h, w, c)` on 0..255.
        labels: integer training labels `(n,)`.
        distortions: see `resolve_distortions`.
        validation: `(images, labels)` for the validation loss; distorted the same way with
            a fixed seed. Defaults to None (early stopping then watches the training loss).
        epochs: maximum epochs of the main phase, an integer >= 1. Defaults to 200.
        pretrain_epochs: epochs of pre-training on clean images, an integer >= 0.
            Defaults to 0.
        batch_size: even batch size >= 2 (half clean, half distorted). Defaults to 32.
        learning_rate: Adam learning rate, a finite number > 0. Defaults to 1e-3.
        patience: early-stopping patience in epochs, an integer >= 0; None disables it.
            Defaults to 5.
        checkpoint_dir: folder for `TrainingCheckpoint`. Defaults to None (no checkpoints).
        seed: seed of every random choice (order, distortion type, level, noise, and the
            dropout of the restorer: every seed generator of the trainer starts from a
            state derived from it), an integer in `[0, 2**31 - 1]`.
        callbacks: extra Keras callbacks for both phases.
        verbose: Keras `fit` verbosity (progress bars). Defaults to `"auto"`.
        apply_fn: see `resolve_distortions`.
        steps_per_epoch: optional cap on batches per epoch.

    Returns:
        The history of the main phase, `{metric: [value per epoch]}`, including the epochs
        of an earlier, interrupted run when resuming.

    Raises:
        TypeError, ValueError: for arguments of the wrong type or outside their range.
        robustkit.training_checks.TrainingDiverged: (a ValueError) when a loss or weight
            becomes NaN or infinite. The trainer gets back the weights it had at the start
            of that epoch, and no checkpoint or restorer of that epoch is written.

    Example:

    >>> import numpy as np, keras
    >>> from qrnet import build_qrnet
    >>> trainer = QualityRecoveryTrainer(build_qrnet(base_width=4, depth=2), mode="recnet")
    >>> x = np.random.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    >>> history = train(trainer, x, np.zeros(8), lambda im, s: im * 0.5, epochs=1,
    ...                 batch_size=4, verbose=0)
    >>> sorted(history)
    ['l1', 'loss']
    """
    epochs = check_count("epochs", epochs)
    pretrain_epochs = check_count("pretrain_epochs", pretrain_epochs, low=0)
    _check_batch_size(batch_size, even=True)
    learning_rate = check_rate("learning_rate", learning_rate)
    patience = check_count("patience", patience, low=0, none_ok=True)
    steps_per_epoch = check_count("steps_per_epoch", steps_per_epoch, none_ok="no cap")
    seed = check_seed(seed)
    images = _check_images(images, trainer.restorer, labels, single_ok=False)
    if getattr(trainer, "optimizer", None) is None:
        trainer.compile(optimizer=keras.optimizers.Adam(learning_rate))
    keras.utils.set_random_seed(seed)
    reseed_generators(trainer, seed)  # dropout masks from `seed`; a resumed state overrides it
    rate = float(f"{keras.ops.convert_to_numpy(trainer.optimizer.learning_rate):.7g}")  # float32
    # First in both phases: an epoch that diverges never reaches the checkpoint callback.
    callbacks = [DivergenceGuard(rate), *callbacks]

    validation_data = None
    if validation is not None:
        validation_data = paired_batches(
            *validation, distortions, batch_size, seed + 1, shuffle=False, apply_fn=apply_fn
        )
    # Epoch e's batches depend on (seed, e) alone, so a resumed run continues exactly.
    steps = epoch_steps(len(images), batch_size // 2, steps_per_epoch)
    if pretrain_epochs:
        pretrain_callbacks = list(callbacks)
        start = 0
        if checkpoint_dir:
            pretrain_checkpoint = TrainingCheckpoint(checkpoint_dir, "pretrain", "loss")
            pretrain_callbacks.append(pretrain_checkpoint)
            start = min(pretrain_checkpoint.initial_epoch(pretrain_epochs), pretrain_epochs)
        trainer.fit(
            clean_batches(images, labels, batch_size, seed, epochs=pretrain_epochs,
                          initial_epoch=start, steps_per_epoch=steps_per_epoch),
            epochs=pretrain_epochs,
            initial_epoch=start,
            callbacks=pretrain_callbacks,
            verbose=verbose,
            steps_per_epoch=epoch_steps(len(images), batch_size, steps_per_epoch),
            shuffle=False,
        )
    monitor = "val_loss" if validation is not None else "loss"
    main_callbacks = list(callbacks)
    stopper = None
    if patience is not None:
        stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience)
        main_callbacks.append(stopper)
    checkpoint = None
    start = 0
    if checkpoint_dir:
        # After EarlyStopping, so that it saves and restores the stopper's counters.
        checkpoint = TrainingCheckpoint(checkpoint_dir, "main", monitor, early_stopping=stopper)
        main_callbacks.append(checkpoint)
        start = min(checkpoint.initial_epoch(epochs), epochs)
    history = trainer.fit(
        paired_batches(images, labels, distortions, batch_size, seed, apply_fn=apply_fn,
                       epochs=epochs, initial_epoch=start, steps_per_epoch=steps_per_epoch),
        validation_data=validation_data,
        epochs=epochs,
        initial_epoch=start,
        callbacks=main_callbacks,
        verbose=verbose,
        steps_per_epoch=steps,
        shuffle=False,
    )
    if checkpoint is not None:
        return _history_table(checkpoint.history)
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def _history_table(rows: list[dict]) -> dict[str, list[float]]:
    keys = [key for key in rows[0] if key != "epoch"] if rows else []
    return {key: [row[key] for row in rows if key in row] for key in keys}


def restore(restorer: keras.Model, images, batch_size: int = 32) -> np.ndarray:
    """Restores images with a trained restorer.

    Args:
        restorer: a model from 0..255 images to 0..255 images.
        images: array `(n, h, w, c)` or one image `(h, w, c)` on 0..255, any dtype.
        batch_size: images per forward pass. Defaults to 32.

    Returns:
        float32 array of restored images on 0..255, the shape of `images`.

    Example:

    >>> from qrnet import build_qrnet
    >>> restore(build_qrnet(base_width=4, depth=2), np.zeros((17, 23, 3))).shape
    (17, 23, 3)
    """
    _check_batch_size(batch_size, even=False)
    images = _check_images(images, restorer).astype("float32", copy=False)
    single = images.ndim == 3
    if single:
        images = images[None]
    if len(images) == 0:
        return images.copy()
    restored = np.asarray(restorer.predict(images, batch_size=batch_size, verbose=0), "float32")
    return restored[0] if single else restored

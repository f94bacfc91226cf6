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
patience 5, a checkpoint every epoch (atomic writes) and resume. Its batches come from
`qrnet.batches` and its checkpoints from `qrnet.checkpoints`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from distort.pipeline import epoch_steps
from qrnet.batches import DistortFn, check_batch_size, check_images, clean_batches, paired_batches
from qrnet.checkpoints import TrainingCheckpoint
from qrnet.inference import Preprocessing, resolve_preprocessing
from robustkit.seeds import check_seed
from robustkit.training_checks import DivergenceGuard, check_count, check_rate, reseed_generators

__all__ = [
    "DEFAULT_TRAINING",
    "MODES",
    "ClassifierSpec",
    "QualityRecoveryTrainer",
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
    check_batch_size(batch_size, even=True)
    learning_rate = check_rate("learning_rate", learning_rate)
    patience = check_count("patience", patience, low=0, none_ok=True)
    steps_per_epoch = check_count("steps_per_epoch", steps_per_epoch, none_ok="no cap")
    seed = check_seed(seed)
    images = check_images(images, trainer.restorer, labels, single_ok=False)
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

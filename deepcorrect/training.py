"""The DeepCorrect training recipe: correction units or fine-tuned layers on half-distorted batches.

`train` fits a wrapped (`deepcorrect.wrap`) or fine-tunable
(`deepcorrect.finetune`) model on batches whose second half is distorted at a
per-image random level (`distort.pipeline.training_dataset`), with SGD +
Nesterov momentum 0.9 and the paper's step schedule. Layers with
`trainable=False` (the frozen pretrained weights) run their batch norm in
inference mode, which is what Keras 3 does for a frozen `BatchNormalization`
(the original Keras 1 code normalised frozen layers with batch statistics).

With `checkpoint_dir`, every finished epoch is saved atomically (the model as
`.keras`, then weights, optimizer and RNG states as `robustkit.training_state`);
running the same call again resumes after the last finished epoch. Epoch `e`'s
batches depend on `(seed, e)` alone (`distort.pipeline.epoch_batches`), so a
resumed run ends with exactly the weights of an uninterrupted one. A
`tf.distribute` strategy runs the same code on several devices or hosts.

Label-free mode (`teacher=`): the target is the frozen teacher's prediction on
the clean image, so units train on unlabeled photos (knowledge distillation).

Example:

```python
import deepcorrect
model = deepcorrect.wrap(pretrained, ranking, beta=0.5)
history = deepcorrect.train(model, x_train, y_train, "gaussian_blur", [0.5, 1, 1.5, 2, 2.5, 3],
                            epochs=10, checkpoint_dir="runs/blur")
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from deepcorrect import checks
from deepcorrect.unit_statistics import refresh_unit_statistics, unit_batch_norms
from distort import pipeline
from distort.spec import Distortion, DistortionSpec, as_distortions
from robustkit import training_state
from robustkit.checks import check_level
from robustkit.io import atomic_path
from robustkit.seeds import check_seed
from robustkit.training_checks import DivergenceGuard, check_count, check_rate, reseed_generators

# Section 5 of the paper and the authors' code (see NOTES-original-code.md):
# learning rate for correction units / for fine-tuning, step decay x0.1.
TRAINING_PRESETS: dict[str, dict] = {
    "deepcorrect_cifar": {
        "batch_size": 250, "epochs": 40, "learning_rate": 0.1, "finetune_learning_rate": 0.01,
        "decay_every": 10, "decay": 0.1, "momentum": 0.9, "nesterov": True, "fraction": 0.5,
    },
    "deepcorrect_imagenet": {
        "batch_size": 200, "epochs": 45, "learning_rate": 0.1, "finetune_learning_rate": 0.001,
        "decay_every": 15, "decay": 0.1, "momentum": 0.9, "nesterov": True, "fraction": 0.5,
    },
    # A CPU-sized recipe for the examples and the demo.
    "cpu_quick": {
        "batch_size": 64, "epochs": 3, "learning_rate": 0.01, "finetune_learning_rate": 0.01,
        "decay_every": 2, "decay": 0.1, "momentum": 0.9, "nesterov": True, "fraction": 0.5,
    },
    # Label-free units on a pretrained ImageNet network from about a thousand photos: the
    # recipe that lowered the distillation loss and gained on held-out photos for
    # MobileNetV2 (docs/RESULTS.md, "MobileNetV2 on the ImageNet samples, label-free");
    # 0.01 and 0.03 ended with a higher loss.
    "label_free": {
        "batch_size": 32, "epochs": 4, "learning_rate": 0.001, "finetune_learning_rate": 0.001,
        "decay_every": 3, "decay": 0.1, "momentum": 0.9, "nesterov": True, "fraction": 0.5,
        "augment": True,
    },
}


def step_schedule(base: float, decay: float, every: int) -> Callable[[int], float]:
    """Returns `epoch -> base * decay ** (epoch // every)` (the paper's step schedule).

    Example:

    >>> [round(step_schedule(0.1, 0.1, 10)(e), 6) for e in (0, 9, 10, 25)]
    [0.1, 0.1, 0.01, 0.001]
    """
    if every < 1:
        raise ValueError(f"decay_every must be >= 1. Received: decay_every={every}")
    return lambda epoch, lr=None: float(base * decay ** (epoch // every))


class LabelFreeTrainer(keras.Model):
    """Trains `student` to match a frozen `teacher`'s predictions on clean images.

    Batches are `(inputs, clean)`: the student sees `inputs` (half distorted),
    the teacher sees `clean`; the loss is the cross-entropy between the
    teacher's and the student's class distributions.

    Args:
        student: The model to train (e.g. a wrapped model).
        teacher: The frozen reference (e.g. the pretrained model).
        preprocess: Optional function mapping 0..255 images to both models' input.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, preprocess=None, **kwargs):
        checks.check_model(student, "student")
        checks.check_model(teacher, "teacher")
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.preprocess = preprocess
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.agreement = keras.metrics.Mean(name="agreement")
        self.built = True  # Its parts are built; checkpoints can load into it before `fit`.

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def _prep(self, x):
        return self.preprocess(x) if self.preprocess is not None else x

    def train_step(self, data):
        inputs, clean = data
        target = tf.stop_gradient(_probabilities(self.teacher(self._prep(clean), training=False)))
        with tf.GradientTape() as tape:
            pred = _probabilities(self.student(self._prep(inputs), training=True))
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(target, pred))
            loss += tf.add_n(self.student.losses) if self.student.losses else 0.0
        grads = tape.gradient(loss, self.student.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_weights))
        return self._update(loss, target, pred)

    def test_step(self, data):
        inputs, clean = data
        target = _probabilities(self.teacher(self._prep(clean), training=False))
        pred = _probabilities(self.student(self._prep(inputs), training=False))
        return self._update(tf.reduce_mean(keras.losses.categorical_crossentropy(target, pred)),
                            target, pred)

    def _update(self, loss, target, pred):
        self.loss_tracker.update_state(loss)
        same = tf.cast(tf.equal(tf.argmax(target, -1), tf.argmax(pred, -1)), tf.float32)
        self.agreement.update_state(same)
        return {"loss": self.loss_tracker.result(), "agreement": self.agreement.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.agreement]


def _probabilities(outputs: tf.Tensor) -> tf.Tensor:
    """Softmax unless the outputs already are probabilities (a softmax head)."""
    outputs = tf.cast(outputs, tf.float32)
    is_prob = tf.logical_and(tf.reduce_all(outputs >= 0.0),
                             tf.reduce_all(tf.abs(tf.reduce_sum(outputs, -1) - 1.0) < 1e-3))
    return tf.cond(is_prob, lambda: outputs, lambda: tf.nn.softmax(outputs))


def _outputs_logits(model: keras.Model) -> bool:
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return not (act is keras.activations.softmax or getattr(act, "__name__", "") == "softmax")


def train(model: keras.Model, images, labels=None, distortion: DistortionSpec = "gaussian_blur",
          levels: Sequence[float] | None = None, *, preset: str = "deepcorrect_cifar",
          epochs: int | None = None, batch_size: int | None = None,
          learning_rate: float | None = None, validation_data=None, teacher: keras.Model | None = None,
          preprocess: Callable | None = None, checkpoint_dir: str | os.PathLike | None = None,
          callbacks: Sequence[keras.callbacks.Callback] = (),
          strategy: tf.distribute.Strategy | None = None, seed: int = 0, steps_per_epoch=None,
          verbose: int | str = "auto", fraction: float | None = None,
          decay_every: int | None = None, augment: bool | None = None,
          refresh_statistics: bool = True) -> keras.callbacks.History:
    """Trains the trainable weights of `model` on half-distorted batches.

    Args:
        model: A model whose trainable weights are what to train: a
            `deepcorrect.wrap` model (units) or a `deepcorrect.finetune` one.
        images: uint8/float training images `[N, H, W, C]` on 0..255.
        labels: Integer labels `[N]`; None with `teacher` (label-free).
        distortion: A distortion name, a `distort.Distortion`, a dict name
            -> levels, or a list of those (see `distort.as_distortions`); with
            several, one is drawn per batch.
        levels: The levels drawn per image, for a name (or a `Distortion`
            without levels).
        preset: A `TRAINING_PRESETS` name giving the defaults below.
        epochs: Epochs, an integer >= 1; None (the default) takes the preset's.
        batch_size: Batch size, an integer >= 1; None (the default) takes the
            preset's.
        learning_rate: Initial learning rate, a finite number > 0; None (the
            default) takes the preset's unit rate, or its fine-tuning rate when
            the model has no correction unit.
        validation_data: Optional `(images, labels)` (or `(images, clean)` in
            label-free mode), distorted the same way with a fixed seed.
        teacher: A frozen model for label-free distillation.
        preprocess: Function mapping 0..255 images to the model's input
            (e.g. `keras.applications.mobilenet_v2.preprocess_input`); in the
            labelled mode it is applied inside the `tf.data` pipeline.
        checkpoint_dir: Folder for the per-epoch training state and
            `model.keras`. A rerun with the same arguments (and more epochs, if
            wanted) resumes after the last finished epoch.
        callbacks: Further Keras callbacks (TensorBoard, early stopping, ...).
        strategy: A `tf.distribute` strategy; build the model under its scope.
        seed: Seed of shuffling, distortion draws, noise and dropout, an
            integer in `[0, 2**31 - 1]`: epoch `e`'s batches are a function of
            `(seed, e)`, and every random seed generator of the model (its
            `Dropout` layers) starts from a state derived from `seed`, so the
            same call gives the same weights in any process.
        steps_per_epoch: Optional cap on steps per epoch, an integer >= 1.
        verbose: Keras verbosity.
        fraction: Fraction of every batch that is distorted, in [0, 1]; None
            (the default) takes the preset's (0.5).
        decay_every: The rate drops x0.1 (the preset's decay) every this many
            epochs, an integer >= 1; None (the default) takes the preset's.
        augment: Flip and shift every training image at random (an eighth of
            its side at most, `distort.pipeline.augment_batch`) before it is
            distorted: for small training sets, such as a thousand photos. None
            (the default) takes the preset's (on for `"label_free"` only).
        refresh_statistics: After the last epoch, set the moving statistics of
            the units' batch norms to their exact statistics over the first
            epoch's batches (`deepcorrect.refresh_unit_statistics`, "precise
            BN"). Without it a short run keeps most of their initial mean 0
            and variance 1 (45% after 80 steps at momentum 0.99) and the
            repaired model computes at inference something else than it
            learned. Models without unit batch norms are not touched.

    Returns:
        The Keras `History` (of the epochs run in this call).

    A loss (or validation loss, or weight) that becomes NaN or infinite stops
    the run with `robustkit.training_checks.TrainingDiverged` (a ValueError)
    naming the epoch, the step and the learning rate; the model gets back the
    weights it had at the start of that epoch, and no checkpoint of that epoch
    is written.

    Raises:
        TypeError: If `model` (or `teacher`) is not a Functional or
            Sequential model.
        ValueError: For an unknown preset, a model without trainable weights,
            images of another size than the model's input (they are not
            resized), labels outside `[0, classes - 1]`,
            or a checkpoint of another run (other seed, batch size, data or
            distortion).
    """
    checks.check_model(model)
    if teacher is not None:
        checks.check_model(teacher, "teacher")
    sample = np.array(images[:1], np.float32)  # a copy: `preprocess` may work in place
    checks.check_image_size(sample if preprocess is None else np.asarray(preprocess(sample)),
                            model)
    if labels is not None and teacher is None:
        checks.check_class_labels(labels, model)
    if preset not in TRAINING_PRESETS:
        raise ValueError(f"preset must be one of {sorted(TRAINING_PRESETS)}. Received: preset={preset!r}")
    if labels is None and teacher is None:
        raise ValueError("labels must be given unless a teacher is given (label-free mode)")
    cfg = dict(TRAINING_PRESETS[preset])
    preset_value = f"the value of preset {preset!r}"
    epochs = check_count("epochs", epochs, none_ok=preset_value) or cfg["epochs"]
    batch_size = check_count("batch_size", batch_size, none_ok=preset_value) or cfg["batch_size"]
    steps_per_epoch = check_count("steps_per_epoch", steps_per_epoch, none_ok="no cap")
    learning_rate = check_rate("learning_rate", learning_rate, none_ok=preset_value)
    if fraction is not None:
        cfg["fraction"] = check_level("fraction", fraction, 0.0, 1.0)
    cfg["decay_every"] = check_count("decay_every", decay_every,
                                     none_ok=preset_value) or cfg["decay_every"]
    seed = check_seed(seed)
    if augment is None:
        augment = cfg.get("augment", False)
    for flag, value in (("augment", augment), ("refresh_statistics", refresh_statistics)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False. Received: {flag}={value!r}")
    distortions = as_distortions(distortion, levels)
    has_units = any(type(l).__name__ == "CorrectionUnit" for l in _all_layers(model))
    lr = learning_rate or (cfg["learning_rate"] if has_units else cfg["finetune_learning_rate"])
    if not model.trainable_weights:
        raise ValueError("model has no trainable weights: wrap it with deepcorrect.wrap or "
                         "deepcorrect.finetune first")
    keras.utils.set_random_seed(seed)
    val_ds = None
    if validation_data is not None:
        val_ds = _dataset(validation_data[0], validation_data[1], distortions,
                          cfg["fraction"], batch_size, seed + 1, teacher is not None, preprocess,
                          shuffle=False)
    scope = strategy.scope() if strategy is not None else _null_scope()
    with scope:
        optimizer = keras.optimizers.SGD(lr, momentum=cfg["momentum"], nesterov=cfg["nesterov"])
        if teacher is not None:
            fit_model = LabelFreeTrainer(model, teacher, preprocess)
            fit_model.compile(optimizer=optimizer)
        else:
            fit_model = model
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=_outputs_logits(model))
            model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    # The guard first: an epoch that diverges never reaches the checkpoint callback.
    cbs = [DivergenceGuard(lr),
           keras.callbacks.LearningRateScheduler(step_schedule(lr, cfg["decay"], cfg["decay_every"]))]
    reseed_generators(fit_model, seed)  # dropout masks from `seed`; a resumed state overrides it
    initial_epoch = 0
    if checkpoint_dir is not None:
        run = {"seed": int(seed), "batch_size": batch_size, "images": len(images),
               "distortion": _describe(distortions), "label_free": teacher is not None}
        if augment:  # absent when off, so that earlier checkpoints still resume
            run["augment"] = True
        initial_epoch = _resume(checkpoint_dir, fit_model, run)
        cbs.append(_EpochCheckpoint(Path(checkpoint_dir), model, run))
    cbs.extend(callbacks)
    train_ds = _dataset(images, labels, distortions, cfg["fraction"], batch_size, seed,
                        teacher is not None, preprocess, shuffle=True, augment=augment,
                        epochs=epochs,
                        initial_epoch=min(initial_epoch, epochs), steps_per_epoch=steps_per_epoch)
    steps = pipeline.epoch_steps(len(images), batch_size, steps_per_epoch)
    history = fit_model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch,
                            validation_data=val_ds, callbacks=cbs, steps_per_epoch=steps,
                            verbose=verbose, shuffle=False)
    if refresh_statistics and unit_batch_norms(model):
        # Precise BN: the first epoch's batches again, their exact statistics.
        first = _dataset(images, labels, distortions, cfg["fraction"], batch_size, seed,
                         teacher is not None, preprocess, shuffle=True, augment=augment,
                         epochs=1, steps_per_epoch=steps_per_epoch)
        if teacher is not None and preprocess is not None:
            first = first.map(lambda inputs, clean: preprocess(inputs))
        with strategy.scope() if strategy is not None else _null_scope():
            refresh_unit_statistics(model, first)
        if checkpoint_dir is not None:  # the training state keeps the statistics trained on
            _save_model(Path(checkpoint_dir), model)
    return history


def _describe(distortions: Sequence[Distortion]) -> str:
    """The checkpoint's record of the distortions: `repr({name: levels})`, by name.

    A distortion with options records `{"levels": [...], "options": {...}}` instead.
    """
    table = {d.name: list(d.levels) if not d.options
             else {"levels": list(d.levels), "options": dict(sorted(d.options.items()))}
             for d in distortions}
    return repr(dict(sorted(table.items())))


def _resume(checkpoint_dir, fit_model: keras.Model, run: dict) -> int:
    """Loads the last finished epoch's state into `fit_model`; returns the next epoch."""
    record = training_state.read_state(checkpoint_dir)
    if record is None:
        return 0
    saved = record.get("run", {})
    for key in dict.fromkeys([*run, *saved]):
        if saved.get(key) != run.get(key):
            raise ValueError(
                f"checkpoint_dir={os.fspath(checkpoint_dir)!r} holds another run: {key} is "
                f"{saved.get(key)!r} there, {run.get(key)!r} now. Delete it or pass "
                "another folder")
    training_state.restore_state(checkpoint_dir, fit_model)
    return int(record["epoch"]) + 1


class _EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: the (inner) model as `model.keras`, then the training state."""

    def __init__(self, directory: Path, model: keras.Model, run: dict):
        super().__init__()
        self._directory, self._target, self._run = directory, model, run

    def on_epoch_end(self, epoch, logs=None):
        # The state is the commit point: a kill between the two writes redoes this
        # epoch, with the same batches, on a rerun.
        _save_model(self._directory, self._target)
        training_state.save_state(self._directory, self.model, {"epoch": epoch, "run": self._run})


def _save_model(directory: Path, model: keras.Model) -> None:
    with atomic_path(directory / "model.keras") as tmp:
        model.save(tmp)


def _dataset(images, labels, distortions, fraction, batch_size, seed, label_free,
             preprocess, shuffle, augment=False, **epochs):
    if label_free:
        ds = pipeline.restoration_dataset(images, None, distortions, fraction=fraction,
                                          batch_size=batch_size, seed=seed, shuffle=shuffle,
                                          augment=augment, **epochs)
        return ds
    ds = pipeline.training_dataset(images, np.asarray(labels), distortions,
                                   fraction=fraction, batch_size=batch_size, seed=seed,
                                   shuffle=shuffle, augment=augment, **epochs)
    prep = preprocess or (lambda x: x)
    return ds.map(lambda x, y: (prep(tf.cast(x, tf.float32)), y))


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

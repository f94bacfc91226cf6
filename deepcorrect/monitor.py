"""Accuracy against training time: a Keras callback for wall-clock comparisons of repairs.

`DistortedAccuracy` measures top-1 on a fixed set of distorted test images (clean and every
level, distorted once, with a seed) at the start of training and every `every` training
steps, and records it against the seconds spent training so far. The time of its own
evaluations is left out of that clock, so two repairs trained with it in the same process
can be compared on a time axis (which reaches a given accuracy first).

Example:

```python
import deepcorrect

monitor = deepcorrect.DistortedAccuracy(x_test[:2000], y_test[:2000], "gaussian_blur",
                                        [1, 2, 3], every=100)
deepcorrect.train(model, x_train, y_train, "gaussian_blur", [1, 2, 3], epochs=3,
                  callbacks=[monitor])
for point in monitor.records:
    print(point["step"], round(point["seconds"], 1), round(point["mean"], 3))
```
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import keras
import numpy as np

from distort.spec import DistortionSpec, as_distortions
from robustkit.seeds import check_seed
from robustkit.training_checks import check_count

__all__ = ["DistortedAccuracy", "time_to_reach"]


class DistortedAccuracy(keras.callbacks.Callback):
    """Top-1 on distorted test images every `every` steps, against seconds of training.

    Args:
        images: test images `[N, H, W, C]` on 0..255 (uint8 or float).
        labels: integer labels `[N]`.
        distortion: a distortion name, `distort.Distortion`, dict name -> levels, or a list of
            those (`distort.as_distortions`); every level of each is tested.
        levels: the levels when `distortion` is a single name.
        every: evaluate every this many training steps (and at the end), an integer >= 1.
        include_clean: also test the clean images (the first column of every record).
        model: the model to evaluate; None evaluates the model being trained (pass the
            student when training label-free through a `deepcorrect.LabelFreeTrainer`).
        preprocess: function mapping 0..255 images to the model's input, or None.
        batch_size: evaluation batch size.
        seed: seed of the distortions of the test images.

    Attributes:
        records: one dict per evaluation: `step` (training steps done), `seconds` (training
            seconds so far, evaluations excluded), `accuracy` (top-1 per column, in the order
            of `columns`) and `mean` (their mean).
        columns: `"clean"` (when included), then `"<name>@<level>"` per distortion level.
    """

    def __init__(self, images, labels, distortion: DistortionSpec, levels: Sequence[float] | None = None,
                 *, every: int = 100, include_clean: bool = True, model: keras.Model | None = None,
                 preprocess: Callable | None = None, batch_size: int = 256, seed: int = 0):
        import distort

        super().__init__()
        images = np.asarray(images)
        labels = np.asarray(labels).reshape(-1)
        if images.ndim != 4 or len(images) != len(labels) or not len(images):
            raise ValueError(f"images must be [N, H, W, C] with one label each and N >= 1. "
                             f"Received: images {images.shape}, labels {labels.shape}")
        self.every = check_count("every", every)
        self.batch_size = check_count("batch_size", batch_size)
        seed = check_seed(seed)
        self.labels = labels.astype(np.int64)
        self.columns: list[str] = ["clean"] if include_clean else []
        self._sets = [images] if include_clean else []
        for d in as_distortions(distortion, levels):
            for level in d.levels:
                self.columns.append(f"{d.name}@{level:g}")
                self._sets.append(np.asarray(distort.apply(images, d.name, level, seed=seed,
                                                           **d.options)))
        if not self._sets:
            raise ValueError("nothing to test: give a distortion with levels or include_clean=True")
        self._evaluated = model
        self._preprocess = preprocess
        self.records: list[dict[str, Any]] = []
        self._step = 0
        self._seconds = 0.0
        self._since: float | None = None

    def evaluate(self) -> list[float]:
        """Top-1 of the evaluated model on every column, now."""
        model = self._evaluated if self._evaluated is not None else self.model
        result = []
        for x in self._sets:
            correct = 0
            for start in range(0, len(x), self.batch_size):
                batch = np.asarray(x[start:start + self.batch_size], np.float32)
                if self._preprocess is not None:
                    batch = self._preprocess(batch)
                pred = np.asarray(model(batch, training=False))
                correct += int(np.sum(pred.argmax(-1) == self.labels[start:start + len(batch)]))
            result.append(correct / len(x))
        return result

    def _record(self) -> None:
        if self._since is not None:
            self._seconds += time.perf_counter() - self._since
        accuracy = self.evaluate()
        self.records.append({"step": self._step, "seconds": self._seconds,
                             "accuracy": accuracy, "mean": float(np.mean(accuracy))})
        self._since = time.perf_counter()

    def on_train_begin(self, logs=None):
        if not self.records:  # a second fit() continues the same clock and curve
            self._record()
        else:
            self._since = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every == 0:
            self._record()

    def on_train_end(self, logs=None):
        if self.records[-1]["step"] != self._step:
            self._record()
        if self._since is not None:
            self._seconds += time.perf_counter() - self._since
            self._since = None


def time_to_reach(records: Sequence[dict[str, Any]], target: float) -> float | None:
    """Training seconds until a `DistortedAccuracy` curve first reaches `target` mean top-1.

    Returns None when it never does.

    Example:

    >>> time_to_reach([{"seconds": 0.0, "mean": 0.4}, {"seconds": 5.0, "mean": 0.7}], 0.6)
    5.0
    """
    for point in records:
        if point["mean"] >= target:
            return float(point["seconds"])
    return None

"""Every-epoch checkpoints of QRNet training, and resume (`TrainingCheckpoint`).

`qrnet.train` adds a `TrainingCheckpoint` per phase (pre-training, then the main phase) when
given a `checkpoint_dir`; a rerun with the same folder continues after the last finished
epoch, with the same batches, weights, optimizer state and early-stopping counters.

Example:

>>> import tempfile
>>> checkpoint = TrainingCheckpoint(tempfile.mkdtemp(), "main")
>>> checkpoint.initial_epoch(epochs=10)  # nothing saved yet
0
"""

from __future__ import annotations

import os

import keras
import numpy as np

from robustkit import training_state
from robustkit.io import atomic_path

__all__ = ["PHASES", "TrainingCheckpoint"]

# The phases of `qrnet.train`, in the order they run.
PHASES = ("pretrain", "main")


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
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}. Received: phase={phase!r}")
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
        saved_phase, this_phase = PHASES.index(state["phase"]), PHASES.index(self.phase)
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
        if PHASES.index(state["phase"]) > PHASES.index(self.phase):
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

"""Per-epoch training state in a folder, written atomically, so a killed `fit` resumes exactly.

What one `save_state` writes:

- `state-<epoch>.weights.h5`: the weights of the model given, with its optimizer's
  (iterations, moments, learning rate) when the optimizer is an attribute of the model,
  as `keras.Model.save_weights` does;
- `state.json`: the caller's record (it holds `epoch`), the weights file's name and the
  states of the model's random seed generators (Keras `Dropout` and friends draw from
  them, and `save_weights` does not store them).

`state.json` is renamed into place last: it is the commit point. A process killed before
it leaves the previous state whole (the new weights file, or a hidden temporary one, is
then unused and replaced later); a weights file older than the one `state.json` names is
deleted after the commit.

Example:

>>> import tempfile, keras, numpy as np
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
>>> model.compile(optimizer="adam", loss="mse")
>>> folder = tempfile.mkdtemp()
>>> save_state(folder, model, {"epoch": 0})
>>> restore_state(folder, model)["epoch"]
0
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from robustkit.io import atomic_path, atomic_write_text

STATE_FILE = "state.json"


def _seed_states(model) -> list:
    """The state variables of the model's `keras.random.SeedGenerator`s, in model order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _build_optimizer(model) -> None:
    """Creates the optimizer's variables, so that saved and loaded files hold the same ones."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def read_state(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The record `save_state` wrote in `directory`, or None if there is none.

    Raises:
        ValueError: If `state.json` is not valid JSON (it is written atomically, so this
            means it was edited or copied incompletely).
    """
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"training state is not valid JSON ({e}): {path}. Delete the folder "
                         "to start again") from None


def save_state(directory: str | os.PathLike, model, record: dict[str, Any]) -> None:
    """Writes `model`'s weights, optimizer and RNG states, then `record`, atomically.

    Args:
        directory: The folder (created if needed).
        model: The Keras model being fitted (the one `fit` was called on).
        record: JSON-serialisable facts of the run; must hold `"epoch"`, the last
            finished epoch.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = f"state-{int(record['epoch'])}.weights.h5"
    _build_optimizer(model)
    with atomic_path(directory / weights) as tmp:
        model.save_weights(tmp)
    full = dict(record, weights=weights,
                rng=[v.numpy().tolist() for v in _seed_states(model)])
    atomic_write_text(directory / STATE_FILE, json.dumps(full, indent=1))
    for old in directory.glob("state-*.weights.h5"):
        if old.name != weights:
            old.unlink(missing_ok=True)


def restore_state(directory: str | os.PathLike, model) -> dict[str, Any] | None:
    """Loads what `save_state` wrote into `model`; returns the record, or None.

    Builds the model's optimizer first (if it has one) so that its variables load too.
    """
    record = read_state(directory)
    if record is None:
        return None
    _build_optimizer(model)
    model.load_weights(Path(directory) / record["weights"])
    states = _seed_states(model)
    if len(states) != len(record.get("rng", [])):
        raise ValueError(f"training state in {directory} was saved for a model with "
                         f"{len(record.get('rng', []))} random seed generators; this one has "
                         f"{len(states)}. Delete the folder to start again")
    for variable, value in zip(states, record["rng"]):
        variable.assign(value)
    return record

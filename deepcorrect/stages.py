"""A run's finished stages and saved models: what lets `compare` and the demo resume.

`Stages` keeps one record per finished stage in `folder/stages.json`, written atomically
after each stage; `write_model` saves a `.keras` file atomically and `read_model` loads one
back with `safe_mode=True`. A killed run loses at most the stage it was in.

Example:

>>> import tempfile
>>> stages = Stages(tempfile.mkdtemp())
>>> stages.finish("baseline", seconds=1.5)
>>> Stages(stages.folder).done("baseline")
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from robustkit.io import atomic_path, atomic_write_text

STAGES_FILE = "stages.json"



class Stages:
    """Finished stages of a run, kept in `folder/stages.json` (written atomically).

    Each record holds what a report needs: seconds, parameters, epochs, images.

    Example:

    >>> import tempfile
    >>> stages = Stages(tempfile.mkdtemp())
    >>> stages.done("baseline")
    False
    >>> stages.finish("baseline", seconds=1.5)
    >>> Stages(stages.folder).record("baseline")["seconds"]
    1.5
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / STAGES_FILE
        self.records: dict[str, dict] = (json.loads(self.path.read_text())
                                         if self.path.is_file() else {})

    def done(self, key: str) -> bool:
        return key in self.records

    def record(self, key: str) -> dict:
        return self.records[key]

    def finish(self, key: str, **record) -> None:
        self.records[key] = record
        atomic_write_text(self.path, json.dumps(self.records, indent=1))


def slug(name: str) -> str:
    """A file-name-safe version of a method name: `slug("Deepcorr-all-c") == "deepcorr-all-c"`."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name.lower())


def write_model(model, path: str | os.PathLike) -> None:
    """Saves a model as `.keras`, atomically (a killed save leaves no partial file)."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def read_model(path: str | os.PathLike):
    """Loads a `.keras` model this package wrote (`safe_mode=True`; QRNet classes registered)."""
    import keras

    import qrnet  # noqa: F401  (registers the restorer's classes)

    return keras.models.load_model(path, safe_mode=True, compile=False)

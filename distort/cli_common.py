"""Helpers shared by the `distort`, `deepcorrect` and `qrnet` command lines."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Callable


class CLIError(ValueError):
    """An error the command line reports as one line."""


def fail_cleanly(run: Callable, args) -> int:
    """Runs `run(args)`; expected errors become one stderr line and exit 2.

    Set `DEEPCORRECT_DEBUG=1` to see the full traceback.
    """
    try:
        run(args)
    except KeyboardInterrupt:
        print("interrupted: finished work was kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError, PermissionError,
            OSError) as e:
        if os.environ.get("DEEPCORRECT_DEBUG"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
    """Raises unless `path` is new or `overwrite` is set."""
    if Path(path).exists() and not overwrite:
        raise CLIError(f"output exists: {path} (pass --overwrite to replace it)")


def load_model_spec(name: str, weights: str | None = None):
    """Loads a classifier for the command lines.

    Args:
        name: A `.keras` file, or a `keras.applications` name such as
            "MobileNetV2" (optionally "MobileNet:0.5:160" for alpha and size).
        weights: For an application: a weights file (offline), "imagenet"
            (download), or None for "imagenet".

    Returns:
        `(label, spec, input_size)` where `spec` is `(model, preprocess)`.
    """
    import keras

    from distort import data

    p = Path(name)
    if p.suffix == ".keras":
        if not p.is_file():
            raise CLIError(f"model file not found: {p}")
        model = keras.models.load_model(p, safe_mode=True)
        size = model.input_shape[1]
        return p.stem, (model, None), size
    app, *extra = name.split(":")
    if app not in data.APPLICATIONS:
        raise CLIError(f"--model must be a .keras file or one of {sorted(data.APPLICATIONS)}. "
                       f"Received: {name}")
    kwargs = {}
    size = data.APPLICATIONS[app][1]
    if extra:
        kwargs["alpha"] = float(extra[0])
    if len(extra) > 1:
        size = int(extra[1])
        kwargs["input_shape"] = (size, size, 3)
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise CLIError(f"--weights file not found: {weights}")
    model = getattr(keras.applications, app)(weights=weights or "imagenet", **kwargs)
    return name, (model, data.preprocessor(app)), size

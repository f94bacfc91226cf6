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

    A multi-line error message is joined into one line. Set
    `DEEPCORRECT_DEBUG=1` to see the full traceback.

    Args:
        run: The subcommand, a function of the parsed arguments.
        args: The parsed arguments.

    Returns:
        The exit status: 0, 2 for an error, 130 when interrupted.
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
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
    """Raises unless `path` is new or `overwrite` is set.

    Args:
        path: The output path.
        overwrite: Whether an existing output may be replaced.

    Raises:
        CLIError: If `path` exists and `overwrite` is False.
    """
    if Path(path).exists() and not overwrite:
        raise CLIError(f"output exists: {path} (pass --overwrite to replace it)")


def load_keras_file(path: str | os.PathLike, flag: str = "--model", compile: bool = True):
    """Loads a `.keras` file with `safe_mode=True` (no `Lambda` or other code in the file).

    Args:
        path: The `.keras` file.
        flag: The option that named it, for the error message.
        compile: Whether to restore the training configuration too.

    Returns:
        The Keras model.

    Raises:
        CLIError: For a missing file, a directory, another suffix, or a file
            Keras cannot load safely (not a `.keras` archive, unknown or unsafe
            layers such as `Lambda`), naming it.
    """
    import keras

    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{flag} must be a .keras file, not a directory: {p}")
    if not p.is_file():
        raise CLIError(f"model file not found: {p}")
    if p.suffix != ".keras":  # legacy .h5 models may carry Lambda bytecode
        raise CLIError(f"{flag} must be a .keras file. Received: {p}")
    try:
        return keras.models.load_model(p, safe_mode=True, compile=compile)
    except (ValueError, TypeError, OSError) as e:
        raise CLIError(f"{flag} is not a loadable .keras model ({' '.join(str(e).split())}): "
                       f"{p}") from None


def load_model_spec(name: str, weights: str | None = None, flag: str = "--model"):
    """Loads a classifier for the command lines.

    Args:
        name: A `.keras` file, or a `keras.applications` name such as
            "MobileNetV2" (optionally "MobileNet:0.5:160" for alpha and size).
        weights: For an application: a weights file (offline), "imagenet"
            (download), or None for "imagenet".
        flag: The option that named the model, for error messages.

    Returns:
        `(label, spec, input_size)` where `spec` is `(model, preprocess)`.

    Raises:
        CLIError: For a missing or unloadable `.keras` file, a directory, an
            unknown application name or a missing weights file.
    """
    import keras

    from distort import data

    p = Path(name)
    if p.suffix == ".keras":
        model = load_keras_file(p, flag)
        size = model.input_shape[1]
        return p.stem, (model, None), size
    app, *extra = name.split(":")
    if app not in data.APPLICATIONS:
        raise CLIError(f"{flag} must be a .keras file or one of {sorted(data.APPLICATIONS)}. "
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

"""Helpers shared by the `distort`, `deepcorrect` and `qrnet` command lines.

This module imports nothing heavy, so that a command line can quiet
TensorFlow (`quiet_tensorflow`) before anything loads it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

from robustkit.io import WriteError


class CLIError(ValueError):
    """An error the command line reports as one line."""


def fail_cleanly(run: Callable, args, positionals: Sequence[str] = ()) -> int:
    """Runs `run(args)`; expected errors become one stderr line and exit 2.

    A multi-line error message is joined into one line. A failure to write an
    output (`robustkit.io.WriteError`) names the option that chose the path and
    the path, e.g. `--out: cannot write out/x.json: Permission denied`. Set
    `DEEPCORRECT_DEBUG=1` to see the full traceback.

    Args:
        run: The subcommand, a function of the parsed arguments.
        args: The parsed arguments.
        positionals: Destinations of positional arguments (named without "--").

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
        if isinstance(e, WriteError):
            flag = option_for_path(args, e.path, positionals)
            message = f"{flag}: {message}" if flag else message
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


def run_command_line(parser, argv: Sequence[str] | None = None,
                     positionals: Sequence[str] = ()) -> int:
    """Parses `argv`, quiets TensorFlow unless `--verbose`, runs the subcommand cleanly.

    The `main()` of every command line: each subcommand's parser sets `run` (a function of
    the parsed arguments) as a default, and the top parser has `--verbose` (`show_logs`).

    Args:
        parser: The command line's `argparse.ArgumentParser`.
        argv: The arguments (None: `sys.argv[1:]`).
        positionals: Destinations of positional arguments (see `fail_cleanly`).

    Returns:
        The exit status (see `fail_cleanly`).

    Example:

    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--verbose", dest="show_logs", action="store_true")
    >>> parser.set_defaults(run=lambda args: None)
    >>> run_command_line(parser, [])
    0
    """
    args = parser.parse_args(argv)
    quiet_tensorflow(args.show_logs)
    return fail_cleanly(args.run, args, positionals)


def load_data(path: str | os.PathLike, split: str = "test", size: int | None = None,
              limit: int | None = None, short_side: int | None = None, every: int = 1,
              resize: str = "crop", flag: str = "--data"):
    """A command's images and labels (`robustkit.data.load_images`), errors naming `flag`.

    The one loader of the three command lines: an image folder (photos centre-cropped to
    `size`, default 224, or squashed with `resize="squash"`), a CIFAR-style `.npz` (the
    `split` arrays) or one image file. Of a folder, only the photos used are read.

    Args:
        path: The folder, `.npz` or image file.
        split: `"train"` or `"test"`: which arrays of a CIFAR-style `.npz`.
        size: Side of folder photos (None: 224).
        limit: Keep the first `limit` images (after `every`); None for all.
        short_side: Short side before a centre crop (default 256/224 of `size`).
        every: Keep every `every`-th image.
        resize: "crop" or "squash".
        flag: The option that named `path`, for error messages.

    Returns:
        `(images, labels)`: uint8 `[N, H, W, C]` and int64 `[N]` (None without labels).

    Raises:
        CLIError: naming `flag`, for a missing or unreadable `path`.

    Example:

    >>> load_data("missing.npz")
    Traceback (most recent call last):
    ...
    robustkit.cli_common.CLIError: --data: path does not exist: missing.npz
    """
    from robustkit.data import load_images

    try:
        return load_images(path, split=split, size=size or 224, short_side=short_side,
                           limit=limit, resize=resize, every=every)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(f"{flag}: {e}") from None


def option_for_path(args, path: str | os.PathLike, positionals: Iterable[str] = ()) -> str | None:
    """The command-line option whose value is `path`, a folder holding it, or its stem.

    Args:
        args: The parsed arguments.
        path: A path the command wrote or tried to write.
        positionals: Destinations of positional arguments (named without "--").

    Returns:
        "--out" (or the positional's name) for the most specific match, or None.

    Example:

    >>> import argparse
    >>> option_for_path(argparse.Namespace(out="runs/a", seed=0), "runs/a/sweep.json")
    '--out'
    """
    target = Path(path)
    best, best_length = None, -1
    for dest, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, (str, os.PathLike)) or not os.fspath(item):
                continue
            given = Path(item)
            if target == given or given in target.parents or (
                    target.parent == given.parent and target.name.startswith(given.name + ".")):
                if len(os.fspath(given)) > best_length:
                    best, best_length = dest, len(os.fspath(given))
    if best is None:
        return None
    return best if best in positionals else "--" + best.replace("_", "-")


def quiet_tensorflow(verbose: bool = False) -> None:
    """Hides TensorFlow's start-up and info log lines, unless asked to show them.

    Unless `verbose` is set or the user has set `TF_CPP_MIN_LOG_LEVEL`
    themselves, this sets `TF_CPP_MIN_LOG_LEVEL=3` and Python absl logging to
    errors, and imports TensorFlow with the process's stderr (file descriptor
    2) set aside: some start-up lines (oneDNN's) are printed by static
    initialisers that no setting reaches. Should the import fail, what it
    printed is shown. Call it before anything imports TensorFlow.

    Args:
        verbose: Show the log lines (the command lines' `--verbose`).
    """
    if verbose or os.environ.get("TF_CPP_MIN_LOG_LEVEL"):
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules:
        with _stderr_set_aside() as captured:
            try:
                import tensorflow  # noqa: F401
            except BaseException:
                captured.replay = True
                raise
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)


class _Captured:
    replay = False


@contextlib.contextmanager
def _stderr_set_aside():
    """Sends file descriptor 2 to a temporary file; shows it afterwards if `replay` is set."""
    captured = _Captured()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to hide
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if captured.replay:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace"))


def wants_verbose(argv: Sequence[str]) -> bool:
    """Whether `--verbose` is among the global options (those before the subcommand)."""
    for token in argv:
        if not token.startswith("-"):
            return False
        if token == "--verbose":
            return True
    return False


def quiet_command_line(prog: str) -> None:
    """Quiets TensorFlow if this process is the `prog` command line (see `quiet_tensorflow`).

    Called by a package's `__init__` before it imports TensorFlow, since
    `python -m prog` and the `prog` script import the package first. A process
    that merely imports the package (a notebook, a test run) is left alone.

    Args:
        prog: "deepcorrect" or "qrnet": the script's name and the module run with `-m`.
    """
    argv = list(getattr(sys, "orig_argv", []))
    module = None
    for i, token in enumerate(argv[1:], 1):
        if token == "-m" and i + 1 < len(argv):
            module = argv[i + 1]
            break
        if token.startswith("-m") and len(token) > 2:
            module = token[2:]
            break
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script == prog or (module is not None and (module == prog or module.startswith(prog + "."))):
        quiet_tensorflow(verbose=wants_verbose(sys.argv[1:]))


def require_positive(args, *names: str) -> None:
    """Raises CLIError for each option of `names` that is set and below 1.

    Args:
        args: the parsed options.
        *names: attribute names (`"repair_images"` is the option `--repair-images`).

    Example:

    >>> import argparse
    >>> require_positive(argparse.Namespace(limit=None, every=2), "limit", "every")
    """
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1. Received: {value}")


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
        CLIError: For a missing file, a directory, another suffix, a file that
            is not a zip archive (as every `.keras` file is), or a file
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
    if not zipfile.is_zipfile(p):  # Keras reports any other file as "File not found"
        raise CLIError(f"{flag}: {p} is not a Keras model file (not a zip archive)")
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

    from robustkit import data

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

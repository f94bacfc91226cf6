"""Atomic file writes: a temporary file in the same folder, then a rename.

A job killed mid-write leaves either the old file or the new one, never half
of one. The temporary file or folder is created as a plain `open()` or
`os.makedirs` would create it (mode 0666 or 0777 less the process umask: 0644
and 0755 under the usual umask 0022), so the renamed output gets the same
permissions as any other file the user writes. A failure to write is a
`WriteError` that names the output, never the hidden temporary file.

Example:

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "a.json")
>>> atomic_write_text(path, "{}")
>>> open(path).read()
'{}'
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator


class WriteError(OSError):
    """An output could not be written; names the output, not its temporary file.

    Attributes:
        path: The output as the caller named it.
        reason: What went wrong, e.g. "Permission denied".
    """

    def __init__(self, path: str | os.PathLike, error: OSError | str):
        reason = error if isinstance(error, str) else (error.strerror or str(error))
        code = None if isinstance(error, str) else error.errno
        super().__init__(code, reason)
        self.path = os.fspath(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


def make_dirs(path: str | os.PathLike) -> Path:
    """Creates a folder and its parents (if missing), as `os.makedirs` does.

    Args:
        path: The folder.

    Returns:
        The folder as a `Path`.

    Raises:
        WriteError: If it cannot be created (naming `path`).

    Example:

    >>> import tempfile, os
    >>> make_dirs(os.path.join(tempfile.mkdtemp(), "a", "b")).is_dir()
    True
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise WriteError(path, "a file is in the way: a folder is needed") from None
    except OSError as e:
        raise WriteError(path, e) from None
    return path


def _create_beside(path: Path, suffix: str, create: Callable[[str], None]) -> str:
    """Creates a new hidden name `.<name>.<random><suffix>` beside `path` with `create`."""
    for _ in range(100):
        candidate = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(path.parent))


def _new_file(name: str) -> None:
    # The mode open() uses: the umask applies, as for any file the user writes.
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _new_dir(name: str) -> None:
    os.mkdir(name, 0o777)


def _mentions(error: OSError, name: str) -> bool:
    """Whether an error is about the temporary `name` (so it is a failure to write)."""
    return name in (error.filename, error.filename2) or os.path.basename(name) in str(error)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it onto `path` on success.

    The temporary name is hidden (it starts with ".") and ends in all of
    `path`'s suffixes (".weights.h5", ".keras"), so writers that check the
    suffix accept it. The file is created with the mode `open()` would give it
    (the umask applies). A killed process may leave one behind; it is never read.

    Raises:
        WriteError: If the folder, the temporary file or the rename fails, or
            the writer fails on the temporary file: naming `path`.

    Example:

    >>> import tempfile, os, numpy as np
    >>> out = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> with atomic_path(out) as tmp:
    ...     np.save(tmp, np.zeros(2))
    """
    target = Path(path)
    try:
        make_dirs(target.parent)
        tmp = _create_beside(target, "".join(target.suffixes), _new_file)
    except OSError as e:
        raise WriteError(path, e.reason if isinstance(e, WriteError) else e) from None
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and _mentions(e, tmp):
            raise WriteError(path, e) from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """Yields a new temporary folder beside `path`; renames it onto `path` on success.

    For outputs that are folders, such as a SavedModel. The folder is created
    with the mode `os.makedirs` would give it (the umask applies). An existing
    `path` is first renamed aside and deleted after the new folder is in place,
    so `path` is only ever missing for the instant between two renames, never
    partial.

    Raises:
        WriteError: If the temporary folder or the renames fail, or the writer
            fails inside the temporary folder: naming `path`.

    Example:

    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "export")
    >>> with atomic_dir(out) as tmp:
    ...     open(os.path.join(tmp, "a.txt"), "w").close()
    >>> os.listdir(out)
    ['a.txt']
    """
    target = Path(path)
    try:
        make_dirs(target.parent)
        tmp = _create_beside(target, "", _new_dir)
    except OSError as e:
        raise WriteError(path, e.reason if isinstance(e, WriteError) else e) from None
    try:
        yield tmp
        old = None
        if target.exists():
            old = _create_beside(target, ".old", _new_dir)
            os.replace(target, os.path.join(old, target.name))
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and _mentions(e, tmp):
            raise WriteError(path, e) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 text to `path` atomically, flushed to disk before the rename.

    Raises:
        WriteError: If `path` cannot be written (naming it).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

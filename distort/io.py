"""Atomic file writes: a temporary file in the same folder, then a rename.

A job killed mid-write leaves either the old file or the new one, never half
of one.

Example:

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "a.json")
>>> atomic_write_text(path, "{}")
>>> open(path).read()
'{}'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it onto `path` on success.

    The temporary name is hidden (it starts with ".") and ends in all of
    `path`'s suffixes (".weights.h5", ".keras"), so writers that check the
    suffix accept it. A killed process may leave one behind; it is never read.

    Example:

    >>> import tempfile, os, numpy as np
    >>> out = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> with atomic_path(out) as tmp:
    ...     np.save(tmp, np.zeros(2))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix="".join(path.suffixes),
                               dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """Yields a new temporary folder beside `path`; renames it onto `path` on success.

    For outputs that are folders, such as a SavedModel. An existing `path` is
    first renamed aside and deleted after the new folder is in place, so `path`
    is only ever missing for the instant between two renames, never partial.

    Example:

    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "export")
    >>> with atomic_dir(out) as tmp:
    ...     open(os.path.join(tmp, "a.txt"), "w").close()
    >>> os.listdir(out)
    ['a.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        yield tmp
        old = None
        if path.exists():
            old = tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent)
            os.replace(path, os.path.join(old, path.name))
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 text to `path` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

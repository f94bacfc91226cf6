"""Loaders for the released corruption datasets: ImageNet-C, CIFAR-10-C and CIFAR-100-C.

ImageNet-C (Hendrycks & Dietterich 2019) unpacks to folders
`<root>/<corruption>/<severity>/<wnid>/<file>.JPEG` (224 x 224 crops), or
with the archives' family folders in between
(`<root>/noise/gaussian_noise/1/...`); both are found. CIFAR-10-C and
CIFAR-100-C are `<root>/<corruption>.npy` files of 50,000 images (severities
1 to 5, 10,000 each, in that order) and one `<root>/labels.npy`. Nothing is
downloaded: pass the folder you unpacked.

Example:

>>> from distort import c_datasets
>>> x, y = c_datasets.load_cifar_c("CIFAR-10-C", "fog", 3)  # doctest: +SKIP
>>> x.shape  # doctest: +SKIP
(10000, 32, 32, 3)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from robustkit.data import IMAGE_SUFFIXES, ImageFolder, check_limit, read_image
from distort.imagenet_c.constants import ALL, FAMILIES

SEVERITIES = (1, 2, 3, 4, 5)


def _root(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"root must be an existing folder. Received: {p}")
    return p


def _check_severity(severity) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or \
            severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5. Received: severity={severity!r}")
    return int(severity)


# ----------------------------------------------------------------------------
# ImageNet-C folders
# ----------------------------------------------------------------------------
def imagenet_c_folder(root: str | os.PathLike, corruption: str) -> Path:
    """The folder of one corruption in an ImageNet-C tree (directly or in its family folder).

    Raises:
        ValueError: If the tree has no such corruption folder (the message
            lists the corruptions it has).
    """
    base = _root(root)
    for candidate in [base / corruption] + [base / family / corruption for family in FAMILIES] + \
            [base / "extra" / corruption]:
        if candidate.is_dir():
            return candidate
    raise ValueError(f"corruption must be one of the corruptions found in {base}: "
                     f"{imagenet_c_corruptions(base)}. Received: corruption={corruption!r}")


def imagenet_c_corruptions(root: str | os.PathLike) -> list[str]:
    """The corruptions of an ImageNet-C tree, in the benchmark's order, then any others."""
    base = _root(root)
    found = set()
    for folder in [base] + [base / family for family in (*FAMILIES, "extra")]:
        if folder.is_dir():
            found |= {d.name for d in folder.iterdir()
                      if d.is_dir() and any((d / str(s)).is_dir() for s in SEVERITIES)}
    return [c for c in ALL if c in found] + sorted(found - set(ALL))


def list_imagenet_c(root: str | os.PathLike, corruption: str, severity: int,
                    class_index: Mapping[str, int] | None = None) -> tuple[list[Path], np.ndarray]:
    """The image files of one corruption and severity, and their labels.

    Args:
        root: The ImageNet-C folder.
        corruption: A corruption folder's name, e.g. "gaussian_noise".
        severity: 1..5.
        class_index: WordNet id -> class index (e.g. Keras's ImageNet
            order). Default: the sorted wnids of the folder, which is the
            standard ImageNet order when all 1,000 classes are there; pass the
            mapping for a partial tree.

    Returns:
        `(files, labels)`: the files sorted by wnid and name, int64 labels.

    Raises:
        ValueError: For a missing folder, a wnid not in `class_index`, or no image.
    """
    folder = imagenet_c_folder(root, corruption) / str(_check_severity(severity))
    if not folder.is_dir():
        raise ValueError(f"severity {severity} of {corruption!r} is missing: no folder {folder}")
    wnids = sorted(d.name for d in folder.iterdir() if d.is_dir())
    index = {w: i for i, w in enumerate(wnids)} if class_index is None else dict(class_index)
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise ValueError(f"class_index has no label for the class folder(s) {unknown[:5]} "
                         f"of {folder}")
    files, labels = [], []
    for w in wnids:
        for f in sorted((folder / w).iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(index[w])
    if not files:
        raise ValueError(f"no images in {folder}")
    return files, np.asarray(labels, np.int64)


def load_imagenet_c(root: str | os.PathLike, corruption: str, severity: int, *,
                    class_index: Mapping[str, int] | None = None, size: int | None = None,
                    limit: int | None = None, every: int = 1) -> ImageFolder:
    """Reads one corruption and severity of an ImageNet-C tree as uint8 arrays.

    Args:
        root: The ImageNet-C folder.
        corruption: A corruption folder's name.
        severity: 1..5.
        class_index: WordNet id -> class index (see `list_imagenet_c`).
        size: Side of the square images (center crop, see
            `robustkit.data.read_image`); None keeps the files' size (224).
        limit: At most this many images (the first, in file order).
        every: Every `every`-th image only.

    Returns:
        A `robustkit.data.ImageFolder` (images, labels, files, class names).

    Raises:
        ValueError: For a missing folder or unreadable image, bad `limit`/`every`.
    """
    limit = check_limit(limit)
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an integer >= 1. Received: every={every!r}")
    files, labels = list_imagenet_c(root, corruption, severity, class_index)
    files, labels = files[::every], labels[::every]
    if limit is not None:
        files, labels = files[:limit], labels[:limit]
    images = [read_image(f, size) for f in files]
    if len({im.shape for im in images}) > 1:
        raise ValueError(f"the images of {corruption!r} severity {severity} have different "
                         f"sizes; pass size= to crop them to one square")
    names = sorted({f.parent.name for f in files})
    return ImageFolder(np.stack(images), labels, [str(f) for f in files], names)


# ----------------------------------------------------------------------------
# CIFAR-10-C / CIFAR-100-C .npy files
# ----------------------------------------------------------------------------
def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path} is not a plain .npy array ({e}); pickled arrays are refused") \
            from None


def cifar_c_corruptions(root: str | os.PathLike) -> list[str]:
    """The corruptions of a CIFAR-10-C / CIFAR-100-C folder (its `.npy` files but labels)."""
    names = {p.stem for p in _root(root).glob("*.npy")} - {"labels"}
    return [c for c in ALL if c in names] + sorted(names - set(ALL))


def load_cifar_c(root: str | os.PathLike, corruption: str, severity: int,
                 limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One corruption and severity of CIFAR-10-C or CIFAR-100-C.

    Args:
        root: The folder of `<corruption>.npy` and `labels.npy`.
        corruption: A corruption, e.g. "fog".
        severity: 1..5: the severity's fifth of the file.
        limit: At most this many images (the first of the severity).

    Returns:
        `(images, labels)`: uint8 `[N, 32, 32, 3]` and int64 `[N]` (N = 10,000).

    Raises:
        ValueError: For a missing file, a pickled file, or arrays that do not
            split into five severities with one label per image.
    """
    base = _root(root)
    severity = _check_severity(severity)
    limit = check_limit(limit)
    path = base / f"{corruption}.npy"
    if not path.is_file():
        raise ValueError(f"corruption must be one of the .npy files of {base}: "
                         f"{cifar_c_corruptions(base)}. Received: corruption={corruption!r}")
    if not (base / "labels.npy").is_file():
        raise ValueError(f"labels.npy is missing from {base}")
    images, labels = _load_npy(path), _load_npy(base / "labels.npy")
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) % len(SEVERITIES):
        raise ValueError(f"{path} must hold [5 * n, H, W, C] images (five severities). "
                         f"Received shape: {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"labels.npy must hold one label per image of {path}: "
                         f"{len(labels)} labels for {len(images)} images")
    n = len(images) // len(SEVERITIES)
    start = (severity - 1) * n
    stop = start + (n if limit is None else min(n, limit))
    return (np.asarray(images[start:stop], np.uint8),
            np.asarray(labels[start:stop]).reshape(-1).astype(np.int64))

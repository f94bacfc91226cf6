"""Shared fixtures: real photos and CIFAR-10 from ../shared, read independently of the package."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IMAGENET_SAMPLES = SHARED / "data" / "imagenet-samples"
CIFAR10 = SHARED / "data" / "cifar10" / "cifar10.npz"


def import_example(name: str):
    """The module of `examples/<name>.py`, imported as the scripts run (their folder on the path)."""
    import importlib
    import sys

    sys.path.insert(0, str(REPO / "examples"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def center_crop(path: Path, size: int) -> np.ndarray:
    """A photo's center square, resized (bilinear) to `size` x `size`: uint8 `[size, size, 3]`."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return np.asarray(im.resize((size, size), Image.BILINEAR))


@pytest.fixture(scope="session")
def photos() -> np.ndarray:
    """Four real ImageNet photos, center-cropped to 64x64, uint8 [4, 64, 64, 3]."""
    if not IMAGENET_SAMPLES.is_dir():
        pytest.skip(f"real photos not found at {IMAGENET_SAMPLES}")
    files = sorted(IMAGENET_SAMPLES.glob("*.jpg"))[:4]
    return np.stack([center_crop(f, 64) for f in files])


@pytest.fixture(scope="session")
def cifar10_small() -> tuple[np.ndarray, np.ndarray]:
    """The first 512 CIFAR-10 test images and labels."""
    if not CIFAR10.is_file():
        pytest.skip(f"CIFAR-10 not found at {CIFAR10}")
    with np.load(CIFAR10, allow_pickle=False) as d:
        return d["x_test"][:512], d["y_test"][:512].astype(np.int64)

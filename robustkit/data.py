"""Dataset loaders: CIFAR-10, Fashion-MNIST, image folders, ImageNet-style crops.

Every loader accepts a local path (these machines have no internet) and falls
back to Keras's download when none is given and no local copy exists.

Example:

>>> (x, y), _ = load_cifar10("../shared/data/cifar10/cifar10.npz")  # doctest: +SKIP
>>> x.shape, x.dtype
((50000, 32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

import csv
import gzip
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ON_BAD_FILE = ("skip", "raise")
# How a photo becomes a square: "crop" resizes the short side then keeps the centre
# square (the usual ImageNet evaluation); "squash" resizes the whole photo to the
# square, aspect ratio not kept (nothing is cut off).
RESIZE_MODES = ("crop", "squash")
MAX_PIXELS = 100_000_000

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _existing(path: str | os.PathLike, kind: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"path does not exist: {p}")
    if kind == "file" and not p.is_file():
        raise ValueError(f"path must be a file, not a directory: {p}")
    if kind == "dir" and not p.is_dir():
        raise ValueError(f"path must be a directory: {p}")
    return p


def load_cifar10(path: str | os.PathLike | None = None) -> Arrays:
    """Loads CIFAR-10 as uint8 NHWC arrays.

    Args:
        path: An `.npz` with `x_train, y_train, x_test, y_test` (as
            `../shared/data/cifar10/cifar10.npz`). `None` uses
            `keras.datasets.cifar10` (downloads once).

    Returns:
        `((x_train, y_train), (x_test, y_test))`, labels as int64 `[N]`.
    """
    if path is None:
        import keras

        (xt, yt), (xv, yv) = keras.datasets.cifar10.load_data()
    else:
        d = read_npz(path)
        missing = sorted({"x_train", "y_train", "x_test", "y_test"} - set(d))
        if missing:
            raise ValueError(f"{path} is not a CIFAR-style .npz: no array {', '.join(missing)}. "
                             f"Found: {', '.join(d)}")
        xt, yt, xv, yv = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    return (xt, yt.reshape(-1).astype(np.int64)), (xv, yv.reshape(-1).astype(np.int64))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(path: str | os.PathLike | None = None) -> Arrays:
    """Loads Fashion-MNIST as uint8 `[N, 28, 28, 1]` arrays.

    Args:
        path: A folder with the four original idx files (gzipped or not).
            `None` uses `/usr/share/datasets/fashion-mnist` (Debian package
            `dataset-fashion-mnist`) if present, else `keras.datasets`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, labels as int64 `[N]`.
    """
    folder = Path(path) if path is not None else FASHION_MNIST_DIR
    if path is None and not folder.is_dir():
        import keras

        (xt, yt), (xv, yv) = keras.datasets.fashion_mnist.load_data()
    else:
        _existing(folder, "dir")

        def read(stem):
            for name in (stem + ".gz", stem):
                if (folder / name).exists():
                    return _read_idx(folder / name)
            raise ValueError(f"missing Fashion-MNIST file {stem}(.gz) in {folder}")

        xt, yt = read("train-images-idx3-ubyte"), read("train-labels-idx1-ubyte")
        xv, yv = read("t10k-images-idx3-ubyte"), read("t10k-labels-idx1-ubyte")
    return (xt[..., None], yt.astype(np.int64)), (xv[..., None], yv.astype(np.int64))


@dataclass
class ImageFolder:
    """Images read from a folder, with their labels and what was skipped."""

    images: np.ndarray
    labels: np.ndarray
    files: list[str]
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)


def center_crop(image, size: int, short_side: int | None = None):
    """Resizes a PIL image's short side, then crops its center square.

    Args:
        image: A `PIL.Image`.
        size: Side of the square crop.
        short_side: Short side after resizing; `None` keeps 256/224 of `size`
            (the usual ImageNet evaluation ratio).

    Returns:
        A `PIL.Image` of `size` x `size`.
    """
    from PIL import Image

    short_side = short_side or int(round(size * 256 / 224))
    w, h = image.size
    scale = short_side / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                         Image.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def squash(image, size: int):
    """Resizes a whole PIL image to `size` x `size` (bilinear; the aspect ratio is not kept).

    Args:
        image: A `PIL.Image`.
        size: Side of the square.

    Returns:
        A `PIL.Image` of `size` x `size`.
    """
    from PIL import Image

    return image.resize((size, size), Image.BILINEAR)


def check_resize(resize: str) -> str:
    """Raises a ValueError unless `resize` is one of `RESIZE_MODES`."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}. Received: resize={resize!r}")
    return resize


def read_image(path: str | os.PathLike, size: int | None = None, short_side: int | None = None,
               channels: int = 3, resize: str = "crop") -> np.ndarray:
    """Reads one image file as uint8 HWC, optionally made a `size` square.

    Grayscale, palette and RGBA files are converted to RGB (alpha dropped),
    or to one gray channel with `channels=1`.

    Args:
        path: The image file.
        size: Side of the square (see `resize`); None keeps the size.
        short_side: Short side before a center crop (default 256/224 of `size`).
        channels: 3 (RGB, default) or 1 (gray).
        resize: "crop" (default: `center_crop`) or "squash" (`squash`: the whole
            photo, aspect ratio not kept).

    Returns:
        A uint8 array `[H, W, channels]`.

    Raises:
        ValueError: For a missing, empty, truncated, huge or non-image file.
    """
    from PIL import Image, UnidentifiedImageError

    check_resize(resize)
    p = _existing(path)
    if p.stat().st_size == 0:
        raise ValueError(f"image file is empty (0 bytes): {p}")
    try:
        with Image.open(p) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise ValueError(f"image is too large ({im.size[0]}x{im.size[1]} pixels, "
                                 f"at most {MAX_PIXELS}): {p}")
            im.load()
            im = im.convert("RGB" if channels == 3 else "L")
            if size is not None:
                im = center_crop(im, size, short_side) if resize == "crop" else squash(im, size)
            arr = np.asarray(im)
    except Image.DecompressionBombError:
        raise ValueError(f"image is too large (more than {MAX_PIXELS} pixels): {p}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"not a readable image ({type(e).__name__}: {e}): {p}") from None
    return arr if channels == 3 else arr[..., None]


def load_image_folder(path: str | os.PathLike, size: int = 224, short_side: int | None = None,
                      on_bad_file: str = "skip", limit: int | None = None, every: int = 1,
                      resize: str = "crop") -> ImageFolder:
    """Loads a folder of photos: class subfolders, or files plus `labels.csv`.

    With a `labels.csv` (columns `file,label[,name]`, as
    `../shared/data/imagenet-samples`), labels are its integer `label` column;
    otherwise each subfolder is a class, numbered in sorted order.

    Only the files returned are read: with `limit` the reading stops at the
    `limit`-th readable image, with `every` only every `every`-th file is opened.

    Args:
        path: The folder.
        size: Side of the square images (see `resize`).
        short_side: Short side before cropping (default 256/224 of `size`).
        on_bad_file: "skip" (default: skip unreadable files and list them in
            `skipped`) or "raise".
        limit: Return at most this many images (the first readable ones, in
            file order); None for all.
        every: Use every `every`-th file (1, the default: all).
        resize: "crop" (default: resize the short side, keep the centre) or
            "squash" (the whole photo resized to the square).

    Returns:
        An `ImageFolder` with uint8 images `[N, size, size, 3]`.

    Raises:
        ValueError: For a missing folder, bad arguments, or no readable image.
    """
    if on_bad_file not in ON_BAD_FILE:
        raise ValueError(f"on_bad_file must be one of {ON_BAD_FILE}. Received: on_bad_file={on_bad_file!r}")
    check_resize(resize)
    limit = check_limit(limit)
    check_every(every)
    root = _existing(path, "dir")
    entries: list[tuple[Path, int]] = []
    class_names: list[str] = []
    table = root / "labels.csv"
    if table.is_file():
        names: dict[int, str] = {}
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                entries.append((root / row["file"], int(row["label"])))
                names[int(row["label"])] = row.get("name") or str(row["label"])
        class_names = [names.get(i, str(i)) for i in range(max(names) + 1)] if names else []
    else:
        class_names = sorted(d.name for d in root.iterdir() if d.is_dir())
        for i, name in enumerate(class_names):
            entries += [(f, i) for f in sorted((root / name).iterdir()) if f.is_file()]
    entries = entries[::every]
    images, labels, files, skipped = [], [], [], []
    for file, label in entries:
        if limit is not None and len(images) == limit:
            break
        try:
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"not an image file (suffix {file.suffix!r}): {file}")
            images.append(read_image(file, size, short_side, resize=resize))
        except ValueError:
            if on_bad_file == "raise":
                raise
            skipped.append(str(file))
            continue
        labels.append(label)
        files.append(str(file))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable file(s) in {root}", stacklevel=2)
    if not images:
        raise ValueError(f"no readable images in {root}")
    return ImageFolder(np.stack(images), np.asarray(labels, np.int64), files, class_names, skipped)


def check_limit(limit) -> int | None:
    """Checks a count of images to use: a positive integer, or None for all."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                              or limit < 1):
        raise ValueError(f"limit must be a positive integer or None. Received: limit={limit!r}")
    return None if limit is None else int(limit)


# keras.applications name -> (module, default input size)
APPLICATIONS = {
    "MobileNetV2": ("mobilenet_v2", 224),
    "MobileNet": ("mobilenet", 224),
    "ResNet50": ("resnet50", 224),
    "VGG16": ("vgg16", 224),
    "InceptionV3": ("inception_v3", 299),
    "EfficientNetB0": ("efficientnet", 224),
}


def check_every(every) -> int:
    """Returns `every` (keep every `every`-th image), or raises for anything but an integer >= 1.

    Example:

    >>> check_every(3)
    3
    """
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an integer >= 1. Received: every={every!r}")
    return int(every)


def preprocessor(name: str | None) -> Callable | None:
    """Returns a `keras.applications` model's input conversion, as a function.

    Args:
        name: An application name from `APPLICATIONS` (e.g. "MobileNetV2"),
            a module name (e.g. "mobilenet_v2"), a `robustkit.preprocessing`
            mode (e.g. "tf"), or None for the identity.

    Returns:
        A function of float images on 0..255 returning float32 tensors, or None.

    Example:

    >>> float(preprocessor("MobileNetV2")(np.full((1, 1, 1, 3), 255.0))[0, 0, 0, 0])
    1.0
    """
    if name is None:
        return None
    import tensorflow as tf

    from robustkit.preprocessing import resolve

    try:
        convert = resolve(APPLICATIONS.get(name, (name, None))[0])
    except ValueError:
        raise ValueError(f"preprocess must be one of {sorted(APPLICATIONS)}, a keras.applications "
                         f"module name or a robustkit.preprocessing mode. Received: "
                         f"preprocess={name!r}") from None
    return lambda images: convert(tf.cast(images, tf.float32))


SPLITS = ("train", "test")


def load_images(path: str | os.PathLike, split: str = "test", size: int = 224,
                short_side: int | None = None, limit: int | None = None, resize: str = "crop",
                every: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Loads images and labels from an image folder, an `.npz` or one image file.

    An `.npz` holds `x_<split>`/`y_<split>` (CIFAR-style, as
    `../shared/data/cifar10/cifar10.npz`), or `x`/`y`, or `images`/`labels`;
    labels are optional. A folder is read by `load_image_folder` (photos
    center-cropped to `size`); a single image file is read as it is.

    Args:
        path: The folder, `.npz` or image file.
        split: `"train"` or `"test"`: which arrays of a CIFAR-style `.npz`.
        size: Side of the center crop of folder photos.
        short_side: Short side before cropping (default 256/224 of `size`).
        limit: Keep the first `limit` images (a folder reads no more).
        resize: How folder photos become squares: "crop" or "squash" (see
            `load_image_folder`).
        every: Keep every `every`-th image (before `limit`); of a folder, only those are read.

    Returns:
        `(images, labels)`: uint8 `[N, H, W, C]` and int64 `[N]` (or None).

    Raises:
        ValueError: For a missing path, an unknown `split`, an `.npz` without
            image arrays, pickled arrays or images that are not `[N, H, W, C]`.

    Example:

    >>> x, y = load_images("../shared/data/cifar10/cifar10.npz", limit=8)  # doctest: +SKIP
    >>> x.shape, y.shape  # doctest: +SKIP
    ((8, 32, 32, 3), (8,))
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    limit = check_limit(limit)
    check_every(every)
    check_resize(resize)
    source = Path(path)
    labels: np.ndarray | None
    if source.is_dir():
        folder = load_image_folder(source, size=size, short_side=short_side, limit=limit,
                                   resize=resize, every=every)
        images, labels = folder.images, folder.labels
    elif source.suffix == ".npz":
        images, labels = _npz_arrays(_existing(source), split)
        images, labels = images[::every], None if labels is None else labels[::every]
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        images, labels = read_image(source)[None], None
    else:
        _existing(source)
        raise ValueError(f"path must be an image folder, an .npz or an image file "
                         f"({', '.join(IMAGE_SUFFIXES)}). Received: {source}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C]. Received shape {images.shape} from {source}")
    if limit is not None:
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    return images, None if labels is None else np.asarray(labels).reshape(-1).astype(np.int64)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads every array of an `.npz` file, never unpickling anything.

    Args:
        path: The `.npz` file.

    Returns:
        A dict name -> array, in the file's order.

    Raises:
        ValueError: Naming the file, if it is missing, a directory, not an
            `.npz` archive, or holds an array that only pickle can read
            (object arrays: loading them could run arbitrary code).

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npz")
    >>> np.savez(path, x=np.arange(3))
    >>> read_npz(path)["x"].tolist()
    [0, 1, 2]
    """
    path = _existing(path)
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise ValueError(f"not a readable .npz file (no zip header): {path}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except ValueError as e:  # object arrays need pickle, which is never enabled
        raise ValueError(f"cannot read {path} without pickle ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"not a readable .npz file ({type(e).__name__}: {e}): {path}") from None


def _npz_arrays(path: Path, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    arrays = read_npz(path)
    for x_key, y_key in ((f"x_{split}", f"y_{split}"), ("x", "y"), ("images", "labels")):
        if x_key in arrays:
            return arrays[x_key], arrays.get(y_key)
    raise ValueError(f"{path} has no array x_{split}, x or images. Found: {', '.join(arrays)}")

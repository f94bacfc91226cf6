"""Using a trained restorer: `restore` images, and a classifier's input preprocessing.

`resolve_preprocessing` turns the preprocessing of a classifier that reads restored images
(a `qrnet.ClassifierSpec`, `qrnet.evaluate_restoration`, `qrnet.export`) into a callable,
through `robustkit.preprocessing.resolve`.

Example:

>>> import numpy as np
>>> from qrnet import build_qrnet
>>> restore(build_qrnet(base_width=4, depth=2), np.zeros((2, 16, 16, 3), "uint8")).shape
(2, 16, 16, 3)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from qrnet.batches import check_batch_size, check_images
from robustkit.preprocessing import resolve

__all__ = ["Preprocessing", "resolve_preprocessing", "restore"]

# How a classifier reads 0..255 RGB images; see `resolve_preprocessing`.
Preprocessing = Callable[[Any], Any] | keras.layers.Layer | str | None


def resolve_preprocessing(preprocessing: Preprocessing) -> Callable[[Any], Any]:
    """The function that maps 0..255 RGB images to a classifier's input.

    Args:
        preprocessing: None (the identity, for classifiers that read 0..255 images), a mode
            or `keras.applications` family name of `robustkit.preprocessing` (`"unit"`, `"tf"`,
            `"caffe"`, `"mobilenet_v2"`, ...; returned as an `ImagePreprocessing` layer, which
            a SavedModel can track), a layer or a function (returned unchanged).

    Returns:
        A callable of a batch of float images.

    Raises:
        ValueError: an unknown mode name, naming the allowed ones.
        TypeError: anything else that is not callable.

    Example:

    >>> import numpy as np
    >>> prepare = resolve_preprocessing("tf")
    >>> np.asarray(prepare(np.array([[[[0.0, 127.5, 255.0]]]], "float32"))).tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """
    if not (preprocessing is None or isinstance(preprocessing, str) or callable(preprocessing)):
        raise TypeError(
            "preprocessing must be None, a mode name, a layer or a function. "
            f"Received: preprocessing={preprocessing!r}"
        )
    try:
        return resolve(preprocessing, layer=True)
    except ValueError as e:
        raise ValueError(f"preprocessing: {e}") from None


def restore(restorer: keras.Model, images, batch_size: int = 32) -> np.ndarray:
    """Restores images with a trained restorer.

    Args:
        restorer: a model from 0..255 images to 0..255 images.
        images: array `(n, h, w, c)` or one image `(h, w, c)` on 0..255, any dtype.
        batch_size: images per forward pass. Defaults to 32.

    Returns:
        float32 array of restored images on 0..255, the shape of `images`.

    Example:

    >>> from qrnet import build_qrnet
    >>> restore(build_qrnet(base_width=4, depth=2), np.zeros((17, 23, 3))).shape
    (17, 23, 3)
    """
    check_batch_size(batch_size, even=False)
    images = check_images(images, restorer).astype("float32", copy=False)
    single = images.ndim == 3
    if single:
        images = images[None]
    if len(images) == 0:
        return images.copy()
    restored = np.asarray(restorer.predict(images, batch_size=batch_size, verbose=0), "float32")
    return restored[0] if single else restored

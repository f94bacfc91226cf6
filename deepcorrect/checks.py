"""Argument checks shared by the public `deepcorrect` functions and its command line.

Three rules, each with one error wording:

- A model argument must be a Functional or Sequential `keras.Model`
  (`check_model`): anything else, `None` included, is a `TypeError` naming the
  argument, never an `AttributeError` from deep inside a graph walk.
- Labels must be class indices of the model they are used with
  (`check_class_labels`): in `[0, classes - 1]` for a model with `classes`
  outputs. The check lives in `robustkit.checks` (`distort.sweep` uses it too)
  and is imported here.
- Images must have the model's input size (`check_image_size`). Only the
  functions that document a resize resize: `distort.sweep.sweep` (and so
  `deepcorrect evaluate`) resizes distorted images to each model's input, as
  the papers distort a photo once and let each network resize it. `rank` and
  `train` feed the images to the model as they are, so another size is refused
  with both sizes named.

Example:

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
...                           keras.layers.Dense(4)])
>>> check_class_labels(np.array([0, 3, 1]), model)
>>> check_image_size(np.zeros((2, 8, 8, 3)), model)
>>> check_model(None)
Traceback (most recent call last):
...
TypeError: model must be a keras.Model (Functional or Sequential). Received: model=None
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np

from deepcorrect.graph import is_graph_model
from robustkit.checks import check_class_labels, model_classes

__all__ = ["check_choice", "check_class_labels", "check_image_size", "check_labels",
           "check_model", "check_momentum", "model_classes"]


def _received(argument: str, value: Any) -> str:
    if value is None or isinstance(value, (str, bool, int, float)):
        return f"{argument}={value!r}"
    kind = type(value).__name__
    if isinstance(value, keras.Model):
        kind += " (a subclassed keras.Model, which has no graph to rewrite)"
    return f"{argument} of type {kind}"


def check_model(model: Any, argument: str = "model", layer_ok: bool = False) -> None:
    """Raises a TypeError unless `model` is a Functional or Sequential Keras model.

    Args:
        model: The value passed as a model.
        argument: The name of the argument, for the message. Defaults to
            `"model"`.
        layer_ok: Also accept any `keras.layers.Layer` (for functions such as
            `trainable_parameters` that count a single layer too). Defaults to
            False.

    Raises:
        TypeError: For `None`, a layer, a subclassed model or anything else,
            naming `argument`.

    Example:

    >>> check_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    >>> check_model(keras.layers.Dense(1), "pretrained")
    Traceback (most recent call last):
    ...
    TypeError: pretrained must be a keras.Model (Functional or Sequential). Received: pretrained of type Dense
    """
    if layer_ok and isinstance(model, keras.layers.Layer):
        return
    if not is_graph_model(model):
        allowed = "a keras.Model or a keras.layers.Layer" if layer_ok else \
            "a keras.Model (Functional or Sequential)"
        raise TypeError(f"{argument} must be {allowed}. Received: {_received(argument, model)}")


def check_momentum(value: Any, argument: str = "momentum") -> float:
    """Checks a batch-norm momentum: a finite number in [0, 1).

    Args:
        value: The momentum (the weight of the old moving statistics).
        argument: The name of the argument, for the message.

    Returns:
        The momentum as a float.

    Raises:
        TypeError: For a value that is not a real number.
        ValueError: For NaN, infinity or a value outside [0, 1).

    Example:

    >>> check_momentum(0.9)
    0.9
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argument} must be a number in [0, 1). Received: {argument}={value!r}")
    if not np.isfinite(value) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{argument} must be a finite number in [0, 1). "
                         f"Received: {argument}={value}")
    return float(value)


def check_image_size(images: Any, model: keras.Model, argument: str = "images") -> None:
    """Raises a ValueError unless `images` fit the model's fixed input shape.

    Dimensions the model leaves open (None) accept any size. The images are not
    resized: resize them first (`distort.sweep.fit_to_model` resizes as a sweep
    does), or load an image folder at the model's size.

    Args:
        images: `[N, H, W, C]` images.
        model: A model with one image input.
        argument: The argument (or command-line option) that passed the images.

    Raises:
        ValueError: Naming `argument`, the model's input size and the images'.

    Example:

    >>> model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten()], name="clf")
    >>> check_image_size(np.zeros((1, 64, 64, 3)), model)
    Traceback (most recent call last):
    ...
    ValueError: images must be 32x32x3 images, the input size of model 'clf'. Received: images of 64x64x3 (rank and train do not resize; resize them first)
    """
    try:
        expected = tuple(model.input_shape[1:])
    except (AttributeError, ValueError, RuntimeError, TypeError):
        return  # several inputs or an unbuilt model: the model's own call reports it
    shape = tuple(np.shape(images)[1:])
    if not expected or not all(e is None or isinstance(e, int) for e in expected):
        return
    if len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape)):
        return

    def size(dims) -> str:
        return "x".join("any" if d is None else str(d) for d in dims)

    raise ValueError(
        f"{argument} must be {size(expected)} images, the input size of model "
        f"{model.name!r}. Received: {argument} of {size(shape) or 'shape ()'} (rank and "
        "train do not resize; resize them first)"
    )


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """Raises a ValueError unless `value` is one of `allowed`.

    Args:
        name: The name of the argument, for the message.
        value: The value passed.
        allowed: The allowed values.

    Raises:
        ValueError: Naming the argument and the allowed values.

    Example:

    >>> check_choice("site", "post_activation", ("pre_activation", "post_activation"))
    >>> check_choice("score", "auc", ("gain", "relative_error"))
    Traceback (most recent call last):
    ...
    ValueError: score must be one of ['gain', 'relative_error']. Received: score='auc'
    """
    if value not in allowed:
        raise ValueError(
            f"{name} must be one of {list(allowed)}. Received: {name}={value!r}"
        )


def check_labels(labels: Any, n: int) -> np.ndarray:
    """Integer class indices, one per image, from indices or one-hot rows.

    Args:
        labels: Class indices `[n]` (or `[n, 1]`), or one-hot rows `[n, classes]`
            (their argmax is taken). Float values must be whole numbers.
        n: The number of images.

    Returns:
        An int64 array of shape `[n]`. The range is not checked here: see
        `check_class_labels`.

    Raises:
        ValueError: For another number of labels or labels that are not whole
            numbers.

    Example:

    >>> check_labels([[0, 1], [1, 0]], 2).tolist()
    [1, 0]
    >>> check_labels([0.5], 1)
    Traceback (most recent call last):
    ...
    ValueError: labels must be integer class indices.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[0] == n and labels.shape[1] > 1:
        labels = labels.argmax(axis=1)
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"labels must hold one class index (or one-hot row) per image: "
            f"{n} images but labels has shape {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(labels == np.round(labels)):
            raise ValueError("labels must be integer class indices.")
    return labels.astype(np.int64)


def check_images(images: Any, model: keras.Model, name: str = "images") -> np.ndarray:
    """`images` as an array that fits `model`'s input, or a clear error.

    Args:
        images: a batch `[N, ...]` of numbers (uint8 or float photos on
            0..255, or whatever the model's preprocessing takes).
        model: the model whose single input the batch must fit.
        name: the argument name for messages.

    Returns:
        The array (not copied when already one).

    Raises:
        TypeError: for a non-numeric array.
        ValueError: for an empty batch, a size that does not fit the model,
            or non-finite values.

    Example:

    >>> m = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten()])
    >>> check_images(np.zeros((2, 4, 4, 3), "uint8"), m).shape
    (2, 4, 4, 3)
    """
    array = np.asarray(images)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of numbers. Received: {name} of dtype "
                        f"{array.dtype}")
    if array.ndim < 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch [N, H, W, C]. Received: {name} of "
                         f"shape {array.shape}")
    check_image_size(array, model, name)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite numbers; it has NaN or infinite values.")
    return array

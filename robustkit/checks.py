"""Argument checks shared by `distort`, `deepcorrect` and `qrnet`.

- `check_level`: a scalar level (or any real-valued argument) is a finite
  number in `[low, high]`.
- `check_class_labels`: labels are class indices of the classifier they are
  used with, in `[0, classes - 1]` for a model with `classes` outputs
  (`model_classes`).

Each raises a `ValueError` (or `TypeError`) that names the argument and the
allowed range. The module imports neither TensorFlow nor Keras.

Example:

>>> check_level("sigma", 1.5, 0.0, 16.0)
1.5
>>> check_level("sigma", -1.0)
Traceback (most recent call last):
...
ValueError: sigma must be a finite number >= 0.0. Received: sigma=-1.0
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

__all__ = ["check_class_labels", "check_level", "model_classes"]


def check_level(name: str, value, low: float = 0.0, high: float = math.inf) -> float:
    """Checks that a scalar level is a finite real number in [low, high].

    Args:
        name: Argument name, used in the error message.
        value: The value to check.
        low: Smallest allowed value.
        high: Largest allowed value.

    Returns:
        The value as a Python float.

    Raises:
        TypeError: If `value` is not a real number.
        ValueError: If `value` is NaN, infinite or outside [low, high].
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        try:
            if isinstance(value, np.ndarray) and value.ndim == 0:
                value = value.item()
            else:
                raise TypeError
        except TypeError:
            raise TypeError(
                f"{name} must be a real number in [{low}, {high}]. Received: {name}={value!r}"
            ) from None
    value = float(value)
    if not math.isfinite(value) or value < low or value > high:
        bound = f"[{low}, {high}]" if math.isfinite(high) else f">= {low}"
        raise ValueError(f"{name} must be a finite number {bound}. Received: {name}={value}")
    return value


def model_classes(model: keras.Model) -> int | None:
    """The number of classes of a classifier: the last axis of its one output.

    Returns:
        The size of the output's last axis, or None when the model has
        several outputs or that size is unknown.

    Example:

    >>> import keras
    >>> model_classes(keras.Sequential([keras.Input((3,)), keras.layers.Dense(7)]))
    7
    """
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    if not isinstance(shape, tuple) or not shape or not isinstance(shape[-1], int):
        return None
    return int(shape[-1])


def check_class_labels(labels: Any, model: keras.Model, argument: str = "labels") -> None:
    """Raises a ValueError unless every label is a class index of `model`.

    Integer labels must lie in `[0, classes - 1]`, where `classes` is the size
    of the model's output. One-hot rows (a 2-D array) must have `classes`
    columns. A model whose class count is unknown accepts any non-negative
    label.

    Args:
        labels: Class indices `[N]` (or `[N, 1]`), or one-hot rows `[N, classes]`.
        model: The classifier the labels are used with.
        argument: The argument (or command-line option) that passed the labels.

    Raises:
        ValueError: Naming `argument`, the allowed range and the offending
            values.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(10)], name="clf")
    >>> check_class_labels([12, 13], model)
    Traceback (most recent call last):
    ...
    ValueError: labels must be class indices in [0, 9] (model 'clf' has 10 outputs). Received: 2 labels out of range: [12, 13]
    """
    classes = model_classes(model)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        if classes is not None and labels.shape[1] != classes:
            raise ValueError(
                f"{argument} as one-hot rows must have {classes} columns (model "
                f"{model.name!r} has {classes} outputs). Received: {argument} of shape "
                f"{labels.shape}"
            )
        return
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.number):
        return  # the size and type checks of the function report these
    values = labels.reshape(-1)
    high = np.inf if classes is None else classes - 1
    bad = np.unique(values[(values < 0) | (values > high)])
    if bad.size:
        shown = [v.item() for v in bad[:5]] + (["..."] if bad.size > 5 else [])
        allowed = ">= 0" if classes is None else f"in [0, {classes - 1}]"
        outputs = "" if classes is None else f" (model {model.name!r} has {classes} outputs)"
        count = int(np.isin(values, bad).sum())
        raise ValueError(
            f"{argument} must be class indices {allowed}{outputs}. Received: {count} "
            f"labels out of range: {shown}"
        )

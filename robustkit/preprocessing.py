"""Classifier input conventions: from 0..255 RGB pixels to what a model expects.

Distortions work on 0..255 images; each classifier wants its own input scale.
This module is the one place that knows the conventions of
`keras.applications` (its `imagenet_utils.preprocess_input` modes), as plain
functions (`MODES`), as a table of model families (`APPLICATION_MODES`), and as
a registered Keras layer (`ImagePreprocessing`) that puts the conversion inside
a model, so that a saved or exported model takes raw pixels.

| mode | output |
|---|---|
| `"none"` (alias `"raw"`) | the pixels unchanged (EfficientNet, ConvNeXt: rescaling built in) |
| `"unit"` | `x / 255`, on 0..1 |
| `"tf"` (alias `"symmetric"`) | `x / 127.5 - 1`, on -1..1 (MobileNet, Inception) |
| `"caffe"` | RGB to BGR, ImageNet BGR mean subtracted (VGG16, ResNet50) |
| `"torch"` | `(x / 255 - mean) / std` per channel (DenseNet) |

Example:

>>> import numpy as np
>>> from robustkit.preprocessing import ImagePreprocessing, resolve
>>> float(resolve("mobilenet_v2")(np.float32(255.0)))
1.0
>>> np.asarray(ImagePreprocessing("tf")(np.array([[[[0.0, 127.5, 255.0]]]]))).tolist()
[[[[-1.0, 0.0, 1.0]]]]
"""

from __future__ import annotations

from typing import Any, Callable, Union

import keras
from keras import ops

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _none(x):
    return x


def _unit(x):
    return x / 255.0


def _tf(x):
    return x / 127.5 - 1.0


def _caffe(x):
    return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, x.dtype)


def _torch(x):
    mean = ops.convert_to_tensor(IMAGENET_MEAN_RGB, x.dtype)
    std = ops.convert_to_tensor(IMAGENET_STD_RGB, x.dtype)
    return (x / 255.0 - mean) / std


# Mode name -> function of float RGB pixels on 0..255 (tensors or arrays).
MODES: dict[str, Callable[[Any], Any]] = {
    "none": _none,
    "raw": _none,
    "unit": _unit,
    "tf": _tf,
    "symmetric": _tf,
    "caffe": _caffe,
    "torch": _torch,
}

# keras.applications families (module names) -> the mode of their preprocess_input.
APPLICATION_MODES: dict[str, str] = {
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "mobilenet_v3": "none",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "resnet_v2": "tf",
    "nasnet": "tf",
    "resnet": "caffe",
    "resnet50": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "densenet": "torch",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "convnext": "none",
    "regnet": "none",
}

Preprocess = Union[str, Callable[[Any], Any], None]


def mode_of(name: str) -> str:
    """The mode name for a mode or a model family name.

    Raises:
        ValueError: naming the allowed modes and families.
    """
    if name in MODES:
        return name
    if name in APPLICATION_MODES:
        return APPLICATION_MODES[name]
    raise ValueError(f"preprocess must be None, a function, or one of {sorted(MODES)} "
                     f"or {sorted(APPLICATION_MODES)}. Received: preprocess={name!r}")


def resolve(preprocess: Preprocess, layer: bool = False) -> Callable[[Any], Any]:
    """The pixel transform for a mode name, a model family name or a function.

    The one place that turns a preprocessing name into a function.

    Args:
        preprocess: a `MODES` name, an `APPLICATION_MODES` family name, a
            function of float RGB pixels on 0..255 (or a layer), or None (the
            identity). A function is returned unchanged.
        layer: return a name as an `ImagePreprocessing` layer, which a model
            or a SavedModel can track, instead of a plain function. Defaults
            to False.

    Returns:
        A function mapping float pixels to the model's input.

    Raises:
        ValueError: for an unknown name, naming the allowed ones (with
            `layer=True`, the message of `ImagePreprocessing`).

    Example:

    >>> import numpy as np
    >>> round(float(resolve("vgg16")(np.zeros((1, 1, 3), "float32"))[0, 0, 0]), 3)
    -103.939
    >>> type(resolve("tf", layer=True)).__name__
    'ImagePreprocessing'
    """
    if preprocess is None:
        return _none
    if callable(preprocess):
        return preprocess
    if layer:
        return ImagePreprocessing(preprocess)
    return MODES[mode_of(preprocess)]


@keras.saving.register_keras_serializable(package="distort")
class ImagePreprocessing(keras.layers.Layer):
    """Maps 0..255 RGB images to a classifier's input convention, inside a model.

    Args:
        mode: a `MODES` name or an `APPLICATION_MODES` family name. Defaults
            to `"unit"`.
        **kwargs: standard layer arguments.

    Example:

    >>> import numpy as np
    >>> layer = ImagePreprocessing("symmetric")
    >>> np.asarray(layer(np.array([[[[0.0, 127.5, 255.0]]]]))).tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """

    def __init__(self, mode: str = "unit", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            mode_of(mode)
        except ValueError:
            raise ValueError(f"mode must be one of {sorted(MODES)} or {sorted(APPLICATION_MODES)}. "
                             f"Received: mode={mode!r}") from None
        self.mode = mode

    def call(self, inputs):
        return MODES[mode_of(self.mode)](ops.cast(inputs, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


# Models saved before this layer moved here name it "qrnet>ImagePreprocessing".
keras.saving.get_custom_objects().setdefault("qrnet>ImagePreprocessing", ImagePreprocessing)

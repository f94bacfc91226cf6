"""Export a Keras classifier as a TF Serving SavedModel.

The SavedModel has two signatures, both returning `probabilities`
(float32 [N, classes]) and `top5` (int32 [N, 5], class indices, most likely
first):

- `serving_default`: `images`, uint8 [N, H, W, 3] RGB at the model's input size.
- `serving_bytes`: `image_bytes`, string [N], encoded JPEG/PNG/BMP/GIF images of
  any size; each is decoded to RGB and resized (bilinear) to the model's size.

Both apply the model's preprocessing inside the graph, so clients send raw
pixels. Preprocessing is a mode or a `keras.applications` family name from
`robustkit.preprocessing` (or a function of float32 RGB pixels in [0, 255]).

Example:

```python
import keras
import deepcorrect

model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
deepcorrect.export(model, "out/mobilenet_v2_serving", preprocess="mobilenet_v2")
# saved_model_cli show --all --dir out/mobilenet_v2_serving
```
"""

from __future__ import annotations

import os
from typing import Callable

import keras
import tensorflow as tf

from deepcorrect.checks import check_model
from robustkit.serving import write_endpoints
from robustkit.preprocessing import Preprocess
from robustkit.preprocessing import resolve as resolve_preprocessing

TOP_K = 5


def outputs_are_probabilities(model: keras.Model) -> bool:
    """True when the model's last layer ends in a softmax.

    Example:

    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    >>> outputs_are_probabilities(m)
    True
    """
    check_model(model)
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    return last.get_config().get("activation") == "softmax"


def _image_input_shape(model: keras.Model) -> tuple:
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(
            "model must take one image batch [N, H, W, 3]. Received inputs: "
            f"{[tuple(x.shape) for x in model.inputs]}"
        )
    _, height, width, channels = model.inputs[0].shape
    if channels != 3:
        raise ValueError(
            "model must take RGB images with 3 channels last. Received input "
            f"shape: {tuple(model.inputs[0].shape)}"
        )
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            "model must return one [N, classes] tensor. Received outputs: "
            f"{[tuple(x.shape) for x in model.outputs]}"
        )
    return height, width


def _check_image_size(image_size, height, width) -> tuple[int, int]:
    if image_size is None:
        if height is None or width is None:
            raise ValueError(
                "The model accepts any image size, so the bytes signature needs "
                "image_size=(height, width) to resize decoded images to. "
                "Received: image_size=None"
            )
        return int(height), int(width)
    if len(image_size) != 2 or any(int(s) < 1 for s in image_size):
        raise ValueError(
            "image_size must be (height, width) with positive sizes. "
            f"Received: image_size={image_size!r}"
        )
    return int(image_size[0]), int(image_size[1])


def serving_functions(
    model: keras.Model,
    preprocess: Preprocess = None,
    image_size: tuple[int, int] | None = None,
    from_logits: bool | None = None,
) -> dict[str, tuple[Callable, list[tf.TensorSpec]]]:
    """The serving endpoints as `{name: (function, input_signature)}`.

    Arguments are those of `export`.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
    ...                       keras.layers.Dense(6)])
    >>> sorted(serving_functions(m, "unit"))
    ['serving_bytes', 'serving_default']
    """
    check_model(model)
    height, width = _image_input_shape(model)
    target_height, target_width = _check_image_size(image_size, height, width)
    if height is not None and (target_height, target_width) != (height, width):
        raise ValueError(
            f"image_size must match the model's input size ({height}, {width}). "
            f"Received: image_size={image_size!r}"
        )
    pixels_to_inputs = resolve_preprocessing(preprocess)
    if from_logits is None:
        from_logits = not outputs_are_probabilities(model)
    classes = model.outputs[0].shape[-1]
    top_k = min(TOP_K, classes)

    def classify(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = model(pixels_to_inputs(pixels), training=False)
        scores = tf.cast(scores, tf.float32)
        probabilities = tf.nn.softmax(scores, axis=-1) if from_logits else scores
        top = tf.math.top_k(probabilities, k=top_k).indices
        return {"probabilities": probabilities, "top5": tf.cast(top, tf.int32)}

    expected = f"uint8 [N, {height or 'H'}, {width or 'W'}, 3]"

    def check_images(images: tf.Tensor) -> list:
        # Pad the shape so a tensor of the wrong rank fails the same check.
        shape = tf.concat([tf.shape(images), tf.zeros([4], tf.int32)], axis=0)[:4]
        wanted = tf.stack([
            shape[1] if height is None else height,
            shape[2] if width is None else width,
            3,
        ])
        message = f"images must be {expected}; got shape"
        return [
            tf.debugging.assert_equal(tf.rank(images), 4, message=message),
            tf.debugging.assert_equal(shape[1:], wanted, message=message),
        ]

    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.control_dependencies(check_images(images)):
            return classify(tf.cast(images, tf.float32))

    def decode(encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (target_height, target_width))
        return tf.clip_by_value(image, 0.0, 255.0)

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.map_fn(
            decode,
            image_bytes,
            fn_output_signature=tf.TensorSpec((target_height, target_width, 3), tf.float32),
        )
        return classify(pixels)

    return {
        "serving_default": (
            serve_images,
            [tf.TensorSpec((None, height, width, 3), tf.uint8, name="images")],
        ),
        "serving_bytes": (
            serve_bytes,
            [tf.TensorSpec((None,), tf.string, name="image_bytes")],
        ),
    }


def export(
    model: keras.Model,
    path: str | os.PathLike,
    preprocess: Preprocess = None,
    image_size: tuple[int, int] | None = None,
    from_logits: bool | None = None,
) -> str:
    """Writes `model` as a SavedModel for TF Serving.

    Signatures (see the module docstring): `serving_default` takes
    `images` (uint8 [N, H, W, 3]), `serving_bytes` takes `image_bytes`
    (encoded images, string [N]); both return `probabilities` and `top5`.
    Inputs of the wrong dtype or shape are refused by the signature with an
    error naming the expected spec; undecodable bytes raise
    `InvalidArgumentError`.

    Args:
        model: a Keras classifier with one [N, H, W, 3] input and one
            [N, classes] output (a wrapped DeepCorrect model, for example).
        path: output directory, written atomically (a temporary folder
            beside it, then a rename; an existing one is replaced).
        preprocess: the model's preprocessing: a name from
            `robustkit.preprocessing.MODES` (`"tf"`, `"torch"`, `"caffe"`, `"unit"`,
            `"raw"`) or `APPLICATION_MODES` (`"mobilenet_v2"`, `"resnet50"`,
            `"vgg16"`, ...), a function of float32 RGB pixels in [0, 255], or
            None (no preprocessing). Defaults to None.
        image_size: (height, width) decoded images are resized to. Defaults
            to None: the model's input size (required when that is unknown).
        from_logits: whether the model returns logits, to which a softmax is
            then applied. Defaults to None: logits unless the last layer ends
            in a softmax.

    Returns:
        The path written, as a string.

    Raises:
        TypeError: if `model` is not a Functional or Sequential model.
        ValueError: for an unknown `preprocess`, a model that is not an RGB
            image classifier, or a bad `image_size`.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
    ...                       keras.layers.Dense(6, activation="softmax")])
    >>> import tempfile
    >>> out = export(m, tempfile.mkdtemp() + "/serving", preprocess="unit")
    >>> restored = tf.saved_model.load(out)
    >>> sorted(restored.signatures)
    ['serving_bytes', 'serving_default']
    """
    return write_endpoints(path, [model], serving_functions(model, preprocess, image_size,
                                                            from_logits))

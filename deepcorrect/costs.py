"""What a (repaired) model costs to run: multiply-adds, milliseconds per image, parameters.

`multiply_adds(model)` counts the multiply-accumulates of one forward pass of one image
through every conv and dense kernel (Table 10 of DeepCorrect counts these as "FLOPs"),
correction units and nested models (a restorer in front of a classifier) included.
`inference_ms(model, images)` times the model on real images. `batch_norm_statistics` and
`batch_norm_parameters` count what test-time adaptation changes. `model_costs` gathers them
for one model, as `deepcorrect.compare` reports them; `unit_costs` lists a wrapped model's
correction units, one Table 10 row each.

Example:

```python
import keras
from deepcorrect import costs

model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
costs.multiply_adds(model)                       # 8 * 8 * 3 * 3 * 3 * 4 + 4 * 2 = 6920
costs.inference_ms(model, np.zeros((16, 8, 8, 3)))
```
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from deepcorrect.checks import check_model
from deepcorrect.graph import leaf_layers
from deepcorrect.surgery import correction_units, trainable_parameters
from deepcorrect.units import CorrectionUnit


def _known(shape, layer, what: str) -> list[int]:
    dims = list(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(
            f"multiply_adds needs fixed image sizes, but layer {layer.name!r} has {what} "
            f"shape {tuple(shape)}: build the model on a keras.Input with a height and width")
    return [int(d) for d in dims]


def layer_multiply_adds(layer: keras.layers.Layer) -> int:
    """Multiply-adds of one call of one leaf layer on one image (0 for kernel-free layers).

    Conv layers (1D/2D/3D, grouped), depthwise, separable and transposed convs, dense
    layers (on every position of a higher-rank input) and correction units
    (`CorrectionUnit.multiply_adds`) are counted; biases, batch norms, activations and
    pooling are not, as in the papers' tables.

    Args:
        layer: a built layer that has been called on a symbolic input with fixed sizes.

    Returns:
        The count.

    Raises:
        ValueError: if the layer's input or output has an unknown height or width.

    Example:

    >>> conv = keras.layers.Conv2D(4, 3, padding="same")
    >>> _ = keras.Sequential([keras.Input((8, 8, 3)), conv])
    >>> layer_multiply_adds(conv) == 8 * 8 * 3 * 3 * 3 * 4
    True
    """
    L = keras.layers
    if isinstance(layer, CorrectionUnit):
        dims = _known(layer.output.shape, layer, "output")
        return int(layer.multiply_adds(*dims[:2]))
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        dims = _known(layer.output.shape, layer, "output")
        return int(np.prod(layer.kernel_size)) * int(np.prod(dims))
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        dims = _known(layer.output.shape, layer, "output")
        positions = int(np.prod(dims[:-1]))
        depthwise = int(np.prod(layer.depthwise_kernel.shape))
        pointwise = int(np.prod(layer.pointwise_kernel.shape))
        return positions * (depthwise + pointwise)
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        dims = _known(layer.input.shape, layer, "input")  # every input pixel meets the kernel
        return int(np.prod(layer.kernel.shape)) * int(np.prod(dims[:-1]))
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        dims = _known(layer.output.shape, layer, "output")
        return int(np.prod(layer.kernel.shape)) * int(np.prod(dims[:-1]))
    if isinstance(layer, L.Dense):
        positions = int(np.prod(_known(layer.output.shape, layer, "output")[:-1]))
        return int(np.prod(layer.kernel.shape)) * positions
    return 0


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one forward pass of one image: conv and dense kernels, as Table 10 counts.

    Every leaf layer is counted once (nested models expanded), correction units included:
    a wrapped model costs its pretrained network plus its units, a restorer in front of a
    classifier costs both.

    Args:
        model: a Functional or Sequential model with a fixed input height and width.

    Returns:
        The count.

    Raises:
        ValueError: for a model whose layers have unknown image sizes.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
    ...                       keras.layers.DepthwiseConv2D(3, padding="same"),
    ...                       keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> multiply_adds(m) == 8 * 8 * (3 * 3 * 3 * 4 + 3 * 3 * 4) + 4 * 2
    True
    """
    return int(sum(layer_multiply_adds(layer) for layer in leaf_layers(model)))


def unit_costs(model: keras.Model) -> list[dict[str, Any]]:
    """One Table 10 row per correction unit of a wrapped model: its size and its cost.

    Args:
        model: a model from `deepcorrect.wrap` (units inside nested models are found too),
            with a fixed input height and width.

    Returns:
        One dict per unit, input to output: `layer` (the corrected conv layer),
        `corrected_filters`, `of_filters` (the conv's filters), `trainable_params`,
        `multiply_adds` (one image, on the conv's output map, as
        `CorrectionUnit.multiply_adds` counts them) and `map` (`"HxW"`).

    Example:

    >>> from deepcorrect import wrap
    >>> pretrained = keras.Sequential([keras.Input((8, 8, 3)),
    ...                                keras.layers.Conv2D(4, 3, name="c")])
    >>> [row] = unit_costs(wrap(pretrained, {"c": [0, 1, 2, 3]}, beta=0.5))
    >>> row["corrected_filters"], row["of_filters"], row["trainable_params"], row["map"]
    (2, 4, 100, '6x6')
    """
    layers = {layer.name: layer for layer in leaf_layers(model)}
    rows = []
    for name, unit in correction_units(model).items():
        height, width, filters = layers[name].output.shape[1:]
        rows.append({
            "layer": name,
            "corrected_filters": unit.channels,
            "of_filters": int(filters),
            "trainable_params": trainable_parameters(unit),
            "multiply_adds": unit.multiply_adds(height, width),
            "map": f"{height}x{width}",
        })
    return rows


def inference_ms(model: keras.Model, images, batch_size: int = 32, repeats: int = 3) -> float:
    """Milliseconds per image of `model` in inference mode (best of `repeats` passes).

    The model runs as one `tf.function` on batches of `batch_size`; the first pass
    (tracing) is not timed. Other jobs on the machine slow every model alike, so compare
    models timed on the same machine at about the same time.

    Args:
        model: a Keras model taking `images`.
        images: `[N, H, W, C]` images (used as float32).
        batch_size: images per call, >= 1. Defaults to 32.
        repeats: timed passes, >= 1. Defaults to 3.

    Returns:
        Milliseconds per image.

    Raises:
        ValueError: for empty images or a non-positive `batch_size` or `repeats`.

    Example:

    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                       keras.layers.Dense(2)])
    >>> inference_ms(m, np.zeros((8, 4, 4, 1)), batch_size=4) > 0
    True
    """
    import tensorflow as tf

    from qrnet.evaluate import seconds_per_image

    for name, value in (("batch_size", batch_size), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1. Received: {name}={value!r}")
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [N, H, W, C] batch. "
                         f"Received shape {images.shape}")
    forward = tf.function(lambda batch: model(batch, training=False))
    return 1000.0 * seconds_per_image(forward, images, batch_size=int(batch_size),
                                      repeats=int(repeats))


def _batch_norms(model: keras.Model) -> list[keras.layers.Layer]:
    found = [layer for layer in leaf_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in leaf_layers(model):  # batch norms inside correction units
        if isinstance(layer, CorrectionUnit):
            found += [l for l in layer.stack if isinstance(l, keras.layers.BatchNormalization)]
    return found


def batch_norm_statistics(model: keras.Model) -> int:
    """Number of batch-norm moving statistics (means and variances): what BN adaptation sets.

    Example:

    >>> m = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(5, 1),
    ...                       keras.layers.BatchNormalization()])
    >>> batch_norm_statistics(m)
    10
    """
    return int(sum(int(np.prod(layer.moving_mean.shape)) + int(np.prod(layer.moving_variance.shape))
                   for layer in _batch_norms(model)))


def batch_norm_parameters(model: keras.Model) -> int:
    """Number of batch-norm scales and offsets (gamma, beta): what TENT trains.

    Example:

    >>> m = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(5, 1),
    ...                       keras.layers.BatchNormalization()])
    >>> batch_norm_parameters(m)
    10
    """
    weights = [getattr(layer, name, None) for layer in _batch_norms(model)
               for name in ("gamma", "beta")]
    return int(sum(int(np.prod(w.shape)) for w in weights if w is not None))


def model_costs(model: keras.Model, images, batch_size: int = 32, repeats: int = 3) -> dict[str, Any]:
    """Parameters, trainable parameters, multiply-adds and ms per image of one model.

    Args:
        model: a Functional or Sequential model with a fixed input size.
        images: images to time it on (see `inference_ms`).
        batch_size: images per timed call.
        repeats: timed passes.

    Returns:
        `{"parameters", "trainable_parameters", "multiply_adds", "ms_per_image",
        "timing_images"}`.

    Example:

    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                       keras.layers.Dense(2)])
    >>> model_costs(m, np.zeros((4, 4, 4, 1)))["multiply_adds"]
    32
    """
    check_model(model)
    return {
        "parameters": int(model.count_params()),
        "trainable_parameters": trainable_parameters(model),
        "multiply_adds": multiply_adds(model),
        "ms_per_image": inference_ms(model, images, batch_size, repeats),
        "timing_images": int(len(images)),
    }

"""Small baseline CNNs that train on a CPU: the networks the demo and the examples repair.

Every network reads images on the 0..255 scale (a `Rescaling` layer comes first), puts a
batch norm between each convolution and its ReLU (so correction units sit before the batch
norm, as in the paper's CIFAR model) and ends in a softmax. The architectures are data:
`NETWORKS[name]` is a list of layer specs that one builder, `build_network`, turns into a
functional model with readable layer names (`conv1`, `bn1`, `relu1`, ...).

- `lenet5`: LeNet-5 (LeCun et al. 1998) with wider convolutions (16 and 32 filters instead of 6 and 16), batch
  norm and max pooling, for 28x28 gray images such as Fashion-MNIST.
- `cifar10_quick`: Zhou et al.'s CIFAR10-quick (Caffe's `cifar10_quick`: three 5x5
  convolutions with 32, 32, 64 filters and pooling, a 64-unit dense layer), with batch norm.
- `allconv_small`: the All-Convolutional net of Springenberg et al. (the DeepCorrect paper's
  CIFAR-100 baseline, Figure 3a) with batch norm, at a third of its width (32/64 filters
  instead of 96/192).

Example:

>>> model = build_network("lenet5", (28, 28, 1), classes=10)
>>> [layer.name for layer in model.layers if "conv" in layer.name]
['conv1', 'conv2']
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

# Layer specs: ("conv", filters, kernel, stride), ("pool",), ("dropout", rate),
# ("dense", units), ("gap",), ("flatten",).
NETWORKS: dict[str, dict[str, Any]] = {
    "lenet5": {
        "description": "LeNet-5 style: 5x5 conv 16 - pool - 5x5 conv 32 - pool - dense 120 - 84",
        "layers": [("conv", 16, 5, 1), ("pool",), ("conv", 32, 5, 1), ("pool",), ("flatten",),
                   ("dense", 120), ("dense", 84)],
    },
    "cifar10_quick": {
        "description": "Zhou et al.'s CIFAR10-quick with batch norm: 5x5 conv 32-32-64, pool "
                       "after each, dense 64",
        "layers": [("conv", 32, 5, 1), ("pool",), ("conv", 32, 5, 1), ("pool",),
                   ("conv", 64, 5, 1), ("pool",), ("flatten",), ("dense", 64)],
    },
    "allconv_small": {
        "description": "All-Conv (Springenberg et al.) with batch norm at 1/3 width: 3x3 conv "
                       "32-32-32/2, 64-64-64/2, 64, 1x1 64, 1x1 classes, global pooling",
        "layers": [("conv", 32, 3, 1), ("conv", 32, 3, 1), ("conv", 32, 3, 2), ("dropout", 0.2),
                   ("conv", 64, 3, 1), ("conv", 64, 3, 1), ("conv", 64, 3, 2), ("dropout", 0.2),
                   ("conv", 64, 3, 1), ("conv", 64, 1, 1), ("conv", "classes", 1, 1),
                   ("gap",)],
    },
}


def build_network(name: str, input_shape: tuple[int, int, int], classes: int = 10,
                  seed: int | None = 0) -> keras.Model:
    """Builds one of `NETWORKS`, untrained.

    Args:
        name: a key of `NETWORKS`.
        input_shape: `(height, width, channels)` of the 0..255 input images.
        classes: number of classes. Defaults to 10.
        seed: seed of the initial weights (`keras.utils.set_random_seed`); None leaves the
            global generator alone. Defaults to 0.

    Returns:
        A functional `keras.Model` named `name`, ending in a softmax.

    Raises:
        ValueError: for an unknown `name` or `classes < 2`.

    Example:

    >>> build_network("cifar10_quick", (32, 32, 3)).output_shape
    (None, 10)
    """
    if name not in NETWORKS:
        raise ValueError(f"name must be one of {sorted(NETWORKS)}. Received: name={name!r}")
    if int(classes) != classes or classes < 2:
        raise ValueError(f"classes must be an integer >= 2. Received: classes={classes}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(tuple(input_shape), name="images")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    convs = denses = pools = drops = 0
    specs = NETWORKS[name]["layers"]
    for i, spec in enumerate(specs):
        kind = spec[0]
        if kind == "conv":
            convs += 1
            filters = classes if spec[1] == "classes" else spec[1]
            x = layers.Conv2D(filters, spec[2], strides=spec[3], padding="same", use_bias=False,
                              name=f"conv{convs}")(x)
            x = layers.BatchNormalization(name=f"bn{convs}")(x)
            last = i == len(specs) - 2 and specs[-1][0] == "gap"
            if not last:  # the class-score conv of All-Conv has no ReLU
                x = layers.ReLU(name=f"relu{convs}")(x)
        elif kind == "pool":
            pools += 1
            x = layers.MaxPooling2D(name=f"pool{pools}")(x)
        elif kind == "dropout":
            drops += 1
            x = layers.Dropout(spec[1], name=f"dropout{drops}")(x)
        elif kind == "flatten":
            x = layers.Flatten(name="flatten")(x)
        elif kind == "gap":
            x = layers.GlobalAveragePooling2D(name="gap")(x)
        elif kind == "dense":
            denses += 1
            x = layers.Dense(spec[1], activation="relu", name=f"dense{denses}")(x)
    if specs[-1][0] == "gap":
        outputs = layers.Activation("softmax", name="predictions")(x)
    else:
        outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)

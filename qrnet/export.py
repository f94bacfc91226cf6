"""Export a trained restorer, alone or in front of a classifier, as SavedModels.

`export(restorer, path)` writes `path/restorer`, the restorer with Keras's `serve`
endpoint (float32 images on 0..255 in, restored images out). With a classifier it also
writes `path/restorer_classifier`, whose `serve` endpoint takes float32 images on 0..255 at
the classifier's input size and returns the classifier's output on the restored images, its
preprocessing inside the graph.

Example:

```python
import qrnet

restorer = qrnet.build_qrnet(base_width=4, depth=2)
qrnet.export(restorer, "out/qrnet_serving")
# saved_model_cli show --all --dir out/qrnet_serving/restorer
```
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from qrnet.inference import Preprocessing, resolve_preprocessing
from robustkit.io import atomic_dir
from robustkit.serving import write_endpoints

__all__ = ["export"]


def export(
    restorer: keras.Model,
    path: str | os.PathLike,
    classifier: keras.Model | None = None,
    preprocessing: Preprocessing = None,
) -> list[str]:
    """Writes SavedModels of a restorer, and of the restorer in front of a classifier.

    Each folder is written atomically (a temporary folder beside it, then a rename; an
    existing one is replaced), the restorer's first.

    Args:
        restorer: a model from 0..255 images to 0..255 images (e.g. `qrnet.QRNet`).
        path: output folder, for `restorer/` and `restorer_classifier/`.
        classifier: a Keras classifier to export behind the restorer. Defaults to None
            (the restorer alone).
        preprocessing: how the classifier reads 0..255 images (see
            `qrnet.resolve_preprocessing`). Defaults to None (0..255 input).

    Returns:
        The folders written, as strings.

    Raises:
        ValueError: for an unknown preprocessing name.
        TypeError: for a preprocessing that is not a name, a layer or a function.

    Example:

    >>> import tempfile
    >>> from qrnet import build_qrnet
    >>> clf = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
    ...                         keras.layers.Dense(10, activation="softmax")])
    >>> written = export(build_qrnet(base_width=4, depth=2), tempfile.mkdtemp(), clf, "unit")
    >>> [Path(folder).name for folder in written]
    ['restorer', 'restorer_classifier']
    """
    out = Path(path)
    with atomic_dir(out / "restorer") as temporary:
        restorer.export(temporary, format="tf_saved_model", verbose=False)
    written = [str(out / "restorer")]
    if classifier is None:
        return written
    prepare = resolve_preprocessing(preprocessing)
    height, width = classifier.input_shape[1:3]
    channels = restorer.input_shape[-1]
    tracked = [restorer, classifier]
    if isinstance(prepare, keras.layers.Layer):
        prepare(tf.zeros([1, height, width, channels]))  # Builds the (weightless) layer.
        tracked.append(prepare)

    def serve(images):
        return classifier(prepare(restorer(images, training=False)), training=False)

    signature = [tf.TensorSpec([None, height, width, channels], tf.float32)]
    written.append(write_endpoints(out / "restorer_classifier", tracked,
                                   {"serve": (serve, signature)}))
    return written

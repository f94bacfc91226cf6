"""Writing a SavedModel of named endpoints, atomically: the one exporter of the project.

`deepcorrect.export` (a classifier's serving signatures) and `qrnet.export` (a restorer, alone
or in front of a classifier) both write through `write_endpoints`, so a killed export never
leaves a partial SavedModel behind.
"""

from __future__ import annotations

import os
from typing import Callable

import keras
import tensorflow as tf

from robustkit.io import atomic_dir


def write_endpoints(
    path: str | os.PathLike,
    tracked: list,
    endpoints: dict[str, tuple[Callable, list[tf.TensorSpec]]],
) -> str:
    """Writes a SavedModel of `endpoints`, atomically.

    Args:
        path: output directory, written atomically (a temporary folder beside
            it, then a rename; an existing one is replaced), so a killed export
            leaves no partial SavedModel at `path`.
        tracked: the models and layers whose variables the endpoints use.
        endpoints: `{name: (function, input_signature)}`, as `serving_functions`
            returns.

    Returns:
        The path written, as a string.

    Example:

    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> import tempfile
    >>> spec = [tf.TensorSpec((None, 3), tf.float32)]
    >>> out = write_endpoints(tempfile.mkdtemp() + "/dense", [m], {"serve": (m, spec)})
    >>> loaded = tf.saved_model.load(out)
    >>> float(loaded.serve(tf.zeros((1, 3)))[0, 0])
    0.0
    """
    archive = keras.export.ExportArchive()
    for item in tracked:
        archive.track(item)
    for name, (function, signature) in endpoints.items():
        archive.add_endpoint(name, function, input_signature=signature)
    path = os.fspath(path)
    with atomic_dir(path) as tmp:
        archive.write_out(tmp, verbose=False)
    return path

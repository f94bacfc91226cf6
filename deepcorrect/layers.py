"""Channel plumbing layers used by `deepcorrect.wrap`.

`GatherChannels` picks the channels a correction unit works on, and
`ScatterChannels` writes the corrected channels back into their original
positions. Both are plain registered Keras layers (no `Lambda`), so a wrapped
model saves to `.keras` and loads with `safe_mode=True`.

Example:

```python
import numpy as np
from deepcorrect.layers import GatherChannels, ScatterChannels

x = np.arange(8, dtype="float32").reshape(1, 1, 2, 4)
picked = GatherChannels([3, 1])(x)            # channels 3 and 1
merged = ScatterChannels([3, 1], 4)([x, picked * 0.0])
# merged[..., 3] and merged[..., 1] are now 0, channels 0 and 2 untouched.
```
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

PACKAGE = "deepcorrect"


def validate_channel_indices(
    indices: Sequence[int], channels: int, name: str = "indices"
) -> list[int]:
    """Checks that `indices` are distinct integers in `[0, channels)`.

    Args:
        indices: channel indices.
        channels: number of channels of the tensor they index.
        name: argument name used in error messages. Defaults to `"indices"`.

    Returns:
        The indices as a list of Python ints.

    Raises:
        ValueError: if `indices` is empty, holds non-integers, out-of-range
            values or duplicates.

    Example:

    >>> validate_channel_indices([2, 0], 3)
    [2, 0]
    """
    values = np.asarray(indices)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of channel indices. "
            f"Received: {name}={indices!r}"
        )
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integers in [0, {channels}). "
            f"Received: {name}={indices!r}"
        )
    out_of_range = values[(values < 0) | (values >= channels)]
    if out_of_range.size:
        raise ValueError(
            f"{name} must hold integers in [0, {channels}); "
            f"{out_of_range.tolist()} are out of range. "
            f"Received: {name}={values.tolist()}"
        )
    unique, counts = np.unique(values, return_counts=True)
    duplicated = unique[counts > 1]
    if duplicated.size:
        raise ValueError(
            f"{name} must not repeat a channel; {duplicated.tolist()} appear "
            f"more than once. Received: {name}={values.tolist()}"
        )
    return [int(v) for v in values]


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatherChannels(keras.layers.Layer):
    """Selects channels along the last axis, in the given order.

    Args:
        indices: channel indices to keep, in output order.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> x = np.arange(3, dtype="float32").reshape(1, 3)
    >>> GatherChannels([2, 0])(x).numpy().tolist()
    [[2.0, 0.0]]
    """

    def __init__(self, indices: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]
        self._index_array = np.asarray(self.indices, dtype="int32")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None:
            validate_channel_indices(self.indices, channels, "indices")

    def call(self, inputs):
        return ops.take(inputs, self._index_array, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        config = super().get_config()
        config.update({"indices": list(self.indices)})
        return config


def scatter_permutation(indices: Sequence[int], channels: int) -> np.ndarray:
    """Index map that merges `[full, corrected]` back into `full`'s layout.

    Position `p` of the result reads `full[..., p]`, unless `p == indices[i]`,
    in which case it reads `corrected[..., i]`, stored at `channels + i` in the
    concatenation of `full` and `corrected`.

    Args:
        indices: channel positions the corrected channels go to.
        channels: number of channels of `full`.

    Returns:
        An int32 array of length `channels`.

    Example:

    >>> scatter_permutation([2, 0], 3).tolist()
    [4, 1, 3]
    """
    permutation = np.arange(channels, dtype="int32")
    permutation[np.asarray(indices, dtype="int64")] = channels + np.arange(
        len(indices), dtype="int32"
    )
    return permutation


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScatterChannels(keras.layers.Layer):
    """Writes corrected channels back into their original positions.

    Called on `[full, corrected]`, where `full` has `channels` channels and
    `corrected` has `len(indices)`; returns `full` with channel `indices[i]`
    replaced by `corrected[..., i]` and every other channel untouched. It is
    one concatenation and one gather, with no arithmetic on the untouched
    channels, so they come out bit for bit.

    Args:
        indices: channel positions in `full`, in the order of `corrected`.
        channels: number of channels of `full`.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> full = np.zeros((1, 3), "float32")
    >>> corrected = np.ones((1, 1), "float32")
    >>> ScatterChannels([1], 3)([full, corrected]).numpy().tolist()
    [[0.0, 1.0, 0.0]]
    """

    def __init__(self, indices: Sequence[int], channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.indices = validate_channel_indices(indices, self.channels, "indices")
        self._permutation = scatter_permutation(self.indices, self.channels)

    def build(self, input_shape):
        full_shape, corrected_shape = input_shape
        if full_shape[-1] is not None and full_shape[-1] != self.channels:
            raise ValueError(
                f"The first input must have channels={self.channels} channels. "
                f"Received input shape: {full_shape}"
            )
        if corrected_shape[-1] is not None and corrected_shape[-1] != len(
            self.indices
        ):
            raise ValueError(
                f"The second input must have {len(self.indices)} channels "
                f"(one per index). Received input shape: {corrected_shape}"
            )

    def call(self, inputs):
        full, corrected = inputs
        stacked = ops.concatenate([full, ops.cast(corrected, full.dtype)], axis=-1)
        return ops.take(stacked, self._permutation, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update({"indices": list(self.indices), "channels": self.channels})
        return config

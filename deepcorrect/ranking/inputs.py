"""What `rank` reads: the distortion, the filter range, and the images.

`resolve_distortion` turns a `distort` name, a `distort.Distortion` or a
callable into one function,
`check_filters` checks a `(start, stop)` filter range, `digest` fingerprints
the ranking images for checkpoints, `RankingData` holds the clean images
and makes their distorted versions, level by level, and `outputs_are_logits`
tells whether the model outputs logits or probabilities.

Example:

>>> import numpy as np
>>> name, fn = resolve_distortion("awgn")
>>> data = RankingData(clean=np.zeros((4, 8, 8, 3), "float32"),
...                    labels=np.zeros(4, "int64"),
...                    raw=np.zeros((4, 8, 8, 3), "float32"), levels=[10.0],
...                    distort_fn=fn, preprocess=None, seed=0)
>>> data.distorted(0).shape, data.chunks(3)
((4, 8, 8, 3), [slice(0, 3, None), slice(3, 4, None)])
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Mapping

import numpy as np

from deepcorrect.flat_program import Program, apply_preprocess
from distort.registry import names
from distort.spec import Distortion, as_distortions

# Keep all levels' distorted images in memory up to this many bytes; above it,
# they are recomputed for every layer.
DISTORTED_CACHE_BYTES = 1 << 30

# A `distort` name, a `distort.Distortion`, or `fn(images, level, seed) -> images`.
RankDistortion = str | Distortion | Callable[[np.ndarray, float, int], Any]


def resolve_distortion(distortion: RankDistortion) -> tuple[str, Callable]:
    """The name of a distortion and its function `fn(images, level, seed)`.

    Args:
        distortion: a `distort` name such as `"awgn"`, one distortion as
            `distort.as_distortions` reads it (a `distort.Distortion`, with its
            options; its levels are not used: `rank` takes `levels`), or a
            callable `fn(images, level, seed) -> images` (the escape hatch,
            named by its `__name__`).

    Returns:
        `(name, fn)`.

    Raises:
        ValueError: for an unknown name or a value that is neither a
            distortion nor callable, worded as `distort` words an unknown name,
            or for several distortions.

    Example:

    >>> resolve_distortion("gaussian_blur")[0]
    'gaussian_blur'
    >>> from distort import Distortion
    >>> resolve_distortion(Distortion("gaussian_blur", options={"window": "4sigma-1"}))[1].options
    {'window': '4sigma-1'}
    """
    if callable(distortion) and not isinstance(distortion, Distortion):
        return getattr(distortion, "__name__", type(distortion).__name__), distortion
    try:
        found = as_distortions(distortion)
    except (TypeError, ValueError):
        if isinstance(distortion, (Distortion, Mapping, list, tuple)):
            raise
        raise ValueError(
            f"distortion must be one of {names()} or a callable "
            f"fn(images, level, seed). Received: distortion={distortion!r}"
        ) from None
    if len(found) != 1:
        raise ValueError(f"distortion must be one distortion. Received: distortion={distortion!r}")
    return found[0].name, found[0]


def check_filters(filters: tuple[int, int] | None) -> tuple[int, int] | None:
    """Checks a `(start, stop)` range of filter indices (None: all filters).

    Args:
        filters: the pair, or None.

    Returns:
        `(start, stop)` as ints, or None.

    Raises:
        ValueError: if it is not a pair of integers with `0 <= start < stop`.

    Example:

    >>> check_filters((0, 8))
    (0, 8)
    """
    if filters is None:
        return None
    try:
        start, stop = (int(v) for v in filters)
    except (TypeError, ValueError):
        raise ValueError(
            f"filters must be a (start, stop) pair. Received: filters={filters!r}"
        ) from None
    if start < 0 or stop <= start:
        raise ValueError(
            f"filters must satisfy 0 <= start < stop. Received: filters={filters!r}"
        )
    return start, stop


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    """A SHA-1 hex digest of the images and labels (a checkpoint's `data` field).

    Example:

    >>> len(digest(np.zeros((2, 4, 4, 3)), np.zeros(2, "int64")))
    40
    """
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def outputs_are_logits(program: Program, images: np.ndarray) -> bool:
    """Whether the model outputs logits rather than softmax probabilities.

    The outputs on (up to) the first two images count as probabilities when
    they lie in [0, 1] and sum to 1 per image (to 1e-3); anything else is
    taken for logits.

    Args:
        program: the model's flat program.
        images: images the model reads (after preprocessing).

    Returns:
        True for logits, False for probabilities.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)),
    ...                           keras.layers.Dense(2, activation="softmax")])
    >>> outputs_are_logits(Program(model), np.ones((2, 3), "float32"))
    False
    """
    steps = range(len(program.steps))
    out = np.asarray(program.run({program.input: images[:2]}, steps)[program.output])
    probabilities = (np.all(out >= 0) and np.all(out <= 1)
                     and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))
    return not probabilities


@dataclasses.dataclass
class RankingData:
    """The ranking images: clean, labelled, and distorted level by level.

    Attributes:
        clean: the preprocessed clean images, what the model reads.
        labels: class indices, one per image.
        raw: the images as given (float32, 0..255), what `distort_fn` reads.
        levels: the distortion levels.
        distort_fn: `fn(images, level, seed) -> images`.
        preprocess: `fn(images) -> images` applied after the distortion, or
            None.
        seed: level `k` is distorted with seed `seed + k`.
    """

    clean: np.ndarray
    labels: np.ndarray
    raw: np.ndarray
    levels: list[float]
    distort_fn: Callable
    preprocess: Callable[[np.ndarray], np.ndarray] | None
    seed: int
    _cache: dict[int, np.ndarray] = dataclasses.field(
        default_factory=dict, init=False, repr=False)

    @property
    def n(self) -> int:
        """The number of images."""
        return self.raw.shape[0]

    def distorted(self, level_index: int) -> np.ndarray:
        """Distorted (then preprocessed) images of one level; seed + index."""
        if level_index in self._cache:
            return self._cache[level_index]
        x = self.distort_fn(self.raw, self.levels[level_index],
                            self.seed + level_index)
        x = np.asarray(x, dtype=np.float32)
        if x.shape != self.raw.shape:
            raise ValueError(
                f"The distortion returned shape {x.shape} for images of shape "
                f"{self.raw.shape}."
            )
        x = apply_preprocess(self.preprocess, x)
        if x.nbytes * len(self.levels) <= DISTORTED_CACHE_BYTES:
            self._cache[level_index] = x
        return x

    def chunks(self, size: int) -> list[slice]:
        """Slices of at most `size` consecutive images, covering all of them."""
        return [slice(i, min(i + size, self.n)) for i in range(0, self.n, size)]


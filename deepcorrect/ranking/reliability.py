"""How reproducible a layer's priorities are: split-half and bootstrap.

The exact method keeps every image's outcome after every swap, so the
priorities that any subset or resample of the ranking images would give cost
one matrix product each, with no further swap pass. Two summaries are kept per
layer (`Reliability`):

- split-half: the images are split into two fixed disjoint halves by a seeded
  permutation (`split_halves`); the Spearman correlation `r` between the
  priorities on either half says how well one half of the images predicts the
  ranking of the other, and the Spearman-Brown value `2r / (1 + r)` estimates
  that correlation for two sets of all `N` images;
- bootstrap: `BOOTSTRAP_RESAMPLES` resamples of the images with replacement
  (seeded) give each filter's 2.5 and 97.5 percentiles of the priority.

Example:

>>> import numpy as np
>>> values = np.random.default_rng(0).normal(size=(8, 40))  # filters x images
>>> rel = estimate(lambda w: w @ values.T / w.sum(1, keepdims=True),
...                num_images=40, seed=0, filter_count=8)
>>> rel.half_priorities.shape, rel.interval.shape
((2, 8), (2, 8))
>>> bool(np.all(rel.interval[0] <= rel.interval[1]))
True
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# Bootstrap resamples of the images, and the percentiles of the interval.
BOOTSTRAP_RESAMPLES = 200
INTERVAL_PERCENTILES = (2.5, 97.5)
# Below this split-half reliability (Spearman-Brown), a ranking is flagged.
RELIABLE_ABOVE = 0.5

# Streams of `numpy.random.default_rng([seed, stream])`: the split, the bootstrap.
_SPLIT_STREAM, _BOOTSTRAP_STREAM = 1, 2


def split_halves(num_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The two disjoint halves of the images that split-half reliability uses.

    A seeded permutation of `range(num_images)`: its first `num_images // 2`
    entries are half A, the rest half B (one more for an odd count).

    Args:
        num_images: the number of ranking images.
        seed: the ranking's seed (`rank(..., seed=...)`).

    Returns:
        `(half_a, half_b)`, sorted image indices.

    Example:

    >>> a, b = split_halves(5, seed=0)
    >>> sorted([*a, *b]) == [0, 1, 2, 3, 4], len(a), len(b)
    (True, 2, 3)
    """
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(num_images)
    half = num_images // 2
    return np.sort(order[:half]), np.sort(order[half:])


def bootstrap_weights(num_images: int, seed: int, resamples: int) -> np.ndarray:
    """How often each image appears in each bootstrap resample.

    Args:
        num_images: the number of ranking images.
        seed: the ranking's seed.
        resamples: the number of resamples.

    Returns:
        An int array of shape `(resamples, num_images)`, each row summing to
        `num_images`.

    Example:

    >>> bootstrap_weights(4, seed=0, resamples=3).sum(axis=1).tolist()
    [4, 4, 4]
    """
    draws = np.random.default_rng([seed, _BOOTSTRAP_STREAM]).integers(
        0, num_images, (resamples, num_images))
    offsets = np.arange(resamples)[:, None] * num_images
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * num_images)
    return counts.reshape(resamples, num_images)


def spearman_brown(r: float) -> float:
    """The Spearman-Brown prophecy for a test of double length: `2r / (1 + r)`.

    NaN for NaN, and for `r = -1`.

    Example:

    >>> spearman_brown(0.5)
    0.6666666666666666
    """
    if not np.isfinite(r) or r <= -1.0:
        return float("nan")
    return 2.0 * r / (1.0 + r)


@dataclasses.dataclass
class Reliability:
    """How reproducible one layer's priorities are across the ranking images.

    Filters that were not computed (a partial ranking, see
    `rank(..., filters=...)`) hold NaN until `Ranking.merge`.

    Attributes:
        half_priorities: `(2, filters)`: the priorities on half A and half B of
            the images (`halves`).
        interval: `(2, filters)`: the bootstrap 2.5 and 97.5 percentiles of
            each filter's priority.
        num_images: the number of ranking images.
        seed: the seed of the split and of the resamples.
        resamples: the number of bootstrap resamples.

    Example:

    >>> import numpy as np
    >>> rel = Reliability(half_priorities=np.array([[0.1, 0.2, 0.3], [0.0, 0.3, 0.5]]),
    ...                   interval=np.zeros((2, 3)), num_images=10, seed=0,
    ...                   resamples=200)
    >>> rel.split_half, round(rel.spearman_brown, 3)
    (1.0, 1.0)
    """

    half_priorities: np.ndarray
    interval: np.ndarray
    num_images: int
    seed: int
    resamples: int

    def __post_init__(self) -> None:
        self.half_priorities = np.asarray(self.half_priorities, dtype=np.float64)
        self.interval = np.asarray(self.interval, dtype=np.float64)
        for name in ("half_priorities", "interval"):
            value = getattr(self, name)
            if value.ndim != 2 or value.shape[0] != 2:
                raise ValueError(
                    f"{name} must have shape (2, filters). Received shape {value.shape}."
                )
        if self.interval.shape != self.half_priorities.shape:
            raise ValueError(
                f"interval has shape {self.interval.shape} but half_priorities "
                f"{self.half_priorities.shape}."
            )
        self.num_images, self.seed, self.resamples = (
            int(self.num_images), int(self.seed), int(self.resamples))

    @property
    def filter_count(self) -> int:
        """The number of filters of the layer."""
        return self.half_priorities.shape[1]

    @property
    def halves(self) -> tuple[np.ndarray, np.ndarray]:
        """The image indices of half A and half B (`split_halves`)."""
        return split_halves(self.num_images, self.seed)

    @property
    def split_half(self) -> float:
        """Spearman correlation of the two halves' priorities, over the computed filters.

        NaN when fewer than two filters are computed or either half's
        priorities are constant.
        """
        from scipy import stats

        a, b = self.half_priorities
        both = np.isfinite(a) & np.isfinite(b)
        if both.sum() < 2 or np.ptp(a[both]) == 0 or np.ptp(b[both]) == 0:
            return float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(stats.spearmanr(a[both], b[both])[0])

    @property
    def spearman_brown(self) -> float:
        """The split-half correlation corrected to all images, `2r / (1 + r)`."""
        return spearman_brown(self.split_half)

    @property
    def is_reliable(self) -> bool:
        """Whether `spearman_brown` is at least `RELIABLE_ABOVE` (False for NaN)."""
        return bool(self.spearman_brown >= RELIABLE_ABOVE)

    def summary(self) -> str:
        """One line: the split-half reliability, flagged when below `RELIABLE_ABOVE`.

        Example:

        >>> import numpy as np
        >>> Reliability(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]),
        ...             np.zeros((2, 3)), 10, 0, 200).summary()
        'split-half reliability nan (Spearman-Brown; halves r=-1.00) UNRELIABLE'
        """
        flag = "" if self.is_reliable else " UNRELIABLE"
        return (f"split-half reliability {self.spearman_brown:.2f} (Spearman-Brown; "
                f"halves r={self.split_half:.2f}){flag}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN is written as `null`.

        `split_half` and `spearman_brown` are written for readers of the file;
        `from_dict` recomputes them from the half priorities.
        """
        def rows(a: np.ndarray) -> list[list[float | None]]:
            return [[None if np.isnan(v) else float(v) for v in row] for row in a]

        def number(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {
            "num_images": self.num_images,
            "seed": self.seed,
            "resamples": self.resamples,
            "split_half": number(self.split_half),
            "spearman_brown": number(self.spearman_brown),
            "half_priorities": rows(self.half_priorities),
            "interval": rows(self.interval),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Reliability":
        """Inverse of `to_dict`.

        Raises:
            ValueError: naming the field that is missing or malformed.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"an object is expected, found {type(data).__name__}")
        values: dict[str, Any] = {}
        for field in ("num_images", "seed", "resamples"):
            value = data.get(field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{field} must be a non-negative integer. "
                                 f"Received: {field}={value!r}")
            values[field] = value
        for field in ("half_priorities", "interval"):
            values[field] = _two_rows(field, data.get(field))
        return cls(**values)

    @classmethod
    def merge(cls, layer_name: str, parts: Sequence["Reliability"]) -> "Reliability":
        """Combines one layer's reliabilities from rankings of different filters.

        Each filter's half priorities and interval come from the part that
        computed it; `split_half` is then over all merged filters, which equals
        the unsharded value because every part used the same images, halves and
        resamples (the same seed).

        Args:
            layer_name: the layer, for messages.
            parts: its reliabilities, all with the same images, seed and resamples.

        Returns:
            One `Reliability`.

        Raises:
            ValueError: if the parts differ in images, seed, resamples or filter
                count, or disagree on a filter that several parts computed.
        """
        first = parts[0]
        half = first.half_priorities.copy()
        interval = first.interval.copy()
        for part in parts[1:]:
            for field in ("num_images", "seed", "resamples", "filter_count"):
                if getattr(part, field) != getattr(first, field):
                    raise ValueError(
                        f"Cannot merge the reliability of layer {layer_name!r}: "
                        f"different {field} ({getattr(first, field)} vs "
                        f"{getattr(part, field)})."
                    )
            for mine, theirs in ((half, part.half_priorities), (interval, part.interval)):
                fill_computed(mine, theirs,
                              f"Cannot merge the reliability of layer {layer_name!r}: "
                              "conflicting values for filters computed by several parts.")
        return dataclasses.replace(first, half_priorities=half, interval=interval)


def fill_computed(values: np.ndarray, other: np.ndarray, conflict: str) -> None:
    """Fills `values`' NaNs (filters not computed) from `other`, in place.

    How shards computed on disjoint filter ranges merge: where both computed a
    filter, they must agree.

    Args:
        values: the merged values so far, NaN where no part computed them.
        other: one more part's values, of the same shape.
        conflict: the message of the `ValueError` raised when both computed a
            filter and disagree.

    Example:

    >>> a = np.array([1.0, np.nan]); fill_computed(a, np.array([np.nan, 2.0]), "no")
    >>> a.tolist()
    [1.0, 2.0]
    """
    both = ~np.isnan(values) & ~np.isnan(other)
    if not np.allclose(values[both], other[both]):
        raise ValueError(conflict)
    fill = np.isnan(values)
    values[fill] = other[fill]


def _two_rows(field: str, rows: Any) -> np.ndarray:
    """A `(2, filters)` float array from two JSON lists (null: NaN)."""
    def is_number(v: Any) -> bool:
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))

    if not (isinstance(rows, list) and len(rows) == 2
            and all(isinstance(row, list) and all(map(is_number, row)) for row in rows)
            and len(rows[0]) == len(rows[1])):
        shown = repr(rows)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ValueError(f"{field} must be two lists of numbers of the same length "
                         f"(null: not computed). Received: {field}={shown}")
    return np.array([[np.nan if v is None else v for v in row] for row in rows], np.float64)


def estimate(
    scores_fn: Callable[[np.ndarray], np.ndarray],
    num_images: int,
    seed: int,
    filter_count: int,
    start: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Reliability:
    """The split-half priorities and bootstrap intervals of one layer.

    Args:
        scores_fn: `fn(weights) -> priorities`: image weights of shape
            `(rows, num_images)` to priorities of shape `(rows, computed
            filters)`, as `exact.weighted_scores` gives them.
        num_images: the number of ranking images.
        seed: the seed of the split and the resamples.
        filter_count: the layer's number of filters.
        start: the index of the first computed filter (default 0); filters
            outside the computed range are NaN.
        resamples: bootstrap resamples (default `BOOTSTRAP_RESAMPLES`).

    Returns:
        A `Reliability`. With fewer than 2 images the half priorities are NaN.
    """
    half = np.full((2, filter_count), np.nan)
    interval = np.full((2, filter_count), np.nan)
    if num_images >= 2:
        weights = np.zeros((2, num_images))
        for row, indices in enumerate(split_halves(num_images, seed)):
            weights[row, indices] = 1.0
        values = scores_fn(weights)
        half[:, start:start + values.shape[1]] = values
    if num_images >= 1:
        boot = scores_fn(bootstrap_weights(num_images, seed, resamples))
        interval[:, start:start + boot.shape[1]] = np.percentile(
            boot, INTERVAL_PERCENTILES, axis=0)
    return Reliability(half_priorities=half, interval=interval,
                       num_images=num_images, seed=seed, resamples=resamples)


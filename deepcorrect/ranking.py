"""Correction-priority ranking of convolutional filters (Algorithm 1).

DeepCorrect (Borkar and Karam, https://arxiv.org/abs/1705.02406, Section 4.1)
ranks every filter `j` of a convolutional layer `i` by its correction priority

    tau(i, j) = p_swp(i, j) - p_b,

the top-1 accuracy on distorted images when the distorted output of filter `j`
is replaced by its clean output, minus the accuracy on the distorted images.

How it is computed here, for any Keras functional CNN:

1. The model is flattened into a *program*: a topologically ordered list of
   steps (one per layer call, nested models expanded), each reading and writing
   named tensors. Nothing in the user's model is modified or re-wired.
2. For one layer, the *site* tensor is its output (`"pre_activation"`; a conv
   with a built-in activation is split into its linear part and the activation)
   or the end of the batch-norm/activation chain that follows it
   (`"post_activation"`).
3. The *head* computes the site tensor, plus every *boundary* tensor that the
   rest of the network reads from before the site (a residual shortcut, a
   second branch), once for the clean and once for the distorted images.
4. The *tail* runs only the steps downstream of the site. `K` filter swaps are
   evaluated in one call by stacking `K` copies of the batch, copy `k` taking
   channel `j_k` from the clean activations (`tf.where` on a one-hot mask, so
   the swapped values are bit-exact copies).
5. Per-channel layers right after the site (batch norm, elementwise
   activations, pooling, padding, depthwise convolutions with multiplier 1)
   commute with a channel swap, element for element. The swap is made after
   them, so they run once per image rather than once per stacked swap.

`method="approx"` replaces step 4 by a first-order estimate from one forward
and backward pass per image: the loss change of a swap is approximated by
`sum((a_clean - a_distorted) * dLoss/da)` over the filter's positions, and the
priority is its negation.

Example:

```python
import numpy as np
import keras
from deepcorrect.ranking import rank

inputs = keras.Input((8, 8, 3))
x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
x = keras.layers.ReLU()(x)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(3, activation="softmax")(x)
model = keras.Model(inputs, outputs, name="tiny")

rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (16, 8, 8, 3)).astype("float32")
labels = rng.integers(0, 3, 16)

def noise(x, level, seed):
    return x + np.random.default_rng(seed).normal(0, level, x.shape)

ranking = rank(model, images, labels, noise, levels=[20.0, 40.0],
               preprocess=lambda x: x / 255.0, progress=False)
ranking.priorities["conv1"].shape   # (4,)
ranking.top("conv1", 0.5)           # indices of the 2 most susceptible
```

The module needs the TensorFlow backend of Keras.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from deepcorrect import checks
from deepcorrect.flat_program import (
    Program,
    Site,
    apply_preprocess,
    choose_conv_layers,
    conv_layers,
    filter_count,
    head_fn,
    site_for,
)
from robustkit.io import atomic_write_text
from robustkit.seeds import check_seed

FORMAT_VERSION = 1

SITES = ("pre_activation", "post_activation")
SCORES = ("gain", "relative_error")
METHODS = ("exact", "approx")
APPROX_SCORE = "first_order_loss"

# Keep all levels' distorted images in memory up to this many bytes; above it,
# they are recomputed for every layer.
DISTORTED_CACHE_BYTES = 1 << 30

Distortion = str | Callable[[np.ndarray, float, int], Any]


# --------------------------------------------------------------------------
# The Ranking result
# --------------------------------------------------------------------------


def _top_count(beta: float, n: int) -> int:
    """`ceil(beta * n)` filters, at least 1 (a 1e-9 guard absorbs float error)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.number)):
        raise ValueError(f"beta must be a number in (0, 1]. Received: beta={beta!r}")
    if not 0.0 < float(beta) <= 1.0:
        raise ValueError(f"beta must be in (0, 1]. Received: beta={beta!r}")
    return min(n, max(1, math.ceil(float(beta) * n - 1e-9)))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field_error(field: str, expected: str, value: Any) -> ValueError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return ValueError(f"{field} must be {expected}. Received: {field}={shown}")


# Optional fields of a saved ranking: (default, check, what is expected).
_OPTIONAL_FIELDS: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "distortion": ("", lambda v: isinstance(v, str), "a string"),
    "levels": ([], lambda v: isinstance(v, list) and all(map(_is_number, v)),
               "a list of numbers"),
    "score": ("gain", lambda v: v in (*SCORES, APPROX_SCORE),
              f"one of {[*SCORES, APPROX_SCORE]}"),
    "site": ("pre_activation", lambda v: v in SITES, f"one of {list(SITES)}"),
    "method": ("exact", lambda v: v in METHODS, f"one of {list(METHODS)}"),
    "num_images": (0, lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "baseline_accuracy": ([], lambda v: isinstance(v, list) and all(map(_is_number, v)),
                          "a list of numbers"),
    "extra": ({}, lambda v: isinstance(v, dict), "an object"),
}


@dataclasses.dataclass
class Ranking:
    """Correction priorities of the filters of some conv layers of one model.

    Attributes:
        priorities: `{layer_name: np.ndarray}`, one float per output channel
            (filter) of the layer; larger means more worth correcting. A
            partial ranking (computed with `filters=(start, stop)`) holds NaN
            for the filters it did not compute; `Ranking.merge` fills them in.
        model_name: `model.name` of the ranked model.
        filter_counts: `{layer_name: number of filters}`.
        distortion: distortion name (or the callable's `__name__`).
        levels: the distortion levels averaged over.
        score: `"gain"` (the paper's signed top-1 gain), `"relative_error"`
            (`|err_swap - err_ref| / err_ref`, the original code), or
            `"first_order_loss"` (the approximate method).
        site: `"pre_activation"` or `"post_activation"`.
        method: `"exact"` or `"approx"`.
        num_images: number of ranking images.
        baseline_accuracy: top-1 accuracy on the distorted images, per level
            (`p_b`; empty for the approximate method).
        extra: free-form JSON-serialisable metadata: `seed`, `filters` (the
            computed range per layer), `run` (the arguments a checkpoint must
            match), `done` (finished layers) and `timing` (per layer: wall
            `seconds`, `tail_seconds` and `tail_samples` of the swap passes).

    Example:

    >>> import numpy as np
    >>> r = Ranking({"conv1": np.array([0.1, 0.3, 0.3, 0.0])},
    ...             model_name="m", filter_counts={"conv1": 4})
    >>> r.order("conv1").tolist()
    [1, 2, 0, 3]
    >>> r.top("conv1", 0.5).tolist()
    [1, 2]
    """

    priorities: dict[str, np.ndarray]
    model_name: str
    filter_counts: dict[str, int]
    distortion: str = ""
    levels: list[float] = dataclasses.field(default_factory=list)
    score: str = "gain"
    site: str = "pre_activation"
    method: str = "exact"
    num_images: int = 0
    baseline_accuracy: list[float] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.priorities = {
            name: np.asarray(values, dtype=np.float64).reshape(-1)
            for name, values in self.priorities.items()
        }
        self.filter_counts = {k: int(v) for k, v in self.filter_counts.items()}
        for name, values in self.priorities.items():
            if name not in self.filter_counts:
                raise ValueError(f"Missing filter count for layer {name!r}.")
            if values.size != self.filter_counts[name]:
                raise ValueError(
                    f"Layer {name!r} has {self.filter_counts[name]} filters but "
                    f"{values.size} priorities."
                )

    # ---- access -----------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        """Ranked layer names, in model order."""
        return list(self.priorities)

    def is_complete(self, layer_name: str | None = None) -> bool:
        """Whether every filter (of one layer, or of all) has a priority."""
        names = self.layer_names if layer_name is None else [layer_name]
        return all(
            not np.isnan(self._values(name)).any() for name in names
        )

    def _values(self, layer_name: str) -> np.ndarray:
        if layer_name not in self.priorities:
            raise ValueError(
                f"Unknown layer_name={layer_name!r}. Ranked layers: "
                f"{self.layer_names}"
            )
        return self.priorities[layer_name]

    def _complete_values(self, layer_name: str) -> np.ndarray:
        values = self._values(layer_name)
        if np.isnan(values).any():
            missing = np.flatnonzero(np.isnan(values))
            raise ValueError(
                f"Layer {layer_name!r} is only partly ranked ({missing.size} "
                f"filters missing, e.g. {missing[:5].tolist()}); merge the "
                "parts with Ranking.merge first."
            )
        return values

    def order(self, layer_name: str) -> np.ndarray:
        """Filter indices of a layer by descending priority.

        Ties keep the lower index first (a stable sort).

        Args:
            layer_name: a ranked layer.

        Returns:
            An int array holding a permutation of `range(N)`.
        """
        values = self._complete_values(layer_name)
        return np.argsort(-values, kind="stable")

    def top(self, layer_name: str, beta: float) -> np.ndarray:
        """The `ceil(beta * N)` highest-priority filters of a layer.

        Rounding is up (at least `beta` of the filters are returned) and at
        least one filter is returned: beta=0.5 of 96 gives 48, of 7 gives 4.

        Args:
            layer_name: a ranked layer.
            beta: fraction of filters, in (0, 1].

        Returns:
            Indices in descending priority order.
        """
        values = self._complete_values(layer_name)
        return self.order(layer_name)[: _top_count(beta, values.size)]

    def global_order(self) -> list[tuple[str, int]]:
        """All filters of all layers by descending priority.

        Ties go to the earlier layer, then the lower index.

        Returns:
            A list of `(layer_name, filter_index)` pairs.
        """
        keys = [
            (-float(v), li, j)
            for li, name in enumerate(self.layer_names)
            for j, v in enumerate(self._complete_values(name))
        ]
        keys.sort()
        names = self.layer_names
        return [(names[li], j) for _, li, j in keys]

    def global_top(self, beta: float) -> dict[str, np.ndarray]:
        """The top `ceil(beta * total)` filters over all layers (global ranking).

        Args:
            beta: fraction of all ranked filters, in (0, 1].

        Returns:
            `{layer_name: indices}` for every ranked layer, each in descending
            priority order (possibly empty).
        """
        pairs = self.global_order()
        chosen = pairs[: _top_count(beta, len(pairs))]
        return {
            name: np.array([j for n, j in chosen if n == name], dtype=np.int64)
            for name in self.layer_names
        }

    # ---- checks, serialisation -------------------------------------------

    def check_model(self, model: keras.Model, argument: str | None = None) -> None:
        """Checks that this ranking fits `model`.

        The rule, the same for `Ranking.load(path, model)`, `deepcorrect.wrap`
        and the command line: every ranked layer must be a conv layer of
        `model` with the recorded number of filters. A different model name
        only warns (a `UserWarning`), so that a ranking carries over to a
        renamed or rebuilt copy of the same network.

        Args:
            model: the model the ranking is to be used with.
            argument: the argument that passed the ranking, for messages
                (`wrap` passes `"ranks"`); None for the ranking itself.

        Raises:
            TypeError: if `model` is not a Functional or Sequential model.
            ValueError: naming the first ranked layer that the model lacks or
                that has another number of filters.
        """
        checks.check_model(model)
        subject = f"{argument} was made for a model whose layer" if argument else "Ranking layer"
        convs = {layer.name: layer for layer in conv_layers(model)}
        for name, count in self.filter_counts.items():
            if name not in convs:
                shown = list(convs)[:20]
                raise ValueError(
                    f"{subject} {name!r} is not a conv layer of model "
                    f"{model.name!r} (layer names differ). Its conv layers: "
                    f"{shown}{' ...' if len(convs) > 20 else ''}"
                )
            actual = filter_count(convs[name])
            if actual != count:
                raise ValueError(
                    f"{subject} {name!r} has {count} filters but the model's "
                    f"layer has {actual} (filter counts differ): rank model "
                    f"{model.name!r}, or use the ranking with model "
                    f"{self.model_name!r}."
                )
        if model.name != self.model_name:
            warnings.warn(
                f"{argument or 'The ranking'} was made for model "
                f"{self.model_name!r} and is used with model {model.name!r}; "
                "its layer names and filter counts match.",
                UserWarning,
                stacklevel=2,
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN (not computed) is written as `null`."""
        return {
            "format": "deepcorrect.ranking",
            "version": FORMAT_VERSION,
            "model_name": self.model_name,
            "layer_names": self.layer_names,
            "filter_counts": self.filter_counts,
            "distortion": self.distortion,
            "levels": [float(v) for v in self.levels],
            "score": self.score,
            "site": self.site,
            "method": self.method,
            "num_images": int(self.num_images),
            "baseline_accuracy": [float(v) for v in self.baseline_accuracy],
            "extra": self.extra,
            "priorities": {
                name: [None if np.isnan(v) else float(v) for v in values]
                for name, values in self.priorities.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Ranking":
        """Inverse of `to_dict`.

        Raises:
            KeyError: naming a required field that is missing (`load` reports
                it as a ValueError).
            ValueError: naming the field that is malformed, or the layer whose
                filter count does not match its priorities.
        """
        if not isinstance(data, Mapping):
            raise ValueError(
                "Not a deepcorrect ranking: a JSON object is expected, found "
                f"{type(data).__name__}."
            )
        if data.get("format") != "deepcorrect.ranking":
            raise ValueError("Not a deepcorrect ranking (missing format tag).")
        version = data.get("version", FORMAT_VERSION)
        if not _is_int(version):
            raise _field_error("version", "an integer", version)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"Ranking format version {version} is newer than this library's "
                f"{FORMAT_VERSION}."
            )
        for field in ("layer_names", "priorities", "filter_counts", "model_name"):
            if field not in data:
                raise KeyError(field)
        if not isinstance(data["model_name"], str):
            raise _field_error("model_name", "a string", data["model_name"])
        names = data["layer_names"]
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)
                and len(set(names)) == len(names)):
            raise _field_error("layer_names", "a list of distinct layer names", names)
        for field in ("filter_counts", "priorities"):
            table = data[field]
            if not isinstance(table, Mapping):
                raise _field_error(field, "an object keyed by layer name", table)
            if set(table) != set(names):
                missing = [n for n in names if n not in table]
                extra = [n for n in table if n not in names]
                raise ValueError(
                    f"{field} must have one entry per layer of layer_names "
                    f"{names}; missing: {missing}, not in layer_names: {extra}."
                )
        priorities = {}
        for name in names:
            count = data["filter_counts"][name]
            if not _is_int(count) or count < 1:
                raise _field_error(f"filter_counts[{name!r}]", "a positive integer", count)
            row = data["priorities"][name]
            if not (isinstance(row, list)
                    and all(v is None or _is_number(v) for v in row)):
                raise _field_error(
                    f"priorities[{name!r}]", "a list of numbers (null: not computed)", row)
            if len(row) != count:
                raise ValueError(
                    f"priorities[{name!r}] holds {len(row)} values but "
                    f"filter_counts[{name!r}] is {count}."
                )
            priorities[name] = np.array(
                [np.nan if v is None else v for v in row], dtype=np.float64)
        options = {}
        for field, (default, valid, expected) in _OPTIONAL_FIELDS.items():
            value = data.get(field, default)
            if not valid(value):
                raise _field_error(field, expected, value)
            options[field] = value
        return cls(
            priorities=priorities,
            model_name=data["model_name"],
            filter_counts={n: data["filter_counts"][n] for n in names},
            **options,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Writes the ranking as JSON (atomically: temp file, then rename)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(
        cls, path: str | os.PathLike, model: keras.Model | None = None
    ) -> "Ranking":
        """Reads a ranking saved with `save`.

        Args:
            path: JSON file.
            model: if given, the ranking must fit it (see `check_model`: same
                conv layer names and filter counts; another model name only
                warns).

        Returns:
            The `Ranking`.

        Raises:
            ValueError: naming the file and what is wrong with it: not UTF-8,
                not valid JSON (a `json.JSONDecodeError`, which is a
                ValueError), a missing or malformed field, filter counts that
                do not match the priorities, or a ranking that does not fit
                `model`.
            OSError: if the file cannot be read (e.g. FileNotFoundError).
        """
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            raise ValueError(
                f"Ranking file {path!r} is not UTF-8 text, so not a JSON ranking."
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise json.JSONDecodeError(
                f"Ranking file {path!r} is not valid JSON: {e.msg}", e.doc, e.pos
            ) from None
        try:
            ranking = cls.from_dict(data)
            if model is not None:
                ranking.check_model(model)
        except KeyError as e:
            raise ValueError(f"Ranking file {path!r} has no {e.args[0]!r} field.") from None
        except ValueError as e:
            raise ValueError(f"Ranking file {path!r}: {e}") from None
        return ranking

    @classmethod
    def merge(cls, parts: Sequence["Ranking"]) -> "Ranking":
        """Combines rankings computed on different layers or filter ranges.

        The parts must agree on the model, distortion, levels, score, site,
        method and number of images. A filter computed by several parts must
        have the same priority in each.

        Args:
            parts: rankings, e.g. from `rank(..., layers=[...])` or
                `rank(..., filters=(start, stop))` run in separate processes.

        Returns:
            One `Ranking`; layers keep model order (the order of first
            appearance across the parts).
        """
        parts = list(parts)
        if not parts:
            raise ValueError("merge needs at least one part. Received: parts=[]")
        first = parts[0]
        fields = ("model_name", "distortion", "levels", "score", "site",
                  "method", "num_images")
        for part in parts[1:]:
            for field in fields:
                a, b = getattr(first, field), getattr(part, field)
                if list(np.atleast_1d(a)) != list(np.atleast_1d(b)):
                    raise ValueError(
                        f"Cannot merge rankings with different {field}: "
                        f"{a!r} vs {b!r}."
                    )
            if part.baseline_accuracy and first.baseline_accuracy and not (
                np.allclose(part.baseline_accuracy, first.baseline_accuracy)
            ):
                raise ValueError(
                    "Cannot merge rankings with different baseline_accuracy "
                    "(different images or distortion seeds?)."
                )
        priorities: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for part in parts:
            for name, values in part.priorities.items():
                if name not in priorities:
                    priorities[name] = values.copy()
                    counts[name] = part.filter_counts[name]
                    continue
                if counts[name] != part.filter_counts[name]:
                    raise ValueError(
                        f"Cannot merge: layer {name!r} has "
                        f"{counts[name]} vs {part.filter_counts[name]} filters."
                    )
                current = priorities[name]
                both = ~np.isnan(current) & ~np.isnan(values)
                if not np.allclose(current[both], values[both]):
                    raise ValueError(
                        f"Cannot merge: layer {name!r} has conflicting "
                        "priorities for filters computed by several parts."
                    )
                fill = np.isnan(current)
                current[fill] = values[fill]
        extra = dict(first.extra)
        extra.pop("filters", None)
        return cls(
            priorities=priorities,
            model_name=first.model_name,
            filter_counts=counts,
            distortion=first.distortion,
            levels=list(first.levels),
            score=first.score,
            site=first.site,
            method=first.method,
            num_images=first.num_images,
            baseline_accuracy=list(first.baseline_accuracy),
            extra=extra,
        )


def spearman(a: Ranking, b: Ranking, layer_name: str | None = None) -> float:
    """Spearman rank correlation between two rankings' priorities.

    Args:
        a: a ranking.
        b: another ranking of the same layers.
        layer_name: one layer, or None to pool the per-layer correlations
            (their mean over the layers both rankings hold).

    Returns:
        The correlation in [-1, 1] (NaN if a layer's priorities are constant).
    """
    from scipy import stats

    names = [layer_name] if layer_name else [
        n for n in a.layer_names if n in b.priorities
    ]
    if not names:
        raise ValueError("The rankings share no layer.")
    rhos = [
        stats.spearmanr(a._complete_values(n), b._complete_values(n))[0]
        for n in names
    ]
    return float(np.mean(rhos))


# --------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------


def _resolve_distortion(distortion: Distortion) -> tuple[str, Callable]:
    """Returns (name, fn(images, level, seed) -> images).

    Raises:
        ValueError: for an unknown name or a value that is neither a name nor
            callable, worded as `distort` words an unknown name.
    """
    import distort

    if callable(distortion) and not isinstance(distortion, str):
        return getattr(distortion, "__name__", type(distortion).__name__), distortion
    if not isinstance(distortion, str) or distortion not in distort.names():
        raise ValueError(
            f"distortion must be one of {distort.names()} or a callable "
            f"fn(images, level, seed). Received: distortion={distortion!r}"
        )
    return distortion, lambda x, level, seed: distort.apply(x, distortion, level, seed=seed)


def _check_filters(filters: tuple[int, int] | None) -> tuple[int, int] | None:
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


def _digest(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


@dataclasses.dataclass
class _Data:
    """Clean images, labels and their distorted, preprocessed versions."""

    clean: np.ndarray  # preprocessed
    labels: np.ndarray
    raw: np.ndarray
    levels: list[float]
    distort_fn: Callable
    preprocess: Callable[[np.ndarray], np.ndarray]
    seed: int
    _cache: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def n(self) -> int:
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
        return [slice(i, min(i + size, self.n)) for i in range(0, self.n, size)]


# --------------------------------------------------------------------------
# Exact ranking
# --------------------------------------------------------------------------


def _prepare_fn(site: Site) -> Callable:
    """fn(clean, dist) -> the two tensors `_swap_fn` reads, once per chunk.

    Without a mix: the clean and distorted site tensors. With one: the mixing
    layer's output before its activation on the distorted tensor, and
    `clean - dist`.
    """
    mix = site.mix
    if mix is None:
        return lambda clean, dist: (clean, dist)

    @tf.function(reduce_retracing=True, autograph=False)
    def prepare(clean, dist):
        return mix.pre_activation(dist), clean - dist

    return prepare


def _swap_fn(program: Program, site: Site) -> Callable:
    """tf.function counting correct predictions for K stacked filter swaps.

    Copy `k` of the batch is the distorted site tensor with channel
    `filters[k]` taken from the clean one (with a mix: the mixing layer's
    output for that swap, see `deepcorrect.flat_program.Mix`); boundary tensors are the distorted
    ones, tiled. Returns the number of correct top-1 predictions per copy.
    """

    @tf.function(reduce_retracing=True, autograph=False)
    def swap_counts(first, second, boundary, labels, filters):
        k = tf.shape(filters)[0]
        b = tf.shape(labels)[0]
        if site.mix is not None:
            values = {site.mix.out_key: site.mix.swapped(first, second, filters)}
        else:
            clean, dist = first, second
            rank = len(dist.shape)
            mask_shape = [1] * (rank + 1)
            mask_shape[site.channel_axis % rank + 1] = site.channels
            mask = tf.one_hot(filters, site.channels, on_value=True, off_value=False)
            mask = tf.reshape(mask, tf.concat([[k], mask_shape[1:]], 0))
            mixed = tf.where(mask, clean[None], dist[None])
            mixed = tf.reshape(mixed, tf.concat([[k * b], tf.shape(dist)[1:]], 0))
            values = {site.swap_key: mixed}
        for key, t in zip(site.boundary, boundary):
            values[key] = tf.tile(t, [k] + [1] * (len(t.shape) - 1))
        values = program.run(values, site.tail)
        pred = tf.argmax(values[program.output], axis=-1, output_type=tf.int64)
        hit = tf.cast(tf.equal(pred, tf.tile(labels, [k])), tf.int32)
        return tf.reduce_sum(tf.reshape(hit, [k, b]), axis=1)

    return swap_counts


def _predict_fn(program: Program) -> Callable:
    @tf.function(reduce_retracing=True, autograph=False)
    def correct(x, labels):
        out = program.run({program.input: x}, range(len(program.steps)))
        pred = tf.argmax(out[program.output], axis=-1, output_type=tf.int64)
        return tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.int32))

    return correct


def _baseline_counts(program: Program, data: _Data, batch_size: int) -> np.ndarray:
    """Correct top-1 predictions on the distorted images, per level."""
    correct = _predict_fn(program)
    counts = np.zeros(len(data.levels), dtype=np.int64)
    for li in range(len(data.levels)):
        x = data.distorted(li)
        for s in data.chunks(batch_size):
            counts[li] += int(correct(x[s], data.labels[s]))
    return counts


def _swap_counts(
    program: Program,
    site: Site,
    data: _Data,
    filter_ids: np.ndarray,
    batch_size: int,
    progbar: keras.utils.Progbar | None,
    timing: dict[str, float] | None = None,
) -> np.ndarray:
    """Correct predictions after each swap: array (levels, len(filter_ids)).

    If `timing` is given, `timing["tail_seconds"]` and `timing["tail_samples"]`
    accumulate the wall time and the number of stacked samples of the tail
    passes.
    """
    head = head_fn(program, site)
    prepare = _prepare_fn(site)
    swap = _swap_fn(program, site)
    chunk = min(data.n, batch_size)
    per_call = max(1, batch_size // chunk)
    groups = [filter_ids[i:i + per_call] for i in range(0, len(filter_ids), per_call)]
    counts = np.zeros((len(data.levels), len(filter_ids)), dtype=np.int64)
    done = 0
    for li in range(len(data.levels)):
        x_dist = data.distorted(li)
        for s in data.chunks(chunk):
            clean, _ = head(data.clean[s])
            dist, boundary = head(x_dist[s])
            first, second = prepare(clean, dist)
            labels = tf.constant(data.labels[s])
            start = 0
            for group in groups:
                tick = time.perf_counter()
                got = swap(first, second, boundary, labels,
                           tf.constant(group, dtype=tf.int32)).numpy()
                if timing is not None:
                    timing["tail_seconds"] += time.perf_counter() - tick
                    timing["tail_samples"] += len(group) * (s.stop - s.start)
                counts[li, start:start + len(group)] += got
                start += len(group)
                done += len(group) * (s.stop - s.start)
                if progbar is not None:
                    progbar.update(done)
    return counts


def _scores(counts: np.ndarray, base: np.ndarray, n: int, score: str) -> np.ndarray:
    """Per-filter score averaged over levels from correct-prediction counts."""
    gain = (counts - base[:, None]) / n
    if score == "gain":
        return gain.mean(axis=0)
    err_ref = (n - base[:, None]) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(err_ref > 0, np.abs(gain) / err_ref, 0.0)
    return rel.mean(axis=0)


# --------------------------------------------------------------------------
# Approximate ranking
# --------------------------------------------------------------------------


def _outputs_are_probabilities(out: np.ndarray) -> bool:
    return bool(
        np.all(out >= 0) and np.all(out <= 1)
        and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3)
    )


def _approx_priorities(
    program: Program,
    sites: list[Site],
    data: _Data,
    batch_size: int,
    progbar: keras.utils.Progbar | None,
) -> dict[str, np.ndarray]:
    """First-order swap effect per filter, for all sites in one pass per batch."""
    keys = [site.key for site in sites]
    clean_steps = program.ancestors(keys)
    all_steps = list(range(len(program.steps)))
    probe = program.run({program.input: data.clean[:2]}, all_steps)[program.output]
    from_logits = not _outputs_are_probabilities(np.asarray(probe))
    want = set(keys)

    @tf.function(reduce_retracing=True, autograph=False)
    def clean_sites(x):
        values = program.run({program.input: x}, clean_steps)
        return [values[k] for k in keys]

    @tf.function(reduce_retracing=True, autograph=False)
    def first_order(x, labels, clean):
        with tf.GradientTape() as tape:
            watched = {}

            def watch(key, value):
                if key in want:
                    tape.watch(value)
                    watched[key] = value

            values = program.run({program.input: x}, all_steps, watch)
            out = tf.cast(values[program.output], tf.float32)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                labels, out, from_logits=from_logits))
        grads = tape.gradient(loss, [watched[k] for k in keys])
        sums = []
        for site, c, g in zip(sites, clean, grads):
            d = watched[site.key]
            delta_loss = tf.cast((c - d), tf.float32) * tf.cast(g, tf.float32)
            channel = site.channel_axis % len(d.shape)
            axes = [a for a in range(len(d.shape)) if a != channel]
            sums.append(-tf.reduce_sum(delta_loss, axis=axes))
        return sums

    totals = [np.zeros(site.channels) for site in sites]
    done = 0
    for li in range(len(data.levels)):
        x_dist = data.distorted(li)
        for s in data.chunks(batch_size):
            clean = clean_sites(data.clean[s])
            sums = first_order(x_dist[s], tf.constant(data.labels[s]), clean)
            for t, v in zip(totals, sums):
                t += v.numpy()
            done += s.stop - s.start
            if progbar is not None:
                progbar.update(done)
    scale = 1.0 / (data.n * len(data.levels))
    return {site.layer_name: t * scale for site, t in zip(sites, totals)}


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


def _load_checkpoint(path: str, run: dict[str, Any]) -> Ranking | None:
    """The partial ranking stored at `path`, after checking it is this run's."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    stored = data.get("extra", {}).get("run", {})
    for field, value in run.items():
        if stored.get(field) != value:
            raise ValueError(
                f"checkpoint={path!r} belongs to another run: {field} is "
                f"{stored.get(field)!r} there, {value!r} now. Delete it or "
                "pass another path."
            )
    return Ranking.from_dict(data)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def rank(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    distortion: Distortion,
    levels: Sequence[float],
    layers: Sequence[str] | None = None,
    site: str = "pre_activation",
    score: str = "gain",
    batch_size: int = 256,
    seed: int = 0,
    method: str = "exact",
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    filters: tuple[int, int] | None = None,
) -> Ranking:
    """Ranks conv filters by correction priority (DeepCorrect, Algorithm 1).

    For every filter `j` of every chosen conv layer `i`, the priority is
    `tau(i, j) = p_swp(i, j) - p_b` (`score="gain"`): the top-1 accuracy on the
    distorted images when filter `j`'s distorted output is replaced by its
    clean output, minus the accuracy on the distorted images, averaged over
    `levels`. `score="relative_error"` is the original code's
    `|err_swp - err_b| / err_b` per level (0 where `err_b == 0`), averaged.

    Args:
        model: a functional or Sequential Keras classifier (nested models
            allowed) with one input and one output of class scores
            (probabilities or logits). Run in inference mode.
        images: `(N, H, W, C)` images on the 0..255 scale (any dtype; used as
            float32). These are what `distortion` sees.
        labels: `N` class indices, or an `(N, classes)` one-hot array.
        distortion: a `distort` name such as `"gaussian_blur"` or `"awgn"`
            (resolved through `distort.apply`), or a callable
            `fn(images, level, seed) -> images`.
        levels: distortion levels to average over (non-empty). Level `k` is
            distorted with seed `seed + k`.
        layers: names of conv layers to rank, or None (default) for all conv
            layers, in model order.
        site: `"pre_activation"` (default; the conv's own output, its linear
            part for a conv with a built-in activation: where correction units
            go) or `"post_activation"` (after the single-consumer
            BatchNormalization/activation chain that follows it).
        score: `"gain"` (default) or `"relative_error"`. Exact method only.
        batch_size: samples per forward pass (default 256). The exact method
            stacks `batch_size // chunk` filter swaps of a chunk of
            `min(N, batch_size)` images in one pass.
        seed: base seed of the distortion (default 0).
        method: `"exact"` (default) or `"approx"` (first-order estimate from
            one forward/backward pass per image; the priority is the negated
            predicted change in cross-entropy, score `"first_order_loss"`).
        checkpoint: optional JSON path. Each finished layer is written there
            (atomically); a rerun with the same arguments skips finished
            layers. The approximate method writes it once, at the end.
        progress: show a Keras progress bar per layer (default True).
        preprocess: optional `fn(images) -> images` applied to the clean and
            the distorted images before the model (e.g. scaling to [0, 1]).
        filters: optional `(start, stop)` range of filter indices to compute in
            every layer (clipped to its filter count), to split work across
            processes; the other filters are NaN until `Ranking.merge`.

    Returns:
        A `Ranking`.

    Raises:
        TypeError: if `model` is not a Functional or Sequential model.
        ValueError: on an unknown or non-conv layer name, empty images,
            images of another size than the model's input (they are not
            resized), mismatched labels or labels outside `[0, classes - 1]`,
            an unknown site/score/method, empty levels, or a checkpoint of
            another run.

    Example:

    >>> ranking = rank(model, x_val, y_val, "gaussian_blur", [1.0, 2.0])
    >>> ranking.top("conv1", 0.5)
    """
    checks.check_model(model)
    if keras.backend.backend() != "tensorflow":
        raise ValueError("rank needs the TensorFlow backend of Keras.")
    checks.check_choice("site", site, SITES)
    checks.check_choice("score", score, SCORES)
    checks.check_choice("method", method, METHODS)
    if method == "approx" and score != "gain":
        raise ValueError(
            "score='relative_error' is only defined for method='exact'. "
            f"Received: score={score!r}, method={method!r}"
        )
    images = np.asarray(images)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(
            f"images must be a non-empty batch. Received shape {images.shape}."
        )
    labels = checks.check_labels(labels, images.shape[0])
    checks.check_class_labels(labels, model)
    levels = [float(v) for v in np.atleast_1d(np.asarray(levels, dtype=float))]
    if not levels:
        raise ValueError(
            "levels must hold at least one distortion level. Received: levels=[]"
        )
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size!r}"
        )
    batch_size = int(batch_size)
    seed = check_seed(seed)
    filters = _check_filters(filters)
    distortion_name, distort_fn = _resolve_distortion(distortion)
    chosen = choose_conv_layers(model, layers)

    program = Program(model, split=chosen if site == "pre_activation" else ())
    sites = [site_for(program, layer, site, incremental=True) for layer in chosen]
    raw = images.astype(np.float32)
    data = _Data(
        clean=apply_preprocess(preprocess, raw), labels=labels, raw=raw, levels=levels,
        distort_fn=distort_fn, preprocess=preprocess, seed=seed,
    )
    checks.check_image_size(data.clean, model)  # what the model reads, after `preprocess`
    counts = {s.layer_name: s.channels for s in sites}
    ranges = {
        s.layer_name: [min(filters[0], s.channels), min(filters[1], s.channels)]
        if filters else [0, s.channels]
        for s in sites
    }
    run_info = {
        "model_name": model.name,
        "layers": [s.layer_name for s in sites],
        "distortion": distortion_name,
        "levels": levels,
        "site": site,
        "score": score if method == "exact" else APPROX_SCORE,
        "method": method,
        "seed": int(seed),
        "filters": list(filters) if filters else None,
        "data": _digest(raw, labels),
    }

    def make(priorities: dict[str, np.ndarray], base: list[float]) -> Ranking:
        return Ranking(
            priorities=priorities, model_name=model.name, filter_counts=counts,
            distortion=distortion_name, levels=levels,
            score=run_info["score"], site=site, method=method,
            num_images=data.n, baseline_accuracy=base,
            extra={"seed": int(seed), "filters": ranges, "run": run_info},
        )

    empty = {s.layer_name: np.full(s.channels, np.nan) for s in sites}
    previous = _load_checkpoint(os.fspath(checkpoint), run_info) if checkpoint else None

    if method == "approx":
        if previous is not None:
            return previous
        bar = keras.utils.Progbar(data.n * len(levels), verbose=1 if progress else 0,
                                  unit_name="image")
        values = _approx_priorities(program, sites, data, batch_size, bar)
        for s in sites:
            lo, hi = ranges[s.layer_name]
            empty[s.layer_name][lo:hi] = values[s.layer_name][lo:hi]
        result = make(empty, [])
        if checkpoint:
            result.save(checkpoint)
        return result

    done = list(previous.extra.get("done", [])) if previous else []
    timings = dict(previous.extra.get("timing", {})) if previous else {}
    priorities = previous.priorities if previous else empty
    base_counts = _baseline_counts(program, data, batch_size)
    base = list(base_counts / data.n)
    for s in sites:
        if s.layer_name in done:
            continue
        lo, hi = ranges[s.layer_name]
        ids = np.arange(lo, hi, dtype=np.int32)
        if progress:
            print(f"Ranking {s.layer_name}: {len(ids)} filters x "
                  f"{len(levels)} levels x {data.n} images")
        bar = keras.utils.Progbar(len(ids) * len(levels) * data.n,
                                  verbose=1 if progress else 0, unit_name="swap")
        timing = {"tail_seconds": 0.0, "tail_samples": 0}
        tick = time.perf_counter()
        swapped = _swap_counts(program, s, data, ids, batch_size, bar, timing=timing)
        timing["seconds"] = time.perf_counter() - tick
        timings[s.layer_name] = timing
        priorities[s.layer_name][lo:hi] = _scores(swapped, base_counts, data.n, score)
        done.append(s.layer_name)
        if checkpoint:
            partial = make(priorities, base)
            partial.extra.update(done=done, timing=timings)
            partial.save(checkpoint)
    result = make(priorities, base)
    result.extra.update(done=done, timing=timings)
    return result

"""The `Ranking` result: filter priorities, their order, file and merge.

A `Ranking` holds one priority per filter of some conv layers of one model, as
`rank` computes them, and (exact method) how reliable each layer's priorities
are (`Ranking.reliability`); `spearman` compares two rankings.

Example:

>>> import numpy as np
>>> r = Ranking({"conv1": np.array([0.1, 0.3, 0.3, 0.0])},
...             model_name="m", filter_counts={"conv1": 4})
>>> r.top("conv1", 0.5).tolist()
[1, 2]
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from deepcorrect import checks
from deepcorrect.graph import conv_layers, corrected_count, filter_count
from deepcorrect.ranking import schema
from deepcorrect.ranking.reliability import Reliability, fill_computed
from robustkit.io import atomic_write_text

# How `Ranking.global_order` makes the layers' priorities comparable.
GLOBAL_NORMALIZATIONS = ("none", "zscore")


def _top_count(beta: float, n: int) -> int:
    """`corrected_count(beta, n)`, `wrap`'s rule, after checking `beta`."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.number)):
        raise ValueError(f"beta must be a number in (0, 1]. Received: beta={beta!r}")
    if not 0.0 < float(beta) <= 1.0:
        raise ValueError(f"beta must be in (0, 1]. Received: beta={beta!r}")
    return corrected_count(float(beta), n)


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
            (`|err_swap - err_ref| / err_ref`, the original code),
            `"log_prob"` (the mean gain in the label's log-probability),
            `"log_prob_magnitude"` (its magnitude) or
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
        reliabilities: `{layer_name: Reliability}` for the layers whose
            reliability was computed (`rank(..., reliability=True)`, exact
            method); read it through `reliability(layer_name)`.

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
    reliabilities: dict[str, Reliability] = dataclasses.field(default_factory=dict)

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
        self.reliabilities = dict(self.reliabilities)
        for name, rel in self.reliabilities.items():
            if name not in self.priorities:
                raise ValueError(f"reliabilities names {name!r}, which is not ranked.")
            if rel.filter_count != self.filter_counts[name]:
                raise ValueError(
                    f"Layer {name!r} has {self.filter_counts[name]} filters but "
                    f"its reliability {rel.filter_count}."
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

    def reliability(self, layer_name: str) -> Reliability | None:
        """How reproducible a layer's priorities are across the ranking images.

        See `Reliability`: `split_half` (the Spearman correlation between the
        priorities on two fixed halves of the images, `halves`),
        `spearman_brown` (that correlation corrected to all the images; below
        0.5, `is_reliable` is False) and `interval` (bootstrap 2.5 and 97.5
        percentiles of each filter's priority).

        Args:
            layer_name: a ranked layer.

        Returns:
            The layer's `Reliability`, or None when it was not computed (the
            approximate method, `reliability=False`, or a file written before
            reliabilities were recorded).

        Example:

        >>> import keras, numpy as np
        >>> from deepcorrect.ranking import rank
        >>> model = keras.Sequential([
        ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv1"),
        ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
        >>> images = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3))
        >>> ranking = rank(model, images, np.arange(8) % 3, "awgn", [10.0],
        ...                score="log_prob", progress=False)
        >>> ranking.reliability("conv1").interval.shape
        (2, 4)
        """
        self._values(layer_name)
        return self.reliabilities.get(layer_name)

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
        """The `round(beta * N)` highest-priority filters of a layer (halves up, at least 1).

        The count is `deepcorrect.graph.corrected_count`, the rule `wrap` uses, so the
        filters returned are the ones `wrap` corrects: beta=0.5 of 96 gives 48, of 7
        gives 4, 0.33 of 10 gives 3.

        Args:
            layer_name: a ranked layer.
            beta: fraction of filters, in (0, 1].

        Returns:
            Indices in descending priority order.
        """
        values = self._complete_values(layer_name)
        return self.order(layer_name)[: _top_count(beta, values.size)]

    def global_order(self, normalization: str = "none") -> list[tuple[str, int]]:
        """All filters of all layers by descending priority.

        Ties go to the earlier layer, then the lower index.

        Args:
            normalization: `"none"` (default) compares the raw priorities, which
                share one unit (a change in top-1 accuracy or in log-probability)
                but grow with how much a whole layer suffers; `"zscore"` compares
                each filter with the other filters of its layer (the priority
                minus the layer's mean, over the layer's standard deviation; 0 for
                a layer whose filters all tie), so that a layer of many filters
                with small individual effects is not crowded out.

        Returns:
            A list of `(layer_name, filter_index)` pairs.

        Example:

        >>> ranking = Ranking({"a": np.array([0.5, 0.25]), "b": np.array([0.0, 0.0625])},
        ...                   model_name="m", filter_counts={"a": 2, "b": 2})
        >>> ranking.global_order()
        [('a', 0), ('a', 1), ('b', 1), ('b', 0)]
        >>> ranking.global_order("zscore")
        [('a', 0), ('b', 1), ('a', 1), ('b', 0)]
        """
        checks.check_choice("normalization", normalization, GLOBAL_NORMALIZATIONS)
        keys = []
        for li, name in enumerate(self.layer_names):
            values = self._complete_values(name).astype(np.float64)
            if normalization == "zscore":
                spread = values.std()
                values = ((values - values.mean()) / spread if spread > 0
                          else np.zeros_like(values))
            keys += [(-float(v), li, j) for j, v in enumerate(values)]
        keys.sort()
        names = self.layer_names
        return [(names[li], j) for _, li, j in keys]

    def global_top(self, beta: float, normalization: str = "none") -> dict[str, np.ndarray]:
        """The top `round(beta * total)` filters over all layers (global ranking, halves up).

        Args:
            beta: fraction of all ranked filters, in (0, 1].
            normalization: how layers are made comparable, see `global_order`.

        Returns:
            `{layer_name: indices}` for every ranked layer, each in descending
            priority order (possibly empty).
        """
        pairs = self.global_order(normalization)
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
        return schema.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Ranking":
        """Inverse of `to_dict`.

        Raises:
            KeyError: naming a required field that is missing (`load` reports
                it as a ValueError).
            ValueError: naming the field that is malformed, or the layer whose
                filter count does not match its priorities.
        """
        return cls(**schema.from_dict(data))

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

        Reliability: each filter's half priorities and bootstrap interval come
        from the part that computed it, and the split-half correlation is
        recomputed over all merged filters. This is exact, because parts of
        one run use the same images and seed, hence the same halves and
        resamples (parts with another seed or resample count are refused). A
        layer keeps a reliability only if every part that ranks it has one.

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
                fill_computed(priorities[name], values,
                              f"Cannot merge: layer {name!r} has conflicting "
                              "priorities for filters computed by several parts.")
        reliabilities = {}
        for name in priorities:
            found = [part.reliabilities.get(name) for part in parts
                     if name in part.priorities]
            if all(found):
                reliabilities[name] = Reliability.merge(name, found)
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
            reliabilities=reliabilities,
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

    Example:

    >>> a = Ranking({"c": np.array([0.1, 0.2, 0.3])}, "m", {"c": 3})
    >>> b = Ranking({"c": np.array([1.0, 5.0, 9.0])}, "m", {"c": 3})
    >>> spearman(a, b)
    1.0
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


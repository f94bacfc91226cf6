"""Corruption Error, mean Corruption Error (mCE) and relative mCE (Hendrycks & Dietterich 2019).

With E_{s,c} a model's top-1 error on corruption c at severity s, and
E_clean its error on the clean images:

- CE_c = sum_s E_{s,c} / sum_s B_{s,c}, B the baseline's errors;
- relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (B_{s,c} - B_clean);
- mCE and relative mCE are their means over the corruptions.

The default baseline is AlexNet with the reference code's constants (its
error per corruption, averaged over the five severities, and its clean
error); any other model's errors, for example from a sweep, can be the
baseline instead (`baseline_from_errors`, `errors_from_sweep`). A
sum over severities divided by a sum is the ratio of the means, so a
baseline only needs each corruption's mean error.

Example:

>>> errors = {"fog": [0.5, 0.6, 0.7, 0.8, 0.9]}
>>> round(corruption_errors(errors)["fog"], 4)   # 0.7 / AlexNet's 0.819324
0.8544
>>> baseline = baseline_from_errors({"fog": [0.7] * 5}, clean_error=0.3)
>>> mce(errors, baseline)
1.0
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Mapping, Sequence

from distort.imagenet_c import PREFIX
from distort.imagenet_c.constants import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS

Errors = Mapping[str, "float | Sequence[float]"]

ALEXNET: dict = {"name": "AlexNet", "errors": dict(ALEXNET_ERRORS),
                 "clean_error": ALEXNET_CLEAN_ERROR}


def _check_error(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{what} must be an error rate in [0, 1]. Received: {value!r}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be an error rate in [0, 1]. Received: {value}")
    return value


def mean_errors(errors: Errors) -> dict[str, float]:
    """Each corruption's error averaged over its severities.

    Args:
        errors: Corruption -> its errors at severities 1..5 (a sequence), or
            their mean already (a number). Errors are rates in [0, 1].

    Returns:
        Corruption -> mean error.

    Raises:
        ValueError: For an error outside [0, 1] or an empty sequence.

    Example:

    >>> mean_errors({"fog": [0.2, 0.4], "snow": 0.5})
    {'fog': 0.30000000000000004, 'snow': 0.5}
    """
    out = {}
    for name, value in errors.items():
        if isinstance(value, Real) and not isinstance(value, bool):
            out[name] = _check_error(value, f"the error of {name!r}")
            continue
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"the errors of {name!r} must be a number or a sequence of error "
                            f"rates in [0, 1]. Received: {value!r}")
        values = [_check_error(v, f"the errors of {name!r}") for v in value]
        if not values:
            raise ValueError(f"the errors of {name!r} must hold at least one severity")
        out[name] = sum(values) / len(values)
    return out


def baseline_from_errors(errors: Errors, clean_error: float, name: str = "baseline") -> dict:
    """A baseline for the mCE from any model's errors (e.g. your own AlexNet run).

    Args:
        errors: Corruption -> errors per severity (or their mean).
        clean_error: The model's error on the clean images, in [0, 1].
        name: A label for reports.

    Returns:
        `{"name", "errors", "clean_error"}`, like `ALEXNET`.
    """
    return {"name": name, "errors": mean_errors(errors),
            "clean_error": _check_error(clean_error, "clean_error")}


def _corruptions(errors: Mapping[str, float], baseline: dict, corruptions,
                 every: bool = False) -> list[str]:
    """The corruptions to score: given, or the baseline's (all of them if `every`, else
    those of `errors` that the baseline has)."""
    if corruptions is not None:
        names = list(corruptions)
    elif every:
        names = list(baseline["errors"])
    else:
        names = [c for c in baseline["errors"] if c in errors]
    missing = [c for c in names if c not in errors]
    if missing:
        raise ValueError(f"errors must hold every corruption of the baseline "
                         f"({baseline.get('name', 'baseline')}). Missing: {missing}")
    unknown = [c for c in names if c not in baseline["errors"]]
    if unknown:
        raise ValueError(f"corruptions must be among the baseline's {sorted(baseline['errors'])}. "
                         f"Received: {unknown}")
    if not names:
        raise ValueError("corruptions must name at least one corruption")
    return names


def corruption_errors(errors: Errors, baseline: dict = ALEXNET,
                      corruptions: Sequence[str] | None = None,
                      every: bool = False) -> dict[str, float]:
    """CE_c: the model's error over the baseline's, per corruption.

    Args:
        errors: Corruption -> errors per severity (or their mean).
        baseline: `ALEXNET` (default) or a `baseline_from_errors` result.
        corruptions: The corruptions to score (default: those of `errors`
            that the baseline has).
        every: Without `corruptions`, require every corruption of the baseline.

    Returns:
        Corruption -> CE (1.0 is the baseline's robustness).

    Raises:
        ValueError: If a corruption is missing, or the baseline's error is 0.
    """
    means = mean_errors(errors)
    out = {}
    for c in _corruptions(means, baseline, corruptions, every):
        if baseline["errors"][c] <= 0:
            raise ValueError(f"the baseline's error on {c!r} must be > 0 to normalise by it")
        out[c] = means[c] / baseline["errors"][c]
    return out


def relative_corruption_errors(errors: Errors, clean_error: float, baseline: dict = ALEXNET,
                               corruptions: Sequence[str] | None = None,
                               every: bool = False) -> dict[str, float]:
    """Relative CE_c: the rise of the error over the clean one, over the baseline's rise.

    Args:
        errors: Corruption -> errors per severity (or their mean).
        clean_error: The model's error on the clean images.
        baseline: `ALEXNET` (default) or a `baseline_from_errors` result.
        corruptions: The corruptions to score (default: those of `errors`
            that the baseline has).
        every: Without `corruptions`, require every corruption of the baseline.

    Returns:
        Corruption -> relative CE.

    Raises:
        ValueError: If a corruption is missing, or the baseline's error on it
            is not above its clean error.
    """
    means = mean_errors(errors)
    clean = _check_error(clean_error, "clean_error")
    out = {}
    for c in _corruptions(means, baseline, corruptions, every):
        rise = baseline["errors"][c] - baseline["clean_error"]
        if rise <= 0:
            raise ValueError(f"the baseline's error on {c!r} must exceed its clean error to "
                             f"normalise by the rise. Received: {baseline['errors'][c]} <= "
                             f"{baseline['clean_error']}")
        out[c] = (means[c] - clean) / rise
    return out


def mce(errors: Errors, baseline: dict = ALEXNET, corruptions: Sequence[str] | None = None) -> float:
    """The mean Corruption Error: the mean of `corruption_errors` (1.0 = the baseline).

    Without `corruptions`, every corruption of the baseline must be in `errors`
    (the published mCE is over AlexNet's fifteen).
    """
    ce = corruption_errors(errors, baseline, corruptions, every=True)
    return sum(ce.values()) / len(ce)


def relative_mce(errors: Errors, clean_error: float, baseline: dict = ALEXNET,
                 corruptions: Sequence[str] | None = None) -> float:
    """The relative mCE: the mean of `relative_corruption_errors` (all of the baseline's)."""
    ce = relative_corruption_errors(errors, clean_error, baseline, corruptions, every=True)
    return sum(ce.values()) / len(ce)


def summary(errors: Errors, clean_error: float, baseline: dict = ALEXNET,
            corruptions: Sequence[str] | None = None) -> dict:
    """Every number of the benchmark at once.

    Returns:
        `{"baseline", "clean_error", "mean_errors", "ce", "relative_ce", "mce", "relative_mce"}`.

    Example:

    >>> s = summary({c: e for c, e in ALEXNET["errors"].items()}, 0.4348)
    >>> round(s["mce"], 6), round(s["relative_mce"], 6)
    (1.0, 1.0)
    """
    ce = corruption_errors(errors, baseline, corruptions, every=True)
    rel = relative_corruption_errors(errors, clean_error, baseline, corruptions, every=True)
    return {"baseline": baseline.get("name", "baseline"), "clean_error": float(clean_error),
            "mean_errors": {c: v for c, v in mean_errors(errors).items() if c in ce},
            "ce": ce, "relative_ce": rel, "mce": sum(ce.values()) / len(ce),
            "relative_mce": sum(rel.values()) / len(rel)}


def errors_from_sweep(result, model: str | None = None) -> tuple[dict[str, list[float]], float]:
    """A model's ImageNet-C errors from a sweep's rows (`distort.sweep.SweepResult`).

    Rows of distortions named `imagenet_c.<corruption>` give `1 - top1` per
    severity; the clean rows give the clean error.

    Args:
        result: A `SweepResult` (or anything with `rows` of the same keys).
        model: The model's name in the rows (default: the only model).

    Returns:
        `(errors, clean_error)`: corruption -> errors by increasing severity.

    Raises:
        ValueError: If the model is not in the rows, several models are and
            none is named, or the rows hold no ImageNet-C corruption.
    """
    models = list(dict.fromkeys(r["model"] for r in result.rows))
    if model is None:
        if len(models) != 1:
            raise ValueError(f"model must be one of {models} for a sweep of several models")
        model = models[0]
    if model not in models:
        raise ValueError(f"model must be one of {models}. Received: model={model!r}")
    errors: dict[str, dict[float, float]] = {}
    clean = []
    for r in result.rows:
        if r["model"] != model or not r["distortion"].startswith(PREFIX):
            continue
        if r["level"] is None:
            clean.append(1.0 - r["top1"])
        else:
            errors.setdefault(r["distortion"][len(PREFIX):], {})[float(r["level"])] = 1.0 - r["top1"]
    if not errors or not clean:
        raise ValueError(f"the sweep holds no ImageNet-C corruption (names {PREFIX}<name>) "
                         f"with clean rows for model {model!r}")
    return {c: [v[k] for k in sorted(v)] for c, v in errors.items()}, clean[0]

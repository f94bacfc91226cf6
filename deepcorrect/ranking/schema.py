"""The JSON form of a ranking: its vocabulary, and its fields both ways.

`to_dict` writes a `Ranking` as a JSON-ready dict, `from_dict` checks a read
dict field by field and returns `Ranking`'s constructor arguments. Every field
beyond the priorities, their layers and the model name is optional, so files
written before a field existed (such as `reliability`) still load. The values a
ranking's `site`, `score` and `method` can take (`SITES`, `SCORES`, `METHODS`,
`APPROX_SCORE`) are defined here, for the file and for `rank` alike.

Example:

>>> import numpy as np
>>> from deepcorrect.ranking import Ranking
>>> r = Ranking({"conv1": np.array([0.5, np.nan])}, model_name="m",
...             filter_counts={"conv1": 2})
>>> data = to_dict(r)
>>> data["priorities"]
{'conv1': [0.5, None]}
>>> from_dict(data)["filter_counts"]
{'conv1': 2}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from deepcorrect.ranking.reliability import Reliability

if TYPE_CHECKING:
    from deepcorrect.ranking.result import Ranking

# The `format` tag and the newest `version` of a saved ranking.
FORMAT_TAG = "deepcorrect.ranking"
FORMAT_VERSION = 1

SITES = ("pre_activation", "post_activation")
SCORES = ("gain", "relative_error", "log_prob", "log_prob_magnitude")
METHODS = ("exact", "approx")
# The score of `method="approx"`: the negated first-order change in loss.
APPROX_SCORE = "first_order_loss"


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


def to_dict(ranking: "Ranking") -> dict[str, Any]:
    """A ranking as a JSON-ready dict; NaN (not computed) is written as `null`.

    Args:
        ranking: the `Ranking` to write.

    Returns:
        A dict of JSON types, tagged with `FORMAT_TAG` and `FORMAT_VERSION`.
    """
    return {
        "format": FORMAT_TAG,
        "version": FORMAT_VERSION,
        "model_name": ranking.model_name,
        "layer_names": ranking.layer_names,
        "filter_counts": ranking.filter_counts,
        "distortion": ranking.distortion,
        "levels": [float(v) for v in ranking.levels],
        "score": ranking.score,
        "site": ranking.site,
        "method": ranking.method,
        "num_images": int(ranking.num_images),
        "baseline_accuracy": [float(v) for v in ranking.baseline_accuracy],
        "extra": ranking.extra,
        "reliability": {
            name: rel.to_dict() for name, rel in ranking.reliabilities.items()
        },
        "priorities": {
            name: [None if np.isnan(v) else float(v) for v in values]
            for name, values in ranking.priorities.items()
        },
    }


def from_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """Checks a dict written by `to_dict` and returns `Ranking`'s arguments.

    Args:
        data: the dict read from a ranking's JSON.

    Returns:
        The keyword arguments of `Ranking(...)`, priorities as float arrays
        (NaN where the file holds `null`).

    Raises:
        KeyError: naming a required field that is missing.
        ValueError: naming the field that is malformed, or the layer whose
            filter count does not match its priorities.
    """
    if not isinstance(data, Mapping):
        raise ValueError(
            "Not a deepcorrect ranking: a JSON object is expected, found "
            f"{type(data).__name__}."
        )
    if data.get("format") != FORMAT_TAG:
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
    return dict(
        priorities=priorities,
        model_name=data["model_name"],
        filter_counts={n: data["filter_counts"][n] for n in names},
        reliabilities=_reliabilities(data.get("reliability", {}), names),
        **options,
    )


def _reliabilities(table: Any, names: list[str]) -> dict[str, Reliability]:
    """The optional `reliability` field: `{layer_name: Reliability}`."""
    if not isinstance(table, Mapping):
        raise _field_error("reliability", "an object keyed by layer name", table)
    unknown = [n for n in table if n not in names]
    if unknown:
        raise ValueError(
            f"reliability names layers that are not in layer_names {names}: {unknown}."
        )
    result = {}
    for name, entry in table.items():
        try:
            result[name] = Reliability.from_dict(entry)
        except ValueError as e:
            raise ValueError(f"reliability[{name!r}]: {e}") from None
    return result

"""The repair methods of `deepcorrect.compare` as data: steps, options, budgets and ids.

A method is a name and a sequence of steps (`METHODS`); a step is a dict with a `kind`
(`STEP_KINDS`) and the options of that kind (`STEP_OPTIONS`). `"bn_adapt+deepcorrect"`
adapts the batch norms, then ranks, wraps and trains the adapted model: a combination is
its steps in order, not new code. Any `+`-joined names of `METHODS` are a method too
(`"deepcorrect+tent"`), and on the command line a step's options follow its name
(`"finetune:k=3,learning_rate=0.001"`). `deepcorrect.ladder` runs the steps.

The kinds:

- `bn_adapt`: `deepcorrect.adapt_batch_norm` on the distorted repair images (no labels).
- `tent`: `deepcorrect.tent` (TENT) on the distorted repair images (no labels).
- `finetune`: `deepcorrect.finetune(k)` trained with `deepcorrect.train`.
- `deepcorrect`: `deepcorrect.rank`, `deepcorrect.wrap`, `deepcorrect.train`; the ranking
  is the first-order estimate (`ranking="approx"`), exact swaps scored by the gain in
  log-probability (`"exact"`, one pass of the network per filter) or by its magnitude
  (`"magnitude"`, the original code's absolute value; see docs/RESULTS.md for when each
  chose better filters).
- `qrnet`: a QRNet restorer (`qrnet.build_qrnet`) trained in front of the frozen model.

Example:

>>> [s["kind"] for s in resolve_method("bn_adapt+deepcorrect:first=3")["steps"]]
['bn_adapt', 'deepcorrect']
>>> resolve_budget(2)["epochs"]
2
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

import numpy as np

STEP_KINDS = ("bn_adapt", "tent", "finetune", "deepcorrect", "qrnet")

# Each kind's options and their defaults. Learning rates follow the papers: 0.1 (SGD) for
# correction units, 1e-3 (Adam) for QRNet and for TENT; fine-tuning at 0.001, since the
# paper's 0.01 collapses on the CIFAR-10 network here (docs/RESULTS.md). `first` limits
# DeepCorrect to the first N conv layers in graph order (None: every conv layer). TENT makes one
# pass over the repair images, as in the paper (it degrades when run longer); its
# `epochs=None` takes the budget's. BN adaptation and TENT see a `fraction` of the repair
# images distorted and the rest clean, as the trained methods do (half of every batch
# distorted): adapted on distorted photos alone, the CIFAR-10 network lost 0.05 to 0.07 of
# clean top-1 (docs/RESULTS.md, "The repair ladder").
STEP_OPTIONS: dict[str, dict[str, Any]] = {
    "bn_adapt": {"prior": None, "fraction": 0.5},
    "tent": {"learning_rate": 1e-3, "epochs": 1, "fraction": 0.5},
    "finetune": {"k": 2, "learning_rate": 0.001},
    "deepcorrect": {"beta": 0.5, "unit": "cw", "site": None, "first": None,
                    "learning_rate": 0.1, "refresh_statistics": True, "ranking": "approx"},
    "qrnet": {"base_width": 8, "depth": 2, "mode": "qrnet", "learning_rate": 1e-3},
}

# The rankings of a deepcorrect step: `deepcorrect.rank`'s method and score for each.
RANKINGS: dict[str, tuple[str, str | None]] = {
    "approx": ("approx", None),
    "exact": ("exact", "log_prob"),
    "magnitude": ("exact", "log_prob_magnitude"),
}

# Options whose values are one of a few names.
STEP_CHOICES: dict[str, dict[str, tuple[Any, ...]]] = {
    "deepcorrect": {"ranking": tuple(RANKINGS)},
}

# Options added after chain ids were first written to output folders: at these values
# they are left out of `chain_id`, so that earlier folders are still read back.
ID_NEUTRAL: dict[str, dict[str, Any]] = {"deepcorrect": {"ranking": "approx"}}

# The methods of the ladder. `tent` on top of either combination is a `+` away.
METHODS: dict[str, tuple[dict[str, Any], ...]] = {
    "baseline": (),
    "bn_adapt": ({"kind": "bn_adapt"},),
    "tent": ({"kind": "tent"},),
    "finetune": ({"kind": "finetune"},),
    "deepcorrect": ({"kind": "deepcorrect"},),
    "qrnet": ({"kind": "qrnet"},),
    "bn_adapt+deepcorrect": ({"kind": "bn_adapt"}, {"kind": "deepcorrect"}),
    "deepcorrect+bn_adapt": ({"kind": "deepcorrect"}, {"kind": "bn_adapt"}),
    "bn_adapt+deepcorrect+tent": ({"kind": "bn_adapt"}, {"kind": "deepcorrect"},
                                  {"kind": "tent"}),
    "deepcorrect+bn_adapt+tent": ({"kind": "deepcorrect"}, {"kind": "bn_adapt"},
                                  {"kind": "tent"}),
}

DEFAULT_METHODS = ("baseline", "bn_adapt", "tent", "finetune", "deepcorrect", "qrnet",
                   "bn_adapt+deepcorrect", "deepcorrect+bn_adapt")

# The budget every method gets: the first `images` repair images (None: all), `epochs`
# passes in batches of `batch_size`, and `rank_images` of them for the ranking; `augment`
# flips and shifts the trained methods' images at random (`deepcorrect.train(augment=)`).
DEFAULT_BUDGET: dict[str, Any] = {"images": None, "epochs": 3, "batch_size": 64,
                                  "rank_images": 256, "augment": False}

LABELS = ("no", "teacher", "yes")  # what a repair needed, least first


def check_step(step: Any) -> dict[str, Any]:
    """A step with every option of its kind filled in.

    Raises:
        ValueError: for an unknown kind or option, naming the allowed ones.

    Example:

    >>> check_step({"kind": "finetune", "k": 3})
    {'kind': 'finetune', 'k': 3, 'learning_rate': 0.001}
    """
    if not isinstance(step, Mapping) or step.get("kind") not in STEP_KINDS:
        raise ValueError(f"a step must be a dict whose kind is one of {list(STEP_KINDS)}. "
                         f"Received: {step!r}")
    allowed = STEP_OPTIONS[step["kind"]]
    unknown = sorted(set(step) - set(allowed) - {"kind"})
    if unknown:
        raise ValueError(f"options of a {step['kind']} step must be among {sorted(allowed)}. "
                         f"Received: {unknown}")
    for option, choices in STEP_CHOICES.get(step["kind"], {}).items():
        if option in step and step[option] not in choices:
            raise ValueError(f"{option} of a {step['kind']} step must be one of "
                             f"{list(choices)}. Received: {option}={step[option]!r}")
    return {"kind": step["kind"], **allowed, **{k: v for k, v in step.items() if k != "kind"}}


def _option_value(text: str) -> Any:
    """`"3"` -> 3, `"0.001"` -> 0.001, `"none"` -> None, `"true"`/`"false"` -> bool, else a string."""
    words = {"none": None, "true": True, "false": False}
    if text.lower() in words:
        return words[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _part_steps(part: str, method: str) -> list[dict[str, Any]]:
    """The steps of one `+`-separated part: `kind` or `kind:option=value,option=value`."""
    name, _, options = part.partition(":")
    if name not in METHODS or name == "baseline" or (options and len(METHODS[name]) != 1):
        raise ValueError(f"method must be one of {list(METHODS)} or several of them joined by "
                         "'+', each with optional 'option=value' settings after a ':' (e.g. "
                         f"'bn_adapt+deepcorrect:first=3,beta=0.25'). Received: method={method!r}")
    settings = {}
    for item in filter(None, options.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"options of {name!r} must read option=value. Received: "
                             f"method={method!r}")
        settings[key] = _option_value(value)
    return [check_step({**step, **settings}) for step in METHODS[name]]


def resolve_method(method: str | Mapping[str, Any]) -> dict[str, Any]:
    """`{"name", "steps"}` of a method: a `METHODS` name, names joined by `+`, or a dict.

    On the command line a step's options follow its name after a `:`, as
    `option=value` pairs separated by commas: `"finetune:k=3,learning_rate=0.001"`,
    `"bn_adapt:prior=16+deepcorrect:first=3"`. The method's name is the whole string.

    Args:
        method: a name such as `"deepcorrect"` or `"bn_adapt+deepcorrect+tent"` (with
            options as above), or `{"name": ..., "steps": [{"kind": ..., **options}, ...]}`.

    Returns:
        The name and the steps, every option filled in.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or a bad spec.

    Example:

    >>> [s["kind"] for s in resolve_method("deepcorrect+tent")["steps"]]
    ['deepcorrect', 'tent']
    >>> resolve_method("finetune:k=3,learning_rate=0.01")["steps"]
    [{'kind': 'finetune', 'k': 3, 'learning_rate': 0.01}]
    """
    if isinstance(method, Mapping):
        name, steps = method.get("name"), method.get("steps")
        if not isinstance(name, str) or not name or not isinstance(steps, (list, tuple)):
            raise ValueError("a method dict must have a non-empty 'name' and a list of 'steps'. "
                             f"Received: {method!r}")
        return {"name": name, "steps": [check_step(s) for s in steps]}
    if not isinstance(method, str):
        raise TypeError(f"methods must be names or dicts. Received: {method!r}")
    if method in METHODS:
        return {"name": method, "steps": [check_step(s) for s in METHODS[method]]}
    return {"name": method,
            "steps": [s for part in method.split("+") for s in _part_steps(part, method)]}


def resolve_methods(methods: str | Sequence[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The methods to compare, `"baseline"` first (added when missing); names must be unique.

    Example:

    >>> [m["name"] for m in resolve_methods(["tent", "deepcorrect"])]
    ['baseline', 'tent', 'deepcorrect']
    """
    if isinstance(methods, (str, Mapping)):
        methods = [methods]
    if not isinstance(methods, (list, tuple)) or not methods:
        raise ValueError(f"methods must be a non-empty list of names or dicts. "
                         f"Received: methods={methods!r}")
    resolved = [resolve_method(m) for m in methods]
    names = [m["name"] for m in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique. Received: {names}")
    base = [m for m in resolved if not m["steps"]]
    if not base:
        resolved.insert(0, {"name": "baseline", "steps": []})
    return resolved


def resolve_budget(budget: int | Mapping[str, Any] | None) -> dict[str, Any]:
    """The budget of every method: `DEFAULT_BUDGET` updated; an int sets the epochs.

    Raises:
        ValueError: for an unknown key or a value that is not a positive integer.

    Example:

    >>> resolve_budget(2)["epochs"], resolve_budget({"images": 500})["images"]
    (2, 500)
    """
    if budget is None:
        budget = {}
    elif isinstance(budget, (int, np.integer)) and not isinstance(budget, bool):
        budget = {"epochs": int(budget)}
    if not isinstance(budget, Mapping):
        raise TypeError(f"budget must be a number of epochs or a dict with keys among "
                        f"{sorted(DEFAULT_BUDGET)}. Received: budget={budget!r}")
    unknown = sorted(set(budget) - set(DEFAULT_BUDGET))
    if unknown:
        raise ValueError(f"budget keys must be among {sorted(DEFAULT_BUDGET)}. Received: {unknown}")
    from robustkit.training_checks import check_count

    out = {**DEFAULT_BUDGET, **budget}
    for key, value in out.items():
        if key == "augment":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"budget['augment'] must be True or False. Received: {value!r}")
            out[key] = bool(value)
            continue
        out[key] = check_count(f"budget[{key!r}]", value,
                               none_ok="every image" if key == "images" else False)
    return out


def chain_id(steps: Sequence[Mapping[str, Any]]) -> str:
    """A file-name-safe id of a sequence of steps: kinds and a hash of their options.

    Example:

    >>> chain_id([])
    'baseline'
    >>> chain_id([{"kind": "tent", "learning_rate": 0.001}]).startswith("tent-")
    True
    """
    if not steps:
        return "baseline"
    hashed = [{k: v for k, v in s.items()
               if k not in ID_NEUTRAL.get(s["kind"], {}) or v != ID_NEUTRAL[s["kind"]][k]}
              for s in steps]
    digest = hashlib.sha1(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:8]
    return "+".join(s["kind"] for s in steps) + "-" + digest


def merge_labels(a: str, b: str) -> str:
    """What two repairs needed together: "yes" over "teacher" over "no".

    >>> merge_labels("no", "teacher")
    'teacher'
    """
    return LABELS[max(LABELS.index(a), LABELS.index(b))]

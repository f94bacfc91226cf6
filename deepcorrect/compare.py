"""Every repair side by side on your own model, and which one to use (`deepcorrect compare`).

`compare(model, repair_data, test_data, distortions, levels)` repairs `model` with every
method of the ladder (`deepcorrect.methods`: BN adaptation, TENT, Finetune-k, DeepCorrect,
QRNet and their combinations), each on the same repair images with the same budget, and
returns one `ComparisonTable`: top-1 per level and averaged, clean accuracy and its change,
the parameters each repair trained or adapted, whether it needed labels, its seconds,
milliseconds per image and multiply-adds. `recommend(table, max_clean_drop=...,
max_params=..., max_latency=...)` names the best method under your constraints.

One repair per distortion by default (the repair images distorted with that distortion, a
level drawn per image); `mixture=True` makes one repair over a mixture of all of them,
tested on each. Without labels in `repair_data`, the trained methods learn from the
original model's predictions on the clean images (label-free distillation).

Everything is kept in `out_dir`: each repaired model (`models/`, `.keras`), the records of
`stages.json`, each evaluation (`eval/`), and the table as `comparison.md`, `.csv`, `.json`
and `comparison.png`. Running the same call again skips finished work; an interrupted
training resumes after its last finished epoch.

Example:

```python
import deepcorrect

table = deepcorrect.compare(model, (x_repair, y_repair), (x_test, y_test),
                            ["gaussian_blur", "awgn"], {"gaussian_blur": [1, 2, 3],
                                                        "awgn": [10, 20, 30]},
                            methods=["bn_adapt", "finetune", "deepcorrect"], budget=2,
                            out_dir="out/compare")
print(table.to_markdown())
print(deepcorrect.recommend(table, max_clean_drop=0.01, max_latency=5.0).reason)
```
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from deepcorrect import ladder
from deepcorrect.comparison import (ComparisonTable, Recommendation, check_limit, recommend,
                                    table_row)
from deepcorrect.methods import (DEFAULT_BUDGET, DEFAULT_METHODS, METHODS, chain_id,
                                 resolve_budget, resolve_methods)
from deepcorrect.stages import STAGES_FILE, Stages, read_model
from robustkit.io import atomic_write_text

__all__ = ["ComparisonTable", "Recommendation", "compare", "prepare_folder", "recommend",
           "resolve_levels"]

CONFIG_FILE = "config.json"
TABLE_FILES = ("comparison.md", "comparison.csv", "comparison.json", "comparison.png")
# What `compare` writes in `out_dir` (removed by `overwrite=True`).
OUTPUTS = ("models", "work", "eval", STAGES_FILE, CONFIG_FILE, *TABLE_FILES,
           "recommendation.json")
MIXTURE = "mixture"


# --- Arguments -----------------------------------------------------------------------------


def _split_data(data, model, argument: str, need_labels: bool):
    from deepcorrect.checks import check_class_labels, check_images

    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    x = check_images(x, model, f"{argument} images")
    if y is None:
        if need_labels:
            raise ValueError(f"{argument} must be (images, labels): accuracy needs labels")
        return x, None
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{argument} labels must be {len(x)} integer class indices, one per "
                         f"image. Received {len(y)} labels of dtype {y.dtype}")
    check_class_labels(y, model, f"{argument} labels")
    return x, y.astype(np.int64)


def resolve_levels(distortions, levels=None, preset: str = "deepcorrect_cifar"
                   ) -> dict[str, list[float]]:
    """distortion -> levels: from `levels` (a list for one distortion, or a dict), else `preset`.

    Raises:
        ValueError: for an unknown distortion, a missing or empty list of levels, or a level
            outside the distortion's range (`distort.registry.level_range`).

    Example:

    >>> resolve_levels("gaussian_blur", [1, 2])
    {'gaussian_blur': [1.0, 2.0]}
    """
    from distort import presets, registry
    from distort.spec import as_distortions

    if isinstance(distortions, str):
        distortions = [distortions]
    if not isinstance(distortions, (list, tuple)) or not distortions:
        raise ValueError(f"distortions must be a non-empty list of names from "
                         f"{registry.names()}. Received: distortions={distortions!r}")
    if len(set(distortions)) != len(distortions):
        raise ValueError(f"distortions must be unique. Received: {list(distortions)}")
    distortions = [d.name for d in as_distortions(list(distortions))]
    if levels is None:
        table = {d: list(presets.levels(preset, d)) for d in distortions}
    elif isinstance(levels, Mapping):
        missing = sorted(set(distortions) - set(levels))
        extra = sorted(set(levels) - set(distortions))
        if missing or extra:
            raise ValueError(f"levels must have one entry per distortion {list(distortions)}. "
                             f"Missing: {missing}, not asked for: {extra}")
        table = {d: levels[d] for d in distortions}
    elif len(distortions) == 1:
        table = {distortions[0]: levels}
    else:
        raise ValueError("levels must be a dict distortion -> levels when there are several "
                         f"distortions. Received: levels={levels!r}")
    for d, values in table.items():
        values = list(np.atleast_1d(np.asarray(values, dtype=object)))
        low, high = registry.level_range(d)
        bad = [v for v in values if isinstance(v, bool) or not isinstance(
            v, (int, float, np.integer, np.floating)) or not low <= float(v) <= high]
        if not values or bad:
            raise ValueError(f"levels of {d} must be a non-empty list of numbers in "
                             f"[{low:g}, {high:g}]. Received: {values}")
    return {d.name: list(d.levels) for d in as_distortions(table)}


def _digest(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def prepare_folder(out: str | os.PathLike, config: Mapping[str, Any], overwrite: bool,
                   outputs: Sequence[str] = OUTPUTS, argument: str = "out_dir") -> Path:
    """Creates or reuses a run's folder, keeping its settings in `config.json`.

    A folder holding a run with other settings is refused unless `overwrite`, which
    removes what an earlier run wrote (the names in `outputs` only) and starts afresh.

    Args:
        out: the folder.
        config: the run's settings (JSON-serialisable).
        overwrite: start afresh, removing `outputs`.
        outputs: the names in the folder a run writes.
        argument: the folder's argument name, for messages (`"--out"` on a command line).

    Raises:
        ValueError: for a file in place of the folder, or other settings without `overwrite`.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{argument} must be a folder. Received a file: {folder}")
    if overwrite:
        for name in outputs:
            target = folder / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    saved = folder / CONFIG_FILE
    text = json.dumps(config, indent=1, sort_keys=True)
    if saved.is_file() and json.loads(saved.read_text()) != json.loads(text):
        raise ValueError(f"{folder} holds a run with other settings (see {saved}); pass "
                         "overwrite=True (--overwrite) or choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, text)
    return folder


def resolve_held_out(held_out: Mapping[str, Sequence[float]] | None,
                     repaired: Mapping[str, Sequence[float]], mixture: bool
                     ) -> dict[str, list[float]]:
    """The held-out distortions of `compare`: distortion -> levels, checked.

    Raises:
        ValueError: for a held-out distortion that is also repaired for, an unknown name or
            bad levels (as `resolve_levels`), or several separate repairs (with several
            distortions and `mixture=False`: which model would a held-out row be?).

    Example:

    >>> resolve_held_out({"defocus_blur": [2]}, {"gaussian_blur": [1.0]}, mixture=False)
    {'defocus_blur': [2.0]}
    """
    if held_out is None or (isinstance(held_out, Mapping) and not held_out):
        return {}
    if not isinstance(held_out, Mapping):
        raise ValueError("held_out must be a dict distortion -> levels. "
                         f"Received: held_out={held_out!r}")
    both = sorted(set(held_out) & set(repaired))
    if both:
        raise ValueError(f"held_out must not name a distortion that is repaired for. "
                         f"Received: {both} in both")
    if len(repaired) > 1 and not mixture:
        raise ValueError("held_out needs one repaired model per method: pass mixture=True "
                         f"or a single distortion. Received: distortions={list(repaired)}, "
                         "mixture=False")
    return resolve_levels(list(held_out), dict(held_out))


# --- Compare -------------------------------------------------------------------------------


def _evaluate(name: str, load, test, table: Mapping[str, Sequence[float]], path: Path, seed: int,
              verbose: int) -> dict[str, list[float]]:
    """`{distortion: [clean, level 1, ...]}` top-1 of one model (a `distort.sweep`, cached)."""
    from distort.sweep import SweepResult, sweep

    wanted = {(d, lv) for d, levels in table.items() for lv in [None, *levels]}
    result = SweepResult.from_json(path) if path.is_file() else None
    if result is None or not wanted <= {(r["distortion"], r["level"])
                                        for r in result.select(model=name)}:
        result = sweep({name: load()}, test[0], test[1], {d: list(v) for d, v in table.items()},
                       seed=seed, checkpoint=path, batch_size=100, progress=bool(verbose))
    by = {(r["distortion"], r["level"]): r["top1"] for r in result.select(model=name)}
    return {d: [by[(d, None)]] + [by[(d, float(lv))] for lv in levels]
            for d, levels in table.items()}


def compare(model, repair_data, test_data, distortions: str | Sequence[str],
            levels: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
            methods: Sequence[str | Mapping[str, Any]] = DEFAULT_METHODS,
            budget: int | Mapping[str, Any] | None = None, *, mixture: bool = False,
            out_dir: str | os.PathLike | None = None, overwrite: bool = False, seed: int = 0,
            preset: str = "deepcorrect_cifar", timing_images: int = 64,
            held_out: Mapping[str, Sequence[float]] | None = None,
            verbose: int = 0) -> ComparisonTable:
    """Repairs `model` with every method on the same images and budget; one table of results.

    Args:
        model: a Functional or Sequential Keras classifier taking 0..255 pixels (put any
            preprocessing inside it) with a fixed input size; not modified.
        repair_data: `(images, labels)`, or images alone (or `(images, None)`) for label-free
            repairs: what every method adapts or trains on (the budget's first `images`).
        test_data: `(images, labels)` to evaluate on.
        distortions: a distortion name or a list of them (`distort.names()`).
        levels: levels to test (and repair) at: a list for one distortion, a dict
            distortion -> levels, or None for the `preset`'s.
        methods: names of `deepcorrect.METHODS`, `+`-joined combinations of them, or
            `{"name", "steps"}` dicts. The baseline is added first when missing.
        budget: the epochs of every method, or a dict (`DEFAULT_BUDGET` keys).
        mixture: one repair over a mixture of all `distortions` (tested on each) instead of
            one per distortion.
        out_dir: where models, evaluations and the table are kept; a rerun skips finished
            work. None: a temporary folder, removed afterwards.
        overwrite: discard an earlier run in `out_dir` made with other settings.
        seed: seed of every random choice (distortions, training, ranking, evaluation).
        preset: level preset used when `levels` is None.
        timing_images: test images the ms per image is timed on.
        held_out: distortion -> levels that every model is also tested on but no method
            repairs for (how a repair carries over to distortions it never saw). Needs one
            repaired model per method: `mixture=True` or a single distortion. Their rows
            have `held_out=True` and stay out of the summary's average (and so out of
            `recommend`); the summary reports their own average. They do not change any
            repair, so a finished `out_dir` takes new ones and only tests.
        verbose: 1 shows progress (and Keras progress bars).

    Returns:
        A `ComparisonTable` (also written to `out_dir`).

    Raises:
        TypeError: for a model that is not Functional or Sequential.
        ValueError: for an unknown method (listing the valid ones), distortion or budget key,
            bad levels, images that do not fit the model, labels out of range, a seed out of
            range, held-out distortions that are also repaired for (or with several
            separate repairs), or an `out_dir` holding a run with other settings.
    """
    from deepcorrect.checks import check_model
    from deepcorrect.costs import inference_ms, multiply_adds
    from robustkit.seeds import check_seed
    from robustkit.training_checks import check_count

    check_model(model)
    seed = check_seed(seed)
    if not isinstance(mixture, bool):
        raise TypeError(f"mixture must be True or False. Received: mixture={mixture!r}")
    timing_images = check_count("timing_images", timing_images)
    table = resolve_levels(distortions, levels, preset)
    held = resolve_held_out(held_out, table, mixture)
    tested = {**table, **held}  # what every model is tested on
    resolved = resolve_methods(methods)
    budget = resolve_budget(budget)
    x_rep, y_rep = _split_data(repair_data, model, "repair_data", need_labels=False)
    test = _split_data(test_data, model, "test_data", need_labels=True)
    x_rep = x_rep[: budget["images"]]
    y_rep = None if y_rep is None else y_rep[: budget["images"]]
    config = {"model": model.name, "weights": _digest(*model.get_weights()),
              "repair": _digest(x_rep, y_rep), "test": _digest(*test), "levels": table,
              "budget": budget, "seed": seed, "mixture": mixture}
    if out_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return compare(model, (x_rep, y_rep), test, list(table), table, methods, budget,
                           mixture=mixture, out_dir=tmp, seed=seed, timing_images=timing_images,
                           held_out=held, verbose=verbose)
    out = prepare_folder(out_dir, config, overwrite)
    stages = Stages(out)
    groups = ({MIXTURE: table} if mixture and len(table) > 1 else
              {d: {d: v} for d, v in table.items()})
    timing = test[0][:timing_images]
    say = print if verbose else (lambda *a, **k: None)

    def measure(method, group, repaired, record, tested):
        """Top-1 (cached sweep) and costs (cached record) of one repaired model."""
        chain = chain_id(method["steps"])
        where = f"{group}/{chain}" if group else chain

        def load():
            return repaired if repaired is not None else read_model(out / record["path"])

        path = out / "eval" / f"{where}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        accuracy = _evaluate(chain, load, test, tested, path, seed, verbose)
        key = f"cost/{where}"
        if not stages.done(key):
            loaded = load()
            stages.finish(key, multiply_adds=multiply_adds(loaded),
                          ms_per_image=inference_ms(loaded, timing),
                          timing_images=int(len(timing)))
        return record, accuracy, stages.record(key)

    results: dict[tuple[str, str], tuple[dict, dict, dict]] = {}
    for m in resolved:  # the baseline (no steps): evaluated once, on every distortion
        if not m["steps"]:
            _, record = ladder.repair(model, m, None, out, stages, "")
            results[(m["name"], "")] = measure(m, "", model, record, tested)
    for group, dists in groups.items():
        data = ladder.RepairData(x_rep, y_rep, dists, budget, seed, model, verbose)
        for m in resolved:
            if m["steps"]:
                say(f"{m['name']} for {group}")
                repaired, record = ladder.repair(model, m, data, out, stages, group)
                results[(m["name"], group)] = measure(m, group, repaired, record,
                                                      {**dists, **held})
    base_name = next(m["name"] for m in resolved if not m["steps"])
    rows = []
    for m in resolved:
        for d in tested:
            group = "" if not m["steps"] else (
                MIXTURE if MIXTURE in groups else d if d in table else next(iter(groups)))
            record, accuracy, cost = results[(m["name"], group)]
            base_clean = results[(base_name, "")][1][d][0]
            rows.append(table_row(
                m["name"], d, tested[d], accuracy[d], base_clean, repair=group or None,
                parameters=record["parameters"], labels=record["labels"],
                seconds=record["seconds"], ms_per_image=cost["ms_per_image"],
                multiply_adds=cost["multiply_adds"], model=record["path"],
                steps=[s["kind"] for s in m["steps"]], held_out=d in held))
    meta = {"distortions": list(table), "levels": tested, "held_out": list(held),
            "budget": budget, "seed": seed,
            "mixture": MIXTURE in groups, "labelled": y_rep is not None,
            "repair_images": int(len(x_rep)), "test_images": int(len(test[0])),
            "baseline": base_name, "methods": resolved}
    result = ComparisonTable(rows, meta)
    atomic_write_text(out / "comparison.md", result.to_markdown())
    result.to_csv(out / "comparison.csv")
    result.to_json(out / "comparison.json")
    result.plot(out / "comparison.png")
    return result


# --- Command line --------------------------------------------------------------------------


def add_arguments(p) -> None:
    """The options of `deepcorrect compare` (see `deepcorrect.cli`)."""
    from robustkit.seeds import seed_argument

    p.add_argument("--model", required=True,
                   help="a .keras file taking 0..255 pixels, or a keras.applications name")
    p.add_argument("--weights", default=None, help="weights file for a keras.applications model")
    p.add_argument("--data", required=True,
                   help="a CIFAR-style .npz (repairs on x_train, tests on x_test) or an image "
                        "folder (split by --seed: 30%% test, the rest for repairs)")
    p.add_argument("--repair-data", default=None,
                   help="repair images from another .npz (its train split) or folder")
    p.add_argument("--distortion", action="append", required=True,
                   help="a distortion to test and repair for; repeat for several")
    p.add_argument("--levels", action="append", nargs="+", type=float, default=None,
                   help="levels of the distortion given at the same position; repeat per "
                        "--distortion (default: the --preset's levels)")
    p.add_argument("--preset", default="deepcorrect_cifar", help="level preset (default deepcorrect_cifar)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help=f"methods of the ladder: {', '.join(METHODS)}, or several joined "
                        "by '+'; a step's options follow its name after ':', e.g. "
                        "finetune:k=3,learning_rate=0.001 or bn_adapt+deepcorrect:first=3 "
                        "(default: " + " ".join(DEFAULT_METHODS) + ")")
    p.add_argument("--epochs", "--budget", dest="epochs", type=int,
                   default=DEFAULT_BUDGET["epochs"], help="epochs of every method (default 3)")
    p.add_argument("--repair-images", type=int, default=None,
                   help="repair on the first N repair images (default: all)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BUDGET["batch_size"])
    p.add_argument("--rank-images", type=int, default=DEFAULT_BUDGET["rank_images"],
                   help="images the DeepCorrect ranking uses (default 256)")
    p.add_argument("--augment", action="store_true",
                   help="flip and shift the trained methods' repair images at random "
                        "(small repair sets, such as a thousand photos)")
    p.add_argument("--test-images", type=int, default=None, help="test on the first N test images")
    p.add_argument("--timing-images", type=int, default=64, help="test images timed per model")
    p.add_argument("--mixture", action="store_true",
                   help="one repair on a mixture of the distortions, tested on each")
    p.add_argument("--held-out", action="append", nargs="+", default=None,
                   metavar=("NAME", "LEVEL"),
                   help="a distortion and its levels to test every model on without repairing "
                        "for it, e.g. --held-out defocus_blur 1 2 3; repeat for several")
    p.add_argument("--label-free", action="store_true",
                   help="ignore the repair labels: trained methods learn from the model itself")
    p.add_argument("--max-clean-drop", type=float, default=None,
                   help="recommend only methods losing at most this much clean top-1 (0.01 = 1 point)")
    p.add_argument("--max-params", type=int, default=None,
                   help="recommend only methods training or adapting at most this many parameters")
    p.add_argument("--max-latency", type=float, default=None,
                   help="recommend only methods running in at most this many ms per image")
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--out", required=True, help="output folder; an interrupted run resumes there")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an earlier run with other settings in --out")
    p.add_argument("--verbose", action="store_true", help="show progress")


def _held_out_argument(values) -> dict[str, list[float]] | None:
    """`--held-out NAME LEVEL ...` (repeated) as a dict name -> levels."""
    if not values:
        return None
    table = {}
    for name, *levels in values:
        try:
            table[name] = [float(v) for v in levels]
        except ValueError:
            raise ValueError(f"--held-out takes a distortion name and numeric levels. "
                             f"Received: {' '.join([name, *levels])}") from None
        if not levels:
            raise ValueError(f"--held-out {name} needs at least one level")
    return table


def _load(path: str, split: str, size: int):
    from robustkit.data import load_images

    return load_images(path, split=split, size=size)


def main_args(args) -> None:
    """The `deepcorrect compare` subcommand: the table, then the recommendation."""
    from deepcorrect.cli import taking_pixels
    from distort import registry
    from robustkit.cli_common import load_model_spec, require_positive

    require_positive(args, "epochs", "repair_images", "batch_size", "rank_images", "test_images",
              "timing_images")
    for flag in ("max_clean_drop", "max_params", "max_latency"):
        check_limit("--" + flag.replace("_", "-"), getattr(args, flag), integer=flag == "max_params")
    for name in args.distortion:
        registry.check_name(name)
    if args.levels is not None and len(args.levels) != len(args.distortion):
        raise ValueError(f"--levels must be given once per --distortion ({len(args.distortion)}). "
                         f"Received it {len(args.levels)} times")
    repaired = resolve_levels(args.distortion, None if args.levels is None else
                              dict(zip(args.distortion, args.levels)), args.preset)
    held_out = _held_out_argument(args.held_out)
    resolve_held_out(held_out, repaired, args.mixture)
    resolve_methods(args.methods)
    label, (model, preprocess), size = load_model_spec(args.model, args.weights)
    model = taking_pixels(model, label, preprocess)
    data = Path(args.data)
    if data.suffix == ".npz":
        repair, test = _load(args.data, "train", size), _load(args.data, "test", size)
    else:
        x, y = _load(args.data, "test", size)
        order = np.random.default_rng(args.seed).permutation(len(x))
        cut = int(round(0.3 * len(x)))
        test = (x[order[:cut]], None if y is None else y[order[:cut]])
        repair = (x[order[cut:]], None if y is None else y[order[cut:]])
    if args.repair_data is not None:
        repair = _load(args.repair_data, "train", size)
    if test[1] is None:
        raise ValueError(f"--data must have labels to test on (y_test in an .npz, class "
                         f"folders or labels.csv): {args.data}")
    test = (test[0][: args.test_images], test[1][: args.test_images])
    budget = {"epochs": args.epochs, "images": args.repair_images,
              "batch_size": args.batch_size, "rank_images": args.rank_images,
              "augment": args.augment}
    table = compare(model, repair[0] if args.label_free else repair, test, args.distortion,
                    None if args.levels is None else dict(zip(args.distortion, args.levels)),
                    args.methods, budget, mixture=args.mixture, out_dir=args.out,
                    overwrite=args.overwrite, seed=args.seed, preset=args.preset,
                    timing_images=args.timing_images, held_out=held_out,
                    verbose=int(args.verbose))
    choice = recommend(table, args.max_clean_drop, args.max_params, args.max_latency)
    atomic_write_text(Path(args.out) / "recommendation.json", json.dumps(
        {**choice._asdict(), "max_clean_drop": args.max_clean_drop,
         "max_params": args.max_params, "max_latency": args.max_latency}, indent=1))
    print(table.to_markdown())
    print(f"recommended: {choice.method or 'none'} ({choice.reason})")
    print(f"wrote {Path(args.out) / 'comparison.md'} (and .csv, .json, .png)")

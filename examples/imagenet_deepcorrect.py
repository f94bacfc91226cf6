"""DeepCorrect on a real pretrained network: MobileNetV2 and 1,000 ImageNet photos.

What it does, in resumable stages cached in `--out` (run the same command again
after an interruption; finished stages are read back, not recomputed):

1. reads the photos (224x224 center crops) and splits them by `--seed` into a
   ranking/training set and a test set (`split.json`; default 700 / 300);
2. ranks the filters of the model's first `first_convs` conv layers
   (`deepcorrect.rank`, Algorithm 1) for Gaussian blur and for AWGN, exactly and
   with `method="approx"`, on a subset of the training photos at a subset of
   the `deepcorrect_imagenet` levels, and compares the two (Spearman, seconds);
3. for each distortion, trains on the training photos with label-free
   distillation (target: the frozen model's prediction on the clean photo):
   Deepcorr (`deepcorrect.wrap`, units on the top-ranked half of the filters
   of those layers, `cw` units) and Finetune (`deepcorrect.finetune` of the
   same layers) with the same epochs, images, batch size and learning rate;
4. evaluates baseline, Finetune and Deepcorr on the test photos at clean and
   chosen levels (top-1, top-5) and keeps each photo's top-5 classes and
   penultimate features for `imagenet_deepcorrect_figures.py`;
5. counts trainable parameters and multiply-adds (Table 10 style: conv and
   dense kernels only) and times each model (ms per image);
6. writes `results.csv`, `results.json`, `report.md` and an accuracy figure.

Depthwise layers are ranked and corrected like any conv layer: each output
channel of a `DepthwiseConv2D` (multiplier 1) is one 3x3 filter on one input
channel, and its unit sits between it and its batch norm.

Usage (from the repository root):

    .venv/bin/python examples/imagenet_deepcorrect.py --out out/imagenet_deepcorrect \\
        --figures docs/figures                       # about an hour on 2 shared CPU cores
    .venv/bin/python examples/imagenet_deepcorrect.py --quick --out out/idc_quick
    .venv/bin/python examples/imagenet_deepcorrect.py --distortions gaussian_blur  # blur only
    .venv/bin/python examples/imagenet_deepcorrect.py --model model.keras --data photos/

`--model` takes a `keras.applications` name (with `--weights`) or a `.keras`
file (which must take 0..255 images); `--data` a folder with `labels.csv` or
class subfolders.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from deepcorrect.costs import multiply_adds  # noqa: E402
from deepcorrect.surgery import trainable_parameters  # noqa: E402
from robustkit.cli_common import CLIError, fail_cleanly  # noqa: E402
from robustkit.io import atomic_path, atomic_write_text  # noqa: E402
from robustkit.seeds import seed_argument  # noqa: E402

DEFAULT_DATA = "../shared/data/imagenet-samples"
DEFAULT_WEIGHTS = "../shared/models/mobilenet_v2_1.0_224.weights.h5"
DISTORTIONS = ("gaussian_blur", "awgn")
LEVEL_PRESET = "deepcorrect_imagenet"

# Plain configuration tables. Levels are subsets of the `deepcorrect_imagenet`
# preset (blur sigma 1..6, AWGN sigma 10..100); training draws from all six.
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {
        "photos": None,               # all photos in --data
        "test_fraction": 0.3,         # 1,000 photos -> 700 train / 300 test
        "first_convs": 3,             # Conv1, expanded_conv_depthwise, expanded_conv_project
        "rank_photos": 48,            # the first 48 training photos (seeded order)
        "rank_levels": {"gaussian_blur": (2.0, 4.0), "awgn": (20.0, 40.0)},
        "rank_batch": 48,
        "beta": 0.5,                  # fraction of each layer's filters corrected
        "unit": "cw",
        "kernel_size": 3,
        "unit_bn_momentum": 0.9,      # see `set_unit_bn_momentum`
        "training_preset": "cpu_quick",
        # The same rate for units and fine-tuning: the paper's fine-tuning rate.
        # At 0.01, two epochs of Finetune moved Conv1's kernel by 6% and clean
        # top-1 fell from 0.91 to 0.41 (MobileNetV2's early layers are touchy).
        "learning_rate": 0.001,
        "epochs": 2,
        "batch_size": 32,
        "eval_levels": {"gaussian_blur": (2.0, 4.0, 6.0), "awgn": (20.0, 60.0, 100.0)},
        "eval_batch": 50,
        "timing_photos": 64,
        "timing_repeats": 3,
        "bn_check_photos": 64,
    },
    "quick": {
        "photos": 12,
        "test_fraction": 0.3,
        "first_convs": 3,
        "rank_photos": 4,
        "rank_levels": {"gaussian_blur": (2.0,), "awgn": (20.0,)},
        "rank_batch": 8,
        "beta": 0.5,
        "unit": "cw",
        "kernel_size": 3,
        "unit_bn_momentum": 0.9,
        "training_preset": "cpu_quick",
        "learning_rate": 0.001,
        "epochs": 1,
        "batch_size": 4,
        "eval_levels": {"gaussian_blur": (2.0, 4.0), "awgn": (20.0, 60.0)},
        "eval_batch": 8,
        "timing_photos": 4,
        "timing_repeats": 1,
        "bn_check_photos": 4,
    },
}

SHORT = {"gaussian_blur": "blur", "awgn": "noise"}


# --------------------------------------------------------------------------
# Data and split
# --------------------------------------------------------------------------


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of `n` photos into training and test indices.

    The training indices keep the permutation's order, so their first `k` are a
    random subset (the ranking photos); the test indices are sorted.

    Args:
        n: number of photos (at least 2).
        test_fraction: share of test photos, in (0, 1).
        seed: seed of the permutation.

    Returns:
        `(train, test)` integer arrays; disjoint, together `0..n-1`.

    Example:

    >>> train, test = split_indices(10, 0.3, seed=0)
    >>> len(train), len(test), sorted(np.concatenate([train, test]).tolist()) == list(range(10))
    (7, 3, True)
    """
    if n < 2:
        raise ValueError(f"need at least 2 photos to split. Received: n={n}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1). Received: {test_fraction}")
    n_test = min(n - 1, max(1, int(round(n * test_fraction))))
    order = np.random.default_rng(seed).permutation(n)
    return order[n_test:], np.sort(order[:n_test])


def load_photos(data: str, size: int, limit: int | None, out: Path):
    """Reads the photos once and caches them in `out/photos.npz`."""
    from robustkit.data import load_image_folder

    cache = out / "photos.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as f:
            if f["images"].shape[1] == size:
                return f["images"], f["labels"], [str(s) for s in f["files"]]
    folder = load_image_folder(data, size=size, limit=limit)
    files = [Path(f).name for f in folder.files]
    with atomic_path(cache) as tmp:
        np.savez(tmp, images=folder.images, labels=folder.labels, files=np.array(files))
    return folder.images, folder.labels, files


def write_split(out: Path, files: list[str], train: np.ndarray, test: np.ndarray, seed: int,
                test_fraction: float) -> None:
    """Writes `split.json` (indices and file names), or checks an existing one."""
    record = {"seed": seed, "test_fraction": test_fraction,
              "train": train.tolist(), "test": test.tolist(),
              "train_files": [files[i] for i in train], "test_files": [files[i] for i in test]}
    path = out / "split.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old["train"] != record["train"] or old["test"] != record["test"]:
            raise CLIError(f"{path} holds another split (other --seed or photos); "
                           "use a new --out")
        return
    atomic_write_text(path, json.dumps(record, indent=1))


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def load_model(name: str, weights: str | None):
    """`(model, preprocess, input_size)` for an application name or a .keras file."""
    from robustkit.cli_common import load_model_spec

    if Path(name).suffix != ".keras" and weights not in (None, "imagenet") \
            and not Path(weights).is_file():
        raise CLIError(f"--weights file not found: {weights}")
    _, (model, preprocess), size = load_model_spec(name, weights)
    return model, preprocess, size


def first_conv_names(model, count: int) -> list[str]:
    """Names of the first `count` conv layers (Conv2D, DepthwiseConv2D, ...) of `model`."""
    from deepcorrect.graph import conv_layers

    names = [layer.name for layer in conv_layers(model)]
    if not 1 <= count <= len(names):
        raise CLIError(f"first_convs must be in [1, {len(names)}]. Received: {count}")
    return names[:count]


def set_unit_bn_momentum(model, momentum: float) -> None:
    """Sets the momentum of the batch norms inside every correction unit.

    Keras's default (0.99) needs a few hundred steps before the moving
    statistics forget their initial values (mean 0, variance 1); this run
    trains for under a hundred, so a unit would normalise differently at test
    time than during training.
    """
    import keras

    from deepcorrect import correction_units

    for unit in correction_units(model).values():
        for layer in unit.stack:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = momentum


def unit_rows(model) -> list[dict[str, Any]]:
    """Table 10 style rows for each correction unit of a wrapped model."""
    from deepcorrect import correction_units

    rows = []
    for name, unit in correction_units(model).items():
        h, w = model.get_layer(name).output.shape[1:3]
        rows.append({
            "layer": name,
            "corrected_filters": unit.channels,
            "of_filters": int(model.get_layer(name).output.shape[-1]),
            "trainable_params": trainable_parameters(unit),
            "multiply_adds": unit.multiply_adds(h, w),
            "map": f"{h}x{w}",
        })
    return rows


# --------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------


def rank_stage(model, preprocess, images, labels, layers, cfg, seed, out: Path, verbose: int):
    """Exact and approximate rankings per distortion, cached as JSON."""
    import deepcorrect

    rankings = {}
    for distortion in cfg["distortions"]:
        for method in ("exact", "approx"):
            path = out / f"ranking_{SHORT[distortion]}_{method}.json"
            if path.is_file():
                rankings[distortion, method] = deepcorrect.Ranking.load(path, model)
                continue
            if verbose:
                print(f"ranking ({method}) for {distortion} ...", flush=True)
            tick = time.perf_counter()
            ranking = deepcorrect.rank(
                model, images, labels, distortion, cfg["rank_levels"][distortion],
                layers=layers, batch_size=cfg["rank_batch"], seed=seed, method=method,
                checkpoint=out / f"ranking_{SHORT[distortion]}_{method}.partial.json",
                progress=bool(verbose), preprocess=preprocess,
            )
            if method == "exact":  # per layer, so that a resumed run still adds up
                seconds = sum(t["seconds"] for t in ranking.extra["timing"].values())
            else:
                seconds = time.perf_counter() - tick
            ranking.extra["wall_seconds"] = seconds
            ranking.save(path)
            rankings[distortion, method] = ranking
    return rankings


def ranking_rows(rankings, layers, distortions) -> list[dict[str, Any]]:
    """Per distortion and layer: Spearman(exact, approx), top-half overlap, seconds."""
    from deepcorrect import spearman

    rows = []
    for distortion in distortions:
        exact, approx = rankings[distortion, "exact"], rankings[distortion, "approx"]
        for name in layers:
            k = len(exact.top(name, 0.5))
            overlap = len(set(exact.top(name, 0.5)) & set(approx.top(name, 0.5))) / k
            rows.append({
                "distortion": distortion, "layer": name,
                "filters": int(exact.filter_counts[name]),
                "spearman_exact_approx": round(float(spearman(exact, approx, name)), 4),
                "top_half_overlap": round(overlap, 4),
                "exact_seconds": round(exact.extra["timing"][name]["seconds"], 1),
                "distinct_exact_priorities": int(len(np.unique(exact.priorities[name]))),
            })
        rows.append({
            "distortion": distortion, "layer": "all",
            "filters": int(sum(exact.filter_counts[n] for n in layers)),
            "spearman_exact_approx": round(float(spearman(exact, approx)), 4),
            "exact_seconds": round(exact.extra["wall_seconds"], 1),
            "approx_seconds": round(approx.extra["wall_seconds"], 1),
            "images": exact.num_images, "levels": list(exact.levels),
        })
    return rows


def build_model(kind: str, pretrained, ranking, layers, cfg, seed: int = 0):
    """`"deepcorr"`: units on the top-beta filters of `layers`; `"finetune"`: those layers train.

    `seed` seeds the units' initial weights (`deepcorrect.wrap(seed=...)`).
    """
    import deepcorrect

    if kind == "deepcorr":
        model = deepcorrect.wrap(pretrained, ranking, beta=cfg["beta"], unit=cfg["unit"],
                                 layers=layers, kernel_size=cfg["kernel_size"],
                                 site="conv",  # the site of the documented results
                                 seed=seed)
        set_unit_bn_momentum(model, cfg["unit_bn_momentum"])
        return model
    # Finetune-k of the same layers. The batch norms after them stay frozen:
    # in these weights BN is folded (gamma 1, mean 0, variance 1, beta the
    # conv bias), and a trainable BN would normalise with batch statistics.
    return deepcorrect.finetune(pretrained, len(layers), train_batch_norm=False)


def train_stage(pretrained, preprocess, images, rankings, layers, cfg, seed, out: Path,
                verbose: int):
    """Trains Deepcorr and Finetune per distortion (label-free); cached as .keras."""
    import keras

    import deepcorrect
    from distort import presets

    models, logs = {}, {}
    for distortion in cfg["distortions"]:
        for kind in ("finetune", "deepcorr"):
            key = f"{kind}_{SHORT[distortion]}"
            path, log = out / f"{key}.keras", out / f"{key}.train.json"
            if path.is_file() and log.is_file():
                models[key] = keras.models.load_model(path)
                logs[key] = json.loads(log.read_text())
                continue
            if verbose:
                print(f"training {key} ...", flush=True)
            model = build_model(kind, pretrained, rankings[distortion, "exact"], layers, cfg,
                                seed=seed)
            tick = time.perf_counter()
            history = deepcorrect.train(
                model, images, None, distortion, presets.levels(LEVEL_PRESET, distortion),
                teacher=pretrained, preprocess=preprocess, preset=cfg["training_preset"],
                epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                learning_rate=cfg["learning_rate"], seed=seed,
                checkpoint_dir=out / f"{key}_checkpoints", verbose=2 if verbose else 0,
            )
            with atomic_path(path) as tmp:
                model.save(tmp)
            logs[key] = {"seconds_this_run": time.perf_counter() - tick,
                         "history": {k: [float(v) for v in vs]
                                     for k, vs in history.history.items()},
                         "images": int(len(images)), "epochs": cfg["epochs"]}
            atomic_write_text(log, json.dumps(logs[key], indent=1))
            models[key] = model
    return models, logs


def feature_model(model):
    """`x -> (penultimate features, class scores)`: the input of the last layer, and the output."""
    import keras

    return keras.Model(model.input, [model.layers[-1].input, model.output])


def distorted(images, distortion: str | None, level: float | None, seed: int, batch: int):
    """`images` distorted in batches; batch `b` uses the seed `[seed, b]` (as `distort sweep`)."""
    import tensorflow as tf

    from distort import presets, registry

    if distortion is None:
        return images.astype(np.float32)
    options = presets.options(LEVEL_PRESET).get(distortion, {})
    parts = [np.asarray(registry.apply(images[s:s + batch].astype(np.float32), distortion,
                                       level, seed=tf.constant([seed, b], tf.int64), **options))
             for b, s in enumerate(range(0, len(images), batch))]
    return np.concatenate(parts)


def conditions(cfg) -> list[tuple[str | None, float | None]]:
    """`(distortion, level)` of every evaluated condition, clean first."""
    return [(None, None)] + [(d, float(v)) for d in cfg["distortions"]
                             for v in cfg["eval_levels"][d]]


def condition_name(distortion, level) -> str:
    return "clean" if distortion is None else f"{SHORT[distortion]}_{level:g}"


def models_for(distortion, distortions) -> list[str]:
    """Models evaluated on a condition: the baseline everywhere, a distortion's own models on it."""
    chosen = distortions if distortion is None else [distortion]
    return ["baseline"] + [f"{k}_{SHORT[d]}" for d in chosen for k in ("finetune", "deepcorr")]


def evaluate_stage(models, preprocess, images, labels, cfg, seed, out: Path, verbose: int):
    """Per condition: every applicable model's top-5 classes and penultimate features.

    Cached as `out/eval/<condition>.npz` with arrays `<model>_top5` (`[N, 5]`) and
    `<model>_features` (`[N, F]`, float16), plus `labels`.
    """
    folder = out / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    heads = {}
    for distortion, level in conditions(cfg):
        path = folder / f"{condition_name(distortion, level)}.npz"
        if path.is_file():
            continue
        if verbose:
            print(f"evaluating {condition_name(distortion, level)} ...", flush=True)
        x = distorted(images, distortion, level, seed + 1, cfg["eval_batch"])
        arrays = {"labels": labels}
        for name in models_for(distortion, cfg["distortions"]):
            heads.setdefault(name, feature_model(models[name]))
            features, scores = [], []
            for s in range(0, len(x), cfg["eval_batch"]):
                batch = x[s:s + cfg["eval_batch"]]
                f, p = heads[name](preprocess(batch) if preprocess else batch, training=False)
                features.append(np.asarray(f, np.float16))
                scores.append(np.asarray(p))
            arrays[f"{name}_top5"] = np.argsort(-np.concatenate(scores), axis=-1)[:, :5]
            arrays[f"{name}_features"] = np.concatenate(features)
        with atomic_path(path) as tmp:
            np.savez(tmp, **arrays)


def accuracy_rows(cfg, out: Path) -> list[dict[str, Any]]:
    """Top-1 and top-5 per model, distortion and level, from the cached evaluation."""
    rows = []
    for distortion, level in conditions(cfg):
        with np.load(out / "eval" / f"{condition_name(distortion, level)}.npz") as f:
            labels = f["labels"]
            for name in models_for(distortion, cfg["distortions"]):
                top5 = f[f"{name}_top5"]
                rows.append({
                    "model": name, "distortion": distortion or "clean",
                    "level": 0.0 if level is None else level, "split": "test",
                    "images": int(len(labels)),
                    "top1": float(np.mean(top5[:, 0] == labels)),
                    "top5": float(np.mean((top5 == labels[:, None]).any(-1))),
                })
    return rows


def cost_stage(models, preprocess, images, cfg, out: Path) -> list[dict[str, Any]]:
    """Trainable parameters, multiply-adds and ms per image of each model (cached).

    The models are timed in turns, `timing_repeats` rounds, and each keeps its
    best round, so that load from other jobs falls on all of them alike.
    """
    import tensorflow as tf

    from qrnet.evaluate import seconds_per_image

    path = out / "costs.json"
    if path.is_file():
        return json.loads(path.read_text())
    x = images[: cfg["timing_photos"]].astype(np.float32)
    names = models_for(None, cfg["distortions"])
    forwards = {name: tf.function(lambda b, m=models[name]: m(preprocess(b) if preprocess else b,
                                                             training=False))
                for name in names}
    best = dict.fromkeys(names, float("inf"))
    for _ in range(cfg["timing_repeats"]):
        for name in names:
            best[name] = min(best[name], seconds_per_image(forwards[name], x, batch_size=32,
                                                           repeats=1))
    base_madds = multiply_adds(models["baseline"])
    rows = []
    for name in names:
        units = unit_rows(models[name])
        rows.append({
            "model": name,
            "trainable_params": 0 if name == "baseline" else trainable_parameters(models[name]),
            "base_multiply_adds": base_madds,
            "unit_multiply_adds": int(sum(u["multiply_adds"] for u in units)),
            "units": units,
            "ms_per_image": 1000 * best[name],
            "timing_images": int(len(x)),
            "timing_rounds": cfg["timing_repeats"],
        })
    atomic_write_text(path, json.dumps(rows, indent=1))
    return rows


def bn_check(pretrained, preprocess, images, labels, layers, cfg) -> dict[str, float]:
    """Clean top-1 of Finetune with trainable BN in training vs inference mode.

    Shows why Finetune keeps the batch norms frozen: with folded BN, a trainable
    BN in training mode normalises by batch statistics the network never used.
    The trained models (`build_model`) keep them frozen; only this check makes them
    trainable, on purpose, so `finetune`'s warning about folded batch norms, which
    describes the very effect measured here, is silenced for this one call.
    """
    import warnings

    import deepcorrect

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"train_batch_norm=True trains the batch norms",
                                category=UserWarning)
        model = deepcorrect.finetune(pretrained, len(layers), train_batch_norm=True)
    x = images[: cfg["bn_check_photos"]].astype(np.float32)
    x = preprocess(x) if preprocess else x
    y = labels[: len(x)]
    result = {}
    for mode in (False, True):
        p = np.asarray(model(x, training=mode))
        result["training" if mode else "inference"] = float(np.mean(p.argmax(-1) == y))
    result["images"] = int(len(x))
    return result


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def accuracy_table(rows, distortion: str, metric: str) -> str:
    """Markdown: one row per model, one column per level (clean first), plus the mean."""
    levels = sorted({r["level"] for r in rows if r["distortion"] == distortion})
    names = [("baseline", "Baseline"), (f"finetune_{SHORT[distortion]}", "Finetune"),
             (f"deepcorr_{SHORT[distortion]}", "Deepcorr")]
    header = "| model | clean | " + " | ".join(f"{v:g}" for v in levels) + " | mean (with clean) |"
    lines = [header, "|---" * (len(levels) + 3) + "|"]
    for key, label in names:
        clean = next(r[metric] for r in rows if r["model"] == key and r["distortion"] == "clean")
        values = [next(r[metric] for r in rows if r["model"] == key
                       and r["distortion"] == distortion and r["level"] == v) for v in levels]
        mean = float(np.mean([clean] + values))
        lines.append(f"| {label} | {clean:.3f} | " + " | ".join(f"{v:.3f}" for v in values)
                     + f" | {mean:.3f} |")
    return "\n".join(lines)


def cost_table(costs) -> str:
    lines = ["| model | trainable params | unit multiply-adds (M) | model multiply-adds (M) | "
             "ms / image |", "|---|---|---|---|---|"]
    for r in costs:
        lines.append(f"| {r['model']} | {r['trainable_params']:,} | "
                     f"{r['unit_multiply_adds'] / 1e6:.1f} | {r['base_multiply_adds'] / 1e6:.1f} | "
                     f"{r['ms_per_image']:.1f} |")
    return "\n".join(lines)


def unit_table(costs) -> str:
    lines = ["| layer | map | corrected / filters | params | multiply-adds (M) |",
             "|---|---|---|---|---|"]
    first = next(r["model"] for r in costs if r["model"].startswith("deepcorr"))
    for r in costs:
        if r["model"] == first:
            for u in r["units"]:
                lines.append(f"| {u['layer']} | {u['map']} | {u['corrected_filters']} / "
                             f"{u['of_filters']} | {u['trainable_params']:,} | "
                             f"{u['multiply_adds'] / 1e6:.1f} |")
    return "\n".join(lines)


def ranking_table(rows) -> str:
    lines = ["| distortion | layer | filters | Spearman exact vs approx | top-half overlap | "
             "exact s | distinct exact priorities |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["layer"] != "all":
            lines.append(f"| {r['distortion']} | {r['layer']} | {r['filters']} | "
                         f"{r['spearman_exact_approx']:.3f} | {r['top_half_overlap']:.2f} | "
                         f"{r['exact_seconds']:.0f} | {r['distinct_exact_priorities']} |")
    for r in rows:
        if r["layer"] == "all":
            lines.append(f"\n{r['distortion']}: exact {r['exact_seconds']:.0f} s, approx "
                         f"{r['approx_seconds']:.0f} s, {r['images']} photos x levels "
                         f"{r['levels']}; mean per-layer Spearman "
                         f"{r['spearman_exact_approx']:.3f}.")
    return "\n".join(lines)


def _deepcorrect_series(distortion: str) -> list[tuple[str, str, str]]:
    return [("baseline", "baseline", "k-o"),
            (f"finetune_{SHORT[distortion]}", "Finetune", "C1-s"),
            (f"deepcorr_{SHORT[distortion]}", "Deepcorr", "C0-^")]


def accuracy_figure(rows, distortions, path: Path, series=_deepcorrect_series,
                    key: str = "model", value: str = "top1") -> None:
    """Top-1 against level per distortion, one line per model.

    Args:
        rows: result rows with `distortion`, `level`, `key` and `value` fields.
        distortions: one panel each.
        path: the PNG to write.
        series: `distortion -> [(row key, label, matplotlib style)]`; by default the
            baseline, Finetune and Deepcorr of this script.
        key: the row field naming the model.
        value: the row field to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(distortions), figsize=(4.5 * len(distortions), 3.4),
                             squeeze=False)
    for ax, distortion in zip(axes[0], distortions):
        for name, label, style in series(distortion):
            pts = sorted((r["level"], r[value]) for r in rows if r[key] == name
                         and r["distortion"] in ("clean", distortion))
            ax.plot(*zip(*pts), style, label=label)
        ax.set_xlabel(f"{distortion} sigma (0 = clean)")
        ax.set_ylabel("top-1 (test photos)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def report(args, cfg, split, rank_rows, acc, costs, logs, bn) -> str:
    n_train, n_test = len(split[0]), len(split[1])
    lines = [
        "# DeepCorrect on a pretrained classifier (ImageNet photos)", "",
        f"Model: {args.model}; photos: {args.data}; split seed {args.seed}: "
        f"{n_train} train (ranking uses the first {min(cfg['rank_photos'], n_train)}), "
        f"{n_test} test.", "",
        "Configuration: `" + json.dumps(cfg) + "`", "",
        "## Ranking: exact (Algorithm 1) vs first-order approximation", "",
        ranking_table(rank_rows), "",
        f"## Top-1 on the {n_test} test photos", "",
    ]
    for d in cfg["distortions"]:
        lines += [f"**{d}**", "", accuracy_table(acc, d, "top1"), ""]
    lines += [f"## Top-5 on the {n_test} test photos", ""]
    for d in cfg["distortions"]:
        lines += [f"**{d}**", "", accuracy_table(acc, d, "top5"), ""]
    lines += ["## Cost", "", cost_table(costs), "", "Units of Deepcorr (the same sizes for "
              "each distortion):", "", unit_table(costs), ""]
    lines += ["## Training", ""]
    for key, log in logs.items():
        last = {k: round(v[-1], 4) for k, v in log["history"].items()}
        lines.append(f"- {key}: {log['images']} photos x {log['epochs']} epochs; last epoch "
                     f"{last}; {log['seconds_this_run']:.0f} s")
    lines += ["", f"Finetune with trainable BN, clean top-1 on {bn['images']} training photos: "
              f"{bn['inference']:.3f} in inference mode, {bn['training']:.3f} in training "
              "mode.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="photo folder (labels.csv or class subfolders)")
    parser.add_argument("--model", default="MobileNetV2",
                        help="a keras.applications name or a .keras file")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS,
                        help="weights file of the application model")
    parser.add_argument("--out", default=str(REPO_ROOT / "out" / "imagenet_deepcorrect"),
                        help="output folder; finished stages there are reused")
    parser.add_argument("--figures", help="folder for the figure (default: --out)")
    parser.add_argument("--quick", action="store_true",
                        help="a handful of photos and a tiny budget (for tests)")
    parser.add_argument("--distortions", nargs="+", default=list(DISTORTIONS), choices=DISTORTIONS,
                        help="the distortions to rank, train and test for (default: both)")
    parser.add_argument("--seed", type=seed_argument, default=0,
                        help="split, distortion and training seed")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1))
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = dict(CONFIGS["quick" if args.quick else "default"])
    cfg["distortions"] = [d for d in DISTORTIONS if d in args.distortions]
    if not Path(args.data).is_dir():
        raise CLIError(f"--data: no such folder: {args.data}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(args.figures) if args.figures else out
    weights = None if Path(args.model).suffix == ".keras" else args.weights
    pretrained, preprocess, size = load_model(args.model, weights)

    images, labels, files = load_photos(args.data, size, cfg["photos"], out)
    train, test = split_indices(len(images), cfg["test_fraction"], args.seed)
    write_split(out, files, train, test, args.seed, cfg["test_fraction"])
    layers = first_conv_names(pretrained, cfg["first_convs"])
    rank_ids = train[: cfg["rank_photos"]]

    rankings = rank_stage(pretrained, preprocess, images[rank_ids], labels[rank_ids], layers,
                          cfg, args.seed, out, args.verbose)
    rank_rows = ranking_rows(rankings, layers, cfg["distortions"])
    models, logs = train_stage(pretrained, preprocess, images[train], rankings, layers, cfg,
                               args.seed, out, args.verbose)
    models["baseline"] = pretrained
    evaluate_stage(models, preprocess, images[test], labels[test], cfg, args.seed, out,
                   args.verbose)
    acc = accuracy_rows(cfg, out)
    costs = cost_stage(models, preprocess, images[test], cfg, out)
    bn = bn_check(pretrained, preprocess, images[train], labels[train], layers, cfg)

    summary = {"config": cfg, "layers": layers, "split": {"train": len(train), "test": len(test)},
               "ranking": rank_rows, "accuracy": acc, "costs": costs, "training": logs,
               "bn_check": bn}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1))
    header = list(acc[0])
    atomic_write_text(out / "results.csv", "\n".join(
        [",".join(header)] + [",".join(str(r[k]) for k in header) for r in acc]) + "\n")
    text = report(args, cfg, (train, test), rank_rows, acc, costs, logs, bn)
    atomic_write_text(out / "report.md", text)
    accuracy_figure(acc, cfg["distortions"], figures / "imagenet_deepcorrect_accuracy.png")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

"""DeepCorrect on a pretrained ImageNet classifier: the stages of the MobileNetV2 study.

`examples/imagenet_deepcorrect.py` runs these stages in order, and
`examples/imagenet_deepcorrect_figures.py` and `examples/qrnet_imagenet.py` reuse
its photos, split and model loader. Every stage caches what it computes in an
output folder `out` and reads it back on the next run, so an interrupted study
resumes where it stopped:

1. `load_photos` (`photos.npz`), `split_indices` and `write_split` (`split.json`);
2. `rank_stage`: exact and approximate rankings per distortion
   (`ranking_<short>_<method>.json`), compared by `ranking_rows`;
3. `train_stage`: Deepcorr and Finetune per distortion, label-free
   (`<kind>_<short>.keras` and `.train.json`), built by `build_model`;
4. `evaluate_stage`: top-5 classes and penultimate features per condition
   (`eval/<condition>.npz`), summarised by `accuracy_rows`;
5. `cost_stage`: trainable parameters, multiply-adds and ms per image (`costs.json`),
   and `bn_check`, which shows why Finetune keeps its batch norms frozen.

`studies.imagenet_report` turns the results into tables, a report and a figure. The
stages take a configuration `cfg`, a dict: `distortions` (names), `photos` (None for
all), `test_fraction`, `first_convs`, `rank_photos`, `rank_levels` and `eval_levels`
(`{distortion: levels}`), `rank_batch`, `beta`, `unit`, `kernel_size`,
`unit_bn_momentum`, `training_preset`, `learning_rate`, `epochs`, `batch_size`,
`eval_batch`, `timing_photos`, `timing_repeats` and `bn_check_photos`; the
configurations of the example are its `CONFIGS`.

Example:

>>> train, test = split_indices(10, 0.3, seed=0)
>>> len(train), len(test)
(7, 3)
>>> cfg = {"distortions": ["gaussian_blur"], "eval_levels": {"gaussian_blur": (2.0, 4.0)}}
>>> [condition_name(d, v) for d, v in conditions(cfg)]
['clean', 'blur_2', 'blur_4']
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deepcorrect.costs import multiply_adds, unit_costs
from deepcorrect.surgery import trainable_parameters
from robustkit.cli_common import CLIError
from robustkit.io import atomic_path, atomic_write_text

DEFAULT_DATA = "../shared/data/imagenet-samples"
DEFAULT_WEIGHTS = "../shared/models/mobilenet_v2_1.0_224.weights.h5"
DISTORTIONS = ("gaussian_blur", "awgn")
LEVEL_PRESET = "deepcorrect_imagenet"
# The short names in file and model names: `ranking_blur_exact.json`, `deepcorr_noise`.
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

    Raises:
        ValueError: for fewer than 2 photos or a `test_fraction` outside (0, 1).

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


def load_photos(data: str, size: int, limit: int | None,
                out: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reads the photos once (center crops) and caches them in `out/photos.npz`.

    Args:
        data: a photo folder with `labels.csv` or class subfolders.
        size: height and width of the crops.
        limit: read only the first `limit` photos; None for all.
        out: the study's output folder.

    Returns:
        `(images, labels, files)`: uint8 `[N, size, size, 3]`, int labels, file names.
    """
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
    """Writes `out/split.json` (indices and file names), or checks an existing one.

    Args:
        out: the study's output folder.
        files: the file name of every photo.
        train: training indices, from `split_indices`.
        test: test indices, from `split_indices`.
        seed: the split's seed, recorded.
        test_fraction: the split's test share, recorded.

    Raises:
        CLIError: if `out` already holds another split.
    """
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


def load_model(name: str, weights: str | None) -> tuple[Any, Callable | None, int]:
    """A pretrained classifier: a `keras.applications` name or a `.keras` file.

    Args:
        name: an application name (`"MobileNetV2"`) or a `.keras` file taking 0..255 images.
        weights: the application's weights file, `"imagenet"`, or None (a `.keras` file).

    Returns:
        `(model, preprocess, input_size)`; `preprocess` maps 0..255 images to the
        model's input, or is None.

    Raises:
        CLIError: if the weights file does not exist.
    """
    from robustkit.cli_common import load_model_spec

    if Path(name).suffix != ".keras" and weights not in (None, "imagenet") \
            and not Path(weights).is_file():
        raise CLIError(f"--weights file not found: {weights}")
    _, (model, preprocess), size = load_model_spec(name, weights)
    return model, preprocess, size


def first_conv_names(model, count: int) -> list[str]:
    """Names of the first `count` conv layers (Conv2D, DepthwiseConv2D, ...) of `model`.

    Example:

    >>> import keras
    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="a"),
    ...                       keras.layers.DepthwiseConv2D(3, name="b")])
    >>> first_conv_names(m, 2)
    ['a', 'b']
    """
    from deepcorrect.graph import conv_layers

    names = [layer.name for layer in conv_layers(model)]
    if not 1 <= count <= len(names):
        raise CLIError(f"first_convs must be in [1, {len(names)}]. Received: {count}")
    return names[:count]


def build_model(kind: str, pretrained, ranking, layers: list[str], cfg: dict[str, Any],
                seed: int = 0):
    """The model to train: Deepcorr or Finetune of `layers`.

    Args:
        kind: `"deepcorr"`: units on the top-`beta` filters of `layers`
            (`deepcorrect.wrap`, `cfg["unit_bn_momentum"]` in the units);
            `"finetune"`: those layers train (`deepcorrect.finetune`).
        pretrained: the pretrained classifier (not modified).
        ranking: the `deepcorrect.Ranking` that chooses Deepcorr's filters.
        layers: the conv layers to correct or fine-tune.
        cfg: the configuration (`beta`, `unit`, `kernel_size`, `unit_bn_momentum`).
        seed: seed of the units' initial weights. Defaults to 0.

    Returns:
        A new model.
    """
    import deepcorrect

    if kind == "deepcorr":
        return deepcorrect.wrap(pretrained, ranking, beta=cfg["beta"], unit=cfg["unit"],
                                layers=layers, kernel_size=cfg["kernel_size"],
                                site="conv",  # the site of the documented results
                                unit_bn_momentum=cfg["unit_bn_momentum"], seed=seed)
    # Finetune-k of the same layers. The batch norms after them stay frozen:
    # in these weights BN is folded (gamma 1, mean 0, variance 1, beta the
    # conv bias), and a trainable BN would normalise with batch statistics.
    return deepcorrect.finetune(pretrained, len(layers), train_batch_norm=False)


# --------------------------------------------------------------------------
# Ranking and training
# --------------------------------------------------------------------------


def rank_stage(model, preprocess, images, labels, layers: list[str], cfg: dict[str, Any],
               seed: int, out: Path, verbose: int) -> dict[tuple[str, str], Any]:
    """Exact and approximate rankings of `layers` per distortion, cached as JSON.

    Args:
        model: the pretrained classifier.
        preprocess: its preprocessing of 0..255 images, or None.
        images: the ranking photos.
        labels: their labels.
        layers: the conv layers to rank.
        cfg: the configuration (`distortions`, `rank_levels`, `rank_batch`).
        seed: seed of the distortions.
        out: the study's output folder.
        verbose: 1 to print progress.

    Returns:
        `{(distortion, method): deepcorrect.Ranking}`, methods `"exact"` and `"approx"`;
        each ranking's `extra["wall_seconds"]` holds its time.
    """
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
                score="gain" if method == "exact" else None,  # the paper's, as RESULTS ran it
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


def ranking_rows(rankings, layers: list[str], distortions: list[str]) -> list[dict[str, Any]]:
    """Per distortion and layer: Spearman(exact, approx), top-half overlap, seconds.

    Args:
        rankings: from `rank_stage`.
        layers: the ranked layers.
        distortions: the distortions ranked for.

    Returns:
        One row per distortion and layer, then one row with `layer="all"` per distortion.
    """
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


def train_stage(pretrained, preprocess, images, rankings, layers: list[str],
                cfg: dict[str, Any], seed: int, out: Path,
                verbose: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Trains Deepcorr and Finetune per distortion, label-free; cached as `.keras` files.

    The target is the frozen pretrained model's prediction on the clean photo
    (`deepcorrect.train(teacher=pretrained)`); levels are drawn from every level of
    the `deepcorrect_imagenet` preset.

    Args:
        pretrained: the pretrained classifier (the teacher).
        preprocess: its preprocessing of 0..255 images, or None.
        images: the training photos.
        rankings: from `rank_stage`; the exact ones choose Deepcorr's filters.
        layers: the conv layers to correct or fine-tune.
        cfg: the configuration.
        seed: seed of the units, the distortions and the batches.
        out: the study's output folder.
        verbose: 1 to print progress.

    Returns:
        `(models, logs)`, both keyed `"<kind>_<short>"` (`"deepcorr_blur"`, ...).
    """
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


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def feature_model(model):
    """`x -> (penultimate features, class scores)`: the input of the last layer, and the output."""
    import keras

    return keras.Model(model.input, [model.layers[-1].input, model.output])


def distorted(images, distortion: str | None, level: float | None, seed: int,
              batch: int) -> np.ndarray:
    """`images` distorted in batches; batch `b` uses the seed `[seed, b]` (as `distort sweep`).

    Args:
        images: `[N, H, W, 3]` images on 0..255.
        distortion: a distortion name, with the `deepcorrect_imagenet` preset's options;
            None for the clean images.
        level: the level.
        seed: the seed.
        batch: images per batch.

    Returns:
        float32 images.

    Example:

    >>> distorted(np.zeros((3, 8, 8, 3), np.uint8), "awgn", 20.0, seed=0, batch=2).shape
    (3, 8, 8, 3)
    """
    from distort import presets
    from qrnet.evaluate import apply_with_options, distort_images

    if distortion is None:
        return images.astype(np.float32)
    apply_fn = apply_with_options(presets.options(LEVEL_PRESET))
    return distort_images(images, distortion, level, seed, batch_size=batch, apply_fn=apply_fn)


def conditions(cfg: dict[str, Any]) -> list[tuple[str | None, float | None]]:
    """`(distortion, level)` of every evaluated condition, clean (`(None, None)`) first.

    Example:

    >>> conditions({"distortions": ["awgn"], "eval_levels": {"awgn": (20,)}})
    [(None, None), ('awgn', 20.0)]
    """
    return [(None, None)] + [(d, float(v)) for d in cfg["distortions"]
                             for v in cfg["eval_levels"][d]]


def condition_name(distortion: str | None, level: float | None) -> str:
    """The file stem of a condition: `"clean"`, `"blur_2"`, `"noise_60"`.

    Example:

    >>> condition_name(None, None), condition_name("gaussian_blur", 2.0)
    ('clean', 'blur_2')
    """
    return "clean" if distortion is None else f"{SHORT[distortion]}_{level:g}"


def models_for(distortion: str | None, distortions: list[str]) -> list[str]:
    """Models evaluated on a condition: the baseline everywhere, a distortion's own models on it.

    Example:

    >>> models_for("awgn", ["gaussian_blur", "awgn"])
    ['baseline', 'finetune_noise', 'deepcorr_noise']
    """
    chosen = distortions if distortion is None else [distortion]
    return ["baseline"] + [f"{k}_{SHORT[d]}" for d in chosen for k in ("finetune", "deepcorr")]


def evaluate_stage(models: dict[str, Any], preprocess, images, labels, cfg: dict[str, Any],
                   seed: int, out: Path, verbose: int) -> None:
    """Per condition: every applicable model's top-5 classes and penultimate features.

    Cached as `out/eval/<condition>.npz` with arrays `<model>_top5` (`[N, 5]`) and
    `<model>_features` (`[N, F]`, float16), plus `labels`. A condition distorts the
    photos with the seed `[seed + 1, batch]` per batch of `eval_batch` photos.

    Args:
        models: `"baseline"` and the models of `train_stage`.
        preprocess: the preprocessing of 0..255 images, or None.
        images: the test photos.
        labels: their labels.
        cfg: the configuration (`distortions`, `eval_levels`, `eval_batch`).
        seed: the study's seed.
        out: the study's output folder.
        verbose: 1 to print progress.
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


def accuracy_rows(cfg: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """Top-1 and top-5 per model, distortion and level, from `evaluate_stage`'s files.

    Returns:
        Rows with `model`, `distortion` (`"clean"` for the clean photos), `level`
        (0.0 when clean), `split`, `images`, `top1` and `top5`.
    """
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


# --------------------------------------------------------------------------
# Costs
# --------------------------------------------------------------------------


def cost_stage(models: dict[str, Any], preprocess, images, cfg: dict[str, Any],
               out: Path) -> list[dict[str, Any]]:
    """Trainable parameters, multiply-adds and ms per image of each model (`costs.json`).

    Multiply-adds count conv and dense kernels (`deepcorrect.costs`, Table 10 style).
    The models are timed in turns, `timing_repeats` rounds, and each keeps its
    best round, so that load from other jobs falls on all of them alike.

    Args:
        models: `"baseline"` and the models of `train_stage`.
        preprocess: the preprocessing of 0..255 images, or None.
        images: photos to time on (the first `timing_photos`).
        cfg: the configuration.
        out: the study's output folder.

    Returns:
        One row per model, with its units (`deepcorrect.costs.unit_costs`).
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
        units = unit_costs(models[name])
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


def bn_check(pretrained, preprocess, images, labels, layers: list[str],
             cfg: dict[str, Any]) -> dict[str, float]:
    """Clean top-1 of Finetune with trainable BN in training vs inference mode.

    Shows why Finetune keeps the batch norms frozen: with folded BN, a trainable
    BN in training mode normalises by batch statistics the network never used.
    The trained models (`build_model`) keep them frozen; only this check makes them
    trainable, on purpose, so `finetune`'s warning about folded batch norms, which
    describes the very effect measured here, is silenced for this one call.

    Args:
        pretrained: the pretrained classifier.
        preprocess: its preprocessing of 0..255 images, or None.
        images: photos (the first `bn_check_photos` are used).
        labels: their labels.
        layers: the fine-tuned layers.
        cfg: the configuration.

    Returns:
        `{"inference": top-1, "training": top-1, "images": count}`.
    """
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

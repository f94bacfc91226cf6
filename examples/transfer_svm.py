"""Deep-feature transfer under distortion: linear SVMs on a layer's features (DeepCorrect Tables 13-15).

DeepCorrect asks whether a corrected network is also a better feature
extractor on other datasets: it extracts features of a chosen layer from the
baseline, fine-tuned and Deepcorr models, trains linear SVMs on random splits
(25 training and 5 validation images per class, the rest for testing), and
reports the mean per-class accuracy, for clean images (Table 13) and averaged
over the levels of each distortion (Tables 14 and 15), where training and test
images are distorted independently at the same levels.

Here: for each model and each split, one SVM per distortion is trained on the
clean plus distorted training features of every level, its C is chosen on the
validation images, and it is tested on the test images at each level; the
clean column uses an SVM trained on clean features only. `--distortions-of`
limits a model to some distortions (a Deepcorr model trained for blur is
tested on blur only). Features are cached in `--out/features`, so an
interrupted run resumes; `features/settings.json` records the image selection
and each label's model, and a run with other settings is refused.

Data is any image folder with class subfolders (or a `labels.csv`) or a
CIFAR-style `.npz`; images are resized to the model's input size and then
distorted, so levels are in model-input pixels.

Usage:

    .venv/bin/python examples/transfer_svm.py \\
        --model baseline=MobileNetV2 --weights baseline=../shared/models/mobilenet_v2_1.0_224.weights.h5 \\
        --model deepcorr=out/imagenet_deepcorrect/deepcorr_blur.keras --preprocess mobilenet_v2 \\
        --distortions-of deepcorr=gaussian_blur \\
        --data ../shared/data/cifar10/cifar10.npz --per-class 60 --out out/transfer
    .venv/bin/python examples/transfer_svm.py ... --quick
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import deepcorrect  # noqa: F401,E402  (registers the correction units for loading)
import distort  # noqa: E402
from distort import presets  # noqa: E402
from robustkit.cli_common import CLIError, fail_cleanly, load_model_spec, refuse_existing  # noqa: E402
from robustkit.data import load_images, preprocessor  # noqa: E402
from robustkit.io import atomic_path, atomic_write_text  # noqa: E402
from robustkit.seeds import seed_argument  # noqa: E402

# C of the linear SVMs, one per decade, chosen on the validation images.
C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0)


def feature_model(model: keras.Model, layer: str | None = None) -> keras.Model:
    """A model mapping inputs to one layer's (flattened) features.

    Args:
        model: a flat functional or Sequential classifier.
        layer: the layer whose output to use; None for the input of the last
            `Dense` layer (the penultimate features, as AlexNet's fc7).

    Returns:
        A `keras.Model` with one `[N, D]` output.
    """
    if layer is None:
        dense = [lay for lay in model.layers if isinstance(lay, keras.layers.Dense)]
        if not dense:
            raise ValueError(f"model {model.name!r} has no Dense layer; pass --layer")
        features = dense[-1].input
    else:
        names = [lay.name for lay in model.layers]
        if layer not in names:
            raise ValueError(f"--layer {layer!r} is not a layer of {model.name!r}. "
                             f"Layers: {', '.join(names[:10])}, ...")
        features = model.get_layer(layer).output
    if len(features.shape) > 2:
        features = keras.layers.Flatten(name="transfer_flatten")(features)
    return keras.Model(model.inputs[0], features, name=f"{model.name}_features")


def class_subset(labels: np.ndarray, classes: int, per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` random images of each of the first `classes` labels.

    Raises:
        ValueError: if fewer labels exist or a class has too few images.
    """
    present = np.unique(labels)
    if len(present) < classes:
        raise ValueError(f"classes must be at most {len(present)} (labels in the data). "
                         f"Received: {classes}")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in present[:classes]:
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(f"per_class must be at most {len(members)} (images of class "
                             f"{label}). Received: {per_class}")
        chosen.append(np.sort(rng.choice(members, per_class, replace=False)))
    return np.concatenate(chosen)


def split(labels: np.ndarray, train: int, val: int, seed: int) -> dict[str, np.ndarray]:
    """A stratified random split: `train` and `val` images per class, the rest test."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        parts["train"].append(members[:train])
        parts["val"].append(members[train:train + val])
        parts["test"].append(members[train + val:])
    return {name: np.sort(np.concatenate(p)) for name, p in parts.items()}


def mean_per_class_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """The mean over classes of each class's accuracy (balanced accuracy)."""
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)]))


def fit_svm(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray):
    """A standardised linear SVM, C chosen from `C_GRID` on the validation set.

    libsvm's linear kernel (one-vs-one) rather than liblinear (one-vs-rest): on
    1,750 standardised 1280-d features it fits in about a second, where
    liblinear took 20 to 80 s per C on the shared CPU.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    best = None
    for c in C_GRID:
        svm = make_pipeline(StandardScaler(), SVC(kernel="linear", C=c))
        svm.fit(x, y)
        score = mean_per_class_accuracy(y_val, svm.predict(x_val))
        if best is None or score > best[0]:
            best = (score, svm)
    return best[1]


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 images resized (bilinear) to `size`, as the models see them."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    resized = tf.image.resize(tf.cast(images, tf.float32), size).numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def extract(features: keras.Model, preprocess: Callable | None, images: np.ndarray,
            batch_size: int = 32) -> np.ndarray:
    """Features of images on 0..255 (already at the model's input size)."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype(np.float32)
        out.append(np.asarray(features(preprocess(batch) if preprocess else batch)))
    return np.concatenate(out)


def cached_features(cache: Path, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Loads `cache/key.npy`, or computes and writes it atomically."""
    path = cache / f"{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    values = compute()
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, values, allow_pickle=False)
    return values


def evaluate_model(feats: dict[str, np.ndarray], labels: np.ndarray,
                   distortions: dict[str, list[float]], splits: int, train: int, val: int,
                   seed: int) -> dict[str, Any]:
    """Mean per-class accuracy over splits: clean, and per distortion and level.

    Args:
        feats: `"clean"` and `"<name>@<level>"` -> features `[N, D]`.
        labels: `[N]` labels.
        distortions: name -> levels.
        splits, train, val, seed: the random splits.

    Returns:
        `{"clean": [per split], name: {"levels": {level: [per split]},
        "average": [per split]}}`.
    """
    result: dict[str, Any] = {"clean": []}
    for name in distortions:
        result[name] = {"levels": {str(lv): [] for lv in distortions[name]}, "average": []}
    for s in range(splits):
        part = split(labels, train, val, seed + s)
        tr, va, te = part["train"], part["val"], part["test"]
        clean = feats["clean"]
        svm = fit_svm(clean[tr], labels[tr], clean[va], labels[va])
        result["clean"].append(mean_per_class_accuracy(labels[te], svm.predict(clean[te])))
        for name, levels in distortions.items():
            keys = ["clean"] + [f"{name}@{lv}" for lv in levels]
            x_tr = np.concatenate([feats[k][tr] for k in keys])
            x_va = np.concatenate([feats[k][va] for k in keys])
            y_tr, y_va = np.tile(labels[tr], len(keys)), np.tile(labels[va], len(keys))
            svm = fit_svm(x_tr, y_tr, x_va, y_va)
            scores = []
            for lv in levels:
                x_te = feats[f"{name}@{lv}"][te]
                scores.append(mean_per_class_accuracy(labels[te], svm.predict(x_te)))
                result[name]["levels"][str(lv)].append(scores[-1])
            result[name]["average"].append(float(np.mean(scores)))
    return result


def markdown(results: dict[str, dict[str, Any]], distortions: list[str], note: str) -> str:
    """A table of mean ± std over splits; "-" where a model was not run on a distortion."""
    head = "| model | clean | " + " | ".join(f"{d} (avg over levels)" for d in distortions) + " |"
    lines = [note, "", head, "|---" * (2 + len(distortions)) + "|"]
    for label, r in results.items():
        cells = [f"{np.mean(r['clean']):.3f} ± {np.std(r['clean']):.3f}"]
        cells += [f"{np.mean(r[d]['average']):.3f} ± {np.std(r[d]['average']):.3f}"
                  if d in r else "-" for d in distortions]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        label, sep, spec = value.partition("=")
        if not sep or not label or not spec:
            raise CLIError(f"{flag} must be LABEL=VALUE. Received: {value}")
        pairs[label] = spec
    return pairs


def check_cache(cache: Path, selection: dict[str, Any], models: dict[str, str]) -> None:
    """Refuses a feature cache made from other images or another model under a label.

    Records `selection` (what picks the images) and each label's model spec in
    `cache/settings.json`, adding labels that are new.

    Raises:
        CLIError: if the recorded selection or a recorded label's model differs.
    """
    path = cache / "settings.json"
    recorded = json.loads(path.read_text()) if path.is_file() else {"selection": selection,
                                                                    "models": {}}
    if recorded["selection"] != selection:
        raise CLIError(f"{cache} holds features of other images ({recorded['selection']}); "
                       f"use another --out. Received: {selection}")
    for label, spec in models.items():
        if recorded["models"].setdefault(label, spec) != spec:
            raise CLIError(f"{cache} holds features of {recorded['models'][label]!r} under "
                           f"the label {label!r}; use another label or --out. Received: {spec}")
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(recorded, indent=2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="LABEL=SPEC, SPEC a .keras file or a keras.applications name; repeat")
    parser.add_argument("--weights", action="append", default=[],
                        help="LABEL=PATH weights of a keras.applications model")
    parser.add_argument("--preprocess", default=None,
                        help="preprocessing of the .keras models (e.g. mobilenet_v2; default none)")
    parser.add_argument("--layer", default=None,
                        help="feature layer (default: the input of the last Dense layer)")
    parser.add_argument("--data", required=True, help="image folder or CIFAR-style .npz")
    parser.add_argument("--split", default="test", choices=("train", "test"),
                        help="which arrays of an .npz (default test)")
    parser.add_argument("--classes", type=int, default=10, help="classes used (default 10)")
    parser.add_argument("--per-class", type=int, default=60, help="images per class (default 60)")
    parser.add_argument("--train-per-class", type=int, default=25)
    parser.add_argument("--val-per-class", type=int, default=5)
    parser.add_argument("--splits", type=int, default=5, help="random splits (default 5)")
    parser.add_argument("--distortions", nargs="+", default=["gaussian_blur", "awgn"])
    parser.add_argument("--distortions-of", action="append", default=[],
                        help="LABEL=NAME[,NAME] test that model on these distortions only; repeat")
    parser.add_argument("--preset", default="deepcorrect_imagenet", help="level preset")
    parser.add_argument("--quick", action="store_true",
                        help="3 classes, 10 images each, 1 split, the first level only")
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.classes, args.per_class, args.splits = 3, 10, 1
        args.train_per_class, args.val_per_class = 5, 2
    for flag in ("classes", "splits", "train_per_class", "val_per_class"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1. "
                         f"Received: {getattr(args, flag)}")
    if args.per_class <= args.train_per_class + args.val_per_class:
        parser.error("--per-class must exceed --train-per-class + --val-per-class "
                     f"({args.train_per_class + args.val_per_class}). Received: {args.per_class}")
    return args


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    refuse_existing(out / "transfer_svm.json", args.overwrite)
    for name in args.distortions:
        distort.registry.check_name(name)
    distortions = {name: list(presets.levels(args.preset, name)) for name in args.distortions}
    if args.quick:
        distortions = {name: levels[:1] for name, levels in distortions.items()}
    models = _pairs(args.model, "--model")
    weights = _pairs(args.weights, "--weights")
    only = {label: names.split(",") for label, names in
            _pairs(args.distortions_of, "--distortions-of").items()}
    for flag, given in (("--weights", weights), ("--distortions-of", only)):
        unknown = set(given) - set(models)
        if unknown:
            raise CLIError(f"{flag} names no --model label: {', '.join(sorted(unknown))}")
    for label, names in only.items():
        if not set(names) <= set(distortions):
            raise CLIError(f"--distortions-of {label} must name distortions of --distortions "
                           f"({', '.join(distortions)}). Received: {','.join(names)}")
    results, cache = {}, out / "features"
    selection = {k: getattr(args, k) for k in ("data", "split", "classes", "per_class", "seed",
                                               "layer")}
    check_cache(cache, selection, {
        label: f"{spec} weights={weights.get(label)} preprocess={args.preprocess}"
        for label, spec in models.items()})
    images = labels = None
    for label, spec in models.items():
        _, (model, preprocess), size = load_model_spec(spec, weights.get(label))
        if preprocess is None and args.preprocess:
            preprocess = preprocessor(args.preprocess)
        if images is None:
            images, labels = load_images(args.data, args.split, size=size)
            if labels is None:
                raise CLIError(f"--data has no labels: {args.data}")
            keep = class_subset(labels, args.classes, args.per_class, args.seed)
            images, labels = images[keep], labels[keep]
        features = feature_model(model, args.layer)
        sized = resize(images, features.input_shape[1:3])
        feats = {"clean": cached_features(cache, f"{label}_clean",
                                          lambda: extract(features, preprocess, sized))}
        own = {name: levels for name, levels in distortions.items()
               if name in only.get(label, distortions)}
        for name, levels in own.items():
            for lv in levels:
                def compute(name=name, lv=lv):
                    bad = np.asarray(distort.apply(sized, name, lv, seed=args.seed))
                    return extract(features, preprocess, bad)
                feats[f"{name}@{lv}"] = cached_features(cache, f"{label}_{name}_{lv:g}", compute)
        results[label] = evaluate_model(feats, labels, own, args.splits,
                                        args.train_per_class, args.val_per_class, args.seed)
        print(f"{label}: clean {np.mean(results[label]['clean']):.3f}")
    note = (f"Mean per-class accuracy of linear SVMs, mean ± std over {args.splits} splits; "
            f"{args.classes} classes x {args.per_class} images of {Path(args.data).name} "
            f"({args.train_per_class} train / {args.val_per_class} val / "
            f"{args.per_class - args.train_per_class - args.val_per_class} test per class); "
            f"levels {distortions}.")
    table = markdown(results, list(distortions), note)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "transfer_svm.md", table)
    atomic_write_text(out / "transfer_svm.json", json.dumps(
        {"settings": {k: v for k, v in vars(args).items()}, "levels": distortions,
         "results": results}, indent=2))
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

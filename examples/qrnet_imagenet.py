"""QRNet in front of MobileNetV2 on the 1,000 ImageNet sample photos.

Takagi et al. (IEEE Access 2019) train a restorer so that a frozen classifier classifies
its output correctly. This example does it for a pretrained MobileNetV2 on the photos in
`../shared/data/imagenet-samples`, at 224x224, on a CPU. In resumable stages cached in
`--out` (run the same command again after an interruption; finished stages are read back,
an interrupted training continues from its last finished epoch):

1. reads the photos (224x224 center crops) and splits them by `--seed` into 700 training
   and 300 test photos with `studies.imagenet.split_indices`, the split of the
   DeepCorrect MobileNetV2 results (`split.json`);
2. trains two restorers of the same architecture (a small QRNet: one 3x3 conv per stage)
   on the training photos by Algorithm 1 (batches of clean photos and distorted copies,
   distortion and level drawn per batch from the `qrnet` levels): RecNet (L1 loss only)
   and QRNet (L1 + 0.01 x cross-entropy of the frozen MobileNetV2), with the same photos,
   seed, batches and number of steps;
3. evaluates MobileNetV2 alone, RecNet + MobileNetV2 and QRNet + MobileNetV2 on the test
   photos, clean and under Gaussian noise and Gaussian blur at the `qrnet` levels (noise
   sigma 20..100, blur sigma 2..10 with a 4 sigma - 1 window): top-1, top-5, and PSNR and
   SSIM of the images the classifier sees; one cached file per condition;
4. times MobileNetV2 with and without a restorer in front (ms per image);
5. writes `rows.json`, `results.csv`, `report.md`, a figure of top-1 against level and a
   grid of distorted and restored test photos (Fig. 8 of the paper).

Usage (from the repository root):

    .venv/bin/python examples/qrnet_imagenet.py --figures docs/figures  # ~30 min, 2 CPU cores
    .venv/bin/python examples/qrnet_imagenet.py --quick --out out/qrnet_imagenet_quick
    .venv/bin/python examples/qrnet_imagenet.py --model model.keras --data photos/

`--model` takes a `keras.applications` name (with `--weights`) or a `.keras` file that
takes 0..255 images; `--data` a folder with `labels.csv` or class subfolders.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from robustkit.cli_common import CLIError, fail_cleanly
from robustkit.io import atomic_path, atomic_write_text
from robustkit.seeds import seed_argument
from studies import imagenet, imagenet_report

REPO_ROOT = Path(__file__).resolve().parents[1]
LEVEL_PRESET = "qrnet"
MODES = ("recnet", "qrnet")

# Plain configuration tables. Training draws from all `qrnet` levels of both distortions;
# evaluation uses `eval_levels`. Sizing of the default run, measured on 2 CPU cores shared
# with two other jobs: a training step of 16 images at 224x224 takes 1.9 s for QRNet
# (backpropagation through MobileNetV2) and 1.0 s for RecNet, so 5 epochs of 88 steps take
# about 14 + 7 minutes; MobileNetV2 classifies 25 and the restorer restores 22 photos per
# second, so 7 conditions of 300 photos take about 8 minutes. About 30 minutes in all.
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {
        "photos": None,               # all photos in --data
        "test_fraction": 0.3,         # 1,000 photos -> 700 train / 300 test (DeepCorrect's split)
        "restorer": {"base_width": 8, "depth": 4, "small": True, "dropout": 0.2},
        "lambda": 0.01,               # the paper's weight of the cross-entropy
        "batch_size": 16,             # 8 clean photos + their 8 distorted copies
        "learning_rate": 1e-3,
        "epochs": 5,                  # 88 steps each: every training photo once per epoch
        "pretrain_epochs": 0,
        "patience": 5,
        # The lowest, middle and highest `qrnet` level of each distortion.
        "eval_levels": {"awgn": (20.0, 60.0, 100.0), "gaussian_blur": (2.0, 6.0, 10.0)},
        "eval_batch": 50,
        "timing_photos": 32,
    },
    "quick": {
        "photos": 16,
        "test_fraction": 0.3,
        "restorer": {"base_width": 4, "depth": 2, "small": True, "dropout": 0.2},
        "lambda": 0.01,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "epochs": 1,
        "pretrain_epochs": 0,
        "patience": 5,
        "eval_levels": {"awgn": (20.0, 60.0), "gaussian_blur": (2.0,)},
        "eval_batch": 8,
        "timing_photos": 4,
    },
}

CLASSIFIER_NAME = "classifier"


# --------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------


def train_stage(mode: str, classifier, preprocess, images, labels, size: int, cfg, seed: int,
                out: Path, verbose: int):
    """Trains (or reads back) one restorer; returns `(restorer, log)`.

    `mode` is `"recnet"` (L1 only: the classifier is left out of the loss and of the
    graph) or `"qrnet"` (L1 + lambda x cross-entropy of the frozen classifier). Both start
    from the same initial weights (`build_qrnet(seed=seed)`) and see the same batches.
    """
    import keras

    import qrnet
    from distort.pipeline import epoch_steps

    path, log_path = out / f"{mode}.keras", out / f"{mode}.train.json"
    if path.is_file() and log_path.is_file():
        return keras.models.load_model(path, safe_mode=True), json.loads(log_path.read_text())
    if verbose:
        print(f"training {mode} ...", flush=True)
    keras.utils.set_random_seed(seed)
    restorer = qrnet.build_qrnet(input_shape=(size, size, 3), name=mode, seed=seed,
                                 **cfg["restorer"])
    if mode == "qrnet":
        spec = qrnet.ClassifierSpec(classifier, preprocessing=preprocess, name=CLASSIFIER_NAME)
        trainer = qrnet.QualityRecoveryTrainer(restorer, spec, lambdas=cfg["lambda"], mode=mode)
    else:
        trainer = qrnet.QualityRecoveryTrainer(restorer, mode="recnet")
    levels, apply_fn = qrnet.preset_distortions(LEVEL_PRESET)
    tick = time.perf_counter()
    history = qrnet.train(
        trainer, images, labels, levels, epochs=cfg["epochs"],
        pretrain_epochs=cfg["pretrain_epochs"], batch_size=cfg["batch_size"],
        learning_rate=cfg["learning_rate"], patience=cfg["patience"],
        checkpoint_dir=str(out / f"{mode}_checkpoints"), seed=seed,
        verbose=2 if verbose else 0, apply_fn=apply_fn,
    )
    log = {"seconds_this_run": time.perf_counter() - tick, "images": int(len(images)),
           "epochs": len(next(iter(history.values()), [])),
           "steps_per_epoch": epoch_steps(len(images), cfg["batch_size"] // 2),
           "history": history}
    with atomic_path(path) as tmp:
        restorer.save(tmp)
    atomic_write_text(log_path, json.dumps(log, indent=1))
    return restorer, log


def conditions(cfg) -> list[tuple[str, float]]:
    """`(distortion, level)` of every evaluated condition, `("clean", 0.0)` first."""
    return [("clean", 0.0)] + [(d, float(v)) for d, levels in cfg["eval_levels"].items()
                               for v in levels]


def condition_name(distortion: str, level: float) -> str:
    return "clean" if distortion == "clean" else f"{distortion}_{level:g}"


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe row: infinite PSNR (identical images) becomes None."""
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in row.items()}


def evaluate_stage(classifier, preprocess, restorers, images, labels, cfg, seed: int, out: Path,
                   verbose: int) -> list[dict[str, Any]]:
    """Rows of `qrnet.evaluate_restoration` per condition, cached in `out/eval/<condition>.json`.

    Every condition distorts the test photos with the seed `[seed + 1, batch]` per batch of
    `eval_batch` photos, as one `evaluate_restoration` call over all conditions would.
    """
    from qrnet.evaluate import evaluate_restoration, preset_distortions

    _, apply_fn = preset_distortions(LEVEL_PRESET)
    folder = out / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for distortion, level in conditions(cfg):
        path = folder / f"{condition_name(distortion, level)}.json"
        if not path.is_file():
            if verbose:
                print(f"evaluating {condition_name(distortion, level)} ...", flush=True)
            clean = distortion == "clean"
            part = evaluate_restoration(
                classifier, images, labels, {} if clean else {distortion: [level]}, restorers,
                preprocessing=preprocess, include_clean=clean, seed=seed + 1,
                batch_size=cfg["eval_batch"], apply_fn=apply_fn,
            )
            atomic_write_text(path, json.dumps([_finite(r) for r in part], indent=1))
        part = json.loads(path.read_text())
        rows += [{**r, "psnr": math.inf if r["psnr"] is None else r["psnr"]} for r in part]
    return rows


def timing_stage(classifier, preprocess, restorers, images, out: Path) -> dict[str, float]:
    """Milliseconds per image of the classifier alone and behind each restorer (cached)."""
    import tensorflow as tf

    from qrnet.evaluate import seconds_per_image

    path = out / "timing.json"
    if path.is_file():
        return json.loads(path.read_text())
    prepare = preprocess or (lambda x: x)
    forwards = {CLASSIFIER_NAME: tf.function(lambda b: classifier(prepare(b), training=False))}
    for name, restorer in restorers.items():
        forwards[name] = tf.function(
            lambda b, r=restorer: classifier(prepare(r(b, training=False)), training=False))
    x = np.asarray(images, np.float32)
    timing = {name: 1000 * seconds_per_image(fn, x, batch_size=16, repeats=2)
              for name, fn in forwards.items()}
    timing["images"] = int(len(x))
    atomic_write_text(path, json.dumps(timing, indent=1))
    return timing


def accuracy_figure(rows, cfg, path: Path) -> None:
    """Top-1 against level per distortion: the classifier alone, + RecNet, + QRNet."""
    lines = [(CLASSIFIER_NAME, CLASSIFIER_NAME, "k-o"), ("recnet", "recnet", "C1-s"),
             ("qrnet", "qrnet", "C0-^")]
    imagenet_report.accuracy_figure(rows, list(cfg["eval_levels"]), path,
                                    series=lambda distortion: lines, key="method",
                                    value="accuracy")


def samples_figure(restorers, images, cfg, seed: int, path: Path, photos: int = 2) -> None:
    """Fig. 8 style grid: per photo and distortion (middle level), distorted and restored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import qrnet
    from qrnet.evaluate import distort_images

    _, apply_fn = qrnet.preset_distortions(LEVEL_PRESET)
    clean = np.asarray(images[:photos], np.float32)
    cases = [(d, levels[len(levels) // 2]) for d, levels in cfg["eval_levels"].items()]
    columns = 1 + len(cases) * (1 + len(restorers))
    fig, axes = plt.subplots(photos, columns, figsize=(1.8 * columns, 1.9 * photos),
                             squeeze=False)
    for i in range(photos):
        panels = [("clean", clean[i])]
        for distortion, level in cases:
            x = distort_images(clean, distortion, level, seed + 1, apply_fn=apply_fn)
            panels.append((f"{distortion} {level:g}", x[i]))
            for name, restorer in restorers.items():
                panels.append((f"{name}", qrnet.restore(restorer, x[i])))
        for ax, (title, image) in zip(axes[i], panels):
            ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def report(args, cfg, split, rows, logs, timing) -> str:
    from qrnet.evaluate import average_over_levels, format_table

    command = "examples/qrnet_imagenet.py" + (" --quick" if args.quick else "") + (
        f" --figures {args.figures}" if args.figures else "")
    lines = [
        "# QRNet in front of a pretrained classifier (ImageNet photos)", "",
        f"Command: `.venv/bin/python {command} --seed {args.seed}`", "",
        f"Model: {args.model}; photos: {args.data}; split seed {args.seed}: "
        f"{len(split[0])} train, {len(split[1])} test.", "",
        "Configuration: `" + json.dumps(cfg) + "`", "",
        "Levels (`qrnet` preset): " + "; ".join(
            f"{d} {list(v)}" for d, v in cfg["eval_levels"].items())
        + " (noise sigma on 0..255, blur window 4 sigma - 1).", "",
    ]
    titles = {"accuracy": "Top-1", "top5": "Top-5", "psnr": "PSNR (dB) of what the classifier "
              "sees", "ssim": "SSIM of what the classifier sees"}
    for key, title in titles.items():
        lines += [f"## {title}", "", format_table(rows, key, 2 if key == "psnr" else 3), ""]
    for key in ("accuracy", "top5"):
        means = average_over_levels(rows, key)
        lines.append(f"Mean {titles[key].lower()} over levels: " + "; ".join(
            f"{d}: " + ", ".join(f"{m} {v:.3f}" for m, v in methods.items())
            for d, methods in means.items() if d != "clean"))
    lines += ["", "## Training", ""]
    for mode, log in logs.items():
        last = {k: round(v[-1], 4) for k, v in log["history"].items()}
        lines.append(f"- {mode}: {log['images']} photos, {log['epochs']} epochs of "
                     f"{log['steps_per_epoch']} steps; last epoch {last}; "
                     f"{log['seconds_this_run']:.0f} s")
    lines += ["", f"## Inference ({timing['images']} photos, batch 16)", ""]
    lines += [f"- {name}: {ms:.1f} ms per image" for name, ms in timing.items() if name != "images"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=imagenet.DEFAULT_DATA,
                        help="photo folder (labels.csv or class subfolders)")
    parser.add_argument("--model", default="MobileNetV2",
                        help="a keras.applications name or a .keras file taking 0..255 images")
    parser.add_argument("--weights", default=imagenet.DEFAULT_WEIGHTS,
                        help="weights file of the application model")
    parser.add_argument("--out", default=str(REPO_ROOT / "out" / "qrnet_imagenet"),
                        help="output folder; finished stages there are reused")
    parser.add_argument("--figures", help="folder for the two figures (default: --out)")
    parser.add_argument("--quick", action="store_true",
                        help="16 photos, a tiny restorer and one epoch (for tests)")
    parser.add_argument("--seed", type=seed_argument, default=0,
                        help="split, initialisation, batch and distortion seed")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1))
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = CONFIGS["quick" if args.quick else "default"]
    if not Path(args.data).is_dir():
        raise CLIError(f"--data: no such folder: {args.data}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = None if Path(args.model).suffix == ".keras" else args.weights
    classifier, preprocess, size = imagenet.load_model(args.model, weights)

    images, labels, files = imagenet.load_photos(args.data, size, cfg["photos"], out)
    train, test = imagenet.split_indices(len(images), cfg["test_fraction"], args.seed)
    imagenet.write_split(out, files, train, test, args.seed, cfg["test_fraction"])

    restorers, logs = {}, {}
    for mode in MODES:
        restorers[mode], logs[mode] = train_stage(mode, classifier, preprocess, images[train],
                                                  labels[train], size, cfg, args.seed, out,
                                                  args.verbose)
    tick = time.perf_counter()
    rows = evaluate_stage(classifier, preprocess, restorers, images[test], labels[test], cfg,
                          args.seed, out, args.verbose)
    timing = timing_stage(classifier, preprocess, restorers, images[test][: cfg["timing_photos"]],
                          out)
    if args.verbose:
        print(f"evaluation and timing: {time.perf_counter() - tick:.0f} s this run", flush=True)

    atomic_write_text(out / "rows.json", json.dumps([_finite(r) for r in rows], indent=1))
    imagenet_report.write_csv(out / "results.csv", rows)
    text = report(args, cfg, (train, test), rows, logs, timing)
    atomic_write_text(out / "report.md", text)
    figures = Path(args.figures) if args.figures else out
    figures.mkdir(parents=True, exist_ok=True)
    accuracy_figure(rows, cfg, figures / "qrnet_imagenet_accuracy.png")
    samples_figure(restorers, images[test], cfg, args.seed, figures / "qrnet_imagenet_samples.png")
    if args.verbose:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

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
class subfolders. The stages and their caches are in `studies.imagenet`; the
tables, report and figure in `studies.imagenet_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from robustkit.cli_common import CLIError, fail_cleanly
from robustkit.io import atomic_write_text
from robustkit.seeds import seed_argument
from studies import imagenet, imagenet_report

REPO_ROOT = Path(__file__).resolve().parents[1]

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
        # Keras's default (0.99) needs a few hundred steps before the units' moving
        # statistics forget their start; this study trains for under a hundred.
        "unit_bn_momentum": 0.9,
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=imagenet.DEFAULT_DATA,
                        help="photo folder (labels.csv or class subfolders)")
    parser.add_argument("--model", default="MobileNetV2",
                        help="a keras.applications name or a .keras file")
    parser.add_argument("--weights", default=imagenet.DEFAULT_WEIGHTS,
                        help="weights file of the application model")
    parser.add_argument("--out", default=str(REPO_ROOT / "out" / "imagenet_deepcorrect"),
                        help="output folder; finished stages there are reused")
    parser.add_argument("--figures", help="folder for the figure (default: --out)")
    parser.add_argument("--quick", action="store_true",
                        help="a handful of photos and a tiny budget (for tests)")
    parser.add_argument("--distortions", nargs="+", default=list(imagenet.DISTORTIONS),
                        choices=imagenet.DISTORTIONS,
                        help="the distortions to rank, train and test for (default: both)")
    parser.add_argument("--seed", type=seed_argument, default=0,
                        help="split, distortion and training seed")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1))
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = dict(CONFIGS["quick" if args.quick else "default"])
    cfg["distortions"] = [d for d in imagenet.DISTORTIONS if d in args.distortions]
    if not Path(args.data).is_dir():
        raise CLIError(f"--data: no such folder: {args.data}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(args.figures) if args.figures else out
    weights = None if Path(args.model).suffix == ".keras" else args.weights
    pretrained, preprocess, size = imagenet.load_model(args.model, weights)

    images, labels, files = imagenet.load_photos(args.data, size, cfg["photos"], out)
    train, test = imagenet.split_indices(len(images), cfg["test_fraction"], args.seed)
    imagenet.write_split(out, files, train, test, args.seed, cfg["test_fraction"])
    layers = imagenet.first_conv_names(pretrained, cfg["first_convs"])
    rank_ids = train[: cfg["rank_photos"]]

    rankings = imagenet.rank_stage(pretrained, preprocess, images[rank_ids], labels[rank_ids],
                                   layers, cfg, args.seed, out, args.verbose)
    rank_rows = imagenet.ranking_rows(rankings, layers, cfg["distortions"])
    models, logs = imagenet.train_stage(pretrained, preprocess, images[train], rankings, layers,
                                        cfg, args.seed, out, args.verbose)
    models["baseline"] = pretrained
    imagenet.evaluate_stage(models, preprocess, images[test], labels[test], cfg, args.seed, out,
                            args.verbose)
    acc = imagenet.accuracy_rows(cfg, out)
    costs = imagenet.cost_stage(models, preprocess, images[test], cfg, out)
    bn = imagenet.bn_check(pretrained, preprocess, images[train], labels[train], layers, cfg)

    summary = {"config": cfg, "layers": layers, "split": {"train": len(train), "test": len(test)},
               "ranking": rank_rows, "accuracy": acc, "costs": costs, "training": logs,
               "bn_check": bn}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1))
    imagenet_report.write_csv(out / "results.csv", acc)
    text = imagenet_report.report(args, cfg, (train, test), rank_rows, acc, costs, logs, bn)
    atomic_write_text(out / "report.md", text)
    imagenet_report.accuracy_figure(acc, cfg["distortions"],
                                    figures / "imagenet_deepcorrect_accuracy.png")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

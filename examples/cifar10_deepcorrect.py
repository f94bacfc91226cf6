"""DeepCorrect's CIFAR tables (Tables 3/4 and 7/8 of Borkar & Karam) on real CIFAR-10.

One table per distortion (Gaussian blur sigma 0.5..3, AWGN sigma 5..30: the
`deepcorrect_cifar` preset), a row per method, with top-1 accuracy per level and on
average, trainable parameters and training seconds:

- Baseline: a CNN trained here on clean images (or `--model`, any Keras classifier);
- Finetune-1, Finetune-3, Finetune-all;
- Deepcorr-1, Deepcorr-3, Deepcorr-all, Deepcorr-all-c (the last 3 conv/dense layers
  trained too) and the `lite` and `bottleneck` unit variants;
- QRNet and RecNet restorers in front of the frozen baseline;
- Classical: non-local means (noise) or Wiener deconvolution (blur), told the level.

Every repair method gets the same budget: the same training images, epochs and batch size.
It is `deepcorrect demo` with more rows (`studies.demo.run`): every stage is cached in
`--out`, so an interrupted run resumes where it stopped.

Usage (from the repository root):

    python examples/cifar10_deepcorrect.py --data ../shared/data/cifar10/cifar10.npz
    python examples/cifar10_deepcorrect.py --quick     # a few hundred images, a smoke run
    python examples/cifar10_deepcorrect.py --model my_cifar_cnn.keras --out out/mine
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "cifar10" / "cifar10.npz"

# The rows of Tables 3/4 (Finetune-k and Deepcorr-k), the unit variants of Table 7/8's
# comparison (lite, bottleneck) and the restoration baselines. `first` counts conv layers
# from the input; `k="all"` fine-tunes every layer; `train_head=3` is the paper's "c".
PAPER_METHODS = (
    {"name": "Baseline", "kind": "baseline"},
    {"name": "Finetune-1", "kind": "finetune", "k": 1},
    {"name": "Finetune-3", "kind": "finetune", "k": 3},
    {"name": "Finetune-all", "kind": "finetune", "k": "all"},
    # The paper's fine-tuning rate 0.01 is for standardised inputs; this network reads 0..1
    # pixels, and at 0.01 fine-tuning collapses here (docs/RESULTS.md). These rows use 0.001.
    {"name": "Finetune-1-lr0.001", "kind": "finetune", "k": 1, "learning_rate": 0.001},
    {"name": "Finetune-3-lr0.001", "kind": "finetune", "k": 3, "learning_rate": 0.001},
    {"name": "Finetune-all-lr0.001", "kind": "finetune", "k": "all", "learning_rate": 0.001},
    {"name": "Deepcorr-1", "kind": "deepcorrect", "first": 1, "beta": 0.5, "unit": "cw"},
    {"name": "Deepcorr-3", "kind": "deepcorrect", "first": 3, "beta": 0.5, "unit": "cw"},
    {"name": "Deepcorr-all", "kind": "deepcorrect", "beta": 0.5, "unit": "cw"},
    {"name": "Deepcorr-all-c", "kind": "deepcorrect", "beta": 0.5, "unit": "cw", "train_head": 3},
    {"name": "Deepcorr-all-lite", "kind": "deepcorrect", "beta": 0.5, "unit": "lite"},
    {"name": "Deepcorr-all-bottleneck", "kind": "deepcorrect", "beta": 0.5, "unit": "bottleneck"},
    {"name": "QRNet", "kind": "restorer", "mode": "qrnet"},
    {"name": "RecNet", "kind": "restorer", "mode": "recnet"},
    {"name": "Classical", "kind": "classical"},
)


def parse_args(argv=None):
    from robustkit.seeds import seed_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="a CIFAR-style .npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--model", default=None,
                        help="a .keras classifier of 0..255 images to repair instead of training "
                             "the baseline here")
    parser.add_argument("--out", default=str(ROOT / "out" / "cifar10_deepcorrect"),
                        help="output folder (table.md, report.md, figures, cached stages)")
    parser.add_argument("--quick", action="store_true", help="a few hundred images, one epoch")
    parser.add_argument("--unit-site", choices=("conv", "batch_norm"), default="batch_norm",
                        help="where the Deepcorr units sit: after each conv's batch norm (the "
                             "default; see docs/RESULTS.md) or on the conv output itself (the "
                             "paper's site, which a frozen Keras 3 batch norm amplifies)")
    parser.add_argument("--repair-images", type=int, default=None,
                        help="training images of every repair method (default 10000)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every repair method (default 3); the rate drops x0.1 "
                             "before the last epoch")
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="discard an earlier run in --out and start afresh")
    return parser.parse_args(argv)


def config_for(args) -> dict:
    """The demo's CIFAR-10 configuration with the paper's rows (and `--model`, the budget)."""
    from studies import demo
    from robustkit.cli_common import CLIError

    methods = [dict(m, site=args.unit_site) if m["kind"] == "deepcorrect" else m
               for m in PAPER_METHODS]
    overrides = {"methods": methods}
    repair = {}
    for flag, key in (("repair_images", "images"), ("epochs", "epochs")):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                raise CLIError(f"--{flag.replace('_', '-')} must be at least 1. Received: {value}")
            repair[key] = value
    if "epochs" in repair:
        repair["decay_every"] = max(1, repair["epochs"] - 1)
    if repair:
        overrides["repair"] = repair
    if args.model is not None:
        overrides["model"] = str(args.model)
    return demo.resolve_config("cifar10", quick=args.quick, data=args.data, seed=args.seed,
                               **overrides)


def main(argv=None) -> int:
    from studies import demo
    from robustkit.cli_common import fail_cleanly

    args = parse_args(argv)

    def run(args):
        demo.run(config_for(args), args.out, overwrite=args.overwrite,
                 verbose=1 if sys.stdout.isatty() else 2)

    return fail_cleanly(run, args)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

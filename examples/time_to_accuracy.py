"""Accuracy against training seconds: DeepCorrect units and Finetune-all, rates found by a sweep.

A thin script over `deepcorrect.rank`, `wrap`, `finetune`, `train` and
`deepcorrect.DistortedAccuracy`: the time-axis figure of docs/RESULTS.md ("Accuracy against
wall-clock"). For a trained CIFAR-10 classifier taking 0..255 pixels:

1. a learning-rate sweep: each method trains one epoch on the first `--sweep-images`
   training images at each of its rates, and the rate with the best mean top-1 (clean and
   every `deepcorrect_cifar` level, on the first `--test-images` test images) wins;
2. the time axis: each method trains `--epochs` epochs on `--train-images` images at its
   winning rate, measured every `--every` steps against the training seconds (evaluations
   left out of the clock), in the same process, one after the other.

It writes every run as JSON in `--out` (a rerun skips finished runs), `time_axis.png` and
`time_axis.md`: each method's best mean top-1 and the seconds it took to reach Finetune-all's
best.

Usage (from the repository root):

    .venv/bin/python examples/time_to_accuracy.py --model out/cifar10_converged/baseline.keras
    .venv/bin/python examples/time_to_accuracy.py --model ... --quick --out out/time_quick
    .venv/bin/python examples/time_to_accuracy.py --model ... --unit-layers conv2 conv3 \
        --out out/time_axis/gaussian_blur_conv23          # units only after the first layer
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "cifar10" / "cifar10.npz"

# The rates each method's sweep tries (SGD with Nesterov momentum, the training recipe's).
RATES = {"deepcorrect": (0.01, 0.03, 0.1, 0.3), "finetune-all": (0.0003, 0.001, 0.003, 0.01)}
FULL = {"train_images": 50000, "sweep_images": 10000, "test_images": 2000, "epochs": 3,
        "every": 50, "batch_size": 128, "rank_images": 500}
QUICK = {"train_images": 256, "sweep_images": 128, "test_images": 64, "epochs": 1, "every": 1,
         "batch_size": 64, "rank_images": 32}


def parse_args(argv=None):
    from robustkit.seeds import seed_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a trained CIFAR-10 .keras taking 0..255 pixels")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", default=str(ROOT / "out" / "time_axis"))
    p.add_argument("--distortion", default="gaussian_blur", help="gaussian_blur or awgn")
    p.add_argument("--quick", action="store_true", help="a few hundred images, one epoch")
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--unit-layers", nargs="+", default=None, metavar="LAYER",
                   help="the conv layers that get units (default: every conv layer); "
                        "e.g. conv2 conv3 leaves out conv1's full-resolution units")
    for key, value in FULL.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                       help=f"(default {value})")
    return p.parse_args(argv)


def repaired(method: str, model, ranking):
    """A fresh trainable copy: units on the ranked filters, or every layer fine-tuned."""
    import deepcorrect

    if method == "deepcorrect":
        return deepcorrect.wrap(model, ranking, beta=0.5)
    return deepcorrect.finetune(model, "all")


def train_run(path: Path, method: str, rate: float, model, ranking, train, test, levels,
              s: dict, epochs: int, every: int, seed: int) -> dict:
    """One training run with its accuracy curve, kept in `path` (skipped when it exists)."""
    import deepcorrect
    from robustkit.io import atomic_write_text

    if path.exists():
        return json.loads(path.read_text())
    print(f"training {method} at rate {rate:g} for {epochs} epoch(s)", flush=True)
    net = repaired(method, model, ranking)
    monitor = deepcorrect.DistortedAccuracy(*test, s["distortion"], levels, every=every,
                                            seed=seed)
    deepcorrect.train(net, *train, s["distortion"], levels, preset="cpu_quick", epochs=epochs,
                      batch_size=s["batch_size"], learning_rate=rate,
                      decay_every=max(2, epochs - 1), callbacks=[monitor], seed=seed, verbose=0)
    run = {"method": method, "learning_rate": rate, "epochs": epochs,
           "images": int(len(train[0])), "columns": monitor.columns, "records": monitor.records,
           "parameters": deepcorrect.trainable_parameters(net)}
    atomic_write_text(path, json.dumps(run, indent=1))
    return run


def plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustkit.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, run in curves.items():
        ax.plot([r["seconds"] for r in run["records"]], [r["mean"] for r in run["records"]],
                marker=".", label=f"{method} (rate {run['learning_rate']:g})")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("mean top-1 (clean and every level)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def report(sweep: dict, curves: dict, s: dict) -> str:
    import deepcorrect

    target = max(r["mean"] for r in curves["finetune-all"]["records"])
    lines = [f"Learning-rate sweep: one epoch on {s['sweep_images']} images, mean top-1 on "
             f"{s['test_images']} test images (clean and every {s['distortion']} level).", "",
             "| method | rate: mean top-1 after one epoch |", "|---|---|"]
    for method, runs in sweep.items():
        lines.append(f"| {method} | " + ", ".join(
            f"{rate:g}: {run['records'][-1]['mean']:.3f}" for rate, run in runs.items()) + " |")
    lines += ["", f"Time axis: {s['epochs']} epochs on {s['train_images']} images, batch "
              f"{s['batch_size']}; seconds of training (evaluations excluded) to reach "
              f"Finetune-all's best mean top-1 ({target:.3f}).", "",
              "| method | rate | trained parameters | best mean top-1 | final | seconds to "
              "Finetune-all's best | training seconds |", "|---|---|---|---|---|---|---|"]
    for method, run in curves.items():
        reach = deepcorrect.time_to_reach(run["records"], target)
        lines.append(f"| {method} | {run['learning_rate']:g} | {run['parameters']:,} | "
                     f"{max(r['mean'] for r in run['records']):.3f} | "
                     f"{run['records'][-1]['mean']:.3f} | "
                     f"{'never' if reach is None else f'{reach:.0f}'} | "
                     f"{run['records'][-1]['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def run(args) -> None:
    import keras

    import deepcorrect
    from distort import presets, registry
    from robustkit import data
    from robustkit.cli_common import require_positive
    from robustkit.io import atomic_write_text, make_dirs

    require_positive(args, *FULL)
    registry.check_name(args.distortion)
    s = dict(QUICK if args.quick else FULL, distortion=args.distortion)
    s.update({k: getattr(args, k) for k in FULL if getattr(args, k) is not None})
    levels = list(presets.levels("deepcorrect_cifar", args.distortion))
    (x_train, y_train), (x_test, y_test) = data.load_cifar10(args.data)
    model = keras.models.load_model(args.model, safe_mode=True)
    out = make_dirs(args.out)
    train = (x_train[: s["train_images"]], y_train[: s["train_images"]])
    test = (x_test[: s["test_images"]], y_test[: s["test_images"]])
    n = s["rank_images"]
    ranking = deepcorrect.rank(model, train[0][:n], train[1][:n], args.distortion, levels,
                               layers=args.unit_layers, method="approx", seed=args.seed,
                               progress=False, checkpoint=out / "ranking.json")
    sweep_train = (train[0][: s["sweep_images"]], train[1][: s["sweep_images"]])
    make_dirs(out / "sweep")
    sweep, best = {}, {}
    for method, rates in RATES.items():
        sweep[method] = {}
        for rate in rates:
            sweep[method][rate] = train_run(
                out / "sweep" / f"{method}_{rate:g}.json", method, rate, model, ranking,
                sweep_train, test, levels, s, 1, 10 ** 9, args.seed)
        best[method] = max(rates, key=lambda r: sweep[method][r]["records"][-1]["mean"])
    curves = {}
    for method, rate in best.items():
        curves[method] = train_run(out / f"curve_{method}.json", method, rate, model, ranking,
                                   train, test, levels, s, s["epochs"], s["every"], args.seed)
    plot(curves, out / "time_axis.png", f"{args.distortion}: mean top-1 against training time")
    text = report(sweep, curves, s)
    atomic_write_text(out / "time_axis.md", text)
    print(text)


def main(argv=None) -> int:
    from robustkit.cli_common import fail_cleanly

    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

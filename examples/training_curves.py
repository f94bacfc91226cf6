"""Test accuracy against training iterations, DeepCorrect vs fine-tuning (DeepCorrect Fig. 12).

Deepcorr-all (correction units on the top 50% of every conv layer's filters)
with the `cw`, `lite`, `bottleneck` and `no_bn` units, and Finetune-all (every
layer trained), trained with the same budget (the demo's repair recipe:
images, epochs, batch size, SGD with the step schedule; units at learning
rate 0.1, fine-tuning at 0.01). Every `--eval-every` iterations the model is
scored on `--curve-images` test images, clean and at each DeepCorrect CIFAR
level; the curve is the average over the 7 columns, as in the paper's tables.
Training time is measured without the evaluations, so the curves are also
drawn against wall-clock seconds.

Outputs in `--out`: `curves.{csv,json,md}` (every point), `final.{csv,json,md}`
(the last point of every model), `cifar10_training_curves.png`, `report.md`. Each
model's points are kept in `curves/` as they are measured; an interrupted run
resumes after the last finished epoch (`deepcorrect.train` checkpoints) and
drops the points measured after it.

Usage:

    .venv/bin/python examples/training_curves.py --model out/cifar10_baseline/models/baseline.keras
    .venv/bin/python examples/training_curves.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

from studies import analysis as an  # noqa: E402
from deepcorrect import trainable_parameters  # noqa: E402
from deepcorrect.stages import slug  # noqa: E402
from robustkit.cli_common import fail_cleanly  # noqa: E402

UNITS = ("cw", "lite", "bottleneck", "no_bn")
BETA = 0.5
FULL = {"train_images": 5000, "epochs": 2, "batch_size": 64, "test_images": 500,
        "rank_images": 500, "eval_every": 20}
QUICK = {"train_images": 128, "epochs": 1, "batch_size": 32, "test_images": 100,
         "rank_images": 64, "eval_every": 2}


def methods(units=UNITS) -> list[dict]:
    """The compared models, as demo method dicts."""
    return [{"name": f"Deepcorr-all-{u}", "kind": "deepcorrect", "beta": BETA, "unit": u}
            for u in units] + [{"name": "Finetune-all", "kind": "finetune", "k": "all"}]


class CurveRecorder(keras.callbacks.Callback):
    """Scores the model every `every` iterations; the points are saved atomically.

    Args:
        score: `fn() -> [clean, level 1, ...]` accuracies of the model being trained.
        every: iterations between points (the last iteration of an epoch too).
        steps: iterations per epoch.
        path: JSON file holding the points (read back when training resumes).
    """

    def __init__(self, score, every: int, steps: int, path: Path):
        super().__init__()
        self.score, self.every, self.steps, self.path = score, int(every), int(steps), Path(path)
        self.points: list[dict] = (json.loads(self.path.read_text())["points"]
                                   if self.path.is_file() else [])
        self._epoch, self._clock, self._tick, self._started = 0, 0.0, 0.0, False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:  # first epoch of this call: drop points past the resume point
            self.points = [p for p in self.points if p["iteration"] <= epoch * self.steps]
            self._clock = self.points[-1]["seconds"] if self.points else 0.0
            if not self.points:
                self._record(0)
            self._started = True
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._tick = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._clock += time.perf_counter() - self._tick
        iteration = self._epoch * self.steps + batch + 1
        if iteration % self.every == 0 or batch + 1 == self.steps:
            self._record(iteration)

    def _record(self, iteration: int) -> None:
        if self.points and self.points[-1]["iteration"] == iteration:
            return
        acc = [float(v) for v in self.score()]
        self.points.append({"iteration": iteration, "seconds": self._clock,
                            "accuracy": acc, "avg": float(np.mean(acc))})
        an.atomic_write_text(self.path, json.dumps({"points": self.points}))


def train_with_curve(analysis: an.Analysis, m: dict, ranking, distortion: str) -> dict:
    """Trains one method with the demo's recipe, recording its curve; cached as a stage."""
    import deepcorrect
    from studies import demo
    from distort import pipeline

    cfg = analysis.config["repair"]
    x, y = analysis.train[0][:cfg["images"]], analysis.train[1][:cfg["images"]]
    key = f"{slug(m['name'])}-{distortion}"

    def compute() -> dict:
        keras.utils.set_random_seed(analysis.seed)
        model = demo.build_method(analysis.with_unit_settings(m), analysis.model, ranking,
                                  analysis.config)
        lr = demo.learning_rate(m, cfg)
        steps = pipeline.epoch_steps(len(x), cfg["batch_size"])
        recorder = CurveRecorder(lambda: analysis.accuracy(model, distortion),
                                 analysis.settings["eval_every"], steps,
                                 analysis.out / "curves" / f"{key}.json")
        deepcorrect.train(model, x, y, distortion, an.levels(distortion), preset="cpu_quick",
                          epochs=cfg["epochs"], batch_size=cfg["batch_size"], learning_rate=lr,
                          checkpoint_dir=analysis.out / "checkpoints" / key, seed=analysis.seed,
                          verbose=analysis.verbose, callbacks=[
                              keras.callbacks.LearningRateScheduler(
                                  deepcorrect.training.step_schedule(lr, 0.1, cfg["decay_every"])),
                              recorder])
        return {"points": recorder.points, "trainable": trainable_parameters(model),
                "steps_per_epoch": steps, "images": len(x), "epochs": cfg["epochs"]}

    return analysis.cached(f"curve/{key}", compute)


def plot(curves: dict, distortions: list[str], path: Path, images: int) -> None:
    plt = an.pyplot()
    fig, axes = plt.subplots(2, len(distortions), figsize=(5.4 * len(distortions), 7.0),
                             squeeze=False)
    for col, d in enumerate(distortions):
        for name, rec in curves[d].items():
            pts = rec["points"]
            style = "--" if name.startswith("Finetune") else "-"
            for row, xkey in enumerate(("iteration", "seconds")):
                axes[row][col].plot([p[xkey] for p in pts], [p["avg"] for p in pts], style,
                                    marker=".", label=name)
        for row, xlabel in enumerate(("training iterations",
                                      "training seconds (no evaluation; log scale above 1 s)")):
            ax = axes[row][col]
            if row == 1:  # units of very different cost: a log axis keeps all of them visible
                ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("top-1, average of clean and 6 levels")
            ax.set_title(d)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"Accuracy during training (DeepCorrect Fig. 12), {images} test images")
    fig.tight_layout()
    an.save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    an.add_arguments(parser, FULL, QUICK, "out/training_curves")
    parser.add_argument("--eval-every", type=int, default=None,
                        help=f"iterations between points (default {FULL['eval_every']}, "
                             f"{QUICK['eval_every']} with --quick)")
    parser.add_argument("--units", nargs="+", default=list(UNITS), choices=UNITS,
                        help="correction unit presets of the Deepcorr-all models (default all)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    settings = an.resolve(args, FULL, QUICK)
    if settings["eval_every"] < 1:
        raise an.CLIError(f"--eval-every must be at least 1. Received: {settings['eval_every']}")
    settings["units"] = list(dict.fromkeys(args.units))
    # The curves are measured on --test-images test images.
    analysis = an.Analysis("training_curves", args, settings)
    curves, rows, final = {}, [], []
    for d in analysis.distortions:
        ranking = analysis.ranking(d)
        curves[d] = {}
        for m in methods(settings["units"]):
            print(f"{d}: {m['name']}", flush=True)
            curves[d][m["name"]] = rec = train_with_curve(analysis, m, ranking, d)
            for p in rec["points"]:
                rows.append({"distortion": d, "model": m["name"], "iteration": p["iteration"],
                             "seconds": round(p["seconds"], 1),
                             **an.accuracy_cells(d, p["accuracy"])})
            last = rec["points"][-1]
            best = max(rec["points"], key=lambda p: p["avg"])
            final.append({"distortion": d, "model": m["name"], "trainable": rec["trainable"],
                          "iterations": last["iteration"], "seconds": round(last["seconds"]),
                          **an.accuracy_cells(d, last["accuracy"]),
                          "best avg": best["avg"], "at iteration": best["iteration"]})
    out, images = analysis.out, len(analysis.test[0])
    meta = {"images": images, "settings": settings,
            "levels": {d: an.levels(d) for d in analysis.distortions}}
    an.write_table(out, "curves", rows, an.table_columns(
        ["distortion", "model", "iteration", "seconds"], analysis.distortions), meta)
    head = ["distortion", "model", "trainable", "iterations", "seconds"]
    an.write_table(out, "final", final, an.table_columns(head, analysis.distortions)
                   + ["best avg", "at iteration"], meta)
    plot(curves, analysis.distortions, analysis.figure("cifar10_training_curves.png"), images)
    parts = [f"# Accuracy during training on CIFAR-10\n\n{analysis.describe()} Every model: "
             f"{analysis.budget()}; a point every {settings['eval_every']} iterations.\n"]
    for d in analysis.distortions:
        parts.append(f"**{d}** (last point)\n\n" + an.markdown_table(
            [r for r in final if r["distortion"] == d],
            head[1:] + an.level_columns(d) + ["best avg", "at iteration"]))
    text = "\n".join(parts)
    an.write_report(out, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

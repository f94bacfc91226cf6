"""Ideal correction of ranked filters on CIFAR-10 (DeepCorrect Figs. 4 and 5).

How much accuracy comes back when some filters of one conv layer are perfectly
corrected, i.e. their outputs on the distorted image are replaced by their
outputs on the clean image? No training is involved
(`deepcorrect.ideal.ideal_accuracy`).

- Fig. 4 (beta sweep): the top `beta` of the filters of the first conv layer,
  ranked by Algorithm 1 (`deepcorrect.rank`), beta in {0.1, 0.25, 0.5, 0.75,
  0.9} (and 0 = the baseline, 1 = the whole layer). For reference the same
  counts are also drawn at random (`--trials` seeded sets, averaged) and taken
  from the bottom of the ranking (least susceptible).
- Fig. 5 (per layer): the top 50% of the filters of each conv layer in turn.

Filter counts are `round(beta * N)` (at least 1), as `deepcorrect.wrap` counts
them. The filters are ranked on held-out training images and the accuracies
are measured on test images; levels are the DeepCorrect CIFAR levels
(Gaussian blur sigma 0.5..3, AWGN sigma 5..30 on 0..255).

Outputs in `--out`: `beta_sweep.{csv,json,md}`, `per_layer.{csv,json,md}`,
`cifar10_ideal_beta.png`, `cifar10_ideal_layers.png`, `report.md`.

Usage:

    .venv/bin/python examples/ideal_correction.py --model out/cifar10_baseline/models/baseline.keras
    .venv/bin/python examples/ideal_correction.py --quick     # a few hundred images
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from studies import analysis as an  # noqa: E402
from robustkit.cli_common import fail_cleanly  # noqa: E402

BETAS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
LAYER_BETA = 0.5  # the paper's CIFAR setting for Fig. 5
SELECTIONS = ("ranked", "random", "least")
FULL = {"test_images": 2000, "rank_images": 500, "trials": 5}
QUICK = {"test_images": 300, "rank_images": 100, "trials": 2}


def filter_sets(order: np.ndarray, count: int, trials: int, seed: int) -> dict[str, list]:
    """The filters corrected for one count: top of the ranking, random sets, bottom."""
    if count == 0:
        return {"none": [np.array([], np.int64)]}
    if count == len(order):
        return {"all": [order]}
    return {"ranked": [order[:count]],
            "random": an.random_filter_sets(len(order), count, trials, seed),
            "least": [order[len(order) - count:]]}


def ideal_rows(analysis: an.Analysis, ranking, distortion: str, layer: str,
               counts: dict[float, int], trials: int) -> list[dict]:
    """Accuracy rows (one per beta and selection) for one layer under one distortion."""
    from deepcorrect.ideal import IdealCorrection

    scorer = IdealCorrection(analysis.model, layer)
    order = ranking.order(layer)
    plan = [(beta, sel, fs) for beta, count in counts.items()
            for sel, fs in filter_sets(order, count, trials, analysis.seed).items()]
    sets = [list(s) for _, _, fs in plan for s in fs]
    sets_x = analysis.test_sets(distortion)
    labels = analysis.test[1]
    # Clean images need no correction: their column is the clean accuracy.
    per_level = [np.full(len(sets), analysis.test_accuracy)] + [
        scorer.accuracy(sets_x[0], x, labels, sets, batch_size=512) for x in sets_x[1:]]
    acc = np.stack(per_level, axis=1)  # (sets, levels + 1)
    rows, i = [], 0
    for beta, sel, fs in plan:
        values = acc[i:i + len(fs)].mean(axis=0)
        i += len(fs)
        rows.append({"distortion": distortion, "layer": layer, "beta": beta,
                     "filters": counts[beta], "of": len(order), "selection": sel,
                     "sets": len(fs), **an.accuracy_cells(distortion, values)})
    return rows


def plot_beta(rows: list[dict], distortions: list[str], path: Path, images: int) -> None:
    plt = an.pyplot()
    fig, axes = plt.subplots(2, len(distortions), figsize=(5.2 * len(distortions), 7.2),
                             squeeze=False)
    for col, d in enumerate(distortions):
        x = [0.0] + an.levels(d)
        cols = an.level_columns(d)[:-1]
        ax = axes[0][col]
        shown = ("ranked", "none", "all")
        for r in (r for r in rows if r["distortion"] == d and r["selection"] in shown):
            style = {"color": "k", "ls": "--"} if r["beta"] in (0.0, 1.0) else {}
            label = {0.0: "baseline (none)", 1.0: "whole layer"}.get(
                r["beta"], f"top {r['beta']:.0%} ({r['filters']})")
            ax.plot(x, [r[c] for c in cols], marker=".", label=label, **style)
        ax.set_title(f"{d}: conv1, top-beta ranked filters ideally corrected")
        ax.set_xlabel("level (0 = clean)")
        ax.set_ylabel("top-1")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1][col]
        for sel in SELECTIONS:
            pts = [(r["beta"], r["avg"]) for r in rows
                   if r["distortion"] == d and r["selection"] in (sel, "none", "all")]
            ax.plot(*zip(*pts), marker="o", label=sel)
        ax.set_xlabel("beta (fraction of conv1 filters corrected)")
        ax.set_ylabel("top-1, average over clean and the 6 levels")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Ideal correction of conv1 (DeepCorrect Fig. 4), {images} CIFAR-10 test images")
    fig.tight_layout()
    an.save_figure(fig, path)


def plot_layers(rows: list[dict], distortions: list[str], path: Path, images: int) -> None:
    plt = an.pyplot()
    fig, axes = plt.subplots(1, len(distortions), figsize=(5.2 * len(distortions), 3.8),
                             squeeze=False)
    for ax, d in zip(axes[0], distortions):
        x = [0.0] + an.levels(d)
        cols = an.level_columns(d)[:-1]
        mine = [r for r in rows if r["distortion"] == d]
        base = next((r for r in mine if r["beta"] == 0.0), None)
        for r in mine:
            if r["selection"] != "ranked":
                continue
            ax.plot(x, [r[c] for c in cols], marker=".",
                    label=f"{r['layer']}: top {r['filters']} of {r['of']}")
        if base is not None:
            ax.plot(x, [base[c] for c in cols], "k--", label="baseline")
        ax.set_title(f"{d}: top {LAYER_BETA:.0%} of one layer ideally corrected")
        ax.set_xlabel("level (0 = clean)")
        ax.set_ylabel("top-1")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Ideal correction per layer (DeepCorrect Fig. 5), {images} CIFAR-10 test images")
    fig.tight_layout()
    an.save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    an.add_arguments(parser, FULL, QUICK, "out/ideal_correction")
    parser.add_argument("--trials", type=int, default=None,
                        help=f"random filter sets per count (default {FULL['trials']}, "
                             f"{QUICK['trials']} with --quick)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from deepcorrect.graph import conv_layers, corrected_count

    settings = an.resolve(args, FULL, QUICK)
    if settings["trials"] < 1:
        raise an.CLIError(f"--trials must be at least 1. Received: {settings['trials']}")
    analysis = an.Analysis("ideal_correction", args, settings)
    layers = [layer.name for layer in conv_layers(analysis.model)]
    out, trials = analysis.out, settings["trials"]
    beta_rows, layer_rows = [], []
    for d in analysis.distortions:
        print(f"{d}: ranking {len(layers)} conv layers on {settings['rank_images']} images",
              flush=True)
        ranking = analysis.ranking(d)
        n1 = ranking.filter_counts[layers[0]]
        counts = {b: 0 if b == 0 else corrected_count(b, n1) for b in BETAS}
        beta_rows += analysis.cached(f"ideal/beta/{d}", lambda: {"rows": ideal_rows(
            analysis, ranking, d, layers[0], counts, trials)})["rows"]
        for name in layers:
            n = ranking.filter_counts[name]
            counts = {0.0: 0, LAYER_BETA: corrected_count(LAYER_BETA, n)}
            rows = analysis.cached(f"ideal/layer/{d}/{name}", lambda: {"rows": ideal_rows(
                analysis, ranking, d, name, counts, trials)})["rows"]
            layer_rows += [r for r in rows if r["beta"] > 0 or name == layers[0]]
    images = len(analysis.test[0])
    meta = {"images": images, "rank_images": settings["rank_images"], "trials": trials,
            "levels": {d: an.levels(d) for d in analysis.distortions}}
    head = ["distortion", "layer", "beta", "filters", "of", "selection"]
    sections = []
    for stem, rows, title in (("beta_sweep", beta_rows, "Fig. 4: conv1, top-beta filters"),
                              ("per_layer", layer_rows, f"Fig. 5: top {LAYER_BETA:.0%} per layer")):
        parts = []
        for d in analysis.distortions:
            cols = head + an.level_columns(d)
            mine = [r for r in rows if r["distortion"] == d]
            parts.append(f"**{d}**\n\n" + an.markdown_table(mine, cols))
        an.write_table(out, stem, rows, an.table_columns(head, analysis.distortions) + ["sets"],
                       meta)
        sections.append(f"### {title}\n\n" + "\n".join(parts))
    plot_beta(beta_rows, analysis.distortions, analysis.figure("cifar10_ideal_beta.png"),
              images)
    plot_layers(layer_rows, analysis.distortions, analysis.figure("cifar10_ideal_layers.png"),
                images)
    text = (f"# Ideal correction on CIFAR-10\n\n{analysis.describe()} Random: mean of {trials} "
            f"seeded sets.\n\n" + "\n".join(sections))
    an.write_report(out, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

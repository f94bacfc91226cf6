"""Local vs global filter ranking for Deepcorr-all on CIFAR-10 (DeepCorrect Tables 5 and 9).

Deepcorr-all puts correction units on every conv layer. Which filters get
them:

- `local`: the top 50% of each layer by its own Algorithm-1 ranking (the
  paper's default);
- `global`: the same total number of filters, taken from one ranking of all
  filters of all layers by correction priority (`Ranking.global_top`); a layer
  may get more or fewer than half, or none.

Both models get the same training budget (the demo's repair recipe,
`studies.demo.train_method`) and are tested at the DeepCorrect CIFAR
levels. As in the paper, a paired-sample t-test (`scipy.stats.ttest_rel`)
compares the two models' accuracies on the clean images and at every level.
`--train-head K` also trains the last K conv/dense layers (Deepcorr-all-c,
the paper's Table 5 uses Deepcorr-6c).

Outputs in `--out`: `local_vs_global.{csv,json,md}`, `ttest.{csv,json,md}`,
`cifar10_local_vs_global.png`, `report.md`.

Usage:

    .venv/bin/python examples/local_vs_global.py --model out/cifar10_baseline/models/baseline.keras
    .venv/bin/python examples/local_vs_global.py --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from studies import analysis as an  # noqa: E402
from robustkit.cli_common import fail_cleanly  # noqa: E402

BETA = 0.5
FULL = {"train_images": 5000, "epochs": 2, "batch_size": 64, "test_images": 1000,
        "rank_images": 500}
QUICK = {"train_images": 256, "epochs": 1, "batch_size": 64, "test_images": 200,
         "rank_images": 64}


def local_and_global(ranking, beta: float = BETA) -> dict[str, dict[str, list[int]]]:
    """The corrected filters of every layer: `{"local": {layer: ids}, "global": {...}}`.

    Local: `round(beta * N)` top filters of each layer (`deepcorrect.wrap`'s count).
    Global: the same total, the top of `Ranking.global_order()`; layers with no
    filter are left out. Indices are in descending priority.
    """
    from deepcorrect.graph import corrected_count

    local = {name: [int(j) for j in ranking.order(name)[:corrected_count(beta, n)]]
             for name, n in ranking.filter_counts.items()}
    total = sum(len(v) for v in local.values())
    chosen = ranking.global_order()[:total]
    glob = {name: [j for n, j in chosen if n == name] for name in ranking.layer_names}
    return {"local": local, "global": {k: v for k, v in glob.items() if v}}


def method(name: str, selection: dict[str, list[int]], ranking, head: int) -> dict:
    """A demo method dict for `deepcorrect.wrap` correcting exactly `selection`."""
    return {"name": name, "kind": "deepcorrect", "unit": "cw", "train_head": head,
            "beta": {layer: len(ids) / ranking.filter_counts[layer]
                     for layer, ids in selection.items()}}


def plot(results: dict, distortions: list[str], path: Path, images: int) -> None:
    plt = an.pyplot()
    fig, axes = plt.subplots(1, len(distortions), figsize=(5.2 * len(distortions), 3.8),
                             squeeze=False)
    for ax, d in zip(axes[0], distortions):
        x = [0.0] + an.levels(d)
        for name, style in (("baseline", "k--"), ("local", "o-"), ("global", "s-")):
            acc = results[d][name]["accuracy"]
            ax.plot(x, acc, style, label=f"{name} (avg {np.mean(acc):.3f})")
        ax.set_title(d)
        ax.set_xlabel("level (0 = clean)")
        ax.set_ylabel("top-1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Deepcorr-all, local vs global ranking (DeepCorrect Tables 5/9), {images} "
                 "test images")
    fig.tight_layout()
    an.save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    an.add_arguments(parser, FULL, QUICK, "out/local_vs_global")
    parser.add_argument("--train-head", type=int, default=0,
                        help="also train the last K conv/dense layers (Deepcorr-all-c); default 0")
    args = parser.parse_args(argv)
    if args.train_head < 0:
        parser.error(f"--train-head must be >= 0. Received: {args.train_head}")
    return args


def run(args: argparse.Namespace) -> int:
    settings = an.resolve(args, FULL, QUICK)
    settings["train_head"] = args.train_head
    analysis = an.Analysis("local_vs_global", args, settings)
    suffix = "-c" if args.train_head else ""
    results, rows, pairs = {}, [], {}
    for d in analysis.distortions:
        ranking = analysis.ranking(d)
        selections = local_and_global(ranking)
        results[d] = {"baseline": analysis.cached(f"baseline/{d}", lambda: {
            "accuracy": analysis.accuracy(analysis.model, d)})}
        for name, selection in selections.items():
            print(f"{d}: Deepcorr-all{suffix} with {name} ranking, filters per layer "
                  f"{ {k: len(v) for k, v in selection.items()} }", flush=True)
            results[d][name] = analysis.repair(
                method(f"{name}{suffix}", selection, ranking, args.train_head), selection, d)
        for name in ("baseline", "local", "global"):
            counts = {k: len(v) for k, v in selections.get(name, {}).items()}
            rec = results[d][name]
            rows.append({"distortion": d, "ranking": name,
                         "corrected per layer": " / ".join(
                             str(counts.get(k, 0)) for k in ranking.layer_names) if counts else "",
                         "total": sum(counts.values()) if counts else 0,
                         **an.accuracy_cells(d, rec["accuracy"]),
                         "trainable": rec.get("trainable", ""),
                         "seconds": round(rec["seconds"]) if "seconds" in rec else ""})
        pairs[d] = (results[d]["local"]["accuracy"], results[d]["global"]["accuracy"])
    tests = []
    for scope in list(pairs) + (["both"] if len(pairs) > 1 else []):
        chosen = list(pairs.values()) if scope == "both" else [pairs[scope]]
        tests.append({"distortion": scope, **an.paired_ttest(
            np.concatenate([c[0] for c in chosen]), np.concatenate([c[1] for c in chosen]))})
    out, images = analysis.out, len(analysis.test[0])
    meta = {"images": images, "settings": settings, "layers": ranking.layer_names,
            "levels": {d: an.levels(d) for d in analysis.distortions}}
    head = ["distortion", "ranking", "corrected per layer", "total"]
    an.write_table(out, "local_vs_global", rows, an.table_columns(head, analysis.distortions)
                   + ["trainable", "seconds"], meta)
    ttest_md = an.write_table(out, "ttest", tests,
                              ["distortion", "n", "mean_difference", "t", "p"], meta, digits=4)
    plot(results, analysis.distortions, analysis.figure("cifar10_local_vs_global.png"), images)
    parts = [f"# Local vs global ranking, Deepcorr-all{suffix} on CIFAR-10\n\n"
             f"{analysis.describe()} Both models: {analysis.budget()}; corrected per layer "
             f"in the order {', '.join(ranking.layer_names)}.\n"]
    for d in analysis.distortions:
        parts.append(f"**{d}**\n\n" + an.markdown_table(
            [r for r in rows if r["distortion"] == d],
            head[1:] + an.level_columns(d) + ["trainable", "seconds"]))
    parts.append("**Paired t-test, local vs global** (pairs: clean and every level; "
                 "mean_difference = local - global)\n\n" + ttest_md)
    text = "\n".join(parts)
    an.write_report(out, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

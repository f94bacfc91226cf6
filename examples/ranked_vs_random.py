"""Correction units on ranked vs random vs least-susceptible filters (DeepCorrect Fig. 9, Table 6).

Deepcorr-1 on CIFAR-10: correction units on `l` filters of the first conv
layer, for `l` = 6.25%, 12.5%, 25% and 50% of its filters, chosen three ways:

- `ranked-l`: the `l` most susceptible filters by Algorithm 1;
- `random-l`: `l` filters drawn at random (`--trials` seeded draws, each a
  separately trained model);
- `least-l`: the `l` least susceptible filters (the paper shows it for 50%).

Every model gets the same training budget (images, epochs, batch size,
schedule: the demo's repair recipe, `studies.demo.train_method`) and is
tested on the same images at the DeepCorrect CIFAR levels. Table 6 is a
paired-sample t-test (`scipy.stats.ttest_rel`) between `ranked-l` and the
mean of the `random-l` trials, the pairs being the accuracies on the clean
images and at every level, of each distortion alone and of both pooled.

Outputs in `--out`: `ranked_vs_random.{csv,json,md}` (Fig. 9's numbers, every
trial included), `ttest.{csv,json,md}` (Table 6), `cifar10_ranked_vs_random.png`,
`report.md`.

Usage:

    .venv/bin/python examples/ranked_vs_random.py --model out/cifar10_baseline/models/baseline.keras
    .venv/bin/python examples/ranked_vs_random.py --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from studies import analysis as an  # noqa: E402
from robustkit.cli_common import fail_cleanly  # noqa: E402

FRACTIONS = (0.0625, 0.125, 0.25, 0.5)
LEAST_FRACTIONS = (0.5,)
FULL = {"train_images": 2500, "epochs": 2, "batch_size": 32, "test_images": 1000,
        "rank_images": 500, "trials": 5}
QUICK = {"train_images": 256, "epochs": 1, "batch_size": 64, "test_images": 200,
         "rank_images": 64, "trials": 2}


def plan(order: np.ndarray, fractions, trials: int, seed: int, least=LEAST_FRACTIONS) -> list[dict]:
    """The models to train: `{name, group, filters, indices}`, indices in correction order.

    Counts are `round(fraction * N)` (at least 1), as `deepcorrect.wrap` counts.
    """
    from deepcorrect.graph import corrected_count

    n = len(order)
    models = []
    for f in fractions:
        count = corrected_count(f, n)
        models.append({"name": f"ranked-{count}", "group": "ranked", "fraction": f,
                       "filters": count, "indices": order[:count]})
        for t, chosen in enumerate(an.random_filter_sets(n, count, trials, seed)):
            models.append({"name": f"random-{count}-t{t}", "group": "random", "fraction": f,
                           "filters": count, "indices": chosen, "trial": t})
        if f in least:
            models.append({"name": f"least-{count}", "group": "least", "fraction": f,
                           "filters": count, "indices": order[n - count:][::-1]})
    return models


def summarise(results: list[dict], distortions: list[str]) -> tuple[list[dict], list[dict]]:
    """Fig. 9 rows (random averaged over trials) and Table 6 t-tests."""
    fig_rows, tests = [], []
    for d in distortions:
        mine = [r for r in results if r["distortion"] == d]
        for f in dict.fromkeys(r["fraction"] for r in mine):
            for group in ("ranked", "random", "least"):
                rows = [r for r in mine if r["fraction"] == f and r["group"] == group]
                if not rows:
                    continue
                acc = np.mean([r["accuracy"] for r in rows], axis=0)
                avgs = [float(np.mean(r["accuracy"])) for r in rows]
                fig_rows.append({"distortion": d, "model": f"{group}-{rows[0]['filters']}",
                                 "fraction": f, "filters": rows[0]["filters"],
                                 "trials": len(rows), **an.accuracy_cells(d, acc),
                                 "avg_std": float(np.std(avgs)) if len(rows) > 1 else 0.0})
    for f in dict.fromkeys(r["fraction"] for r in results):
        pairs = {}
        for d in distortions:
            ranked = [r["accuracy"] for r in results
                      if r["distortion"] == d and r["fraction"] == f and r["group"] == "ranked"]
            random = [r["accuracy"] for r in results
                      if r["distortion"] == d and r["fraction"] == f and r["group"] == "random"]
            if ranked and random:
                pairs[d] = (np.asarray(ranked[0]), np.mean(random, axis=0))
        scopes = list(pairs) + (["both"] if len(pairs) > 1 else [])
        for scope in scopes:
            chosen = list(pairs.values()) if scope == "both" else [pairs[scope]]
            a = np.concatenate([p[0] for p in chosen])
            b = np.concatenate([p[1] for p in chosen])
            count = next(r["filters"] for r in results if r["fraction"] == f)
            tests.append({"fraction": f, "filters": count, "distortion": scope,
                          **an.paired_ttest(a, b)})
    return fig_rows, tests


def plot(fig_rows: list[dict], distortions: list[str], path: Path, images: int,
         base: dict[str, list[float]]) -> None:
    plt = an.pyplot()
    fig, axes = plt.subplots(1, len(distortions), figsize=(5.4 * len(distortions), 4.0),
                             squeeze=False)
    colors = {}
    for ax, d in zip(axes[0], distortions):
        x = [0.0] + an.levels(d)
        cols = an.level_columns(d)[:-1]
        for r in (r for r in fig_rows if r["distortion"] == d):
            group = r["model"].split("-")[0]
            style = {"ranked": "-", "random": "--", "least": ":"}[group]
            key = r["filters"]
            line = ax.plot(x, [r[c] for c in cols], style, marker=".", label=r["model"]
                           + (f" (mean of {r['trials']})" if r["trials"] > 1 else ""),
                           color=colors.get(key))
            colors.setdefault(key, line[0].get_color())
        ax.plot(x, base[d], "k-", lw=0.8, label="baseline")
        ax.set_title(f"{d}: Deepcorr-1 on ranked / random / least filters")
        ax.set_xlabel("level (0 = clean)")
        ax.set_ylabel("top-1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"Ranked vs random filters in conv1 (DeepCorrect Fig. 9), {images} test images")
    fig.tight_layout()
    an.save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    an.add_arguments(parser, FULL, QUICK, "out/ranked_vs_random")
    parser.add_argument("--trials", type=int, default=None,
                        help=f"random draws per fraction (default {FULL['trials']}, "
                             f"{QUICK['trials']} with --quick)")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                        help="fractions of conv1's filters (default 0.0625 0.125 0.25 0.5)")
    args = parser.parse_args(argv)
    if any(not 0 < f <= 1 for f in args.fractions):
        parser.error(f"--fractions must be in (0, 1]. Received: {args.fractions}")
    return args


def run(args: argparse.Namespace) -> int:
    from deepcorrect.graph import conv_layers

    settings = an.resolve(args, FULL, QUICK)
    settings["fractions"] = list(args.fractions)
    if settings["trials"] < 2:
        raise an.CLIError(f"--trials must be at least 2 (a t-test needs them). "
                          f"Received: {settings['trials']}")
    analysis = an.Analysis("ranked_vs_random", args, settings)
    first = conv_layers(analysis.model)[0].name
    results, base = [], {}
    for d in analysis.distortions:
        ranking = analysis.ranking(d)
        base[d] = analysis.cached(f"baseline/{d}", lambda: {
            "accuracy": analysis.accuracy(analysis.model, d)})["accuracy"]
        models = plan(ranking.order(first), settings["fractions"], settings["trials"],
                      analysis.seed)
        for i, m in enumerate(models):
            print(f"{d}: [{i + 1}/{len(models)}] {m['name']}: units on conv1 filters "
                  f"{sorted(int(j) for j in m['indices'])}", flush=True)
            method = {"name": m["name"], "kind": "deepcorrect", "beta": m["filters"] / len(
                ranking.order(first)), "unit": "cw", "first": 1}
            record = analysis.repair(method, {first: [int(j) for j in m["indices"]]}, d)
            results.append({"distortion": d, **{k: v for k, v in m.items() if k != "indices"},
                            "indices": [int(j) for j in m["indices"]], **record})
    fig_rows, tests = summarise(results, analysis.distortions)
    out = analysis.out
    images = len(analysis.test[0])
    meta = {"images": images, "settings": settings,
            "levels": {d: an.levels(d) for d in analysis.distortions}}
    trial_rows = [{**{k: r[k] for k in ("distortion", "name", "group", "filters", "seconds",
                                         "trainable")},
                   "indices": " ".join(map(str, sorted(r["indices"]))),
                   **an.accuracy_cells(r["distortion"], r["accuracy"])} for r in results]
    an.write_table(out, "trials", trial_rows, an.table_columns(
        ["distortion", "name", "group", "filters"], analysis.distortions)
        + ["trainable", "seconds", "indices"], meta)
    an.write_table(out, "ranked_vs_random", fig_rows, an.table_columns(
        ["distortion", "model", "filters", "trials"], analysis.distortions) + ["avg_std"], meta)
    test_cols = ["filters", "fraction", "distortion", "n", "mean_difference", "t", "p"]
    ttest_md = an.write_table(out, "ttest", tests, test_cols, meta, digits=4)
    plot(fig_rows, analysis.distortions, analysis.figure("cifar10_ranked_vs_random.png"),
         images, base)
    parts = [f"# Ranked vs random filters (Deepcorr-1) on CIFAR-10\n\n{analysis.describe()} "
             f"Every model: {analysis.budget()}; random: {settings['trials']} seeded draws per "
             "fraction.\n"]
    for d in analysis.distortions:
        rows = [{"model": "baseline", **an.accuracy_cells(d, base[d])}] + [
            r for r in fig_rows if r["distortion"] == d]
        parts.append(f"**{d}** (random: mean over trials; avg_std: std of the trials' averages)"
                     f"\n\n" + an.markdown_table(rows, ["model", "filters", "trials"]
                                                 + an.level_columns(d) + ["avg_std"]))
    parts.append("**Paired t-test, ranked-l vs mean of random-l** (pairs: clean and every "
                 "level)\n\n" + ttest_md)
    text = "\n".join(parts)
    an.write_report(out, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

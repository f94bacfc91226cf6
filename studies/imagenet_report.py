"""Tables, report and figure of the ImageNet DeepCorrect study (`studies.imagenet`).

`report` writes the Markdown of `examples/imagenet_deepcorrect.py` from the rows of
`studies.imagenet`'s stages, one table each (`ranking_table`, `accuracy_table`,
`cost_table`, `unit_table`); `accuracy_figure` draws top-1 against level, for this
study and, with other `series`, for `examples/qrnet_imagenet.py`.

Example:

>>> rows = [{"model": m, "distortion": d, "level": v, "top1": t}
...         for m, t in (("baseline", 0.9), ("finetune_blur", 0.8), ("deepcorr_blur", 0.85))
...         for d, v in (("clean", 0.0), ("gaussian_blur", 2.0))]
>>> print(accuracy_table(rows, "gaussian_blur", "top1").splitlines()[2])
| Baseline | 0.900 | 0.900 | 0.900 |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from robustkit.io import atomic_write_text
from studies.analysis import pyplot, save_figure
from studies.imagenet import SHORT


def accuracy_table(rows: Sequence[dict[str, Any]], distortion: str, metric: str) -> str:
    """Markdown: one row per model, one column per level (clean first), plus the mean.

    Args:
        rows: `studies.imagenet.accuracy_rows`.
        distortion: the distortion whose models and levels to show.
        metric: `"top1"` or `"top5"`.

    Returns:
        The table, without a final newline.
    """
    levels = sorted({r["level"] for r in rows if r["distortion"] == distortion})
    names = [("baseline", "Baseline"), (f"finetune_{SHORT[distortion]}", "Finetune"),
             (f"deepcorr_{SHORT[distortion]}", "Deepcorr")]
    header = "| model | clean | " + " | ".join(f"{v:g}" for v in levels) + " | mean (with clean) |"
    lines = [header, "|---" * (len(levels) + 3) + "|"]
    for key, label in names:
        clean = next(r[metric] for r in rows if r["model"] == key and r["distortion"] == "clean")
        values = [next(r[metric] for r in rows if r["model"] == key
                       and r["distortion"] == distortion and r["level"] == v) for v in levels]
        mean = float(np.mean([clean] + values))
        lines.append(f"| {label} | {clean:.3f} | " + " | ".join(f"{v:.3f}" for v in values)
                     + f" | {mean:.3f} |")
    return "\n".join(lines)


def cost_table(costs: Sequence[dict[str, Any]]) -> str:
    """Markdown: trainable parameters, multiply-adds and ms per image of each model.

    Args:
        costs: `studies.imagenet.cost_stage`.

    Returns:
        The table, without a final newline.
    """
    lines = ["| model | trainable params | unit multiply-adds (M) | model multiply-adds (M) | "
             "ms / image |", "|---|---|---|---|---|"]
    for r in costs:
        lines.append(f"| {r['model']} | {r['trainable_params']:,} | "
                     f"{r['unit_multiply_adds'] / 1e6:.1f} | {r['base_multiply_adds'] / 1e6:.1f} | "
                     f"{r['ms_per_image']:.1f} |")
    return "\n".join(lines)


def unit_table(costs: Sequence[dict[str, Any]]) -> str:
    """Markdown: the units of the first Deepcorr model in `costs`, one row each (Table 10).

    Args:
        costs: `studies.imagenet.cost_stage`.

    Returns:
        The table, without a final newline.
    """
    lines = ["| layer | map | corrected / filters | params | multiply-adds (M) |",
             "|---|---|---|---|---|"]
    first = next(r["model"] for r in costs if r["model"].startswith("deepcorr"))
    for r in costs:
        if r["model"] == first:
            for u in r["units"]:
                lines.append(f"| {u['layer']} | {u['map']} | {u['corrected_filters']} / "
                             f"{u['of_filters']} | {u['trainable_params']:,} | "
                             f"{u['multiply_adds'] / 1e6:.1f} |")
    return "\n".join(lines)


def ranking_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: exact vs approximate ranking per layer, then one summary line per distortion.

    Args:
        rows: `studies.imagenet.ranking_rows`.

    Returns:
        The table and the summaries, without a final newline.
    """
    lines = ["| distortion | layer | filters | Spearman exact vs approx | top-half overlap | "
             "exact s | distinct exact priorities |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["layer"] != "all":
            lines.append(f"| {r['distortion']} | {r['layer']} | {r['filters']} | "
                         f"{r['spearman_exact_approx']:.3f} | {r['top_half_overlap']:.2f} | "
                         f"{r['exact_seconds']:.0f} | {r['distinct_exact_priorities']} |")
    for r in rows:
        if r["layer"] == "all":
            lines.append(f"\n{r['distortion']}: exact {r['exact_seconds']:.0f} s, approx "
                         f"{r['approx_seconds']:.0f} s, {r['images']} photos x levels "
                         f"{r['levels']}; mean per-layer Spearman "
                         f"{r['spearman_exact_approx']:.3f}.")
    return "\n".join(lines)


def deepcorrect_series(distortion: str) -> list[tuple[str, str, str]]:
    """The lines of the study's figure: `(model key, label, matplotlib style)`.

    Example:

    >>> [label for _, label, _ in deepcorrect_series("awgn")]
    ['baseline', 'Finetune', 'Deepcorr']
    """
    return [("baseline", "baseline", "k-o"),
            (f"finetune_{SHORT[distortion]}", "Finetune", "C1-s"),
            (f"deepcorr_{SHORT[distortion]}", "Deepcorr", "C0-^")]


def accuracy_figure(rows: Sequence[dict[str, Any]], distortions: Sequence[str], path: Path,
                    series: Callable[[str], list[tuple[str, str, str]]] = deepcorrect_series,
                    key: str = "model", value: str = "top1") -> None:
    """Top-1 against level per distortion, one line per model; a PNG written atomically.

    Args:
        rows: result rows with `distortion`, `level`, `key` and `value` fields; the
            clean rows have the distortion `"clean"` and are drawn at level 0.
        distortions: one panel each.
        path: the PNG to write.
        series: `distortion -> [(row key, label, matplotlib style)]`. Defaults to
            `deepcorrect_series`: the baseline, Finetune and Deepcorr.
        key: the row field naming the model. Defaults to `"model"`.
        value: the row field to plot. Defaults to `"top1"`.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(distortions), figsize=(4.5 * len(distortions), 3.4),
                             squeeze=False)
    for ax, distortion in zip(axes[0], distortions):
        for name, label, style in series(distortion):
            pts = sorted((r["level"], r[value]) for r in rows if r[key] == name
                         and r["distortion"] in ("clean", distortion))
            ax.plot(*zip(*pts), style, label=label)
        ax.set_xlabel(f"{distortion} sigma (0 = clean)")
        ax.set_ylabel("top-1 (test photos)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    save_figure(fig, path)


def report(args, cfg: dict[str, Any], split: tuple[np.ndarray, np.ndarray],
           rank_rows: Sequence[dict[str, Any]], acc: Sequence[dict[str, Any]],
           costs: Sequence[dict[str, Any]], logs: dict[str, dict[str, Any]],
           bn: dict[str, float]) -> str:
    """The study's `report.md`.

    Args:
        args: the command line (`model`, `data`, `seed`).
        cfg: the configuration.
        split: `(train, test)` indices.
        rank_rows: `studies.imagenet.ranking_rows`.
        acc: `studies.imagenet.accuracy_rows`.
        costs: `studies.imagenet.cost_stage`.
        logs: the training logs of `studies.imagenet.train_stage`.
        bn: `studies.imagenet.bn_check`.

    Returns:
        The Markdown.
    """
    n_train, n_test = len(split[0]), len(split[1])
    lines = [
        "# DeepCorrect on a pretrained classifier (ImageNet photos)", "",
        f"Model: {args.model}; photos: {args.data}; split seed {args.seed}: "
        f"{n_train} train (ranking uses the first {min(cfg['rank_photos'], n_train)}), "
        f"{n_test} test.", "",
        "Configuration: `" + json.dumps(cfg) + "`", "",
        "## Ranking: exact (Algorithm 1) vs first-order approximation", "",
        ranking_table(rank_rows), "",
        f"## Top-1 on the {n_test} test photos", "",
    ]
    for d in cfg["distortions"]:
        lines += [f"**{d}**", "", accuracy_table(acc, d, "top1"), ""]
    lines += [f"## Top-5 on the {n_test} test photos", ""]
    for d in cfg["distortions"]:
        lines += [f"**{d}**", "", accuracy_table(acc, d, "top5"), ""]
    lines += ["## Cost", "", cost_table(costs), "", "Units of Deepcorr (the same sizes for "
              "each distortion):", "", unit_table(costs), ""]
    lines += ["## Training", ""]
    for key, log in logs.items():
        last = {k: round(v[-1], 4) for k, v in log["history"].items()}
        lines.append(f"- {key}: {log['images']} photos x {log['epochs']} epochs; last epoch "
                     f"{last}; {log['seconds_this_run']:.0f} s")
    lines += ["", f"Finetune with trainable BN, clean top-1 on {bn['images']} training photos: "
              f"{bn['inference']:.3f} in inference mode, {bn['training']:.3f} in training "
              "mode.", ""]
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Writes `rows` as a CSV file, atomically: the first row's keys are the header.

    Example:

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "rows.csv"
    >>> write_csv(path, [{"model": "baseline", "top1": 0.5}])
    >>> path.read_text()
    'model,top1\\nbaseline,0.5\\n'
    """
    header = list(rows[0])
    atomic_write_text(path, "\n".join(
        [",".join(header)] + [",".join(str(r[k]) for k in header) for r in rows]) + "\n")

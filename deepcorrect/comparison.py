"""The table `deepcorrect.compare` returns, and `recommend`: which repair to use.

`ComparisonTable` holds one row per method and test distortion (top-1 per level, its
average, clean accuracy and its change, parameters, labels, seconds, ms per image and
multiply-adds) and writes it as Markdown, CSV, JSON and a figure. `recommend(table,
max_clean_drop=..., max_params=..., max_latency=...)` names the method with the best mean
top-1 among those that meet the constraints, with a one-line reason.

Example:

```python
from deepcorrect.comparison import ComparisonTable, recommend

table = ComparisonTable.from_json("out/compare/comparison.json")
method, reason = recommend(table, max_clean_drop=0.01, max_params=10_000, max_latency=2.0)
```
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from deepcorrect.methods import merge_labels
from robustkit.io import atomic_path, atomic_write_text


# --- The table -----------------------------------------------------------------------------


def _largest(values):
    """The largest value, None when any is unknown (None)."""
    values = list(values)
    return None if any(v is None for v in values) else max(values)


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


@dataclasses.dataclass
class ComparisonTable:
    """One row per method and test distortion; `meta` holds the settings of the run.

    Row keys: `method`, `repair` (the distortion repaired for, "mixture", or None for the
    baseline), `distortion`, `model` (the repaired `.keras` file, relative to the output
    folder; None for the baseline), `levels`, `accuracy` (`[clean, level 1, ...]` top-1), `mean`
    (over clean and the levels), `clean`, `clean_change` (against the baseline),
    `parameters` (trained or adapted by the repair), `labels` ("yes", "teacher": learnt
    from the original model, "no"), `seconds` (of repair), `ms_per_image`,
    `multiply_adds`, `steps`, `held_out` (a distortion tested but not repaired for).
    """

    rows: list[dict]
    meta: dict

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.rows))

    def distortions(self) -> list[str]:
        return list(dict.fromkeys(r["distortion"] for r in self.rows))

    def row(self, method: str, distortion: str) -> dict:
        return next(r for r in self.rows if r["method"] == method and r["distortion"] == distortion)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per method, over every repaired distortion: mean top-1 (of the rows' means), clean
        top-1, its change, the largest parameters and ms per image, the seconds of all its
        repairs, and the labels it needed; `held_out_mean` averages the held-out rows (None
        without any)."""
        out = {}
        for m in self.methods():
            held = [r["mean"] for r in self.rows if r["method"] == m and r.get("held_out")]
            rows = [r for r in self.rows if r["method"] == m and not r.get("held_out")]
            repairs = {r["repair"]: r["seconds"] or 0.0 for r in rows}
            labels = "no"
            for r in rows:
                labels = merge_labels(labels, r["labels"])
            out[m] = {"mean": float(np.mean([r["mean"] for r in rows])),
                      "clean": float(np.mean([r["clean"] for r in rows])),
                      "clean_change": float(np.mean([r["clean_change"] for r in rows])),
                      "parameters": max(r["parameters"] for r in rows),
                      "ms_per_image": _largest(r["ms_per_image"] for r in rows),
                      "multiply_adds": _largest(r["multiply_adds"] for r in rows),
                      "seconds": float(sum(repairs.values())), "labels": labels,
                      "held_out_mean": float(np.mean(held)) if held else None}
        return out

    def to_markdown(self) -> str:
        """A table per test distortion and a summary over all of them."""
        meta = self.meta
        budget = meta["budget"]
        repaired = (f"one repair on a mixture of {', '.join(meta['distortions'])}"
                    if meta["mixture"] else "one repair per distortion")
        lines = [f"Top-1 on {meta['test_images']} test images; {repaired}, each on the same "
                 f"{meta['repair_images']} images ({'labelled' if meta['labelled'] else 'no labels: distilled from the model'}), "
                 f"{budget['epochs']} epochs, batch {budget['batch_size']}"
                 f"{', flipped and shifted at random' if budget.get('augment') else ''}, "
                 f"seed {meta['seed']}. "
                 "avg: over clean and the levels; params: trained or adapted.", ""]
        held = set(meta.get("held_out", []))
        for d in self.distortions():
            levels = meta["levels"][d]
            head = ["method", "clean"] + [f"{lv:g}" for lv in levels] + [
                "avg", "clean change", "params", "labels", "repair s", "ms/image", "multiply-adds"]
            title = f"**{d}** (held out: no repair saw it)" if d in held else f"**{d}**"
            lines += [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for r in self.rows:
                if r["distortion"] == d:
                    lines.append("| " + " | ".join(
                        [r["method"]] + [f"{v:.3f}" for v in r["accuracy"]]
                        + [f"{r['mean']:.3f}", f"{r['clean_change']:+.3f}", f"{r['parameters']:,}",
                           r["labels"], _cell(r["seconds"], ".0f"), _cell(r["ms_per_image"], ".3f"),
                           _cell(r["multiply_adds"], ",")]) + " |")
            lines.append("")
        head = ["method", "avg over distortions", "clean", "clean change", "params", "labels",
                "repair s", "ms/image"] + (["avg over held out"] if held else [])
        lines += ["**all distortions**" + (" (repaired for)" if held else ""), "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m, s in self.summary().items():
            lines.append("| " + " | ".join([
                m, f"{s['mean']:.3f}", f"{s['clean']:.3f}", f"{s['clean_change']:+.3f}",
                f"{s['parameters']:,}", s["labels"], f"{s['seconds']:.0f}",
                _cell(s["ms_per_image"], ".3f")]
                + ([_cell(s["held_out_mean"], ".3f")] if held else [])) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | os.PathLike) -> None:
        """One line per method, distortion and level ("clean" first), written atomically."""
        fields = ["method", "repair", "distortion", "level", "top1", "mean", "clean_change",
                  "parameters", "labels", "seconds", "ms_per_image", "multiply_adds"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fields, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            for level, top1 in zip(["clean", *r["levels"]], r["accuracy"]):
                writer.writerow({**{k: r[k] for k in fields if k in r}, "level": level,
                                 "top1": top1})
        atomic_write_text(path, buf.getvalue())

    def to_json(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps({"meta": self.meta, "rows": self.rows}, indent=1))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ComparisonTable":
        data = json.loads(Path(path).read_text())
        return cls(rows=data["rows"], meta=data["meta"])

    def plot(self, path: str | os.PathLike) -> None:
        """Top-1 against level: a panel per test distortion, a line per method."""
        accuracy = {d: {r["method"]: r["accuracy"] for r in self.rows if r["distortion"] == d}
                    for d in self.distortions()}
        plot_accuracy(self.meta["levels"], accuracy, path)


def table_row(method: str, distortion: str, levels: Sequence[float], accuracy: Sequence[float],
              base_clean: float, *, repair: str | None = None, parameters: int = 0,
              labels: str = "no", seconds: float = 0.0, ms_per_image: float | None = None,
              multiply_adds: int | None = None, model: str | None = None,
              steps: Sequence[str] = (), held_out: bool = False) -> dict[str, Any]:
    """One row of a `ComparisonTable` (see its row keys); `mean` and the clean change derived.

    Example:

    >>> row = table_row("tuned", "awgn", [10.0], [0.9, 0.7], base_clean=0.92)
    >>> round(row["mean"], 3), round(row["clean_change"], 3)
    (0.8, -0.02)
    """
    accuracy = [float(v) for v in accuracy]
    return {"method": method, "repair": repair, "distortion": distortion, "model": model,
            "levels": [float(v) for v in levels], "accuracy": accuracy,
            "mean": float(np.mean(accuracy)), "clean": accuracy[0],
            "clean_change": accuracy[0] - float(base_clean), "parameters": int(parameters),
            "labels": labels, "seconds": None if seconds is None else float(seconds),
            "ms_per_image": None if ms_per_image is None else float(ms_per_image),
            "multiply_adds": None if multiply_adds is None else int(multiply_adds),
            "steps": list(steps), "held_out": bool(held_out)}


def plot_accuracy(levels: Mapping[str, Sequence[float]],
                  accuracy: Mapping[str, Mapping[str, Sequence[float]]],
                  path: str | os.PathLike) -> None:
    """Accuracy-vs-level curves: a panel per distortion, a line per method (written atomically).

    Args:
        levels: distortion -> its levels.
        accuracy: distortion -> method -> `[clean, level 1, ...]` top-1.
        path: the `.png` to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(accuracy), figsize=(4.2 * len(accuracy), 3.4), squeeze=False)
    for ax, (d, rows) in zip(axes[0], accuracy.items()):
        x = [0.0] + [float(v) for v in levels[d]]
        for name, values in rows.items():
            ax.plot(x, values, marker=".", label=name)
        ax.set_title(d)
        ax.set_xlabel("level (0 = clean)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# --- Recommendation ------------------------------------------------------------------------


class Recommendation(NamedTuple):
    """The method to use (None when no method meets the constraints) and why, in one line."""

    method: str | None
    reason: str


def check_limit(name: str, value, integer: bool = False):
    """`value` if it is None or a finite number >= 0 (an integer with `integer`).

    Raises:
        ValueError: naming `name`, for anything else.

    Example:

    >>> check_limit("max_latency", 2.5)
    2.5
    """
    if value is None:
        return None
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or value < 0:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} >= 0 or None. Received: {name}={value!r}")
    return value


def recommend(table: ComparisonTable | str | os.PathLike, max_clean_drop: float | None = None,
              max_params: int | None = None, max_latency: float | None = None) -> Recommendation:
    """The best method of a comparison under constraints, with a one-line reason.

    Among the methods whose clean top-1 is at most `max_clean_drop` below the baseline's,
    that train or adapt at most `max_params` parameters and run in at most `max_latency`
    ms per image, the one with the best mean top-1 over the clean images and every
    distorted level (averaged over the test distortions); ties go to the earlier method.

    Args:
        table: a `ComparisonTable`, or the path of its `comparison.json`.
        max_clean_drop: the largest allowed clean accuracy drop (0.01 = one point), or None.
        max_params: the most parameters a repair may train or adapt, or None.
        max_latency: the most milliseconds per image, or None.

    Returns:
        A `Recommendation(method, reason)`. When no repair beats the baseline, the
        baseline, saying so; when no method meets the constraints, `method` is None.

    Raises:
        ValueError: for a negative or non-finite limit.

    Example:

    >>> method, reason = recommend("out/compare/comparison.json", max_clean_drop=0.01)  # doctest: +SKIP
    """
    max_clean_drop = check_limit("max_clean_drop", max_clean_drop)
    max_params = check_limit("max_params", max_params, integer=True)
    max_latency = check_limit("max_latency", max_latency)
    if not isinstance(table, ComparisonTable):
        table = ComparisonTable.from_json(table)
    summary = table.summary()
    base_name = table.meta["baseline"]
    base = summary[base_name]
    eligible, excluded = [], []
    for name, s in summary.items():
        drop = base["clean"] - s["clean"]
        if max_clean_drop is not None and drop > max_clean_drop + 1e-9:
            excluded.append(f"{name} (clean -{drop:.3f})")
        elif max_params is not None and s["parameters"] > max_params:
            excluded.append(f"{name} ({s['parameters']:,} params)")
        elif max_latency is not None and s["ms_per_image"] is None:
            excluded.append(f"{name} (latency not measured)")
        elif max_latency is not None and s["ms_per_image"] > max_latency:
            excluded.append(f"{name} ({s['ms_per_image']:.2f} ms)")
        else:
            eligible.append(name)
    left_out = f"; excluded: {', '.join(excluded)}" if excluded else ""
    if not eligible:
        return Recommendation(None, "no method meets the constraints" + left_out)
    best = max(eligible, key=lambda n: (summary[n]["mean"], -eligible.index(n)))
    s = summary[best]
    where = f"over clean and every level of {', '.join(table.distortions())}"
    if best == base_name or s["mean"] <= base["mean"]:
        others = [n for n in eligible if n != base_name]
        runner = (f"; the best repair, {max(others, key=lambda n: summary[n]['mean'])}, reaches "
                  f"{max(summary[n]['mean'] for n in others):.3f}" if others else "")
        return Recommendation(base_name, f"no repair beats the baseline within the constraints "
                                         f"(mean top-1 {base['mean']:.3f} {where}){runner}"
                                         + left_out)
    return Recommendation(best, (
        f"{best}: mean top-1 {s['mean']:.3f} {where}, +{s['mean'] - base['mean']:.3f} over the "
        f"baseline; clean {s['clean_change']:+.3f}, {s['parameters']:,} parameters, "
        f"{_cell(s['ms_per_image'], '.2f')} ms/image, labels: {s['labels']}" + left_out))

"""The demo's table, figures and report (`studies.demo` runs the stages).

`format_tables` writes one Markdown table per distortion (accuracy per level, average,
trainable parameters, training seconds), `comparison_table` turns the demo's results into a
`deepcorrect.compare` table for `recommend`, `plot_restorations` shows restored test images
and `write_report` writes `report.md`.

Example:

```python
from studies import demo

result = demo.run(demo.resolve_config("fashion_mnist", quick=True), "out/demo-quick")
print(result["table"])                    # format_tables
print(result["recommendation"].reason)    # recommend(comparison_table(...))
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from deepcorrect.stages import Stages, slug
from robustkit.io import atomic_path, atomic_write_text

REPORT_FILE = "report.md"


def _latency(method, model, baseline, test, stages: Stages, distortion: str) -> float | None:
    """ms per image of what a method runs at test time (cached in the stages): the model, or
    the baseline behind its restorer; None for a classical restoration (numpy, not a model)."""
    import keras

    from deepcorrect.costs import inference_ms

    kind = method["kind"]
    if kind == "classical":
        return None
    key = "cost/baseline" if kind == "baseline" else f"cost/{slug(method['name'])}/{distortion}"
    if not stages.done(key):
        if kind == "restorer":
            inputs = keras.Input(test[0].shape[1:])
            model = keras.Model(inputs, baseline(model(inputs)))
        elif kind == "baseline":
            model = baseline
        stages.finish(key, ms_per_image=inference_ms(model, test[0][:64]))
    return stages.record(key)["ms_per_image"]


def comparison_table(config, accuracy, stages: Stages, trained, baseline, test):
    """The demo's results as a `deepcorrect.compare` table, for `recommend`.

    Parameters and seconds are those of the demo's table (`method_cost`), the baseline's
    parameters 0 (it trains nothing to repair); ms per image is measured on 64 test images.
    """
    from deepcorrect.comparison import ComparisonTable, table_row

    base = next(m["name"] for m in config["methods"] if m["kind"] == "baseline")
    rows = []
    for d, by_method in accuracy.items():
        for m in config["methods"]:
            params, seconds = method_cost(m, stages, d, baseline)
            labels = ("yes" if m["kind"] in ("finetune", "deepcorrect", "restorer") else
                      stages.record(f"train/{slug(m['name'])}/{d}")["labels"]
                      if m["kind"] == "ladder" else "no")
            rows.append(table_row(
                m["name"], d, config["levels"][d], by_method[m["name"]], by_method[base][0],
                repair=None if m["kind"] in ("baseline", "classical") else d,
                parameters=0 if m["kind"] == "baseline" else params, labels=labels,
                seconds=0.0 if m["kind"] == "baseline" else seconds,
                ms_per_image=_latency(m, trained.get((m["name"], d)), baseline, test, stages, d)))
    rep = config["repair"]
    meta = {"distortions": list(accuracy), "levels": config["levels"], "seed": config["seed"],
            "budget": {"epochs": rep["epochs"], "batch_size": rep["batch_size"],
                       "images": rep["images"]},
            "mixture": False, "labelled": True, "repair_images": rep["images"],
            "test_images": int(len(test[0])), "baseline": base}
    return ComparisonTable(rows, meta)


def method_cost(method, stages: Stages, distortion: str, baseline) -> tuple[int, float | None]:
    """Trainable parameters and training seconds of a method (as in the paper's tables)."""
    kind = method["kind"]
    if kind == "baseline":
        rec = stages.record("baseline")
        return rec["trainable"], rec["seconds"]
    if kind == "classical":
        return 0, None
    rec = stages.record(f"train/{slug(method['name'])}/{distortion}")
    return rec["trainable"], rec["seconds"]


def format_tables(config, accuracy, stages: Stages, baseline) -> str:
    """One Markdown table per distortion: accuracy per level, average, parameters, seconds.

    The average is over the clean images and every level, as in the paper's tables.
    """
    n = int(config["test_images"])
    lines = []
    for d, rows in accuracy.items():
        levels = config["levels"][d]
        head = ["method", "clean"] + [f"{lv:g}" for lv in levels] + [
            "avg", "trainable params", "train s"]
        lines += [f"**{d}** (top-1 on {n} test images; avg over clean and the "
                  f"{len(levels)} levels)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in config["methods"]:
            values = rows[m["name"]]
            params, seconds = method_cost(m, stages, d, baseline)
            cells = [m["name"]] + [f"{v:.3f}" for v in values] + [
                f"{np.mean(values):.3f}", f"{params:,}", "-" if seconds is None else f"{seconds:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_restorations(config, test, baseline, trained, path: Path, count: int = 3) -> None:
    """A grid per distortion: clean, distorted (middle level) and each restorer's output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import distort

    restorers = [m for m in config["methods"] if m["kind"] in ("restorer", "classical")]
    images = np.asarray(test[0][:count], np.float32)
    rows = []
    for d, levels in config["levels"].items():
        level = levels[len(levels) // 2]
        distorted = np.asarray(distort.apply(images, d, level, seed=config["seed"]), np.float32)
        panels = [("clean", images), (f"{d} {level:g}", distorted)]
        for m in restorers:
            if m["kind"] == "classical":
                from studies import restoration

                panels.append((m["name"], restoration.restore(distorted, d, level)))
            else:
                panels.append((m["name"], np.asarray(trained[(m["name"], d)](distorted))))
        for i in range(count):
            rows.append([(title, batch[i]) for title, batch in panels])
    cols = len(rows[0])
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, (title, image) in enumerate(row):
            ax = axes[r][c]
            ax.axis("off")
            ax.imshow(np.clip(image, 0, 255).astype(np.uint8).squeeze(), cmap="gray")
            if r % count == 0:
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(config, accuracy, stages: Stages, baseline, table: str, out: Path,
                 seconds: float, choice=None, limits: Mapping[str, Any] | None = None) -> Path:
    """The Markdown report: setup, the table, the figures and what they show."""
    base = stages.record("baseline")
    rep = config["repair"]
    lines = [
        f"# DeepCorrect demo: {config['network']} on {config['dataset']}",
        "",
        f"Command: `deepcorrect demo --dataset {config['dataset']}"
        + (f" --data {config['data']}" if config.get("data") else "")
        + (" --quick" if config["quick"] else "") + f" --seed {config['seed']}`",
        f"(this run: {seconds:.0f} s, stages skipped when already done).",
        "",
        "## Setup",
        "",
        (f"- Baseline: the given model `{base['given']}`." if base.get("given") else
         f"- Baseline: `{config['network']}` trained on {base['images']} clean training images "
         f"for {base['epochs']} epochs in {base['seconds']:.0f} s; clean accuracy on the "
         f"{config['holdout']} held-out training images after each epoch: "
         + ", ".join(f"{v:.3f}" for v in base.get("val_accuracy", [])) + "."),
        f"- Ranking (Algorithm 1): {config['rank_images']} held-out images, every conv layer, "
        "signed top-1 gain averaged over the levels.",
        f"- Every repair method: the same {rep['images']} training images, {rep['epochs']} epochs, "
        f"batch {rep['batch_size']}, half of every batch distorted at a random level. "
        f"Correction units: SGD lr {rep['unit_learning_rate']}, fine-tuning: SGD lr "
        f"{rep['finetune_learning_rate']} (Nesterov 0.9, x0.1 after {rep['decay_every']} epochs); "
        f"restorer: Adam {rep['restorer_learning_rate']} (QRNet: L1 + 0.01 x the frozen "
        "baseline's cross-entropy).",
        "- Methods: " + "; ".join(_describe(m) for m in config["methods"]) + ".",
        f"- Test: the first {config['test_images']} test images, distorted once per level with "
        f"seed {config['seed']}.",
        "",
        "## Top-1 accuracy",
        "",
        table,
        "![accuracy vs level](accuracy.png)",
        "",
        "![distorted and restored test images](restored.png)",
        "",
        "## What it shows",
        "",
    ]
    for d, rows in accuracy.items():
        avg = {name: float(np.mean(v)) for name, v in rows.items()}
        b = avg.get("Baseline")
        parts = [f"{name} {v:.3f}" for name, v in avg.items()]
        best = max(avg, key=avg.get)
        lines.append(f"- {d}: average top-1 " + ", ".join(parts) + f"; best: {best}"
                     + (f" (+{avg[best] - b:.3f} over the baseline)." if b is not None else "."))
    if choice is not None:
        limits = ", ".join(f"{k} {v}" for k, v in (limits or {}).items()) or "no limits"
        lines += ["", "## Which repair?", "",
                  f"`deepcorrect.recommend` ({limits}; averaged over the distortions): "
                  f"**{choice.method or 'none'}**: {choice.reason}.",
                  "`deepcorrect compare` runs the same ladder on your own model."]
    return _write(out / REPORT_FILE, "\n".join(lines) + "\n")


def _describe(method) -> str:
    kind = method["kind"]
    if kind == "finetune":
        rate = f" at rate {method['learning_rate']:g}" if method.get("learning_rate") else ""
        return f"{method['name']} (the first {method['k']} conv layers fine-tuned{rate})"
    if kind == "deepcorrect":
        layers = "every conv layer" if method.get("first") is None else \
            f"the first {method['first']} conv layers"
        extra = f", plus the last {method['train_head']} layers" if method.get("train_head") else ""
        if method.get("site") == "batch_norm":
            extra += ", each unit after the conv's batch norm"
        return (f"{method['name']} ({method.get('unit', 'cw')} units on the top "
                f"{method.get('beta', 0.5):g} of the filters of {layers}{extra})")
    if kind == "restorer":
        return f"{method['name']} ({method['mode']} restorer in front of the frozen baseline)"
    if kind == "classical":
        return f"{method['name']} (non-learned restoration told the level)"
    if kind == "ladder":
        words = {"bn_adapt": "batch-norm statistics of the distorted images (no labels)",
                 "tent": "TENT on the distorted images (no labels)",
                 "deepcorrect": "correction units ranked with method='approx' and trained",
                 "finetune": "Finetune-k", "qrnet": "a QRNet restorer in front"}
        return f"{method['name']} ({', then '.join(words[s['kind']] for s in method['steps'])})"
    return f"{method['name']} (trained on clean images only)"


def _write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path

"""Accuracy sweeps: models side by side over every level of every distortion.

For each distortion and level (and the clean images), every model is scored
on the same distorted images: top-1, top-5, mean softmax confidence of the
true class (Dodge & Karam, Fig. 3), mean prediction entropy and mean
cross-entropy in nats (Vasiljevic, Table 2). A sweep with a `checkpoint`
keeps every finished level, so an interrupted run resumes where it stopped.
Images are distorted at their own size; a model with a different fixed input
size gets the distorted images resized to it (bilinear, antialiased), as the
papers distort a photo once and let each network resize it.

Example:

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
...                           keras.layers.Dense(10, activation="softmax")])
>>> x = np.zeros([6, 8, 8, 3], np.uint8); y = np.arange(6)
>>> result = sweep({"tiny": model}, x, y, {"awgn": [10, 20]}, progress=False)
>>> len(result.rows)
3
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from scipy import special

from distort import presets, registry
from distort.spec import as_distortions
from robustkit.checks import check_class_labels
from robustkit.io import atomic_path, atomic_write_text
from robustkit.seeds import check_seed

METRICS = ("top1", "top5", "confidence", "entropy", "cross_entropy")


@dataclass
class SweepResult:
    """Rows of `{model, distortion, level, n, top1, top5, confidence, entropy, cross_entropy}`.

    `level` is None for the clean images (repeated under every distortion).
    """

    rows: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def select(self, model: str | None = None, distortion: str | None = None) -> list[dict]:
        """Returns the rows of one model and/or one distortion."""
        return [r for r in self.rows if (model is None or r["model"] == model)
                and (distortion is None or r["distortion"] == distortion)]

    def models(self) -> list[str]:
        return list(dict.fromkeys(r["model"] for r in self.rows))

    def distortions(self) -> list[str]:
        return list(dict.fromkeys(r["distortion"] for r in self.rows))

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes the rows and metadata as JSON (atomically)."""
        atomic_write_text(path, json.dumps({"meta": self.meta, "rows": self.rows}, indent=1))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "SweepResult":
        data = json.loads(Path(path).read_text())
        return cls(rows=data["rows"], meta=data.get("meta", {}))

    def to_csv(self, path: str | os.PathLike) -> None:
        """Writes the rows as CSV (atomically)."""
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, ["model", "distortion", "level", "n", *METRICS])
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: r.get(k) for k in writer.fieldnames})
        atomic_write_text(path, buf.getvalue())

    def to_markdown(self, metric: str | Sequence[str] = "top1") -> str:
        """One Markdown table per distortion: a column per level, a row per model and metric.

        Args:
            metric: One metric of `METRICS`, or several (then a row per model and metric).
        """
        metrics = [metric] if isinstance(metric, str) else list(metric)
        out = []
        for d in self.distortions():
            rows = self.select(distortion=d)
            levels = list(dict.fromkeys(r["level"] for r in rows))
            head = ["model"] + ["clean" if lv is None else f"{lv:g}" for lv in levels]
            out.append(f"**{d}** ({metrics[0]})\n" if len(metrics) == 1 else f"**{d}**\n")
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            for m in self.models():
                for k in metrics:
                    vals = {r["level"]: r[k] for r in rows if r["model"] == m}
                    label = m if len(metrics) == 1 else f"{m} {k}"
                    out.append("| " + " | ".join([label] + [f"{vals[lv]:.3f}" if lv in vals else ""
                                                            for lv in levels]) + " |")
            out.append("")
        return "\n".join(out)

    def plot(self, path: str | os.PathLike, metrics: Sequence[str] = ("top1", "top5")) -> None:
        """Accuracy-vs-level curves: a panel per distortion, a line per model (Dodge & Karam Fig. 2)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        dists = self.distortions()
        fig, axes = plt.subplots(1, len(dists), figsize=(3.2 * len(dists), 3.0), squeeze=False)
        styles = {"top1": "-", "top5": "--", "confidence": ":"}
        for ax, d in zip(axes[0], dists):
            for m in self.models():
                rows = [r for r in self.select(m, d) if r["level"] is not None]
                for metric in metrics:
                    ax.plot([r["level"] for r in rows], [r[metric] for r in rows],
                            styles.get(metric, "-"), marker=".", label=f"{m} {metric}")
            ax.set_title(d)
            ax.set_xlabel("level")
            if set(metrics) <= {"top1", "top5", "confidence"}:
                ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("accuracy" if set(metrics) <= {"top1", "top5"} else ", ".join(metrics))
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        _save_figure(fig, path)
        plt.close(fig)


def _save_figure(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Sums of the sweep metrics over a batch (divide by the count for means).

    Args:
        probabilities: `[N, classes]` softmax outputs (logits are softmaxed:
            any row with a negative value or not summing to 1 is treated as logits).
        labels: Integer labels `[N]`, class indices in `[0, classes - 1]`.

    Returns:
        Sums of top1, top5, confidence, entropy, cross_entropy over the batch.

    Raises:
        ValueError: For a label outside `[0, classes - 1]`, naming the range.
    """
    p = np.asarray(probabilities, np.float64)
    if p.min() < 0 or not np.allclose(p.sum(-1), 1.0, atol=1e-3):
        p = np.exp(p - p.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size != p.shape[0]:
        raise ValueError(f"labels must hold one label per row of probabilities. Received: "
                         f"{labels.size} labels for {p.shape[0]} rows")
    if labels.size and (labels.min() < 0 or labels.max() >= p.shape[1]):
        bad = sorted({int(v) for v in labels[(labels < 0) | (labels >= p.shape[1])]})
        raise ValueError(f"labels must be class indices in [0, {p.shape[1] - 1}] (the model has "
                         f"{p.shape[1]} outputs). Received: labels out of range: {bad[:5]}")
    true = p[np.arange(len(labels)), labels]
    # Rank of the true class; ties go to the lower index, as argmax does.
    before = np.arange(p.shape[1])[None, :] < labels[:, None]
    rank = ((p > true[:, None]) | ((p == true[:, None]) & before)).sum(-1)
    return {
        "top1": float((rank < 1).sum()),
        "top5": float((rank < min(5, p.shape[1])).sum()),
        "confidence": float(true.sum()),
        "entropy": float(-special.xlogy(p, p).sum()),
        "cross_entropy": float(-np.log(np.maximum(true, 1e-12)).sum()),
    }


def _split_model(spec) -> tuple[Callable, Callable | None]:
    if isinstance(spec, tuple):
        model, preprocess = spec
    else:
        model, preprocess = spec, None
    return model, preprocess


def sweep(models: Mapping[str, object], images: np.ndarray, labels: np.ndarray,
          distortions: Mapping[str, Sequence[float]] | Sequence[str] | None = None,
          preset: str = "dodge_karam", batch_size: int = 64, seed: int = 0,
          checkpoint: str | os.PathLike | None = None, progress: bool = True,
          options: Mapping[str, dict] | None = None) -> SweepResult:
    """Evaluates models over every level of every distortion.

    Args:
        models: Name -> a Keras model, or `(model, preprocess)` where
            `preprocess` maps float images on 0..255 to the model's input.
        images: uint8 or float images `[N, H, W, C]` on 0..255.
        labels: Integer labels `[N]`, class indices of every model: in
            `[0, classes - 1]` for a model with `classes` outputs.
        distortions: Name -> levels (read by `distort.as_distortions`, each level checked
            against its distortion's range); or a list of names whose levels come from
            `preset`; None for every distortion of `preset`.
        preset: The preset that supplies levels (see `distort.presets`).
        batch_size: Images per batch.
        seed: Seed of random distortions (batch `b` of a level uses `[seed, b]`).
        checkpoint: A JSON path: finished levels are saved there after each
            level and skipped when the sweep runs again.
        progress: Show a progress bar.
        options: Distortion name -> extra keyword options, e.g.
            `{"gaussian_blur": {"window": "4sigma-1"}}`
            (`distort.presets.options(preset)` gives a preset's own).

    Returns:
        A `SweepResult`.

    Raises:
        ValueError: For empty images, labels of another length or outside a
            model's class range (naming `labels` and the range), no model, or
            a checkpoint made with other settings.
    """
    seed = check_seed(seed)
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if len(images) == 0:
        raise ValueError("images must not be empty")
    if len(images) != len(labels):
        raise ValueError(f"images and labels must have the same length. "
                         f"Received: {len(images)} images and {len(labels)} labels")
    if not models:
        raise ValueError("models must name at least one model")
    for spec in models.values():
        check_class_labels(labels, _split_model(spec)[0])
    table = _distortion_table(distortions, preset)
    result = SweepResult(meta={"preset": preset, "n": int(len(images)), "seed": seed})
    done = set()
    if checkpoint is not None and Path(checkpoint).exists():
        previous = SweepResult.from_json(checkpoint)
        for key in ("preset", "n", "seed"):
            if previous.meta.get(key) != result.meta[key]:
                raise ValueError(
                    f"checkpoint {checkpoint} was made with {key}={previous.meta.get(key)!r}, "
                    f"not {result.meta[key]!r}: delete it or choose another output")
        result = previous
        done = {(r["model"], r["distortion"], r["level"]) for r in result.rows}
    steps = [(d, lv) for d, lvs in table.items() for lv in [None, *lvs]]
    bar = _progress(len(steps)) if progress else None
    clean_cache: dict[str, dict] = {}
    for i, (name, level) in enumerate(steps):
        todo = [m for m in models if (m, name, level) not in done]
        if todo:
            if level is None and clean_cache:
                sums = {m: clean_cache[m] for m in todo if m in clean_cache}
                missing = [m for m in todo if m not in sums]
                if missing:
                    sums.update(_evaluate_level({m: models[m] for m in missing}, images, labels,
                                                name, None, batch_size, seed, options))
            else:
                sums = _evaluate_level({m: models[m] for m in todo}, images, labels, name, level,
                                       batch_size, seed, options)
            if level is None:
                clean_cache.update(sums)
            for m in todo:
                result.rows.append({"model": m, "distortion": name, "level": level,
                                    "n": int(len(images)),
                                    **{k: v / len(images) for k, v in sums[m].items()}})
            if checkpoint is not None:
                result.to_json(checkpoint)
        if bar:
            bar.update(i + 1, [("level", 0 if level is None else level)])
    order = {(d, lv): j for j, (d, lv) in enumerate(steps)}
    result.rows.sort(key=lambda r: (order.get((r["distortion"], r["level"]), 1e9),
                                    list(models).index(r["model"]) if r["model"] in models else 0))
    return result


def _distortion_table(distortions, preset: str) -> dict[str, tuple[float, ...]]:
    """name -> levels to sweep: the preset's, or `distortions` read by `as_distortions`."""
    if distortions is None:
        return {k: tuple(v) for k, v in presets.get(preset).items()}
    if not isinstance(distortions, Mapping):  # names: the preset's levels
        distortions = {d: presets.levels(preset, d) for d in distortions}
    return {d.name: d.levels for d in as_distortions(distortions)}


def _evaluate_level(models, images, labels, name, level, batch_size, seed, options):
    sums = {m: dict.fromkeys(METRICS, 0.0) for m in models}
    for b, start in enumerate(range(0, len(images), batch_size)):
        x = images[start : start + batch_size]
        if level is not None:
            x = registry.apply(x, name, level, seed=tf.constant([seed, b], tf.int64),
                               **(options or {}).get(name, {}))
        x = tf.cast(x, tf.float32)
        y = labels[start : start + batch_size]
        for m, spec in models.items():
            model, preprocess = _split_model(spec)
            inp = fit_to_model(x, model)
            inp = preprocess(inp) if preprocess is not None else inp
            probs = model(inp, training=False)
            for k, v in score(np.asarray(probs), y).items():
                sums[m][k] += v
    return sums


def fit_to_model(images, model):
    """Resizes float images to a model's fixed input size (bilinear, antialiased).

    Args:
        images: Float images `[N, H, W, C]`.
        model: A Keras model; one without a fixed input height and width
            (or of the images' size already) gets the images unchanged.

    Returns:
        The images at the model's input size.
    """
    try:
        height, width = model.input_shape[1:3]
    except (AttributeError, ValueError, TypeError):
        return images
    if height is None or width is None or tuple(images.shape[1:3]) == (height, width):
        return images
    return tf.image.resize(images, (height, width), method="bilinear", antialias=True)


def _progress(n: int):
    import keras

    return keras.utils.Progbar(n, stateful_metrics=["level"])


def level_grid(image: np.ndarray, distortions: Mapping[str, Sequence[float]], path, seed: int = 0,
               options: Mapping[str, dict] | None = None) -> None:
    """Saves a figure of one image at every level of every distortion (a row each).

    Args:
        image: One uint8 image `[H, W, 3]`.
        distortions: Name -> levels.
        path: Output image path (PNG).
        seed: Seed of random distortions.
        options: Distortion name -> extra keyword options.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = check_seed(seed)
    image = np.asarray(image)
    rows = list(distortions.items())
    cols = 1 + max(len(v) for _, v in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.4 * cols, 1.5 * len(rows)), squeeze=False)
    for r, (name, levels) in enumerate(rows):
        panels = [("clean", image)] + [
            (f"{lv:g}", np.asarray(registry.apply(image, name, lv, seed=seed,
                                                  **(options or {}).get(name, {}))))
            for lv in levels]
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(panels):
                ax.imshow(panels[c][1].astype(np.uint8).squeeze(), cmap="gray")
                ax.set_title(panels[c][0], fontsize=7)
        axes[r][0].text(-0.1, 0.5, name, transform=axes[r][0].transAxes, ha="right", va="center",
                        fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)

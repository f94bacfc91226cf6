"""`distort.benchmark`: a model's ImageNet-C numbers in one call.

Top-1 and error for every corruption and severity, the Corruption Errors,
the mCE and the relative mCE (`distort.corruption_metrics`, AlexNet's
constants by default), a Markdown table and a figure. The corruptions are
generated from clean images with `distort.imagenet_c` through
`distort.sweep.sweep` (seeded, resumable, with a progress bar), or read
from a released ImageNet-C tree or CIFAR-10-C / CIFAR-100-C folder
(`distort.c_datasets`). With a `checkpoint`, every finished severity is
kept, and the same call resumes.

Example:

>>> import keras, numpy as np, distort
>>> model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
...                           keras.layers.Dense(10, activation="softmax")])
>>> x = np.zeros([4, 32, 32, 3], np.uint8); y = np.arange(4)
>>> result = distort.benchmark(model, x, y, corruptions=["fog"], severities=[1], progress=False,
...                            baseline=None)
>>> sorted(result.errors())
['fog']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from distort import corruption_metrics as cm
from distort import imagenet_c
from distort.imagenet_c.constants import ALL, COMMON, HELD_OUT
from robustkit.io import atomic_path, atomic_write_text
from robustkit.seeds import check_seed

CORRUPTION_SETS = {"imagenet_c": COMMON, "imagenet_c_extra": HELD_OUT, "all": ALL}
SOURCES = ("generate", "imagenet_c", "cifar_c")


@dataclass
class BenchmarkResult:
    """Per corruption and severity: n, top1 and error (severity None: the clean images).

    `summary` holds the Corruption Errors and the mCE (`corruption_metrics.summary`)
    when a baseline was given.
    """

    model: str
    rows: list[dict] = field(default_factory=list)
    summary: dict | None = None
    meta: dict = field(default_factory=dict)

    def errors(self) -> dict[str, list[float]]:
        """Corruption -> its errors by increasing severity."""
        out: dict[str, dict[int, float]] = {}
        for r in self.rows:
            if r["severity"] is not None:
                out.setdefault(r["corruption"], {})[r["severity"]] = r["error"]
        return {c: [v[s] for s in sorted(v)] for c, v in out.items()}

    def clean_error(self) -> float | None:
        """The error on the clean images, if they were scored."""
        clean = [r["error"] for r in self.rows if r["severity"] is None]
        return clean[0] if clean else None

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes the rows, summary and metadata as JSON (atomically)."""
        atomic_write_text(path, json.dumps({"model": self.model, "rows": self.rows,
                                            "summary": self.summary, "meta": self.meta}, indent=1))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "BenchmarkResult":
        data = json.loads(Path(path).read_text())
        return cls(data["model"], data["rows"], data.get("summary"), data.get("meta", {}))

    def to_markdown(self) -> str:
        """One row per corruption: error per severity, mean error, CE and relative CE."""
        errors = self.errors()
        severities = sorted({s for r in self.rows if (s := r["severity"]) is not None})
        ce = (self.summary or {}).get("ce", {})
        rel = (self.summary or {}).get("relative_ce", {})
        head = ["corruption", *[f"error s{s}" for s in severities], "mean error", "CE", "rel. CE"]
        lines = [f"**{self.model}** (top-1 error; CE against {self._baseline_name()})", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c, values in errors.items():
            cells = [c, *[f"{v:.3f}" for v in values], f"{np.mean(values):.3f}",
                     f"{ce[c]:.3f}" if c in ce else "", f"{rel[c]:.3f}" if c in rel else ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        clean = self.clean_error()
        if clean is not None:
            lines.append(f"clean error: {clean:.3f}")
        if self.summary:
            scored = len(self.summary["corruptions"])
            over = "" if self.summary.get("complete") else f" (over {scored} corruptions only)"
            lines.append(f"mCE: {100 * self.summary['mce']:.1f}%{over}")
            if self.summary.get("relative_mce") is not None:
                undefined = self.summary.get("relative_undefined") or []
                note = (f" (without {', '.join(undefined)}: the baseline's error does not rise "
                        f"above its clean error there)" if undefined else "")
                lines.append(f"relative mCE: {100 * self.summary['relative_mce']:.1f}%{note}")
        return "\n".join(lines) + "\n"

    def _baseline_name(self) -> str:
        return (self.summary or {}).get("baseline") or "no baseline"

    def plot(self, path: str | os.PathLike) -> None:
        """Error against severity per corruption, and the Corruption Errors as bars."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        errors = self.errors()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for c in errors:
            points = sorted((r["severity"], r["error"]) for r in self.rows if r["corruption"] == c
                            and r["severity"] is not None)
            axes[0].plot(*zip(*points), marker=".", label=c)
        clean = self.clean_error()
        if clean is not None:
            axes[0].axhline(clean, color="k", ls="--", lw=1, label="clean")
        axes[0].set_xlabel("severity")
        axes[0].set_xticks([1, 2, 3, 4, 5])
        axes[0].set_ylabel("top-1 error")
        axes[0].set_ylim(0, 1)
        axes[0].set_title(self.model)
        axes[0].legend(fontsize=6, ncol=2)
        ce = (self.summary or {}).get("ce", {})
        names = list(ce) if ce else list(errors)
        heights = [ce[c] for c in names] if ce else [float(np.mean(errors[c])) for c in names]
        axes[1].bar(range(len(names)), heights, color="tab:blue")
        axes[1].set_xticks(range(len(names)), names, rotation=70, fontsize=7)
        if ce:
            axes[1].axhline(self.summary["mce"], color="tab:red", label=f"mCE {self.summary['mce']:.3f}")
            axes[1].axhline(1.0, color="k", ls=":", lw=1)
            axes[1].set_ylabel(f"CE (1 = {self._baseline_name()})")
            axes[1].legend(fontsize=7)
        else:
            axes[1].set_ylabel("mean top-1 error")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)


def corruption_list(corruptions: str | Sequence[str]) -> list[str]:
    """The corruption names of a set ("imagenet_c", "imagenet_c_extra", "all") or list.

    Example:

    >>> corruption_list(["imagenet_c.fog", "snow"])
    ['fog', 'snow']
    """
    if isinstance(corruptions, str):
        if corruptions not in CORRUPTION_SETS:
            raise ValueError(f"corruptions must be one of {sorted(CORRUPTION_SETS)} or a list of "
                             f"names. Received: corruptions={corruptions!r}")
        return list(CORRUPTION_SETS[corruptions])
    names = [imagenet_c.corruption_name(c) for c in corruptions]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"corruptions must name each corruption once. Received: {list(corruptions)}")
    return names


def _severities(severities) -> list[int]:
    values = list(severities)
    if not values or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or
                         not 1 <= s <= 5 for s in values) or len(set(values)) != len(values):
        raise ValueError(f"severities must be distinct integers in 1..5. Received: {values}")
    return sorted(int(s) for s in values)


def benchmark(model, images=None, labels=None, corruptions: str | Sequence[str] = "imagenet_c", *,
              severities: Sequence[int] = (1, 2, 3, 4, 5), source: str = "generate",
              data: str | os.PathLike | None = None, baseline: dict | None = cm.ALEXNET,
              name: str = "model", batch_size: int = 64, seed: int = 0,
              checkpoint: str | os.PathLike | None = None, progress: bool = True,
              class_index=None, limit: int | None = None, every: int = 1) -> BenchmarkResult:
    """Scores a model on the ImageNet-C corruptions: errors, CE, mCE, relative mCE.

    Args:
        model: A Keras model, or `(model, preprocess)` with `preprocess`
            mapping float images on 0..255 to its input (as `distort.sweep`).
        images: Clean uint8 or float images `[N, H, W, C]` on 0..255 (224-px
            crops for ImageNet): corrupted here with `source="generate"`, and
            the clean error with any source. May be None for a tree.
        labels: Their integer labels `[N]`.
        corruptions: "imagenet_c" (the fifteen, default), "imagenet_c_extra"
            (the four held-out), "all", or a list of names.
        severities: The severities to score (default all five).
        source: "generate" (default: corrupt `images`), "imagenet_c" (read an
            ImageNet-C tree at `data`) or "cifar_c" (a CIFAR-10-C/100-C folder).
        data: The tree or folder for the two reading sources.
        baseline: `corruption_metrics.ALEXNET` (default), another baseline
            (`corruption_metrics.baseline_from_errors`), or None for errors
            only. The relative mCE needs the clean images.
        name: The model's label in the rows and reports.
        batch_size: Images per batch.
        seed: Seed of the generated corruptions (batch b of a severity uses [seed, b]).
        checkpoint: A JSON path keeping every finished severity; the same call
            resumes from it.
        progress: Show a progress bar.
        class_index: For an ImageNet-C tree: wnid -> label (see
            `distort.c_datasets.list_imagenet_c`).
        limit: For the reading sources: at most this many images per severity.
        every: For an ImageNet-C tree: every `every`-th image only.

    Returns:
        A `BenchmarkResult`.

    Raises:
        ValueError: For bad arguments, a missing tree or corruption, or a
            checkpoint made with other settings.
    """
    seed = check_seed(seed)
    names = corruption_list(corruptions)
    levels = _severities(severities)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}. Received: source={source!r}")
    if source != "generate" and data is None:
        raise ValueError(f"data must be the dataset's folder with source={source!r}")
    if source == "generate" and images is None:
        raise ValueError("images and labels must be given to generate the corruptions")
    if (images is None) != (labels is None):
        raise ValueError("images and labels must be given together")
    if source == "generate":
        from distort.sweep import sweep

        table = {imagenet_c.registry_name(c): tuple(float(s) for s in levels) for c in names}
        result = sweep({name: model}, images, labels, table, preset="imagenet_c",
                       batch_size=batch_size, seed=seed, checkpoint=checkpoint, progress=progress)
        rows = result.rows
        meta = {"source": source, "n": int(len(images)), "seed": seed}
    else:
        rows = _score_files(model, name, names, levels, source, data, images, labels, batch_size,
                            checkpoint, progress, class_index, limit, every)
        meta = {"source": source, "data": str(data), "limit": limit, "every": every}
    out = BenchmarkResult(name, _benchmark_rows(rows, name, names, levels), meta=meta)
    if baseline is not None:
        out.summary = _summary(out, baseline)
    return out


def _benchmark_rows(rows: list[dict], name: str, names: list[str], levels: list[int]) -> list[dict]:
    """Sweep rows -> one clean row and one row per corruption and severity, in order."""
    out, clean = [], None
    for r in rows:
        if r["model"] != name or not r["distortion"].startswith(imagenet_c.PREFIX):
            continue
        corruption = r["distortion"][len(imagenet_c.PREFIX):]
        if r["level"] is None:
            clean = clean or {"corruption": None, "severity": None, "n": r["n"], "top1": r["top1"],
                              "error": 1.0 - r["top1"]}
        elif corruption in names and int(r["level"]) in levels:
            out.append({"corruption": corruption, "severity": int(r["level"]), "n": r["n"],
                        "top1": r["top1"], "error": 1.0 - r["top1"]})
    out.sort(key=lambda r: (names.index(r["corruption"]), r["severity"]))
    return ([clean] if clean else []) + out


def _summary(result: BenchmarkResult, baseline: dict) -> dict:
    errors = result.errors()
    scored = [c for c in errors if c in baseline["errors"]]
    if not scored:
        raise ValueError(f"the baseline ({baseline.get('name')}) has none of the corruptions "
                         f"scored: {list(errors)}; pass baseline=None for errors only")
    ce = cm.corruption_errors(errors, baseline, scored)
    clean = result.clean_error()
    # The relative CE divides by the baseline's rise over its clean error: where the
    # baseline does not degrade at all, it is undefined and left out (and listed).
    rising = [c for c in scored if baseline["errors"][c] > baseline["clean_error"]]
    rel = (cm.relative_corruption_errors(errors, clean, baseline, rising)
           if clean is not None and rising else {})
    return {"baseline": baseline.get("name", "baseline"), "corruptions": scored,
            "complete": sorted(scored) == sorted(baseline["errors"]), "ce": ce,
            "mce": sum(ce.values()) / len(ce), "relative_ce": rel,
            "relative_mce": sum(rel.values()) / len(rel) if rel else None,
            "relative_undefined": [c for c in scored if c not in rising]}


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 64) -> dict:
    """Sums of the sweep's metrics (`distort.sweep.score`) of a model over images.

    Args:
        model: A Keras model or `(model, preprocess)`.
        images: uint8 or float images on 0..255 (resized to the model's input).
        labels: Integer labels.
        batch_size: Images per batch.

    Returns:
        Metric -> sum over the images (divide by their number for means).
    """
    import tensorflow as tf

    from distort.sweep import METRICS, fit_to_model, score

    net, preprocess = model if isinstance(model, tuple) else (model, None)
    sums = dict.fromkeys(METRICS, 0.0)
    for start in range(0, len(images), batch_size):
        x = fit_to_model(tf.cast(images[start : start + batch_size], tf.float32), net)
        probs = net(preprocess(x) if preprocess is not None else x, training=False)
        for k, v in score(np.asarray(probs), labels[start : start + batch_size]).items():
            sums[k] += v
    return sums


def _score_files(model, name, names, levels, source, data, images, labels, batch_size,
                 checkpoint, progress, class_index, limit, every) -> list[dict]:
    """Scores a released dataset's files, severity by severity, resumable like a sweep."""
    from distort import c_datasets
    from distort.sweep import SweepResult

    meta = {"preset": "imagenet_c", "source": source, "data": str(data), "limit": limit,
            "every": every}
    result = SweepResult(meta=meta)
    if checkpoint is not None and Path(checkpoint).exists():
        previous = SweepResult.from_json(checkpoint)
        for key, value in meta.items():
            if previous.meta.get(key) != value:
                raise ValueError(f"checkpoint {checkpoint} was made with {key}="
                                 f"{previous.meta.get(key)!r}, not {value!r}: delete it or "
                                 f"choose another output")
        result = previous
    done = {(r["distortion"], r["level"]) for r in result.rows if r["model"] == name}
    steps = ([(names[0], None)] if images is not None else []) + \
        [(c, float(s)) for c in names for s in levels]
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(steps), stateful_metrics=["severity"])
    for i, (corruption, level) in enumerate(steps):
        key = (imagenet_c.registry_name(corruption), level)
        if key not in done:
            if level is None:
                x, y = np.asarray(images), np.asarray(labels).reshape(-1)
            elif source == "imagenet_c":
                folder = c_datasets.load_imagenet_c(data, corruption, int(level),
                                                    class_index=class_index, limit=limit,
                                                    every=every)
                x, y = folder.images, folder.labels
            else:
                x, y = c_datasets.load_cifar_c(data, corruption, int(level), limit=limit)
            sums = evaluate(model, x, y, batch_size)
            result.rows.append({"model": name, "distortion": key[0], "level": level,
                                "n": int(len(x)), **{k: v / len(x) for k, v in sums.items()}})
            if checkpoint is not None:
                result.to_json(checkpoint)
        if bar:
            bar.update(i + 1, [("severity", 0 if level is None else level)])
    return result.rows

"""Shared plumbing of the CIFAR-10 DeepCorrect analysis examples.

`ideal_correction.py`, `ranked_vs_random.py`, `local_vs_global.py`,
`training_curves.py` and `zhou_finetune.py` each reproduce one analysis of the
DeepCorrect paper (or of Zhou et al.) on CIFAR-10. They share, through this
module, the demo's machinery (`studies.demo`): its data split, its
`cifar10_quick` baseline (trained and cached in `--out` unless `--model` is
given), its filter ranking and its repair training, plus the evaluation,
the stage cache and the table writers.

An analysis keeps every finished stage in `--out` (`stages.json`, written
atomically, and the trained models): running the same command again skips
them. A folder made with other settings is refused unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from deepcorrect.stages import slug
from distort import presets
from robustkit.cli_common import CLIError
from robustkit.io import atomic_path, atomic_write_text
from robustkit.seeds import seed_argument

DEFAULT_DATA = "../shared/data/cifar10/cifar10.npz"
DISTORTIONS = ("gaussian_blur", "awgn")
LEVEL_PRESET = "deepcorrect_cifar"
SETTINGS_FILE = "settings.json"
# What an analysis writes in --out besides its tables and figures (removed by --overwrite).
CACHE = ("stages.json", SETTINGS_FILE, "models", "checkpoints", "rankings", "curves")
# The settings every analysis has; each script adds its own to its FULL and QUICK tables.
COMMON_FLAGS = ("train_images", "epochs", "batch_size", "test_images", "rank_images")


def levels(distortion: str) -> list[float]:
    """The DeepCorrect CIFAR levels of a distortion (blur sigma 0.5..3, AWGN 5..30)."""
    return list(presets.levels(LEVEL_PRESET, distortion))


def add_arguments(parser: argparse.ArgumentParser, full: Mapping[str, Any],
                  quick: Mapping[str, Any], out: str, distortions: bool = True) -> None:
    """The flags every analysis takes; numbers left out come from the FULL or QUICK table.

    `--distortions` (blur, noise or both) only with `distortions=True`; the numeric flags
    of `COMMON_FLAGS` only where the FULL table has them.
    """
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help=f"CIFAR-style .npz (default {DEFAULT_DATA})")
    parser.add_argument("--model", default=None,
                        help="a trained baseline .keras; default: train the demo's cifar10_quick "
                             "baseline and cache it in --out")
    parser.add_argument("--rankings", default=None,
                        help="folder with <distortion>.json rankings of --model to reuse "
                             "(e.g. another analysis' --out/rankings); default: rank here")
    parser.add_argument("--out", default=out, help=f"output folder (default {out})")
    parser.add_argument("--figures", default=None,
                        help="folder for the PNG figures (default: --out), e.g. docs/figures")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run on a few hundred images: "
                             + ", ".join(f"{k}={v}" for k, v in quick.items()))
    if distortions:
        parser.add_argument("--distortions", nargs="+", default=list(DISTORTIONS),
                            choices=DISTORTIONS, help="default: both")
    for flag in (f for f in COMMON_FLAGS if f in full):
        parser.add_argument("--" + flag.replace("_", "-"), type=int, default=None,
                            help=f"default {full[flag]} ({quick[flag]} with --quick)")
    if "train_images" in full:
        parser.add_argument("--unit-lr", type=float, default=None,
                            help="initial SGD learning rate of correction units (default: the "
                                 "demo's, 0.1 as in the paper)")
        parser.add_argument("--unit-bn", action="store_true",
                            help="also train the batch norm after each corrected conv (it then "
                                 "normalises with batch statistics), as the original CIFAR code")
        parser.add_argument("--unit-site", choices=("conv", "batch_norm"), default=None,
                            help="where units read and write: the conv output (default, as the "
                                 "paper) or the output of the batch norm after it")
    parser.add_argument("--seed", type=seed_argument, default=0, help="seed of every random choice")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard what an earlier run with other settings left in --out")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                        help="Keras progress output (default 0)")


def resolve(args: argparse.Namespace, full: Mapping[str, Any],
            quick: Mapping[str, Any]) -> dict[str, Any]:
    """The FULL or QUICK table with the flags given on the command line applied."""
    table = dict(quick if args.quick else full)
    for key in table:
        value = getattr(args, key, None)
        if value is not None:
            table[key] = value
    for key in (k for k in COMMON_FLAGS if k in table):
        if int(table[key]) < 1:
            raise CLIError(f"--{key.replace('_', '-')} must be at least 1. Received: {table[key]}")
    if getattr(args, "unit_lr", None) is not None:  # recorded only when given
        if not args.unit_lr > 0:
            raise CLIError(f"--unit-lr must be positive. Received: {args.unit_lr}")
        table["unit_lr"] = float(args.unit_lr)
    if getattr(args, "unit_bn", False):  # recorded only when given
        table["unit_bn"] = True
    if getattr(args, "unit_site", None) is not None:
        table["unit_site"] = args.unit_site
    return table


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file (identifies the baseline a cached run used)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Analysis:
    """The data, baseline, rankings, stage cache and evaluation of one analysis run.

    Args:
        script: the analysis' name (recorded with its settings).
        args: the parsed flags (`add_arguments`).
        settings: from `resolve`.
    """

    def __init__(self, script: str, args: argparse.Namespace, settings: Mapping[str, Any]):
        from studies import demo

        self.args = args
        self.settings = dict(settings)
        self.seed = int(args.seed)
        self.out = Path(args.out)
        self.distortions = list(dict.fromkeys(getattr(args, "distortions", DISTORTIONS)))
        if args.model is not None and not Path(args.model).is_file():
            raise CLIError(f"--model not found: {args.model}")
        if not Path(args.data).is_file():
            raise CLIError(f"CIFAR-10 not found at {args.data} (pass --data)")
        if args.rankings is not None and not Path(args.rankings).is_dir():
            raise CLIError(f"--rankings must be a folder. Received: {args.rankings}")
        record = {
            "script": script, "settings": self.settings, "seed": self.seed,
            "data": str(args.data), "quick": bool(args.quick),
            "model": None if args.model is None else file_digest(args.model),
            "rankings": args.rankings,
        }
        self._prepare(record, args.overwrite)
        self.stages = demo.Stages(self.out)
        s = self.settings
        overrides = {"test_images": s["test_images"]}
        if "rank_images" in s:
            overrides["rank_images"] = s["rank_images"]
        if "train_images" in s:  # the repair budget, the same for every trained method
            overrides["repair"] = {"images": s["train_images"], "epochs": s["epochs"],
                                   "batch_size": s["batch_size"],
                                   "decay_every": s.get("decay_every", max(1, s["epochs"] - 1))}
            if "unit_lr" in s:
                overrides["repair"]["unit_learning_rate"] = s["unit_lr"]
        self.config = demo.resolve_config("cifar10", quick=bool(args.quick), data=str(args.data),
                                          seed=self.seed, **overrides)
        self.train, self.holdout, self.test = demo.load_data(self.config)
        if s.get("rank_images", 0) > len(self.holdout[0]):
            raise CLIError(f"--rank-images must be at most {len(self.holdout[0])} (the held-out "
                           f"training images). Received: {s['rank_images']}")
        self.verbose = int(args.verbose)
        self.model = self._baseline(args.model)
        self._distorted: dict[str, list[np.ndarray]] = {}
        self.test_accuracy = accuracy(self.model, self.test[0], self.test[1])

    # ---- setup ----------------------------------------------------------------------

    def _prepare(self, record: dict, overwrite: bool) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise CLIError(f"--out must be a folder. Received a file: {self.out}")
        saved = self.out / SETTINGS_FILE
        if saved.is_file() and json.loads(saved.read_text()) != record:
            if not overwrite:
                raise CLIError(f"{self.out} holds a run with other settings (see {saved}); pass "
                               "--overwrite or choose another --out")
            for name in CACHE:
                target = self.out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, json.dumps(record, indent=1, sort_keys=True))

    def _baseline(self, path: str | None):
        import keras

        from studies import demo

        if path is not None:
            model = keras.models.load_model(path, safe_mode=True)
            self.baseline_info = {"source": str(path)}
        else:
            model = demo.train_baseline(self.config, self.train, self.holdout, self.out,
                                        self.stages, verbose=self.verbose)
            rec = self.stages.record("baseline")
            self.baseline_info = {"source": "trained here", "images": rec["images"],
                                  "epochs": rec["epochs"], "seconds": rec["seconds"]}
        if tuple(model.input_shape[1:]) != tuple(self.test[0].shape[1:]):
            raise CLIError(f"--model takes inputs of shape {model.input_shape[1:]}, the data has "
                           f"{self.test[0].shape[1:]}")
        return model

    def ranking(self, distortion: str):
        """Algorithm 1 for every conv layer (cached in `rankings/`, or read from --rankings)."""
        from deepcorrect import Ranking
        from studies import demo

        if self.args.rankings is not None:
            path = Path(self.args.rankings) / f"{distortion}.json"
            if not path.is_file():
                raise CLIError(f"--rankings has no {path.name}: {path}")
            return Ranking.load(path, self.model)
        return demo.rank_filters(self.config, self.model, self.holdout, distortion, self.out,
                                 self.stages)

    # ---- evaluation -----------------------------------------------------------------

    def test_sets(self, distortion: str) -> list[np.ndarray]:
        """The test images: clean, then distorted at each level (level k: seed + 1000 + k)."""
        import distort

        if distortion not in self._distorted:
            x = self.test[0]
            self._distorted[distortion] = [x] + [
                np.asarray(distort.apply(x, distortion, lv, seed=self.seed + 1000 + k))
                for k, lv in enumerate(levels(distortion))]
        return self._distorted[distortion]

    def accuracy(self, model, distortion: str) -> list[float]:
        """Top-1 on the clean test images and at every level: `[clean, level 1, ...]`."""
        return [accuracy(model, x, self.test[1]) for x in self.test_sets(distortion)]

    def figure(self, name: str) -> Path:
        """Where a figure goes: `--figures` if given, else `--out`."""
        folder = Path(self.args.figures) if self.args.figures else self.out
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def cached(self, key: str, compute: Callable[[], dict]) -> dict:
        """A stage record: computed once, then read from `stages.json`."""
        if not self.stages.done(key):
            self.stages.finish(key, **compute())
        return self.stages.record(key)

    def with_unit_settings(self, method: Mapping[str, Any]) -> dict:
        """`method` with `--unit-bn` and `--unit-site` applied (to `deepcorrect` kinds)."""
        method = dict(method)
        if method["kind"] == "deepcorrect":
            method["train_batch_norm"] = bool(self.settings.get("unit_bn"))
            method["site"] = self.settings.get("unit_site", "conv")
        return method

    def repair(self, method: Mapping[str, Any], ranks: Any, distortion: str) -> dict:
        """Trains one demo method (`finetune` or `deepcorrect` kind) and evaluates it.

        Training is the demo's (`demo.train_method`: the same images, epochs, batch
        size and schedule for every method, checkpointed per epoch); `ranks` is a
        `Ranking` or a `{layer: ordered indices}` dict for `deepcorrect.wrap`.

        Returns:
            `{"accuracy": [clean, level 1, ...], "seconds", "trainable", "epochs", "images"}`.
        """
        from studies import demo

        method = self.with_unit_settings(method)

        def compute() -> dict:
            model = demo.train_method(method, self.model, ranks, self.config, self.train,
                                      distortion, self.out, self.stages, verbose=self.verbose)
            trained = self.stages.record(f"train/{slug(method['name'])}/{distortion}")
            return {"accuracy": self.accuracy(model, distortion),
                    **{k: trained[k] for k in ("seconds", "trainable", "epochs", "images")}}

        return self.cached(f"result/{slug(method['name'])}/{distortion}", compute)

    def budget(self) -> str:
        """The repair budget every trained method gets, in words."""
        r = self.config["repair"]
        return (f"{r['images']} training images, {r['epochs']} epochs, batch {r['batch_size']}, "
                f"SGD (Nesterov momentum 0.9) at {r['unit_learning_rate']:g} for units and "
                f"{r['finetune_learning_rate']:g} for fine-tuning, x0.1 after "
                f"{r['decay_every']} epoch(s); half of every batch distorted at a random level"
                + ("; the batch norm after each corrected conv trains with the units"
                   if self.settings.get("unit_bn") else "")
                + ("; units sit after the batch norm that follows each corrected conv"
                   if self.settings.get("unit_site") == "batch_norm" else ""))

    def describe(self) -> str:
        """One line: the baseline and the image counts, for reports."""
        s = self.settings
        base = ("`--model " + str(self.args.model) + "`" if self.args.model else
                f"the demo's cifar10_quick trained here on {self.baseline_info['images']} "
                f"images for {self.baseline_info['epochs']} epochs")
        ranking = ""
        if self.args.rankings:
            ranking = f" Rankings: read from `{self.args.rankings}`."
        elif "rank_images" in s:
            ranking = f" Ranking: {s['rank_images']} held-out training images."
        return (f"Baseline: {base} (clean top-1 {self.test_accuracy:.3f}"
                f" on {len(self.test[0])} test images).{ranking} Test: the first "
                f"{len(self.test[0])} CIFAR-10 test images.")


def accuracy(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 accuracy of a Keras classifier (inference mode)."""
    correct = 0
    for i in range(0, len(images), batch_size):
        scores = model(np.asarray(images[i:i + batch_size], np.float32), training=False)
        correct += int(np.sum(np.argmax(np.asarray(scores), -1) == labels[i:i + batch_size]))
    return correct / len(images)


def random_filter_sets(channels: int, count: int, trials: int, seed: int) -> list[np.ndarray]:
    """`trials` random sets of `count` distinct filters out of `channels`, seeded.

    Each set is drawn without replacement, independently of the others (two sets may
    share filters, as the paper's random trials do); the same `(channels, count, trials,
    seed)` gives the same sets.
    """
    if not 1 <= count <= channels:
        raise ValueError(f"count must be in [1, {channels}]. Received: count={count}")
    rng = np.random.default_rng([int(seed), int(channels), int(count)])
    return [rng.choice(channels, count, replace=False) for _ in range(int(trials))]


def write_report(out: Path, text: str) -> None:
    """Writes `out/report.md` atomically and prints it."""
    atomic_write_text(out / "report.md", text)
    print(text)
    print(f"wrote {out}")


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired-sample t-test (scipy's `ttest_rel`) of `a` against `b`.

    Returns:
        `{"t", "p", "n", "mean_difference"}`; t and p are NaN when every difference
        is the same (zero variance).
    """
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(
            f"a and b must be 1-D of the same length >= 2. Received {a.shape}, {b.shape}")
    result = stats.ttest_rel(a, b)
    return {"t": float(result.statistic), "p": float(result.pvalue), "n": int(a.size),
            "mean_difference": float(np.mean(a - b))}


# ---- outputs ------------------------------------------------------------------------


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                   digits: int = 3) -> str:
    """A Markdown table of `rows` (dicts) with the given columns."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, ""), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_table(out: Path, stem: str, rows: Sequence[Mapping[str, Any]],
                columns: Sequence[str], meta: Mapping[str, Any] | None = None,
                digits: int = 3) -> str:
    """Writes `stem.csv`, `stem.json` and `stem.md` atomically; returns the Markdown."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    atomic_write_text(out / f"{stem}.json", json.dumps(
        {"meta": dict(meta or {}), "columns": list(columns), "rows": list(rows)}, indent=1))
    text = markdown_table(rows, columns, digits)
    atomic_write_text(out / f"{stem}.md", text)
    return text


def level_columns(distortion: str) -> list[str]:
    """Column names `clean, <level 1>, ..., avg` of an accuracy row."""
    return ["clean"] + [f"{lv:g}" for lv in levels(distortion)] + ["avg"]


def table_columns(head: Sequence[str], distortions: Sequence[str]) -> list[str]:
    """`head`, then clean, every level of the distortions (in increasing order), avg.

    For a CSV holding rows of several distortions; a row leaves other distortions'
    levels empty.
    """
    cols = {c for d in distortions for c in level_columns(d)[1:-1]}
    return list(head) + ["clean"] + sorted(cols, key=float) + ["avg"]


def accuracy_cells(distortion: str, values: Sequence[float]) -> dict[str, float]:
    """`{clean: .., <level>: .., avg: ..}`; the average is over clean and every level."""
    cells = dict(zip(level_columns(distortion)[:-1], (float(v) for v in values)))
    cells["avg"] = float(np.mean(values))
    return cells


def save_figure(fig, path: Path) -> None:
    """Writes a matplotlib figure as PNG, atomically, and closes it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

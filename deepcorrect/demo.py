"""The whole story on one small dataset: measure, rank, repair, compare (`deepcorrect demo`).

`run(config, out)` trains a baseline CNN on clean images, sweeps it over blur and noise,
ranks its filters (Algorithm 1), wraps it with correction units and trains them, trains the
comparison methods with the same budget (the same images, epochs and batch size), and
writes one comparison table, a Markdown report and its figures to `out`.

Every stage keeps its result in `out` (atomic writes): the baseline and every trained model
as `.keras`, the rankings as JSON, the evaluations as sweep checkpoints, the timings in
`stages.json`. Running again skips finished stages, and a training stage interrupted
part-way resumes after its last finished epoch. The configuration is a plain table
(`DEMO_PRESETS`, `QUICK`); the methods of the table are data too (`DEMO_METHODS`), so
`examples/cifar10_deepcorrect.py` runs the paper's Tables 3/4 with the same code.

Example:

```python
from deepcorrect import demo

config = demo.resolve_config("fashion_mnist", quick=True)
result = demo.run(config, "out/demo-quick")
print(result["table"])
```
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from deepcorrect.surgery import trainable_parameters
from distort import presets
from distort.io import atomic_path, atomic_write_text

# The methods of the demo's table. `kind` picks how a method is made and trained:
# "baseline" (the pretrained network), "finetune" (`deepcorrect.finetune(k)`),
# "deepcorrect" (`deepcorrect.wrap` with a ranking), "restorer" (a QRNet-style U-Net in
# front of the frozen baseline; `mode` "qrnet" or "recnet") and "classical" (a non-learned
# restoration, `deepcorrect.restoration`).
DEMO_METHODS: tuple[dict[str, Any], ...] = (
    {"name": "Baseline", "kind": "baseline"},
    {"name": "Finetune-2", "kind": "finetune", "k": 2},
    {"name": "DeepCorrect", "kind": "deepcorrect", "beta": 0.5, "unit": "cw",
     "site": "batch_norm"},  # after each conv's batch norm: see docs/RESULTS.md
    {"name": "QRNet", "kind": "restorer", "mode": "qrnet"},
)

# Per dataset: the network, the levels (chosen so that the baseline loses most of its accuracy
# by the last level), the data split and the training budget. `repair` is the budget of
# every repair method: the same images, epochs and batch size. Learning rates follow the
# paper: 0.1 for correction units, 0.01 for fine-tuning (SGD, Nesterov momentum 0.9, x0.1
# after `decay_every` epochs); restorers use Adam 1e-3 as in QRNet.
DEMO_PRESETS: dict[str, dict[str, Any]] = {
    "fashion_mnist": {
        "network": "lenet5",
        "levels": {"gaussian_blur": (1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
                   "awgn": (20.0, 40.0, 60.0, 80.0, 100.0, 120.0)},
        "holdout": 5000,
        "baseline": {"images": 55000, "epochs": 4, "batch_size": 128, "learning_rate": 1e-3,
                     "decay_every": 3},
        "rank_images": 500,
        "repair": {"images": 20000, "epochs": 3, "batch_size": 128, "decay_every": 2,
                   "unit_learning_rate": 0.1, "finetune_learning_rate": 0.01,
                   "restorer_learning_rate": 1e-3},
        "restorer": {"base_width": 8, "depth": 2},
        "test_images": 2000,
        "methods": DEMO_METHODS,
    },
    "cifar10": {
        "network": "cifar10_quick",
        "levels": {name: presets.levels("deepcorrect_cifar", name)
                   for name in ("gaussian_blur", "awgn")},
        "holdout": 5000,
        "baseline": {"images": 45000, "epochs": 8, "batch_size": 128, "learning_rate": 1e-3,
                     "decay_every": 6},
        "rank_images": 500,
        "repair": {"images": 10000, "epochs": 3, "batch_size": 128, "decay_every": 2,
                   "unit_learning_rate": 0.1, "finetune_learning_rate": 0.01,
                   "restorer_learning_rate": 1e-3},
        "restorer": {"base_width": 8, "depth": 3},
        "test_images": 2000,
        "methods": DEMO_METHODS,
    },
}

# `--quick`: a few hundred images and one epoch, for smoke tests.
QUICK: dict[str, Any] = {
    "holdout": 200,
    "baseline": {"images": 600, "epochs": 1},
    "rank_images": 64,
    "repair": {"images": 256, "epochs": 1},
    "test_images": 200,
}

DATASETS = ("fashion_mnist", "cifar10")
STAGES_FILE = "stages.json"
CONFIG_FILE = "config.json"
REPORT_FILE = "report.md"
# What the demo writes in its output folder (removed by `overwrite=True`).
OUTPUTS = ("models", "rankings", "checkpoints", "eval", STAGES_FILE, CONFIG_FILE, REPORT_FILE,
           "table.md", "results.json", "accuracy.png", "restored.png")


# --- Configuration -----------------------------------------------------------------------


def resolve_config(dataset: str = "fashion_mnist", quick: bool = False, data: str | None = None,
                   seed: int = 0, **overrides) -> dict[str, Any]:
    """The demo's configuration: a `DEMO_PRESETS` entry, `QUICK` and `overrides` merged.

    Args:
        dataset: `"fashion_mnist"` or `"cifar10"`.
        quick: apply `QUICK` (a few hundred images, one epoch).
        data: the dataset's path (a Fashion-MNIST idx folder or a CIFAR-style `.npz`);
            None uses the default location.
        seed: seed of every random choice. Defaults to 0.
        **overrides: top-level keys replacing the preset's (dicts are merged one level).

    Returns:
        A JSON-serialisable dict.

    Example:

    >>> resolve_config("fashion_mnist", quick=True)["repair"]["epochs"]
    1
    """
    if dataset not in DEMO_PRESETS:
        raise ValueError(f"dataset must be one of {sorted(DEMO_PRESETS)}. Received: dataset={dataset!r}")
    config = _merge(DEMO_PRESETS[dataset], QUICK if quick else {})
    config = _merge(config, overrides)
    config.update(dataset=dataset, quick=bool(quick), data=None if data is None else str(data),
                  seed=int(seed))
    config["methods"] = [dict(m) for m in config["methods"]]
    config["levels"] = {k: [float(v) for v in lv] for k, lv in config["levels"].items()}
    names = [m["name"] for m in config["methods"]]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique. Received: {names}")
    return config


def _merge(base: Mapping, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out[key], **value} if isinstance(value, Mapping) and isinstance(
            out.get(key), Mapping) else value
    return out


def load_data(config: Mapping[str, Any]):
    """Train, hold-out and test splits of the configured dataset.

    The last `holdout` training images are held out (the baseline's validation curve and the
    ranking images); the baseline trains on the ones before, the repair methods on the first
    `repair.images` of them (images the baseline has seen, as in the paper).

    Returns:
        `(x_train, y_train), (x_holdout, y_holdout), (x_test, y_test)`, uint8 NHWC.

    Raises:
        ValueError: with one line saying how to get the data when it is missing.
    """
    from distort import data

    name, path = config["dataset"], config.get("data")
    try:
        if name == "fashion_mnist":
            (xt, yt), (xv, yv) = data.load_fashion_mnist(path)
        else:
            if path is None:
                raise ValueError("--data is required for cifar10 (a CIFAR-style .npz, e.g. "
                                 "../shared/data/cifar10/cifar10.npz)")
            (xt, yt), (xv, yv) = data.load_cifar10(path)
    except ValueError:
        raise
    except Exception as e:  # the Keras download fallback, offline
        hint = ("install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
                "or pass --data FOLDER with the four idx files" if name == "fashion_mnist" else
                "pass --data with a CIFAR-style .npz")
        raise ValueError(f"{name} not found and not downloadable ({type(e).__name__}): {hint}") from None
    holdout = int(config["holdout"])
    if not 0 < holdout < len(xt):
        raise ValueError(f"holdout must be in [1, {len(xt) - 1}]. Received: holdout={holdout}")
    train, held = (xt[:-holdout], yt[:-holdout]), (xt[-holdout:], yt[-holdout:])
    n_test = int(config["test_images"])
    return train, held, (xv[:n_test], yv[:n_test])


# --- Stage bookkeeping --------------------------------------------------------------------


class Stages:
    """Finished stages of a run, kept in `out/stages.json` (written atomically).

    Each record holds what the report needs: seconds, trainable parameters, epochs, images.

    Example:

    >>> import tempfile
    >>> stages = Stages(tempfile.mkdtemp())
    >>> stages.done("baseline")
    False
    >>> stages.finish("baseline", seconds=1.5)
    >>> Stages(stages.folder).record("baseline")["seconds"]
    1.5
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / STAGES_FILE
        self.records: dict[str, dict] = (json.loads(self.path.read_text())
                                         if self.path.is_file() else {})

    def done(self, key: str) -> bool:
        return key in self.records

    def record(self, key: str) -> dict:
        return self.records[key]

    def finish(self, key: str, **record) -> None:
        self.records[key] = record
        atomic_write_text(self.path, json.dumps(self.records, indent=1))


def prepare_output(out: str | os.PathLike, config: Mapping[str, Any], overwrite: bool) -> Path:
    """Creates or reuses the output folder.

    A folder with a finished report is refused unless `overwrite`; a folder of an
    interrupted run with the same configuration is reused (finished stages are skipped);
    one made with another configuration is refused unless `overwrite`. `overwrite` removes
    what an earlier run wrote (only the demo's own files) and starts afresh.

    Raises:
        ValueError: as described.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out must be a folder. Received a file: {folder}")
    if overwrite:
        for name in OUTPUTS:
            target = folder / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if (folder / REPORT_FILE).exists():
        raise ValueError(f"output exists: {folder / REPORT_FILE} (pass --overwrite to replace it)")
    saved = folder / CONFIG_FILE
    text = json.dumps(config, indent=1, sort_keys=True)
    if saved.is_file() and json.loads(saved.read_text()) != json.loads(text):
        raise ValueError(f"{folder} holds an interrupted run with other settings "
                         f"(see {saved}); pass --overwrite or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, text)
    return folder


def _say(message: str) -> None:
    print(message, flush=True)


def _save(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def _load(path: Path):
    import keras

    import qrnet  # noqa: F401  (registers the restorer's classes: a cached QRNet stage)

    return keras.models.load_model(path, safe_mode=True)


def slug(name: str) -> str:
    """A file-name-safe version of a method name: `slug("Deepcorr-all-c") == "deepcorr-all-c"`."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name.lower())


# --- Stages -------------------------------------------------------------------------------


def train_baseline(config, train, holdout, out: Path, stages: Stages, verbose=1):
    """Stage 1: the baseline network on clean images (cached as `models/baseline.keras`).

    Adam at `baseline.learning_rate`, x0.1 after `baseline.decay_every` epochs; the clean
    accuracy on the hold-out images after every epoch goes into the stage record, so the
    report shows whether it plateaued.
    """
    import keras

    from deepcorrect.networks import build_network
    from deepcorrect.training import step_schedule

    path = out / "models" / "baseline.keras"
    if stages.done("baseline") and path.is_file():
        return _load(path)
    if config.get("model"):  # a given classifier: nothing to train
        model = _given_model(config["model"], train[0].shape[1:])
        _save(model, path)
        stages.finish("baseline", seconds=None, trainable=trainable_parameters(model), epochs=None,
                      images=None, given=config["model"])
        return model
    cfg = config["baseline"]
    x, y = train[0][: cfg["images"]], train[1][: cfg["images"]]
    classes = int(max(train[1].max(), holdout[1].max()) + 1)
    model = build_network(config["network"], x.shape[1:], classes, seed=config["seed"])
    model.compile(keras.optimizers.Adam(cfg["learning_rate"]), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    ckdir = out / "checkpoints" / "baseline"
    start = time.time()
    history = model.fit(
        x, y, batch_size=cfg["batch_size"], epochs=cfg["epochs"],
        validation_data=(holdout[0], holdout[1]), verbose=verbose, shuffle=True,
        callbacks=[keras.callbacks.LearningRateScheduler(
                       step_schedule(cfg["learning_rate"], 0.1, cfg["decay_every"])),
                   keras.callbacks.BackupAndRestore(str(ckdir), delete_checkpoint=False)])
    seconds = time.time() - start
    _save(model, path)
    stages.finish("baseline", seconds=seconds, trainable=trainable_parameters(model), epochs=cfg["epochs"],
                  images=int(len(x)), val_accuracy=[float(v) for v in
                                                    history.history.get("val_accuracy", [])])
    return model


def _given_model(path: str, image_shape):
    p = Path(path)
    if not p.is_file() or p.suffix != ".keras":
        raise ValueError(f"--model must be an existing .keras file. Received: {path}")
    model = _load(p)
    if tuple(model.input_shape[1:]) != tuple(image_shape):
        raise ValueError(f"--model must take images of shape {tuple(image_shape)} on 0..255. "
                         f"Received a model with input shape {model.input_shape[1:]}")
    model.trainable = True
    return model


def rank_filters(config, baseline, holdout, distortion: str, out: Path, stages: Stages):
    """Stage 3: Algorithm 1 on `rank_images` hold-out images (cached as `rankings/<d>.json`)."""
    import deepcorrect

    path = out / "rankings" / f"{distortion}.json"
    key = f"rank/{distortion}"
    if stages.done(key) and path.is_file():
        return deepcorrect.Ranking.load(path)
    n = int(config["rank_images"])
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    ranking = deepcorrect.rank(baseline, holdout[0][:n], holdout[1][:n], distortion,
                               config["levels"][distortion], seed=config["seed"],
                               checkpoint=str(path) + ".partial")
    ranking.save(path)
    Path(str(path) + ".partial").unlink(missing_ok=True)
    stages.finish(key, seconds=time.time() - start, images=n)
    return ranking


def build_method(method: Mapping[str, Any], baseline, ranking, config):
    """The untrained model of one method: what `train_method` trains.

    Returns:
        A Keras model: a `deepcorrect.finetune` copy, a `deepcorrect.wrap` model or a QRNet
        restorer (for `kind="restorer"`).
    """
    import deepcorrect

    kind = method["kind"]
    if kind == "finetune":
        return deepcorrect.finetune(baseline, method["k"])
    if kind == "deepcorrect":
        return deepcorrect.wrap(baseline, ranking, beta=method.get("beta", 0.5),
                                unit=method.get("unit", "cw"), first=method.get("first"),
                                train_head=method.get("train_head", 0),
                                train_batch_norm=method.get("train_batch_norm", False),
                                site=method.get("site", "conv"))
    if kind == "restorer":
        import qrnet

        channels = baseline.input_shape[-1]
        return qrnet.build_qrnet(input_shape=(None, None, channels), name=slug(method["name"]),
                                 **config["restorer"])
    raise ValueError(f"method kind must be one of finetune, deepcorrect, restorer to build. "
                     f"Received: kind={kind!r}")


def train_method(method, baseline, ranking, config, train, distortion: str, out: Path,
                 stages: Stages, verbose=1):
    """Stage 4/5: one repair method trained for one distortion with the shared budget.

    Cached as `models/<method>-<distortion>.keras`; per-epoch checkpoints in
    `checkpoints/` let an interrupted stage resume.

    Returns:
        The trained model (for a restorer: the restorer alone).
    """
    import keras

    import deepcorrect

    name = slug(method["name"])
    key = f"train/{name}/{distortion}"
    path = out / "models" / f"{name}-{distortion}.keras"
    if stages.done(key) and path.is_file():
        return _load(path)
    cfg = config["repair"]
    x, y = train[0][: cfg["images"]], train[1][: cfg["images"]]
    levels = config["levels"][distortion]
    ckdir = out / "checkpoints" / f"{name}-{distortion}"
    resumed = ckdir.exists()
    keras.utils.set_random_seed(config["seed"])
    model = build_method(method, baseline, ranking, config)
    start = time.time()
    if method["kind"] == "restorer":
        import qrnet

        trainer = qrnet.QualityRecoveryTrainer(
            model, qrnet.ClassifierSpec(baseline, name="baseline"), mode=method["mode"])
        trainer.compile(optimizer=keras.optimizers.Adam(cfg["restorer_learning_rate"]))
        qrnet.train(trainer, x, y, {distortion: levels}, epochs=cfg["epochs"],
                    batch_size=cfg["batch_size"], patience=None, checkpoint_dir=str(ckdir),
                    seed=config["seed"], verbose=verbose)
    else:
        lr = learning_rate(method, cfg)
        deepcorrect.train(model, x, y, distortion, levels, preset="cpu_quick",
                          epochs=cfg["epochs"], batch_size=cfg["batch_size"], learning_rate=lr,
                          checkpoint_dir=ckdir, seed=config["seed"], verbose=verbose,
                          callbacks=[keras.callbacks.LearningRateScheduler(
                              _schedule(lr, cfg["decay_every"]))])
    seconds = time.time() - start
    _save(model, path)
    stages.finish(key, seconds=seconds, trainable=trainable_parameters(model), epochs=cfg["epochs"],
                  images=int(len(x)), batch_size=cfg["batch_size"], resumed=resumed)
    return model


def learning_rate(method: Mapping[str, Any], repair: Mapping[str, Any]) -> float:
    """A trained method's initial SGD rate: its own, else the budget's unit or fine-tuning rate."""
    return method.get("learning_rate") or repair[
        "unit_learning_rate" if method["kind"] == "deepcorrect" else "finetune_learning_rate"]


def _schedule(lr: float, every: int) -> Callable:
    from deepcorrect.training import step_schedule

    return step_schedule(lr, 0.1, every)


def evaluate(models: Mapping[str, Any], test, distortion: str, levels: Sequence[float],
             out: Path, seed: int):
    """Stage 6: top-1 of every model at every level (`distort.sweep`, checkpointed).

    Args:
        models: name -> a model, or `(classifier, preprocess)`.

    Returns:
        `{name: [clean, level 1, ...]}` top-1 accuracies and the `SweepResult`.
    """
    from distort.sweep import sweep

    path = out / "eval" / f"{distortion}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = sweep(models, test[0], test[1], {distortion: list(levels)}, seed=seed,
                   checkpoint=path, batch_size=100)
    return _accuracy_table(result, list(models), levels), result


def evaluate_classical(baseline, test, distortion: str, levels, out: Path, seed: int,
                       name: str = "Classical") -> list[float]:
    """Top-1 of the baseline behind `deepcorrect.restoration.restore`, told each level.

    The clean column is the baseline's own (level 0: nothing to restore).
    """
    import tensorflow as tf

    from deepcorrect import restoration
    from distort.sweep import sweep

    values = []
    for level in levels:
        def prep(x, level=level):
            restored = restoration.restore(np.asarray(x), distortion, level)
            return tf.constant(restored)

        path = out / "eval" / f"{slug(name)}-{distortion}-{level:g}.json"
        result = sweep({name: (baseline, prep)}, test[0], test[1], {distortion: [level]},
                       seed=seed, checkpoint=path, batch_size=100, progress=False)
        values.append(next(r["top1"] for r in result.rows if r["level"] == level))
    return values


def _accuracy_table(result, names, levels) -> dict[str, list[float]]:
    table = {}
    for name in names:
        by_level = {r["level"]: r["top1"] for r in result.select(model=name)}
        table[name] = [by_level[None]] + [by_level[float(lv)] for lv in levels]
    return table


def _as_classifier(method, model, baseline):
    """What the sweep runs for a method: the model itself, or the baseline behind a restorer."""
    if method["kind"] == "restorer":
        return (baseline, lambda x, r=model: r(x, training=False))
    return model


# --- Run ------------------------------------------------------------------------------------


def run(config: Mapping[str, Any], out: str | os.PathLike, overwrite: bool = False,
        verbose: int = 1) -> dict[str, Any]:
    """Runs every stage (skipping finished ones) and writes the table, report and figures.

    Args:
        config: from `resolve_config`.
        out: the output folder.
        overwrite: start afresh (see `prepare_output`).
        verbose: Keras progress bars (1) or none (0).

    Returns:
        `{"table": Markdown text, "accuracy": {distortion: {method: [clean, ...]}},
        "stages": records, "report": path}`.
    """
    import keras

    total = time.time()
    out = prepare_output(out, config, overwrite)
    stages = Stages(out)
    keras.utils.set_random_seed(config["seed"])
    train, holdout, test = load_data(config)
    methods = config["methods"]
    _say(f"[1/6] baseline {config['network']} on {min(len(train[0]), config['baseline']['images'])}"
         f" clean {config['dataset']} images, {config['baseline']['epochs']} epochs")
    baseline = train_baseline(config, train, holdout, out, stages, verbose)
    accuracy, sweeps, trained = {}, [], {}
    for d, levels in config["levels"].items():
        _say(f"[2/6] sweep of the baseline over {d} {levels}")
        base_acc, _ = evaluate({"Baseline": baseline}, test, d, levels, out, config["seed"])
        _say("       " + _row_text("Baseline", base_acc["Baseline"]))
        ranking = None
        if any(m["kind"] == "deepcorrect" for m in methods):
            _say(f"[3/6] ranking the filters for {d} on {config['rank_images']} held-out images")
            ranking = rank_filters(config, baseline, holdout, d, out, stages)
        for m in sorted(methods, key=lambda m: m["kind"] != "deepcorrect"):
            if m["kind"] in ("baseline", "classical"):
                continue
            step = "4/6" if m["kind"] == "deepcorrect" else "5/6"
            _say(f"[{step}] {m['name']} for {d}: {config['repair']['images']} images, "
                 f"{config['repair']['epochs']} epochs")
            trained[(m["name"], d)] = train_method(m, baseline, ranking, config, train, d, out,
                                                   stages, verbose)
        _say(f"[6/6] evaluating every method on {len(test[0])} test images under {d}")
        models = {m["name"]: (baseline if m["kind"] == "baseline" else
                              _as_classifier(m, trained[(m["name"], d)], baseline))
                  for m in methods if m["kind"] != "classical"}
        acc, result = evaluate(models, test, d, levels, out, config["seed"])
        for m in methods:
            if m["kind"] == "classical":
                acc[m["name"]] = [acc["Baseline"][0]] + evaluate_classical(
                    baseline, test, d, levels, out, config["seed"], m["name"])
        accuracy[d] = {m["name"]: acc[m["name"]] for m in methods}
        sweeps.append(result)
    table = format_tables(config, accuracy, stages, baseline)
    atomic_write_text(out / "table.md", table)
    _say("\n" + table)
    plot_accuracy(config, accuracy, out / "accuracy.png")
    plot_restorations(config, test, baseline, trained, out / "restored.png")
    stages_view = stages.records
    results = {"config": config, "accuracy": accuracy, "stages": stages_view,
               "seconds": time.time() - total}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    report = write_report(config, accuracy, stages, baseline, table, out, time.time() - total)
    _say(f"wrote {report} (and table.md, results.json, accuracy.png, restored.png) in "
         f"{time.time() - total:.0f} s")
    return {"table": table, "accuracy": accuracy, "stages": stages_view, "report": str(report)}


def _row_text(name, values) -> str:
    return f"{name}: clean {values[0]:.3f}, levels " + " ".join(f"{v:.3f}" for v in values[1:])


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


def plot_accuracy(config, accuracy, path: Path) -> None:
    """Accuracy-vs-level curves: a panel per distortion, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(accuracy), figsize=(4.2 * len(accuracy), 3.4), squeeze=False)
    for ax, (d, rows) in zip(axes[0], accuracy.items()):
        x = [0.0] + list(config["levels"][d])
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
                from deepcorrect import restoration

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
                 seconds: float) -> Path:
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
    return f"{method['name']} (trained on clean images only)"


def _write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path


def main_args(args) -> None:
    """The `deepcorrect demo` subcommand (see `deepcorrect.cli`)."""
    config = resolve_config(args.dataset, quick=args.quick, data=args.data, seed=args.seed)
    run(config, args.out, overwrite=args.overwrite, verbose=1 if sys.stdout.isatty() else 2)

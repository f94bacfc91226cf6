"""The whole story on one small dataset: measure, rank, repair, compare (`deepcorrect demo`).

`run(config, out)` trains a baseline CNN on clean images, sweeps it over blur and noise,
ranks its filters (Algorithm 1), wraps it with correction units and trains them, runs the
other repairs of the ladder with the same budget (the same images, epochs and batch size:
BN adaptation, TENT, Finetune-2, BN adaptation followed by correction units, QRNet), and
writes one comparison table, the recommended repair (`deepcorrect.recommend`), a Markdown
report and its figures to `out` (`studies.demo_report`).

Every stage keeps its result in `out` (atomic writes): the baseline and every trained model
as `.keras`, the rankings as JSON, the evaluations as sweep checkpoints, the timings in
`stages.json`. Running again skips finished stages, and a training stage interrupted
part-way resumes after its last finished epoch. The configuration is a plain table
(`DEMO_PRESETS`, `QUICK`); the methods of the table are data too (`DEMO_METHODS`), so
`examples/cifar10_deepcorrect.py` runs the paper's Tables 3/4 with the same code.

Example:

```python
from studies import demo

config = demo.resolve_config("fashion_mnist", quick=True)
result = demo.run(config, "out/demo-quick")
print(result["table"])
```
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from deepcorrect.comparison import plot_accuracy, recommend
from studies.demo_report import (REPORT_FILE, comparison_table, format_tables,
                                     plot_restorations, write_report)
from deepcorrect.stages import STAGES_FILE, Stages, read_model, slug, write_model
from deepcorrect.surgery import trainable_parameters
from distort import presets
from robustkit.io import atomic_write_text

# The methods of the demo's table. `kind` picks how a method is made and trained:
# "baseline" (the pretrained network), "finetune" (`deepcorrect.finetune(k)`),
# "deepcorrect" (`deepcorrect.wrap` with a ranking), "restorer" (a QRNet-style U-Net in
# front of the frozen baseline; `mode` "qrnet" or "recnet"), "classical" (a non-learned
# restoration, `studies.restoration`) and "ladder" (`steps` of `deepcorrect.ladder`,
# as `deepcorrect.compare` runs them: BN adaptation, TENT, and combinations).
DEMO_METHODS: tuple[dict[str, Any], ...] = (
    {"name": "Baseline", "kind": "baseline"},
    {"name": "BN-adapt", "kind": "ladder", "steps": ({"kind": "bn_adapt"},)},
    {"name": "TENT", "kind": "ladder", "steps": ({"kind": "tent"},)},
    {"name": "Finetune-2", "kind": "finetune", "k": 2},
    {"name": "DeepCorrect", "kind": "deepcorrect", "beta": 0.5, "unit": "cw",
     "site": "batch_norm"},  # after each conv's batch norm: see docs/RESULTS.md
    # Units trained on the adapted network, then TENT: the best combination on CIFAR-10
    # (docs/RESULTS.md, "The repair ladder").
    {"name": "BN-adapt+DeepCorrect+TENT", "kind": "ladder",
     "steps": ({"kind": "bn_adapt"},
               {"kind": "deepcorrect", "beta": 0.5, "unit": "cw", "site": "batch_norm"},
               {"kind": "tent"})},
    {"name": "QRNet", "kind": "restorer", "mode": "qrnet"},
)

# What the demo's recommendation allows: at most one point of clean top-1 lost.
RECOMMEND = {"max_clean_drop": 0.01}

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
        "rank_score": "gain",  # the paper's Algorithm 1, as the README's demo table ran it
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
        "rank_score": "gain",  # the paper's Algorithm 1, as docs/RESULTS.md ran it
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
CONFIG_FILE = "config.json"
# What the demo writes in its output folder (removed by `overwrite=True`).
OUTPUTS = ("models", "rankings", "checkpoints", "work", "eval", STAGES_FILE, CONFIG_FILE,
           REPORT_FILE, "table.md", "results.json", "accuracy.png", "restored.png")


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
    from robustkit import data

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


def prepare_output(out: str | os.PathLike, config: Mapping[str, Any], overwrite: bool) -> Path:
    """Creates or reuses the output folder.

    A folder with a finished report is refused unless `overwrite`; a folder of an
    interrupted run with the same configuration is reused (finished stages are skipped);
    one made with another configuration is refused unless `overwrite`. `overwrite` removes
    what an earlier run wrote (only the demo's own files) and starts afresh.

    Raises:
        ValueError: as described.
    """
    from deepcorrect.compare import prepare_folder

    folder = Path(out)
    if not overwrite and folder.is_dir() and (folder / REPORT_FILE).exists():
        raise ValueError(f"output exists: {folder / REPORT_FILE} (pass --overwrite to replace it)")
    return prepare_folder(folder, config, overwrite, OUTPUTS, argument="--out")


def _say(message: str) -> None:
    print(message, flush=True)


_save, _load = write_model, read_model  # atomic .keras writes; loads register QRNet's classes


# --- Stages -------------------------------------------------------------------------------


def train_baseline(config, train, holdout, out: Path, stages: Stages, verbose=1):
    """Stage 1: the baseline network on clean images (cached as `models/baseline.keras`).

    Adam at `baseline.learning_rate`, x0.1 after `baseline.decay_every` epochs; the clean
    accuracy on the hold-out images after every epoch goes into the stage record, so the
    report shows whether it plateaued.
    """
    import keras

    from studies.networks import build_network
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
                               score=config["rank_score"],
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

    if method["kind"] == "ladder":
        return repair_method(method, baseline, config, train, distortion, out, stages, verbose)
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


def repair_method(method, baseline, config, train, distortion: str, out: Path, stages: Stages,
                  verbose=1):
    """Stage 4/5 for a `kind="ladder"` method: its `deepcorrect.ladder` steps with the budget.

    The steps run as `deepcorrect.compare` runs them (`ladder.repair`: each step's model
    cached under `models/<distortion>/`, a rerun continues after the last finished step),
    on the same repair images, epochs and batch size as every other method; the record
    `train/<method>/<distortion>` holds what the table shows.

    Returns:
        The repaired model.
    """
    from deepcorrect import ladder
    from deepcorrect.methods import check_step, resolve_budget

    key = f"train/{slug(method['name'])}/{distortion}"
    cfg = config["repair"]
    budget = resolve_budget({"images": cfg["images"], "epochs": cfg["epochs"],
                             "batch_size": cfg["batch_size"],
                             "rank_images": config["rank_images"]})
    data = ladder.RepairData(train[0], train[1], {distortion: config["levels"][distortion]},
                             budget, config["seed"], baseline, verbose)
    spec = {"name": method["name"], "steps": [check_step(s) for s in method["steps"]]}
    model, record = ladder.repair(baseline, spec, data, out, stages, distortion)
    if model is None:
        model = _load(out / record["path"])
    if not stages.done(key):
        stages.finish(key, seconds=record["seconds"], trainable=record["parameters"],
                      epochs=cfg["epochs"], images=int(len(data.images)),
                      batch_size=cfg["batch_size"], labels=record["labels"], path=record["path"])
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
    """Top-1 of the baseline behind `studies.restoration.restore`, told each level.

    The clean column is the baseline's own (level 0: nothing to restore).
    """
    import tensorflow as tf

    from studies import restoration
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
    choice = recommend(comparison_table(config, accuracy, stages, trained, baseline, test),
                       **RECOMMEND)
    _say(f"recommended: {choice.method or 'none'} ({choice.reason})")
    plot_accuracy(config["levels"], accuracy, out / "accuracy.png")
    plot_restorations(config, test, baseline, trained, out / "restored.png")
    stages_view = stages.records
    results = {"config": config, "accuracy": accuracy, "stages": stages_view,
               "seconds": time.time() - total}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    report = write_report(config, accuracy, stages, baseline, table, out, time.time() - total,
                          choice, RECOMMEND)
    _say(f"wrote {report} (and table.md, results.json, accuracy.png, restored.png) in "
         f"{time.time() - total:.0f} s")
    return {"table": table, "accuracy": accuracy, "stages": stages_view, "report": str(report),
            "recommendation": choice}


def _row_text(name, values) -> str:
    return f"{name}: clean {values[0]:.3f}, levels " + " ".join(f"{v:.3f}" for v in values[1:])


def main_args(args) -> None:
    """The `deepcorrect demo` subcommand (see `deepcorrect.cli`)."""
    config = resolve_config(args.dataset, quick=args.quick, data=args.data, seed=args.seed)
    run(config, args.out, overwrite=args.overwrite, verbose=1 if sys.stdout.isatty() else 2)

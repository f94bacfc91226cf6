"""Zhou et al.: fine-tuning the first N layers vs re-training under combined distortion (Figs. 7-8).

Zhou, Song and Cheung (ICASSP 2017) distort every CIFAR-10 image with their
combined distortion (random-walk motion blur, defocus blur and Gaussian noise,
each level drawn uniformly from [0, 4]: `distort.combined`) and compare

- `no-train`: the network trained on clean images;
- `first-N`: the same network with its first N parameter layers fine-tuned on
  distorted images, the rest frozen (N = 1..5 for CIFAR10-quick: conv1-3,
  the 64-unit dense layer and the classifier; a batch norm trains with its conv);
- `re-training`: the same architecture trained from scratch on distorted images.

Accuracy is measured on test images distorted with `combined` at maximum level
1, 2, 3 and 4 (each image's three levels drawn from [0, max]) and on the clean
images. Their Fig. 8 is the mean variance of the feature-map gradient
magnitude of the last conv layer: for each feature map, the Sobel gradient
magnitude `sqrt((fm * s_x)^2 + (fm * s_y)^2)` (s_x, s_y their 1/4-scaled Sobel
kernels, valid positions) has a variance over its positions; the mean is over
maps and images. Here the feature maps are the last conv layer's output after
its batch norm (Zhou's network has no batch norm; this is the same output
brought to a common scale across models). `original` is the clean-trained
network on clean images.

Training follows Zhou's setup in spirit, at CPU scale: every training image is
distorted (fresh draws every epoch); fine-tuning uses SGD with Nesterov
momentum 0.9 at `--finetune-lr` (default 0.01) for `--epochs` epochs,
re-training the baseline's own recipe (Adam at the demo baseline's rate, step
decay) for `--retrain-epochs` epochs (Zhou: 30 and 45 epochs), on the same
`--train-images` images. Each epoch is checkpointed; an interrupted run resumes.

Outputs in `--out`: `accuracy.{csv,json,md}`, `gradient_variance.{csv,json,md}`,
`zhou_cifar10.png`, `report.md`.

Usage:

    .venv/bin/python examples/zhou_finetune.py --model out/cifar10_baseline/models/baseline.keras
    .venv/bin/python examples/zhou_finetune.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

from studies import analysis as an  # noqa: E402
from deepcorrect import trainable_parameters  # noqa: E402
from deepcorrect.stages import slug  # noqa: E402
from robustkit.cli_common import fail_cleanly  # noqa: E402
from robustkit.io import atomic_path  # noqa: E402

MAX_LEVELS = (1.0, 2.0, 3.0, 4.0)
TRAIN_LEVEL = 4.0  # Zhou: every level drawn from [0, 4]
# Zhou's Sobel kernels (their Eq. 1), applied as a correlation.
SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64) / 4
SOBEL_Y = SOBEL_X.T.copy()
FULL = {"train_images": 5000, "epochs": 3, "retrain_epochs": 5, "batch_size": 64,
        "test_images": 1000, "finetune_lr": 0.01}
QUICK = {"train_images": 128, "epochs": 1, "retrain_epochs": 1, "batch_size": 64,
         "test_images": 100, "finetune_lr": 0.01}


def gradient_variance(maps: np.ndarray) -> float:
    """Zhou's mean variance of feature-map gradient magnitude.

    Args:
        maps: feature maps `(N, H, W, C)`, H and W at least 3.

    Returns:
        The variance over the valid positions of each map's Sobel gradient
        magnitude, averaged over the N * C maps.
    """
    a = np.asarray(maps, np.float64)
    if a.ndim != 4 or min(a.shape[1:3]) < 3:
        raise ValueError(f"maps must be (N, H, W, C) with H, W >= 3. Received {a.shape}")
    h, w = a.shape[1] - 2, a.shape[2] - 2
    gx = sum(SOBEL_X[i, j] * a[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
    gy = sum(SOBEL_Y[i, j] * a[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
    return float(np.sqrt(gx ** 2 + gy ** 2).var(axis=(1, 2)).mean())


def parameter_layers(model: keras.Model) -> list[str]:
    """Names of the conv and dense layers, input to output (Zhou's 'layers with parameters')."""
    from deepcorrect.graph import leaf_layers
    from deepcorrect.planning import HEAD_LAYER_TYPES

    return [layer.name for layer in leaf_layers(model) if isinstance(layer, HEAD_LAYER_TYPES)]


def first_n(pretrained: keras.Model, n: int) -> keras.Model:
    """Zhou's first-N: a copy whose first N parameter layers (and their batch norms) train.

    The batch norms follow `deepcorrect.finetune`'s `train_batch_norm="auto"`: folded ones
    (`deepcorrect.folded_batch_norms`, e.g. never trained) stay frozen.
    """
    from deepcorrect.baselines import copy_model, finetune_layer_names
    from deepcorrect.graph import conv_layers, leaf_layers

    params = parameter_layers(pretrained)
    if not 1 <= n <= len(params):
        raise ValueError(f"n must be in [1, {len(params)}]. Received: n={n}")
    convs = [c.name for c in conv_layers(pretrained)]
    trained = set(params[:n])
    k = len(trained & set(convs))
    if k:
        trained |= set(finetune_layer_names(pretrained, k))  # the convs' batch norms
    model = copy_model(pretrained)
    for layer in leaf_layers(model):
        layer.trainable = layer.name in trained
    return model


def feature_layer(model: keras.Model) -> str:
    """The last conv layer's batch norm (or the conv itself when none follows it)."""
    from deepcorrect.graph import conv_layers

    last = conv_layers(model)[-1]
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            try:
                if layer.input is last.output:
                    return layer.name
            except (AttributeError, ValueError):
                continue
    return last.name


def fit_distorted(model: keras.Model, optimizer, schedule, x, y, epochs: int, batch_size: int,
                  seed: int, folder: Path, verbose: int) -> tuple[keras.Model, float]:
    """Trains on images all distorted with `combined` (levels from [0, 4]); resumable.

    After every epoch the compiled model (with its optimizer state) is saved as
    `folder/model.keras`, then `folder/state.json` records the epoch; a rerun
    loads them and goes on. Epoch `e`'s batches depend on `(seed, e)` alone.

    Returns:
        The trained model and the training seconds (summed over resumed runs).
    """
    from distort import pipeline

    state_path, model_path = folder / "state.json", folder / "model.keras"
    start, seconds = 0, 0.0
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        model = keras.models.load_model(model_path, safe_mode=True)
        start, seconds = state["epoch"] + 1, state["seconds"]
    else:
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    if start >= epochs:
        return model, seconds
    ds = pipeline.training_dataset(x, y, {"combined": (TRAIN_LEVEL,)}, fraction=1.0,
                                   batch_size=batch_size, seed=seed, epochs=epochs,
                                   initial_epoch=start)
    steps = pipeline.epoch_steps(len(x), batch_size)

    class Save(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.tick = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            nonlocal seconds
            seconds += time.perf_counter() - self.tick
            with atomic_path(model_path) as tmp:
                model.save(tmp)
            an.atomic_write_text(state_path, json.dumps({"epoch": epoch, "seconds": seconds}))

    folder.mkdir(parents=True, exist_ok=True)
    model.fit(ds, epochs=epochs, initial_epoch=start, steps_per_epoch=steps, verbose=verbose,
              callbacks=[keras.callbacks.LearningRateScheduler(schedule), Save()])
    return model, seconds


def plot(acc_rows: list[dict], var_rows: list[dict], path: Path, images: int) -> None:
    plt = an.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0))
    cols = ["clean"] + [f"{lv:g}" for lv in MAX_LEVELS]
    x = [0.0, *MAX_LEVELS]
    for rows, ax, ylabel in ((acc_rows, axes[0], "top-1"),
                             (var_rows, axes[1], "mean variance of gradient magnitude")):
        for r in rows:
            style = "k--" if r["model"] in ("no-train", "original") else (
                "s-" if r["model"] == "re-training" else ".-")
            ax.plot(x, [r[c] for c in cols], style, label=r["model"])
        ax.set_xlabel("combined distortion, maximum level (0 = clean)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("Zhou Fig. 7: fine-tuning first-N vs re-training")
    axes[1].set_title("Zhou Fig. 8: last conv layer (after batch norm)")
    fig.suptitle(f"CIFAR-10, {images} test images")
    fig.tight_layout()
    an.save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    an.add_arguments(parser, FULL, QUICK, "out/zhou_finetune", distortions=False)
    parser.add_argument("--retrain-epochs", type=int, default=None,
                        help=f"epochs of re-training (default {FULL['retrain_epochs']}, "
                             f"{QUICK['retrain_epochs']} with --quick)")
    parser.add_argument("--finetune-lr", type=float, default=None,
                        help=f"SGD learning rate of fine-tuning (default {FULL['finetune_lr']})")
    parser.add_argument("--first", type=int, nargs="+", default=None,
                        help="which first-N models (default: every N)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from deepcorrect import baselines
    from deepcorrect.training import step_schedule
    import distort

    settings = an.resolve(args, FULL, QUICK)
    settings["first"] = args.first  # None: every N
    if settings["retrain_epochs"] < 1 or not settings["finetune_lr"] > 0:
        raise an.CLIError("--retrain-epochs must be >= 1 and --finetune-lr > 0. Received: "
                          f"{settings['retrain_epochs']}, {settings['finetune_lr']}")
    analysis = an.Analysis("zhou_finetune", args, settings)
    base = analysis.model
    params = parameter_layers(base)
    firsts = sorted(set(args.first or range(1, len(params) + 1)))
    if any(not 1 <= n <= len(params) for n in firsts):
        raise an.CLIError(f"--first must be in [1, {len(params)}]. Received: {args.first}")
    x_test, y_test = analysis.test
    tests = [x_test] + [
        np.asarray(distort.apply(x_test, "combined", lv, seed=analysis.seed + 1000 + k))
        for k, lv in enumerate(MAX_LEVELS)]
    feat_name = feature_layer(base)
    count = settings["train_images"]
    x, y = analysis.train[0][:count], analysis.train[1][:count]
    cfg = analysis.config["baseline"]

    def evaluate(model) -> dict:
        features = keras.Model(model.inputs, model.get_layer(feat_name).output)
        return {"accuracy": [an.accuracy(model, t, y_test) for t in tests],
                "variance": [gradient_variance(features.predict(t, batch_size=500, verbose=0))
                             for t in tests]}

    records = {"no-train": analysis.cached("zhou/no-train", lambda: evaluate(base))}
    plans = [(f"first-{n}", n) for n in firsts] + [("re-training", None)]
    for name, n in plans:
        print(f"{name}: {settings['train_images']} images, all distorted (combined, max 4)",
              flush=True)

        def compute(name=name, n=n) -> dict:
            keras.utils.set_random_seed(analysis.seed)
            if n is None:
                model = baselines.reinitialized(base, seed=analysis.seed)
                optimizer = keras.optimizers.Adam(cfg["learning_rate"])
                schedule = step_schedule(cfg["learning_rate"], 0.1,
                                         max(1, settings["retrain_epochs"] - 1))
                epochs = settings["retrain_epochs"]
            else:
                model = first_n(base, n)
                lr = settings["finetune_lr"]
                optimizer = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
                schedule = step_schedule(lr, 0.1, max(1, settings["epochs"] - 1))
                epochs = settings["epochs"]
            model, seconds = fit_distorted(model, optimizer, schedule, x, y, epochs,
                                           settings["batch_size"], analysis.seed,
                                           analysis.out / "checkpoints" / slug(name),
                                           analysis.verbose)
            return {**evaluate(model), "seconds": seconds, "epochs": epochs,
                    "trainable": trainable_parameters(model), "images": len(x)}

        records[name] = analysis.cached(f"zhou/{name}", compute)
    cols = ["clean"] + [f"{lv:g}" for lv in MAX_LEVELS]
    acc_rows, var_rows = [], []
    for name, rec in records.items():
        acc_rows.append({"model": name, **dict(zip(cols, rec["accuracy"])),
                         "avg": float(np.mean(rec["accuracy"])),
                         "trainable": rec.get("trainable", 0), "epochs": rec.get("epochs", 0),
                         "seconds": round(rec["seconds"]) if "seconds" in rec else ""})
        var_rows.append({"model": name, **dict(zip(cols, rec["variance"]))})
    original = records["no-train"]["variance"][0]
    var_rows.insert(0, {"model": "original", **{c: original for c in cols}})
    out, images = analysis.out, len(x_test)
    meta = {"images": images, "settings": settings, "feature_layer": feat_name,
            "parameter_layers": params, "test_max_levels": list(MAX_LEVELS)}
    acc_md = an.write_table(out, "accuracy", acc_rows,
                            ["model"] + cols + ["avg", "trainable", "epochs", "seconds"], meta)
    var_md = an.write_table(out, "gradient_variance", var_rows, ["model"] + cols, meta, digits=4)
    plot(acc_rows, var_rows, analysis.figure("zhou_cifar10.png"), images)
    text = (f"# Zhou et al. on CIFAR-10: fine-tuning first-N vs re-training\n\n"
            f"{analysis.describe()} Training: {settings['train_images']} images, every one "
            f"distorted with `combined` (max level {TRAIN_LEVEL:g}); fine-tuning "
            f"{settings['epochs']} epochs (SGD {settings['finetune_lr']}), re-training "
            f"{settings['retrain_epochs']} epochs (Adam {cfg['learning_rate']}); batch {settings['batch_size']}. Parameter "
            f"layers: {', '.join(params)}. Columns: clean, then `combined` at maximum level "
            f"{', '.join(f'{v:g}' for v in MAX_LEVELS)}.\n\n**Top-1 accuracy**\n\n{acc_md}\n"
            f"**Mean variance of the Sobel gradient magnitude of `{feat_name}`** (`original`: "
            f"the no-train model on clean images)\n\n{var_md}")
    an.write_report(out, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""QRNet on CIFAR-10: classifier alone vs RecNet + classifier vs QRNet + classifier.

Reproduces the comparison of Table 2 / Fig. 4 of Takagi et al. (IEEE Access 2019) at
CIFAR-10 scale, on a CPU:

1. trains a small CNN classifier on clean CIFAR-10 images;
2. trains RecNet (L1 loss only) and QRNet (L1 + 0.01 * cross-entropy of the frozen CNN)
   with the same restorer architecture, data, seed and schedule (Algorithm 1: batches of
   clean images and distorted copies, distortion type and level drawn per batch);
3. evaluates accuracy, PSNR and SSIM on test images for Gaussian noise and Gaussian blur at
   the `qrnet_32px` levels: noise sigma {20, 40, 60, 80, 100} (on 0..255, as in the paper),
   blur sigma {2, 4, 6, 8, 10} * 32 / 224 (the paper's sigmas scaled from 224 px to 32 px).

Usage (from the repository root):

    python examples/qrnet_cifar10.py            # about 10 minutes on 2 CPU cores
    python examples/qrnet_cifar10.py --quick    # about 2 minutes, a smoke run
    python examples/qrnet_cifar10.py --help

The results (JSON rows, a Markdown report and the restorers) go to `--out`
(default `out/qrnet_cifar10`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "cifar10" / "cifar10.npz"

# Plain configuration tables: the default run and the --quick smoke run.
CONFIGS = {
    "default": {
        "classifier_images": 20000,
        "classifier_epochs": 4,
        "restorer_images": 6000,
        "validation_images": 1000,
        "restorer_epochs": 4,
        "pretrain_epochs": 1,
        "test_images": 2000,
        "restorer": {"base_width": 8, "depth": 3, "small": False, "dropout": 0.2},
    },
    "quick": {
        "classifier_images": 4000,
        "classifier_epochs": 2,
        "restorer_images": 1000,
        "validation_images": 200,
        "restorer_epochs": 1,
        "pretrain_epochs": 1,
        "test_images": 300,
        "restorer": {"base_width": 8, "depth": 3, "small": False, "dropout": 0.2},
    },
}


def build_classifier(num_classes: int = 10):
    """A small VGG-style CNN (batch norm) on 32x32 images; input on 0..1 ("unit")."""
    import keras
    from keras import layers

    def conv_bn_relu(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    def block(x, filters, name):
        x = conv_bn_relu(x, filters, f"{name}_1")
        x = conv_bn_relu(x, filters, f"{name}_2")
        return layers.MaxPooling2D(name=f"{name}_pool")(x)

    inputs = keras.Input((32, 32, 3), name="images")
    x = block(inputs, 16, "block1")
    x = block(x, 32, "block2")
    x = conv_bn_relu(x, 64, "block3")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="cnn")


def train_classifier(images, labels, epochs: int, seed: int, verbose: int):
    import keras

    keras.utils.set_random_seed(seed)
    classifier = build_classifier()
    classifier.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    classifier.fit(images / 255.0, labels, batch_size=64, epochs=epochs, verbose=verbose)
    return classifier


def train_restorer(mode, classifier, data, levels, apply_fn, config, seed, out, verbose):
    import keras

    import qrnet

    (train_x, train_y), validation = data
    keras.utils.set_random_seed(seed)
    restorer = qrnet.build_qrnet(input_shape=(32, 32, 3), name=mode, **config["restorer"])
    trainer = qrnet.QualityRecoveryTrainer(
        restorer, qrnet.ClassifierSpec(classifier, preprocessing="unit", name="cnn"), mode=mode
    )
    start = time.time()
    history = qrnet.train(
        trainer,
        train_x,
        train_y,
        levels,
        validation=validation,
        epochs=config["restorer_epochs"],
        pretrain_epochs=config["pretrain_epochs"],
        seed=seed,
        apply_fn=apply_fn,
        verbose=verbose,
        checkpoint_dir=str(out / f"{mode}_checkpoints"),
    )
    restorer.save(str(out / f"{mode}.keras"))
    return restorer, history, time.time() - start


def report(rows, histories, timings, args, config) -> str:
    from qrnet.evaluate import average_over_levels, format_table

    means = average_over_levels(rows)
    lines = [
        "# QRNet on CIFAR-10",
        "",
        f"Command: `python examples/qrnet_cifar10.py{' --quick' if args.quick else ''} --seed {args.seed}`",
        "",
        "Configuration: " + json.dumps(config),
        "",
        "Levels (`qrnet_32px`): awgn sigma {20, 40, 60, 80, 100} on 0..255; gaussian_blur sigma "
        "{2, 4, 6, 8, 10} x 32/224, window 8 sigma + 1.",
        "",
        "## Accuracy",
        "",
        format_table(rows, "accuracy"),
        "",
        "Mean over levels: "
        + "; ".join(
            f"{d}: " + ", ".join(f"{m} {v:.3f}" for m, v in methods.items())
            for d, methods in means.items()
            if d != "clean"
        ),
        "",
        "## PSNR (dB) of what the classifier sees",
        "",
        format_table(rows, "psnr", 2),
        "",
        "## SSIM",
        "",
        format_table(rows, "ssim"),
        "",
        "## Training",
        "",
    ]
    for name, seconds in timings.items():
        lines.append(f"- {name}: {seconds:.0f} s")
    for mode, history in histories.items():
        final = {k: round(v[-1], 4) for k, v in history.items()}
        lines.append(f"- {mode} last epoch: {final}")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="CIFAR-10: classifier alone vs RecNet vs QRNet under noise and blur."
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="cifar10.npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--out", default=str(ROOT / "out" / "qrnet_cifar10"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="a ~2 minute smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras fit verbosity")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    config = CONFIGS["quick" if args.quick else "default"]
    data_path = Path(args.data)
    if not data_path.is_file():
        print(f"error: CIFAR-10 not found at {data_path} (pass --data)", file=sys.stderr)
        return 2
    from qrnet.evaluate import evaluate_restoration, format_table, preset_distortions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with np.load(data_path, allow_pickle=False) as data:
        x_train, y_train = data["x_train"], data["y_train"].astype("int64")
        x_test, y_test = data["x_test"], data["y_test"].astype("int64")
    timings = {}

    start = time.time()
    n_clf = config["classifier_images"]
    classifier = train_classifier(
        x_train[:n_clf].astype("float32"), y_train[:n_clf], config["classifier_epochs"], args.seed, args.verbose
    )
    classifier.save(str(out / "classifier.keras"))
    timings["classifier"] = time.time() - start

    # Restorers train on images the classifier has seen, as in the paper (both use the
    # training split); validation images come from the end of the training split.
    n_res, n_val = config["restorer_images"], config["validation_images"]
    data = ((x_train[:n_res], y_train[:n_res]), (x_train[-n_val:], y_train[-n_val:]))
    levels, apply_fn = preset_distortions("qrnet_32px")
    restorers, histories = {}, {}
    for mode in ("recnet", "qrnet"):
        restorer, history, seconds = train_restorer(
            mode, classifier, data, levels, apply_fn, config, args.seed, out, args.verbose
        )
        restorers[mode], histories[mode], timings[mode] = restorer, history, seconds

    start = time.time()
    n_test = config["test_images"]
    rows = evaluate_restoration(
        classifier, x_test[:n_test], y_test[:n_test], levels, restorers,
        preprocessing="unit", seed=args.seed + 1, apply_fn=apply_fn,
    )
    timings["evaluation"] = time.time() - start
    (out / "rows.json").write_text(
        json.dumps([{k: (None if v == float("inf") else v) for k, v in r.items()} for r in rows], indent=1)
    )
    text = report(rows, histories, timings, args, config)
    (out / "report.md").write_text(text)
    print(format_table(rows, "accuracy"))
    print(f"\nwrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

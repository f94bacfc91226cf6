"""QRNet on CIFAR-10: classifier alone vs RecNet, QRNet and MQRNet in front of it.

Reproduces, at CIFAR-10 scale on a CPU, the comparisons of Takagi et al. (IEEE Access
2019): Table 2 / Fig. 4 (classifier alone, RecNet + classifier, QRNet + classifier),
Fig. 6 (MQRNet in front of a classifier not used in training), Table 5 and Fig. 7 (PSNR
and SSIM against accuracy) and Fig. 8 (restored samples):

1. trains three classifiers on the same clean CIFAR-10 images with the same budget (the
   `CLASSIFIERS` table): "a", a small VGG-style CNN; "b", CIFAR10-quick
   (`studies.networks`); "c", LeNet-5 at 32x32, the *unseen* classifier that no
   restorer trains with;
2. trains RecNet (L1 loss only), QRNet (L1 + 0.01 CE of "a") and MQRNet
   (L1 + 0.01 CE of "a" + 0.01 CE of "b") with the same restorer architecture, data, seed and
   schedule (Algorithm 1: batches of clean images and distorted copies, the distortion type
   and level drawn per batch);
3. evaluates accuracy, PSNR and SSIM on test images, for Gaussian noise and Gaussian blur at
   the `qrnet_32px` levels: noise sigma {20, 40, 60, 80, 100} (on 0..255, as in the paper),
   blur sigma {2, 4, 6, 8, 10} * 32 / 224 (the paper's sigmas scaled from 224 px to 32 px),
   with every restorer in front of "a" and in front of the unseen "c";
4. times inference per image with and without a restorer, and draws the figures.

Every finished stage (classifier, restorer, evaluation) is kept in `--out` with the
trained models: running the same command again skips it, and a restorer interrupted
mid-training resumes from its last finished epoch. A folder made with other settings is
refused unless `--overwrite`.

Usage (from the repository root):

    python examples/qrnet_cifar10.py                       # about 21 minutes on 2 CPU cores
    python examples/qrnet_cifar10.py --figures docs/figures
    python examples/qrnet_cifar10.py --quick               # a smoke run on a few hundred images
    python examples/qrnet_cifar10.py --help

The results (JSON rows, a Markdown report, the models) go to `--out` (default
`out/qrnet_cifar10`), the figures to `--figures` (default: `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "cifar10" / "cifar10.npz"

# Plain configuration tables: the default run and the --quick smoke run.
CONFIGS = {
    "default": {
        "classifier_images": 20000,
        "classifier_epochs": 4,
        "restorer_images": 4000,
        "validation_images": 500,
        "restorer_epochs": 4,
        "pretrain_epochs": 1,
        "test_images": 2000,
        "timing_images": 512,
        "restorer": {"base_width": 8, "depth": 3, "small": False, "dropout": 0.2},
    },
    "quick": {
        "classifier_images": 1000,
        "classifier_epochs": 1,
        "restorer_images": 320,
        "validation_images": 64,
        "restorer_epochs": 1,
        "pretrain_epochs": 1,
        "test_images": 200,
        "timing_images": 64,
        "restorer": {"base_width": 4, "depth": 2, "small": True, "dropout": 0.2},
    },
}

# The classifiers, all trained on the same clean images for the same epochs. "network":
# "vgg_bn" is `build_vgg_bn` below, anything else a `studies.networks.NETWORKS` name.
# "preprocessing" maps 0..255 images to the network's input (see `qrnet.ClassifierSpec`).
CLASSIFIERS = {
    "a": {"network": "vgg_bn", "preprocessing": "unit", "seed_offset": 0,
          "role": "QRNet and MQRNet train with it"},
    "b": {"network": "cifar10_quick", "preprocessing": None, "seed_offset": 1,
          "role": "MQRNet trains with it"},
    "c": {"network": "lenet5", "preprocessing": None, "seed_offset": 2,
          "role": "unseen: no restorer trains with it"},
}

# The restorers: mode of `qrnet.QualityRecoveryTrainer` and the classifiers in the loss
# (RecNet's lambda is 0: "a" is only monitored).
RESTORERS = {
    "recnet": {"mode": "recnet", "classifiers": ("a",)},
    "qrnet": {"mode": "qrnet", "classifiers": ("a",)},
    "mqrnet": {"mode": "mqrnet", "classifiers": ("a", "b")},
}

# Which classifiers each table evaluates restorers in front of.
EVALUATED = ("a", "c")
# Fig. 8: test images (the first ones of distinct classes) and level indices per distortion.
SAMPLE_IMAGES = 3
SAMPLE_LEVELS = (1, 4)

# What a run writes in --out besides the report (removed by --overwrite).
CACHE_FILES = ("settings.json", "stages.json", "rows.json", "report.md")


def build_vgg_bn(num_classes: int = 10):
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


def build_classifier(network: str, seed: int):
    """An untrained classifier of `CLASSIFIERS`: `"vgg_bn"` or a `deepcorrect` network."""
    import keras

    keras.utils.set_random_seed(seed)
    if network == "vgg_bn":
        return build_vgg_bn()
    from studies.networks import build_network

    return build_network(network, (32, 32, 3), classes=10, seed=seed)


class Run:
    """The data, the stage cache and the trained models of one run.

    Args:
        args: the parsed flags.
    """

    def __init__(self, args: argparse.Namespace):
        from deepcorrect.stages import Stages
        from robustkit.cli_common import CLIError

        self.args = args
        self.config = CONFIGS["quick" if args.quick else "default"]
        self.seed = int(args.seed)
        self.verbose = int(args.verbose)
        self.out = Path(args.out)
        self.figures = Path(args.figures) if args.figures else self.out
        data_path = Path(args.data)
        if not data_path.is_file():
            raise CLIError(f"CIFAR-10 not found at {data_path} (pass --data)")
        self._prepare({"config": self.config, "seed": self.seed, "quick": bool(args.quick),
                       "data": str(args.data)}, args.overwrite)
        self.stages = Stages(self.out)
        with np.load(data_path, allow_pickle=False) as data:
            self.x_train, self.y_train = data["x_train"], data["y_train"].reshape(-1).astype("int64")
            self.x_test, self.y_test = data["x_test"], data["y_test"].reshape(-1).astype("int64")
        from qrnet.evaluate import preset_distortions

        self.levels, self.apply_fn = preset_distortions("qrnet_32px")

    def _prepare(self, record: dict, overwrite: bool) -> None:
        from robustkit.cli_common import CLIError
        from robustkit.io import atomic_write_text

        if self.out.exists() and not self.out.is_dir():
            raise CLIError(f"--out must be a folder. Received a file: {self.out}")
        saved = self.out / "settings.json"
        if saved.is_file() and json.loads(saved.read_text()) != json.loads(json.dumps(record)):
            if not overwrite:
                raise CLIError(f"{self.out} holds a run with other settings (see {saved}); pass "
                               "--overwrite or choose another --out")
        if overwrite and self.out.is_dir():
            for path in [self.out / n for n in CACHE_FILES] + list(self.out.glob("*.keras")):
                path.unlink(missing_ok=True)
            for path in self.out.glob("*_checkpoints"):
                shutil.rmtree(path)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, json.dumps(record, indent=1, sort_keys=True))

    def _load_or_train(self, key: str, path: Path, train):
        """The model at `path` if stage `key` finished, else `train()` -> (model, record)."""
        import keras

        import qrnet  # noqa: F401  (registers the restorer's layers for loading)
        from robustkit.io import atomic_path

        if self.stages.done(key) and path.is_file():
            return keras.models.load_model(str(path), safe_mode=True)
        start = time.time()
        model, record = train()
        with atomic_path(path) as temporary:
            model.save(temporary)
        self.stages.finish(key, seconds=time.time() - start, **record)
        return model

    def classifier(self, name: str):
        """Classifier `name` of `CLASSIFIERS`, trained on the clean images (cached)."""
        import keras

        spec = CLASSIFIERS[name]
        seed = self.seed + spec["seed_offset"]
        n, epochs = self.config["classifier_images"], self.config["classifier_epochs"]

        def train():
            model = build_classifier(spec["network"], seed)
            model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            images = self.x_train[:n].astype("float32")
            if spec["preprocessing"] == "unit":
                images = images / 255.0
            model.fit(images, self.y_train[:n], batch_size=64, epochs=epochs,
                      verbose=self.verbose)
            return model, {"images": n, "epochs": epochs, "network": spec["network"]}

        return self._load_or_train(f"classifier/{name}", self.out / f"classifier_{name}.keras",
                                   train)

    def restorer(self, name: str, classifiers: dict):
        """Restorer `name` of `RESTORERS` trained by Algorithm 1 (cached, resumable)."""
        import keras

        import qrnet

        spec, config = RESTORERS[name], self.config
        # Restorers train on images the classifiers have seen, as in the paper (both use the
        # training split); validation images come from the end of the training split.
        n_res, n_val = config["restorer_images"], config["validation_images"]

        def train():
            keras.utils.set_random_seed(self.seed)
            restorer = qrnet.build_qrnet(input_shape=(32, 32, 3), name=name, seed=self.seed,
                                         **config["restorer"])
            specs = [qrnet.ClassifierSpec(classifiers[c], CLASSIFIERS[c]["preprocessing"], name=c)
                     for c in spec["classifiers"]]
            trainer = qrnet.QualityRecoveryTrainer(restorer, specs, mode=spec["mode"])
            history = qrnet.train(
                trainer, self.x_train[:n_res], self.y_train[:n_res], self.levels,
                validation=(self.x_train[-n_val:], self.y_train[-n_val:]),
                epochs=config["restorer_epochs"], pretrain_epochs=config["pretrain_epochs"],
                seed=self.seed, apply_fn=self.apply_fn, verbose=self.verbose,
                checkpoint_dir=str(self.out / f"{name}_checkpoints"),
            )
            return restorer, {"history": history, "classifiers": list(spec["classifiers"])}

        return self._load_or_train(f"restorer/{name}", self.out / f"{name}.keras", train)

    def evaluate(self, name: str, classifier, restorers: dict) -> list[dict]:
        """Rows of `evaluate_restoration` for classifier `name` (cached)."""
        from qrnet.evaluate import evaluate_restoration

        key = f"evaluate/{name}"
        if not self.stages.done(key):
            n = self.config["test_images"]
            start = time.time()
            rows = evaluate_restoration(
                classifier, self.x_test[:n], self.y_test[:n], self.levels, restorers,
                preprocessing=CLASSIFIERS[name]["preprocessing"], seed=self.seed + 1,
                apply_fn=self.apply_fn,
            )
            self.stages.finish(key, seconds=time.time() - start, rows=rows)
        return [{**r, "classifier": name} for r in self.stages.record(key)["rows"]]


def inference_seconds(classifiers: dict, restorer, images) -> dict[str, float]:
    """Seconds per image of each classifier alone, of the restorer, and of both chained."""
    import tensorflow as tf

    from qrnet import resolve_preprocessing
    from qrnet.evaluate import seconds_per_image

    def chain(*stages):
        @tf.function(reduce_retracing=True)
        def run(batch):
            for stage in stages:
                batch = stage(batch)
            return batch

        return run

    restore = lambda x: restorer(x, training=False)  # noqa: E731
    timed = {"restorer": chain(restore)}
    for name, model in classifiers.items():
        prepare = resolve_preprocessing(CLASSIFIERS[name]["preprocessing"])
        classify = lambda x, m=model, p=prepare: m(p(x), training=False)  # noqa: E731
        timed[f"classifier {name}"] = chain(classify)
        timed[f"restorer + classifier {name}"] = chain(restore, classify)
    return {key: seconds_per_image(fn, images) for key, fn in timed.items()}


def sample_indices(labels: np.ndarray, count: int) -> list[int]:
    """The first `count` indices whose labels are all different."""
    chosen, seen = [], set()
    for index, label in enumerate(labels):
        if label not in seen:
            chosen.append(index)
            seen.add(label)
        if len(chosen) == count:
            break
    return chosen


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from robustkit.io import atomic_path

    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png", dpi=110)
    plt.close(fig)


def plot_quality_vs_accuracy(rows: list[dict], classifier: str, path: Path) -> None:
    """Fig. 7: accuracy against PSNR and SSIM, one point per distortion, level and method."""
    plt = _pyplot()
    distortions = [d for d in dict.fromkeys(r["distortion"] for r in rows) if d != "clean"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(len(distortions), 2, figsize=(9, 3.6 * len(distortions)),
                             squeeze=False)
    for i, distortion in enumerate(distortions):
        for j, metric in enumerate(("psnr", "ssim")):
            ax = axes[i, j]
            for method in methods:
                points = [(r[metric], r["accuracy"]) for r in rows
                          if r["distortion"] == distortion and r["method"] == method
                          and np.isfinite(r[metric])]
                label = (f"classifier {classifier} alone" if method == "classifier"
                         else f"{method} + {classifier}")
                ax.plot(*zip(*points), marker="o", label=label)
            ax.set_xlabel("PSNR (dB)" if metric == "psnr" else "SSIM")
            ax.set_ylabel("accuracy")
            ax.set_title(f"{distortion}: accuracy against {metric.upper()}")
            ax.grid(alpha=0.3)
        axes[i, 0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_samples(images: np.ndarray, cases: list[tuple[str, float]], apply_fn, restorers: dict,
                 seed: int, path: Path) -> None:
    """Fig. 8: rows clean / distorted / each restorer; columns each case and each image."""
    from qrnet import restore
    from qrnet.evaluate import distort_images

    plt = _pyplot()
    columns = []  # (title, {row name: image})
    for name, level in cases:
        distorted = distort_images(images, name, level, seed, apply_fn=apply_fn)
        restored = {m: restore(r, distorted) for m, r in restorers.items()}
        for i in range(len(images)):
            cells = {"clean": images[i], "distorted": distorted[i]}
            cells.update({m: restored[m][i] for m in restorers})
            columns.append((f"{name}\n{level:g}", cells))
    row_names = list(columns[0][1])
    fig, axes = plt.subplots(len(row_names), len(columns),
                             figsize=(1.1 * len(columns) + 0.8, 1.2 * len(row_names)),
                             squeeze=False)
    for j, (title, cells) in enumerate(columns):
        for i, row in enumerate(row_names):
            ax = axes[i, j]
            ax.imshow(np.clip(cells[row], 0, 255).astype("uint8"), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
            if j == 0:
                ax.set_ylabel(row, fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def level_means(rows: list[dict]) -> str:
    """A Markdown table of the mean accuracy over levels, per classifier and distortion."""
    from qrnet.evaluate import average_over_levels

    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| classifier | distortion | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for name in dict.fromkeys(r["classifier"] for r in rows):
        means = average_over_levels([r for r in rows if r["classifier"] == name])
        for distortion, values in means.items():
            if distortion != "clean":
                cells = [f"{values[m]:.3f}" if m in values else "" for m in methods]
                lines.append(f"| {name} | {distortion} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(run: Run, rows: list[dict], seconds: dict, figures: list[Path]) -> str:
    from qrnet.evaluate import format_table

    args, stages = run.args, run.stages
    command = "python examples/qrnet_cifar10.py" + (" --quick" if args.quick else "")
    command += f" --seed {args.seed}" + (f" --figures {args.figures}" if args.figures else "")
    by = {name: [r for r in rows if r["classifier"] == name] for name in EVALUATED}
    lines = [
        "# QRNet on CIFAR-10", "",
        f"Command: `{command}`", "",
        "Configuration: " + json.dumps(run.config), "",
        "Levels (`qrnet_32px`): awgn sigma {20, 40, 60, 80, 100} on 0..255; gaussian_blur sigma "
        "{2, 4, 6, 8, 10} x 32/224, window 8 sigma + 1.", "",
        "Classifiers (same clean images and epochs):", "",
    ]
    for name, spec in CLASSIFIERS.items():
        lines.append(f"- {name}: {spec['network']} ({spec['role']})")
    for name in EVALUATED:
        lines += ["", f"## Accuracy, restorers in front of classifier {name}", "",
                  format_table(by[name], "accuracy")]
    lines += ["", "## Mean accuracy over levels", "", level_means(rows), "",
              "## PSNR (dB) of what the classifier sees", "", format_table(by["a"], "psnr", 2), "",
              "## SSIM", "", format_table(by["a"], "ssim"), "",
              "## Inference seconds per image", "",
              f"Best of 3 passes over {run.config['timing_images']} test images, batch 32:", ""]
    lines += [f"- {key}: {value * 1e3:.3f} ms" for key, value in seconds.items()]
    lines += ["", "## Training", ""]
    for key, record in stages.records.items():
        if key.startswith(("classifier/", "restorer/")):
            lines.append(f"- {key}: {record['seconds']:.0f} s")
    for key, record in stages.records.items():
        if key.startswith("restorer/"):
            final = {k: round(v[-1], 4) for k, v in record["history"].items() if v}
            lines.append(f"- {key} last epoch: {final}")
    lines += ["", "## Figures", ""] + [f"- {path}" for path in figures]
    return "\n".join(lines) + "\n"


def run_example(args: argparse.Namespace) -> None:
    from robustkit.io import atomic_write_text
    from qrnet.evaluate import format_table

    run = Run(args)
    classifiers = {name: run.classifier(name) for name in CLASSIFIERS}
    restorers = {}
    for name in RESTORERS:
        restorers[name] = run.restorer(name, classifiers)
    rows = [r for name in EVALUATED for r in run.evaluate(name, classifiers[name], restorers)]
    strict = [{k: (None if v == float("inf") else v) for k, v in r.items()} for r in rows]
    atomic_write_text(run.out / "rows.json", json.dumps(strict, indent=1))

    timing_images = run.x_test[: run.config["timing_images"]]
    seconds = inference_seconds({n: classifiers[n] for n in EVALUATED}, restorers["qrnet"],
                                timing_images)

    figures = []
    for name in EVALUATED:
        path = run.figures / f"qrnet_cifar10_quality_vs_accuracy_{name}.png"
        plot_quality_vs_accuracy([r for r in rows if r["classifier"] == name], name, path)
        figures.append(path)
    n_test = run.config["test_images"]
    chosen = sample_indices(run.y_test[:n_test], SAMPLE_IMAGES)
    cases = [(d, levels[i]) for d, levels in run.levels.items() for i in SAMPLE_LEVELS]
    path = run.figures / "qrnet_cifar10_samples.png"
    plot_samples(run.x_test[chosen].astype("float32"), cases, run.apply_fn, restorers,
                 run.seed + 1, path)
    figures.append(path)

    text = report(run, rows, seconds, figures)
    atomic_write_text(run.out / "report.md", text)
    for name in EVALUATED:
        print(f"classifier {name}:\n" + format_table([r for r in rows if r["classifier"] == name]))
    print(f"\nwrote {run.out / 'report.md'}")


def parse_args(argv=None):
    from robustkit.seeds import seed_argument

    parser = argparse.ArgumentParser(
        description="CIFAR-10: classifier alone vs RecNet, QRNet and MQRNet under noise and "
                    "blur, in front of a seen and an unseen classifier."
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="cifar10.npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--out", default=str(ROOT / "out" / "qrnet_cifar10"),
                        help="output folder (models, stages, rows, report)")
    parser.add_argument("--figures", default=None,
                        help="folder for the PNG figures (default: --out)")
    parser.add_argument("--quick", action="store_true", help="a smoke run on a few hundred images")
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="discard a run with other settings in --out")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="Keras fit verbosity")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from robustkit.cli_common import fail_cleanly

    return fail_cleanly(run_example, args)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

"""The `qrnet` command line: train | restore | evaluate | export.

Examples (from the repository root):

    python -m qrnet train --data ../shared/data/cifar10/cifar10.npz --limit 2000 \\
        --classifier clf.keras --preprocessing unit --levels qrnet_32px \\
        --preset qrnet_cpu --epochs 5 --out runs/qrnet
    python -m qrnet evaluate --restorer runs/qrnet/restorer.keras --classifier clf.keras \\
        --preprocessing unit --data ../shared/data/cifar10/cifar10.npz --split test --limit 1000
    python -m qrnet restore --model runs/qrnet/restorer.keras --input noisy.npz --output clean.npz
    python -m qrnet export --model runs/qrnet/restorer.keras --classifier clf.keras --out export/

Errors are reported as one line on stderr with exit status 2 (set DEEPCORRECT_DEBUG=1 for the
traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from robustkit.cli_common import CLIError, load_data, refuse_existing, run_command_line
from robustkit.io import atomic_path, atomic_write_text, make_dirs
from robustkit.seeds import seed_argument

# --- Inputs -------------------------------------------------------------------------------


def _load_restorer(path: str, flag: str = "--model"):
    """Loads a restorer `.keras` file; refuses a model that does not map images to images."""
    import qrnet  # noqa: F401  (registers the restorer's layers)
    from robustkit.cli_common import load_keras_file

    model = load_keras_file(path, flag, compile=False)
    inputs = [tuple(x.shape) for x in model.inputs]
    outputs = [tuple(x.shape) for x in model.outputs]
    images_out = (len(inputs) == len(outputs) == 1 and len(inputs[0]) == len(outputs[0]) == 4
                  and inputs[0][-1] == outputs[0][-1])
    if not images_out:
        kind = " (a classifier? pass it as --classifier)" if outputs and len(outputs[0]) == 2 else ""
        raise CLIError(f"{flag} must be a restorer, a model from images [N, H, W, C] to images of "
                       f"the same shape (as `qrnet train` writes). Received: a model from "
                       f"{', '.join(map(str, inputs))} to {', '.join(map(str, outputs))}{kind}: "
                       f"{path}")
    return model


def _load_classifiers(args) -> list[tuple[str, Any, Any]]:
    """`(name, model, preprocessing)` for each --classifier."""
    from robustkit.cli_common import load_model_spec

    specs = args.classifier or []
    weights = _per_item(args.weights, len(specs), "--weights")
    modes = _per_item(args.preprocessing, len(specs), "--preprocessing")
    loaded = []
    for spec, weight, mode in zip(specs, weights, modes):
        name, (model, preprocess), _ = load_model_spec(spec, weight, "--classifier")
        loaded.append((name, model, mode if mode is not None else preprocess))
    return loaded


def _per_item(values: list | None, count: int, flag: str) -> list:
    if not values:
        return [None] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise CLIError(f"{flag} must be given once or once per --classifier ({count}). Received {len(values)}")
    return list(values)


def _parse_distortion(text: str) -> tuple[str, tuple[float, ...]]:
    name, _, levels = text.partition("=")
    try:
        values = tuple(float(v) for v in levels.split(",") if v)
    except ValueError:
        values = ()
    if not name or not values:
        raise argparse.ArgumentTypeError(f"expected NAME=LEVEL[,LEVEL...], got {text!r}")
    return name, values


def _distortions(args):
    from qrnet.evaluate import apply_with_options, preset_distortions

    levels, apply_fn = preset_distortions(args.levels)
    if args.distortion:
        from qrnet.evaluate import LEVEL_PRESETS

        levels = dict(args.distortion)
        apply_fn = apply_with_options(LEVEL_PRESETS[args.levels]["options"])
    from distort import names

    unknown = sorted(set(levels) - set(names()))
    if unknown:
        raise CLIError(f"--distortion names must be among {names()}. Received: {unknown}")
    return levels, apply_fn


def _write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1, default=float))


# --- Subcommands --------------------------------------------------------------------------


def run_train(args) -> None:
    import keras

    import qrnet

    out = Path(args.out)
    final = out / "restorer.keras"
    refuse_existing(final, args.overwrite)
    images, labels = load_data(args.data, split=args.split, size=args.image_size, limit=args.limit)
    if labels is None:
        raise CLIError(f"--data needs labels for training: {args.data}")
    if not 0.0 <= args.val_fraction < 1.0:
        raise CLIError(f"--val-fraction must be in [0, 1). Received: {args.val_fraction}")
    n_val = int(round(len(images) * args.val_fraction))
    if len(images) - n_val < 2:
        raise CLIError(f"too few training images ({len(images) - n_val}); raise --limit")
    validation = (images[-n_val:], labels[-n_val:]) if n_val else None
    levels, apply_fn = _distortions(args)
    overrides = {
        key: value
        for key, value in (
            ("base_width", args.base_width),
            ("depth", args.depth),
            ("small", args.small),
            ("dropout", args.dropout),
        )
        if value is not None
    }
    keras.utils.set_random_seed(args.seed)
    restorer = qrnet.qrnet_from_preset(args.preset, input_shape=(None, None, images.shape[-1]),
                                       seed=args.seed, **overrides)
    classifiers = [
        qrnet.ClassifierSpec(model, preprocessing=prep, name=name)
        for name, model, prep in _load_classifiers(args)
    ]
    trainer = qrnet.QualityRecoveryTrainer(
        restorer,
        classifiers,
        lambdas=args.lambdas[0] if args.lambdas and len(args.lambdas) == 1 else args.lambdas,
        mode=args.mode,
        head_layers=args.head_layers,
    )
    history = qrnet.train(
        trainer,
        images[: len(images) - n_val],
        labels[: len(images) - n_val],
        levels,
        validation=validation,
        epochs=args.epochs,
        pretrain_epochs=args.pretrain_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        checkpoint_dir=str(out / "checkpoints"),
        seed=args.seed,
        verbose=args.verbose,
        apply_fn=apply_fn,
        steps_per_epoch=args.steps_per_epoch,
    )
    best = out / "checkpoints" / "restorer_best.keras"
    if best.is_file():
        restorer.set_weights(_load_restorer(str(best)).get_weights())
    # restorer.keras last: once it exists the run is complete (a rerun refuses to redo it).
    _write_json(out / "history.json", {"mode": trainer.mode, "lambdas": trainer.lambdas, "history": history})
    with atomic_path(final) as temporary:
        restorer.save(temporary)
    print(f"wrote {final} (mode {trainer.mode}, {len(next(iter(history.values()), []))} epochs)")


def _read_inputs(path: Path, key: str | None):
    if path.suffix == ".npz":
        if not path.is_file():
            raise CLIError(f"input file not found: {path}")
        from robustkit.data import read_npz

        data = read_npz(path)
        chosen = key or next((k for k in ("x", "x_test", "images") if k in data), None)
        if chosen not in data:
            raise CLIError(f"--key {chosen!r} not in {path}. Found: {', '.join(data)}")
        return data[chosen], None
    from robustkit.data import IMAGE_SUFFIXES

    files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise CLIError(f"no images found at {path}")
    from PIL import Image

    return [np.asarray(Image.open(f).convert("RGB")) for f in files], files


def run_restore(args) -> None:
    import qrnet

    restorer = _load_restorer(args.model)
    output = Path(args.output)
    refuse_existing(output, args.overwrite)
    images, files = _read_inputs(Path(args.input), args.key)
    if files is None:
        restored = qrnet.restore(restorer, images, batch_size=args.batch_size)
        if output.suffix != ".npz":
            raise CLIError(f"--output must be an .npz file for .npz input. Received: {output}")
        with atomic_path(output) as temporary:
            np.savez_compressed(temporary, x=np.clip(np.round(restored), 0, 255).astype("uint8"))
        print(f"wrote {len(restored)} restored images to {output}")
        return
    from PIL import Image

    make_dirs(output)
    for image, file in zip(images, files):
        restored = qrnet.restore(restorer, image)
        with atomic_path(output / f"{file.stem}.png") as temporary:
            Image.fromarray(np.clip(np.round(restored), 0, 255).astype("uint8")).save(temporary)
    print(f"wrote {len(files)} restored images to {output}/")


def run_evaluate(args) -> None:
    from qrnet.evaluate import evaluate_restoration, format_table

    classifiers = _load_classifiers(args)
    if len(classifiers) != 1:
        raise CLIError(f"evaluate needs exactly one --classifier. Received: {len(classifiers)}")
    _, classifier, preprocessing = classifiers[0]
    restorers = {}
    for item in args.restorer or []:
        name, _, path = item.rpartition("=")
        restorers[name or Path(path).stem] = _load_restorer(path, "--restorer")
    images, labels = load_data(args.data, split=args.split, size=args.image_size, limit=args.limit)
    if labels is None:
        raise CLIError(f"--data needs labels for evaluation: {args.data}")
    levels, apply_fn = _distortions(args)
    rows = evaluate_restoration(
        classifier,
        images,
        labels,
        levels,
        restorers,
        preprocessing=preprocessing,
        seed=args.seed,
        batch_size=args.batch_size,
        apply_fn=apply_fn,
    )
    for key in ("accuracy", "top5", "psnr", "ssim"):
        print(f"\n{key}:\n{format_table(rows, key, 3 if key != 'psnr' else 2)}")
    if args.out:
        refuse_existing(args.out, args.overwrite)
        clean_rows = [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in rows]
        _write_json(Path(args.out), {"rows": clean_rows})
        print(f"\nwrote {args.out}")


def run_export(args) -> None:
    from qrnet.export import export

    restorer = _load_restorer(args.model)
    out = Path(args.out)
    refuse_existing(out / "restorer", args.overwrite)
    classifiers = _load_classifiers(args)  # every input is checked before anything is written
    if len(classifiers) > 1:
        raise CLIError(f"export takes at most one --classifier. Received: {len(classifiers)}")
    _, classifier, preprocessing = classifiers[0] if classifiers else (None, None, None)
    written = export(restorer, out, classifier, preprocessing)
    print("wrote " + ", ".join(written))


# --- Parser -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Reports usage errors as one line on stderr (exit status 2)."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


def _add_classifier_args(parser, required: bool) -> None:
    parser.add_argument("--classifier", action="append", required=required,
                        help="a .keras classifier or a keras.applications name (repeatable)")
    parser.add_argument("--weights", action="append",
                        help="weights file of a keras.applications classifier (once or per classifier)")
    parser.add_argument("--preprocessing", action="append",
                        choices=("none", "unit", "symmetric", "caffe", "torch"),
                        help="how the classifier reads 0..255 images (once or per classifier); "
                        "default: none for .keras files, the application's own otherwise")


def _add_data_args(parser, split: str) -> None:
    parser.add_argument("--data", required=True, help=".npz (x_<split>, y_<split>) or image folder")
    parser.add_argument("--split", default=split, help=f"npz split (default {split})")
    parser.add_argument("--limit", type=int, help="use the first N images")
    parser.add_argument("--image-size", type=int, default=224, help="crop size for image folders")


def _add_distortion_args(parser) -> None:
    from qrnet.evaluate import LEVEL_PRESETS

    parser.add_argument("--levels", default="qrnet", choices=sorted(LEVEL_PRESETS),
                        help="distortion level preset (default qrnet: the paper's, for ~224 px)")
    parser.add_argument("--distortion", action="append", type=_parse_distortion,
                        help="NAME=L1,L2,... replaces the preset's levels (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `qrnet` command line."""
    from qrnet.model import PRESETS
    from qrnet.trainer import DEFAULT_TRAINING, MODES

    parser = _Parser(prog="qrnet", description=__doc__.split("\n")[0])
    parser.add_argument("--verbose", dest="show_logs", action="store_true",
                        help="show TensorFlow's start-up and info log lines (hidden by default "
                             "unless TF_CPP_MIN_LOG_LEVEL is set)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a restorer (Algorithm 1)")
    _add_data_args(train, "train")
    _add_classifier_args(train, required=False)
    _add_distortion_args(train)
    train.add_argument("--out", required=True, help="output folder (restorer.keras, history.json, checkpoints/)")
    train.add_argument("--mode", choices=MODES, help="default: recnet without classifiers, else qrnet / mqrnet")
    train.add_argument("--lambda", dest="lambdas", type=float, action="append",
                       help=f"classification-loss weight (once or per classifier; default {DEFAULT_TRAINING['lambda']})")
    train.add_argument("--head-layers", type=int, default=1, help="Dense layers trained in end_to_end mode")
    train.add_argument("--preset", default="qrnet_cpu", choices=sorted(PRESETS), help="restorer size")
    train.add_argument("--base-width", type=int)
    train.add_argument("--depth", type=int)
    train.add_argument("--small", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--dropout", type=float)
    train.add_argument("--val-fraction", type=float, default=0.2, help="validation share (default 0.2)")
    train.add_argument("--epochs", type=int, default=DEFAULT_TRAINING["epochs"])
    train.add_argument("--pretrain-epochs", type=int, default=0, help="epochs on clean images first")
    train.add_argument("--batch-size", type=int, default=DEFAULT_TRAINING["batch_size"])
    train.add_argument("--learning-rate", type=float, default=DEFAULT_TRAINING["learning_rate"])
    train.add_argument("--patience", type=int, default=DEFAULT_TRAINING["patience"])
    train.add_argument("--steps-per-epoch", type=int)
    train.add_argument("--seed", type=seed_argument, default=0)
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    train.add_argument("--overwrite", action="store_true")
    train.set_defaults(run=run_train)

    restore = commands.add_parser("restore", help="restore images with a trained restorer")
    restore.add_argument("--model", required=True, help="restorer .keras file")
    restore.add_argument("--input", required=True, help=".npz, an image file or a folder of images")
    restore.add_argument("--output", required=True, help=".npz (for .npz input) or a folder of PNGs")
    restore.add_argument("--key", help="array name in the input .npz (default x, x_test or images)")
    restore.add_argument("--batch-size", type=int, default=32)
    restore.add_argument("--overwrite", action="store_true")
    restore.set_defaults(run=run_restore)

    evaluate = commands.add_parser("evaluate", help="accuracy, PSNR and SSIM per distortion and level")
    _add_data_args(evaluate, "test")
    _add_classifier_args(evaluate, required=True)
    _add_distortion_args(evaluate)
    evaluate.add_argument("--restorer", action="append", help="[NAME=]restorer.keras (repeatable)")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--seed", type=seed_argument, default=0)
    evaluate.add_argument("--out", help="write the rows as JSON")
    evaluate.add_argument("--overwrite", action="store_true")
    evaluate.set_defaults(run=run_evaluate)

    export = commands.add_parser("export", help="SavedModels of the restorer and restorer + classifier")
    export.add_argument("--model", required=True, help="restorer .keras file")
    export.add_argument("--out", required=True, help="folder for restorer/ and restorer_classifier/")
    _add_classifier_args(export, required=False)
    export.add_argument("--overwrite", action="store_true")
    export.set_defaults(run=run_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the `qrnet` command line; returns the exit status.

    Example:

    >>> main(["restore", "--model", "missing.keras", "--input", "x.npz", "--output", "y.npz"])
    2
    """
    return run_command_line(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

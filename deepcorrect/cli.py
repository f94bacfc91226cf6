"""`deepcorrect` command line: `demo | compare | rank | wrap | finetune | train | evaluate | export`.

`deepcorrect demo --out out/demo` tells the whole story on Fashion-MNIST (baseline, sweep,
ranking, correction units, Finetune and QRNet for comparison, a table and a report);
`--dataset cifar10 --data cifar10.npz` does the same on CIFAR-10. `deepcorrect compare
--model base.keras --data cifar10.npz --distortion gaussian_blur` puts every repair side by
side on your own model and recommends one.

A typical session on CIFAR-10 (models are `.keras` files or `keras.applications`
names with `--weights`; data is an image folder or a CIFAR-style `.npz`):

    deepcorrect rank --model base.keras --data ../shared/data/cifar10/cifar10.npz \\
        --distortion gaussian_blur --preset deepcorrect_cifar --limit 1000 --out ranking.json
    deepcorrect wrap --model base.keras --ranking ranking.json --beta 0.5 --out wrapped.keras
    deepcorrect train --model wrapped.keras --data ../shared/data/cifar10/cifar10.npz \\
        --distortion gaussian_blur --preset deepcorrect_cifar --epochs 5 \\
        --checkpoint-dir runs/blur --out corrected.keras
    deepcorrect evaluate --model base.keras --model corrected.keras \\
        --data ../shared/data/cifar10/cifar10.npz --distortion gaussian_blur \\
        --preset deepcorrect_cifar --out eval/
    deepcorrect export --model corrected.keras --out serving/

(the session of README.md, which `tests/test_cli_session.py` runs for every distortion).

Errors print one line on stderr and exit with status 2. `rank` and `train`
killed part-way resume when run again with the same command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from robustkit.cli_common import (CLIError, load_data, load_model_spec, refuse_existing,
                                require_positive, run_command_line)
from robustkit.seeds import seed_argument


def _model_args(p, many: bool = False) -> None:
    p.add_argument("--model", required=True, action="append" if many else "store",
                   help="a .keras file or a keras.applications name (e.g. MobileNetV2)")
    p.add_argument("--weights", default=None,
                   help="weights file for a keras.applications model (default: download imagenet)")


def _data_args(p) -> None:
    p.add_argument("--data", required=True,
                   help="a CIFAR-style .npz (x_train, y_train, x_test, y_test) or an image folder")
    p.add_argument("--split", choices=("train", "test"), default=None,
                   help="which split of an .npz to use (default: train for rank/train, test for evaluate)")
    p.add_argument("--limit", type=int, default=None, help="use the first N images")


def _distortion_args(p) -> None:
    p.add_argument("--distortion", required=True, help="a distortion name, e.g. gaussian_blur, awgn")
    p.add_argument("--levels", type=float, nargs="+", default=None,
                   help="levels (default: the preset's levels for the distortion)")
    p.add_argument("--preset", default="deepcorrect_cifar",
                   help="level preset (default deepcorrect_cifar; deepcorrect_imagenet for ImageNet)")


def _load_data(args, default_split: str, size: int | None):
    require_positive(args, "limit")
    return load_data(args.data, split=args.split or default_split, size=size, limit=args.limit)


def _levels(args):
    from distort import presets

    return args.levels if args.levels is not None else list(presets.levels(args.preset, args.distortion))


def _run_rank(args) -> None:
    import deepcorrect

    from distort import presets, registry
    from distort.spec import Distortion

    registry.check_name(args.distortion)
    refuse_existing(args.out, args.overwrite)
    partial = str(args.out) + ".partial"  # finished layers; a rerun resumes from it
    _, (model, preprocess), size = load_model_spec(args.model, args.weights)
    x, y = _load_data(args, "train", size)
    _check_data(args, args.model, model, x, y)
    options = presets.options(args.preset).get(args.distortion, {})
    distortion = Distortion(args.distortion, options=options)
    ranking = deepcorrect.rank(model, x, y, distortion, _levels(args), layers=args.layers,
                               site=args.site, score=args.score, method=args.method,
                               batch_size=args.batch_size, seed=args.seed, preprocess=preprocess,
                               checkpoint=partial)
    # Rewrite the checkpoint whole, then rename it: the ranking and its checkpoint
    # never both exist, and never neither.
    ranking.save(partial)
    os.replace(partial, args.out)
    for name in ranking.layer_names:
        print(f"{name}: top filters {ranking.order(name)[:8].tolist()}")
        if ranking.reliability(name) is not None:
            print(f"{name}: {ranking.reliability(name).summary()}")
    print(f"wrote {args.out}")


def _run_wrap(args) -> None:
    import deepcorrect

    refuse_existing(args.out, args.overwrite)
    label, (model, preprocess), _ = load_model_spec(args.model, args.weights)
    ranking = _load_ranking(args.ranking, model)
    options = _wrap_options(args, model, ranking)  # beta, layers, kernel size, batch norms
    wrapped = deepcorrect.wrap(model, ranking, unit=args.unit, **options,
                               train_head=args.train_head, site=args.site, seed=args.seed)
    wrapped = taking_pixels(wrapped, label, preprocess)
    _save(wrapped, args.out)
    trainable = deepcorrect.trainable_parameters(wrapped)
    print(f"wrote {args.out} ({trainable:,} trainable parameters)")


def _wrap_options(args, model, ranking) -> dict:
    """`deepcorrect.wrap` keyword arguments from the `wrap` flags.

    `--beta` and `--kernel-size` take one value for every corrected layer, and
    `LAYER=VALUE` entries for single layers (`--beta 0.5 conv1=0.75`); with
    per-layer entries, every corrected layer needs a value.
    """
    from deepcorrect.planning import choose_layers

    chosen = choose_layers(model, ranking, layers=args.layers, first=args.first)
    return {
        "beta": _per_layer_values(args.beta, "--beta", float, chosen),
        "kernel_size": _per_layer_values(args.kernel_size, "--kernel-size", int, chosen),
        "layers": args.layers,
        "first": args.first,
        "unit_bn_momentum": args.unit_bn_momentum,
        "train_batch_norm": {"auto": "auto", "yes": True, "no": False}[args.train_batch_norm],
    }


def _per_layer_values(tokens: list[str], flag: str, kind: type, chosen: list[str]):
    """One value, or `{layer: value}` for every corrected layer, from `VALUE` and `LAYER=VALUE`."""
    default, per_layer = None, {}
    for token in tokens:
        name, _, text = token.rpartition("=")
        try:
            value = kind(text)
        except ValueError:
            raise CLIError(f"{flag} takes a {kind.__name__} or LAYER={kind.__name__.upper()} "
                           f"entries. Received: {token}") from None
        if not name and default is not None:
            raise CLIError(f"{flag} takes one value for every layer. Received: {default}, {text}")
        if name:
            per_layer[name] = value
        else:
            default = value
    if not per_layer:
        return default
    extra = sorted(set(per_layer) - set(chosen))
    if extra:
        raise CLIError(f"{flag} names layers that are not corrected: {extra}. "
                       f"Corrected layers: {chosen}")
    missing = [name for name in chosen if name not in per_layer and default is None]
    if missing:
        raise CLIError(f"{flag} has no value for the corrected layers {missing}: give one value "
                       f"for every layer too (e.g. {flag} {tokens[0].rpartition('=')[2]} "
                       f"{' '.join(tokens)})")
    return {name: per_layer.get(name, default) for name in chosen}


def _check_data(args, flag_value: str, model, x, y) -> None:
    """Refuses `--data` that does not fit a model: labels outside its classes, another size.

    `rank` and `train` feed the images to the model as they are, so their size
    must be the model's input size (an image folder is read at that size);
    `evaluate` resizes, as `distort.sweep` does, and passes `x=None`.
    """
    from deepcorrect import checks

    try:
        if x is not None:
            checks.check_image_size(x, model)
        if y is not None:
            checks.check_class_labels(y, model)
    except ValueError as e:
        raise CLIError(f"--data {args.data} does not fit --model {flag_value}: {e}") from None


def taking_pixels(model, label: str, preprocess) -> "keras.Model":
    """`model` with its `keras.applications` preprocessing as its first layer.

    A model built from a `keras.applications` name expects that family's input
    convention; the `.keras` files the command line writes take 0..255 pixels
    instead, so that `train`, `evaluate` and `export` need no preprocessing flag.

    Args:
        model: The model to save.
        label: The `--model` it came from (an application name such as
            "MobileNetV2" or "MobileNet:0.5:160", or a `.keras` file's stem).
        preprocess: The preprocessing `load_model_spec` returned; None for a
            `.keras` file, which is then returned unchanged.

    Returns:
        A model taking 0..255 pixels.
    """
    if preprocess is None:
        return model
    import keras

    from robustkit.data import APPLICATIONS
    from robustkit.preprocessing import ImagePreprocessing

    inputs = keras.Input(model.input_shape[1:], name="pixels")
    pixels = ImagePreprocessing(APPLICATIONS[label.split(":")[0]][0], name="preprocessing")(inputs)
    return keras.Model(inputs, model(pixels), name=model.name)


def _load_ranking(path: str, model):
    """Reads a `--ranking` JSON file made for `model`.

    Args:
        path: The ranking file written by `deepcorrect rank`.
        model: The model the ranking must have been made for.

    Returns:
        The `deepcorrect.Ranking`.

    Raises:
        CLIError: For a missing file, a directory, malformed JSON, a JSON
            document that is not a ranking, or a ranking of another model.
    """
    import json

    import deepcorrect

    p = Path(path)
    if p.is_dir():
        raise CLIError(f"--ranking must be a JSON file, not a directory: {p}")
    if not p.is_file():
        raise CLIError(f"--ranking file not found: {p}")
    try:
        content = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CLIError(f"--ranking is not valid JSON ({e}): {p}") from None
    if not isinstance(content, dict):
        raise CLIError(f"--ranking is not a deepcorrect ranking (a JSON object is expected, "
                       f"found {type(content).__name__}): {p}")
    try:
        ranking = deepcorrect.Ranking.from_dict(content)
    except (KeyError, TypeError, AttributeError) as e:
        raise CLIError(f"--ranking is not a deepcorrect ranking (bad or missing field {e}): "
                       f"{p}") from None
    try:
        ranking.check_model(model)
    except ValueError as e:
        raise CLIError(f"--ranking does not fit --model: {e}") from None
    return ranking


def _run_finetune(args) -> None:
    import deepcorrect

    refuse_existing(args.out, args.overwrite)
    if args.k != "all" and not args.k.lstrip("-").isdigit():
        raise CLIError(f"--k must be an integer or 'all'. Received: --k {args.k}")
    label, (model, preprocess), _ = load_model_spec(args.model, args.weights)
    k = args.k if args.k == "all" else int(args.k)
    train_batch_norm = {"auto": "auto", "yes": True, "no": False}[args.train_batch_norm]
    tuned = taking_pixels(deepcorrect.finetune(model, k, train_batch_norm=train_batch_norm),
                          label, preprocess)
    _save(tuned, args.out)
    trainable = deepcorrect.trainable_parameters(tuned)
    print(f"wrote {args.out} ({trainable:,} trainable parameters)")


def _run_train(args) -> None:
    import deepcorrect

    refuse_existing(args.out, args.overwrite)
    label, (model, preprocess), size = load_model_spec(args.model, args.weights)
    x, y = _load_data(args, "train", size)
    _check_data(args, args.model, model, x, None if args.teacher else y)
    teacher = None
    if args.teacher:
        teacher_label, (teacher, teacher_preprocess), _ = load_model_spec(
            args.teacher, _teacher_weights(args), "--teacher")
        teacher = taking_pixels(teacher, teacher_label, teacher_preprocess)
    elif args.teacher_weights is not None:
        raise CLIError("--teacher-weights needs --teacher. Received: --teacher-weights "
                       f"{args.teacher_weights} without --teacher")
    deepcorrect.train(model, x, None if teacher else y, args.distortion, _levels(args),
                      preset=args.recipe or ("label_free" if teacher else "deepcorrect_cifar"),
                      epochs=args.epochs, batch_size=args.batch_size,
                      learning_rate=args.learning_rate, teacher=teacher, preprocess=preprocess,
                      checkpoint_dir=args.checkpoint_dir, seed=args.seed, augment=args.augment,
                      refresh_statistics=not args.keep_moving_statistics)
    _save(model, args.out)
    print(f"wrote {args.out}")


def _teacher_weights(args) -> str | None:
    """The weights of a `keras.applications` `--teacher`.

    `--teacher-weights` when given; otherwise `--weights` when `--teacher`
    names the same application as `--model` (the same network, so the same
    weights); otherwise None (Keras's ImageNet download).
    """
    teacher_is_file = Path(args.teacher).suffix == ".keras"
    if args.teacher_weights is not None:
        if teacher_is_file:
            raise CLIError("--teacher-weights sets the weights of a keras.applications "
                           f"--teacher, but --teacher is a .keras file: {args.teacher}")
        if args.teacher_weights != "imagenet" and not Path(args.teacher_weights).is_file():
            raise CLIError(f"--teacher-weights file not found: {args.teacher_weights}")
        return args.teacher_weights
    if args.teacher == args.model and not teacher_is_file:
        return args.weights
    if args.weights is not None and not teacher_is_file and Path(args.model).suffix == ".keras":
        raise CLIError(f"--weights sets the weights of a keras.applications --model, but --model "
                       f"is a .keras file: {args.model}. Give the teacher's with --teacher-weights")
    return None


def _run_evaluate(args) -> None:
    from distort import presets, registry
    from robustkit.io import atomic_write_text, make_dirs
    from distort.sweep import sweep

    registry.check_name(args.distortion)
    specs, size = {}, None
    for name in args.model:
        label, spec, s = load_model_spec(name, args.weights)
        specs[label] = spec
        size = size or s
    x, y = _load_data(args, "test", size)
    for label, (model, _) in specs.items():
        _check_data(args, label, model, None, y)  # no size check: the sweep resizes
    out = Path(args.out)
    make_dirs(out)
    result = sweep(specs, x, y, {args.distortion: _levels(args)}, preset=args.preset,
                   seed=args.seed, checkpoint=out / "evaluate.json",
                   options=presets.options(args.preset))
    result.to_csv(out / "evaluate.csv")
    atomic_write_text(out / "evaluate.md", result.to_markdown("top1"))
    result.plot(out / "evaluate.png", metrics=("top1",))
    print(result.to_markdown("top1"))


def _run_export(args) -> None:
    import deepcorrect

    refuse_existing(args.out, args.overwrite)
    _, (model, _), _ = load_model_spec(args.model, args.weights)
    deepcorrect.export(model, args.out, preprocess=args.preprocess)
    print(f"wrote {args.out}")


def _run_demo(args) -> None:
    from studies import demo

    demo.main_args(args)


def _run_compare(args) -> None:
    from deepcorrect.compare import main_args

    main_args(args)


def _save(model, path) -> None:
    from robustkit.io import atomic_path

    if not str(path).endswith(".keras"):
        raise CLIError(f"--out must end in .keras. Received: {path}")
    with atomic_path(path) as tmp:
        model.save(tmp)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepcorrect", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", dest="show_logs", action="store_true",
                        help="show TensorFlow's start-up and info log lines (hidden by default "
                             "unless TF_CPP_MIN_LOG_LEVEL is set)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the whole story on Fashion-MNIST (or CIFAR-10): baseline, "
                       "sweep, ranking, correction units vs Finetune vs QRNet, report")
    p.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "cifar10"))
    p.add_argument("--data", default=None,
                   help="Fashion-MNIST idx folder (default /usr/share/datasets/fashion-mnist) "
                        "or a CIFAR-style .npz (required for cifar10)")
    p.add_argument("--quick", action="store_true",
                   help="a few hundred images and one epoch (a smoke run)")
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--out", default="out/demo",
                   help="output folder (default out/demo); an interrupted run resumes there")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an earlier run's results in --out and start afresh")
    p.set_defaults(run=_run_demo)

    p = sub.add_parser("compare", help="every repair (BN adaptation, TENT, Finetune, DeepCorrect, "
                       "QRNet, combinations) on your model, one table, and a recommendation")
    from deepcorrect.compare import add_arguments as compare_arguments

    compare_arguments(p)
    p.set_defaults(run=_run_compare)

    p = sub.add_parser("rank", help="rank conv filters by correction priority (Algorithm 1)")
    _model_args(p), _data_args(p), _distortion_args(p)
    p.add_argument("--layers", nargs="+", default=None, help="conv layer names (default: all)")
    p.add_argument("--site", default="pre_activation", choices=("pre_activation", "post_activation"))
    p.add_argument("--score", default=None,
                   choices=("gain", "relative_error", "log_prob", "log_prob_magnitude"),
                   help="log_prob (the exact method's default): gain in the true class's "
                        "log-probability, continuous and more reliable; log_prob_magnitude: its "
                        "magnitude (a swap that hurts ranks high too); gain: the paper's top-1 "
                        "accuracy gain; relative_error: the original code's")
    p.add_argument("--method", default="exact", choices=("exact", "approx"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--out", required=True, help="ranking JSON to write")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_run_rank)

    p = sub.add_parser("wrap", help="add correction units on the top-ranked filters")
    _model_args(p)
    p.add_argument("--ranking", required=True, help="ranking JSON from `deepcorrect rank`")
    p.add_argument("--beta", nargs="+", default=["0.5"], metavar="[LAYER=]BETA",
                   help="fraction of each layer's filters to correct, (0, 1] (default 0.5); "
                        "LAYER=BETA entries set single layers, e.g. --beta 0.5 conv1=0.75")
    p.add_argument("--unit", default="cw", help="unit preset: cw, lite, bottleneck, no_bn")
    p.add_argument("--first", type=int, default=None, help="correct only the first k ranked conv layers")
    p.add_argument("--train-head", type=int, default=0, help="also train the last k layers (Deepcorr-kc)")
    p.add_argument("--layers", nargs="+", default=None,
                   help="correct these conv layers (default: every ranked layer); not with --first")
    p.add_argument("--kernel-size", nargs="+", default=["3"], metavar="[LAYER=]K",
                   help="inner kernel size of the units (default 3); LAYER=K entries set single "
                        "layers, e.g. --kernel-size 3 conv1=5 (the paper's AlexNet)")
    p.add_argument("--unit-bn-momentum", type=float, default=None,
                   help="momentum of the units' batch norms, in [0, 1) (default Keras's 0.99; "
                        "0.9 for runs of about a hundred steps)")
    p.add_argument("--train-batch-norm", choices=("no", "yes", "auto"), default="no",
                   help="also train the batch norm after each corrected conv: no (default), yes, "
                        "or auto (unless it is folded: mean 0, variance 1, gamma 1)")
    p.add_argument("--site", choices=("auto", "conv", "batch_norm"), default="auto",
                   help="where the units sit: auto (default: after the batch norm that follows "
                        "the conv where there is one, on the conv output otherwise), conv (the "
                        "conv output), or batch_norm (after the batch norm; every corrected conv "
                        "must have one)")
    p.add_argument("--seed", type=seed_argument, default=0, help="seed of the units' initial weights")
    p.add_argument("--out", required=True, help="output .keras file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_run_wrap)

    p = sub.add_parser("finetune", help="Finetune-k baseline: make the first k conv layers trainable")
    _model_args(p)
    p.add_argument("--k", required=True, help="number of conv layers from the input, or 'all'")
    p.add_argument("--train-batch-norm", choices=("auto", "yes", "no"), default="auto",
                   help="train the batch norms after those convs: auto (default) unless they "
                        "are folded (mean 0, variance 1, gamma 1, as in converted weights)")
    p.add_argument("--out", required=True, help="output .keras file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_run_finetune)

    p = sub.add_parser("train", help="train a wrapped or fine-tunable model on half-distorted batches")
    _model_args(p), _data_args(p), _distortion_args(p)
    p.add_argument("--recipe", default=None,
                   help="training preset: deepcorrect_cifar, deepcorrect_imagenet, cpu_quick, "
                        "label_free (default: label_free with --teacher, else deepcorrect_cifar)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--teacher", default=None, help="label-free mode: a frozen reference model")
    p.add_argument("--teacher-weights", default=None,
                   help="weights file of a keras.applications --teacher (default: --weights when "
                        "--teacher names the same application as --model, else imagenet)")
    p.add_argument("--checkpoint-dir", default=None, help="per-epoch backups; rerun to resume")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="flip and shift the training images at random, for small training sets "
                        "(default: the recipe's, on for label_free only)")
    p.add_argument("--keep-moving-statistics", action="store_true",
                   help="keep the units' batch-norm moving averages as training left them "
                        "(default: set them to the exact statistics of the first epoch's "
                        "batches after training, precise BN)")
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--out", required=True, help="output .keras file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_run_train)

    p = sub.add_parser("evaluate", help="accuracy per level of one or more models")
    _model_args(p, many=True), _data_args(p), _distortion_args(p)
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(run=_run_evaluate)

    p = sub.add_parser("export", help="write a SavedModel for TF Serving")
    _model_args(p)
    p.add_argument("--preprocess", default=None,
                   help="preprocessing applied to uint8 inputs: mobilenet_v2, tf, torch, caffe, or none")
    p.add_argument("--out", required=True, help="output SavedModel folder")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_run_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the `deepcorrect` command line; returns the exit status."""
    return run_command_line(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

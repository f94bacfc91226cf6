"""`distort benchmark`: a model's ImageNet-C errors, CE, mCE and relative mCE from the shell.

Examples:

    distort benchmark --model MobileNetV2 --weights ../shared/models/mobilenet_v2_1.0_224.weights.h5 \\
        --data ../shared/data/imagenet-samples --out out/benchmark
    distort benchmark --model MobileNetV2 --imagenet-c /data/ImageNet-C --limit 500 --out out/in-c
    distort benchmark --model clf.keras --data cifar10.npz --cifar-c /data/CIFAR-10-C --out out/c10c

The corruptions are generated from the clean photos of `--data`, or read from
an ImageNet-C tree or a CIFAR-10-C / CIFAR-100-C folder; `--data` then
gives the clean error (for the relative mCE). Run the same command again to
resume: every finished severity is kept in `<out>/benchmark-rows.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from robustkit.cli_common import CLIError, load_data, load_model_spec, require_positive
from robustkit.seeds import seed_argument

BASELINES = ("alexnet", "none")


def add_parser(sub) -> None:
    """Adds the `benchmark` subcommand to the `distort` command line."""
    p = sub.add_parser("benchmark", help="ImageNet-C errors, CE, mCE and relative mCE of a model",
                       description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a .keras file or a keras.applications name")
    p.add_argument("--weights", default=None, help="weights file of a keras.applications --model")
    p.add_argument("--data", default=None,
                   help="clean images: an image folder (class subfolders or labels.csv) or a "
                        "CIFAR-style .npz; the corruptions are generated from them unless "
                        "--imagenet-c or --cifar-c is given")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--imagenet-c", default=None, metavar="TREE",
                        help="read the corruptions from an ImageNet-C folder tree")
    source.add_argument("--cifar-c", default=None, metavar="FOLDER",
                        help="read the corruptions from a CIFAR-10-C / CIFAR-100-C folder")
    p.add_argument("--corruptions", nargs="+", default=["imagenet_c"],
                   help="imagenet_c (the fifteen, default), imagenet_c_extra (the four held-out), "
                        "all, or corruption names")
    p.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--baseline", default=None,
                   help="alexnet (the reference's constants; default except with --cifar-c), "
                        "none (errors only), or another model's benchmark.json")
    p.add_argument("--class-index", default=None,
                   help="for --imagenet-c: a JSON file mapping wnid -> label (default: the "
                        "tree's sorted wnids, the standard order for all 1,000 classes)")
    p.add_argument("--limit", type=int, default=None, help="use at most N images (per severity)")
    p.add_argument("--every", type=int, default=1, help="use every k-th image (default 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--out", required=True,
                   help="output folder: benchmark.json, benchmark.md, benchmark.png")
    p.set_defaults(run=run)


def load_baseline(value: str | None, cifar: bool):
    """The `--baseline` as a `corruption_metrics` baseline, or None for errors only."""
    from distort import corruption_metrics as cm
    from distort.corruption_benchmark import BenchmarkResult

    if value is None:
        value = "none" if cifar else "alexnet"
    if value == "alexnet":
        return cm.ALEXNET
    if value == "none":
        return None
    path = Path(value)
    if not path.is_file():
        raise CLIError(f"--baseline must be one of {BASELINES} or a benchmark.json file. "
                       f"Received: {value}")
    try:
        other = BenchmarkResult.from_json(path)
    except (ValueError, KeyError, TypeError) as e:
        raise CLIError(f"--baseline is not a benchmark.json ({e}): {path}") from None
    if other.clean_error() is None:
        raise CLIError(f"--baseline {path} has no clean error: benchmark that model with --data")
    return cm.baseline_from_errors(other.errors(), other.clean_error(), name=other.model)


def run(args) -> None:
    """Runs `distort benchmark`."""
    from distort.corruption_benchmark import benchmark, corruption_list
    from robustkit.io import atomic_write_text, make_dirs

    require_positive(args, "every", "limit")
    if args.data is None and args.imagenet_c is None and args.cifar_c is None:
        raise CLIError("--data (clean images), --imagenet-c or --cifar-c must be given")
    corruptions = args.corruptions[0] if len(args.corruptions) == 1 and \
        args.corruptions[0] in ("imagenet_c", "imagenet_c_extra", "all") else args.corruptions
    corruption_list(corruptions)
    baseline = load_baseline(args.baseline, cifar=args.cifar_c is not None)
    class_index = None
    if args.class_index is not None:
        try:
            class_index = {str(k): int(v) for k, v in
                           json.loads(Path(args.class_index).read_text()).items()}
        except (OSError, ValueError, AttributeError) as e:
            raise CLIError(f"--class-index must be a JSON object wnid -> label ({e}): "
                           f"{args.class_index}") from None
    label, spec, size = load_model_spec(args.model, args.weights)
    images = labels = None
    if args.data is not None:
        images, labels = load_data(args.data, size=size, limit=args.limit, every=args.every)
    source, data = "generate", None
    if args.imagenet_c is not None:
        source, data = "imagenet_c", args.imagenet_c
    elif args.cifar_c is not None:
        source, data = "cifar_c", args.cifar_c
    out = make_dirs(args.out)
    result = benchmark(spec, images, labels, corruptions, severities=args.severities,
                       source=source, data=data, baseline=baseline, name=label,
                       batch_size=args.batch_size, seed=args.seed,
                       checkpoint=out / "benchmark-rows.json", class_index=class_index,
                       limit=args.limit, every=args.every)
    result.meta.update(model=args.model, clean_data=args.data)
    result.to_json(out / "benchmark.json")
    atomic_write_text(out / "benchmark.md", result.to_markdown())
    result.plot(out / "benchmark.png")
    print(result.to_markdown(), end="")
    print(f"wrote {out}/benchmark.json, benchmark.md, benchmark.png")

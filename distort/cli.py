"""`distort` command line: `sweep`, `apply`, `show` and `benchmark` (ImageNet-C, mCE).

Examples:

    distort apply photo.jpg blurred.png --name gaussian_blur --level 3
    distort apply --list
    distort show photo.jpg grid.png --preset dodge_karam
    distort sweep --model MobileNetV2 --weights ../shared/models/mobilenet_v2_1.0_224.weights.h5 \\
        --data ../shared/data/imagenet-samples --preset dodge_karam --out out/sweep
    distort sweep --model clf.keras --data photos/ --levels jpeg=30,10,5 --resize squash --out out/q
    distort benchmark --model MobileNetV2 --weights ../shared/models/mobilenet_v2_1.0_224.weights.h5 \\
        --data ../shared/data/imagenet-samples --out out/benchmark

Errors print one line on stderr and exit with status 2. TensorFlow's start-up
log lines are hidden unless `--verbose` is given (or TF_CPP_MIN_LOG_LEVEL is set).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from distort import benchmark_cli
from robustkit.cli_common import (CLIError, load_data, load_model_spec, quiet_tensorflow,
                                refuse_existing, require_positive, run_command_line)
from robustkit.seeds import seed_argument

POSITIONALS = ("input", "output")


class _ListDistortions(argparse.Action):
    """`--list`: prints every distortion with its level argument and range, then exits."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        quiet_tensorflow(getattr(namespace, "show_logs", False))
        print(distortion_table(), end="")
        parser.exit()


def distortion_table() -> str:
    """Every distortion's name, level argument and allowed levels, one per line.

    Example:

    >>> print(distortion_table().splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
    name  level  allowed levels
    """
    from distort import registry

    notes = {
        "gaussian_blur": "sigma <= min(h, w)/2 (4*sigma+1 window)",
        "defocus_blur": "radius <= min(h, w)",
        "motion_blur": "length <= 2*min(h, w)+1",
        "motion_blur_horizontal": "length <= 2*min(h, w)+1",
        "motion_blur_vertical": "length <= 2*min(h, w)+1",
        "random_walk_blur": "size <= min(h, w); random (--seed)",
        "combined": "max_level <= min(h, w); random (--seed)",
        "awgn": "random (--seed)",
        "camera_shake": "random (--seed)",
        "jpeg": "an integer",
    }
    rows = [("name", "level", "allowed levels")]
    for name in registry.names():
        _, arg, _, _ = registry.DISTORTIONS[name]
        low, high = registry.level_range(name)
        if arg is None:
            allowed = "0 (off) or 1 (on)"
        elif math.isinf(high):
            allowed = f">= {low:g}"
        else:
            allowed = f"[{low:g}, {high:g}]"
        note = notes.get(name)
        rows.append((name, arg or "-", f"{allowed}; {note}" if note else allowed))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}\n" for r in rows)


def _add_apply(sub) -> None:
    p = sub.add_parser("apply", help="distort one image file")
    p.add_argument("--list", action=_ListDistortions,
                   help="print every distortion name with its level argument and range, and exit")
    p.add_argument("input", help="input image file")
    p.add_argument("output", help="output image file (PNG recommended)")
    p.add_argument("--name", required=True, help="distortion name (see `distort apply --list`)")
    p.add_argument("--level", required=True, type=float, help="distortion level")
    p.add_argument("--seed", type=seed_argument, default=0,
                   help="seed of random distortions, an integer in [0, 2147483647] (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(run=_run_apply)


def _run_apply(args) -> None:
    from distort import registry
    from robustkit import data
    from robustkit.io import atomic_path

    from PIL import Image

    registry.check_name(args.name)
    refuse_existing(args.output, args.overwrite)
    image = data.read_image(args.input)
    level = int(args.level) if args.name in ("jpeg",) and args.level == int(args.level) else args.level
    out = np.asarray(registry.apply(image, args.name, level, seed=args.seed))
    with atomic_path(args.output) as tmp:
        Image.fromarray(out).save(tmp, format=_format_of(args.output))
    print(f"wrote {args.output}")


def _format_of(path: str) -> str:
    from PIL import Image

    ext = Path(path).suffix.lower()
    Image.preinit()  # the common formats; every plugin (0.3 s more) only for a rarer suffix
    fmt = Image.EXTENSION.get(ext) or Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"output must end in an image suffix such as .png or .jpg. Received: {path}")
    return fmt


def _add_show(sub) -> None:
    p = sub.add_parser("show", help="one image across every level of every distortion")
    p.add_argument("input", help="input image file")
    p.add_argument("output", help="output figure (PNG)")
    p.add_argument("--preset", default="dodge_karam", help="level preset (default dodge_karam)")
    p.add_argument("--size", type=int, default=224, help="center-crop size (default 224)")
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_run_show)


def _run_show(args) -> None:
    from distort import presets
    from robustkit import data
    from distort.sweep import level_grid

    table = presets.get(args.preset)
    refuse_existing(args.output, args.overwrite)
    image = data.read_image(args.input, size=args.size)
    level_grid(image, table, args.output, seed=args.seed, options=presets.options(args.preset))
    print(f"wrote {args.output}")


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="accuracy of one or more models over every distortion level")
    p.add_argument("--model", action="append", required=True,
                   help="a .keras file or a keras.applications name; repeat for several models")
    p.add_argument("--weights", action="append", default=None,
                   help="weights file for each keras.applications --model, in the same order")
    p.add_argument("--data", required=True,
                   help="an image folder (class subfolders or labels.csv) or a CIFAR-style .npz")
    p.add_argument("--preset", default="dodge_karam", help="level preset (default dodge_karam)")
    p.add_argument("--distortions", nargs="*", default=None,
                   help="distortion names, at the preset's levels (default: every distortion of "
                        "the preset, or only those of --levels)")
    p.add_argument("--levels", action="append", type=levels_argument, default=None,
                   metavar="NAME=L1,L2,...",
                   help="a distortion at levels of your choosing, e.g. jpeg=30,10,5 (repeatable); "
                        "it replaces the preset's levels for NAME")
    p.add_argument("--limit", type=int, default=None,
                   help="use the first N images (only those are read)")
    p.add_argument("--every", type=int, default=1, help="use every k-th image (default 1)")
    p.add_argument("--resize", choices=("crop", "squash"), default="crop",
                   help="how photos of a folder become squares: crop (default: resize the short "
                        "side to --scale, keep the centre 224/256) or squash (the whole photo "
                        "resized to the same square, aspect ratio not kept)")
    p.add_argument("--scale", type=int, default=None,
                   help="short side (px) at which photos are distorted, then each model resizes "
                        "the 224/256 center crop to its input; default: the preset's canonical "
                        "scale (vasiljevic: 384), else 256/224 of the largest model input")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--out", required=True,
                   help="output folder for sweep.json/.csv/.md and figures (sweep.png: top-1 and "
                        "top-5; confidence.png: true-class confidence; levels.png: one photo)")
    p.set_defaults(run=_run_sweep)


def levels_argument(text: str) -> tuple[str, tuple[float, ...]]:
    """`argparse` type of `--levels NAME=L1,L2,...`: a name and its levels.

    Example:

    >>> levels_argument("jpeg=30,5")
    ('jpeg', (30.0, 5.0))
    """
    name, _, values = text.partition("=")
    try:
        levels = tuple(float(v) for v in values.split(","))
    except ValueError:
        levels = ()
    if not name or not levels:
        raise argparse.ArgumentTypeError(f"expected NAME=L1[,L2,...], e.g. jpeg=30,5. "
                                         f"Received: {text!r}")
    return name, levels


def sweep_table(preset: str, names: list[str] | None,
                levels: list[tuple[str, tuple[float, ...]]] | None) -> dict[str, tuple[float, ...]]:
    """The distortions and levels `distort sweep` scores, from its options.

    Args:
        preset: The `--preset`.
        names: The `--distortions` (at the preset's levels), or None.
        levels: The `--levels` pairs `(name, levels)`, or None.

    Returns:
        Distortion name -> levels: every name of `names` (default: every
        distortion of the preset, unless `levels` are given), the `levels`
        replacing the preset's own for their names.

    Raises:
        ValueError: For an unknown name, a name given twice in `--levels`, or a
            level outside the distortion's range.

    Example:

    >>> sweep_table("dodge_karam", None, [("jpeg", (30.0, 5.0))])
    {'jpeg': (30.0, 5.0)}
    """
    from distort import presets, registry
    from robustkit.checks import check_level

    chosen = dict(levels or [])
    if len(chosen) != len(levels or []):
        raise CLIError("--levels names a distortion twice")
    if names is None:
        names = [] if chosen else list(presets.get(preset))
    table = {}
    for name in [*names, *[n for n in chosen if n not in names]]:
        registry.check_name(name)
        if name in chosen:
            low, high = registry.level_range(name)
            for value in chosen[name]:
                check_level(f"--levels {name}", value, low, high)
            table[name] = chosen[name]
        else:
            table[name] = presets.levels(preset, name)
    return table


def _run_sweep(args) -> None:
    from distort import presets
    from distort import sweep as sweep_mod
    from robustkit.io import atomic_write_text, make_dirs

    require_positive(args, "every", "limit")
    if args.scale is not None and args.scale < 32:
        raise ValueError(f"--scale must be >= 32 pixels. Received: {args.scale}")
    table = sweep_table(args.preset, args.distortions, args.levels)
    weights = args.weights or []
    specs = {}
    sizes = []
    for i, name in enumerate(args.model):
        label, spec, input_size = load_model_spec(name, weights[i] if i < len(weights) else None)
        specs[label] = spec
        sizes.append(input_size)
    scale = args.scale or presets.canonical_scale(args.preset)
    # The crop keeps the usual 224/256 of the short side; models resize it to their input.
    size = round(scale * 224 / 256) if scale else max(sizes)
    images, labels = load_data(args.data, size=size, short_side=scale, limit=args.limit,
                               every=args.every, resize=args.resize)
    out = make_dirs(args.out)
    options = presets.options(args.preset)
    result = sweep_mod.sweep(specs, images, labels, table, preset=args.preset,
                             batch_size=args.batch_size, seed=args.seed,
                             checkpoint=out / "sweep.json", options=options)
    result.meta.update(data=str(args.data), models=list(specs), every=args.every, limit=args.limit,
                       distorted_at=[int(v) for v in images.shape[1:3]], resize=args.resize,
                       short_side=scale or round(size * 256 / 224), model_inputs=sizes)
    result.to_json(out / "sweep.json")
    result.to_csv(out / "sweep.csv")
    atomic_write_text(out / "sweep.md", result.to_markdown(("top1", "top5", "confidence", "entropy")))
    result.plot(out / "sweep.png")
    result.plot(out / "confidence.png", metrics=("confidence",))
    sweep_mod.level_grid(images[0], _levels_of(result), out / "levels.png", seed=args.seed,
                         options=options)
    print(result.to_markdown("top1"))
    print(f"wrote {out}/sweep.json, sweep.csv, sweep.md, sweep.png, confidence.png, levels.png")


def _levels_of(result) -> dict:
    table: dict = {}
    for r in result.rows:
        if r["level"] is not None:
            table.setdefault(r["distortion"], [])
            if r["level"] not in table[r["distortion"]]:
                table[r["distortion"]].append(r["level"])
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distort", description=__doc__.split("\n")[0])
    parser.add_argument("--verbose", dest="show_logs", action="store_true",
                        help="show TensorFlow's start-up and info log lines (hidden by default "
                             "unless TF_CPP_MIN_LOG_LEVEL is set)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_apply(sub)
    _add_show(sub)
    _add_sweep(sub)
    benchmark_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the `distort` command line; returns the exit status."""
    return run_command_line(build_parser(), argv, POSITIONALS)


if __name__ == "__main__":
    sys.exit(main())

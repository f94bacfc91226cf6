"""`distort` command line: `sweep`, `apply` and `show`.

Examples:

    distort apply photo.jpg blurred.png --name gaussian_blur --level 3
    distort show photo.jpg grid.png --preset dodge_karam
    distort sweep --model MobileNetV2 --weights ../shared/models/mobilenet_v2_1.0_224.weights.h5 \\
        --data ../shared/data/imagenet-samples --preset dodge_karam --out out/sweep

Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from distort.cli_common import fail_cleanly, load_model_spec, refuse_existing


def _add_apply(sub) -> None:
    p = sub.add_parser("apply", help="distort one image file")
    p.add_argument("input", help="input image file")
    p.add_argument("output", help="output image file (PNG recommended)")
    p.add_argument("--name", required=True, help="distortion name (see `distort apply --list`)")
    p.add_argument("--level", required=True, type=float, help="distortion level")
    p.add_argument("--seed", type=int, default=0, help="seed of random distortions (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(run=_run_apply)


def _run_apply(args) -> None:
    from distort import data, registry
    from distort.io import atomic_path

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
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"output must end in an image suffix such as .png or .jpg. Received: {path}")
    return fmt


def _add_show(sub) -> None:
    p = sub.add_parser("show", help="one image across every level of every distortion")
    p.add_argument("input", help="input image file")
    p.add_argument("output", help="output figure (PNG)")
    p.add_argument("--preset", default="dodge_karam", help="level preset (default dodge_karam)")
    p.add_argument("--size", type=int, default=224, help="center-crop size (default 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_run_show)


def _run_show(args) -> None:
    from distort import data, presets
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
                   help="distortion names (default: every distortion of the preset)")
    p.add_argument("--limit", type=int, default=None, help="use the first N images")
    p.add_argument("--every", type=int, default=1, help="use every k-th image (default 1)")
    p.add_argument("--scale", type=int, default=None,
                   help="short side (px) at which photos are distorted, then each model resizes "
                        "the 224/256 center crop to its input; default: the preset's canonical "
                        "scale (vasiljevic: 384), else 256/224 of the largest model input")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True,
                   help="output folder for sweep.json/.csv/.md and figures (sweep.png: top-1 and "
                        "top-5; confidence.png: true-class confidence; levels.png: one photo)")
    p.set_defaults(run=_run_sweep)


def _run_sweep(args) -> None:
    from distort import presets
    from distort import sweep as sweep_mod
    from distort.io import atomic_write_text

    if args.every < 1:
        raise ValueError(f"--every must be >= 1. Received: {args.every}")
    if args.scale is not None and args.scale < 32:
        raise ValueError(f"--scale must be >= 32 pixels. Received: {args.scale}")
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
    images, labels = load_eval_data(args.data, size, short_side=scale)
    images, labels = images[:: args.every], labels[:: args.every]
    if args.limit is not None:
        images, labels = images[: args.limit], labels[: args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = presets.options(args.preset)
    result = sweep_mod.sweep(specs, images, labels, args.distortions, preset=args.preset,
                             batch_size=args.batch_size, seed=args.seed,
                             checkpoint=out / "sweep.json", options=options)
    result.meta.update(data=str(args.data), models=list(specs), every=args.every, limit=args.limit,
                       distorted_at=[int(v) for v in images.shape[1:3]],
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


def load_eval_data(path: str, size: int | None,
                   short_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads test images and labels from a folder or a CIFAR-style `.npz`.

    Folder photos are center-cropped to `size` after resizing their short side
    to `short_side` (default 256/224 of `size`).
    """
    from distort import data

    p = Path(path)
    if p.suffix == ".npz":
        _, (x, y) = data.load_cifar10(p)
        return x, y
    folder = data.load_image_folder(p, size=size or 224, short_side=short_side)
    if folder.skipped:
        print(f"skipped {len(folder.skipped)} unreadable file(s)", file=sys.stderr)
    return folder.images, folder.labels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distort", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_apply(sub)
    _add_show(sub)
    _add_sweep(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the `distort` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return fail_cleanly(args.run, args)


if __name__ == "__main__":
    sys.exit(main())

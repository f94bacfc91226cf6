"""Does the fast ranking agree with the exact one? Spearman, top-beta overlap and seconds per layer.

A thin script over `deepcorrect.rank`: for any classifier (a `.keras` file taking 0..255
pixels, or a `keras.applications` name with its weights) and `--images` images drawn with
`--seed` (from a CIFAR-style `.npz`'s training split, or an image folder), it ranks the first
`--layers` conv layers with the exact method (`score="log_prob"`) and with the first-order
approximation (`method="approx"`) on the same images and levels, and reports per layer the
Spearman correlation of the two, the overlap of their top-beta filters (the filters
`deepcorrect.wrap` would correct), the exact ranking's split-half reliability (Spearman-Brown:
how far any estimate can agree with it) and the seconds each took. Written to `--out` as
`agreement.md` and `agreement.json`.

Usage (from the repository root):

    .venv/bin/python examples/rank_agreement.py --model out/cifar10_converged/baseline.keras \\
        --data ../shared/data/cifar10/cifar10.npz --images 1000 --levels 0.5 1 1.5 2 2.5 3
    .venv/bin/python examples/rank_agreement.py --model MobileNetV2 \\
        --weights ../shared/models/mobilenet_v2_1.0_224.weights.h5 \\
        --data ../shared/data/imagenet-samples --images 48 --levels 2 4 --layers 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def parse_args(argv=None):
    from robustkit.seeds import seed_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True,
                   help="a .keras file taking 0..255 pixels, or a keras.applications name")
    p.add_argument("--weights", default=None, help="weights file of a keras.applications model")
    p.add_argument("--data", required=True, help="a CIFAR-style .npz or an image folder")
    p.add_argument("--images", type=int, default=200, help="ranking images (default 200)")
    p.add_argument("--distortion", default="gaussian_blur")
    p.add_argument("--levels", type=float, nargs="+", required=True)
    p.add_argument("--layers", type=int, default=3, help="the first N conv layers (default 3)")
    p.add_argument("--beta", type=float, default=0.5,
                   help="fraction of filters corrected, for the top-beta overlap (default 0.5)")
    p.add_argument("--out", default="out/rank_agreement")
    p.add_argument("--seed", type=seed_argument, default=0)
    return p.parse_args(argv)


def run(args) -> None:
    import deepcorrect
    from deepcorrect.cli import taking_pixels
    from deepcorrect.graph import conv_layers
    from distort import registry
    from robustkit.cli_common import load_model_spec, require_positive
    from robustkit.data import load_images
    from robustkit.io import atomic_write_text, make_dirs

    require_positive(args, "images", "layers")
    registry.check_name(args.distortion)
    if not 0 < args.beta <= 1:
        raise ValueError(f"--beta must be in (0, 1]. Received: {args.beta}")
    label, (model, preprocess), size = load_model_spec(args.model, args.weights)
    model = taking_pixels(model, label, preprocess)
    split = "train" if args.data.endswith(".npz") else "test"
    x, y = load_images(args.data, split=split, size=size)
    if y is None:
        raise ValueError(f"--data {args.data} has no labels; the exact ranking needs them")
    import numpy as np

    pick = np.sort(np.random.default_rng(args.seed).permutation(len(x))[: args.images])
    x, y = x[pick], y[pick]
    layers = [layer.name for layer in conv_layers(model)][: args.layers]
    common = dict(layers=layers, seed=args.seed, progress=False)
    start = time.perf_counter()
    exact = deepcorrect.rank(model, x, y, args.distortion, args.levels, **common)
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    approx = deepcorrect.rank(model, x, y, args.distortion, args.levels, method="approx",
                              **common)
    approx_s = time.perf_counter() - start
    rows = []
    for name in layers:
        top_e, top_a = exact.top(name, args.beta), approx.top(name, args.beta)
        rows.append({"layer": name, "filters": int(len(exact.priorities[name])),
                     "spearman": float(deepcorrect.spearman(exact, approx, name)),
                     "exact_reliability": float(exact.reliability(name).spearman_brown),
                     "top_overlap": len(set(top_e.tolist()) & set(top_a.tolist())) / len(top_e)})
    result = {"model": label, "images": int(len(x)), "distortion": args.distortion,
              "levels": list(args.levels), "beta": args.beta, "exact_seconds": exact_s,
              "approx_seconds": approx_s, "layers": rows}
    lines = [f"{label}, {len(x)} images, {args.distortion} at {list(args.levels)}: exact "
             f"(log_prob) {exact_s:.1f} s, approx {approx_s:.1f} s "
             f"({exact_s / max(approx_s, 1e-9):.1f}x).", "",
             f"| layer | filters | Spearman | top-{args.beta:g} overlap | exact split-half "
             "reliability |", "|---|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['filters']} | {r['spearman']:.2f} | {r['top_overlap']:.2f} "
              f"| {r['exact_reliability']:.2f} |" for r in rows]
    out = make_dirs(args.out)
    atomic_write_text(out / "agreement.json", json.dumps(result, indent=1))
    atomic_write_text(out / "agreement.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    from robustkit.cli_common import fail_cleanly

    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

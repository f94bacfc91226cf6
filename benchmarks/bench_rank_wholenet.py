"""The exact ranking of a whole network, timed per layer and projected, against the approximate one.

Ranking every filter of MobileNetV2 exactly (every filter swapped in turn, at every level, on
every image) takes too long to run here in full, so this script measures it: for every conv
layer it ranks the first `--filters` filters exactly (`deepcorrect.rank(filters=(0, k))`) on
`--images` photos, twice (the first call traces the layer's tail; the second is timed), and
projects the layer's time to all of its filters and to `--project-images` photos:

    layer seconds = swaps per second measured on the layer x filters x levels x images

The same run times the approximate method on `--approx-images` photos for every layer at
once (traced, then timed) and scales it to `--project-images` photos. The ratio of the two
is the speed-up of `method="approx"`. Shards of the exact job (`deepcorrect rank --filters`
and `Ranking.merge`) divide its wall time by the number of processes that run them.

Usage (from the repository root):

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_rank_wholenet.py
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_rank_wholenet.py --layers 4

Prints one JSON object: per layer the measured swaps per second and the projected seconds,
the projected total, the approximate method's seconds and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WEIGHTS = ROOT / ".." / "shared" / "models" / "mobilenet_v2_1.0_224.weights.h5"
PHOTOS = ROOT / ".." / "shared" / "data" / "imagenet-samples"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(WEIGHTS))
    p.add_argument("--data", default=str(PHOTOS))
    p.add_argument("--images", type=int, default=16,
                   help="photos of each layer's exact measurement (default 16)")
    p.add_argument("--filters", type=int, default=8, help="filters swapped per layer (default 8)")
    p.add_argument("--approx-images", type=int, default=100,
                   help="photos of the approximate method's measurement (default 100)")
    p.add_argument("--levels", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--project-images", type=int, default=1000)
    p.add_argument("--layers", type=int, default=None,
                   help="only the first N conv layers (default: all)")
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    import deepcorrect
    from deepcorrect.graph import conv_layers, filter_count
    from robustkit import data

    from measure import host, timed  # benchmarks/measure.py, beside this script

    for name, path in (("--weights", args.weights), ("--data", args.data)):
        if not Path(path).exists():
            print(f"error: {name} not found: {path}", file=sys.stderr)
            return 2
    model = keras.applications.MobileNetV2(weights=args.weights)
    preprocess = data.preprocessor("MobileNetV2")
    folder = data.load_image_folder(args.data, limit=max(args.images, args.approx_images))
    images, labels = folder.images[: args.images], folder.labels[: args.images]
    layers = [layer.name for layer in conv_layers(model)][: args.layers]
    common = dict(distortion="gaussian_blur", levels=args.levels, preprocess=preprocess,
                  batch_size=args.batch_size, progress=False)

    per_layer = {}
    for name in layers:
        filters = filter_count(model.get_layer(name))
        k = min(args.filters, filters)
        call = lambda: deepcorrect.rank(model, images, labels, layers=[name],  # noqa: E731
                                        filters=(0, k), reliability=False, **common)
        call()  # traces the layer's tail
        _, seconds = timed(call)
        swaps = k * len(args.levels) * len(images)
        rate = swaps / seconds
        projected = filters * len(args.levels) * args.project_images / rate
        per_layer[name] = {"filters": filters, "swaps_per_second": round(rate, 2),
                           "projected_seconds": round(projected, 1)}
        print(f"{name}: {rate:.1f} swaps/s, projected {projected:.0f} s", file=sys.stderr,
              flush=True)

    approx_images = folder.images[: args.approx_images]
    approx = lambda: deepcorrect.rank(  # noqa: E731
        model, approx_images, folder.labels[: args.approx_images], layers=layers,
        method="approx", **common)
    approx()
    _, approx_seconds = timed(approx)
    approx_projected = approx_seconds * args.project_images / len(approx_images)
    exact_total = sum(v["projected_seconds"] for v in per_layer.values())
    report = {
        "model": "MobileNetV2 (ImageNet weights)",
        "layers": len(layers),
        "filters": sum(v["filters"] for v in per_layer.values()),
        "levels": args.levels,
        "measured_images": len(images),
        "approx_measured_images": len(approx_images),
        "measured_filters_per_layer": args.filters,
        "project_images": args.project_images,
        "exact_projected_seconds": round(exact_total, 1),
        "exact_projected_hours": round(exact_total / 3600, 2),
        "approx_projected_seconds": round(approx_projected, 1),
        "exact_over_approx": round(exact_total / approx_projected, 1),
        "slowest_layers": sorted(per_layer, key=lambda n: -per_layer[n]["projected_seconds"])[:5],
        "per_layer": per_layer,
        "note": "exact: measured swaps per second of each layer (second call, traced "
                "before) times its filters, levels and project_images; approx: the "
                "second call over every layer, scaled to project_images",
        "host": host(),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

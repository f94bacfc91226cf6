"""Throughput of the ImageNet-C corruptions in `tf.data` against the `imagecorruptions` package.

For each of the 19 corruptions at one severity, on real 224x224 photos from
`../shared/data/imagenet-samples`, measures images per second of

- ours: `distort.pipeline.evaluation_datasets` with `imagenet_c.<name>`
  (batched TF ops in `tf.data`, steady state: the iterator is made and warmed
  up before timing, so that XLA compilation is not counted), and
- reference: `imagecorruptions.corrupt(image, severity, name)`, one image at a
  time (the maintained fork `imagecorruptions-imaug`, whose glass blur's swap
  loop is compiled with numba),

in the same run, one after the other (mean over `--repeats` passes; wall clock,
and CPU time of all threads), and prints one JSON object. Glass blur is also
timed against the reference's original pure-Python swap loop (the numba
function's `py_func`, on `--python-glass` images), which is what the 2020
release and `make_imagenet_c.py` run. Targets: 3x for every corruption, 30x
for glass blur.

    python benchmarks/bench_imagenet_c.py [--images 64] [--repeats 3] [--severity 3] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tensorflow as tf  # noqa: E402

from distort import data, pipeline  # noqa: E402
from distort.imagenet_c import constants  # noqa: E402


def rate(fn, repeats: int) -> tuple[float, float]:
    """Mean wall-clock and CPU seconds (all threads) of one call, over `repeats` calls in a row."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def python_glass_blur(image: np.ndarray, severity: int, icc) -> np.ndarray:
    """The reference's glass blur with its swap loop in pure Python (the original code)."""
    from skimage.filters import gaussian

    sigma, delta, passes = constants.SEVERITIES["glass_blur"][severity - 1]
    x = np.uint8(gaussian(image / 255.0, sigma=sigma, channel_axis=-1) * 255)
    loop = icc._shuffle_pixels_njit_glass_blur.py_func
    x = loop(x.shape[0], x.shape[1], x, (sigma, delta, passes), 0)
    return np.clip(gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--python-glass", type=int, default=2,
                        help="images for the pure-Python glass blur reference (0 to skip)")
    parser.add_argument("--only", nargs="*", default=None, help="corruption names to measure")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "imagenet-samples"))
    args = parser.parse_args()
    try:
        import imagecorruptions
        from imagecorruptions import corruptions as icc
    except ImportError:
        sys.exit("bench_imagenet_c.py needs the reference: pip install imagecorruptions-imaug")

    load_at_start = os.getloadavg()
    folder = data.load_image_folder(args.data, size=224, limit=args.images)
    x, y = folder.images, folder.labels
    results = {}
    for name in constants.ALL:
        if args.only and name not in args.only:
            continue
        ds = pipeline.evaluation_datasets(x, y, f"imagenet_c.{name}", [args.severity],
                                          batch_size=args.batch_size, include_clean=False)
        batches = iter(ds[float(args.severity)].repeat())
        per_pass = -(-len(x) // args.batch_size)

        def ours():
            return np.concatenate([next(batches)[0].numpy() for _ in range(per_pass)])

        def reference():
            return np.stack([imagecorruptions.corrupt(im, args.severity, name) for im in x])

        ours()  # warm-up: traces and XLA compilations
        t_ours, cpu_ours = rate(ours, args.repeats)
        del batches
        reference()  # warm-up: numba compiles the glass blur loop
        t_ref, cpu_ref = rate(reference, args.repeats)
        results[name] = {
            "severity": args.severity,
            "ours_img_per_s": round(len(x) / t_ours, 1),
            "reference_img_per_s": round(len(x) / t_ref, 1),
            "speedup": round(t_ref / t_ours, 2),
            "ours_cpu_ms_per_img": round(1000 * cpu_ours / len(x), 2),
            "reference_cpu_ms_per_img": round(1000 * cpu_ref / len(x), 2),
            "target": 3.0,
        }
        if name == "glass_blur" and args.python_glass > 0:
            few = x[: args.python_glass]
            t_py, _ = rate(lambda: [python_glass_blur(im, args.severity, icc) for im in few], 1)
            per_image = t_py / len(few)
            results[name].update({
                "python_reference_img_per_s": round(1 / per_image, 3),
                "speedup_vs_python_reference": round(per_image / (t_ours / len(x)), 1),
                "target_vs_python_reference": 30.0,
                "meets_target_vs_python_reference": per_image / (t_ours / len(x)) >= 30.0,
            })
        results[name]["meets_target"] = results[name]["speedup"] >= results[name]["target"]
        print(f"{name}: {results[name]['speedup']}x", file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "ImageNet-C corruptions, tf.data path vs imagecorruptions one image at a time",
        "reference": "imagecorruptions-imaug (imagecorruptions fork)",
        "images": len(x), "size": 224, "batch_size": args.batch_size, "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_min": {"start": [round(v, 2) for v in load_at_start],
                                    "end": [round(v, 2) for v in os.getloadavg()]},
        "tensorflow": tf.__version__, "python": platform.python_version(),
        "met": sum(r["meets_target"] for r in results.values()), "of": len(results),
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()

"""Throughput of the `tf.data` distortion path against per-image NumPy/SciPy/Pillow code.

For each distortion at a mid level, on a batch of real 224x224 photos from
`../shared/data/imagenet-samples`, measures images per second of

- ours: `distort.pipeline.evaluation_datasets` (batched TF ops in `tf.data`), and
- reference: a per-image loop in NumPy/SciPy/Pillow doing the same operation,
  the way `imagecorruptions` works,

in the same run, and prints one JSON object. Target on a 2-core CPU: at least 3x
for the kernel blurs, at least 1x for the rest.

    python benchmarks/bench_distort.py [--images 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tensorflow as tf  # noqa: E402

import distort  # noqa: E402
from distort import data, kernels, pipeline  # noqa: E402

KERNEL_BLURS = {"gaussian_blur", "defocus_blur", "motion_blur", "random_walk_blur", "camera_shake"}


def ref_convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32)
    out = np.stack([ndimage.convolve(x[..., c], kernel, mode="reflect") for c in range(3)], -1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def ref_gaussian(image, sigma):
    radius = kernels.gaussian_window(sigma) // 2
    x = image.astype(np.float32)
    out = np.stack([ndimage.gaussian_filter(x[..., c], sigma, truncate=(radius + 0.25) / sigma)
                    for c in range(3)], -1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def ref_awgn(image, sigma, rng):
    return np.clip(np.round(image + rng.normal(0, sigma, image.shape)), 0, 255).astype(np.uint8)


def ref_contrast(image, alpha):
    gray = (image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).mean()
    return np.clip(np.round((1 - alpha) * image + alpha * gray), 0, 255).astype(np.uint8)


def ref_jpeg(image, quality):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def ref_jpeg2000(image, psnr):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG2000", quality_mode="dB", quality_layers=[psnr],
                                irreversible=True)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def cases(rng):
    """name -> (level, per-image reference function)."""
    return {
        "gaussian_blur": (5.0, lambda im: ref_gaussian(im, 5.0)),
        "defocus_blur": (4.0, lambda im: ref_convolve(im, kernels.disk(4.0))),
        "motion_blur": (8.0, lambda im: ref_convolve(im, kernels.box(8))),
        "random_walk_blur": (4.0, lambda im: ref_convolve(im, kernels.random_walk(4, int(rng.integers(1e9))))),
        "camera_shake": (1, lambda im: ref_convolve(im, kernels.camera_shake(int(rng.integers(1e9))))),
        "awgn": (50.0, lambda im: ref_awgn(im, 50.0, rng)),
        "contrast": (0.5, lambda im: ref_contrast(im, 0.5)),
        "jpeg": (10, lambda im: ref_jpeg(im, 10)),
        "jpeg2000": (30.0, lambda im: ref_jpeg2000(im, 30.0)),
    }


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "imagenet-samples"))
    args = parser.parse_args()
    folder = data.load_image_folder(args.data, size=224, limit=args.images)
    x, y = folder.images, folder.labels
    rng = np.random.default_rng(0)
    results = {}
    for name, (level, reference) in cases(rng).items():
        ds = pipeline.evaluation_datasets(x, y, name, [level], batch_size=args.batch_size,
                                          include_clean=False)[float(level)]

        def ours():
            for _ in ds:
                pass

        def ref():
            for im in x:
                reference(im)

        ours()  # trace once
        t_ours, t_ref = best_of(ours, args.repeats), best_of(ref, args.repeats)
        results[name] = {
            "level": level,
            "ours_img_per_s": round(len(x) / t_ours, 1),
            "reference_img_per_s": round(len(x) / t_ref, 1),
            "speedup": round(t_ref / t_ours, 2),
            "target": 3.0 if name in KERNEL_BLURS else 1.0,
        }
        results[name]["meets_target"] = results[name]["speedup"] >= results[name]["target"]
    print(json.dumps({
        "benchmark": "distort tf.data path vs per-image NumPy/SciPy/Pillow",
        "images": len(x), "size": 224, "batch_size": args.batch_size, "repeats": args.repeats,
        "cpu_count": os.cpu_count(), "tensorflow": tf.__version__, "python": platform.python_version(),
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()

"""How blur and noise change a network's filter outputs, layer by layer (Dodge & Karam Fig. 4).

Dodge & Karam show VGG16's first and last conv layer outputs for one photo,
clean, blurred and noisy: blur barely changes the first layer but changes the
last one a lot; noise lights up many first-layer filters and also changes the
last layer. This script draws the same figure for any Keras classifier and
backs it with a number computed on many photos: for every conv layer, the
relative change of its output, `||a_distorted - a_clean|| / ||a_clean||`,
averaged over the photos.

Outputs in `--out`: `feature_maps.png` (the one-photo figure plus the
relative change against depth), `feature_change.json` and `feature_change.md`.

Usage:

    .venv/bin/python examples/feature_maps.py --model MobileNetV2 \\
        --weights ../shared/models/mobilenet_v2_1.0_224.weights.h5 \\
        --data ../shared/data/imagenet-samples --images 200 --out out/feature_maps
    .venv/bin/python examples/feature_maps.py ... --quick   # 8 photos
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import distort  # noqa: E402
from deepcorrect.graph import conv_layers  # noqa: E402
from robustkit.cli_common import CLIError, fail_cleanly, load_model_spec, refuse_existing  # noqa: E402
from robustkit.data import load_image_folder, read_image  # noqa: E402
from robustkit.io import atomic_path, atomic_write_text  # noqa: E402
from robustkit.seeds import seed_argument  # noqa: E402

DEFAULT_PHOTO = "n02123394_Persian_cat.jpg"  # the photo of Dodge & Karam's Fig. 1 and 4
SHOWN_CHANNELS = 8


def feature_extractor(model: keras.Model) -> tuple[keras.Model, list[str]]:
    """A model returning the output of every conv layer of `model`, in order.

    Args:
        model: a flat functional or Sequential Keras model.

    Returns:
        `(extractor, layer_names)`.

    Raises:
        ValueError: if `model` has no conv layer or nests its conv layers in
            sub-models.
    """
    layers = conv_layers(model)
    names = [layer.name for layer in layers]
    if not names:
        raise ValueError(f"model {model.name!r} has no conv layer")
    try:
        outputs = [model.get_layer(name).output for name in names]
    except ValueError:
        raise ValueError("model nests its conv layers in sub-models; pass a flat model") from None
    return keras.Model(model.inputs[0], outputs, name=f"{model.name}_features"), names


def relative_change(clean: np.ndarray, distorted: np.ndarray) -> np.ndarray:
    """`||distorted - clean|| / ||clean||` per image (first axis)."""
    axes = tuple(range(1, clean.ndim))
    diff = np.sqrt(np.sum((distorted - clean) ** 2, axis=axes))
    norm = np.sqrt(np.sum(clean ** 2, axis=axes))
    return diff / np.maximum(norm, 1e-12)


def layer_changes(extractor: keras.Model, preprocess: Callable | None, images: np.ndarray,
                  distortions: dict[str, tuple[str, float]], batch_size: int = 16,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Mean relative change of every conv layer's output, per distortion.

    Args:
        extractor: from `feature_extractor`.
        preprocess: maps float images on 0..255 to the model input, or None.
        images: uint8 photos `[N, H, W, 3]`.
        distortions: label -> `(distortion name, level)`.
        batch_size: photos per forward pass.
        seed: seed of the random distortions.

    Returns:
        label -> array `[layers]` of the mean relative change over the photos.
    """
    prep = preprocess or (lambda x: x)
    sums = {label: 0.0 for label in distortions}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        clean = [np.asarray(a) for a in extractor(prep(batch.astype("float32")))]
        for label, (name, level) in distortions.items():
            bad = np.asarray(distort.apply(batch, name, level, seed=seed + start)).astype("float32")
            dist = [np.asarray(a) for a in extractor(prep(bad))]
            sums[label] = sums[label] + np.array(
                [relative_change(c, d).sum() for c, d in zip(clean, dist)])
    return {label: total / len(images) for label, total in sums.items()}


def _montage(maps: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Side-by-side tiles of the chosen channels of one `[H, W, C]` map."""
    tiles = [maps[..., c] for c in channels]
    pad = np.full((maps.shape[0], 1), np.nan)
    return np.concatenate([t for tile in tiles for t in (tile, pad)][:-1], axis=1)


def plot(path: Path, photo_maps: dict[str, list[np.ndarray]], layer_names: list[str],
         changes: dict[str, np.ndarray], n_images: int, model_name: str) -> None:
    """Writes the figure: filter outputs of one photo, and change against depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(photo_maps)
    fig = plt.figure(figsize=(13, 1.1 * len(rows) + 3.0))
    grid = fig.add_gridspec(len(rows) + 1, 2, height_ratios=[1] * len(rows) + [1.4])
    for col, index in enumerate((0, -1)):
        clean = photo_maps[rows[0]][index][0]
        channels = np.argsort(-np.abs(clean).mean(axis=(0, 1)))[:SHOWN_CHANNELS]
        scale = np.percentile(np.abs(clean[..., channels]), 99) or 1.0
        for row, label in enumerate(rows):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(_montage(photo_maps[label][index][0], channels), cmap="gray",
                      vmin=-scale, vmax=scale)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{layer_names[index]} ({SHOWN_CHANNELS} strongest filters)")
            if col == 0:
                ax.set_ylabel(label)
    ax = fig.add_subplot(grid[len(rows), :])
    for label, values in changes.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=label)
    ax.set_xlabel("conv layer, input to output (outputs before batch norm)")
    ax.set_ylabel("relative change")
    ax.set_title(f"{model_name}: mean ||a_dist - a_clean|| / ||a_clean|| over {n_images} photos")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def report(changes: dict[str, np.ndarray], layer_names: list[str], n_images: int,
           model_name: str) -> dict[str, Any]:
    """The JSON summary: per-layer changes, and first/last/max per distortion."""
    return {
        "model": model_name,
        "images": n_images,
        "layers": layer_names,
        "relative_change": {label: [float(v) for v in values] for label, values in changes.items()},
        "first_layer": {label: float(values[0]) for label, values in changes.items()},
        "last_layer": {label: float(values[-1]) for label, values in changes.items()},
    }


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"{summary['model']}, {summary['images']} photos: mean relative change "
             "of the conv outputs.", "",
             "| distortion | first conv layer | last conv layer |", "|---|---|---|"]
    for label in summary["first_layer"]:
        lines.append(f"| {label} | {summary['first_layer'][label]:.3f} | "
                     f"{summary['last_layer'][label]:.3f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="MobileNetV2",
                        help="a .keras file or a keras.applications name (default MobileNetV2)")
    parser.add_argument("--weights", help="weights file of a keras.applications model")
    parser.add_argument("--data", required=True, help="an image folder (labels.csv or class folders)")
    parser.add_argument("--photo", default=DEFAULT_PHOTO,
                        help=f"file in --data drawn in the figure (default {DEFAULT_PHOTO}, "
                             "else the first photo)")
    parser.add_argument("--blur", type=float, default=4.0, help="Gaussian blur sigma (default 4)")
    parser.add_argument("--noise", type=float, default=50.0, help="AWGN sigma on 0..255 (default 50)")
    parser.add_argument("--images", type=int, default=200, help="photos averaged (default 200)")
    parser.add_argument("--quick", action="store_true", help="8 photos")
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be at least 1. Received: {args.images}")
    for flag in ("blur", "noise"):
        if not np.isfinite(getattr(args, flag)) or getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be a positive number. Received: {getattr(args, flag)}")
    return args


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    refuse_existing(out / "feature_change.json", args.overwrite)
    name, (model, preprocess), size = load_model_spec(args.model, args.weights)
    extractor, layer_names = feature_extractor(model)
    folder = load_image_folder(args.data, size=size, limit=8 if args.quick else args.images)
    photo_path = Path(args.data) / args.photo
    if not photo_path.is_file():
        if args.photo != DEFAULT_PHOTO:
            raise CLIError(f"--photo not found in --data: {photo_path}")
        photo_path = Path(folder.files[0])
    photo = read_image(photo_path, size)[None]
    distortions = {f"gaussian_blur {args.blur:g}": ("gaussian_blur", args.blur),
                   f"awgn {args.noise:g}": ("awgn", args.noise)}
    changes = layer_changes(extractor, preprocess, folder.images, distortions, seed=args.seed)
    prep = preprocess or (lambda x: x)
    photo_maps = {"clean": [np.asarray(a) for a in extractor(prep(photo.astype("float32")))]}
    for label, (dist_name, level) in distortions.items():
        bad = np.asarray(distort.apply(photo, dist_name, level, seed=args.seed)).astype("float32")
        photo_maps[label] = [np.asarray(a) for a in extractor(prep(bad))]
    n = len(folder.images)
    out.mkdir(parents=True, exist_ok=True)
    plot(out / "feature_maps.png", photo_maps, layer_names, changes, n, name)
    summary = report(changes, layer_names, n, name)
    summary["photo"] = photo_path.name
    atomic_write_text(out / "feature_change.md", markdown(summary))
    atomic_write_text(out / "feature_change.json", json.dumps(summary, indent=2))
    print(markdown(summary))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

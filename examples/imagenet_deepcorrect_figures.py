"""Analysis figures of the DeepCorrect models trained by `imagenet_deepcorrect.py`.

Reads that script's `--out` folder (photos, split, rankings, models, cached
test-set predictions and penultimate features) and draws:

* `imagenet_deepcorrect_filters.png`: the first conv layer's filters, in index
  order and sorted by correction priority for blur and for noise (DeepCorrect
  Fig. 6); the top half, which Deepcorr corrects, is framed.
* `imagenet_deepcorrect_tsne.png`: t-SNE of the penultimate features of the
  test photos, clean and at two levels of each distortion, baseline vs Deepcorr
  (DeepCorrect Figs. 2 and 10). There is one photo per ImageNet class, so the
  colours are ten coarse groups of classes (`COARSE_GROUPS`, ImageNet index
  ranges) rather than single classes; each panel gives the silhouette of those
  groups in the feature space (cosine).
* `imagenet_deepcorrect_group_diff.png`: top-1 of Deepcorr minus Finetune per
  coarse group and level (DeepCorrect Fig. 11 has one square per class).
* `imagenet_deepcorrect_hamming.png`: Hamming distance between the binarised
  activations (> 0) of sharp and blurred test photos at each stage (the last
  ReLU at each resolution), averaged over photos and channels, for the
  original, the Finetune and the Deepcorr model (Vasiljevic Fig. 4); only when
  the blur models were trained.

It also writes `figures_summary.json` (silhouettes, per-class win counts,
mean Hamming distances) into `--out`.

Usage (after `imagenet_deepcorrect.py`, from the repository root):

    .venv/bin/python examples/imagenet_deepcorrect_figures.py \\
        --out out/imagenet_deepcorrect --figures docs/figures
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from robustkit.cli_common import CLIError, fail_cleanly
from robustkit.io import atomic_write_text
from robustkit.seeds import seed_argument
from studies import imagenet
from studies.analysis import pyplot, save_figure

REPO_ROOT = Path(__file__).resolve().parents[1]

# Vehicles are spread over the alphabetical artifact classes (398-923).
VEHICLES = (403, 404, 407, 408, 436, 444, 466, 468, 472, 484, 510, 511, 554, 555, 561, 565,
            569, 573, 575, 576, 586, 595, 603, 609, 612, 625, 627, 628, 654, 656, 661, 665,
            670, 671, 675, 705, 717, 724, 734, 751, 757, 779, 780, 803, 814, 817, 829, 833,
            847, 864, 867, 871, 874, 880, 895, 908, 913, 914)

# Ten coarse groups of the 1,000 ImageNet classes, by index (inclusive ranges),
# checked first to last: vehicles come before "other objects".
COARSE_GROUPS: tuple[tuple[str, tuple], ...] = (
    ("fish", ((0, 6), (389, 397))),
    ("birds", ((7, 24), (80, 100), (127, 146))),
    ("reptiles, amphibians", ((25, 68),)),
    ("invertebrates", ((69, 79), (107, 126), (300, 329))),
    ("dogs", ((151, 268),)),
    ("other mammals", ((101, 106), (147, 150), (269, 299), (330, 388))),
    ("vehicles", tuple((i, i) for i in VEHICLES)),
    ("other objects", ((398, 923),)),
    ("food", ((924, 969),)),
    ("scenes, people, plants", ((970, 999),)),
)


def coarse_group(label: int) -> int:
    """Index in `COARSE_GROUPS` of an ImageNet class index (0..999).

    Example:

    >>> [COARSE_GROUPS[coarse_group(i)][0] for i in (0, 207, 817, 999)]
    ['fish', 'dogs', 'vehicles', 'scenes, people, plants']
    """
    for g, (_, ranges) in enumerate(COARSE_GROUPS):
        if any(lo <= label <= hi for lo, hi in ranges):
            return g
    raise ValueError(f"label must be an ImageNet class index in [0, 999]. Received: {label}")


# --------------------------------------------------------------------------
# Fig. 6: filters sorted by correction priority
# --------------------------------------------------------------------------


def filter_images(kernel: np.ndarray) -> np.ndarray:
    """`[kh, kw, cin, cout]` kernel -> `[cout, kh, kw, 3]` images, each scaled to 0..1."""
    k = np.moveaxis(np.asarray(kernel, np.float64), -1, 0)
    if k.shape[-1] != 3:
        k = np.repeat(k.mean(-1, keepdims=True), 3, axis=-1)
    lo = k.min(axis=(1, 2, 3), keepdims=True)
    hi = k.max(axis=(1, 2, 3), keepdims=True)
    return (k - lo) / np.maximum(hi - lo, 1e-12)


def filters_figure(pretrained, layer: str, rankings: dict, beta: float, path: Path) -> None:
    plt = pyplot()
    images = filter_images(pretrained.get_layer(layer).kernel.numpy())
    n = len(images)
    cols = 8 if n >= 8 else n
    rows = -(-n // cols)
    panels = [("index order", np.arange(n), None)]
    for distortion, ranking in rankings.items():
        panels.append((f"sorted by {distortion} priority", ranking.order(layer),
                       set(ranking.top(layer, beta).tolist())))
    fig, axes = plt.subplots(rows, cols * len(panels) + len(panels) - 1,
                             figsize=(1.0 + 0.45 * (cols + 1) * len(panels), 0.55 * rows + 0.8),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for p, (title, order, top) in enumerate(panels):
        first = p * (cols + 1)
        axes[0, first + cols // 2].set_title(title, fontsize=8)
        for i, f in enumerate(order):
            ax = axes[i // cols, first + i % cols]
            ax.imshow(images[f], interpolation="nearest")
            if top is not None and f in top:
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_color("red")
                    spine.set_linewidth(1.5)
    fig.suptitle(f"{layer} filters ({n}); framed: the top {int(beta * 100)}% that Deepcorr "
                 "corrects", fontsize=9)
    save_figure(fig, path)


# --------------------------------------------------------------------------
# Figs. 2 and 10: t-SNE of penultimate features
# --------------------------------------------------------------------------


def _features(out: Path, condition: str, model: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(out / "eval" / f"{condition}.npz") as f:
        return f[f"{model}_features"].astype(np.float32), f["labels"]


def tsne_figure(out: Path, cfg: dict, seed: int, path: Path) -> dict[str, float]:
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    plt = pyplot()
    rows = []
    for d in cfg["distortions"]:
        conds = ["clean"] + [imagenet.condition_name(d, v) for v in cfg["eval_levels"][d][:2]]
        for kind in ("baseline", f"deepcorr_{imagenet.SHORT[d]}"):
            rows.append((d, kind, conds))
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.1 * len(rows)), squeeze=False)
    scores = {}
    for r, (d, kind, conds) in enumerate(rows):
        for c, cond in enumerate(conds):
            x, labels = _features(out, cond, kind)
            groups = np.array([coarse_group(int(y)) for y in labels])
            perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
            # The exact method: a few hundred points need no Barnes-Hut approximation.
            xy = TSNE(2, perplexity=perplexity, init="pca", method="exact",
                      random_state=seed).fit_transform(x)
            sil = (float(silhouette_score(x, groups, metric="cosine"))
                   if 1 < len(set(groups)) < len(x) else float("nan"))
            scores[f"{kind}/{cond}"] = sil
            ax = axes[r, c]
            for g in sorted(set(groups)):
                m = groups == g
                ax.scatter(xy[m, 0], xy[m, 1], s=7, color=plt.cm.tab10(g),
                           label=COARSE_GROUPS[g][0])
            ax.set_xticks([])
            ax.set_yticks([])
            name = "Baseline" if kind == "baseline" else "Deepcorr"
            ax.set_title(f"{name}, {cond}: silhouette {sil:.3f}", fontsize=8)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=5, fontsize=8, markerscale=2)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(fig, path)
    return scores


# --------------------------------------------------------------------------
# Fig. 11: Deepcorr minus Finetune per group
# --------------------------------------------------------------------------


def _correct(out: Path, condition: str, model: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(out / "eval" / f"{condition}.npz") as f:
        return f[f"{model}_top5"][:, 0] == f["labels"], f["labels"]


def group_diff_figure(out: Path, cfg: dict, path: Path) -> dict[str, Any]:
    plt = pyplot()
    distortions = cfg["distortions"]
    fig, axes = plt.subplots(1, len(distortions), figsize=(5 * len(distortions), 4.2),
                             squeeze=False)
    summary: dict[str, Any] = {}
    for ax, d in zip(axes[0], distortions):
        s = imagenet.SHORT[d]
        conds = ["clean"] + [imagenet.condition_name(d, v) for v in cfg["eval_levels"][d]]
        dc = np.stack([_correct(out, c, f"deepcorr_{s}")[0] for c in conds], 1).astype(float)
        ft = np.stack([_correct(out, c, f"finetune_{s}")[0] for c in conds], 1).astype(float)
        labels = _correct(out, "clean", "baseline")[1]
        groups = np.array([coarse_group(int(y)) for y in labels])
        present = sorted(set(groups))
        diff = np.array([(dc[groups == g] - ft[groups == g]).mean(0) for g in present])
        limit = max(0.05, float(np.abs(diff).max()))
        im = ax.imshow(diff, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for (i, j), v in np.ndenumerate(diff):
            ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(conds)), [c.replace(f"{s}_", "") for c in conds], fontsize=8)
        ax.set_yticks(range(len(present)),
                      [f"{COARSE_GROUPS[g][0]} ({int((groups == g).sum())})" for g in present],
                      fontsize=8)
        ax.set_xlabel(f"{d} sigma")
        ax.set_title(f"{d}: top-1 Deepcorr - Finetune", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
        # Per class (one test photo each), over the distorted levels, as Fig. 11 counts.
        per_class = dc[:, 1:].mean(1) - ft[:, 1:].mean(1)
        summary[d] = {"deepcorr_better": int((per_class > 0).sum()),
                      "finetune_better": int((per_class < 0).sum()),
                      "equal": int((per_class == 0).sum()), "classes": int(len(per_class))}
    fig.tight_layout()
    save_figure(fig, path)
    return summary


# --------------------------------------------------------------------------
# Vasiljevic Fig. 4: Hamming distance maps
# --------------------------------------------------------------------------


def stage_layers(model) -> list[str]:
    """The last ReLU/activation output at each spatial resolution of `model`, in order."""
    import keras

    from deepcorrect.graph import leaf_layers

    last: dict[tuple, str] = {}
    for layer in leaf_layers(model):
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)) \
                and len(layer.output.shape) == 4:
            last[tuple(layer.output.shape[1:3])] = layer.name
    return list(last.values())


def hamming_maps(model, stages: list[str], sharp, blurred, preprocess) -> list[np.ndarray]:
    """Per stage, the `[H, W]` mean over photos and channels of `(sharp > 0) != (blurred > 0)`."""
    import keras

    probe = keras.Model(model.input, [model.get_layer(n).output for n in stages])
    prep = preprocess or (lambda x: x)
    a = probe(prep(sharp), training=False)
    b = probe(prep(blurred), training=False)
    return [np.mean((np.asarray(x) > 0) != (np.asarray(y) > 0), axis=(0, 3))
            for x, y in zip(a, b)]


def hamming_figure(models: dict, preprocess, photos, level: float, seed: int,
                   path: Path) -> dict[str, list[float]]:
    plt = pyplot()
    stages = stage_layers(models["original"])
    blurred = imagenet.distorted(photos, "gaussian_blur", level, seed, len(photos))
    sharp = photos.astype(np.float32)
    maps = {name: hamming_maps(m, stages, sharp, blurred, preprocess) for name, m in models.items()}
    fig, axes = plt.subplots(len(models), len(stages),
                             figsize=(2.2 * len(stages), 2.3 * len(models)), squeeze=False)
    for j, stage in enumerate(stages):
        vmax = max(float(maps[n][j].max()) for n in models)
        for i, name in enumerate(models):
            ax = axes[i, j]
            ax.imshow(maps[name][j], cmap="magma", vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{stage}\nmean {maps[name][j].mean():.3f}", fontsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(f"Hamming distance of binarised activations, sharp vs Gaussian blur sigma "
                 f"{level:g} ({len(photos)} test photos)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return {name: [round(float(m.mean()), 4) for m in ms] for name, ms in maps.items()} | {
        "stages": stages}


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "out" / "imagenet_deepcorrect"),
                        help="the output folder of imagenet_deepcorrect.py")
    parser.add_argument("--figures", help="folder for the PNG files (default: --out)")
    parser.add_argument("--model", default="MobileNetV2",
                        help="the model imagenet_deepcorrect.py ran on")
    parser.add_argument("--weights", default=imagenet.DEFAULT_WEIGHTS)
    parser.add_argument("--hamming-level", type=float, default=3.0,
                        help="Gaussian blur sigma of the Hamming maps")
    parser.add_argument("--hamming-photos", type=int, default=32,
                        help="test photos averaged in the Hamming maps")
    parser.add_argument("--seed", type=seed_argument, default=0, help="t-SNE and distortion seed")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    import keras

    import deepcorrect

    out = Path(args.out)
    needed = ["results.json", "split.json", "photos.npz"]
    missing = [n for n in needed if not (out / n).is_file()]
    if missing:
        raise CLIError(f"--out {out} lacks {', '.join(missing)}: run "
                       "examples/imagenet_deepcorrect.py with the same --out first")
    if args.hamming_photos < 1:
        raise CLIError(f"--hamming-photos must be >= 1. Received: {args.hamming_photos}")
    figures = Path(args.figures) if args.figures else out
    results = json.loads((out / "results.json").read_text())
    cfg, layers = results["config"], results["layers"]
    distortions = cfg["distortions"]
    weights = None if Path(args.model).suffix == ".keras" else args.weights
    pretrained, preprocess, _ = imagenet.load_model(args.model, weights)

    rankings = {d: deepcorrect.Ranking.load(out / f"ranking_{imagenet.SHORT[d]}_exact.json",
                                            pretrained) for d in distortions}
    filters_figure(pretrained, layers[0], rankings, cfg["beta"],
                   figures / "imagenet_deepcorrect_filters.png")
    silhouettes = tsne_figure(out, cfg, args.seed, figures / "imagenet_deepcorrect_tsne.png")
    wins = group_diff_figure(out, cfg, figures / "imagenet_deepcorrect_group_diff.png")

    summary = {"silhouette": silhouettes, "per_class_wins": wins,
               "groups": [g for g, _ in COARSE_GROUPS]}
    if "gaussian_blur" in distortions:  # Vasiljevic's maps compare sharp and blurred inputs
        split = json.loads((out / "split.json").read_text())
        with np.load(out / "photos.npz") as f:
            photos = f["images"][np.array(split["test"][: args.hamming_photos])]
        models = {"original": pretrained,
                  "Finetune": keras.models.load_model(out / "finetune_blur.keras"),
                  "Deepcorr": keras.models.load_model(out / "deepcorr_blur.keras")}
        summary["hamming"] = hamming_figure(models, preprocess, photos, args.hamming_level,
                                            args.seed + 2,
                                            figures / "imagenet_deepcorrect_hamming.png")
        summary.update(hamming_level=args.hamming_level, hamming_photos=int(len(photos)))
    atomic_write_text(out / "figures_summary.json", json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

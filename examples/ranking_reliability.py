"""How reliable is a filter ranking? Split-half reliability, blur vs noise, approx vs exact.

For a CIFAR-10 classifier, ranks every conv filter with the exact method at several image
counts, with the paper's top-1 gain and with the continuous `log_prob` score, under blur and
under noise (the `deepcorrect_cifar` levels), and writes one table (Markdown and JSON):

- split-half reliability (Spearman-Brown) per layer, score and image count: does the ranking
  mean anything?
- blur vs noise: the Spearman correlation between the two distortions' rankings of a layer,
  beside the reliability that bounds it (two rankings cannot agree more than each agrees with
  itself);
- approx vs exact: the Spearman correlation of the first-order estimate with each exact score.

Usage (from the repository root):

    .venv/bin/python examples/ranking_reliability.py --model out/cifar10_converged/baseline.keras
    .venv/bin/python examples/ranking_reliability.py --model ... --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DISTORTIONS = ("gaussian_blur", "awgn")
SCORES = ("gain", "log_prob")


def parse_args(argv=None):
    from robustkit.seeds import seed_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a trained CIFAR-10 .keras taking 0..255 pixels")
    p.add_argument("--data", default="../shared/data/cifar10/cifar10.npz")
    p.add_argument("--images", type=int, nargs="+", default=[50, 200, 1000],
                   help="ranking image counts (the first N training images)")
    p.add_argument("--out", default="out/ranking_reliability")
    p.add_argument("--quick", action="store_true", help="32 and 64 images, one layer")
    p.add_argument("--seed", type=seed_argument, default=0)
    return p.parse_args(argv)


def spearman(a, b) -> float:
    """Spearman's rho of two priority vectors (NaN when one is constant)."""
    import numpy as np
    from scipy import stats

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def study(model, images, labels, counts, layers, seed: int) -> list[dict]:
    """One row per (images, layer, distortion, score), plus blur-vs-noise and approx columns."""
    import deepcorrect
    from distort import presets

    rows = []
    for n in counts:
        x, y = images[:n], labels[:n]
        exact, approx = {}, {}
        for d in DISTORTIONS:
            levels = presets.levels("deepcorrect_cifar", d)
            for score in SCORES:
                exact[d, score] = deepcorrect.rank(model, x, y, d, levels, layers=layers,
                                                   score=score, seed=seed, progress=False)
            approx[d] = deepcorrect.rank(model, x, y, d, levels, layers=layers,
                                         method="approx", seed=seed, progress=False)
        for layer in exact[DISTORTIONS[0], SCORES[0]].layer_names:
            for d in DISTORTIONS:
                other = DISTORTIONS[1] if d == DISTORTIONS[0] else DISTORTIONS[0]
                for score in SCORES:
                    r = exact[d, score]
                    rel = r.reliability(layer)
                    rows.append({
                        "images": n, "layer": layer, "distortion": d, "score": score,
                        "distinct": int(len(set(r.priorities[layer].tolist()))),
                        "split_half": rel.split_half, "spearman_brown": rel.spearman_brown,
                        "blur_vs_noise": spearman(r.priorities[layer],
                                                  exact[other, score].priorities[layer]),
                        "approx_vs_exact": spearman(approx[d].priorities[layer],
                                                    r.priorities[layer]),
                    })
    return rows


def markdown(rows) -> str:
    lines = ["| images | layer | distortion | score | distinct values | split-half r | "
             "Spearman-Brown | blur vs noise | approx vs exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['images']} | {r['layer']} | {r['distortion']} | {r['score']} | "
                     f"{r['distinct']} | {r['split_half']:.2f} | {r['spearman_brown']:.2f} | "
                     f"{r['blur_vs_noise']:.2f} | {r['approx_vs_exact']:.2f} |")
    return "\n".join(lines) + "\n"


def run(args) -> None:
    import keras

    from robustkit.data import load_cifar10
    from robustkit.io import atomic_write_text, make_dirs

    if any(n < 2 for n in args.images):
        raise ValueError(f"--images must be at least 2 each. Received: {args.images}")
    (x, y), _ = load_cifar10(args.data)
    model = keras.models.load_model(args.model, safe_mode=True)
    counts = [32, 64] if args.quick else args.images
    layers = None
    if args.quick:
        import deepcorrect.graph

        layers = [deepcorrect.graph.conv_layers(model)[0].name]
    rows = study(model, x, y, counts, layers, args.seed)
    out = make_dirs(args.out)
    atomic_write_text(Path(out) / "reliability.json", json.dumps(rows, indent=1))
    table = markdown(rows)
    atomic_write_text(Path(out) / "reliability.md", table)
    print(table)


def main(argv=None) -> int:
    from robustkit.cli_common import fail_cleanly

    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

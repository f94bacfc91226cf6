"""The paper's AlexNet (DeepCorrect Fig. 3b) and its Deepcorr-5 models (Table 10).

Deepcorr-5 on AlexNet cannot be trained here: there are no AlexNet ImageNet
weights offline and no ImageNet training set. This script builds the exact
architectures so that their sizes can be checked and so that a user who has
the weights (for example converted from the authors' `convnets-keras` release)
can wrap and train them with the same code:

* `build_alexnet()`: Krizhevsky et al.'s AlexNet as the paper uses it: 227x227
  input; conv1 11x11/4 (96) with local response normalisation and 3x3/2 max
  pooling; conv2 5x5 (256, two groups) with LRN and pooling; conv3 3x3 (384);
  conv4 3x3 (384, two groups); conv5 3x3 (256, two groups) and pooling; then
  fc6 and fc7 (4096, dropout 0.5) and fc8 (1000, softmax). Every conv is
  linear and followed by its own ReLU layer, so that correction units go
  before the ReLU as in the paper (footnote 7).
* `deepcorr5()`: correction units on conv1-conv5 with beta = 0.75, 0.75, 0.5,
  0.5, 0.5 (72, 192, 192, 192 and 128 corrected filters), a 5x5 inner kernel in
  unit 1 and 3x3 elsewhere, for the `cw`, `lite` and `bottleneck` units.

It prints, and writes as JSON, a Table 10 style summary: trainable parameters
and multiply-adds ("FLOPs" in the paper) of every unit and the totals.

Usage:

    .venv/bin/python examples/alexnet_deepcorrect.py --out out/alexnet
    .venv/bin/python examples/alexnet_deepcorrect.py --weights alexnet.weights.h5 \\
        --ranking conv_ranking.json --out out/alexnet

It trains nothing, so it has no `--quick` mode: it takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import deepcorrect  # noqa: E402
from deepcorrect import costs  # noqa: E402
from robustkit.cli_common import CLIError, fail_cleanly, refuse_existing  # noqa: E402
from robustkit.io import atomic_write_text  # noqa: E402

# Fig. 3b: (name, filters, kernel, stride, padding, groups, LRN, pool after).
ALEXNET_CONVS = [
    ("conv1", 96, 11, 4, 0, 1, True, True),
    ("conv2", 256, 5, 1, 2, 2, True, True),
    ("conv3", 384, 3, 1, 1, 1, False, False),
    ("conv4", 384, 3, 1, 1, 2, False, False),
    ("conv5", 256, 3, 1, 1, 2, False, True),
]

# Deepcorr-5 (Section 5.2.2): the fraction of each layer's filters corrected
# and the inner kernel size of its unit.
DEEPCORR5_BETA = {"conv1": 0.75, "conv2": 0.75, "conv3": 0.5, "conv4": 0.5, "conv5": 0.5}
DEEPCORR5_KERNEL = {"conv1": 5, "conv2": 3, "conv3": 3, "conv4": 3, "conv5": 3}

# Table 10 of the paper: trainable parameters per unit, and the total as printed.
TABLE_10 = {
    "cw": {"units": [270_288, 739_200, 739_200, 739_200, 328_960], "total_millions": 2.81},
    "lite": {"units": [314_568, 345_408, 345_408, 345_408, 328_960], "total_millions": 1.67},
    "bottleneck": {"units": [40_680, 287_040, 287_040, 287_040, 127_872],
                   "total_millions": 1.03},
}


@keras.saving.register_keras_serializable(package="examples")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalisation (Krizhevsky et al. 2012).

    `b_c = a_c / (k + alpha / n * sum_{c' near c} a_{c'}^2) ** beta`, the
    sum running over `n` neighbouring channels, with AlexNet's constants.

    Args:
        size: channels in the normalisation window (n).
        alpha: scale of the sum of squares.
        beta: exponent.
        k: additive constant.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                 k: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def call(self, inputs):
        squares = keras.ops.square(inputs)
        half = self.size // 2
        padded = keras.ops.pad(squares, [[0, 0], [0, 0], [0, 0], [half, half]])
        channels = inputs.shape[-1]
        window = sum(padded[..., i:i + channels] for i in range(self.size))
        return inputs / keras.ops.power(self.k + self.alpha / self.size * window, self.beta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "alpha": self.alpha,
                "beta": self.beta, "k": self.k}


def build_alexnet(classes: int = 1000, weights: str | None = None) -> keras.Model:
    """Builds the AlexNet of DeepCorrect Fig. 3b (60,965,224 parameters).

    Args:
        classes: output classes of fc8.
        weights: optional path of a Keras weights file for this architecture.

    Returns:
        A functional `keras.Model` on 227x227x3 inputs (mean-subtracted
        images, as in the original Caffe model) with softmax outputs.

    Example:

    >>> build_alexnet().count_params()
    60965224
    """
    x = inputs = keras.Input((227, 227, 3), name="image")
    for name, filters, kernel, stride, pad, groups, lrn, pool in ALEXNET_CONVS:
        if pad:
            x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        x = keras.layers.Conv2D(filters, kernel, strides=stride, groups=groups, name=name)(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        if lrn:
            x = LocalResponseNormalization(name=f"{name}_lrn")(x)
        if pool:
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for name in ("fc6", "fc7"):
        x = keras.layers.Dense(4096, activation="relu", name=name)(x)
        x = keras.layers.Dropout(0.5, name=f"{name}_dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="fc8")(x)
    model = keras.Model(inputs, outputs, name="alexnet")
    if weights is not None:
        model.load_weights(weights)
    return model


def deepcorr5(alexnet: keras.Model, ranks: Any, unit: str = "cw",
              seed: int | None = 0) -> keras.Model:
    """Wraps AlexNet as Deepcorr-5 (or -lite / -bottleneck with `unit`).

    Args:
        alexnet: the model from `build_alexnet`.
        ranks: a `deepcorrect.Ranking` of conv1..conv5, or a dict of layer
            name to channel indices, most susceptible first.
        unit: `"cw"` (Deepcorr-5), `"lite"` or `"bottleneck"`.
        seed: the seed of the units' initial weights (`deepcorrect.wrap`);
            None for fresh randomness. Defaults to 0.

    Returns:
        The wrapped model; only its correction units are trainable.
    """
    return deepcorrect.wrap(alexnet, ranks, beta=DEEPCORR5_BETA, unit=unit,
                            layers=list(DEEPCORR5_BETA), kernel_size=DEEPCORR5_KERNEL, seed=seed)


def unit_table(model: keras.Model) -> list[dict[str, Any]]:
    """Per corrected layer: corrected filters, trainable params, multiply-adds.

    The columns of Table 10, from `deepcorrect.costs.unit_costs`.
    """
    columns = ("layer", "corrected_filters", "trainable_params", "multiply_adds")
    return [{c: row[c] for c in columns} for row in costs.unit_costs(model)]


def identity_ranks(alexnet: keras.Model) -> dict[str, np.ndarray]:
    """Channel order 0..N-1 per layer, for sizing when no ranking is given."""
    return {name: np.arange(alexnet.get_layer(name).filters) for name in DEEPCORR5_BETA}


def summarize(alexnet: keras.Model, ranks: Any) -> dict[str, Any]:
    """Table 10 for the three unit presets, next to the paper's figures."""
    summary: dict[str, Any] = {"alexnet_params": int(alexnet.count_params()), "models": {}}
    for unit in TABLE_10:
        rows = unit_table(deepcorr5(alexnet, ranks, unit))
        total = sum(r["trainable_params"] for r in rows)
        summary["models"][f"Deepcorr-5-{unit}" if unit != "cw" else "Deepcorr-5"] = {
            "unit": unit,
            "units": rows,
            "trainable_params": total,
            "paper_units": TABLE_10[unit]["units"],
            "paper_total_millions": TABLE_10[unit]["total_millions"],
        }
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """A Markdown version of the summary."""
    lines = ["| model | " + " | ".join(f"unit {i} params (MACs)" for i in range(1, 6))
             + " | total | paper |", "|---" * 8 + "|"]
    for name, model in summary["models"].items():
        cells = [f"{r['trainable_params']:,} ({r['multiply_adds']:.3g})" for r in model["units"]]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {model['trainable_params']:,} | {model['paper_total_millions']}M |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="Keras weights file for build_alexnet (optional)")
    parser.add_argument("--ranking", help="a deepcorrect ranking JSON of conv1..conv5 "
                        "(default: channel order, enough for sizes)")
    parser.add_argument("--out", required=True, help="output folder for alexnet_table10.json")
    parser.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    target = out / "alexnet_table10.json"
    refuse_existing(target, args.overwrite)
    for path, flag in ((args.weights, "--weights"), (args.ranking, "--ranking")):
        if path is not None and not Path(path).is_file():
            raise CLIError(f"{flag}: no such file: {path}")
    alexnet = build_alexnet(weights=args.weights)
    ranks = (deepcorrect.Ranking.load(args.ranking) if args.ranking
             else identity_ranks(alexnet))
    summary = summarize(alexnet, ranks)
    print(format_table(summary))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(summary, indent=2))
    print(f"wrote {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

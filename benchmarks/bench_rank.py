"""Batched correction-priority ranking against the original one-swap-per-pass loop.

Both methods rank the same layer of the same CIFAR-10 CNN on the same test
images and distortion levels, in one run:

* naive (the original DeepCorrect code's method): cache the layer's clean and
  distorted activations, then for every filter build the swapped activation in
  NumPy and run the rest of the network on it with `Model.predict`, one filter
  per pass. A second naive variant replaces `predict` by a direct call of a
  compiled tail (`tf.function`), to separate Keras overhead from batching.
* batched: `deepcorrect.rank`, which stacks many filter swaps in one pass,
  runs the per-channel layers after the ranked layer once per image, and the
  first channel-mixing layer incrementally (its output on the distorted
  activations once per image, plus one input channel's contribution per swap).

The priorities must be identical (the script fails otherwise): exactly for
`--score gain` (top-1 counts), to float32 rounding (1e-4) for the default
`--score log_prob`, which the naive loops compute from the same softmax outputs
(the label's probability clipped at 1e-12 before its log, as `rank` does). The three
methods run `--repeats` times, interleaved (the order rotates each round), so
that load from other processes on a shared machine hits all of them; the
report gives each method's best (minimum) time and the speed-ups between the
best times, plus the range of the per-round speed-ups. It prints one JSON
object: filters per second of each method, the speed-ups, the achieved GFLOP/s
of the tail passes (multiply-adds of the convolutions and dense layers each
method runs per swap, counted as 2 FLOPs, divided by the time spent in the
tail passes), and the time and Spearman correlation (with the exact ranking)
of the approximate first-order method on the same layer and images.

The model is trained here for two epochs on 5,000 CIFAR-10 training images
with seed 0; a random network predicts nearly one class,
so swaps would rarely change a prediction and the comparison would be trivial.

Usage:

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_rank.py
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_rank.py \\
        --images 200 --layer conv2 --levels 1.0 2.0 --batch-size 800 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from deepcorrect.ranking import rank, spearman  # noqa: E402
from measure import host, timed  # noqa: E402  (benchmarks/measure.py, beside this script)

CIFAR = REPO_ROOT / ".." / "shared" / "data" / "cifar10" / "cifar10.npz"

# (name, filters, batch norm, pool after) for the convolutional stack.
ARCHITECTURE = [
    ("conv1", 32, True, False),
    ("conv2", 32, True, True),
    ("conv3", 64, True, False),
    ("conv4", 64, True, True),
]


def build_model(seed: int) -> keras.Model:
    """A small VGG-style CIFAR-10 CNN, built as a flat list of layers."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((32, 32, 3))
    for name, width, bn, pool in ARCHITECTURE:
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=not bn,
                                name=name)(x)
        if bn:
            x = keras.layers.BatchNormalization(momentum=0.9, name=name + "_bn")(x)
        x = keras.layers.ReLU(name=name + "_relu")(x)
        if pool:
            x = keras.layers.MaxPooling2D(name=name + "_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="bench_cifar_cnn")


def scale(images: np.ndarray) -> np.ndarray:
    return images / 127.5 - 1.0


def blur(images: np.ndarray, level: float, seed: int) -> np.ndarray:
    """Gaussian blur of `level` pixels (deterministic; `seed` unused)."""
    from scipy import ndimage

    return ndimage.gaussian_filter(images, sigma=(0, level, level, 0),
                                   mode="nearest").astype(np.float32)


def make_distortion(name: str):
    """`fn(images, level, seed)`: the `distort` package's op, or the SciPy blur."""
    if name == "scipy_blur":
        return blur
    import distort

    def apply(images, level, seed):
        return np.asarray(distort.apply(images, name, level, seed=seed), np.float32)

    apply.__name__ = name
    return apply


def tail_layers(model: keras.Model, layer_name: str) -> list[keras.layers.Layer]:
    """Layers after `layer_name` in this flat (chain) model."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    names = [layer.name for layer in layers]
    return layers[names.index(layer_name) + 1:]


def layer_flops(layer: keras.layers.Layer) -> int:
    """FLOPs per image of one conv or dense layer (0 for other layers)."""
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c_out = layer.output.shape
        kh, kw, c_in, _ = layer.kernel.shape
        return 2 * h * w * kh * kw * c_in * c_out
    if isinstance(layer, keras.layers.Dense):
        c_in, c_out = layer.kernel.shape
        return 2 * c_in * c_out
    return 0


def tail_flops(model: keras.Model, layer_name: str) -> int:
    """FLOPs per image of the convolutions and dense layers after the site."""
    return int(sum(layer_flops(layer) for layer in tail_layers(model, layer_name)))


def batched_tail_flops(model: keras.Model, layer_name: str) -> int:
    """FLOPs per swapped image of the batched tail passes.

    The first conv or dense layer after the site only adds the contribution
    of one input channel (its FLOPs over its input channels); the layers after
    it run in full.
    """
    layers = [t for t in tail_layers(model, layer_name) if layer_flops(t)]
    mixing, rest = layers[0], layers[1:]
    c_in = mixing.kernel.shape[-2]
    return int(layer_flops(mixing) // c_in + sum(layer_flops(t) for t in rest))


def naive_priorities(model, layer_name, images, labels, distortion, levels,
                     use_predict, timing, score):
    """The original method: one filter swap per forward pass of the tail.

    `score` is `"gain"` (the change in top-1 accuracy) or `"log_prob"` (the mean
    change in the label's log-probability). `timing["tail_seconds"]` accumulates
    the time spent in the tail passes.
    """
    layer = model.get_layer(layer_name)
    head = keras.Model(model.input, layer.output)
    site = keras.Input(layer.output.shape[1:])
    x = site
    for t in tail_layers(model, layer_name):
        x = t(x)
    tail = keras.Model(site, x)
    tail_call = tf.function(lambda a: tail(a, training=False))

    def predict(a):
        if use_predict:
            return tail.predict(a, batch_size=len(a), verbose=0)
        return tail_call(tf.constant(a)).numpy()

    def outcome(probabilities):
        if score == "gain":
            return np.mean(np.argmax(probabilities, -1) == labels)
        label_p = probabilities[np.arange(len(labels)), labels]
        return np.mean(np.log(np.maximum(label_p, 1e-12).astype(np.float64)))

    n = len(images)
    clean = head.predict(scale(images), batch_size=n, verbose=0)
    gains = []
    for k, level in enumerate(levels):
        dist_images = scale(distortion(images, level, k))
        dist = head.predict(dist_images, batch_size=n, verbose=0)
        base = outcome(model.predict(dist_images, batch_size=n, verbose=0))
        per_filter = []
        for j in range(dist.shape[-1]):
            swapped = dist.copy()
            swapped[..., j] = clean[..., j]
            tick = time.perf_counter()
            out = predict(swapped)
            timing["tail_seconds"] = timing.get("tail_seconds", 0.0) + (
                time.perf_counter() - tick)
            per_filter.append(outcome(out) - base)
        gains.append(per_filter)
    return np.mean(gains, axis=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--layer", default="conv2")
    parser.add_argument("--distortion", default="gaussian_blur",
                        help="a distort name, or scipy_blur (default gaussian_blur)")
    parser.add_argument("--levels", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--score", choices=["log_prob", "gain"], default="log_prob",
                        help="the exact method's score (default log_prob, rank's default)")
    parser.add_argument("--batch-size", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved rounds of all methods (default 3)")
    parser.add_argument("--no-naive", action="store_true",
                        help="skip the naive loops (only batched and approx)")
    args = parser.parse_args(argv)

    if not CIFAR.exists():
        print(f"CIFAR-10 not found at {CIFAR}", file=sys.stderr)
        return 2
    with np.load(CIFAR, allow_pickle=False) as data:
        x_train = data["x_train"][: args.train_images].astype(np.float32)
        y_train = data["y_train"][: args.train_images].reshape(-1)
        images = data["x_test"][: args.images].astype(np.float32)
        labels = data["y_test"][: args.images].reshape(-1).astype(np.int64)

    model = build_model(args.seed)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(scale(x_train), y_train, batch_size=64, epochs=args.epochs, verbose=0)
    clean_accuracy = float(np.mean(
        np.argmax(model.predict(scale(images), verbose=0), -1) == labels))

    distortion = make_distortion(args.distortion)
    common = dict(layers=[args.layer], batch_size=args.batch_size,
                  preprocess=scale, progress=False)
    results = {}

    def run_batched(timing):
        ranking = rank(model, images, labels, distortion, args.levels,
                       score=args.score, **common)
        timing["tail_seconds"] = ranking.extra["timing"][args.layer]["tail_seconds"]
        results["batched"] = ranking
        return ranking.priorities[args.layer]

    def run_naive(use_predict):
        return lambda timing: naive_priorities(
            model, args.layer, images, labels, distortion, args.levels,
            use_predict, timing, args.score)

    methods = {"batched": run_batched}
    if not args.no_naive:
        methods.update(naive_predict=run_naive(True),
                       naive_direct_call=run_naive(False))
    names = list(methods)
    seconds = {name: [] for name in names}
    tail_seconds = {name: [] for name in names}
    tolerance = 1e-12 if args.score == "gain" else 1e-4
    differences = {}
    for round_index in range(args.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            timing = {}
            values, elapsed = timed(lambda: methods[name](timing))
            seconds[name].append(elapsed)
            tail_seconds[name].append(timing["tail_seconds"])
            if name != "batched":
                np.testing.assert_allclose(
                    results["batched"].priorities[args.layer], values,
                    rtol=0, atol=tolerance)
                differences[name] = max(differences.get(name, 0.0), float(np.max(
                    np.abs(results["batched"].priorities[args.layer] - values))))
    batched = results["batched"]
    approx, t_approx = timed(lambda: rank(
        model, images, labels, distortion, args.levels, method="approx", **common))
    ours = batched.priorities[args.layer]

    n_filters = ours.size
    swaps = n_filters * len(args.levels)
    flops = {name: tail_flops(model, args.layer) * args.images * swaps
             for name in names}
    flops["batched"] = batched_tail_flops(model, args.layer) * args.images * swaps
    best = {k: min(v) for k, v in seconds.items()}
    best_tail = {k: min(v) for k, v in tail_seconds.items()}
    report = {
        "model": f"{model.name} (trained {args.epochs} epochs on {args.train_images} "
                 f"CIFAR-10 train images, seed {args.seed})",
        "clean_accuracy": round(clean_accuracy, 4),
        "layer": args.layer,
        "filters": n_filters,
        "images": args.images,
        "distortion": args.distortion,
        "levels": args.levels,
        "baseline_accuracy": [round(v, 4) for v in batched.baseline_accuracy],
        "score": args.score,
        "priorities_identical": None if args.no_naive else True,
        "identity_tolerance": tolerance,
        "max_priority_difference": {k: float(f"{v:.3g}") for k, v in differences.items()},
        "nonzero_priorities": int(np.count_nonzero(ours)),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "tail_gflop_total": {k: round(v / 1e9, 3) for k, v in flops.items()},
        "seconds_best": {k: round(v, 3) for k, v in best.items()},
        "seconds_all": {k: [round(t, 3) for t in v] for k, v in seconds.items()},
        "filters_per_second": {k: round(swaps / v, 2) for k, v in best.items()},
        "approx": {"seconds": round(t_approx, 3),
                   "spearman_vs_exact": round(spearman(batched, approx, args.layer), 3)},
        **{f"speedup_vs_{k}": round(v / best["batched"], 2)
           for k, v in best.items() if k != "batched"},
        **{f"speedup_vs_{k}_per_round": [
            round(a / b, 2) for a, b in zip(v, seconds["batched"])]
           for k, v in seconds.items() if k != "batched"},
        "tail_seconds_best": {k: round(v, 3) for k, v in best_tail.items()},
        "tail_gflops_per_second": {
            k: round(flops[k] / 1e9 / v, 2) for k, v in best_tail.items()},
        "note": "filters per second count one filter at one level over all images; "
                "seconds are end to end (activations, baselines and tracing "
                "included) and the best of the rounds; tail_seconds only the tail "
                "passes (with the first call's tracing)",
        "host": host(),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inference latency of wrapped vs unwrapped models, next to their FLOP ratio.

Wraps MobileNetV2 (random weights) with correction units on its first conv
layers, for each unit preset (`cw`, `lite`, `bottleneck`), two ways: `fused`
(the default of `wrap`: the gather and scatter are folded into the units'
first and last 1x1 convs) and `explicit` (`GatherChannels` -> unit ->
`ScatterChannels` layers). Also timed: the same units alone, on inputs of the
gathered shape (what the units themselves cost), and a `plumbing_only` model
whose units are identities (what explicit gather/scatter layers cost).

FLOPs are counted by TensorFlow's profiler on each frozen inference graph.
Latencies are the best of `--repeats` interleaved runs of a `tf.function`
forward pass. `plumbing_overhead` is the latency a wrapped model has beyond the base
model plus its units alone, relative to that sum:
`(t_wrapped - t_base - t_units) / (t_base + t_units)`; the target is <= 0.10.

Usage:

    python benchmarks/bench_overhead.py [--size 128] [--batch 4] [--first 5]
        [--beta 0.5] [--repeats 20]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework.convert_to_constants import (  # noqa: E402
    convert_variables_to_constants_v2,
)

from deepcorrect.graph import conv_layers, filter_count  # noqa: E402
from deepcorrect.surgery import correction_units, trainable_parameters, wrap  # noqa: E402
from deepcorrect.units import CorrectionUnit  # noqa: E402

PRESETS = ("cw", "lite", "bottleneck")


def identity_unit(channels: int, kernel_size: int, name: str) -> keras.layers.Layer:
    """A unit that does nothing: what remains is the gather/scatter plumbing."""
    return keras.layers.Identity(name=name)


def count_flops(model: keras.Model, input_specs: list) -> int:
    """Floating-point operations of one forward pass, by TensorFlow's profiler."""
    function = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False))
    concrete = function.get_concrete_function(*input_specs)
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return int(profile.total_float_ops)


def compiled_forward(model: keras.Model):
    forward = tf.function(lambda x: model(x, training=False))

    def run(x) -> None:  # blocks until every output is computed
        for output in tf.nest.flatten(forward(x)):
            output.numpy()

    return run


def interleaved_latencies(forwards: dict, feeds: dict, repeats: int) -> dict:
    """Best-of-`repeats` seconds per forward pass, models timed round-robin.

    On a shared machine, other work only ever adds time, so the minimum is
    the most faithful estimate of a pass's own cost (as `timeit` advises).
    """
    for name, forward in forwards.items():  # trace and warm up
        forward(feeds[name])
        forward(feeds[name])
    times = {name: [] for name in forwards}
    for _ in range(repeats):
        for name, forward in forwards.items():
            start = time.perf_counter()
            forward(feeds[name])
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def units_alone(wrapped: keras.Model, base: keras.Model, batch: int) -> keras.Model:
    """The wrapped model's units on their own, each fed its gathered shape."""
    inputs, outputs = [], []
    for name, unit in correction_units(wrapped).items():
        _, height, width, _ = base.get_layer(name).output.shape
        config = unit.get_config()
        config.update(channel_indices=None, name=f"{name}_alone")
        alone = CorrectionUnit.from_config(config)
        x = keras.Input(batch_shape=(batch, height, width, unit.channels))
        inputs.append(x)
        outputs.append(alone(x))
    return keras.Model(inputs, outputs)


def unit_inputs(model: keras.Model, rng: np.random.Generator) -> list:
    return [
        tf.constant(rng.uniform(-1, 1, tuple(x.shape)).astype("float32"))
        for x in model.inputs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--first", type=int, default=5, help="correct the first k conv layers")
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(weights=None, input_shape=(args.size, args.size, 3))
    rng = np.random.default_rng(0)
    ranks = {
        layer.name: rng.permutation(filter_count(layer))
        for layer in conv_layers(base)
    }
    options = dict(beta=args.beta, first=args.first)
    models = {
        "base": base,
        "plumbing_only": wrap(base, ranks, unit=identity_unit, **options),
    }
    for preset in PRESETS:
        models[f"{preset}/fused"] = wrap(base, ranks, unit=preset, **options)
        models[f"{preset}/explicit"] = wrap(base, ranks, unit=preset, fused=False, **options)
        models[f"{preset}/units_alone"] = units_alone(
            models[f"{preset}/fused"], base, args.batch
        )

    input_shape = (args.batch, args.size, args.size, 3)
    images = tf.constant(rng.uniform(-1, 1, input_shape).astype("float32"))
    feeds = {
        name: unit_inputs(model, rng) if name.endswith("units_alone") else images
        for name, model in models.items()
    }
    flops = {
        name: count_flops(model, [tf.TensorSpec(x.shape, tf.float32) for x in feed])
        for name, model in models.items()
        for feed in [tf.nest.flatten(feeds[name])]
    }
    latency = interleaved_latencies(
        {name: compiled_forward(model) for name, model in models.items()},
        feeds,
        args.repeats,
    )

    t_base = latency["base"]
    units = {}
    for preset in PRESETS:
        t_units = latency[f"{preset}/units_alone"]
        entry = {
            "units_alone_ms": round(1e3 * t_units, 2),
            "units_alone_gflops": round(flops[f"{preset}/units_alone"] / 1e9, 3),
            "trainable_params": trainable_parameters(models[f"{preset}/fused"]),
        }
        for routing in ("fused", "explicit"):
            name = f"{preset}/{routing}"
            entry[routing] = {
                "latency_ms": round(1e3 * latency[name], 2),
                "latency_ratio": round(latency[name] / t_base, 3),
                "gflops": round(flops[name] / 1e9, 3),
                "flop_ratio": round(flops[name] / flops["base"], 3),
                "plumbing_overhead": round(
                    (latency[name] - t_base - t_units) / (t_base + t_units), 3
                ),
            }
        units[preset] = entry
    fused_overheads = [units[p]["fused"]["plumbing_overhead"] for p in PRESETS]
    corrected = [layer.name for layer in conv_layers(base)][: args.first]
    print(
        json.dumps(
            {
                "benchmark": "bench_overhead",
                "model": f"MobileNetV2 (weights=None) {args.size}x{args.size}",
                "batch": args.batch,
                "corrected_layers": corrected,
                "beta": args.beta,
                "repeats": args.repeats,
                "device": tf.config.list_logical_devices()[-1].device_type,
                "cpu_threads": os.cpu_count(),
                "machine": platform.machine(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "base": {
                    "latency_ms": round(1e3 * t_base, 2),
                    "gflops": round(flops["base"] / 1e9, 3),
                },
                "plumbing_only_explicit": {
                    "latency_ms": round(1e3 * latency["plumbing_only"], 2),
                    "overhead_vs_base": round(latency["plumbing_only"] / t_base - 1.0, 3),
                },
                "units": units,
                "max_fused_plumbing_overhead": max(fused_overheads),
                "fused_within_10_percent": max(fused_overheads) <= 0.10,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

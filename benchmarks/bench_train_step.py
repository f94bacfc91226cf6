"""Where a DeepCorrect training step spends its time, against a Finetune-all step.

The CIFAR-10 network of the repair studies (`cifar10_quick`, random weights: the time of a
step does not depend on them), batches of 128 CIFAR-sized images, SGD with Nesterov momentum
as `deepcorrect.train` compiles it. Timed, interleaved (the order rotates each round), the
best of `--repeats` rounds of `--steps` steps after a warm-up:

- `finetune_all`: every layer trains (the baseline of the ratios);
- `units`: `cw` units on half the filters of every conv (the ladder's default), after the
  batch norms;
- `units_conv_site`: the same units on the conv outputs (`site="conv"`);
- `units_first1` / `units_last2`: units on the first conv only / on the last two only, to see
  which layer's units cost the time;
- `units_lite` and `units_bottleneck`: the other unit presets;
- `units_no_xla`: the default units with `jit_compile=False` (Keras compiles with XLA when
  every layer supports it, as here).

Usage:

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_train_step.py [--repeats 5]

Prints one JSON object: seconds per step of each case and its ratio to Finetune-all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cases(base):
    """name -> (a trainable model, jit_compile)."""
    import deepcorrect
    from deepcorrect.graph import conv_layers

    convs = [layer.name for layer in conv_layers(base)]
    ranking = {name: list(range(layer.filters)) for name, layer in
               ((layer.name, layer) for layer in conv_layers(base))}
    return {
        "finetune_all": (lambda: deepcorrect.finetune(base, "all"), "auto"),
        "units": (lambda: deepcorrect.wrap(base, ranking, beta=0.5), "auto"),
        "units_conv_site": (lambda: deepcorrect.wrap(base, ranking, beta=0.5, site="conv"),
                            "auto"),
        "units_first1": (lambda: deepcorrect.wrap(base, ranking, beta=0.5, first=1), "auto"),
        "units_last2": (lambda: deepcorrect.wrap(base, ranking, beta=0.5, layers=convs[1:]),
                        "auto"),
        "units_lite": (lambda: deepcorrect.wrap(base, ranking, beta=0.5, unit="lite"), "auto"),
        "units_bottleneck": (lambda: deepcorrect.wrap(base, ranking, beta=0.5,
                                                      unit="bottleneck"), "auto"),
        "units_no_xla": (lambda: deepcorrect.wrap(base, ranking, beta=0.5), False),
    }


def main(argv=None) -> int:
    import keras
    import numpy as np
    import tensorflow as tf

    from studies.networks import build_network

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    base = build_network("cifar10_quick", (32, 32, 3), 10, seed=0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (args.batch, 32, 32, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, args.batch))
    models = {}
    for name, (make, jit) in cases(base).items():
        model = make()
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
                      keras.losses.SparseCategoricalCrossentropy(), jit_compile=jit)
        for _ in range(3):  # tracing and XLA compilation
            model.train_on_batch(x, y)
        models[name] = model
    best = {name: float("inf") for name in models}
    names = list(models)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in range(args.steps):
                models[name].train_on_batch(x, y)
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    import deepcorrect

    report = {
        "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "load_average": os.getloadavg(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "seconds_per_step": {k: round(v, 5) for k, v in best.items()},
        "ratio_to_finetune_all": {k: round(v / best["finetune_all"], 2) for k, v in best.items()},
        "trainable_parameters": {k: deepcorrect.trainable_parameters(m)
                                 for k, m in models.items()},
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

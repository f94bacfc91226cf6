"""Throughput of QRNet: `restore`, training steps, and restore + classify against classify alone.

Two cases, each a restorer in front of a frozen classifier (random weights: speed does
not depend on them):

- `cifar`: the CIFAR-10 restorer of `examples/qrnet_cifar10.py` (base width 8, depth 3)
  on 32x32 images, with `studies.networks`' `cifar10_quick` CNN, batch 32;
- `paper` (only with `--cases paper`: about a minute per round on 2 CPU cores): the
  paper's restorer (`qrnet_paper`: base width 64, depth 4) on 224x224 images, with
  MobileNetV2 (`weights=None`), batch 2.

Measured, in images per second, in the same run:

- `qrnet.restore` (the public function, Keras `predict` underneath) on `--batches`
  batches in one call;
- compiled forward passes (`tf.function`, one call per batch, over the same images):
  the classifier alone (with its preprocessing), the restorer alone, and restorer +
  classifier chained; the ratio of the chain's time to the classifier's is the
  slow-down the restorer adds at inference;
- one training step (`QualityRecoveryTrainer.train_on_batch`, compiled as `qrnet.train`
  compiles it: Adam) in three modes: `recnet` without a classifier (L1 only), `recnet`
  with the classifier attached at lambda 0 (it runs forward for its logged accuracy,
  but no gradient flows through it), and `qrnet` (lambda 0.01). The ratio
  `qrnet / recnet_monitored` step time is the cost of back-propagating through the
  classifier.

Every measurement is the best of `--repeats` rounds after one untimed call (tracing); in
each round the measurements run one after the other (round robin), so load from other
jobs spreads over all of them.

Usage:

    python benchmarks/bench_qrnet.py [--cases cifar [paper]] [--repeats 5]
        [--cifar-batch 32] [--paper-batch 2] [--batches 4]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import qrnet  # noqa: E402
from studies.networks import build_network  # noqa: E402

# Plain table of the two cases.
CASES = {
    "cifar": {
        "size": 32,
        "restorer": {"base_width": 8, "depth": 3, "small": False, "dropout": 0.2},
        "classifier": "cifar10_quick",
        "preprocessing": None,  # the project's CNNs read 0..255
        "classes": 10,
    },
    "paper": {
        "size": 224,
        "restorer": qrnet.PRESETS["qrnet_paper"]["config"],
        "classifier": "MobileNetV2",
        "preprocessing": "mobilenet_v2",
        "classes": 1000,
    },
}


def build_classifier(case: dict) -> keras.Model:
    shape = (case["size"], case["size"], 3)
    if case["classifier"] == "MobileNetV2":
        return keras.applications.MobileNetV2(weights=None, input_shape=shape)
    return build_network(case["classifier"], shape, classes=case["classes"], seed=0)


def build_trainer(case: dict, mode: str, classifier: keras.Model | None):
    keras.utils.set_random_seed(0)
    size = case["size"]
    restorer = qrnet.build_qrnet(input_shape=(size, size, 3), **case["restorer"])
    specs = [] if classifier is None else qrnet.ClassifierSpec(
        classifier, preprocessing=case["preprocessing"], name="clf")
    trainer = qrnet.QualityRecoveryTrainer(restorer, specs, mode=mode)
    trainer.compile(optimizer=keras.optimizers.Adam(qrnet.DEFAULT_TRAINING["learning_rate"]))
    return trainer


def forward(*stages):
    """A compiled chain of stages whose call blocks until the output is computed."""

    @tf.function
    def run(batch):
        for stage in stages:
            batch = stage(batch)
        return batch

    return lambda batch: run(batch).numpy()


def best_seconds(calls: dict, repeats: int) -> dict:
    """Best-of-`repeats` seconds of each call, the calls timed round robin after a warm-up.

    On a shared machine other work only ever adds time, so the minimum is the most
    faithful estimate of a call's own cost.
    """
    for call in calls.values():  # trace and warm up
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def run_case(name: str, batch: int, batches: int, repeats: int) -> dict:
    case = CASES[name]
    size = case["size"]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch * batches, size, size, 3)).astype("float32")
    labels = rng.integers(0, case["classes"], batch)
    split = [tf.constant(images[i : i + batch]) for i in range(0, len(images), batch)]

    classifier = build_classifier(case)
    classifier.trainable = False
    trainers = {
        "recnet": build_trainer(case, "recnet", None),
        "recnet_monitored": build_trainer(case, "recnet", classifier),
        "qrnet": build_trainer(case, "qrnet", classifier),
    }
    restorer = trainers["qrnet"].restorer
    mode = case["preprocessing"]
    prepare = qrnet.ImagePreprocessing(mode) if mode else (lambda x: x)
    restore = lambda x: restorer(x, training=False)  # noqa: E731
    classify = lambda x: classifier(prepare(x), training=False)  # noqa: E731
    inference = {
        "classify_alone": forward(classify),
        "restore_alone": forward(restore),
        "restore_and_classify": forward(restore, classify),
    }
    first = images[:batch]
    calls = {
        "qrnet.restore": lambda: qrnet.restore(restorer, images, batch_size=batch),
        **{key: (lambda fn=fn: [fn(part) for part in split]) for key, fn in inference.items()},
        **{f"train_step/{mode}": (lambda t=trainer: t.train_on_batch(first, (first, labels)))
           for mode, trainer in trainers.items()},
    }
    seconds = best_seconds(calls, repeats)
    counts = {key: batch if key.startswith("train_step") else len(images) for key in seconds}
    per_s = {key: float(f"{counts[key] / value:.3g}") for key, value in seconds.items()}
    return {
        "image_size": size,
        "batch": batch,
        "inference_images": len(images),
        "restorer": {**case["restorer"], "params": restorer.count_params()},
        "classifier": {"name": case["classifier"], "params": classifier.count_params(),
                       "preprocessing": case["preprocessing"]},
        "train_step_jit_compile": bool(trainers["qrnet"].jit_compile),
        "seconds_per_call": {key: round(value, 5) for key, value in seconds.items()},
        "images_per_s": per_s,
        "ratios": {
            # > 1: the restorer slows classification down by this factor.
            "restore_and_classify_over_classify_alone": round(
                seconds["restore_and_classify"] / seconds["classify_alone"], 2),
            # > 1: back-propagating through the classifier costs this factor per step.
            "qrnet_step_over_recnet_monitored_step": round(
                seconds["train_step/qrnet"] / seconds["train_step/recnet_monitored"], 2),
            "qrnet_step_over_recnet_step": round(
                seconds["train_step/qrnet"] / seconds["train_step/recnet"], 2),
            # `restore`'s overhead over a compiled forward pass (Keras predict, copies).
            "qrnet_restore_over_compiled_restore": round(
                seconds["qrnet.restore"] / seconds["restore_alone"], 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["cifar"],
                        help="default: cifar (the paper case takes minutes per round on a CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the best is kept")
    parser.add_argument("--cifar-batch", type=int, default=32)
    parser.add_argument("--paper-batch", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4,
                        help="inference runs over this many batches per call (default 4)")
    args = parser.parse_args()
    if min(args.repeats, args.cifar_batch, args.paper_batch, args.batches) < 1:
        parser.error("--repeats, --cifar-batch, --paper-batch and --batches must be >= 1")

    load_at_start = os.getloadavg()
    batches = {"cifar": args.cifar_batch, "paper": args.paper_batch}
    results = {}
    for name in args.cases:
        start = time.perf_counter()
        results[name] = run_case(name, batches[name], args.batches, args.repeats)
        results[name]["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps({
        "benchmark": "bench_qrnet",
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_min": {"start": [round(v, 2) for v in load_at_start],
                                    "end": [round(v, 2) for v in os.getloadavg()]},
        "device": tf.config.list_logical_devices()[-1].device_type,
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cases": results,
    }, indent=2))


if __name__ == "__main__":
    main()

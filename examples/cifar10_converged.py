"""A CIFAR-10 baseline trained to convergence on all 50,000 training images.

The networks the repair studies start from were trained for a few epochs; a repair that
closes the gap to clean accuracy must start from a converged one. This script trains
`cifar10_quick` (or `--network`) on the full training set with random flips and
4-pixel shifts, Adam with a cosine schedule, and records the clean accuracy on all 10,000
test images after every epoch in `history.json`, so a reader sees the plateau. Every epoch is
checkpointed: an interrupted run resumes where it stopped.

Usage (from the repository root):

    .venv/bin/python examples/cifar10_converged.py --epochs 30
    .venv/bin/python examples/cifar10_converged.py --quick      # 512 images, one epoch
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "cifar10" / "cifar10.npz"


def parse_args(argv=None):
    from studies.networks import NETWORKS
    from robustkit.seeds import seed_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="a CIFAR-style .npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--network", default="cifar10_quick", choices=sorted(NETWORKS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3,
                        help="Adam's initial rate, annealed to 0 by a cosine schedule")
    parser.add_argument("--out", default=str(ROOT / "out" / "cifar10_converged"))
    parser.add_argument("--quick", action="store_true", help="512 images, one epoch")
    parser.add_argument("--seed", type=seed_argument, default=0)
    return parser.parse_args(argv)


def augmented(images, labels, batch_size: int, seed: int):
    """A shuffled, flipped and shifted `tf.data` pipeline of one epoch."""
    import tensorflow as tf

    def augment(batch, y, step):
        seeds = tf.random.experimental.stateless_split([seed, step], 2)
        batch = tf.image.stateless_random_flip_left_right(batch, seeds[0])
        padded = tf.pad(batch, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT")
        shape = tf.shape(batch)
        batch = tf.image.stateless_random_crop(padded, shape, seeds[1])
        return batch, y

    data = tf.data.Dataset.from_tensor_slices((images.astype("float32"), labels))
    data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).enumerate().map(lambda i, xy: augment(*xy, i))
    return data.prefetch(2)


def main(argv=None) -> int:
    from robustkit.cli_common import fail_cleanly

    return fail_cleanly(train, parse_args(argv))


def train(args) -> None:
    import keras

    from studies.networks import build_network
    from robustkit.cli_common import require_positive
    from robustkit.data import load_cifar10
    from robustkit.io import atomic_write_text

    require_positive(args, "epochs", "batch_size")
    (x_train, y_train), (x_test, y_test) = load_cifar10(args.data)
    epochs = args.epochs
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:512], y_train[:512], x_test[:256], y_test[:256]
        epochs = 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_network(args.network, x_train.shape[1:], 10, seed=args.seed)
    steps = epochs * -(-len(x_train) // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history_path = out / "history.json"
    record = json.loads(history_path.read_text()) if history_path.is_file() else {
        "network": args.network, "images": int(len(x_train)), "test_images": int(len(x_test)),
        "epochs": epochs, "learning_rate": args.learning_rate, "batch_size": args.batch_size,
        "seed": args.seed, "test_accuracy": [], "seconds": []}

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            record["test_accuracy"] = record["test_accuracy"][:epoch] + [
                float(logs["val_accuracy"])]
            record["seconds"] = record["seconds"][:epoch] + [time.time() - self.start]
            atomic_write_text(history_path, json.dumps(record, indent=1))
            print(f"epoch {epoch + 1}/{epochs}: test accuracy {logs['val_accuracy']:.4f}",
                  flush=True)

    model.fit(augmented(x_train, y_train, args.batch_size, args.seed), epochs=epochs,
              validation_data=(x_test.astype("float32"), y_test), verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(str(out / "checkpoint"),
                                                          delete_checkpoint=False), Record()])
    model.save(out / "baseline.keras")
    print(f"clean test accuracy {record['test_accuracy'][-1]:.4f} after {epochs} epochs; "
          f"wrote {out / 'baseline.keras'}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

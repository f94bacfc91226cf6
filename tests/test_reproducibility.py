"""Seeds and safe loading.

- The same seed gives byte-identical distorted datasets, identical rankings and
  identical first-epoch losses in two separate Python processes (a script run
  twice, printing hashes and values as JSON); another seed gives other bytes.
- The same seed gives byte-identical saved weights, in separate processes, for
  `wrap` (the units' initial weights), `wrap` + `train`, `finetune` + `train`
  (a model with dropout) and a QRNet built and trained with that seed; a third
  process with another seed gets other weights.
- Every kind of model the project writes (a wrapped model, a finetuned model, a
  QRNet restorer, a model with `distort.layers`) has no `Lambda` in its saved
  `.keras` config and loads with `safe_mode=True`, computing the same outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import CIFAR10

REPO = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: argv = CIFAR-10 .npz path, seed of the weights section,
# "all" or "weights" (that section only). Prints one JSON line.
SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys, tempfile
    import numpy as np
    import keras
    import deepcorrect
    import qrnet
    from distort import pipeline

    with np.load(sys.argv[1], allow_pickle=False) as d:
        x, y = d["x_test"][:64], d["y_test"][:64].reshape(-1).astype(np.int64)

    result = {}
    if sys.argv[3] == "all":  # the seed-1 process runs the weights section only
        def dataset_hash(seed):
            table = {"awgn": [10.0, 20.0, 30.0], "random_walk_blur": [1.0, 2.0, 3.0],
                     "camera_shake": [1.0]}
            digest = hashlib.sha256()
            for images, labels in pipeline.training_dataset(x, y, table, batch_size=16, seed=seed):
                digest.update(np.ascontiguousarray(images.numpy()).tobytes())
                digest.update(np.ascontiguousarray(labels.numpy()).tobytes())
            return digest.hexdigest()

        def tiny():
            keras.utils.set_random_seed(7)
            return keras.Sequential([
                keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0),
                keras.layers.Conv2D(6, 3, name="conv1"), keras.layers.BatchNormalization(name="bn1"),
                keras.layers.ReLU(), keras.layers.Conv2D(8, 3, strides=2, name="conv2"),
                keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(10, name="logits")], name="tiny")

        ranking = deepcorrect.rank(tiny(), x[:16], y[:16], "awgn", [20.0, 40.0], seed=3,
                                   batch_size=64, progress=False)
        wrapped = deepcorrect.wrap(tiny(), ranking, beta=0.5)
        history = deepcorrect.train(wrapped, x, y, "awgn", [10.0, 20.0, 30.0], preset="cpu_quick",
                                    epochs=1, seed=0, verbose=0)
        unit_weights = hashlib.sha256(b"".join(
            np.ascontiguousarray(w.numpy()).tobytes() for w in wrapped.trainable_weights)).hexdigest()
        result.update({
            "dataset_seed0": dataset_hash(0),
            "dataset_seed1": dataset_hash(1),
            "priorities": {name: [repr(float(v)) for v in values]
                           for name, values in ranking.priorities.items()},
            "baseline_accuracy": [repr(float(v)) for v in ranking.baseline_accuracy],
            "loss": repr(float(history.history["loss"][0])),
            "unit_weights": unit_weights,
        })

    # Weights as saved, from `seed`. The pretrained model's weights come from NumPy, so
    # nothing here seeds Keras's global random state before the calls under test.
    seed = int(sys.argv[2])

    def pretrained():
        inputs = keras.Input((32, 32, 3))
        h = keras.layers.Rescaling(1 / 255.0)(inputs)
        h = keras.layers.Conv2D(6, 3, name="conv1")(h)
        h = keras.layers.BatchNormalization(name="bn1")(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.Conv2D(8, 3, strides=2, name="conv2")(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        h = keras.layers.Dropout(0.3, name="drop")(h)
        model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h), name="pretrained")
        rng = np.random.default_rng(0)
        model.set_weights([rng.uniform(0.5, 2, w.shape) if "variance" in w.path
                           else rng.normal(0, 0.3, w.shape) for w in model.weights])
        return model

    def saved(model):
        path = os.path.join(tempfile.mkdtemp(), "model.weights.h5")
        model.save_weights(path)
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    weights = {}
    corrected = deepcorrect.wrap(pretrained(), {"conv1": list(range(6)), "conv2": list(range(8))},
                                 beta=0.5, seed=seed)
    weights["wrap"] = saved(corrected)
    unit_seeds = [corrected.get_layer(name).get_config()["kernel_initializer"]["config"]["seed"]
                  for name in ("conv1_unit", "conv2_unit")]
    deepcorrect.train(corrected, x[:48], y[:48], "awgn", [10.0, 20.0], preset="cpu_quick",
                      epochs=1, batch_size=16, seed=seed, verbose=0)
    weights["wrap_train"] = saved(corrected)
    tuned = deepcorrect.finetune(pretrained(), 1)
    deepcorrect.train(tuned, x[:48], y[:48], "awgn", [10.0, 20.0], preset="cpu_quick",
                      epochs=1, batch_size=16, seed=seed, verbose=0)
    weights["finetune_train"] = saved(tuned)
    restorer = qrnet.build_qrnet(base_width=4, depth=2, seed=seed)
    weights["qrnet"] = saved(restorer)
    qrnet.train(qrnet.QualityRecoveryTrainer(restorer, mode="recnet"), x[:16], y[:16],
                {"awgn": [20.0]}, epochs=1, batch_size=8, seed=seed, patience=None, verbose=0)
    weights["qrnet_train"] = saved(restorer)

    print(json.dumps({**result, "weights": weights, "unit_seeds": unit_seeds}))
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not CIFAR10.is_file():
        pytest.skip(f"CIFAR-10 not found at {CIFAR10}")
    script = tmp_path_factory.mktemp("repro") / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.fspath(REPO),
               PYTHONHASHSEED="random")
    # Two processes with seed 0, a third with seed 1 (for the weights section).
    procs = [subprocess.Popen([sys.executable, os.fspath(script), os.fspath(CIFAR10), str(seed),
                               part], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for seed, part in ((0, "all"), (0, "all"), (1, "weights"))]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_same_seed_gives_byte_identical_distorted_datasets(runs):
    first, second, _ = runs
    assert first["dataset_seed0"] == second["dataset_seed0"]
    assert first["dataset_seed1"] == second["dataset_seed1"]
    assert first["dataset_seed0"] != first["dataset_seed1"]


def test_same_seed_gives_identical_rankings(runs):
    first, second, _ = runs
    assert first["priorities"] == second["priorities"]
    assert first["baseline_accuracy"] == second["baseline_accuracy"]
    assert sorted(first["priorities"]) == ["conv1", "conv2"]
    assert [len(v) for v in first["priorities"].values()] == [6, 8]


def test_same_seed_gives_identical_first_epoch_losses(runs):
    first, second, _ = runs
    assert first["loss"] == second["loss"]
    assert np.isfinite(float(first["loss"])) and float(first["loss"]) > 0
    assert first["unit_weights"] == second["unit_weights"]


@pytest.mark.parametrize("stage", ["wrap", "wrap_train", "finetune_train", "qrnet", "qrnet_train"])
def test_same_seed_gives_byte_identical_saved_weights(runs, stage):
    first, second, other_seed = runs
    assert first["weights"][stage] == second["weights"][stage]
    assert first["weights"][stage] != other_seed["weights"][stage]


def test_units_save_their_derived_seeds(runs):
    from robustkit.training_checks import derived_seed

    for run, seed in zip(runs, (0, 0, 1)):
        assert run["unit_seeds"] == [derived_seed(seed, "conv1_unit"),
                                     derived_seed(seed, "conv2_unit")]


# ---------------------------------------------------------------------------
# Safe loading.


def _classifier() -> keras.Model:
    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(5, name="logits"),
        ],
        name="classifier",
    )


def _wrapped():
    import deepcorrect

    return deepcorrect.wrap(_classifier(), {"conv1": [3, 1, 0, 2], "conv2": [5, 4, 3, 2, 1, 0]},
                            beta=0.5)


def _wrapped_unfused():
    import deepcorrect

    return deepcorrect.wrap(_classifier(), {"conv1": [3, 1, 0, 2]}, beta=0.5, fused=False)


def _finetuned():
    import deepcorrect

    return deepcorrect.finetune(_classifier(), 1)


def _qrnet():
    import qrnet

    keras.utils.set_random_seed(6)
    return qrnet.build_qrnet(base_width=4, depth=2)


def _augmented():
    from distort import layers

    inputs = keras.Input((16, 16, 3))
    x = layers.GaussianBlur(levels=[1.0, 2.0], seed=0)(inputs)
    x = layers.AWGN(seed=1)(x)
    x = layers.JPEG(levels=[10, 20], seed=2)(x)
    x = layers.RandomDistortion("camera_shake", [1.0], fraction=0.25, seed=3)(x)
    return keras.Model(inputs, _classifier()(x), name="augmented")


BUILDERS = {"wrapped": _wrapped, "wrapped_unfused": _wrapped_unfused, "finetuned": _finetuned,
            "qrnet": _qrnet, "distort_layers": _augmented}

EXPECTED_CLASSES = {
    "wrapped": {"CorrectionUnit", "Conv2D", "BatchNormalization", "Dense"},
    "wrapped_unfused": {"CorrectionUnit", "GatherChannels", "ScatterChannels"},
    "finetuned": {"Conv2D", "BatchNormalization", "Dense"},
    "qrnet": {"QRNet"},
    "distort_layers": {"GaussianBlur", "AWGN", "JPEG", "RandomDistortion", "Sequential"},
}


def _class_names(config) -> list[str]:
    """Every `class_name` in a saved config, at any depth."""
    found = []
    if isinstance(config, dict):
        if "class_name" in config:
            found.append(config["class_name"])
        for value in config.values():
            found += _class_names(value)
    elif isinstance(config, list):
        for value in config:
            found += _class_names(value)
    return found


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_saved_models_have_no_lambda_and_load_in_safe_mode(kind, tmp_path):
    model = BUILDERS[kind]()
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        text = archive.read("config.json").decode()
    classes = _class_names(json.loads(text))
    assert "Lambda" not in text and "Lambda" not in classes
    # The scan saw the classes that matter (a QRNet saves its constructor arguments only).
    assert EXPECTED_CLASSES[kind] <= set(classes), classes
    loaded = keras.models.load_model(path, safe_mode=True)
    images = np.random.default_rng(0).uniform(0, 255, [2, 16, 16, 3]).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)),
                               np.asarray(model(images, training=False)), rtol=1e-5, atol=1e-4)
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]

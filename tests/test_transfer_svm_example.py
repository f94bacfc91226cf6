"""examples/transfer_svm.py: linear SVMs on deep features of distorted images."""

from __future__ import annotations

import importlib.util
import json

import keras
import numpy as np
import pytest

from tests.conftest import CIFAR10, REPO

spec = importlib.util.spec_from_file_location("transfer_svm", REPO / "examples" / "transfer_svm.py")
transfer_svm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(transfer_svm)


def test_mean_per_class_accuracy_equals_sklearn_balanced_accuracy():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    assert transfer_svm.mean_per_class_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p))


def test_splits_are_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(3), 12)
    part = transfer_svm.split(labels, train=5, val=2, seed=3)
    assert [np.bincount(labels[part[k]]).tolist() for k in ("train", "val", "test")] == \
        [[5] * 3, [2] * 3, [5] * 3]
    assert len(np.unique(np.concatenate(list(part.values())))) == 36
    again = transfer_svm.split(labels, train=5, val=2, seed=3)
    assert all(np.array_equal(part[k], again[k]) for k in part)
    assert not np.array_equal(part["train"], transfer_svm.split(labels, 5, 2, seed=4)["train"])


def test_separable_features_give_perfect_accuracy_and_noise_gives_chance():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 20)
    separable = np.eye(4)[labels] * 5 + rng.normal(0, 0.1, (80, 4))
    noise = rng.normal(0, 1, (80, 4))
    feats = {"clean": separable, "awgn@10.0": noise}
    result = transfer_svm.evaluate_model(feats, labels, {"awgn": [10.0]}, splits=2, train=10,
                                         val=2, seed=0)
    assert result["clean"] == [1.0, 1.0]
    assert np.mean(result["awgn"]["average"]) < 0.6


def test_quick_run_on_cifar10_with_a_saved_model(tmp_path):
    if not CIFAR10.is_file():
        pytest.skip("CIFAR-10 not available")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.save(tmp_path / "tiny.keras")
    argv = ["--model", f"tiny={tmp_path / 'tiny.keras'}", "--data", str(CIFAR10), "--quick",
            "--out", str(tmp_path / "out")]
    assert transfer_svm.main(argv) == 0
    result = json.loads((tmp_path / "out" / "transfer_svm.json").read_text())
    assert set(result["results"]["tiny"]) == {"clean", "gaussian_blur", "awgn"}
    assert len(list((tmp_path / "out" / "features").glob("*.npy"))) == 3
    assert transfer_svm.main(argv) == 2  # refuses to overwrite
    assert transfer_svm.main(argv[:1] + ["tiny"] + argv[2:]) == 2  # LABEL=SPEC required


def test_feature_cache_refuses_other_images_or_another_model_under_a_label(tmp_path):
    from robustkit.cli_common import CLIError

    selection = {"data": "a.npz", "per_class": 40}
    transfer_svm.check_cache(tmp_path, selection, {"base": "MobileNetV2"})
    transfer_svm.check_cache(tmp_path, selection, {"base": "MobileNetV2", "dc": "dc.keras"})
    recorded = json.loads((tmp_path / "settings.json").read_text())
    assert recorded["models"] == {"base": "MobileNetV2", "dc": "dc.keras"}
    with pytest.raises(CLIError, match="other images"):
        transfer_svm.check_cache(tmp_path, {**selection, "per_class": 60}, {})
    with pytest.raises(CLIError, match="under the label 'dc'"):
        transfer_svm.check_cache(tmp_path, selection, {"dc": "other.keras"})


def test_distortions_of_limits_a_model_to_its_distortions(tmp_path):
    if not CIFAR10.is_file():
        pytest.skip("CIFAR-10 not available")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(10)(x)).save(tmp_path / "tiny.keras")
    out = tmp_path / "out"
    argv = ["--model", f"a={tmp_path / 'tiny.keras'}", "--model", f"b={tmp_path / 'tiny.keras'}",
            "--distortions-of", "b=awgn", "--data", str(CIFAR10), "--quick", "--out", str(out)]
    assert transfer_svm.main(argv) == 0
    results = json.loads((out / "transfer_svm.json").read_text())["results"]
    assert set(results["a"]) == {"clean", "gaussian_blur", "awgn"}
    assert set(results["b"]) == {"clean", "awgn"}
    assert len(list((out / "features").glob("b_*.npy"))) == 2
    assert "| b | " in (out / "transfer_svm.md").read_text()
    # The same labels at another image count would reuse the wrong features: refused.
    assert transfer_svm.main(argv + ["--overwrite", "--seed", "1"]) == 2
    assert transfer_svm.main(argv[:4] + ["--distortions-of", "b=jpeg"] + argv[6:]) == 2

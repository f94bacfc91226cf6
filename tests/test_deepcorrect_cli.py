"""The `deepcorrect` command line end to end on real CIFAR-10 images, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import CIFAR10, REPO
from tests.test_training import small_cnn


def cli(*args):
    return subprocess.run([sys.executable, "-m", "deepcorrect", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, cifar10_small):
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(cifar10_small[0].astype("float32"), cifar10_small[1], epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("cli") / "base.keras"
    model.save(path)
    return path


@pytest.mark.slow  # 35 s; tests/test_cli_session.py runs the same session fast
def test_rank_wrap_finetune_train_evaluate_export(tmp_path, base_model):
    if not CIFAR10.is_file():
        pytest.skip("CIFAR-10 not found")
    ranking = tmp_path / "ranking.json"
    proc = cli("rank", "--model", base_model, "--data", CIFAR10, "--split", "test", "--limit", 64,
               "--distortion", "awgn", "--levels", 20, 40, "--layers", "conv1", "--out", ranking)
    assert proc.returncode == 0, proc.stderr[-1500:]
    saved = json.loads(ranking.read_text())
    assert "conv1" in json.dumps(saved)

    wrapped = tmp_path / "wrapped.keras"
    proc = cli("wrap", "--model", base_model, "--ranking", ranking, "--beta", 0.5, "--out", wrapped)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "trainable parameters" in proc.stdout
    after_bn = tmp_path / "after_bn.keras"
    proc = cli("wrap", "--model", base_model, "--ranking", ranking, "--site", "batch_norm",
               "--out", after_bn)
    assert proc.returncode == 0, proc.stderr[-1500:]
    unit = keras.models.load_model(after_bn, safe_mode=True).get_layer("conv1_unit")
    assert unit.input._keras_history.operation.name == "bn1"

    tuned = tmp_path / "tuned.keras"
    assert cli("finetune", "--model", base_model, "--k", 1, "--out", tuned).returncode == 0
    loaded = keras.models.load_model(tuned, safe_mode=True)
    assert loaded.get_layer("conv1").trainable and not loaded.get_layer("conv2").trainable

    corrected = tmp_path / "corrected.keras"
    proc = cli("train", "--model", wrapped, "--data", CIFAR10, "--limit", 128, "--distortion", "awgn",
               "--levels", 20, 40, "--recipe", "cpu_quick", "--epochs", 1, "--batch-size", 32,
               "--checkpoint-dir", tmp_path / "run", "--out", corrected)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert (tmp_path / "run" / "model.keras").exists()

    proc = cli("evaluate", "--model", base_model, "--model", corrected, "--data", CIFAR10,
               "--limit", 64, "--distortion", "awgn", "--levels", 20, "--out", tmp_path / "eval")
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "| corrected |" in proc.stdout and "| base |" in proc.stdout

    proc = cli("export", "--model", corrected, "--out", tmp_path / "serving")
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert (tmp_path / "serving" / "saved_model.pb").exists()


@pytest.mark.parametrize("args, fragment", [
    (["wrap", "--model", "nope.keras", "--ranking", "r.json", "--out", "w.keras"], "not found"),
    (["finetune", "--model", "ResNet9", "--k", "1", "--out", "w.keras"], "--model must be"),
    (["rank", "--model", "nope.keras", "--data", "x.npz", "--distortion", "fog", "--out", "r.json"],
     "name must be one of"),
])
def test_errors_are_one_line(args, fragment):
    proc = cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr.strip().splitlines()[-1]


def test_ranking_for_another_model_is_refused(tmp_path, base_model, cifar10_small):
    import deepcorrect

    other = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, name="c"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    r = deepcorrect.rank(other, cifar10_small[0][:16], cifar10_small[1][:16], "awgn", [20.0],
                         progress=False)
    r.save(tmp_path / "other.json")
    proc = cli("wrap", "--model", base_model, "--ranking", tmp_path / "other.json", "--out",
               tmp_path / "w.keras")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error:" in proc.stderr


def test_existing_output_is_refused(tmp_path, base_model):
    out = tmp_path / "exists.keras"
    out.write_text("keep me")
    proc = cli("finetune", "--model", base_model, "--k", "all", "--out", out)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert out.read_text() == "keep me"


def test_models_saved_from_an_application_take_pixels(tmp_path):
    """wrap/finetune of a keras.applications model save it with its preprocessing inside."""
    import keras

    import deepcorrect
    from deepcorrect.cli import taking_pixels
    from robustkit.data import preprocessor

    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35)
    wrapped = deepcorrect.wrap(model, {"Conv1": np.arange(16)}, layers=["Conv1"])
    taking_pixels(wrapped, "MobileNetV2", preprocessor("MobileNetV2")).save(tmp_path / "w.keras")
    loaded = keras.models.load_model(tmp_path / "w.keras", safe_mode=True)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x / 127.5 - 1.0)), atol=1e-6)
    assert list(deepcorrect.correction_units(loaded)) == ["Conv1"]
    assert len(loaded.trainable_weights) == len(wrapped.trainable_weights)
    assert taking_pixels(wrapped, "w", None) is wrapped  # a .keras file is left as it is

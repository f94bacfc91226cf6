"""Tests of the `qrnet` command line (train | restore | evaluate | export)."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from qrnet.cli import main

SIZE = 16


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("qrnet_cli")
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (24, SIZE, SIZE, 3)).astype("uint8"),
        "y_train": rng.integers(0, 3, 24).astype("uint8"),
        "x_test": rng.integers(0, 256, (6, SIZE, SIZE, 3)).astype("uint8"),
        "y_test": rng.integers(0, 3, 6).astype("uint8"),
    }
    np.savez(root / "data.npz", **arrays)
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="tiny",
    )
    classifier.save(root / "clf.keras")
    code = main(
        [
            "train", "--data", str(root / "data.npz"), "--classifier", str(root / "clf.keras"),
            "--preprocessing", "unit", "--distortion", "awgn=20,40", "--distortion",
            "gaussian_blur=1", "--preset", "qrnet_tiny", "--epochs", "2", "--pretrain-epochs", "1",
            "--batch-size", "8", "--val-fraction", "0.25", "--verbose", "0", "--out", str(root / "run"),
        ]
    )
    assert code == 0
    return root


def test_train_writes_a_loadable_restorer_and_history(workspace):
    restorer = keras.models.load_model(workspace / "run" / "restorer.keras", safe_mode=True)
    assert restorer.depth == 2 and restorer.base_width == 4
    history = json.loads((workspace / "run" / "history.json").read_text())
    assert history["mode"] == "qrnet" and history["lambdas"] == [0.01]
    assert len(history["history"]["val_loss"]) == 2
    assert {"loss", "l1", "ce_clf", "acc_clf", "val_acc_clf"} <= set(history["history"])


def test_train_refuses_to_overwrite(workspace, capsys):
    code = main(["train", "--data", str(workspace / "data.npz"), "--out", str(workspace / "run"), "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "output exists" in err


def test_restore_npz_and_image_folder(workspace, capsys):
    model = str(workspace / "run" / "restorer.keras")
    assert main(["restore", "--model", model, "--input", str(workspace / "data.npz"),
                 "--key", "x_test", "--output", str(workspace / "restored.npz")]) == 0
    restorer = keras.models.load_model(model, safe_mode=True)
    with np.load(workspace / "data.npz") as data:
        expected = np.asarray(restorer(data["x_test"].astype("float32"), training=False))
    with np.load(workspace / "restored.npz") as data:
        restored = data["x"]
    assert restored.shape == expected.shape and restored.dtype == np.uint8
    assert np.abs(restored.astype("float32") - expected).max() <= 0.5 + 1e-3

    folder = workspace / "photos"
    folder.mkdir()
    Image.fromarray(np.full((13, 21, 3), 90, "uint8")).save(folder / "a.png")
    assert main(["restore", "--model", model, "--input", str(folder), "--output", str(workspace / "out")]) == 0
    assert np.asarray(Image.open(workspace / "out" / "a.png")).shape == (13, 21, 3)


def test_evaluate_prints_tables_and_writes_rows(workspace, capsys):
    out = workspace / "eval.json"
    code = main(
        [
            "evaluate", "--data", str(workspace / "data.npz"), "--classifier", str(workspace / "clf.keras"),
            "--preprocessing", "unit", "--restorer", f"qrnet={workspace / 'run' / 'restorer.keras'}",
            "--distortion", "awgn=30", "--out", str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| distortion | level | classifier | qrnet |" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [(r["distortion"], r["method"]) for r in rows] == [
        ("clean", "classifier"), ("clean", "qrnet"), ("awgn", "classifier"), ("awgn", "qrnet")
    ]
    assert rows[0]["psnr"] is None  # Clean images against themselves: infinite PSNR.
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n"] == 6 for r in rows)


def test_export_writes_savedmodels_that_match_keras(workspace):
    out = workspace / "export"
    model = str(workspace / "run" / "restorer.keras")
    assert main(["export", "--model", model, "--classifier", str(workspace / "clf.keras"),
                 "--preprocessing", "unit", "--out", str(out)]) == 0
    restorer = keras.models.load_model(model, safe_mode=True)
    classifier = keras.models.load_model(workspace / "clf.keras", safe_mode=True)
    images = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    restored = np.asarray(restorer(images, training=False))
    exported = tf.saved_model.load(str(out / "restorer"))
    np.testing.assert_allclose(np.asarray(exported.serve(images)), restored, atol=1e-3)
    combined = tf.saved_model.load(str(out / "restorer_classifier"))
    expected = np.asarray(classifier(restored / 255.0))
    np.testing.assert_allclose(np.asarray(combined.serve(images)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["restore", "--model", "missing.keras", "--input", "x.npz", "--output", "y.npz"], "model file not found"),
        (["train", "--data", "nowhere.npz", "--out", "o"], "--data: path does not exist"),
        (["train", "--data", "x.npz", "--out", "o", "--distortion", "awgn"], "expected NAME=LEVEL"),
        (["evaluate", "--data", "x.npz"], "the following arguments are required: --classifier"),
    ],
)
def test_errors_are_one_line_without_traceback(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_unknown_distortion_is_one_line_error(workspace, capsys):
    code = main(["evaluate", "--data", str(workspace / "data.npz"), "--classifier",
                 str(workspace / "clf.keras"), "--distortion", "fog=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--distortion names must be among" in err


def test_python_dash_m_qrnet_help():
    result = subprocess.run([sys.executable, "-m", "qrnet", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "train" in result.stdout and "export" in result.stdout

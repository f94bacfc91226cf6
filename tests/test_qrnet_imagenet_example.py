"""examples/qrnet_imagenet.py --quick on real photos with a tiny CNN standing in for MobileNetV2."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys

import keras
import numpy as np
import pytest

from studies.imagenet import split_indices
from tests.conftest import IMAGENET_SAMPLES, REPO, center_crop


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


experiment = _load("qrnet_imagenet")


def tiny_cnn() -> keras.Model:
    """A small classifier on 32x32 photos that reads 0..255 pixels (1,000 classes)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1000, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not IMAGENET_SAMPLES.is_dir():
        pytest.skip(f"real photos not found at {IMAGENET_SAMPLES}")
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("qrnet_imagenet")
    model_path = folder / "tiny.keras"
    # Fitted to the 16 photos (read here, independently of the example), so that its
    # accuracies are not all zero.
    with open(IMAGENET_SAMPLES / "labels.csv", newline="") as f:
        table = list(csv.DictReader(f))[:16]
    x = np.stack([center_crop(IMAGENET_SAMPLES / row["file"], 32) for row in table])
    y = np.array([int(row["label"]) for row in table])
    classifier = tiny_cnn()
    classifier.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    classifier.fit(x.astype("float32"), y, epochs=40, batch_size=16, verbose=0)
    classifier.save(model_path)
    out = folder / "out"
    args = ["--quick", "--model", str(model_path), "--data", str(IMAGENET_SAMPLES),
            "--out", str(out), "--verbose", "0"]
    assert experiment.main(args) == 0
    return model_path, out, args


def test_split_is_the_deepcorrect_split(run):
    _, out, _ = run
    split = json.loads((out / "split.json").read_text())
    train, test = split_indices(16, 0.3, seed=0)
    assert split["train"] == train.tolist() and split["test"] == test.tolist()
    assert not set(split["train_files"]) & set(split["test_files"])
    assert len(split["train_files"]) + len(split["test_files"]) == 16


def test_rows_match_an_independent_evaluation(run):
    model_path, out, _ = run
    rows = json.loads((out / "rows.json").read_text())
    cfg = experiment.CONFIGS["quick"]
    expected = [(d, lv) for d, lv in experiment.conditions(cfg) for _ in ("c", "r", "q")]
    assert [(r["distortion"], r["level"]) for r in rows] == expected
    assert {r["method"] for r in rows} == {"classifier", "recnet", "qrnet"}
    split = json.loads((out / "split.json").read_text())
    with np.load(out / "photos.npz") as f:
        images = f["images"][split["test"]].astype("float32")
        labels = f["labels"][split["test"]]
    classifier = keras.models.load_model(model_path, safe_mode=True)
    for method in ("classifier", "recnet", "qrnet"):
        seen = images
        if method != "classifier":
            restorer = keras.models.load_model(out / f"{method}.keras", safe_mode=True)
            assert restorer.output_shape == (None, 32, 32, 3)
            seen = np.asarray(restorer(images, training=False))
        scores = np.asarray(classifier(seen))
        best5 = np.argsort(scores, axis=-1)[:, ::-1][:, :5]
        row = next(r for r in rows if r["distortion"] == "clean" and r["method"] == method)
        assert row["n"] == len(labels) == 5
        assert row["accuracy"] == pytest.approx(np.mean(scores.argmax(-1) == labels))
        assert row["top5"] == pytest.approx(np.mean((best5 == labels[:, None]).any(-1)))
        if method == "classifier":
            assert row["psnr"] is None  # the clean photos themselves
        else:
            mse = np.mean((seen - images) ** 2, axis=(1, 2, 3))
            assert row["psnr"] == pytest.approx(np.mean(10 * np.log10(255.0**2 / mse)), rel=1e-4)
    clean_top1 = next(r["accuracy"] for r in rows
                      if r["distortion"] == "clean" and r["method"] == "classifier")
    assert clean_top1 > 0.5  # the classifier was fitted to these photos
    for r in rows:
        assert 0.0 <= r["accuracy"] <= r["top5"] <= 1.0
    # Noise makes the photos themselves worse: PSNR falls as sigma grows.
    noisy = [r["psnr"] for r in rows if r["distortion"] == "awgn" and r["method"] == "classifier"]
    assert noisy[0] > noisy[1] > 0
    # RecNet trains without the classifier: its log has no cross-entropy; QRNet's has one.
    logs = {m: json.loads((out / f"{m}.train.json").read_text()) for m in ("recnet", "qrnet")}
    assert "ce_classifier" not in logs["recnet"]["history"]
    assert len(logs["qrnet"]["history"]["ce_classifier"]) == logs["qrnet"]["epochs"] == 1


def test_rerun_reuses_finished_stages_and_recomputes_a_lost_one(run):
    _, out, args = run
    restorer_time = (out / "qrnet.keras").stat().st_mtime_ns
    rows = (out / "rows.json").read_text()
    lost = out / "eval" / "gaussian_blur_2.json"
    lost.unlink()
    assert experiment.main(args) == 0
    assert (out / "qrnet.keras").stat().st_mtime_ns == restorer_time
    assert lost.is_file()
    assert (out / "rows.json").read_text() == rows
    assert "## Top-5" in (out / "report.md").read_text()
    for figure in ("qrnet_imagenet_accuracy.png", "qrnet_imagenet_samples.png"):
        assert (out / figure).stat().st_size > 1000


def test_help_and_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(["--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out
    assert experiment.main(["--quick", "--data", str(tmp_path / "missing"),
                            "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --data") and "\n" not in err

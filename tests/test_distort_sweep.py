"""Sweeps, metrics, loaders and the `distort` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import distort
from distort import metrics
from robustkit import data
from distort.sweep import SweepResult, score, sweep
from tests.conftest import IMAGENET_SAMPLES, REPO


def tiny_classifier(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])


def test_score_matches_keras_metrics():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=[50, 10])
    labels = rng.integers(0, 10, 50)
    probs = tf.nn.softmax(logits.astype(np.float32)).numpy()
    s = score(probs, labels)
    top1 = keras.metrics.sparse_top_k_categorical_accuracy(labels, probs, k=1).numpy().mean()
    top5 = keras.metrics.sparse_top_k_categorical_accuracy(labels, probs, k=5).numpy().mean()
    ce = keras.losses.sparse_categorical_crossentropy(labels, probs).numpy().mean()
    assert s["top1"] / 50 == pytest.approx(top1)
    assert s["top5"] / 50 == pytest.approx(top5)
    assert s["cross_entropy"] / 50 == pytest.approx(ce, rel=1e-5)
    assert s["confidence"] / 50 == pytest.approx(probs[np.arange(50), labels].mean())
    assert s["entropy"] / 50 == pytest.approx((-probs * np.log(probs)).sum(1).mean())
    # Logits are recognised and softmaxed.
    assert score(logits, labels)["top1"] == s["top1"]


def test_sweep_equals_direct_evaluation(cifar10_small):
    x, y = cifar10_small[0][:40], cifar10_small[1][:40]
    model = tiny_classifier()
    result = sweep({"net": model}, x, y, {"gaussian_blur": [1.0, 2.0]}, batch_size=16,
                   progress=False)
    assert [r["level"] for r in result.rows] == [None, 1.0, 2.0]
    for r in result.rows:
        xi = x if r["level"] is None else distort.gaussian_blur(x, r["level"]).numpy()
        probs = model.predict(xi.astype(np.float32), verbose=0)
        assert r["top1"] == pytest.approx((probs.argmax(1) == y).mean())
        assert r["n"] == 40


def test_sweep_resizes_distorted_images_for_a_smaller_model(cifar10_small):
    x, y = cifar10_small[0][:24], cifar10_small[1][:24]
    big, small = tiny_classifier(0), keras.Sequential([
        keras.Input((20, 20, 3)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    result = sweep({"big": big, "small": small}, x, y, {"gaussian_blur": [2.0]}, progress=False)
    blurred = distort.gaussian_blur(x, 2.0).numpy().astype(np.float32)
    resized = tf.image.resize(blurred, (20, 20), method="bilinear", antialias=True)
    probs = small.predict(resized, verbose=0)
    row = result.select("small", "gaussian_blur")[-1]
    assert row["confidence"] == pytest.approx(probs[np.arange(24), y].mean(), rel=1e-5)
    assert result.select("big", "gaussian_blur")[-1]["n"] == 24


def test_sweep_resumes_from_checkpoint_without_recomputing(tmp_path, cifar10_small):
    x, y = cifar10_small[0][:20], cifar10_small[1][:20]
    model = tiny_classifier()
    ck = tmp_path / "sweep.json"
    full = sweep({"net": model}, x, y, {"awgn": [10, 20, 30]}, seed=3, progress=False)
    sweep({"net": model}, x, y, {"awgn": [10, 20]}, seed=3, checkpoint=ck, progress=False)

    calls = []

    class Counting(keras.Model):
        def call(self, inputs, training=False):
            calls.append(1)
            return model(inputs, training=training)

    resumed = sweep({"net": Counting()}, x, y, {"awgn": [10, 20, 30]}, seed=3, checkpoint=ck,
                    progress=False)
    assert len(calls) == 1  # only the level 30 batch ran
    assert [r["top1"] for r in resumed.rows] == [r["top1"] for r in full.rows]
    assert json.loads(ck.read_text())["rows"][-1]["level"] == 30.0


def test_sweep_outputs(tmp_path, cifar10_small):
    x, y = cifar10_small[0][:16], cifar10_small[1][:16]
    result = sweep({"a": tiny_classifier(0), "b": tiny_classifier(1)}, x, y, ["awgn", "jpeg"],
                   preset="dodge_karam", progress=False)
    assert result.models() == ["a", "b"] and result.distortions() == ["awgn", "jpeg"]
    result.to_csv(tmp_path / "s.csv")
    result.to_json(tmp_path / "s.json")
    result.plot(tmp_path / "s.png")
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 2 * (11 + 11)
    assert SweepResult.from_json(tmp_path / "s.json").rows == json.loads(json.dumps(result.rows))
    assert Image.open(tmp_path / "s.png").size[0] > 200
    assert "| a |" in result.to_markdown()
    table = result.to_markdown(("top1", "confidence")).splitlines()
    awgn10 = result.select("b", "awgn")[1]
    row = next(line for line in table if line.startswith("| b confidence |"))
    assert row.split(" | ")[2] == f"{awgn10['confidence']:.3f}"


def test_psnr_and_ssim_against_numpy(photos):
    noisy = distort.awgn(photos, 20, seed=0).numpy()
    mse = ((noisy.astype(float) - photos) ** 2).reshape(4, -1).mean(1)
    np.testing.assert_allclose(metrics.psnr(noisy, photos).numpy(), 10 * np.log10(255**2 / mse),
                               rtol=1e-4)
    from skimage.metrics import structural_similarity

    ref = [structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255)
           for a, b in zip(noisy, photos)]
    np.testing.assert_allclose(metrics.ssim(noisy, photos).numpy(), ref, atol=0.02)
    np.testing.assert_allclose(metrics.ssim(photos, photos).numpy(), 1.0, atol=1e-5)


def test_fashion_mnist_loader():
    if not data.FASHION_MNIST_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    (xt, yt), (xv, yv) = data.load_fashion_mnist()
    assert xt.shape == (60000, 28, 28, 1) and xv.shape == (10000, 28, 28, 1)
    assert xt.dtype == np.uint8 and set(np.unique(yt)) == set(range(10))
    assert np.bincount(yv).tolist() == [1000] * 10


def test_cifar10_loader(cifar10_small):
    from tests.conftest import CIFAR10

    (xt, yt), (xv, yv) = data.load_cifar10(CIFAR10)
    assert xt.shape == (50000, 32, 32, 3) and yt.shape == (50000,)
    np.testing.assert_array_equal(xv[:512], cifar10_small[0])


def test_image_folder_with_labels_csv_skips_bad_files(tmp_path):
    if not IMAGENET_SAMPLES.is_dir():
        pytest.skip("imagenet-samples not found")
    rows = ["file,wnid,label,name"]
    for i, f in enumerate(sorted(IMAGENET_SAMPLES.glob("*.jpg"))[:3]):
        (tmp_path / f.name).write_bytes(f.read_bytes())
        rows.append(f"{f.name},x,{i},c{i}")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    good = sorted(IMAGENET_SAMPLES.glob("*.jpg"))[3].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 3])
    rows += ["empty.jpg,x,1,c1", "notes.txt,x,2,c2", "cut.jpg,x,0,c0"]
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    with pytest.warns(UserWarning, match="skipped 3"):
        folder = data.load_image_folder(tmp_path, size=64)
    assert folder.images.shape == (3, 64, 64, 3)
    assert folder.labels.tolist() == [0, 1, 2]
    assert len(folder.skipped) == 3
    with pytest.raises(ValueError, match="empty"):
        data.load_image_folder(tmp_path, size=64, on_bad_file="raise")


def test_image_folder_class_subfolders_and_grayscale_rgba(tmp_path):
    for cls, mode in (("cats", "L"), ("dogs", "RGBA")):
        (tmp_path / cls).mkdir()
        Image.new(mode, (40, 30)).save(tmp_path / cls / "a.png")
    folder = data.load_image_folder(tmp_path, size=16)
    assert folder.class_names == ["cats", "dogs"]
    assert folder.images.shape == (2, 16, 16, 3)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "distort", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


@pytest.mark.parametrize("args, fragment", [
    (["apply", "missing.jpg", "o.png", "--name", "awgn", "--level", "5"], "does not exist"),
    (["apply", "README.md", "o.png", "--name", "fog", "--level", "5"], "name must be one of"),
    (["apply", "pyproject.toml", "o.png", "--name", "awgn", "--level", "5"], "not a readable image"),
])
def test_cli_errors_are_one_line(args, fragment):
    proc = run_cli(*args)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and fragment in last
    assert "Traceback" not in proc.stderr


def test_cli_apply_writes_the_same_pixels_as_the_api(tmp_path, photos):
    src = tmp_path / "in.png"
    Image.fromarray(photos[0]).save(src)
    out = tmp_path / "out.png"
    proc = run_cli("apply", str(src), str(out), "--name", "awgn", "--level", "25", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(out)),
                                  distort.awgn(photos[0], 25.0, seed=7).numpy())
    again = run_cli("apply", str(src), str(out), "--name", "awgn", "--level", "25")
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_sweep_refuses_a_checkpoint_from_other_settings(tmp_path, cifar10_small):
    x, y = cifar10_small[0][:8], cifar10_small[1][:8]
    ck = tmp_path / "sweep.json"
    sweep({"net": tiny_classifier()}, x, y, {"awgn": [10]}, seed=1, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="seed=1"):
        sweep({"net": tiny_classifier()}, x, y, {"awgn": [10]}, seed=2, checkpoint=ck,
              progress=False)


@pytest.mark.parametrize("bad", [10, 12, -1])
def test_sweep_refuses_labels_outside_the_class_range(tmp_path, bad):
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")], name="ten")
    x = np.zeros([4, 8, 8, 3], np.uint8)
    y = np.array([0, 9, bad, 3])
    ck = tmp_path / "sweep.json"
    with pytest.raises(ValueError) as info:
        sweep({"net": model}, x, y, {"awgn": [10.0]}, checkpoint=ck, progress=False)
    assert str(info.value) == (f"labels must be class indices in [0, 9] (model 'ten' has 10 "
                               f"outputs). Received: 1 labels out of range: [{bad}]")
    assert not ck.exists()  # refused before any level is evaluated
    # Labels at both ends of the range are accepted.
    assert sweep({"net": model}, x, y.clip(0, 9), {"awgn": [10.0]}, progress=False).rows


def test_sweep_refuses_labels_outside_the_range_of_a_model_without_output_shape():
    def three_classes(images, training=False):  # a plain function: its class count shows at run time
        return tf.nn.softmax(tf.zeros([tf.shape(images)[0], 3]))

    x = np.zeros([2, 8, 8, 3], np.uint8)
    with pytest.raises(ValueError, match=r"^labels must be class indices in \[0, 2\] \(the model "
                                         r"has 3 outputs\)\. Received: labels out of range: \[3\]$"):
        sweep({"f": three_classes}, x, np.array([0, 3]), {"awgn": [10.0]}, progress=False)
    rows = sweep({"f": three_classes}, x, np.array([0, 2]), {"awgn": [10.0]}, progress=False).rows
    assert [r["confidence"] for r in rows] == pytest.approx([1 / 3, 1 / 3])


def test_score_refuses_labels_outside_the_class_range():
    probs = np.full([2, 4], 0.25)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\]"):
        score(probs, [1, 4])
    with pytest.raises(ValueError, match="one label per row"):
        score(probs, [1])

"""`distort.benchmark` and `distort benchmark`: errors against a direct evaluation, resuming, trees."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import distort
from distort import corruption_metrics as cm
from distort import imagenet_c
from distort.cli import main
from distort.corruption_benchmark import BenchmarkResult


def tiny_model() -> keras.Model:
    """Colour means -> 3 classes, fixed weights (no training)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(3, activation="softmax")
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    dense.set_weights([np.array([[0.05, -0.05, 0.0], [-0.05, 0.05, 0.0], [0.0, 0.0, 0.02]],
                                np.float32), np.array([0.0, 0.0, -1.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, [12, 32, 32, 3]).astype(np.uint8)
    x[:4, ..., 0] //= 4  # some images lean to each class
    x[4:8, ..., 1] //= 4
    y = rng.integers(0, 3, 12)
    return x, y


def direct_errors(model, x, y, corruption, severity, seed, batch_size):
    wrong = 0
    for b, start in enumerate(range(0, len(x), batch_size)):
        batch = x[start : start + batch_size]
        fn = imagenet_c.corruption(corruption)
        kwargs = {"seed": tf.constant([seed, b], tf.int64)} if imagenet_c.is_random(corruption) else {}
        z = fn(batch, severity, **kwargs)
        pred = np.argmax(model(tf.cast(z, tf.float32)).numpy(), -1)
        wrong += int((pred != y[start : start + batch_size]).sum())
    return wrong / len(x)


def test_errors_match_a_direct_evaluation_and_the_metrics(data):
    x, y = data
    model = tiny_model()
    baseline = cm.baseline_from_errors({"fog": 0.8, "contrast": 0.9}, clean_error=0.5, name="ref")
    result = distort.benchmark(model, x, y, ["fog", "contrast"], severities=[1, 5], baseline=baseline,
                               batch_size=5, seed=3, progress=False, name="tiny")
    errors = result.errors()
    assert list(errors) == ["fog", "contrast"]
    for c in errors:
        want = [direct_errors(model, x, y, c, s, 3, 5) for s in (1, 5)]
        assert errors[c] == pytest.approx(want)
    clean = float((np.argmax(model(x.astype(np.float32)).numpy(), -1) != y).mean())
    assert result.clean_error() == pytest.approx(clean)
    assert result.summary["ce"] == pytest.approx(cm.corruption_errors(errors, baseline))
    assert result.summary["mce"] == pytest.approx(cm.mce(errors, baseline))
    assert result.summary["relative_mce"] == pytest.approx(cm.relative_mce(errors, clean, baseline))
    table = result.to_markdown()
    assert "| fog |" in table and "mCE:" in table and "relative mCE:" in table


def test_alexnet_summary_on_a_subset_says_so(data, tmp_path):
    x, y = data
    result = distort.benchmark(tiny_model(), x, y, ["pixelate"], severities=[2], progress=False)
    assert result.summary["baseline"] == "AlexNet" and result.summary["complete"] is False
    assert result.summary["mce"] == pytest.approx(result.errors()["pixelate"][0] / 0.717840)
    assert "over 1 corruptions only" in result.to_markdown()
    result.plot(tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000
    result.to_json(tmp_path / "b.json")
    assert BenchmarkResult.from_json(tmp_path / "b.json").errors() == result.errors()


class CountingModel:
    """A model that counts its calls (and can refuse them)."""

    def __init__(self, model, refuse=False):
        self.model, self.refuse, self.calls = model, refuse, 0
        self.input_shape = model.input_shape

    def __call__(self, x, training=False):
        if self.refuse:
            raise AssertionError("called although every severity was kept")
        self.calls += 1
        return self.model(x, training=training)


def test_a_checkpoint_resumes_without_recomputing(data, tmp_path):
    x, y = data
    path = tmp_path / "rows.json"
    first = distort.benchmark(tiny_model(), x, y, ["fog"], severities=[1, 2], baseline=None,
                              checkpoint=path, progress=False, batch_size=12)
    again = distort.benchmark(CountingModel(tiny_model(), refuse=True), x, y, ["fog"],
                              severities=[1, 2], baseline=None, checkpoint=path, progress=False,
                              batch_size=12)
    assert again.rows == first.rows
    # One severity lost: only it is computed again, and gives the same numbers.
    saved = json.loads(path.read_text())
    saved["rows"] = [r for r in saved["rows"] if r["level"] != 2.0]
    path.write_text(json.dumps(saved))
    counting = CountingModel(tiny_model())
    third = distort.benchmark(counting, x, y, ["fog"], severities=[1, 2], baseline=None,
                              checkpoint=path, progress=False, batch_size=12)
    assert counting.calls == 1 and third.errors() == first.errors()
    with pytest.raises(ValueError, match="checkpoint .* was made with seed"):
        distort.benchmark(tiny_model(), x, y, ["fog"], severities=[1, 2], seed=9,
                          checkpoint=path, progress=False)


def make_tree(root, model):
    """An ImageNet-C tree of fog at severities 1 and 2; labels from the model's predictions."""
    rng = np.random.default_rng(1)
    for s in (1, 2):
        for k, wnid in enumerate(("n01440764", "n01443537", "n01484850")):
            folder = root / "weather" / "fog" / str(s) / wnid
            folder.mkdir(parents=True)
            for j in range(2):
                Image.fromarray(rng.integers(0, 256, [32, 32, 3], dtype=np.uint8)).save(
                    folder / f"ILSVRC2012_val_{k}{j}.png")
    return root


def test_an_imagenet_c_tree_and_cifar_c_files(tmp_path, data):
    model = tiny_model()
    root = make_tree(tmp_path / "tree", model)
    result = distort.benchmark(model, corruptions=["fog"], severities=[1, 2], source="imagenet_c",
                               data=root, baseline=None, progress=False)
    for s in (1, 2):
        folder = distort.c_datasets.load_imagenet_c(root, "fog", s)
        pred = np.argmax(model(folder.images.astype(np.float32)).numpy(), -1)
        assert result.errors()["fog"][s - 1] == pytest.approx(float((pred != folder.labels).mean()))
    assert result.clean_error() is None
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    x, y = data
    np.save(cifar / "fog.npy", np.concatenate([x] * 5))
    np.save(cifar / "labels.npy", np.concatenate([y] * 5))
    result = distort.benchmark(model, x, y, ["fog"], severities=[3], source="cifar_c", data=cifar,
                               baseline=None, progress=False)
    # The "corrupted" files are the clean images: the same error.
    assert result.errors()["fog"] == [pytest.approx(result.clean_error())]


def test_bad_arguments(data):
    x, y = data
    with pytest.raises(ValueError, match="severities must be distinct integers in 1..5"):
        distort.benchmark(tiny_model(), x, y, ["fog"], severities=[0], progress=False)
    with pytest.raises(ValueError, match="corruption must be one of"):
        distort.benchmark(tiny_model(), x, y, ["smoke"], progress=False)
    with pytest.raises(ValueError, match="corruptions must be one of"):
        distort.benchmark(tiny_model(), x, y, "imagenet", progress=False)
    with pytest.raises(ValueError, match="source must be one of"):
        distort.benchmark(tiny_model(), x, y, ["fog"], source="web", progress=False)
    with pytest.raises(ValueError, match="data must be the dataset's folder"):
        distort.benchmark(tiny_model(), x, y, ["fog"], source="imagenet_c", progress=False)


def test_command_line(tmp_path, data, capsys):
    x, y = data
    model_path = tmp_path / "tiny.keras"
    tiny_model().save(model_path)
    npz = tmp_path / "c.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=x, y_test=y)
    out = tmp_path / "out"
    argv = ["benchmark", "--model", str(model_path), "--data", str(npz), "--corruptions", "fog",
            "contrast", "--severities", "1", "3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| contrast |" in printed and "mCE:" in printed
    for name in ("benchmark.json", "benchmark.md", "benchmark.png", "benchmark-rows.json"):
        assert (out / name).is_file()
    result = BenchmarkResult.from_json(out / "benchmark.json")
    assert result.summary["baseline"] == "AlexNet" and list(result.errors()) == ["fog", "contrast"]
    # Another model's benchmark as the baseline: this one against itself scores 1.
    assert main(argv[:-1] + [str(tmp_path / "self"), "--baseline", str(out / "benchmark.json")]) == 0
    again = BenchmarkResult.from_json(tmp_path / "self" / "benchmark.json")
    assert again.summary["mce"] == pytest.approx(1.0)
    capsys.readouterr()
    for bad, message in ((["--severities", "7"], "severities"), (["--corruptions", "smoke"], "smoke"),
                         (["--baseline", "nowhere.json"], "--baseline")):
        assert main(argv[:-1] + [str(tmp_path / "bad")] + bad) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and len(err.splitlines()) == 1

"""examples/imagenet_deepcorrect.py and its figures script, --quick, on a tiny CNN and real photos."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys

import keras
import numpy as np
import pytest

from deepcorrect.costs import multiply_adds
from studies.imagenet import split_indices
from tests.conftest import IMAGENET_SAMPLES, REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


experiment = _load("imagenet_deepcorrect")
figures = _load("imagenet_deepcorrect_figures")


def tiny_cnn() -> keras.Model:
    """MobileNetV2's first block in miniature: conv, depthwise, linear projection (0..255 input)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.ReLU(6.0, name="conv1_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(6.0, name="dw_relu")(x)
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="project")(x)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="conv2_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not IMAGENET_SAMPLES.is_dir():
        pytest.skip(f"real photos not found at {IMAGENET_SAMPLES}")
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("imagenet_deepcorrect")
    model_path = folder / "tiny.keras"
    tiny_cnn().save(model_path)
    out = folder / "out"
    args = ["--quick", "--model", str(model_path), "--data", str(IMAGENET_SAMPLES),
            "--out", str(out), "--distortions", "gaussian_blur", "--verbose", "0"]
    assert experiment.main(args) == 0
    assert figures.main(["--out", str(out), "--model", str(model_path),
                         "--hamming-photos", "4"]) == 0
    return model_path, out, args


def test_split_is_disjoint_complete_and_seeded():
    train, test = split_indices(1000, 0.3, seed=0)
    assert (len(train), len(test)) == (700, 300)
    assert not set(train) & set(test)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(1000))
    again = split_indices(1000, 0.3, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, split_indices(1000, 0.3, seed=1)[1])


def test_split_file_and_photos_match_labels_csv(run):
    _, out, _ = run
    split = json.loads((out / "split.json").read_text())
    train, test = split_indices(12, 0.3, seed=0)
    assert split["train"] == train.tolist() and split["test"] == test.tolist()
    with open(IMAGENET_SAMPLES / "labels.csv", newline="") as f:
        table = {row["file"]: int(row["label"]) for row in csv.DictReader(f)}
    with np.load(out / "photos.npz") as f:
        files, labels = [str(s) for s in f["files"]], f["labels"]
    assert [files[i] for i in split["test"]] == split["test_files"]
    assert [table[name] for name in files] == labels.tolist()


def test_baseline_rows_equal_a_direct_evaluation(run):
    from distort import registry

    model_path, out, _ = run
    model = keras.models.load_model(model_path)
    split = json.loads((out / "split.json").read_text())
    with np.load(out / "photos.npz") as f:
        x, y = f["images"][split["test"]].astype("float32"), f["labels"][split["test"]]
    rows = json.loads((out / "results.json").read_text())["accuracy"]
    for condition, images in (("clean", x),
                              ("blur_2", np.asarray(registry.apply(x, "gaussian_blur", 2.0)))):
        p = model.predict(images, verbose=0)
        top5 = np.argsort(-p, axis=-1)[:, :5]
        with np.load(out / "eval" / f"{condition}.npz") as f:
            np.testing.assert_array_equal(f["baseline_top5"], top5)
        level = 0.0 if condition == "clean" else 2.0
        row = next(r for r in rows if r["model"] == "baseline" and r["level"] == level)
        assert row["images"] == len(y) == 4
        assert row["top1"] == pytest.approx(np.mean(p.argmax(-1) == y))
        assert row["top5"] == pytest.approx(np.mean((top5 == y[:, None]).any(-1)))


def test_parameter_and_multiply_add_counts(run):
    _, out, _ = run
    costs = {r["model"]: r for r in json.loads((out / "costs.json").read_text())}
    # Finetune of conv1, dw and project: their kernels only (BN stays frozen).
    assert costs["finetune_blur"]["trainable_params"] == 3 * 3 * 3 * 8 + 3 * 3 * 8 + 8 * 4
    units = costs["deepcorr_blur"]["units"]
    assert [u["corrected_filters"] for u in units] == [4, 4, 2]
    # A cw unit on c channels: 1x1, 3x3, 3x3, 1x1 convs (c filters each, biases) and 3 BNs.
    expected = [c * c + 2 * 9 * c * c + c * c + 4 * c + 3 * 2 * c for c in (4, 4, 2)]
    assert [u["trainable_params"] for u in units] == expected
    assert costs["deepcorr_blur"]["trainable_params"] == sum(expected)
    assert [u["multiply_adds"] for u in units] == [20 * c * c * 16 * 16 for c in (4, 4, 2)]


def test_mobilenet_v2_multiply_adds_match_the_paper():
    # Sandler et al. 2018, Table 4: MobileNetV2 1.0 at 224 px, 300M multiply-adds.
    model = keras.applications.MobileNetV2(weights=None)
    assert multiply_adds(model) / 300e6 == pytest.approx(1.0, abs=0.01)


def test_rerun_reuses_every_stage_and_other_seed_is_refused(run, capsys):
    _, out, args = run
    before = json.loads((out / "results.json").read_text())
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.keras")}
    assert experiment.main(args) == 0
    after = json.loads((out / "results.json").read_text())
    assert after["accuracy"] == before["accuracy"] and after["ranking"] == before["ranking"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.keras")} == stamps
    capsys.readouterr()
    assert experiment.main(args + ["--seed", "1"]) == 2
    assert "another split" in capsys.readouterr().err


def test_figures_and_their_summary(run):
    _, out, _ = run
    for name in ("accuracy", "filters", "tsne", "group_diff", "hamming"):
        with open(out / f"imagenet_deepcorrect_{name}.png", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "figures_summary.json").read_text())
    wins = summary["per_class_wins"]["gaussian_blur"]
    assert wins["deepcorr_better"] + wins["finetune_better"] + wins["equal"] == 4
    # The last ReLU at each resolution of the tiny CNN: 16x16 and 8x8.
    assert summary["hamming"]["stages"] == ["dw_relu", "conv2_relu"]
    assert all(0.0 <= v <= 1.0 for v in summary["hamming"]["original"])


def test_coarse_groups_partition_the_imagenet_classes():
    counts = np.bincount([figures.coarse_group(i) for i in range(1000)],
                         minlength=len(figures.COARSE_GROUPS))
    assert len(counts) == 10 and counts.sum() == 1000 and counts.min() > 0
    with pytest.raises(ValueError, match="label"):
        figures.coarse_group(1000)
    if not IMAGENET_SAMPLES.is_dir():
        return
    with open(IMAGENET_SAMPLES / "labels.csv", newline="") as f:
        names = {int(row["label"]): row["name"] for row in csv.DictReader(f)}
    expect = {"terrier": "dogs", "shark": "fish", "beetle": "invertebrates", "_truck": "vehicles"}
    for word, group in expect.items():
        hits = [i for i, n in names.items() if word in n]
        assert hits and all(figures.COARSE_GROUPS[figures.coarse_group(i)][0] == group
                            for i in hits), word


@pytest.mark.slow
def test_quick_run_on_pretrained_mobilenet_v2(tmp_path):
    weights = REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224.weights.h5"
    if not weights.is_file() or not IMAGENET_SAMPLES.is_dir():
        pytest.skip("pretrained MobileNetV2 weights or photos not found")
    out = tmp_path / "out"
    assert experiment.main(["--quick", "--weights", str(weights), "--data",
                            str(IMAGENET_SAMPLES), "--out", str(out), "--verbose", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["layers"] == ["Conv1", "expanded_conv_depthwise", "expanded_conv_project"]
    # A depthwise conv after Conv1 -> BN -> ReLU6 sees only its own channel of Conv1, so
    # swapping either filter j to its clean output gives the same network output.
    for name in ("blur", "noise"):
        ranking = json.loads((out / f"ranking_{name}_exact.json").read_text())
        p = ranking["priorities"]
        assert p["Conv1"] == p["expanded_conv_depthwise"]

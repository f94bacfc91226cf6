"""`deepcorrect.compare`, `recommend` and `deepcorrect compare` on a tiny CNN with batch norms.

The model learns stripe orientation and period (4 classes) from synthetic 16x16 images in a
few seconds; Gaussian blur at 0.6 and 1.0 wipes out the fine stripes. Every number of the
table is checked against an independent recomputation: accuracy with `model.predict` on
each saved repaired model, parameters with Keras's own weights, multiply-adds by hand.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import keras
import numpy as np
import pytest

import deepcorrect
import distort
import qrnet  # noqa: F401  (the QRNet classes, to load the saved restorer)
from deepcorrect import cli, costs, ladder
from deepcorrect.comparison import ComparisonTable, recommend
from deepcorrect.compare import compare
from deepcorrect.methods import chain_id, resolve_method
from tests.conftest import REPO

LEVELS = [0.6, 1.0]
BUDGET = {"epochs": 1, "batch_size": 32, "rank_images": 32, "images": 128}
METHODS = ["bn_adapt", "tent", "finetune", "deepcorrect", "qrnet", "bn_adapt+deepcorrect"]
# conv1 (16x16 map, 3 -> 8 channels), conv2 (8x8, 8 -> 8), dense 8 -> 4.
BASE_MADDS = 16 * 16 * 3 * 3 * 3 * 8 + 8 * 8 * 3 * 3 * 8 * 8 + 8 * 4
# A cw unit on c channels: 1x1, 3x3, 3x3, 1x1 convs, c filters each: 20 c^2 per pixel;
# beta 0.5 corrects 4 of the 8 channels of conv1 (16x16) and of conv2 (8x8).
UNIT_MADDS = 20 * 4 * 4 * (16 * 16 + 8 * 8)
BN_CHANNELS = 8 + 8


def stripes(n: int, seed: int, size: int = 16):
    """Horizontal or vertical stripes of period 3 or 8 (4 classes), random phase and colour."""
    rng = np.random.default_rng(seed)
    y = rng.integers(4, size=n)
    period = np.where(y < 2, 3.0, 8.0)
    wave = np.sin(2 * np.pi * np.arange(size)[None, :] / period[:, None]
                  + rng.uniform(0, 2 * np.pi, n)[:, None])
    image = np.where((y % 2 == 0)[:, None, None], wave[:, :, None], wave[:, None, :])
    x = 128 + 100 * image[..., None] * rng.uniform(0.5, 1.0, (n, 1, 1, 3))
    x += rng.normal(0, 8, x.shape[:3] + (3,))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(h)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.MaxPooling2D()(keras.layers.ReLU()(h))
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="logits")(h),
                        name="tiny")
    x, y = stripes(512, 0)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def data():
    return tiny_model(), stripes(256, 1), stripes(128, 2)


def _counted(calls):
    """ladder.STEPS wrapped to count the calls of each kind."""
    def wrap(kind, fn):
        def counted(*args, **kwargs):
            calls[kind] = calls.get(kind, 0) + 1
            return fn(*args, **kwargs)
        return counted
    return {kind: wrap(kind, fn) for kind, fn in ladder.STEPS.items()}


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    model, repair, test = data
    out = tmp_path_factory.mktemp("compare")
    calls = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ladder, "STEPS", _counted(calls))
        table = compare(model, repair, test, "gaussian_blur", LEVELS, METHODS, BUDGET,
                        out_dir=out, timing_images=16)
    return table, out, calls


def _accuracy(model, x, y, levels):
    values = [np.mean(model.predict(x, verbose=0).argmax(-1) == y)]
    for level in levels:  # blur is deterministic: nothing to match but the level
        blurred = np.asarray(distort.gaussian_blur(x, level))
        values.append(np.mean(model.predict(blurred, verbose=0).argmax(-1) == y))
    return [float(v) for v in values]


def load(path):
    return keras.models.load_model(path, safe_mode=True, compile=False)


def _trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_rows_equal_an_independent_recomputation_on_each_saved_model(run, data):
    table, out, _ = run
    model, _, (x, y) = data
    assert table.methods() == ["baseline", *METHODS]
    base = _accuracy(model, x, y, LEVELS)
    for row in table.rows:
        if row["method"] == "baseline":
            assert row["model"] is None and row["parameters"] == 0 and row["seconds"] == 0
            expected = base
        else:
            saved = load(out / row["model"])
            expected = _accuracy(saved, x, y, LEVELS)
        np.testing.assert_allclose(row["accuracy"], expected, atol=1e-9, err_msg=row["method"])
        assert row["mean"] == pytest.approx(np.mean(expected))
        assert row["clean_change"] == pytest.approx(expected[0] - base[0])
        assert row["repair"] == (None if row["method"] == "baseline" else "gaussian_blur")
    # Each repair changed the model it saved.
    blur = {r["method"]: r["accuracy"] for r in table.rows}
    assert blur["finetune"] != blur["baseline"] or blur["deepcorrect"] != blur["baseline"]


def test_parameters_labels_and_multiply_adds(run):
    table, out, _ = run
    rows = {r["method"]: r for r in table.rows}
    for name in ("finetune", "deepcorrect", "qrnet"):
        saved = load(out / rows[name]["model"])
        assert rows[name]["parameters"] == _trainable_count(saved) > 0, name
        assert rows[name]["labels"] == "yes"
    # BN adaptation sets each batch norm's mean and variance; TENT also trains gamma and beta.
    assert rows["bn_adapt"]["parameters"] == 2 * BN_CHANNELS
    assert rows["tent"]["parameters"] == 4 * BN_CHANNELS
    combined = load(out / rows["bn_adapt+deepcorrect"]["model"])
    assert rows["bn_adapt+deepcorrect"]["parameters"] == 2 * BN_CHANNELS + _trainable_count(
        combined)
    assert rows["bn_adapt+deepcorrect"]["labels"] == "yes"
    for name in ("baseline", "bn_adapt", "tent"):
        assert rows[name]["labels"] == "no"
    for name in ("baseline", "bn_adapt", "tent", "finetune"):
        assert rows[name]["multiply_adds"] == BASE_MADDS, name
    assert rows["deepcorrect"]["multiply_adds"] == BASE_MADDS + UNIT_MADDS
    assert rows["qrnet"]["multiply_adds"] > BASE_MADDS
    assert all(r["ms_per_image"] > 0 for r in table.rows)
    assert all(r["seconds"] > 0 for r in table.rows if r["method"] != "baseline")


def test_a_combination_continues_from_the_finished_first_step(run):
    _, _, calls = run
    # bn_adapt ran once for "bn_adapt" and "bn_adapt+deepcorrect"; deepcorrect twice.
    assert calls == {"bn_adapt": 1, "tent": 1, "finetune": 1, "deepcorrect": 2, "qrnet": 1}


def test_outputs_written_and_consistent(run):
    table, out, _ = run
    for name in ("comparison.md", "comparison.csv", "comparison.json", "comparison.png"):
        assert (out / name).stat().st_size > 0, name
    assert ComparisonTable.from_json(out / "comparison.json").rows == json.loads(
        json.dumps(table.rows))
    markdown = (out / "comparison.md").read_text()
    assert markdown == table.to_markdown()
    per_level = markdown.split("**all distortions**")[0]
    for row in table.rows:
        line = next(l for l in per_level.splitlines() if l.startswith(f"| {row['method']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:5] == [f"{v:.3f}" for v in row["accuracy"]] + [f"{row['mean']:.3f}"]
    lines = (out / "comparison.csv").read_text().splitlines()
    assert len(lines) == 1 + len(table.rows) * (1 + len(LEVELS))
    assert lines[1].startswith("baseline,,gaussian_blur,clean,")


def test_a_second_call_reuses_everything(run, data, monkeypatch):
    table, out, _ = run
    model, repair, test = data
    models = {p: p.stat().st_mtime_ns for p in (out / "models").rglob("*.keras")}
    stages = (out / "stages.json").read_text()

    def fail(*args, **kwargs):
        raise AssertionError("a finished repair ran again")

    monkeypatch.setattr(ladder, "STEPS", dict.fromkeys(ladder.STEPS, fail))
    again = compare(model, repair, test, "gaussian_blur", LEVELS, METHODS, BUDGET, out_dir=out,
                    timing_images=16)
    assert again.rows == table.rows
    assert {p: p.stat().st_mtime_ns for p in (out / "models").rglob("*.keras")} == models
    assert (out / "stages.json").read_text() == stages
    # Other settings in the same folder are refused.
    with pytest.raises(ValueError, match="other settings"):
        compare(model, repair, test, "gaussian_blur", LEVELS, METHODS, BUDGET, out_dir=out,
                seed=1)


def test_an_interrupted_run_resumes_with_the_same_results(run, data, tmp_path, monkeypatch):
    table, _, _ = run
    model, repair, test = data

    class Killed(Exception):
        pass

    def interrupt(*args, **kwargs):
        raise Killed

    calls = {}
    counted = _counted(calls)
    monkeypatch.setattr(ladder, "STEPS", dict(counted, deepcorrect=interrupt))
    with pytest.raises(Killed):
        compare(model, repair, test, "gaussian_blur", LEVELS, ["finetune", "deepcorrect"], BUDGET,
                out_dir=tmp_path, timing_images=16)
    assert calls == {"finetune": 1}
    calls.clear()
    monkeypatch.setattr(ladder, "STEPS", counted)
    resumed = compare(model, repair, test, "gaussian_blur", LEVELS, ["finetune", "deepcorrect"],
                      BUDGET, out_dir=tmp_path, timing_images=16)
    assert calls == {"deepcorrect": 1}  # finetune was finished
    for name in ("finetune", "deepcorrect"):  # the same seed: the same models as in `run`
        assert resumed.row(name, "gaussian_blur")["accuracy"] == table.row(
            name, "gaussian_blur")["accuracy"]


def test_label_free_mixture_is_one_repair_tested_on_each_distortion(data, tmp_path):
    model, (x, _), (xt, yt) = data
    levels = {"gaussian_blur": LEVELS, "awgn": [40.0, 80.0]}
    table = compare(model, x, (xt, yt), ["gaussian_blur", "awgn"], levels,
                    ["bn_adapt", "finetune", "deepcorrect"], BUDGET, mixture=True,
                    out_dir=tmp_path, timing_images=16)
    assert table.distortions() == ["gaussian_blur", "awgn"]
    saved = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "models").rglob("*.keras"))
    assert len(saved) == 3 and all(p.startswith("models/mixture/") for p in saved)
    # The ranking averaged over every level of both distortions.
    (ranking,) = (tmp_path / "work" / "mixture").rglob("ranking.json")
    assert json.loads(ranking.read_text())["distortion"] == "mixture"
    for name in ("bn_adapt", "finetune", "deepcorrect"):
        blur, noise = table.row(name, "gaussian_blur"), table.row(name, "awgn")
        assert blur["repair"] == noise["repair"] == "mixture" and blur["model"] == noise["model"]
        assert blur["clean"] == noise["clean"]
        repaired = load(tmp_path / blur["model"])
        np.testing.assert_allclose(blur["accuracy"], _accuracy(repaired, xt, yt, LEVELS), atol=1e-9)
    assert table.row("finetune", "awgn")["labels"] == "teacher"  # distilled from the model
    assert table.row("deepcorrect", "awgn")["labels"] == "teacher"
    assert table.row("bn_adapt", "awgn")["labels"] == "no"
    assert "one repair on a mixture of gaussian_blur, awgn" in table.to_markdown()


def test_held_out_distortions_are_tested_but_stay_out_of_the_summary(data, tmp_path):
    model, repair, (xt, yt) = data
    table = compare(model, repair, (xt, yt), "gaussian_blur", LEVELS, ["finetune"], BUDGET,
                    out_dir=tmp_path, timing_images=16, held_out={"defocus_blur": [2]})
    assert table.distortions() == ["gaussian_blur", "defocus_blur"]
    assert table.meta["held_out"] == ["defocus_blur"]
    for method in ("baseline", "finetune"):
        held, seen = table.row(method, "defocus_blur"), table.row(method, "gaussian_blur")
        assert held["held_out"] and not seen["held_out"]
        assert held["model"] == seen["model"]  # the same repaired model, tested on both
        net = model if held["model"] is None else load(tmp_path / held["model"])
        blurred = np.asarray(distort.apply(xt, "defocus_blur", 2.0))
        expected = [np.mean(net.predict(x, verbose=0).argmax(-1) == yt) for x in (xt, blurred)]
        np.testing.assert_allclose(held["accuracy"], expected, atol=1e-9)
        summary = table.summary()[method]
        assert summary["mean"] == pytest.approx(seen["mean"])  # the held-out row stays out
        assert summary["held_out_mean"] == pytest.approx(held["mean"])
    text = table.to_markdown()
    assert "**defocus_blur** (held out: no repair saw it)" in text
    assert "avg over held out" in text
    # A finished run takes another held-out distortion and only tests: nothing is repaired.
    calls = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ladder, "STEPS", _counted(calls))
        more = compare(model, repair, (xt, yt), "gaussian_blur", LEVELS, ["finetune"], BUDGET,
                       out_dir=tmp_path, timing_images=16,
                       held_out={"defocus_blur": [2], "contrast": [0.5]})
    assert calls == {} and more.distortions()[-1] == "contrast"
    assert more.row("finetune", "defocus_blur") == table.row("finetune", "defocus_blur")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"held_out": {"gaussian_blur": [2.0]}}, "must not name a distortion that is repaired"),
    ({"held_out": ["defocus_blur"]}, "held_out must be a dict"),
    ({"held_out": {"defocus_blur": [2.0]}, "distortions": ["gaussian_blur", "awgn"],
      "levels": {"gaussian_blur": [1.0], "awgn": [10.0]}}, "mixture=True or a single"),
    ({"held_out": {"defocus_blur": [-1.0]}}, "levels of defocus_blur must be"),
])
def test_bad_held_out_is_refused_before_any_work(data, tmp_path, kwargs, fragment):
    model, repair, test = data
    kwargs = dict(kwargs)
    distortions = kwargs.pop("distortions", "gaussian_blur")
    levels = kwargs.pop("levels", LEVELS)
    with pytest.raises(ValueError, match=fragment):
        compare(model, repair, test, distortions, levels, ["finetune"], BUDGET,
                out_dir=tmp_path, **kwargs)
    assert not (tmp_path / "models").exists()


def test_deepcorrect_can_keep_the_moving_statistics_training_left(data, tmp_path):
    model, repair, test = data
    methods = ["deepcorrect", "deepcorrect:refresh_statistics=false"]
    compare(model, repair, test, "gaussian_blur", LEVELS, methods, BUDGET, out_dir=tmp_path)

    def moving(method):
        chain = chain_id(resolve_method(method)["steps"])
        loaded = keras.models.load_model(tmp_path / "models" / "gaussian_blur" / f"{chain}.keras",
                                         safe_mode=True)
        return [w.numpy() for w in loaded.weights if "moving_mean" in w.path and "unit" in w.path]

    refreshed, kept = moving(methods[0]), moving(methods[1])
    assert refreshed and len(refreshed) == len(kept)
    # Four steps at momentum 0.99 leave the kept means within a few percent of their start.
    assert max(np.abs(m).max() for m in kept) < max(np.abs(m).max() for m in refreshed)


def test_without_out_dir_nothing_is_left_behind(data, tmp_path, monkeypatch):
    model, repair, test = data
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    table = compare(model, repair, test, "gaussian_blur", LEVELS, ["bn_adapt"], BUDGET,
                    timing_images=16)
    assert table.methods() == ["baseline", "bn_adapt"]
    assert list(tmp_path.iterdir()) == []


def _table(rows):
    """A hand-made table: (name, mean, clean, parameters, ms per image) per method."""
    out = []
    for name, mean, clean, params, ms in rows:
        out.append({"method": name, "repair": None, "distortion": "gaussian_blur", "levels": [1.0],
                    "accuracy": [clean, 2 * mean - clean], "mean": mean, "clean": clean,
                    "clean_change": clean - rows[0][2], "parameters": params, "labels": "no",
                    "seconds": 1.0, "ms_per_image": ms, "multiply_adds": 10, "steps": []})
    return ComparisonTable(out, {"baseline": "baseline"})


def test_recommend_honours_each_constraint():
    table = _table([("baseline", 0.50, 0.90, 0, 1.0), ("units", 0.80, 0.85, 5000, 3.0),
                    ("tuned", 0.75, 0.90, 20000, 1.0), ("adapted", 0.70, 0.89, 40, 1.0)])
    assert recommend(table).method == "units"
    assert "+0.300 over the baseline" in recommend(table).reason
    assert recommend(table, max_clean_drop=0.01).method == "tuned"     # units lose 0.05
    assert recommend(table, max_params=10_000).method == "units"
    assert recommend(table, max_params=1_000).method == "adapted"
    assert recommend(table, max_latency=2.0).method == "tuned"         # units take 3 ms
    method, reason = recommend(table, max_clean_drop=0.01, max_params=1_000, max_latency=2.0)
    assert method == "adapted" and "units (clean -0.050)" in reason and "\n" not in reason
    nothing = recommend(table, max_latency=0.5)
    assert nothing.method is None and "no method meets" in nothing.reason
    worse = _table([("baseline", 0.50, 0.90, 0, 1.0), ("units", 0.40, 0.90, 10, 1.0)])
    assert recommend(worse) == ("baseline", recommend(worse).reason)
    assert "no repair beats the baseline" in recommend(worse).reason
    for kwargs, name in (({"max_clean_drop": -0.1}, "max_clean_drop"),
                         ({"max_params": 1.5}, "max_params"),
                         ({"max_latency": float("nan")}, "max_latency")):
        with pytest.raises(ValueError, match=name):
            recommend(table, **kwargs)


def test_recommend_reads_a_saved_table(run):
    table, out, _ = run
    assert recommend(out / "comparison.json", max_clean_drop=0.05) == recommend(
        table, max_clean_drop=0.05)


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"methods": ["bn_adapt", "magic"]}, ValueError, "'bn_adapt', 'tent', 'finetune'"),
    ({"methods": ["tent", "tent"]}, ValueError, "unique"),
    ({"methods": [{"name": "x", "steps": [{"kind": "finetune", "depth": 2}]}]}, ValueError,
     "options of a finetune step"),
    ({"distortions": "fog"}, ValueError, "name must be one of"),
    ({"levels": [-1.0]}, ValueError, r"levels of gaussian_blur must be .* \[0, inf\]"),
    ({"distortions": ["gaussian_blur", "awgn"], "levels": [1.0]}, ValueError, "dict"),
    ({"budget": {"epoch": 2}}, ValueError, "budget keys"),
    ({"budget": 0}, ValueError, r"budget\['epochs'\] must be an integer >= 1"),
    ({"budget": {"augment": "yes"}}, TypeError, r"budget\['augment'\] must be True or False"),
    ({"seed": -1}, ValueError, "seed must be"),
    ({"timing_images": 0}, ValueError, "timing_images"),
    ({"mixture": "yes"}, TypeError, "mixture"),
    ({"test": "unlabelled"}, ValueError, "test_data must be \\(images, labels\\)"),
    ({"test": "labels out of range"}, ValueError, r"class indices in \[0, 3\]"),
    ({"repair": "wrong size"}, ValueError, "16x16x3"),
    ({"model": "subclassed"}, TypeError, "model must be"),
])
def test_bad_arguments_are_refused(data, tmp_path, kwargs, error, fragment):
    model, repair, test = data
    kwargs = dict(kwargs)
    args = {"distortions": "gaussian_blur", "levels": LEVELS}
    args.update((k, kwargs.pop(k)) for k in ("distortions", "levels") if k in kwargs)
    what = kwargs.pop("test", None)
    if what == "unlabelled":
        test = test[0]
    elif what == "labels out of range":
        test = (test[0], test[1] + 4)
    if kwargs.pop("repair", None):
        repair = (np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8, np.int64))
    if kwargs.pop("model", None):
        model = keras.Model()
    with pytest.raises(error, match=fragment):
        compare(model, repair, test, args["distortions"], args["levels"],
                **{"methods": ["finetune"], "budget": BUDGET, "out_dir": tmp_path, **kwargs})
    assert not (tmp_path / "models").exists()  # refused before any work


# --- Command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(data, tmp_path_factory):
    model, (x, y), (xt, yt) = data
    folder = tmp_path_factory.mktemp("files")
    model.save(folder / "tiny.keras")
    np.savez(folder / "stripes.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    return folder


def _argv(files, out, *extra):
    return ["compare", "--model", str(files / "tiny.keras"), "--data", str(files / "stripes.npz"),
            "--distortion", "gaussian_blur", "--levels", *map(str, LEVELS), "--methods", "bn_adapt",
            "finetune", "--epochs", "1", "--batch-size", "32", "--repair-images", "128",
            "--rank-images", "32", "--timing-images", "16", "--out", str(out), *extra]


def test_cli_prints_the_table_and_the_recommendation(files, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(_argv(files, out, "--max-clean-drop", "0.02")) == 0
    printed = capsys.readouterr().out
    table = ComparisonTable.from_json(out / "comparison.json")
    assert table.to_markdown() in printed
    choice = recommend(table, max_clean_drop=0.02)
    assert f"recommended: {choice.method} ({choice.reason})" in printed
    assert json.loads((out / "recommendation.json").read_text())["method"] == choice.method


@pytest.mark.slow  # a fresh process: TensorFlow's start and every training again
def test_cli_in_a_new_process_gives_the_same_table(files, tmp_path):
    first, fresh = tmp_path / "first", tmp_path / "fresh"
    assert cli.main(_argv(files, first)) == 0
    proc = subprocess.run([sys.executable, "-m", "deepcorrect", *_argv(files, fresh)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "recommended: " in proc.stdout
    table = ComparisonTable.from_json(first / "comparison.json")
    again = ComparisonTable.from_json(fresh / "comparison.json")
    assert [r["accuracy"] for r in again.rows] == [r["accuracy"] for r in table.rows]
    assert [r["parameters"] for r in again.rows] == [r["parameters"] for r in table.rows]


def test_cli_held_out_adds_its_rows(files, tmp_path, capsys):
    out = tmp_path / "held"
    assert cli.main(_argv(files, out, "--held-out", "defocus_blur", "1", "2")) == 0
    table = ComparisonTable.from_json(out / "comparison.json")
    assert table.meta["held_out"] == ["defocus_blur"]
    assert table.meta["levels"]["defocus_blur"] == [1.0, 2.0]
    assert table.row("finetune", "defocus_blur")["held_out"]
    assert "(held out: no repair saw it)" in capsys.readouterr().out


def test_cli_augment_reaches_the_trained_methods(files, tmp_path):
    plain, augmented = tmp_path / "plain", tmp_path / "augmented"
    argv = [a for a in _argv(files, plain) if a != "bn_adapt"]
    assert cli.main(argv) == 0
    assert cli.main([*(str(augmented) if a == str(plain) else a for a in argv), "--augment"]) == 0
    table = ComparisonTable.from_json(augmented / "comparison.json")
    assert table.meta["budget"]["augment"] is True
    assert "flipped and shifted at random" in table.to_markdown()
    assert ComparisonTable.from_json(plain / "comparison.json").meta["budget"]["augment"] is False

    def tuned(folder):
        (path,) = [p for p in (folder / "models").rglob("*.keras") if "finetune" in str(p)]
        return keras.models.load_model(path, safe_mode=True).get_weights()

    assert any(not np.array_equal(a, b) for a, b in zip(tuned(plain), tuned(augmented)))


def test_cli_splits_an_image_folder_by_seed(data, files, tmp_path, capsys):
    from PIL import Image

    _, (x, y), _ = data
    photos = tmp_path / "photos"
    for i in range(24):
        (photos / f"class{y[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(photos / f"class{y[i]}" / f"{i}.png")
    if len({int(v) for v in y[:24]}) < 4:
        pytest.skip("the first 24 images miss a class")
    out = tmp_path / "out"
    argv = ["compare", "--model", str(files / "tiny.keras"), "--data", str(photos),
            "--distortion", "gaussian_blur", "--levels", "1.0", "--methods", "bn_adapt",
            "--timing-images", "4", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    table = ComparisonTable.from_json(out / "comparison.json")
    assert table.meta["test_images"] == 7 and table.meta["repair_images"] == 17  # 30% / 70%


@pytest.mark.parametrize("extra, fragment", [
    (["--methods", "finetune", "wizard"], "method must be one of ['baseline', 'bn_adapt'"),
    (["--levels", "1", "2"], "--levels must be given once per --distortion"),
    (["--max-params", "-1"], "--max-params must be an integer >= 0"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--distortion", "fog"], "name must be one of"),
    (["--held-out", "defocus_blur", "x"], "--held-out takes a distortion name and numeric"),
    (["--held-out", "defocus_blur"], "--held-out defocus_blur needs at least one level"),
    (["--held-out", "gaussian_blur", "1"], "must not name a distortion that is repaired for"),
])
def test_cli_errors_are_one_line(files, tmp_path, capsys, extra, fragment):
    assert cli.main(_argv(files, tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "bad" / "models").exists()


# --- README --------------------------------------------------------------------------------


def _readme_section():
    text = (REPO / "README.md").read_text()
    return text.split("## Which repair?")[1].split("\n## ")[0]


@pytest.mark.slow  # four methods on two distortions
def test_readme_python_snippet_runs(data, tmp_path, monkeypatch, capsys):
    python = re.search(r"```python\n(.*?)```", _readme_section(), re.S).group(1)
    model, (x, y), (xt, yt) = data
    monkeypatch.chdir(tmp_path)
    namespace = {"model": model, "repair": (x[:64], y[:64]), "test": (xt[:64], yt[:64])}
    exec(compile(python, "README.md", "exec"), namespace)
    assert isinstance(namespace["table"], deepcorrect.ComparisonTable)
    assert namespace["method"] in namespace["table"].methods()
    assert (tmp_path / "out" / "compare" / "comparison.md").is_file()
    assert namespace["reason"] in capsys.readouterr().out


def test_readme_shell_snippet_parses():
    section = _readme_section()
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    args = cli.build_parser().parse_args(shlex.split(shell)[1:])
    assert args.command == "compare" and args.max_clean_drop is not None


def test_multiply_adds_by_hand_for_every_kernel_kind():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)                  # 8*8 * 3*3*3*4
    h = keras.layers.SeparableConv2D(6, 3, padding="same")(h)              # 8*8 * (3*3*4 + 4*6)
    h = keras.layers.DepthwiseConv2D(3, padding="valid")(h)                # 6*6 * 3*3*6
    h = keras.layers.Conv2DTranspose(2, 2, strides=2)(h)                   # 6*6 * 2*2*6*2
    h = keras.layers.Dense(5)(h)                                           # 12*12 * 2*5
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    expected = (8 * 8 * 3 * 3 * 3 * 4 + 8 * 8 * (3 * 3 * 4 + 4 * 6) + 6 * 6 * 3 * 3 * 6
                + 6 * 6 * 2 * 2 * 6 * 2 + 12 * 12 * 2 * 5)
    assert costs.multiply_adds(model) == expected
    open_size = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="fixed image sizes"):
        costs.multiply_adds(open_size)


def test_distorted_repair_images_are_seeded_and_mixed_per_image():
    x = np.full((40, 8, 8, 1), 128, np.uint8)
    table = {"awgn": [20.0], "contrast": [0.5]}
    a = ladder.distorted_images(x, table, seed=3)
    np.testing.assert_array_equal(a, ladder.distorted_images(x, table, seed=3))
    assert not np.array_equal(a, ladder.distorted_images(x, table, seed=4))
    flat = a.reshape(40, -1)
    noisy = flat.std(1) > 5          # awgn leaves texture, contrast leaves a flat image
    assert 5 < noisy.sum() < 35      # both distortions in one set, drawn per image


@pytest.mark.parametrize("text,steps", [
    ("finetune:k=3,learning_rate=0.01", [{"kind": "finetune", "k": 3, "learning_rate": 0.01}]),
    ("bn_adapt:prior=16+deepcorrect:first=3,site=conv",
     [{"kind": "bn_adapt", "prior": 16, "fraction": 0.5},
      {"kind": "deepcorrect", "beta": 0.5, "unit": "cw", "site": "conv", "first": 3,
       "learning_rate": 0.1, "refresh_statistics": True, "ranking": "approx"}]),
    ("deepcorrect:refresh_statistics=false",
     [{"kind": "deepcorrect", "beta": 0.5, "unit": "cw", "site": None, "first": None,
       "learning_rate": 0.1, "refresh_statistics": False, "ranking": "approx"}]),
    ("tent:epochs=none,fraction=1", [{"kind": "tent", "learning_rate": 1e-3, "epochs": None, "fraction": 1}]),
])
def test_method_options_on_the_command_line_fill_the_steps(text, steps):
    resolved = resolve_method(text)
    assert resolved["name"] == text
    assert resolved["steps"] == steps


@pytest.mark.parametrize("text,message", [
    ("finetune:depth=3", "options of a finetune step must be among"),
    ("finetune:k", "must read option=value"),
    ("baseline:k=1", "method must be one of"),
    ("nothing:k=1", "method must be one of"),
])
def test_bad_method_options_name_what_is_allowed(text, message):
    with pytest.raises(ValueError, match=message):
        resolve_method(text)


@pytest.mark.parametrize("ranking, score", [("exact", "log_prob"),
                                            ("magnitude", "log_prob_magnitude")])
def test_deepcorrect_step_can_rank_exactly(data, tmp_path, ranking, score):
    model, (x, y), test = data
    compare(model, (x, y), test, "gaussian_blur", LEVELS, [f"deepcorrect:ranking={ranking}"],
            BUDGET, out_dir=tmp_path, timing_images=16)
    (path,) = (tmp_path / "work" / "gaussian_blur").rglob("ranking.json")
    used = deepcorrect.Ranking.load(path)
    want = deepcorrect.rank(model, x[:32], y[:32], "gaussian_blur", LEVELS, score=score,
                            seed=0, progress=False)
    assert used.method == "exact" and used.score == score
    for name in ("conv1", "conv2"):
        np.testing.assert_allclose(used.priorities[name], want.priorities[name], atol=1e-6)


def test_the_ranking_option_keeps_the_ids_of_earlier_folders():
    import hashlib

    steps = resolve_method("bn_adapt+deepcorrect:first=3")["steps"]
    assert steps[1]["ranking"] == "approx"
    # The id as it was computed before the option existed: every other option hashed.
    earlier = [{k: v for k, v in s.items() if k != "ranking"} for s in steps]
    digest = hashlib.sha1(json.dumps(earlier, sort_keys=True).encode()).hexdigest()[:8]
    assert chain_id(steps) == f"bn_adapt+deepcorrect-{digest}"
    exact = resolve_method("bn_adapt+deepcorrect:first=3,ranking=exact")["steps"]
    assert chain_id(exact) != chain_id(steps)
    with pytest.raises(ValueError, match=r"ranking of a deepcorrect step must be one of "
                                         r"\['approx', 'exact', 'magnitude'\]. "
                                         r"Received: ranking='fast'"):
        resolve_method("deepcorrect:ranking=fast")

"""The CIFAR-10 analysis examples (ideal correction, ranked vs random, local vs global,
training curves, Zhou's fine-tuning) in their quick modes, against independent expectations.

The end-to-end runs of the three examples that train several DeepCorrect models are marked
slow (`make test-all`); their selection, t-test and curve logic is tested here without
training."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

import distort
from tests.conftest import CIFAR10, REPO

sys.path.insert(0, str(REPO / "examples"))


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A cifar10_quick trained for one epoch on 1,000 CIFAR-10 images, saved as .keras."""
    if not CIFAR10.is_file():
        pytest.skip(f"CIFAR-10 not found at {CIFAR10}")
    import keras

    from studies.networks import build_network

    with np.load(CIFAR10) as d:
        x, y = d["x_train"][:1000], d["y_train"][:1000].astype("int64")
    model = build_network("cifar10_quick", (32, 32, 3), 10, seed=0)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=100, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("baseline") / "baseline.keras"
    model.save(path)
    return path


def direct_accuracy(model, images, labels, distortion, level, seed):
    x = images if level is None else np.asarray(distort.apply(images, distortion, level, seed=seed))
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == labels))


IDEAL_ARGS = ["--quick", "--distortions", "gaussian_blur", "--test-images", "100",
              "--rank-images", "32", "--trials", "1"]


@pytest.fixture(scope="module")
def ideal_run(baseline, tmp_path_factory):
    """ideal_correction.py --quick on blur; its rankings serve the trained analyses too."""
    out = tmp_path_factory.mktemp("ideal")
    argv = IDEAL_ARGS + ["--model", str(baseline), "--data", str(CIFAR10), "--out", str(out)]
    assert load_example("ideal_correction").main(argv) == 0
    return out, argv


@pytest.mark.slow  # trains for tens of seconds: `make test-slow`
def test_ideal_correction_end_points_and_counts(baseline, ideal_run):
    import keras

    ideal = load_example("ideal_correction")
    out, argv = ideal_run
    rows = json.loads((out / "beta_sweep.json").read_text())["rows"]
    model = keras.models.load_model(baseline)
    with np.load(CIFAR10) as d:
        x, y = d["x_test"][:100], d["y_test"][:100].astype("int64")
    levels = distort.presets.levels("deepcorrect_cifar", "gaussian_blur")
    clean = direct_accuracy(model, x, y, None, None, 0)
    distorted = [direct_accuracy(model, x, y, "gaussian_blur", lv, 1000 + k)
                 for k, lv in enumerate(levels)]
    none = next(r for r in rows if r["beta"] == 0.0)
    whole = next(r for r in rows if r["beta"] == 1.0)
    cols = [f"{lv:g}" for lv in levels]
    # Nothing corrected: the distorted accuracy; the whole of conv1 corrected: the clean one.
    np.testing.assert_allclose([none[c] for c in cols], distorted)
    np.testing.assert_allclose([whole[c] for c in cols], [clean] * len(levels))
    assert {(r["beta"], r["filters"]) for r in rows} == {
        (0.0, 0), (0.1, 3), (0.25, 8), (0.5, 16), (0.75, 24), (0.9, 29), (1.0, 32)}
    assert {r["selection"] for r in rows} == {"none", "ranked", "random", "least", "all"}
    assert all(r["clean"] == clean for r in rows)
    layers = json.loads((out / "per_layer.json").read_text())["rows"]
    assert {r["layer"] for r in layers} == {"conv1", "conv2", "conv3"}
    for name in ("beta_sweep.csv", "beta_sweep.md", "cifar10_ideal_beta.png",
                 "cifar10_ideal_layers.png", "report.md"):
        assert (out / name).stat().st_size > 0
    # Cached stages: a rerun gives the same table; other settings are refused.
    before = (out / "beta_sweep.json").read_text()
    assert ideal.main(argv) == 0
    assert (out / "beta_sweep.json").read_text() == before
    assert ideal.main(argv[:8] + ["2"] + argv[9:]) == 2  # other --trials


def test_random_filter_sets_are_seeded_distinct_and_uniform():
    from studies import analysis as an
    sets = an.random_filter_sets(32, 8, 5, seed=0)
    assert all(len(s) == 8 and len(set(s.tolist())) == 8 and s.min() >= 0 and s.max() < 32
               for s in sets)
    assert len({tuple(sorted(s.tolist())) for s in sets}) == 5
    again = an.random_filter_sets(32, 8, 5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(sets, again))
    assert not np.array_equal(sets[0], an.random_filter_sets(32, 8, 5, seed=1)[0])
    # Every filter is drawn about equally often (chi-square, 31 degrees of freedom).
    from scipy import stats

    counts = np.bincount(np.concatenate(an.random_filter_sets(32, 8, 2000, seed=2)), minlength=32)
    assert stats.chisquare(counts).pvalue > 1e-3


@pytest.fixture(scope="module")
def rankings(ideal_run):
    """Blur rankings of the baseline on 32 held-out images (shared by the trained analyses)."""
    return ideal_run[0] / "rankings"


def tiny_budget(baseline, rankings, out):
    return ["--quick", "--model", str(baseline), "--data", str(CIFAR10), "--out", str(out),
            "--rankings", str(rankings), "--distortions", "gaussian_blur", "--train-images", "64",
            "--batch-size", "32", "--epochs", "1", "--test-images", "100"]


def expected_ttest(a, b):
    """The paired t-test by its formula: t = mean(d) / (sd(d) / sqrt(n)), two-sided p."""
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    return t, 2 * stats.t.sf(abs(t), len(d) - 1)


@pytest.mark.slow  # trains several models: `make test-all`
def test_ranked_vs_random_sets_models_and_ttest(baseline, rankings, tmp_path):
    import keras

    from deepcorrect import Ranking, correction_units

    rvr = load_example("ranked_vs_random")
    from studies import analysis as an
    out = tmp_path / "rvr"
    argv = tiny_budget(baseline, rankings, out) + ["--fractions", "0.5", "--trials", "2"]
    assert rvr.main(argv) == 0
    trials = json.loads((out / "trials.json").read_text())["rows"]
    priorities = Ranking.load(rankings / "gaussian_blur.json").priorities["conv1"]
    order = np.argsort(-priorities, kind="stable")
    by_name = {r["name"]: r for r in trials}
    assert set(by_name) == {"ranked-16", "random-16-t0", "random-16-t1", "least-16"}
    indices = {k: sorted(map(int, r["indices"].split())) for k, r in by_name.items()}
    assert indices["ranked-16"] == sorted(order[:16].tolist())
    assert indices["least-16"] == sorted(order[16:].tolist())
    draws = an.random_filter_sets(32, 16, 2, seed=0)
    assert [indices[f"random-16-t{t}"] for t in (0, 1)] == [sorted(s.tolist()) for s in draws]
    assert len({r["trainable"] for r in trials}) == 1  # the same unit size everywhere
    for name, chosen in indices.items():  # each trained model corrects exactly its filters
        model = keras.models.load_model(out / "models" / f"{name}-gaussian_blur.keras")
        assert sorted(correction_units(model)["conv1"].channel_indices) == chosen
    cols = ["clean"] + [f"{lv:g}" for lv in distort.presets.levels("deepcorrect_cifar",
                                                                  "gaussian_blur")]
    ranked = [by_name["ranked-16"][c] for c in cols]
    random = np.mean([[by_name[f"random-16-t{t}"][c] for c in cols] for t in (0, 1)], axis=0)
    (test,) = json.loads((out / "ttest.json").read_text())["rows"]
    t, p = expected_ttest(ranked, random)
    if np.isfinite(t):
        assert test["t"] == pytest.approx(t) and test["p"] == pytest.approx(p)
    else:  # every difference equal: no test
        assert not np.isfinite(test["p"])
    assert (out / "cifar10_ranked_vs_random.png").stat().st_size > 0


def test_ranked_vs_random_pools_both_distortions():
    rvr = load_example("ranked_vs_random")
    rng = np.random.default_rng(0)
    results = [{"distortion": d, "fraction": 0.5, "filters": 16, "group": g,
                "accuracy": rng.uniform(0, 1, 7).tolist()}
               for d in ("gaussian_blur", "awgn") for g in ("ranked", "random", "random")]
    fig_rows, tests = rvr.summarise(results, ["gaussian_blur", "awgn"])
    assert [t["distortion"] for t in tests] == ["gaussian_blur", "awgn", "both"]
    a = np.concatenate([results[i]["accuracy"] for i in (0, 3)])
    b = np.concatenate([np.mean([results[i]["accuracy"] for i in (j + 1, j + 2)], axis=0)
                        for j in (0, 3)])
    t, p = expected_ttest(a, b)
    assert tests[2]["n"] == 14 and tests[2]["t"] == pytest.approx(t)
    assert tests[2]["p"] == pytest.approx(p)
    assert next(r for r in fig_rows if r["model"] == "random-16" and r["distortion"] == "awgn")[
        "trials"] == 2


def test_global_ranking_takes_the_top_filters_across_layers():
    from deepcorrect import Ranking

    lvg = load_example("local_vs_global")
    ranking = Ranking({"a": [0.9, 0.1, 0.5, 0.0], "b": [0.8, 0.7, 0.6, 0.55, 0.3, 0.05]},
                      model_name="m", filter_counts={"a": 4, "b": 6})
    chosen = lvg.local_and_global(ranking)
    assert chosen["local"] == {"a": [0, 2], "b": [0, 1, 2]}
    assert chosen["global"] == {"a": [0], "b": [0, 1, 2, 3]}
    assert lvg.local_and_global(Ranking({"a": [0.0, 1.0], "b": [2.0, 3.0, 4.0, 5.0]},
                                        model_name="m", filter_counts={"a": 2, "b": 4})
                                )["global"] == {"b": [3, 2, 1]}


@pytest.mark.slow  # trains several models: `make test-all`
def test_local_vs_global_corrects_the_chosen_filters(baseline, rankings, tmp_path):
    import keras

    from deepcorrect import Ranking, correction_units

    lvg = load_example("local_vs_global")
    out = tmp_path / "lvg"
    assert lvg.main(tiny_budget(baseline, rankings, out) + ["--unit-bn"]) == 0
    chosen = lvg.local_and_global(Ranking.load(rankings / "gaussian_blur.json"))
    for name in ("local", "global"):
        model = keras.models.load_model(out / "models" / f"{name}-gaussian_blur.keras")
        units = {k: sorted(u.channel_indices) for k, u in correction_units(model).items()}
        assert units == {k: sorted(v) for k, v in chosen[name].items()}
        # --unit-bn: the batch norm after each corrected conv trained with the units.
        bns = [l.name for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        assert {n for n in bns if model.get_layer(n).trainable} == {
            n for n in bns if n.replace("bn", "conv") in units}
    rows = {r["ranking"]: r for r in json.loads((out / "local_vs_global.json").read_text())["rows"]}
    assert rows["local"]["total"] == rows["global"]["total"] == 64
    cols = ["clean"] + [f"{lv:g}" for lv in distort.presets.levels("deepcorrect_cifar",
                                                                  "gaussian_blur")]
    t, p = expected_ttest([rows["local"][c] for c in cols], [rows["global"][c] for c in cols])
    (test,) = json.loads((out / "ttest.json").read_text())["rows"]
    if np.isfinite(t):
        assert test["p"] == pytest.approx(p)


def test_curve_recorder_resumes_after_the_last_finished_epoch(tmp_path):
    curves = load_example("training_curves")
    path = tmp_path / "curve.json"
    path.write_text(json.dumps({"points": [
        {"iteration": i, "seconds": float(i), "accuracy": [0.5], "avg": 0.5}
        for i in (0, 2, 4, 6)]}))
    scores = iter([[0.1], [0.2], [0.3]])
    recorder = curves.CurveRecorder(lambda: next(scores), every=2, steps=4, path=path)
    recorder.on_epoch_begin(1)  # epoch 0 (iterations 1-4) finished before the interruption
    assert [p["iteration"] for p in recorder.points] == [0, 2, 4]
    for batch in range(4):
        recorder.on_train_batch_begin(batch)
        recorder.on_train_batch_end(batch)
    saved = json.loads(path.read_text())["points"]
    assert [p["iteration"] for p in saved] == [0, 2, 4, 6, 8]
    assert [p["avg"] for p in saved][-2:] == [0.1, 0.2]
    assert saved[-1]["seconds"] >= 4.0


@pytest.mark.slow  # trains several models: `make test-all`
def test_training_curves_start_at_the_baseline(baseline, rankings, tmp_path):
    import keras

    curves = load_example("training_curves")
    out = tmp_path / "curves"
    assert curves.main(tiny_budget(baseline, rankings, out) + [
        "--units", "cw", "--eval-every", "1", "--unit-site", "batch_norm"]) == 0
    trained = keras.models.load_model(out / "checkpoints" / "deepcorr-all-cw-gaussian_blur"
                                      / "model.keras")
    assert trained.get_layer("conv1_unit").input._keras_history.operation.name == "bn1"
    model = keras.models.load_model(baseline)
    with np.load(CIFAR10) as d:
        x, y = d["x_test"][:100], d["y_test"][:100].astype("int64")
    blur1 = direct_accuracy(model, x, y, "gaussian_blur", 0.5, 1000)
    rows = json.loads((out / "curves.json").read_text())["rows"]
    for name in ("Deepcorr-all-cw", "Finetune-all"):
        points = [r for r in rows if r["model"] == name]
        assert [r["iteration"] for r in points] == [0, 1, 2]  # 64 images, batch 32
        # Identity units and an untouched copy: iteration 0 is the baseline itself.
        assert points[0]["clean"] == pytest.approx(direct_accuracy(model, x, y, None, None, 0))
        assert points[0]["0.5"] == pytest.approx(blur1)
    final = json.loads((out / "final.json").read_text())["rows"]
    assert {r["model"]: r["iterations"] for r in final} == {"Deepcorr-all-cw": 2,
                                                            "Finetune-all": 2}


def test_gradient_variance_matches_scipy_sobel():
    from scipy import ndimage

    zhou = load_example("zhou_finetune")
    maps = np.random.default_rng(0).normal(size=(3, 9, 7, 4))
    expected = []
    for i in range(3):
        for c in range(4):
            fm = maps[i, :, :, c]
            g = np.hypot(ndimage.sobel(fm, axis=1), ndimage.sobel(fm, axis=0)) / 4
            expected.append(g[1:-1, 1:-1].var())
    assert zhou.gradient_variance(maps) == pytest.approx(np.mean(expected))
    flat = np.ones((1, 5, 5, 2))
    assert zhou.gradient_variance(flat) == 0.0


def test_first_n_trains_the_first_parameter_layers():
    import keras

    from studies.networks import build_network

    zhou = load_example("zhou_finetune")
    model = build_network("cifar10_quick", (32, 32, 3))
    assert zhou.parameter_layers(model) == ["conv1", "conv2", "conv3", "dense1", "predictions"]
    # An untrained network's batch norms look folded (mean 0, variance 1, gamma 1), and
    # folded ones stay frozen (train_batch_norm="auto"); a trained network's train.
    untrained = {w.path.split("/")[0] for w in zhou.first_n(model, 1).trainable_weights}
    assert untrained == {"conv1"}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, "float32"))
    trained = {n: {w.path.split("/")[0] for w in zhou.first_n(model, n).trainable_weights}
               for n in (1, 4, 5)}
    assert trained[1] == {"conv1", "bn1"}
    assert trained[4] == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "dense1"}
    assert "predictions" in trained[5]
    assert zhou.feature_layer(model) == "bn3"


@pytest.mark.slow  # trains for tens of seconds: `make test-slow`
def test_zhou_no_train_row_and_fig8_reference(baseline, tmp_path):
    import keras

    zhou = load_example("zhou_finetune")
    out = tmp_path / "zhou"
    argv = ["--quick", "--model", str(baseline), "--data", str(CIFAR10), "--out", str(out),
            "--first", "2", "--train-images", "32", "--batch-size", "32", "--test-images", "100"]
    assert zhou.main(argv) == 0
    rows = {r["model"]: r for r in json.loads((out / "accuracy.json").read_text())["rows"]}
    assert list(rows) == ["no-train", "first-2", "re-training"]
    model = keras.models.load_model(baseline)
    with np.load(CIFAR10) as d:
        x, y = d["x_test"][:100], d["y_test"][:100].astype("int64")
    assert rows["no-train"]["4"] == pytest.approx(direct_accuracy(model, x, y, "combined", 4.0,
                                                                  1003))
    assert rows["first-2"]["trainable"] < rows["re-training"]["trainable"]
    var = {r["model"]: r for r in json.loads((out / "gradient_variance.json").read_text())["rows"]}
    features = keras.Model(model.inputs, model.get_layer("bn3").output)
    assert var["original"]["clean"] == pytest.approx(
        zhou.gradient_variance(np.asarray(features(x.astype("float32")))), rel=1e-5)

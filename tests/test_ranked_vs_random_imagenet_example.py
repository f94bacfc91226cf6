"""examples/ranked_vs_random_imagenet.py through its command line, on a tiny CNN and real photos."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from scipy import stats

from studies.analysis import random_filter_sets
from studies.imagenet import distorted, split_indices
from tests.conftest import IMAGENET_SAMPLES, import_example


def example():
    return import_example("ranked_vs_random_imagenet")


@pytest.mark.parametrize("flags, message", [
    (["--fraction", "0"], "error: --fraction must be in (0, 1]. Received: 0.0"),
    (["--trials", "1"], "error: --trials and --ranked-seeds must be at least 2"),
    (["--learning-rate", "-1"], "error: --learning-rate must be > 0. Received: -1.0"),
    (["--test-fraction", "1"], "error: --test-fraction must be in (0, 1). Received: 1.0"),
    (["--photos", "0"], "error: --photos must be >= 1. Received: 0"),
])
def test_bad_settings_fail_in_one_line(flags, message, tmp_path, capsys):
    argv = ["--model", "m.keras", "--data", str(tmp_path), *flags]
    assert example().main(argv) == 2
    assert capsys.readouterr().err.strip().startswith(message)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not IMAGENET_SAMPLES.is_dir():
        pytest.skip(f"real photos not found at {IMAGENET_SAMPLES}")
    from tests.test_imagenet_example import tiny_cnn

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("rvr_imagenet")
    tiny_cnn().save(folder / "tiny.keras")
    argv = ["--model", str(folder / "tiny.keras"), "--data", str(IMAGENET_SAMPLES),
            "--photos", "12", "--rank-photos", "6", "--trials", "2", "--ranked-seeds", "2",
            "--epochs", "1", "--batch-size", "4", "--levels", "2", "--out", str(folder / "out")]
    assert example().main(argv) == 0
    return folder, argv


def test_models_use_the_ranked_and_the_seeded_random_filters(run):
    folder, _ = run
    out = folder / "out"
    results = json.loads((out / "results.json").read_text())
    from deepcorrect import Ranking

    ranking = Ranking.load(out / "ranking.json")
    top = [int(j) for j in ranking.order("conv1")[:2]]  # 25% of 8 filters
    assert results["ranked-s0"]["filters"] == top == results["ranked-s1"]["filters"]
    draws = random_filter_sets(8, 2, 2, seed=0)
    for t in range(2):
        assert results[f"random-t{t}"]["filters"] == sorted(int(j) for j in draws[t])


def test_accuracies_are_the_saved_models_top1_on_the_test_photos(run):
    folder, _ = run
    out = folder / "out"
    results = json.loads((out / "results.json").read_text())
    photos = np.load(out / "photos.npz")
    _, test = split_indices(12, 0.3, seed=0)
    clean = photos["images"][test].astype("float32")
    blur = distorted(photos["images"][test], "gaussian_blur", 2.0, seed=1, batch=50)
    labels = photos["labels"][test]
    for name in ("ranked-s1", "random-t0"):
        model = keras.models.load_model(out / "models" / f"{name}.keras", safe_mode=True)
        want = [float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == labels))
                for x in (clean, blur)]
        assert results[name]["accuracy"] == pytest.approx(want)


def test_tests_are_recomputed_from_the_models_accuracies(run):
    folder, _ = run
    out = folder / "out"
    results = json.loads((out / "results.json").read_text())
    result = json.loads((out / "tests.json").read_text())
    ranked = [results[f"ranked-s{s}"]["accuracy"][1] for s in range(2)]
    random = [results[f"random-t{t}"]["accuracy"][1] for t in range(2)]
    assert result["welch"]["mean_difference"] == pytest.approx(np.mean(ranked) - np.mean(random))
    if np.std(ranked) + np.std(random) > 0:
        want = stats.ttest_ind(ranked, random, equal_var=False)
        assert result["welch"]["p"] == pytest.approx(want.pvalue)
    assert "Welch's t-test" in (out / "report.md").read_text()


def test_a_second_run_resumes_without_training(run):
    folder, argv = run
    out = folder / "out"
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()}
    before = (out / "results.json").read_text()
    assert example().main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()} == stamps
    assert json.loads((out / "results.json").read_text()) == json.loads(before)


def test_a_run_with_other_settings_is_refused(run, capsys):
    folder, argv = run
    changed = [*argv, "--fraction", "0.5"]
    assert example().main(changed) == 2
    assert "holds models made with other settings (fraction); use a new --out" in \
        capsys.readouterr().err

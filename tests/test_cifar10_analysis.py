"""The CIFAR-10 analysis examples (ideal correction, ranked vs random, local vs global,
training curves, Zhou's fine-tuning) in their quick modes, against independent expectations."""

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

    from deepcorrect.networks import build_network

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


def test_ideal_correction_end_points_and_counts(baseline, tmp_path):
    import keras

    ideal = load_example("ideal_correction")
    out = tmp_path / "ideal"
    argv = ["--quick", "--model", str(baseline), "--data", str(CIFAR10), "--out", str(out),
            "--distortions", "gaussian_blur", "--test-images", "100", "--rank-images", "32",
            "--trials", "1"]
    assert ideal.main(argv) == 0
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
    for name in ("beta_sweep.csv", "beta_sweep.md", "ideal_beta.png", "ideal_layers.png",
                 "report.md"):
        assert (out / name).stat().st_size > 0
    # Cached stages: a rerun gives the same table; other settings are refused.
    before = (out / "beta_sweep.json").read_text()
    assert ideal.main(argv) == 0
    assert (out / "beta_sweep.json").read_text() == before
    assert ideal.main(argv[:-1] + ["2"]) == 2


def test_random_filter_sets_are_seeded_distinct_and_uniform():
    an = load_example("_analysis")
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


"""Tests for the continuous score and the reliability of deepcorrect.ranking."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from scipy import special, stats

from deepcorrect import cli
from deepcorrect.ranking import Ranking, exact, rank, split_halves
from deepcorrect.ranking.reliability import Reliability, spearman_brown

LEVELS = [1.0, 2.0]
PATTERN = np.random.default_rng(123).normal(0.0, 60.0, (8, 8, 3)).astype(np.float32)


def pattern_noise(images, level, seed):
    """The same noise pattern added to every image: an image's distortion does
    not depend on which other images are in the batch, so a subset of the
    images ranks as the same subset of the distorted set."""
    return images + level * PATTERN


def scale(images):
    return images / 127.5 - 1.0


def tiny_model(activation=None, seed=0):
    """A small CNN whose random head is scaled to its features, so that it
    predicts varied classes and the distortion changes its predictions."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(6, 3, padding="same", name="c1"),
        keras.layers.ReLU(name="r1"),
        keras.layers.Conv2D(5, 3, name="c2"),
        keras.layers.ReLU(name="r2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, activation=activation, name="out"),
    ], name="tiny")
    dense = model.layers[-1]
    features = np.asarray(keras.Sequential(model.layers[:-1])(scale(make_images(64, 99))))
    w = np.random.default_rng(seed).normal(0, 1, dense.kernel.shape) / (
        features.std(0)[:, None] + 1e-6)
    dense.set_weights([w.astype("float32"), -(features.mean(0) @ w).astype("float32")])
    return model


def make_images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 8, 8, 3)).astype(np.float32)


def own_labels(model, images):
    """The model's clean predictions, so that making a filter clean helps."""
    return np.argmax(np.asarray(model(scale(images))), -1)


def run_rank(model, images, labels, **kwargs):
    kwargs.setdefault("progress", False)
    return rank(model, images, labels, pattern_noise, LEVELS, preprocess=scale, **kwargs)


def brute_force_log_prob(model, images, labels, layer_name):
    """Mean gain in the label's log-probability, one swapped filter at a time,
    with the tail of the Sequential model run layer by layer."""
    index = [layer.name for layer in model.layers].index(layer_name)
    head = keras.Sequential(model.layers[:index + 1])
    tail = model.layers[index + 1:]
    probabilities = model.layers[-1].get_config()["activation"] == "softmax"

    def log_prob(h):
        for layer in tail:
            h = layer(h)
        out = np.asarray(h, np.float64)
        if probabilities:
            logp = np.log(np.maximum(out, exact.LOG_PROB_EPSILON))
        else:
            logp = special.log_softmax(out, axis=-1)
        return logp[np.arange(len(labels)), labels]

    clean = np.asarray(head(scale(images)))
    gains = []
    for k, level in enumerate(LEVELS):
        dist = np.asarray(head(scale(pattern_noise(images, level, k))))
        base = log_prob(dist)
        per_filter = []
        for j in range(clean.shape[-1]):
            swapped = dist.copy()
            swapped[..., j] = clean[..., j]
            per_filter.append(np.mean(log_prob(swapped) - base))
        gains.append(per_filter)
    return np.mean(gains, axis=0)


# --------------------------------------------------------------------------
# The continuous score
# --------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [None, "softmax"])
@pytest.mark.parametrize("layer,batch_size", [("c1", 256), ("c2", 7)])
def test_log_prob_matches_brute_force(activation, layer, batch_size):
    model = tiny_model(activation)
    images = make_images(20)
    labels = own_labels(model, images)
    result = run_rank(model, images, labels, layers=[layer], score="log_prob",
                      batch_size=batch_size)
    expected = brute_force_log_prob(model, images, labels, layer)
    assert result.score == "log_prob"
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(result.priorities[layer], expected, atol=1e-5)


def test_log_prob_is_finer_than_the_top1_gain():
    model = tiny_model()
    images = make_images(12)
    labels = own_labels(model, images)
    gain = run_rank(model, images, labels, layers=["c1"], score="gain")
    log_prob = run_rank(model, images, labels, layers=["c1"])  # the default score
    assert len(np.unique(log_prob.priorities["c1"])) == 6
    assert len(np.unique(gain.priorities["c1"])) < 6


def test_contributions_average_to_the_scores():
    base = exact.Outcomes(hits=np.array([[1, 0, 0], [0, 0, 1]], np.int8),
                          log_probs=np.log([[0.5, 0.2, 0.1], [0.3, 0.3, 0.6]]))
    swapped = exact.Outcomes(
        hits=np.array([[[1, 1, 0], [0, 0, 0]], [[1, 0, 1], [0, 1, 1]]], np.int8),
        log_probs=np.log([[[0.6, 0.5, 0.1], [0.4, 0.1, 0.1]],
                          [[0.5, 0.3, 0.7], [0.2, 0.5, 0.6]]]))
    for score in ("gain", "log_prob"):
        per_image = exact.contributions(swapped, base, score)
        assert per_image.shape == (2, 2, 3)
        np.testing.assert_allclose(per_image.mean(axis=(0, 2)),
                                   exact.scores(swapped, base, score))
    np.testing.assert_allclose(exact.scores(swapped, base, "gain"), [1 / 3, 0.0])
    with pytest.raises(ValueError, match="relative_error"):
        exact.contributions(swapped, base, "relative_error")


# --------------------------------------------------------------------------
# Reliability
# --------------------------------------------------------------------------


def test_split_halves_are_disjoint_reproducible_and_seeded():
    a, b = split_halves(11, seed=3)
    assert len(a) == 5 and len(b) == 6
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(11))
    again = split_halves(11, seed=3)
    np.testing.assert_array_equal(a, again[0])
    assert not np.array_equal(a, split_halves(11, seed=4)[0])


@pytest.mark.parametrize("score", ["gain", "log_prob", "relative_error", "log_prob_magnitude"])
def test_split_half_equals_ranking_each_half(score):
    model = tiny_model()
    images = make_images(30)
    labels = own_labels(model, images)
    full = run_rank(model, images, labels, layers=["c1"], score=score, seed=5)
    rel = full.reliability("c1")
    half_a, half_b = rel.halves
    np.testing.assert_array_equal(half_a, split_halves(30, 5)[0])
    parts = [run_rank(model, images[h], labels[h], layers=["c1"], score=score, seed=5)
             for h in (half_a, half_b)]
    for got, part in zip(rel.half_priorities, parts):
        np.testing.assert_allclose(got, part.priorities["c1"], atol=1e-6)
    r = stats.spearmanr(parts[0].priorities["c1"], parts[1].priorities["c1"])[0]
    assert np.isfinite(r), "test needs half priorities that vary"
    assert rel.split_half == pytest.approx(r, abs=1e-12)
    assert rel.spearman_brown == pytest.approx(2 * r / (1 + r), abs=1e-12)


def interval_widths(n):
    model = tiny_model()
    images = make_images(n, seed=1)
    labels = own_labels(model, images)
    result = run_rank(model, images, labels, layers=["c1"], score="log_prob")
    rel = result.reliability("c1")
    point = result.priorities["c1"]
    assert rel.resamples == 200
    assert np.all(rel.interval[0] <= point + 1e-12)
    assert np.all(point <= rel.interval[1] + 1e-12)
    return rel.interval[1] - rel.interval[0]


def test_bootstrap_interval_contains_priority_and_narrows_with_more_images():
    small, large = interval_widths(16), interval_widths(160)
    assert np.all(large > 0)
    assert large.mean() < 0.6 * small.mean()


def test_spearman_brown():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(1.0) == 1.0
    assert np.isnan(spearman_brown(float("nan")))


def test_merge_of_filter_shards_equals_the_whole():
    model = tiny_model()
    images = make_images(24)
    labels = own_labels(model, images)
    whole = run_rank(model, images, labels, score="log_prob")
    shards = [run_rank(model, images, labels, score="log_prob", filters=f)
              for f in ((0, 2), (2, 6))]
    assert np.isnan(shards[0].reliability("c1").half_priorities[:, 2:]).all()
    merged = Ranking.merge(shards)
    for name in whole.layer_names:
        np.testing.assert_allclose(merged.priorities[name], whole.priorities[name],
                                   atol=1e-9)
        a, b = merged.reliability(name), whole.reliability(name)
        np.testing.assert_allclose(a.half_priorities, b.half_priorities, atol=1e-9)
        np.testing.assert_allclose(a.interval, b.interval, atol=1e-9)
        assert a.split_half == pytest.approx(b.split_half, abs=1e-9)
        assert a.spearman_brown == pytest.approx(b.spearman_brown, abs=1e-9)
    other_seed = run_rank(model, images, labels, score="log_prob", filters=(2, 6), seed=1)
    with pytest.raises(ValueError, match="seed"):
        Ranking.merge([shards[0], other_seed])


def test_reliability_round_trips_and_old_files_still_load(tmp_path):
    model = tiny_model()
    images = make_images(12)
    labels = own_labels(model, images)
    result = run_rank(model, images, labels, layers=["c2"])
    path = tmp_path / "ranking.json"
    result.save(path)
    saved = json.loads(path.read_text())
    assert set(saved["reliability"]["c2"]) >= {"half_priorities", "interval", "spearman_brown"}
    loaded = Ranking.load(path, model=model)
    a, b = loaded.reliability("c2"), result.reliability("c2")
    np.testing.assert_array_equal(a.half_priorities, b.half_priorities)
    np.testing.assert_array_equal(a.interval, b.interval)
    assert (a.seed, a.resamples, a.num_images) == (b.seed, b.resamples, b.num_images)

    old = {  # a file as written before reliabilities were recorded
        "format": "deepcorrect.ranking", "version": 1, "model_name": "tiny",
        "layer_names": ["c2"], "filter_counts": {"c2": 5}, "distortion": "awgn",
        "levels": [10.0], "score": "gain", "site": "pre_activation", "method": "exact",
        "num_images": 12, "baseline_accuracy": [0.5], "extra": {},
        "priorities": {"c2": [0.1, 0.0, 0.2, None, -0.1]},
    }
    path.write_text(json.dumps(old))
    loaded = Ranking.load(path)
    assert loaded.reliability("c2") is None
    assert loaded.reliabilities == {}

    old["reliability"] = {"c2": {**saved["reliability"]["c2"], "interval": [[0.1]]}}
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"reliability\['c2'\]: interval"):
        Ranking.load(path)


def test_reliability_defaults_and_options():
    model = tiny_model()
    images = make_images(8)
    labels = own_labels(model, images)
    assert run_rank(model, images, labels, layers=["c1"], reliability=False) \
        .reliability("c1") is None
    approx = run_rank(model, images, labels, layers=["c1"], method="approx")
    assert approx.reliability("c1") is None
    with pytest.raises(ValueError, match="reliability"):
        run_rank(model, images, labels, method="approx", reliability=True)
    with pytest.raises(ValueError, match="log_prob"):
        run_rank(model, images, labels, method="approx", score="log_prob")
    with pytest.raises(ValueError, match="Unknown layer_name"):
        approx.reliability("c9")


def test_checkpoint_keeps_reliability(tmp_path):
    model = tiny_model()
    images = make_images(10)
    labels = own_labels(model, images)
    path = tmp_path / "ckpt.json"
    first = run_rank(model, images, labels, checkpoint=path)
    resumed = run_rank(model, images, labels, checkpoint=path)  # every layer done
    for name in first.layer_names:
        np.testing.assert_array_equal(resumed.reliability(name).interval,
                                      first.reliability(name).interval)


def test_reliability_summary_flags_low_values():
    good = Reliability(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), np.zeros((2, 3)), 10, 0, 200)
    bad = Reliability(np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 1.0]]), np.zeros((2, 3)), 10, 0, 200)
    assert good.is_reliable and "UNRELIABLE" not in good.summary()
    assert not bad.is_reliable and bad.summary().endswith("UNRELIABLE")


@pytest.mark.parametrize("score", ["log_prob", "log_prob_magnitude"])
def test_cli_prints_reliability_and_takes_log_prob(tmp_path, capsys, score):
    model = tiny_model("softmax")
    model_path = tmp_path / "tiny.keras"
    model.save(model_path)
    images = make_images(16).astype(np.uint8)
    labels = own_labels(model, images)[:, None]
    np.savez(tmp_path / "data.npz", x_train=images, y_train=labels,
             x_test=images, y_test=labels)
    out = tmp_path / "ranking.json"
    status = cli.main(["rank", "--model", str(model_path), "--data", str(tmp_path / "data.npz"),
                       "--distortion", "awgn", "--levels", "20", "40", "--layers", "c1",
                       "--score", score, "--batch-size", "64", "--out", str(out)])
    assert status in (0, None)
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if "split-half reliability" in line)
    assert line.startswith("c1: split-half reliability")
    saved = Ranking.load(out)
    assert saved.score == score
    direct = rank(model, images, labels[:, 0], "awgn", [20, 40], layers=["c1"], score=score,
                  progress=False)
    np.testing.assert_allclose(saved.priorities["c1"], direct.priorities["c1"], atol=1e-6)

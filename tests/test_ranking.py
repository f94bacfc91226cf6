"""Tests for deepcorrect.ranking (correction priority, Algorithm 1)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import deepcorrect
from deepcorrect import flat_program
from deepcorrect.ranking import Ranking, exact, rank, spearman

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR = REPO_ROOT / ".." / "shared" / "data" / "cifar10" / "cifar10.npz"
LEVELS = [30.0, 60.0]
N_IMAGES = 24


def noise(images, level, seed):
    """Additive Gaussian noise on the 0..255 scale, seeded."""
    rng = np.random.default_rng(seed)
    return images + rng.normal(0.0, level, images.shape).astype(np.float32)


def scale(images):
    return images / 127.5 - 1.0


def randomise_batch_norm(layers, seed):
    """Non-trivial BN statistics, so BN is not the identity."""
    rng = np.random.default_rng(seed)
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.2, beta.shape).astype("float32"),
                rng.normal(0, 0.2, mean.shape).astype("float32"),
                rng.uniform(0.5, 2.0, var.shape).astype("float32"),
            ])


def calibrate_head(model, images, seed=0):
    """Random classifier weights scaled to the features, so that a random
    network predicts varied classes and distortion changes its predictions."""
    dense = model.layers[-1]
    feats = np.array(keras.Model(model.input, dense.input)(scale(images)))
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, dense.kernel.shape) / (feats.std(0)[:, None] + 1e-6)
    dense.set_weights([w.astype("float32"), -(feats.mean(0) @ w).astype("float32")])


# --------------------------------------------------------------------------
# Two small models, each with an independent plain-Python forward pass whose
# `tap(layer, site, tensor)` hook lets the brute force replace one site.
# --------------------------------------------------------------------------


def plain_layers(seed=1):
    keras.utils.set_random_seed(seed)
    return {
        # c1 has a built-in activation: pre_activation needs the split.
        "c1": keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1"),
        "c2": keras.layers.Conv2D(8, 3, padding="same", name="c2"),
        "b2": keras.layers.BatchNormalization(name="b2"),
        "r2": keras.layers.ReLU(name="r2"),
        "pool": keras.layers.MaxPooling2D(name="pool"),
        "c3": keras.layers.Conv2D(8, 3, padding="same", name="c3"),
        "r3": keras.layers.ReLU(name="r3"),
        "gap": keras.layers.GlobalAveragePooling2D(name="gap"),
        "dense": keras.layers.Dense(5, activation="softmax", name="dense"),
    }


def plain_model(L, images):
    x = inputs = keras.Input((12, 12, 3))
    x = L["c1"](x)
    x = L["r2"](L["b2"](L["c2"](x)))
    x = L["r3"](L["c3"](L["pool"](x)))
    model = keras.Model(inputs, L["dense"](L["gap"](x)), name="plain")
    randomise_batch_norm(model.layers, 2)
    calibrate_head(model, images)
    return model


def plain_forward(L, x, tap):
    c1 = L["c1"]
    linear = tf.nn.conv2d(x, c1.kernel, 1, "SAME") + c1.bias
    h = tap("c1", "pre_activation", linear)
    h = tap("c1", "post_activation", tf.nn.relu(h))
    h = tap("c2", "pre_activation", L["c2"](h))
    h = tap("c2", "post_activation", L["r2"](L["b2"](h, training=False)))
    h = tap("c3", "pre_activation", L["c3"](L["pool"](h)))
    h = tap("c3", "post_activation", L["r3"](h))
    return L["dense"](L["gap"](h))


def residual_layers(seed=3):
    keras.utils.set_random_seed(seed)
    return {
        "c1": keras.layers.Conv2D(6, 3, padding="same", name="c1"),
        "r1": keras.layers.ReLU(name="r1"),
        "c2": keras.layers.Conv2D(6, 3, padding="same", name="c2"),
        "ra": keras.layers.ReLU(name="ra"),
        "ca": keras.layers.Conv2D(6, 3, padding="same", name="ca"),
        "bb": keras.layers.BatchNormalization(name="bb"),
        "add": keras.layers.Add(name="add"),
        "r_out": keras.layers.ReLU(name="r_out"),
        "gap": keras.layers.GlobalAveragePooling2D(name="gap"),
        "dense": keras.layers.Dense(4, name="logits"),
    }


def residual_model(L, images):
    inputs = keras.Input((12, 12, 3))
    r1 = L["r1"](L["c1"](inputs))
    s = L["c2"](r1)  # feeds two branches; r1 also feeds the add
    a = L["ca"](L["ra"](s))
    b = L["bb"](s)
    out = L["r_out"](L["add"]([a, b, r1]))
    model = keras.Model(inputs, L["dense"](L["gap"](out)), name="residual")
    randomise_batch_norm(model.layers, 4)
    calibrate_head(model, images)
    return model


def residual_forward(L, x, tap):
    h = tap("c1", "pre_activation", L["c1"](x))
    r1 = tap("c1", "post_activation", L["r1"](h))
    s = L["c2"](r1)
    s = tap("c2", "pre_activation", s)
    s = tap("c2", "post_activation", s)  # two consumers: the chain stops
    a = L["ca"](L["ra"](s))
    b = L["bb"](s, training=False)
    out = L["r_out"](L["add"]([a, b, r1]))
    return L["dense"](L["gap"](out))


def inverted_layers(seed=5):
    """A MobileNetV2-style inverted residual block."""
    keras.utils.set_random_seed(seed)
    return {
        "stem": keras.layers.Conv2D(4, 3, padding="same", name="stem"),
        "expand": keras.layers.Conv2D(8, 1, name="expand"),
        "bn_e": keras.layers.BatchNormalization(name="bn_e"),
        "relu6": keras.layers.ReLU(6.0, name="relu6"),
        "dw": keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
        "bn_d": keras.layers.BatchNormalization(name="bn_d"),
        "relu_d": keras.layers.ReLU(name="relu_d"),
        "project": keras.layers.Conv2D(4, 1, name="project"),
        "add": keras.layers.Add(name="add"),
        "gap": keras.layers.GlobalAveragePooling2D(name="gap"),
        "dense": keras.layers.Dense(4, activation="softmax", name="probs"),
    }


def inverted_model(L, images):
    inputs = keras.Input((12, 12, 3))
    stem = L["stem"](inputs)
    h = L["relu6"](L["bn_e"](L["expand"](stem)))
    h = L["relu_d"](L["bn_d"](L["dw"](h)))
    out = L["add"]([stem, L["project"](h)])
    model = keras.Model(inputs, L["dense"](L["gap"](out)), name="inverted")
    randomise_batch_norm(model.layers, 6)
    calibrate_head(model, images)
    return model


def inverted_forward(L, x, tap):
    stem = tap("stem", "pre_activation", L["stem"](x))
    stem = tap("stem", "post_activation", stem)
    h = tap("expand", "pre_activation", L["expand"](stem))
    h = tap("expand", "post_activation", L["relu6"](L["bn_e"](h, training=False)))
    h = tap("dw", "pre_activation", L["dw"](h))
    h = tap("dw", "post_activation", L["relu_d"](L["bn_d"](h, training=False)))
    out = L["add"]([stem, L["project"](h)])
    return L["dense"](L["gap"](out))


def chain_layers(seed=7):
    """A chain whose first mixing layers exercise the incremental path."""
    keras.utils.set_random_seed(seed)
    return {
        "a": keras.layers.Conv2D(5, 3, padding="same", name="a"),
        "a_bn": keras.layers.BatchNormalization(name="a_bn"),
        "a_relu": keras.layers.ReLU(name="a_relu"),
        # stride 2, 'valid' padding, a built-in activation
        "m1": keras.layers.Conv2D(6, 3, strides=2, padding="valid",
                                  activation="relu", name="m1"),
        # dilation, no bias
        "m2": keras.layers.Conv2D(7, 3, dilation_rate=2, padding="same",
                                  use_bias=False, name="m2"),
        "m2_relu": keras.layers.ReLU(name="m2_relu"),
        # an even kernel, stride 2, 'same' padding on an odd size (asymmetric)
        "m3": keras.layers.Conv2D(5, 2, strides=2, padding="same", name="m3"),
        "m3_bn": keras.layers.BatchNormalization(name="m3_bn"),
        "m3_relu": keras.layers.ReLU(name="m3_relu"),
        "flatten": keras.layers.Flatten(name="flatten"),
        "dense": keras.layers.Dense(4, activation="softmax", name="probs"),
    }


def chain_model(L, images):
    x = inputs = keras.Input((12, 12, 3))
    x = L["a_relu"](L["a_bn"](L["a"](x)))
    x = L["m2_relu"](L["m2"](L["m1"](x)))
    x = L["m3_relu"](L["m3_bn"](L["m3"](x)))
    model = keras.Model(inputs, L["dense"](L["flatten"](x)), name="chain")
    randomise_batch_norm(model.layers, 8)
    calibrate_head(model, images)
    return model


def chain_forward(L, x, tap):
    h = tap("a", "pre_activation", L["a"](x))
    h = tap("a", "post_activation", L["a_relu"](L["a_bn"](h, training=False)))
    m1 = L["m1"]
    h = tap("m1", "pre_activation", tf.nn.conv2d(h, m1.kernel, 2, "VALID") + m1.bias)
    h = tap("m1", "post_activation", tf.nn.relu(h))
    h = tap("m2", "pre_activation", L["m2"](h))
    h = tap("m2", "post_activation", L["m2_relu"](h))
    h = tap("m3", "pre_activation", L["m3"](h))
    h = tap("m3", "post_activation", L["m3_relu"](L["m3_bn"](h, training=False)))
    return L["dense"](L["flatten"](h))


def brute_force(forward, L, images, labels, layer, site, score="gain"):
    """Algorithm 1 as a naive loop: one full forward pass per filter swap."""
    clean_x = tf.constant(scale(images.astype(np.float32)))
    per_level = []
    for k, level in enumerate(LEVELS):
        dist_x = tf.constant(scale(noise(images.astype(np.float32), level, k)))
        record = {}

        def grab(name, where, t):
            if (name, where) == (layer, site):
                record["clean"] = np.array(t)
            return t

        forward(L, clean_x, grab)
        clean_site = record["clean"]
        accuracy = lambda out: np.mean(np.argmax(np.array(out), -1) == labels)
        base = accuracy(forward(L, dist_x, lambda n, w, t: t))
        scores = []
        for j in range(clean_site.shape[-1]):

            def swap(name, where, t, j=j):
                if (name, where) != (layer, site):
                    return t
                t = np.array(t)
                t[..., j] = clean_site[..., j]
                return tf.constant(t)

            acc = accuracy(forward(L, dist_x, swap))
            if score == "gain":
                scores.append(acc - base)
            else:
                scores.append(abs(acc - base) / (1 - base) if base < 1 else 0.0)
        per_level.append(scores)
    return np.mean(per_level, axis=0)


def own_labels(model, images):
    """Labels the model gets right on clean images, so swaps matter."""
    return np.argmax(np.array(model(scale(images.astype(np.float32)))), -1)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (N_IMAGES, 12, 12, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def plain(images):
    L = plain_layers()
    model = plain_model(L, images)
    return model, L, own_labels(model, images)


@pytest.fixture(scope="module")
def residual(images):
    L = residual_layers()
    model = residual_model(L, images)
    return model, L, own_labels(model, images)


def run_rank(model, images, labels, **kwargs):
    """`rank` with the paper's top-1 gain (the brute-force references count top-1 hits)."""
    kwargs.setdefault("progress", False)
    if kwargs.get("method", "exact") == "exact":
        kwargs.setdefault("score", "gain")
    return rank(model, images, labels, noise, LEVELS, preprocess=scale, **kwargs)


# --------------------------------------------------------------------------
# (1) exact swap scores equal the brute force
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer,site,batch_size",
    [
        ("c1", "pre_activation", 1000),  # split of a built-in activation
        ("c1", "post_activation", 50),
        ("c2", "pre_activation", 7),  # several image chunks, one swap each
        ("c2", "post_activation", 100),  # through BN + ReLU, 4 swaps per pass
        ("c3", "pre_activation", 256),
    ],
)
def test_plain_matches_brute_force(images, plain, layer, site, batch_size):
    model, L, labels = plain
    result = run_rank(model, images, labels, layers=[layer], site=site,
                      batch_size=batch_size)
    expected = brute_force(plain_forward, L, images, labels, layer, site)
    assert np.abs(expected).max() > 0, "test needs swaps that change predictions"
    np.testing.assert_allclose(result.priorities[layer], expected, atol=1e-12)


@pytest.mark.parametrize(
    "layer,site",
    [("c2", "pre_activation"), ("c2", "post_activation"), ("c1", "post_activation")],
)
def test_residual_matches_brute_force(images, residual, layer, site):
    model, L, labels = residual
    result = run_rank(model, images, labels, layers=[layer], site=site,
                      batch_size=60)
    expected = brute_force(residual_forward, L, images, labels, layer, site)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(result.priorities[layer], expected, atol=1e-12)


@pytest.mark.parametrize(
    "layer,site",
    [("expand", "pre_activation"), ("dw", "post_activation"), ("stem", "pre_activation")],
)
def test_inverted_residual_matches_brute_force(images, layer, site):
    L = inverted_layers()
    model = inverted_model(L, images)
    labels = own_labels(model, images)
    result = run_rank(model, images, labels, layers=[layer], site=site,
                      batch_size=60)
    expected = brute_force(inverted_forward, L, images, labels, layer, site)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(result.priorities[layer], expected, atol=1e-12)


@pytest.fixture(scope="module")
def chain(images):
    L = chain_layers()
    model = chain_model(L, images)
    return model, L, own_labels(model, images)


@pytest.mark.parametrize("site", ["pre_activation", "post_activation"])
def test_incremental_mixing_layer_matches_brute_force(images, chain, site):
    """Conv mixes with stride 2 + 'valid' padding + built-in activation, with
    dilation and no bias, with an even kernel and asymmetric 'same' padding,
    and Flatten + Dense; ranked together, so `m1` (the mixing layer of `a`)
    is itself split into its linear part and activation."""
    model, L, labels = chain
    layers = ["a", "m1", "m2", "m3"]
    result = run_rank(model, images, labels, layers=layers, site=site,
                      batch_size=60)
    for layer in layers:
        expected = brute_force(chain_forward, L, images, labels, layer, site)
        assert np.abs(expected).max() > 0, layer
        np.testing.assert_allclose(result.priorities[layer], expected, atol=1e-12,
                                   err_msg=layer)


def mix_of(model, layer, site="pre_activation", split=()):
    program = flat_program.Program(
        model, split=[model.get_layer(n) for n in split])
    target = model.get_layer(layer)
    assert flat_program.site_for(program, target, site).mix is None
    mix = flat_program.site_for(program, target, site, incremental=True).mix
    return None if mix is None else (mix.kind, mix.layer.name, mix.activate)


def test_incremental_path_is_taken_where_it_applies(images, chain, residual):
    """The brute-force tests above go through the incremental path (not the
    fallback) exactly where the first mixing layer is a single-consumer
    Conv2D/Dense."""
    model = chain[0]
    assert mix_of(model, "a") == ("conv", "m1", True)
    assert mix_of(model, "a", split=["m1"]) == ("conv", "m1", False)
    assert mix_of(model, "m1", split=["m1"]) == ("conv", "m2", True)
    assert mix_of(model, "m2") == ("conv", "m3", True)
    assert mix_of(model, "m3") == ("flatten_dense", "probs", True)
    inverted = inverted_model(inverted_layers(), images)
    assert mix_of(inverted, "expand") == ("conv", "project", True)
    assert mix_of(inverted, "dw", "post_activation") == ("conv", "project", True)
    assert mix_of(inverted, "stem") is None  # feeds the residual add too
    assert mix_of(residual[0], "c2") is None  # a branch point
    assert mix_of(residual[0], "ca") is None  # an Add follows


def test_swap_is_pushed_past_per_channel_layers(images, plain, residual):
    """The swap point moves past BN/ReLU/pooling, never past a branch point."""
    program = flat_program.Program(plain[0], split=[plain[0].get_layer("c2")])
    site = flat_program.site_for(program, plain[0].get_layer("c2"), "pre_activation")
    assert program.steps[program.producer[site.swap_key]].layer.name == "pool"
    model = residual[0]
    program = flat_program.Program(model)
    site = flat_program.site_for(program, model.get_layer("c2"), "pre_activation")
    assert site.swap_key == site.key  # c2 feeds two branches
    assert len(site.boundary) == 1  # r1, read by the add


def test_relative_error_score_matches_brute_force(images, residual):
    model, L, labels = residual
    result = run_rank(model, images, labels, layers=["c2"],
                      score="relative_error")
    expected = brute_force(residual_forward, L, images, labels, "c2",
                           "pre_activation", score="relative_error")
    np.testing.assert_allclose(result.priorities["c2"], expected, atol=1e-12)
    assert result.score == "relative_error"


def test_log_prob_magnitude_is_the_magnitude_of_the_log_prob_score(images, plain):
    model, _, labels = plain
    kwargs = dict(layers=["c2", "c1"], seed=3)
    result = run_rank(model, images, labels, score="log_prob_magnitude", **kwargs)
    signed = run_rank(model, images, labels, score="log_prob", **kwargs)
    assert np.any(signed.priorities["c2"] < 0), "test needs a swap that hurts"
    for name in ("c1", "c2"):
        np.testing.assert_allclose(result.priorities[name], np.abs(signed.priorities[name]),
                                   atol=1e-12)
    assert result.score == "log_prob_magnitude"
    assert result.order("c2").tolist() == np.argsort(-np.abs(signed.priorities["c2"]),
                                                     kind="stable").tolist()


def test_baseline_accuracy_and_metadata(images, plain):
    model, _, labels = plain
    result = run_rank(model, images, labels, layers=["c2", "c1"])
    assert result.layer_names == ["c1", "c2"]  # model order
    assert result.filter_counts == {"c1": 6, "c2": 8}
    assert result.model_name == "plain"
    assert result.distortion == "noise"
    assert result.levels == LEVELS
    assert result.num_images == N_IMAGES
    for k, level in enumerate(LEVELS):
        x = scale(noise(images, level, k))
        expected = np.mean(np.argmax(np.array(model(x)), -1) == labels)
        assert result.baseline_accuracy[k] == pytest.approx(expected)


def test_nested_model_layer_is_ranked(images, plain):
    model, L, labels = plain
    outer = keras.Sequential([keras.Input((12, 12, 3)), model], name="outer")
    result = run_rank(outer, images, labels, layers=["c2"])
    expected = brute_force(plain_forward, L, images, labels, "c2", "pre_activation")
    np.testing.assert_allclose(result.priorities["c2"], expected, atol=1e-12)


def test_all_conv_layers_by_default(images, residual):
    model, _, labels = residual
    result = run_rank(model, images, labels)
    assert result.layer_names == ["c1", "c2", "ca"]
    assert all(v.shape == (6,) for v in result.priorities.values())


# --------------------------------------------------------------------------
# Ranking: order, top, global order, JSON, merge
# --------------------------------------------------------------------------


def make_ranking(values=(0.1, 0.3, 0.3, 0.0, -0.2, 0.3, 0.05)):
    return Ranking({"a": np.array(values), "b": np.array([0.3, 0.2])},
                   model_name="m", filter_counts={"a": len(values), "b": 2})


def test_order_is_descending_and_stable():
    r = make_ranking()
    assert r.order("a").tolist() == [1, 2, 5, 0, 6, 3, 4]


@pytest.mark.parametrize("beta,count", [(0.5, 4), (1.0, 7), (0.01, 1), (3 / 7, 3)])
def test_top_rounds_up(beta, count):
    r = make_ranking()
    assert r.top("a", beta).tolist() == r.order("a")[:count].tolist()
    assert count == max(1, math.ceil(beta * 7 - 1e-9))


@pytest.mark.parametrize("beta", [0, -0.1, 1.5, "half"])
def test_top_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        make_ranking().top("a", beta)


def test_global_order_zscore_matches_standardised_values_sorted_by_hand():
    rng = np.random.default_rng(3)
    priorities = {"a": rng.uniform(0.3, 0.9, 8), "b": rng.normal(0.01, 0.002, 24),
                  "c": np.full(4, 0.2)}
    r = Ranking(priorities, "m", {k: v.size for k, v in priorities.items()})
    expected = []
    for li, (name, v) in enumerate(priorities.items()):
        z = (v - v.mean()) / v.std() if v.std() > 0 else np.zeros_like(v)
        expected += [(-z[j], li, j, name) for j in range(v.size)]
    expected = [(name, j) for _, _, j, name in sorted(expected)]
    assert r.global_order("zscore") == expected
    # Raw priorities put all of layer a first; standardised ones interleave a and b.
    assert [n for n, _ in r.global_order()][:8] == ["a"] * 8
    top = r.global_top(0.25, "zscore")
    assert sum(len(v) for v in top.values()) == 9 and len(top["b"]) > 0


def test_global_order_rejects_an_unknown_normalization():
    with pytest.raises(ValueError, match="normalization"):
        Ranking({"a": np.ones(2)}, "m", {"a": 2}).global_order("minmax")


def test_global_order_ties_prefer_earlier_layer():
    r = make_ranking()
    order = r.global_order()
    assert order[:4] == [("a", 1), ("a", 2), ("a", 5), ("b", 0)]
    assert len(order) == 9
    top = r.global_top(4 / 9)
    assert top["a"].tolist() == [1, 2, 5] and top["b"].tolist() == [0]


def test_json_round_trip(tmp_path, images, plain):
    model, _, labels = plain
    result = run_rank(model, images, labels, layers=["c1", "c3"])
    path = tmp_path / "ranking.json"
    result.save(path)
    loaded = Ranking.load(path, model=model)
    assert loaded.layer_names == result.layer_names
    for name in result.layer_names:
        np.testing.assert_array_equal(loaded.priorities[name], result.priorities[name])
        assert loaded.order(name).tolist() == result.order(name).tolist()
    for field in ("model_name", "filter_counts", "distortion", "levels", "score",
                  "site", "method", "num_images", "baseline_accuracy"):
        assert getattr(loaded, field) == getattr(result, field)
    assert json.loads(path.read_text())["layer_names"] == ["c1", "c3"]
    assert not list(tmp_path.glob("*.tmp"))


def test_load_and_wrap_agree_on_which_models_fit(tmp_path, images, plain):
    """Layer names and filter counts must match (in `Ranking.load`,
    `check_model` and `wrap` alike); another model name only warns."""
    model, _, labels = plain
    path = tmp_path / "ranking.json"
    ranking = run_rank(model, images, labels, layers=["c2"])
    ranking.save(path)
    renamed = keras.Model(model.inputs, model.outputs, name="renamed")
    with pytest.warns(UserWarning, match="made for model 'plain' and is used with "
                                         "model 'renamed'"):
        Ranking.load(path, model=renamed)
    with pytest.warns(UserWarning, match="made for model 'plain'"):
        wrapped = deepcorrect.wrap(renamed, ranking)
    assert "c2" in deepcorrect.correction_units(wrapped)
    # Same name, different filter count.
    x = inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, name="c1")(x)
    x = keras.layers.Conv2D(9, 3, name="c2")(x)
    other = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="plain")
    for call in (lambda: Ranking.load(path, model=other),
                 lambda: ranking.check_model(other),
                 lambda: deepcorrect.wrap(other, ranking)):
        with pytest.raises(ValueError, match="'c2' has 8 filters but the model's "
                                             "layer has 9 .filter counts differ."):
            call()
    # Same name, no such layer: refused even when wrap corrects another layer.
    x = inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, name="c1")(x)
    third = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="plain")
    both = run_rank(model, images, labels, layers=["c1", "c2"], filters=(0, 1))
    both.filter_counts["c1"] = 8  # as if ranked on `third`'s c1
    both.priorities["c1"] = np.arange(8.0)
    for call in (lambda: Ranking.load(path, model=third),
                 lambda: deepcorrect.wrap(third, both, layers=["c1"])):
        with pytest.raises(ValueError, match="'c2' is not a conv layer of model "
                                             "'plain' .layer names differ."):
            call()


def bad_file(tmp_path, edit):
    data = make_ranking().to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d.pop("priorities"), "has no 'priorities' field"),
        (lambda d: d.pop("model_name"), "has no 'model_name' field"),
        (lambda d: d.pop("format"), "missing format tag"),
        (lambda d: d.update(model_name=3), "model_name must be a string"),
        (lambda d: d.update(layer_names="a"), "layer_names must be a list of distinct"),
        (lambda d: d.update(layer_names=["a", "a"]), "layer_names must be a list of distinct"),
        (lambda d: d.update(filter_counts=[7, 2]), "filter_counts must be an object"),
        (lambda d: d["filter_counts"].update(a="seven"),
         r"filter_counts\['a'\] must be a positive integer. Received: "
         r"filter_counts\['a'\]='seven'"),
        (lambda d: d["filter_counts"].update(a=8),
         r"priorities\['a'\] holds 7 values but filter_counts\['a'\] is 8"),
        (lambda d: d["priorities"].update(b=[0.1, "x"]),
         r"priorities\['b'\] must be a list of numbers"),
        (lambda d: d["priorities"].pop("b"),
         r"priorities must have one entry per layer .* missing: \['b'\]"),
        (lambda d: d["filter_counts"].update(c=3), r"not in layer_names: \['c'\]"),
        (lambda d: d.update(levels="1,2"), "levels must be a list of numbers"),
        (lambda d: d.update(site="middle"), "site must be one of"),
        (lambda d: d.update(num_images=-1), "num_images must be a non-negative integer"),
        (lambda d: d.update(version="1"), "version must be an integer"),
        (lambda d: d.update(version=99), "newer than this library"),
    ],
)
def test_load_names_the_file_and_what_is_wrong(tmp_path, edit, match):
    path = bad_file(tmp_path, edit)
    with pytest.raises(ValueError, match=match) as info:
        Ranking.load(path)
    assert type(info.value) is ValueError
    assert f"Ranking file {str(path)!r}" in str(info.value)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"{", "is not valid JSON: Expecting property name"),
        (b"[1, 2]", "a JSON object is expected, found list"),
        (b"\xff\xfe\x00", "is not UTF-8 text"),
    ],
)
def test_load_refuses_what_is_no_ranking(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        Ranking.load(path)
    assert str(path) in str(info.value)


def test_wrap_cli_prints_one_line_for_a_bad_ranking(tmp_path, plain):
    model_path = tmp_path / "plain.keras"
    plain[0].save(model_path)
    ranking = bad_file(tmp_path, lambda d: d["filter_counts"].update(a=8))
    proc = subprocess.run(
        [sys.executable, "-m", "deepcorrect", "wrap", "--model", str(model_path),
         "--ranking", str(ranking), "--out", str(tmp_path / "w.keras")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "holds 7 values but filter_counts" in last


def test_unknown_distortion_is_worded_like_distort(images, plain):
    import distort

    model, _, labels = plain
    with pytest.raises(ValueError) as ours:
        rank(model, images, labels, "fog", LEVELS, progress=False)
    with pytest.raises(ValueError) as theirs:
        distort.apply(images, "fog", 1.0)
    allowed = f"must be one of {distort.names()}"
    assert allowed in str(theirs.value) and "Received: name='fog'" in str(theirs.value)
    assert str(ours.value).startswith(f"distortion {allowed} or a callable")
    assert str(ours.value).endswith("Received: distortion='fog'")


def test_merge_filter_ranges_and_layers(images, plain):
    model, _, labels = plain
    full = run_rank(model, images, labels, layers=["c1", "c2"])
    part_a = run_rank(model, images, labels, layers=["c1", "c2"], filters=(0, 3))
    part_b = run_rank(model, images, labels, layers=["c2"], filters=(3, 100))
    part_c = run_rank(model, images, labels, layers=["c1"], filters=(3, 6))
    assert np.isnan(part_a.priorities["c2"][3:]).all()
    with pytest.raises(ValueError, match="partly ranked"):
        part_a.order("c2")
    merged = Ranking.merge([part_a, part_b, part_c])
    assert merged.layer_names == ["c1", "c2"]
    for name in ("c1", "c2"):
        np.testing.assert_array_equal(merged.priorities[name], full.priorities[name])
    other_levels = rank(model, images, labels, noise, [10.0], preprocess=scale,
                        layers=["c2"], progress=False)
    with pytest.raises(ValueError, match="levels"):
        Ranking.merge([part_a, other_levels])


# --------------------------------------------------------------------------
# (3) checkpoint and resume
# --------------------------------------------------------------------------


def test_resume_from_checkpoint(tmp_path, images, residual, monkeypatch):
    model, _, labels = residual
    path = tmp_path / "ckpt.json"
    reference = run_rank(model, images, labels)

    original = exact.swap_counts
    calls = []

    def crash_on_second_layer(program, site, *args, **kwargs):
        calls.append(site.layer_name)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return original(program, site, *args, **kwargs)

    monkeypatch.setattr(exact, "swap_counts", crash_on_second_layer)
    with pytest.raises(KeyboardInterrupt):
        run_rank(model, images, labels, checkpoint=path)
    saved = json.loads(path.read_text())
    assert saved["extra"]["done"] == ["c1"]
    assert saved["priorities"]["c2"] == [None] * 6

    calls.clear()
    def spy(program, site, *args, **kwargs):
        calls.append(site.layer_name)
        return original(program, site, *args, **kwargs)

    monkeypatch.setattr(exact, "swap_counts", spy)
    resumed = run_rank(model, images, labels, checkpoint=path)
    assert calls == ["c2", "ca"]  # c1 was not recomputed
    for name in reference.layer_names:
        np.testing.assert_array_equal(resumed.priorities[name],
                                      reference.priorities[name])


def test_checkpoint_of_another_run_is_refused(tmp_path, images, residual):
    model, _, labels = residual
    path = tmp_path / "ckpt.json"
    run_rank(model, images, labels, layers=["c1"], checkpoint=path)
    with pytest.raises(ValueError, match="levels"):
        rank(model, images, labels, noise, [5.0], layers=["c1"],
             preprocess=scale, checkpoint=path, progress=False)


# --------------------------------------------------------------------------
# (4) approximate mode
# --------------------------------------------------------------------------


def test_approx_shapes_and_metadata(images, residual):
    model, _, labels = residual
    result = run_rank(model, images, labels, method="approx", batch_size=10)
    assert result.method == "approx" and result.score == "first_order_loss"
    assert {k: v.shape for k, v in result.priorities.items()} == {
        "c1": (6,), "c2": (6,), "ca": (6,)}
    assert all(np.isfinite(v).all() for v in result.priorities.values())
    # Batching does not change the estimate.
    again = run_rank(model, images, labels, method="approx", batch_size=N_IMAGES)
    for name in result.layer_names:
        np.testing.assert_allclose(again.priorities[name], result.priorities[name],
                                   rtol=1e-4, atol=1e-7)


def test_approx_batches_shrink_to_the_memory_budget_with_the_same_estimate(images, residual,
                                                                          monkeypatch):
    import deepcorrect.adaptation
    from deepcorrect.flat_program import Program
    from deepcorrect.ranking import approx

    model, _, labels = residual
    x = scale(images)
    per_image = sum(int(np.prod(v.shape)) * 4 for v in Program(model).run(
        {Program(model).input: x[:1].astype("float32")}, range(len(Program(model).steps))).values())
    # A budget of 2.5 images' backward passes allows 2 images per batch.
    budget = int(2.5 * approx.BACKWARD_FACTOR * per_image)
    assert approx.memory_batch_size(Program(model), x[0], N_IMAGES, budget) == 2
    assert approx.memory_batch_size(Program(model), x[0], N_IMAGES, 10**12) == N_IMAGES
    assert approx.memory_batch_size(Program(model), x[0], N_IMAGES, 1) == 1
    whole = run_rank(model, images, labels, method="approx", batch_size=N_IMAGES)
    monkeypatch.setattr(deepcorrect.adaptation, "IN_MEMORY_BYTES", budget)
    small = run_rank(model, images, labels, method="approx", batch_size=N_IMAGES)
    for name in whole.layer_names:
        np.testing.assert_allclose(small.priorities[name], whole.priorities[name],
                                   rtol=1e-4, atol=1e-7)


def test_approx_matches_finite_difference_for_small_swaps(plain):
    """With a tiny distortion the first-order term is the loss change."""
    model, L, _ = plain
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 255, (6, 12, 12, 3)).astype(np.float32)
    labels = own_labels(model, x)
    tiny = [0.5]
    result = rank(model, x, labels, noise, tiny, layers=["c3"],
                  preprocess=scale, method="approx", progress=False)
    clean_x = scale(x)
    dist_x = scale(noise(x, tiny[0], 0))
    record = {}

    def grab(key):
        def tap(name, where, t):
            if (name, where) == ("c3", "pre_activation"):
                record[key] = np.array(t)
            return t
        return tap

    loss = lambda out: float(np.sum(keras.losses.sparse_categorical_crossentropy(
        labels, out)))
    plain_forward(L, clean_x, grab("clean"))
    base_loss = loss(plain_forward(L, dist_x, grab("dist")))
    expected = []
    for j in range(8):
        def swap(name, where, t, j=j):
            if (name, where) != ("c3", "pre_activation"):
                return t
            t = np.array(t)
            t[..., j] = record["clean"][..., j]
            return tf.constant(t)
        expected.append(-(loss(plain_forward(L, dist_x, swap)) - base_loss) / len(x))
    # First order: equal up to the curvature (ReLU kinks) of the tail.
    np.testing.assert_allclose(result.priorities["c3"], expected, rtol=0,
                               atol=0.05 * np.max(np.abs(expected)))


def test_approx_linearises_where_the_exact_method_swaps(plain):
    """The estimate is the gradient at the swap point: after c2's batch norm, ReLU and pooling."""
    model, L, _ = plain
    x = np.random.default_rng(6).uniform(0, 255, (6, 12, 12, 3)).astype(np.float32)
    labels = own_labels(model, x)
    result = rank(model, x, labels, noise, [40.0], layers=["c2"], preprocess=scale,
                  method="approx", progress=False)

    def pooled(images):
        return L["pool"](L["r2"](L["b2"](L["c2"](L["c1"](images)), training=False)))

    clean, dist = pooled(scale(x)), pooled(scale(noise(x, 40.0, 0)))
    with tf.GradientTape() as tape:
        tape.watch(dist)
        out = L["dense"](L["gap"](L["r3"](L["c3"](dist))))
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, out))
    grad = tape.gradient(loss, dist)
    expected = -np.sum(np.asarray((clean - dist) * grad), axis=(0, 1, 2)) / len(x)
    np.testing.assert_allclose(result.priorities["c2"], expected, rtol=1e-4, atol=1e-6)


def load_cifar(n_train, n_test):
    if not CIFAR.exists():
        pytest.skip(f"CIFAR-10 not found at {CIFAR} (shared data)")
    with np.load(CIFAR, allow_pickle=False) as data:
        return (data["x_train"][:n_train], data["y_train"][:n_train].reshape(-1),
                data["x_test"][:n_test], data["y_test"][:n_test].reshape(-1))


def blur(images, level, seed):
    """Gaussian blur of standard deviation `level` pixels (deterministic)."""
    from scipy import ndimage

    return ndimage.gaussian_filter(images, sigma=(0, level, level, 0), mode="nearest")


def small_cifar_net(seed=0):
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((32, 32, 3))
    for i, width in enumerate([32, 64], start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.MaxPooling2D(name="pool3")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="cifar_small")


@pytest.mark.slow
def test_approx_correlates_with_exact_on_cifar():
    """A CIFAR-10 net trained for 1 epoch on 4,000 images (about 38% test
    accuracy); conv1 ranked on 200 test images under Gaussian blur."""
    x_train, y_train, x_test, y_test = load_cifar(4000, 200)
    model = small_cifar_net()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(scale(x_train.astype(np.float32)), y_train, batch_size=64, epochs=1,
              verbose=0)
    kwargs = dict(layers=["conv1"], preprocess=scale, progress=False, batch_size=800)
    levels = [0.5, 1.0, 1.5]
    exact = rank(model, x_test, y_test, blur, levels, **kwargs)
    approx = rank(model, x_test, y_test, blur, levels, method="approx", **kwargs)
    assert exact.baseline_accuracy[-1] < exact.baseline_accuracy[0]
    rho = spearman(exact, approx, "conv1")
    assert rho > 0.3, rho


# --------------------------------------------------------------------------
# (5) bad inputs
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(layers=["nope"]), "'nope' is not a layer"),
        (dict(layers=["b2"]), "'b2' is not a conv layer"),
        (dict(layers=[]), "layers"),
        (dict(images=np.zeros((0, 12, 12, 3))), "images"),
        (dict(labels=np.zeros(3, int)), "labels"),
        (dict(site="middle"), "site must be one of"),
        (dict(score="loss"), "score must be one of"),
        (dict(method="fast"), "method must be one of"),
        (dict(levels=[]), "levels"),
        (dict(distortion=3), "distortion"),
        (dict(batch_size=0), "batch_size"),
        (dict(filters=(4, 2)), "filters"),
        (dict(method="approx", score="relative_error"), "relative_error"),
    ],
)
def test_bad_inputs(images, plain, change, match):
    model, _, labels = plain
    args = dict(model=model, images=images, labels=labels, distortion=noise,
                levels=LEVELS, progress=False)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        rank(**args)

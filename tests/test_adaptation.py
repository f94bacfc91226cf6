"""Test-time repairs: batch-norm statistics adaptation (Schneider et al.) and TENT (Wang et al.).

Expectations are computed independently of `deepcorrect.adaptation`: each batch
norm's input is read through a Keras sub-model of the adapted model (or, inside a
correction unit, through the unit's own sublayers), and its mean and variance
are taken with NumPy over every axis but the channels.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import deepcorrect
from deepcorrect import adaptation
from studies.networks import build_network
from deepcorrect.units import CorrectionUnit

REPO = Path(__file__).resolve().parents[1]
MOBILENET_V2 = REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224.weights.h5"
SIZE = 16


# ---------------------------------------------------------------------------
# Models and references.


def _set_statistics(model: keras.Model, seed: int) -> None:
    """Gives every batch norm (units' too) real-looking, non-identity statistics."""
    rng = np.random.default_rng(seed)
    for layer in _all_batch_norms(model):
        c = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0, 0.5, c).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
        layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
        layer.beta.assign(rng.normal(0, 0.3, c).astype("float32"))


def _all_batch_norms(model: keras.Model) -> list:
    return [layer for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)]


def branchy_model(seed: int = 0) -> keras.Model:
    """Two parallel batch norms, a nested model, a batch norm on dense features, dropout."""
    keras.utils.set_random_seed(seed)
    inner = keras.Sequential([
        keras.Input((SIZE // 2, SIZE // 2, 4)),
        keras.layers.Conv2D(6, 3, padding="same", name="inner_conv"),
        keras.layers.BatchNormalization(name="inner_bn"),
        keras.layers.ReLU(name="inner_relu"),
    ], name="inner")
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(x)
    a = keras.layers.BatchNormalization(name="bn_a")(x)
    b = keras.layers.BatchNormalization(name="bn_b")(x)
    x = keras.layers.Add(name="add")([keras.layers.ReLU(name="relu_a")(a), b])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = inner(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.ReLU(name="relu2")(x))
    x = keras.layers.Dense(12, name="d1")(x)
    x = keras.layers.BatchNormalization(name="bn_d")(x)
    x = keras.layers.Dropout(0.5, name="drop")(keras.layers.ReLU(name="relu_d")(x))
    outputs = keras.layers.Dense(5, name="logits")(x)
    model = keras.Model(inputs, outputs, name="branchy")
    _set_statistics(model, seed)
    return model


def conv_bn_model(seed: int = 0) -> keras.Model:
    """A plain conv - BN - ReLU stack (flat), with a softmax, for wrap and export."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((6, 8), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="conv_bn")
    _set_statistics(model, seed)
    return model


def images(count: int = 24, seed: int = 0, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (count, size, size, 3))
    return np.clip(base * 0.6 + 40.0, 0, 255).astype("uint8")


def bn_input(model: keras.Model, name: str, x: np.ndarray) -> np.ndarray:
    """The input of batch norm `name` of `model` on `x`, through Keras sub-models."""
    if name == "inner_bn":
        inner = model.get_layer("inner")
        outer = keras.Model(model.inputs, model.get_layer("pool").output)
        return keras.Model(inner.inputs, inner.get_layer("inner_bn").input)(outer(x)).numpy()
    return keras.Model(model.inputs, model.get_layer(name).input)(x).numpy()


def numpy_moments(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = tuple(range(h.ndim - 1))
    h = h.astype(np.float64)
    return h.mean(axis=axes), h.var(axis=axes)


def stats(layer) -> tuple[np.ndarray, np.ndarray]:
    return layer.moving_mean.numpy(), layer.moving_variance.numpy()


def weights_by_path(model: keras.Model) -> dict[str, np.ndarray]:
    """Weights keyed by position and `layer/variable` (a clone's paths may lose a prefix)."""
    return {f"{i}:{'/'.join(w.path.split('/')[-2:])}": w.numpy()
            for i, w in enumerate(model.weights)}


def entropy(p: np.ndarray, from_logits: bool) -> float:
    p = np.asarray(p, np.float64)
    if from_logits:
        p = np.exp(p - p.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    return float(-(p * np.log(np.maximum(p, 1e-30))).sum(-1).mean())


@pytest.fixture(params=["in_memory", "passes"])
def mode(request, monkeypatch):
    """Both estimation strategies: one pass holding all activations, or one pass per layer."""
    if request.param == "passes":
        monkeypatch.setattr(adaptation, "IN_MEMORY_BYTES", 0)
    return request.param


# ---------------------------------------------------------------------------
# adapt_batch_norm: exact statistics, layer by layer.


BRANCHY_BNS = ["bn_a", "bn_b", "inner_bn", "bn2", "bn_d"]


def test_batch_norm_layers_lists_nested_and_unit_batch_norms():
    model = branchy_model()
    assert deepcorrect.batch_norm_layers(model) == BRANCHY_BNS
    wrapped = deepcorrect.wrap(conv_bn_model(), {"conv1": np.arange(6)}, beta=0.5, site="conv")
    assert deepcorrect.batch_norm_layers(wrapped) == [
        "conv1_unit/bn_0", "conv1_unit/bn_1", "conv1_unit/bn_2", "bn1", "bn2"]
    vgg_like = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
                                 keras.layers.Flatten(), keras.layers.Dense(2)])
    assert deepcorrect.batch_norm_layers(vgg_like) == []


def test_statistics_equal_numpy_moments_of_each_layer_input(mode):
    model, x = branchy_model(), images(24)
    before = weights_by_path(model)
    adapted = deepcorrect.adapt_batch_norm(model, x, batch_size=7)  # batches of 7, 7, 7, 3
    for name in BRANCHY_BNS:
        layer = (adapted.get_layer("inner").get_layer(name) if name == "inner_bn"
                 else adapted.get_layer(name))
        # The input through the ADAPTED model: earlier batch norms already adapted.
        mean, var = numpy_moments(bn_input(adapted, name, x))
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5,
                                   err_msg=name)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    # The first batch norms see the raw conv output: equal to the original model's.
    mean, var = numpy_moments(bn_input(model, "bn_a", x))
    np.testing.assert_allclose(stats(adapted.get_layer("bn_a"))[0], mean, rtol=1e-5, atol=1e-6)
    # A later one differs from a one-shot estimate on the unadapted model.
    stale, _ = numpy_moments(bn_input(model, "bn2", x))
    assert np.abs(stats(adapted.get_layer("bn2"))[0] - stale).max() > 1e-3
    # Nothing else changed, and the input model is untouched.
    after = weights_by_path(adapted)
    for path, value in before.items():
        if "moving_" not in path:
            np.testing.assert_array_equal(after[path], value, err_msg=path)
    for path, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_batch_size_does_not_change_the_statistics():
    model, x = branchy_model(), images(20)
    one = deepcorrect.adapt_batch_norm(model, x, batch_size=20)
    other = deepcorrect.adapt_batch_norm(model, x, batch_size=3)
    for a, b in zip(one.weights, other.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


@pytest.mark.parametrize("prior", [0.0, 8.0, 100.0])
def test_prior_mixes_source_and_target_statistics(prior, mode):
    model, x = branchy_model(), images(24)
    n = len(x)
    adapted = deepcorrect.adapt_batch_norm(model, x, prior=prior, batch_size=10)
    w = prior / (prior + n)
    for name in ["bn_a", "bn_b", "bn2", "bn_d"]:
        source_mean, source_var = stats(model.get_layer(name))
        target_mean, target_var = numpy_moments(bn_input(adapted, name, x))
        mean, var = stats(adapted.get_layer(name))
        np.testing.assert_allclose(mean, w * source_mean + (1 - w) * target_mean,
                                   rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(var, w * source_var + (1 - w) * target_var,
                                   rtol=1e-4, atol=1e-6, err_msg=name)
    if prior == 0.0:
        pure = deepcorrect.adapt_batch_norm(model, x)
        for a, b in zip(adapted.weights, pure.weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_adapted_model_runs_in_inference_mode_and_keeps_trainable_flags():
    model = branchy_model()
    model.get_layer("c1").trainable = False
    model.get_layer("bn_a").trainable = False
    x = images(12)
    adapted = deepcorrect.adapt_batch_norm(model, x)
    assert adapted is not model
    assert [layer.trainable for layer in adapted.layers] == [
        layer.trainable for layer in model.layers]
    full = adapted(x.astype("float32"), training=False).numpy()
    np.testing.assert_allclose(adapted(x[:3].astype("float32"), training=False).numpy(),
                               full[:3], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Folded (identity) batch norms: source-matched adaptation.


def fold(model: keras.Model) -> keras.Model:
    """The same function with each conv's batch norm folded into it (identity batch norms).

    As the shared MobileNetV2 weights: the conv kernel absorbs the scale, the
    batch norm keeps mean 0, variance 1 - epsilon, gamma 1 and the shift as beta.
    """
    folded = keras.models.clone_model(model)
    folded.set_weights(model.get_weights())
    for layer in folded.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        conv = folded.get_layer(layer.name.replace("bn", "conv"))
        mean, var = stats(layer)
        gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
        scale = gamma / np.sqrt(var + layer.epsilon)
        conv.kernel.assign(conv.kernel.numpy() * scale)
        if conv.use_bias:
            conv.bias.assign(conv.bias.numpy() * scale)
        layer.beta.assign(beta - mean * scale)
        layer.gamma.assign(np.ones_like(gamma))
        layer.moving_mean.assign(np.zeros_like(mean))
        layer.moving_variance.assign(np.full_like(var, 1.0 - layer.epsilon))
    return folded


@pytest.fixture(scope="module")
def cifar_net(cifar10_small):
    """A CIFAR10-quick net trained for a few steps, its batch norms set to clean statistics."""
    x, y = cifar10_small
    model = build_network("cifar10_quick", (32, 32, 3), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, shuffle=False, verbose=0)
    clean = x[256:384]
    return deepcorrect.adapt_batch_norm(model, clean), clean


def test_folded_cifar_net_source_matched_equals_real_batch_norm_adaptation(cifar_net):
    import distort

    model, clean = cifar_net
    folded = fold(model)
    assert deepcorrect.folded_batch_norms(folded) == ["bn1", "bn2", "bn3"]
    np.testing.assert_allclose(folded.predict(clean, verbose=0), model.predict(clean, verbose=0),
                               atol=1e-4)  # folding keeps the function
    noisy = np.asarray(distort.awgn(clean, 40.0, seed=1))
    with pytest.raises(ValueError, match="source_images"):
        deepcorrect.adapt_batch_norm(folded, noisy)
    with pytest.raises(ValueError, match="source_images"):
        deepcorrect.tent(folded, noisy)

    # Adapted on the clean photos themselves, the source-matched model is the original.
    same = deepcorrect.adapt_batch_norm(folded, clean, source_images=clean)
    np.testing.assert_allclose(same.predict(clean, verbose=0), model.predict(clean, verbose=0),
                               atol=1e-4)
    naive = deepcorrect.adapt_batch_norm(folded, clean, check_folded=False)
    assert np.abs(naive.predict(clean, verbose=0) - model.predict(clean, verbose=0)).max() > 0.1

    # On noisy photos: what plain adaptation of the unfolded net gives (up to epsilon).
    expected = deepcorrect.adapt_batch_norm(model, noisy).predict(noisy, verbose=0)
    matched = deepcorrect.adapt_batch_norm(folded, noisy, source_images=clean)
    np.testing.assert_allclose(matched.predict(noisy, verbose=0), expected, atol=2e-2)
    assert (matched.predict(noisy, verbose=0).argmax(1) == expected.argmax(1)).mean() >= 0.95
    # Its moving statistics are the noisy photos' statistics, layer by layer.
    for name in ["bn1", "bn2", "bn3"]:
        mean, var = numpy_moments(bn_input(matched, name, noisy))
        np.testing.assert_allclose(stats(matched.get_layer(name))[0], mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(stats(matched.get_layer(name))[1], var, rtol=1e-4)

    # TENT on the folded net, source-matched, stays close to TENT's starting point.
    tented = deepcorrect.tent(folded, noisy, source_images=clean, batch_size=64, steps=2)
    agree = tented.predict(noisy, verbose=0).argmax(1) == expected.argmax(1)
    assert agree.mean() >= 0.8


def test_pretrained_mobilenet_v2_with_folded_batch_norms(photos):
    if not MOBILENET_V2.is_file():
        pytest.skip("pretrained MobileNetV2 weights not available")
    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=str(MOBILENET_V2))
    prep = keras.applications.mobilenet_v2.preprocess_input
    x = np.concatenate([photos, photos[:, ::-1]])  # 8 real photos, 64x64
    inputs = prep(x.astype("float32"))
    original = model(inputs).numpy()
    with pytest.raises(ValueError, match="source_images"):
        deepcorrect.adapt_batch_norm(model, x, preprocess="mobilenet_v2")
    matched = deepcorrect.adapt_batch_norm(model, x, source_images=x, preprocess="mobilenet_v2")
    kept = matched(inputs).numpy()
    np.testing.assert_allclose(kept, original, atol=1e-3)
    np.testing.assert_array_equal(kept.argmax(1), original.argmax(1))
    naive = deepcorrect.adapt_batch_norm(model, x, preprocess=prep, check_folded=False)
    wrecked = naive(inputs).numpy()
    assert (wrecked.argmax(1) == original.argmax(1)).mean() <= 0.5
    assert np.abs(wrecked - original).max() > 0.3


# ---------------------------------------------------------------------------
# TENT.


def test_tent_lowers_entropy_and_changes_only_batch_norms(mode):
    model, x = branchy_model(), images(32)
    start = deepcorrect.adapt_batch_norm(model, x)  # TENT's starting point, in inference mode
    # One batch of all images: batch statistics are the data's, so the entropy
    # trained is the one the fixed model shows in inference mode.
    tented = deepcorrect.tent(model, x, batch_size=32, epochs=5, learning_rate=0.01)
    xf = x.astype("float32")
    before = entropy(start(xf, training=False).numpy(), from_logits=True)
    after = entropy(tented(xf, training=False).numpy(), from_logits=True)
    assert after < before - 1e-3
    original = weights_by_path(model)
    changed = {path for path, value in weights_by_path(tented).items()
               if not np.array_equal(value, original[path])}
    for path, value in weights_by_path(tented).items():
        if path.split("/")[-1] not in ("gamma", "beta", "moving_mean", "moving_variance"):
            np.testing.assert_array_equal(value, original[path], err_msg=path)
    assert {p for p in changed if p.endswith(("gamma", "beta"))} == {
        p for p in original if p.endswith(("gamma", "beta"))}
    # The fixed model holds the exact statistics of the data under the trained affine params.
    for name in BRANCHY_BNS:
        layer = (tented.get_layer("inner").get_layer(name) if name == "inner_bn"
                 else tented.get_layer(name))
        mean, var = numpy_moments(bn_input(tented, name, x))
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-4, atol=1e-6)


def test_tent_model_is_fixed_deterministic_and_batch_independent():
    model, x = branchy_model(), images(24)
    model.get_layer("bn_b").trainable = False  # frozen batch norms train under TENT too
    tented = deepcorrect.tent(model, x, batch_size=8, steps=2)
    assert not np.array_equal(tented.get_layer("bn_b").gamma.numpy(),
                              model.get_layer("bn_b").gamma.numpy())
    assert [layer.trainable for layer in tented.layers] == [
        layer.trainable for layer in model.layers]
    xf = x.astype("float32")
    full = tented(xf, training=False).numpy()
    np.testing.assert_array_equal(tented(xf, training=False).numpy(), full)
    np.testing.assert_allclose(tented(xf[5:9], training=False).numpy(), full[5:9],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tented.predict(xf, batch_size=5, verbose=0), full,
                               rtol=1e-5, atol=1e-6)


def test_tent_same_seed_same_bytes():
    model, x = branchy_model(), images(24)
    first = deepcorrect.tent(model, x, batch_size=8, epochs=2, seed=3)
    again = deepcorrect.tent(model, x, batch_size=8, epochs=2, seed=3)
    other = deepcorrect.tent(model, x, batch_size=8, epochs=2, seed=4)
    for a, b in zip(first.get_weights(), again.get_weights()):
        assert a.tobytes() == b.tobytes()
    assert any(a.tobytes() != b.tobytes() for a, b in zip(first.get_weights(),
                                                          other.get_weights()))


TENT_SCRIPT = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_adaptation import branchy_model, images
import deepcorrect
model = deepcorrect.tent(branchy_model(), images(24), batch_size=8, epochs=2, seed=3)
print(hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
"""


@pytest.mark.slow
def test_tent_same_seed_same_bytes_in_a_new_process():
    import hashlib

    code = TENT_SCRIPT.format(tests=str(REPO / "tests"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=REPO, env=env).stdout.split()[-1] for _ in range(2)]
    here = deepcorrect.tent(branchy_model(), images(24), batch_size=8, epochs=2, seed=3)
    digest = hashlib.sha256(b"".join(w.tobytes() for w in here.get_weights())).hexdigest()
    assert runs == [digest, digest]


def test_tent_steps_cap_the_updates():
    model, x = branchy_model(), images(24)
    one = deepcorrect.tent(model, x, batch_size=8, epochs=3, steps=1, seed=0)
    # A single step changes gamma by about the learning rate (Adam's first step).
    delta = one.get_layer("bn2").gamma.numpy() - model.get_layer("bn2").gamma.numpy()
    assert np.abs(delta).max() <= 1e-3 + 1e-6 and np.abs(delta).max() > 0
    sgd = deepcorrect.tent(model, x, batch_size=8, steps=1, optimizer="sgd", learning_rate=0.1)
    assert not np.array_equal(sgd.get_layer("bn2").gamma.numpy(),
                              model.get_layer("bn2").gamma.numpy())


# ---------------------------------------------------------------------------
# Combinations with DeepCorrect's correction units.


def _randomize_unit(unit: CorrectionUnit, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in unit.stack:
        if isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(rng.normal(0, 0.3, layer.kernel.shape).astype("float32"))
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype("float32"))


def test_wrap_then_adapt_reaches_the_units_batch_norms(mode):
    model, x = conv_bn_model(), images(20)
    indices = np.array([4, 1, 5, 0, 2, 3])
    wrapped = deepcorrect.wrap(model, {"conv1": indices}, beta=0.5, site="conv")
    unit = deepcorrect.correction_units(wrapped)["conv1"]
    _randomize_unit(unit, 1)
    _set_statistics(wrapped, 2)
    adapted = deepcorrect.adapt_batch_norm(wrapped, x, batch_size=6)
    assert [layer.trainable for layer in adapted.layers] == [
        layer.trainable for layer in wrapped.layers]  # pretrained frozen, units trainable
    # The unit's first batch norm: input = its first 1x1 conv on the corrected channels.
    unit_a = deepcorrect.correction_units(adapted)["conv1"]
    conv_out = keras.Model(adapted.inputs, adapted.get_layer("conv1").output)(x).numpy()
    conv_in = unit_a.stack[0]
    h = conv_out[..., indices[:3]] @ conv_in.kernel.numpy()[0, 0] + conv_in.bias.numpy()
    bn0, relu0, conv1, bn1 = unit_a.stack[1:5]
    mean, var = numpy_moments(h)
    np.testing.assert_allclose(stats(bn0)[0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats(bn0)[1], var, rtol=1e-4, atol=1e-6)
    # The second: after the adapted first one.
    h = conv1(relu0(bn0(h, training=False))).numpy()
    mean, var = numpy_moments(h)
    np.testing.assert_allclose(stats(bn1)[0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats(bn1)[1], var, rtol=1e-4, atol=1e-6)
    # The batch norms after the unit see the adapted unit's output.
    for name in ["bn1", "bn2"]:
        mean, var = numpy_moments(bn_input(adapted, name, x))
        np.testing.assert_allclose(stats(adapted.get_layer(name))[0], mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats(adapted.get_layer(name))[1], var, rtol=1e-4, atol=1e-6)
    # TENT on the wrapped model trains the units' batch norms' affine params as well.
    tented = deepcorrect.tent(wrapped, x, batch_size=10, steps=2)
    before = weights_by_path(wrapped)
    for path, value in weights_by_path(tented).items():
        kind = path.split("/")[-1]
        if kind in ("gamma", "beta"):
            assert not np.array_equal(value, before[path]), path
        elif kind not in ("moving_mean", "moving_variance"):
            np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_adapt_then_wrap_then_tent():
    model, x = conv_bn_model(), images(20)
    adapted = deepcorrect.adapt_batch_norm(model, x)
    wrapped = deepcorrect.wrap(adapted, {"conv2": np.arange(8)}, beta=0.25, site="conv")
    xf = x.astype("float32")
    np.testing.assert_allclose(wrapped(xf).numpy(), adapted(xf).numpy(), atol=1e-6)
    for name in ["bn1", "bn2"]:
        np.testing.assert_array_equal(stats(wrapped.get_layer(name))[0],
                                      stats(adapted.get_layer(name))[0])
    tented = deepcorrect.tent(wrapped, x, batch_size=10, steps=2)
    assert deepcorrect.correction_units(tented).keys() == {"conv2"}
    assert deepcorrect.trainable_parameters(tented) == deepcorrect.trainable_parameters(wrapped)
    tented_first = deepcorrect.tent(model, x, batch_size=10, steps=2)
    rewrapped = deepcorrect.wrap(tented_first, {"conv2": np.arange(8)}, beta=0.25, site="conv")
    np.testing.assert_allclose(rewrapped(xf).numpy(), tented_first(xf).numpy(), atol=1e-6)


# ---------------------------------------------------------------------------
# Shipping: .keras with safe_mode, SavedModel export.


def test_repaired_models_save_load_and_export(tmp_path):
    model, x = conv_bn_model(), images(16)
    xf = x.astype("float32")
    for name, repaired in [("bn", deepcorrect.adapt_batch_norm(model, x)),
                           ("tent", deepcorrect.tent(model, x, batch_size=8, steps=2))]:
        path = tmp_path / f"{name}.keras"
        repaired.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        np.testing.assert_array_equal(loaded(xf).numpy(), repaired(xf).numpy())
        serving = deepcorrect.export(repaired, tmp_path / f"{name}_serving")
        restored = tf.saved_model.load(serving)
        out = restored.signatures["serving_default"](images=tf.constant(x[:4]))
        np.testing.assert_allclose(out["probabilities"].numpy(), repaired(xf[:4]).numpy(),
                                   atol=1e-6)


# ---------------------------------------------------------------------------
# Arguments.


def test_public_signatures():
    def params(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    kw, pos, empty = inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, \
        inspect.Parameter.empty
    assert params(deepcorrect.adapt_batch_norm)[:8] == [
        ("model", pos, empty), ("images", pos, empty), ("source_images", kw, None),
        ("prior", kw, None), ("batch_size", kw, 64), ("preprocess", kw, None),
        ("verbose", kw, 0), ("check_folded", kw, True)]
    assert params(deepcorrect.tent)[:11] == [
        ("model", pos, empty), ("images", pos, empty), ("source_images", kw, None),
        ("epochs", kw, 1), ("steps", kw, None), ("learning_rate", kw, 1e-3),
        ("batch_size", kw, 64), ("seed", kw, 0), ("preprocess", kw, None), ("verbose", kw, 0),
        ("optimizer", kw, "adam")]
    assert params(deepcorrect.batch_norm_layers) == [("model", pos, empty)]
    assert all(p.kind == kw for p in inspect.signature(deepcorrect.tent).parameters.values()
               if p.name not in ("model", "images"))


def test_model_without_batch_norm_is_refused():
    vgg_like = keras.Sequential([keras.Input((SIZE, SIZE, 3)),
                                 keras.layers.Conv2D(4, 3, activation="relu"),
                                 keras.layers.Flatten(), keras.layers.Dense(3)], name="vgg_like")
    x = images(4)
    for fn in (deepcorrect.adapt_batch_norm, deepcorrect.tent):
        with pytest.raises(ValueError, match="'vgg_like' has no BatchNormalization layers"):
            fn(vgg_like, x)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"prior": -1.0}, ValueError, r"prior must be a finite number >= 0.0. Received: prior=-1.0"),
    ({"prior": float("nan")}, ValueError, "prior must be a finite number"),
    ({"prior": float("inf")}, ValueError, "prior must be a finite number"),
    ({"prior": "8"}, TypeError, "prior must be a real number"),
    ({"batch_size": 0}, ValueError, r"batch_size must be an integer >= 1. Received: batch_size=0"),
    ({"batch_size": 2.5}, TypeError, "batch_size must be an integer >= 1"),
    ({"batch_size": True}, TypeError, "batch_size must be an integer >= 1"),
])
def test_adapt_batch_norm_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        deepcorrect.adapt_batch_norm(conv_bn_model(), images(4), **kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"epochs": 0}, ValueError, r"epochs must be an integer >= 1. Received: epochs=0"),
    ({"epochs": 1.5}, TypeError, "epochs must be an integer >= 1"),
    ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
    ({"learning_rate": 0.0}, ValueError,
     r"learning_rate must be a finite number > 0. Received: learning_rate=0.0"),
    ({"learning_rate": -1e-3}, ValueError, "learning_rate must be a finite number > 0"),
    ({"learning_rate": float("nan")}, ValueError, "learning_rate must be a finite number"),
    ({"learning_rate": None}, TypeError, "learning_rate must be a finite number"),
    ({"batch_size": -4}, ValueError, "batch_size must be an integer >= 1"),
    ({"seed": -1}, ValueError, "seed must be an integer"),
    ({"seed": 1.0}, TypeError, "seed must be an integer"),
    ({"optimizer": "rmsprop"}, ValueError, r"optimizer must be one of \('adam', 'sgd'\)"),
])
def test_tent_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        deepcorrect.tent(conv_bn_model(), images(4), **kwargs)


@pytest.mark.parametrize("fn", [deepcorrect.adapt_batch_norm, deepcorrect.tent])
def test_bad_images_and_models(fn):
    model = conv_bn_model()
    with pytest.raises(ValueError, match="images must be a non-empty batch"):
        fn(model, np.zeros((0, SIZE, SIZE, 3)))
    with pytest.raises(ValueError, match=r"images must be 16x16x3 images"):
        fn(model, images(2, size=8))
    with pytest.raises(ValueError, match=r"source_images must be 16x16x3 images"):
        fn(model, images(2), source_images=images(2, size=8))
    with pytest.raises(TypeError, match="images must be an array of numbers"):
        fn(model, np.array([["a"]]))
    bad = images(2).astype("float32")
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="images must hold finite numbers"):
        fn(model, bad)
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        fn(None, images(2))
    inputs = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 3)(inputs))
    two = keras.Model(inputs, [h, keras.layers.Flatten()(h)])
    with pytest.raises(ValueError, match="one input and one output"):
        fn(two, images(2), check_folded=False)


# ---------------------------------------------------------------------------
# The README's paragraph.


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("**Test-time repairs")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    return match.group(1)


def test_readme_snippet_runs(cifar_net):
    model, clean = cifar_net
    namespace = {"model": model, "photos": clean[:64], "mobilenet": fold(model)}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)
    for name in ("adapted", "mixed", "tented", "matched"):
        assert isinstance(namespace[name], keras.Model), name
        assert len(namespace[name].weights) == len(model.weights)
    blurred = namespace["blurred"]
    assert namespace["tented"].predict(blurred, verbose=0).shape == (64, 10)

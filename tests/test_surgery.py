"""Tests for deepcorrect.surgery.wrap and the channel plumbing layers."""

import json
import os

import keras
import numpy as np
import pytest

from deepcorrect.layers import (
    GatherChannels,
    ScatterChannels,
    scatter_permutation,
    validate_channel_indices,
)
from deepcorrect.graph import conv_layers, corrected_count, filter_count
from deepcorrect.surgery import correction_units, wrap

# ---------------------------------------------------------------------------
# Small models and helpers.


def small_sequential_cnn():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(12, 3, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(5, name="logits"),
        ],
        name="small_sequential",
    )


def randomise_batch_norm(model, seed=0):
    """Gives every BN non-trivial statistics, so inference mode is visible."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.2, beta.shape).astype("float32"),
                rng.normal(0, 0.5, mean.shape).astype("float32"),
                rng.uniform(0.5, 2.0, var.shape).astype("float32"),
            ])
    return model


def functional_bn_cnn():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    shortcut = x
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Add(name="add")([x, shortcut])
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    return randomise_batch_norm(keras.Model(inputs, outputs, name="functional_bn"))


def nested_mobilenet():
    keras.utils.set_random_seed(3)
    base = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35
    )
    inputs = keras.Input((32, 32, 3))
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(4, name="head_logits")(x)
    return keras.Model(inputs, outputs, name="nested")


def mobilenet_v2():
    keras.utils.set_random_seed(4)
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classifier_activation=None
    )


def resnet50():
    keras.utils.set_random_seed(5)
    return keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classifier_activation=None
    )


def vgg16():
    keras.utils.set_random_seed(6)
    return keras.applications.VGG16(
        weights=None, input_shape=(32, 32, 3), classifier_activation=None
    )


def random_ranks(model, seed=0):
    rng = np.random.default_rng(seed)
    return {
        layer.name: rng.permutation(filter_count(layer))
        for layer in conv_layers(model)
    }


def images(model, count=2, seed=0):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(0, 1, (count,) + shape).astype("float32")


def perturb_units(model, seed=0):
    rng = np.random.default_rng(seed)
    for unit in correction_units(model).values():
        for weight in unit.trainable_weights:  # kernels, biases, BN gamma/beta
            weight.assign(rng.normal(0, 0.2, weight.shape).astype("float32"))


def max_abs_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ---------------------------------------------------------------------------
# Plumbing layers.


def test_gather_then_scatter_is_the_identity():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 6)).astype("float32")
    indices = [4, 0, 5]
    picked = GatherChannels(indices)(x)
    np.testing.assert_array_equal(np.asarray(picked), x[..., indices])
    merged = ScatterChannels(indices, 6)([x, picked])
    np.testing.assert_array_equal(np.asarray(merged), x)


def test_scatter_replaces_only_the_indexed_channels():
    full = np.random.default_rng(0).normal(size=(2, 4, 7)).astype("float32")
    corrected = np.random.default_rng(1).normal(size=(2, 4, 3)).astype("float32")
    indices = [6, 2, 3]
    expected = full.copy()
    for i, channel in enumerate(indices):
        expected[..., channel] = corrected[..., i]
    out = ScatterChannels(indices, 7)([full, corrected])
    np.testing.assert_array_equal(np.asarray(out), expected)
    assert scatter_permutation(indices, 7).tolist() == [0, 1, 8, 9, 4, 5, 7]


def test_plumbing_layers_round_trip_their_config():
    gather = GatherChannels.from_config(GatherChannels([2, 1], name="g").get_config())
    scatter = ScatterChannels.from_config(ScatterChannels([2, 1], 4).get_config())
    assert gather.indices == [2, 1] and gather.name == "g"
    assert scatter.indices == [2, 1] and scatter.channels == 4


@pytest.mark.parametrize(
    "indices,message",
    [([0, 4], r"out of range"), ([1, 1], r"must not repeat"), ([], "non-empty"),
     ([0.5], "integers")],
)
def test_invalid_channel_indices(indices, message):
    with pytest.raises(ValueError, match=message):
        validate_channel_indices(indices, 4)


# ---------------------------------------------------------------------------
# Wrapped at initialisation == pretrained.

FAST_MODELS = [small_sequential_cnn, functional_bn_cnn, nested_mobilenet, mobilenet_v2, vgg16]


@pytest.mark.parametrize("build", FAST_MODELS, ids=lambda f: f.__name__)
def test_wrapped_model_equals_pretrained_at_init(build):
    pretrained = build()
    wrapped = wrap(pretrained, random_ranks(pretrained), beta=0.5)
    x = images(pretrained)
    assert max_abs_diff(wrapped(x), pretrained(x)) < 1e-5
    assert len(correction_units(wrapped)) == len(conv_layers(pretrained))


def test_explicit_plumbing_equals_pretrained_at_init_on_mobilenet():
    pretrained = mobilenet_v2()
    wrapped = wrap(pretrained, random_ranks(pretrained), first=8, fused=False)
    x = images(pretrained)
    assert max_abs_diff(wrapped(x), pretrained(x)) < 1e-5


@pytest.mark.slow
def test_resnet50_wrapped_equals_pretrained_at_init():
    pretrained = resnet50()
    wrapped = wrap(pretrained, random_ranks(pretrained), beta=0.5, unit="bottleneck")
    x = images(pretrained)
    assert max_abs_diff(wrapped(x), pretrained(x)) < 1e-5


@pytest.mark.parametrize("unit", ["cw", "lite", "bottleneck", "no_bn"])
def test_every_preset_starts_as_the_identity(unit):
    pretrained = functional_bn_cnn()
    wrapped = wrap(pretrained, random_ranks(pretrained), beta=0.75, unit=unit, kernel_size=5)
    x = images(pretrained)
    assert max_abs_diff(wrapped(x), pretrained(x)) < 1e-5


# ---------------------------------------------------------------------------
# What wrap changes and what it leaves alone.


@pytest.mark.parametrize("fused", [True, False])
def test_perturbed_units_change_only_the_selected_channels(fused):
    pretrained = functional_bn_cnn()
    ranks = {"conv2": [5, 1, 7, 0, 2, 3, 4, 6]}
    wrapped = wrap(pretrained, ranks, beta=0.5, fused=fused, site="conv")
    perturb_units(wrapped)
    x = images(pretrained)
    assert max_abs_diff(wrapped(x), pretrained(x)) > 1e-3

    corrected_name = "conv2_unit" if fused else "conv2_scatter"
    original_conv = keras.Model(pretrained.input, pretrained.get_layer("conv2").output)
    corrected_conv = keras.Model(wrapped.input, wrapped.get_layer(corrected_name).output)
    before, after = np.asarray(original_conv(x)), np.asarray(corrected_conv(x))
    changed = np.abs(after - before).max(axis=(0, 1, 2)) > 0
    assert sorted(np.flatnonzero(changed).tolist()) == [0, 1, 5, 7]
    untouched = [c for c in range(8) if c not in (5, 1, 7, 0)]
    np.testing.assert_array_equal(after[..., untouched], before[..., untouched])


def test_fused_and_explicit_plumbing_compute_the_same_function():
    pretrained = functional_bn_cnn()
    ranks = random_ranks(pretrained)
    fused = wrap(pretrained, ranks, beta=0.5, unit="lite", kernel_size=5)
    explicit = wrap(pretrained, ranks, beta=0.5, unit="lite", kernel_size=5, fused=False)
    assert "conv1_gather" in {l.name for l in explicit.layers}
    assert "conv1_gather" not in {l.name for l in fused.layers}
    perturb_units(fused)
    for name, unit in correction_units(fused).items():
        correction_units(explicit)[name].set_weights(unit.get_weights())
    x = images(pretrained)
    assert max_abs_diff(fused(x), explicit(x)) < 1e-5
    assert fused.count_params() == explicit.count_params()


@pytest.mark.parametrize("fused", [True, False])
def test_unit_sees_the_pre_activation_output_of_a_conv_with_builtin_relu(fused):
    pretrained = small_sequential_cnn()
    wrapped = wrap(pretrained, {"conv1": np.arange(8)}, beta=1.0, fused=fused)
    assert wrapped.get_layer("conv1").get_config()["activation"] == "linear"
    assert wrapped.get_layer("conv1_activation").get_config()["activation"] == "relu"
    first_after_conv = "conv1_unit" if fused else "conv1_gather"
    assert wrapped.get_layer(first_after_conv).input is wrapped.get_layer("conv1").output
    conv_output = keras.Model(wrapped.input, wrapped.get_layer("conv1").output)
    x = images(pretrained)
    assert np.asarray(conv_output(x)).min() < 0  # pre-ReLU values reach the unit
    # The original layer keeps its activation: the input model is not modified.
    assert pretrained.get_layer("conv1").get_config()["activation"] == "relu"


def test_only_unit_weights_are_trainable():
    pretrained = functional_bn_cnn()
    wrapped = wrap(pretrained, random_ranks(pretrained), beta=0.5)
    unit_names = {f"{name}_unit" for name in ("conv1", "conv2", "dw3")}
    owners = {w.path.split("/")[0] for w in wrapped.trainable_weights}
    assert owners == unit_names
    for layer in wrapped.layers:
        if layer.name in {l.name for l in pretrained.layers} - {"image"}:
            assert not layer.trainable, layer.name
    assert all(l.trainable for l in pretrained.layers)  # input model untouched


def test_pretrained_weights_are_copied_unchanged():
    pretrained = functional_bn_cnn()
    wrapped = wrap(pretrained, random_ranks(pretrained))
    for layer in pretrained.layers:
        for a, b in zip(layer.get_weights(), wrapped.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_training_step_updates_units_only_and_frozen_bn_stays_in_inference_mode():
    pretrained = functional_bn_cnn()
    wrapped = wrap(pretrained, random_ranks(pretrained), beta=0.5)
    frozen_before = [w.numpy().copy() for w in wrapped.non_trainable_weights]
    trainable_before = [w.numpy().copy() for w in wrapped.trainable_weights]
    wrapped.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = images(pretrained, count=4)
    wrapped.train_on_batch(x, np.array([0, 1, 2, 3]))
    for before, w in zip(frozen_before, wrapped.non_trainable_weights):
        if "_unit" not in w.path:  # units' own BN statistics do move
            np.testing.assert_array_equal(before, w.numpy(), err_msg=w.path)
    assert any(np.abs(b - w.numpy()).max() > 0
               for b, w in zip(trainable_before, wrapped.trainable_weights))


def test_train_head_makes_the_last_layers_trainable():
    pretrained = small_sequential_cnn()
    wrapped = wrap(pretrained, random_ranks(pretrained), layers=["conv1"], train_head=2)
    owners = {w.path.split("/")[0] for w in wrapped.trainable_weights}
    assert owners == {"conv1_unit", "conv2", "logits"}
    # With batch norm: the one after a trained head conv trains too, as in Finetune-k.
    pretrained = functional_bn_cnn()
    wrapped = wrap(pretrained, random_ranks(pretrained), layers=["conv1"], train_head=3)
    owners = {w.path.split("/")[0] for w in wrapped.trainable_weights}
    assert owners == {"conv1_unit", "conv2", "bn2", "dw3", "logits"}


def test_train_batch_norm_trains_the_batch_norm_after_each_corrected_conv():
    pretrained = functional_bn_cnn()
    wrapped = wrap(pretrained, random_ranks(pretrained), layers=["conv1"], train_batch_norm=True)
    owners = {w.path.split("/")[0] for w in wrapped.trainable_weights}
    assert owners == {"conv1_unit", "bn1"}  # not bn2: conv2 is not corrected
    # A trainable BN normalises with batch statistics in training: its moving mean
    # moves after one step, and the frozen bn2's stays bit for bit.
    before = {n: wrapped.get_layer(n).moving_mean.numpy().copy() for n in ("bn1", "bn2")}
    wrapped.compile(optimizer=keras.optimizers.SGD(0.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapped.train_on_batch(images(pretrained, count=4), np.array([0, 1, 2, 3]))
    assert np.abs(wrapped.get_layer("bn1").moving_mean.numpy() - before["bn1"]).max() > 0
    np.testing.assert_array_equal(wrapped.get_layer("bn2").moving_mean.numpy(), before["bn2"])


def test_batch_norm_site_puts_the_unit_after_the_batch_norm():
    pretrained = functional_bn_cnn()
    x = images(pretrained, count=4)
    wrapped = wrap(pretrained, random_ranks(pretrained), layers=["conv1", "conv2"],
                   site="batch_norm")
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), pretrained.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # identity at the start

    def producer(name):
        return wrapped.get_layer(name).input._keras_history.operation.name

    assert producer("bn1") == "conv1" and producer("conv1_unit") == "bn1"
    assert producer("relu1") == "conv1_unit"
    assert producer("bn2") == "conv2" and producer("conv2_unit") == "bn2"
    with pytest.raises(ValueError, match=r"site must be one of \('auto', 'conv', 'batch_norm'\)"):
        wrap(pretrained, random_ranks(pretrained), site="relu")


def test_first_k_and_per_layer_options():
    pretrained = functional_bn_cnn()
    wrapped = wrap(
        pretrained,
        random_ranks(pretrained),
        first=2,
        beta={"conv1": 0.75, "conv2": 0.25},
        unit={"conv1": "lite", "conv2": "bottleneck"},
        kernel_size={"conv1": 5, "conv2": 3},
    )
    units = correction_units(wrapped)
    assert sorted(units) == ["conv1", "conv2"]
    assert units["conv1"].channels == 6 and units["conv1"].preset == "lite"
    assert units["conv1"].dilation_rates == (1, 2)
    assert units["conv2"].channels == 2 and units["conv2"].preset == "bottleneck"


def test_first_counts_ranked_conv_layers_from_the_input():
    pretrained = functional_bn_cnn()
    ranks = {name: np.arange(8) for name in ("dw3", "conv2")}
    assert sorted(correction_units(wrap(pretrained, ranks, first=1))) == ["conv2"]


def test_accepts_a_ranking_object():
    class FakeRanking:  # the duck type of deepcorrect.Ranking
        layer_names = ["conv2"]

        def order(self, layer_name):
            return np.arange(8)[::-1]

    wrapped = wrap(functional_bn_cnn(), FakeRanking(), beta=0.25)
    assert wrapped.get_layer("conv2_unit").channel_indices == [7, 6]


def test_corrected_count_rounds_like_the_paper():
    assert corrected_count(0.75, 96) == 72
    assert corrected_count(0.5, 256) == 128
    assert corrected_count(1.0, 5) == 5
    assert corrected_count(0.01, 5) == 1


def test_custom_unit_factory():
    def identity_unit(channels, kernel_size, name):
        return keras.layers.Identity(name=name)

    pretrained = functional_bn_cnn()
    wrapped = wrap(pretrained, random_ranks(pretrained), unit=identity_unit)
    assert wrapped.trainable_weights == []
    x = images(pretrained)
    assert max_abs_diff(wrapped(x), pretrained(x)) < 1e-6


# ---------------------------------------------------------------------------
# Saving.


@pytest.mark.parametrize("fused", [True, False])
def test_keras_file_round_trip_in_safe_mode(tmp_path, fused):
    pretrained = functional_bn_cnn()
    wrapped = wrap(pretrained, random_ranks(pretrained), beta=0.5, unit="lite", fused=fused)
    perturb_units(wrapped)
    path = os.fspath(tmp_path / "wrapped.keras")
    wrapped.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = images(pretrained)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(wrapped(x)))
    config = json.dumps(loaded.get_config())
    assert "Lambda" not in config
    assert {w.path for w in loaded.trainable_weights} == {
        w.path for w in wrapped.trainable_weights}


@pytest.mark.slow
def test_mobilenet_keras_file_round_trip_in_safe_mode(tmp_path):
    pretrained = mobilenet_v2()
    wrapped = wrap(pretrained, random_ranks(pretrained), first=5, unit="bottleneck",
                   fused=False)
    perturb_units(wrapped)
    path = os.fspath(tmp_path / "mobilenet.keras")
    wrapped.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = images(pretrained)
    assert max_abs_diff(loaded(x), wrapped(x)) == 0.0


# ---------------------------------------------------------------------------
# Argument validation.


@pytest.mark.parametrize("beta", [0, 0.0, -0.1, 1.5, "0.5", True, float("nan")])
def test_beta_outside_the_unit_interval(beta):
    with pytest.raises(ValueError, match=r"beta must be (a number )?in \(0, 1\]"):
        wrap(small_sequential_cnn(), {"conv1": np.arange(8)}, beta=beta)


def test_per_layer_beta_errors():
    model = small_sequential_cnn()
    ranks = random_ranks(model)
    with pytest.raises(ValueError, match=r"beta\['conv2'\] must be in \(0, 1\]"):
        wrap(model, ranks, beta={"conv1": 0.5, "conv2": 2.0})
    with pytest.raises(ValueError, match="'conv2' is missing"):
        wrap(model, ranks, beta={"conv1": 0.5})
    with pytest.raises(ValueError, match=r"beta has entries for unknown layers \['conv9'\]"):
        wrap(model, ranks, beta={"conv1": 0.5, "conv2": 0.5, "conv9": 0.5})


def test_unknown_layer_name_lists_the_conv_layers():
    with pytest.raises(ValueError, match=r"layers names an unknown layer 'conv9'.*\['conv1', 'conv2'\]"):
        wrap(small_sequential_cnn(), {"conv9": [0]}, layers=["conv9"])
    with pytest.raises(ValueError, match=r"ranking names an unknown layer 'conv9'"):
        wrap(small_sequential_cnn(), {"conv9": [0]})


def test_non_conv_layer_is_refused():
    with pytest.raises(ValueError, match=r"'logits', a Dense layer.*Allowed values: \['conv1', 'conv2'\]"):
        wrap(small_sequential_cnn(), {"logits": [0]})


def test_model_without_conv_layers_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    with pytest.raises(ValueError, match="has no conv layers"):
        wrap(model, {"d": [0]})


@pytest.mark.parametrize(
    "order,message",
    [([0, 8, 1, 2], r"ranking\['conv1'\] must hold integers in \[0, 8\)"),
     ([0, 0, 1, 2], r"ranking\['conv1'\] must not repeat a channel"),
     ([3], r"ranking\['conv1'\] orders 1 channels, but beta=0.5 corrects 4")],
)
def test_bad_channel_indices(order, message):
    with pytest.raises(ValueError, match=message):
        wrap(small_sequential_cnn(), {"conv1": order})


def test_unknown_unit_preset_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"unit must be one of \['bottleneck', 'cw', 'lite', 'no_bn'\]"):
        wrap(small_sequential_cnn(), {"conv1": np.arange(8)}, unit="huge")


def test_other_argument_errors():
    model = small_sequential_cnn()
    ranks = random_ranks(model)
    with pytest.raises(ValueError, match=r"first must be an integer in \[1, 2\]"):
        wrap(model, ranks, first=3)
    with pytest.raises(ValueError, match=r"first must be an integer in \[1, 1\]"):
        wrap(model, {"conv2": np.arange(12)}, first=2)
    with pytest.raises(ValueError, match="either layers or first"):
        wrap(model, ranks, first=1, layers=["conv1"])
    with pytest.raises(ValueError, match=r"train_head must be an integer in \[0, 3\]"):
        wrap(model, ranks, train_head=4)
    with pytest.raises(ValueError, match="kernel_size must be a positive integer"):
        wrap(model, ranks, kernel_size=0)
    with pytest.raises(ValueError, match="ranking must be a dict"):
        wrap(model, [0, 1, 2])

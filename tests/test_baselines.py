"""Tests for deepcorrect.baselines: Finetune-k and plain re-training."""

import json
import warnings

import keras
import numpy as np
import pytest

import deepcorrect
from deepcorrect.baselines import finetune, finetune_layer_names, reinitialized
from deepcorrect.batch_norm import is_folded
from tests.conftest import SHARED

MOBILENET_V2 = SHARED / "models" / "mobilenet_v2_1.0_224.weights.h5"


def bn_cnn():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(6, 3, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.Conv2D(6, 3, name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name="bn_cnn")
    rng = np.random.default_rng(0)
    for name in ("bn1", "bn2"):  # non-trivial moving statistics
        layer = model.get_layer(name)
        layer.moving_mean.assign(rng.normal(0, 0.5, 6).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2, 6).astype("float32"))
    return model


def nested_model():
    keras.utils.set_random_seed(8)
    base = keras.Sequential(
        [keras.Input((12, 12, 3)),
         keras.layers.Conv2D(4, 3, name="inner_conv1"),
         keras.layers.BatchNormalization(name="inner_bn1"),
         keras.layers.Conv2D(4, 3, name="inner_conv2")],
        name="base",
    )
    base.get_layer("inner_bn1").moving_variance.assign(np.full(4, 2.0, "float32"))  # trained
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x), name="outer")


def owners(model):
    return sorted({w.path.split("/")[0] for w in model.trainable_weights})


def batch(count=4):
    return np.random.default_rng(1).uniform(0, 1, (count, 12, 12, 3)).astype("float32")


@pytest.mark.parametrize(
    "k,expected",
    [(1, ["bn1", "conv1"]), (2, ["bn1", "bn2", "conv1", "conv2"]),
     (3, ["bn1", "bn2", "conv1", "conv2", "conv3"])],
)
def test_finetune_k_trains_the_first_k_conv_layers_and_their_bn(k, expected):
    assert owners(finetune(bn_cnn(), k)) == expected


def test_finetune_without_batch_norm():
    assert owners(finetune(bn_cnn(), 2, train_batch_norm=False)) == ["conv1", "conv2"]


def test_finetune_all_trains_everything():
    pretrained = bn_cnn()
    model = finetune(pretrained, "all")
    assert len(model.trainable_weights) == len(pretrained.trainable_weights)


def test_finetune_copies_weights_and_leaves_the_input_alone():
    pretrained = bn_cnn()
    model = finetune(pretrained, 1)
    x = batch()
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(pretrained(x)))
    assert all(layer.trainable for layer in pretrained.layers)
    model.get_layer("conv1").kernel.assign(np.zeros((3, 3, 3, 6), "float32"))
    assert np.abs(pretrained.get_layer("conv1").kernel.numpy()).max() > 0


def test_frozen_batch_norm_stays_in_inference_mode_while_training():
    model = finetune(bn_cnn(), 1)
    before = {w.path: w.numpy().copy() for w in model.weights}
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(batch(), np.array([0, 1, 2, 0]))
    changed = {w.path for w in model.weights if np.abs(w.numpy() - before[w.path]).max() > 0}
    # conv1 and bn1 (incl. its moving statistics) learn; bn2 keeps its stats.
    assert {p.split("/")[0] for p in changed} == {"conv1", "bn1"}
    assert "bn1/moving_mean" in changed


def test_finetune_counts_conv_layers_inside_nested_models():
    assert finetune_layer_names(nested_model(), 1) == ["inner_conv1", "inner_bn1"]
    model = finetune(nested_model(), 2)
    assert owners(model) == ["inner_bn1", "inner_conv1", "inner_conv2"]


@pytest.mark.parametrize("k", [0, 4, -1, "some", True, 1.5])
def test_bad_k_names_the_allowed_values(k):
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 3\] .* or 'all'"):
        finetune(bn_cnn(), k)


def test_model_without_conv_layers_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has no conv layers"):
        finetune(model, 1)


def test_reinitialized_has_fresh_trainable_weights():
    pretrained = bn_cnn()
    keras.utils.set_random_seed(123)
    model = reinitialized(pretrained)
    assert model.count_params() == pretrained.count_params()
    assert len(model.trainable_weights) == len(pretrained.trainable_weights)
    kernel = model.get_layer("conv1").kernel.numpy()
    assert not np.array_equal(kernel, pretrained.get_layer("conv1").kernel.numpy())
    with pytest.raises(TypeError, match=r"pretrained must be a keras.Model \(Functional or Sequential\)"):
        reinitialized(keras.layers.Dense(2))


# ---------------------------------------------------------------------------
# Folded batch norms (identity statistics, as in weights converted from TFLite).


def fold(layer, beta=0.0, variance=None):
    """Makes a built BatchNormalization an identity plus `beta`, as a folded one is."""
    channels = layer.moving_mean.shape[0]
    layer.moving_mean.assign(np.zeros(channels, "float32"))
    layer.moving_variance.assign(np.full(channels, 1.0 - layer.epsilon if variance is None
                                         else variance, "float32"))
    layer.gamma.assign(np.ones(channels, "float32"))
    layer.beta.assign(np.full(channels, beta, "float32"))


def folded_cnn(names=("bn1", "bn2")):
    model = bn_cnn()
    for name in names:
        fold(model.get_layer(name), beta=0.3)
    return model


def test_folded_batch_norms_finds_identity_batch_norms_only():
    assert deepcorrect.folded_batch_norms(bn_cnn()) == []
    assert deepcorrect.folded_batch_norms(folded_cnn()) == ["bn1", "bn2"]
    assert deepcorrect.folded_batch_norms(folded_cnn(["bn2"])) == ["bn2"]
    # A batch norm that never saw data is an identity too.
    fresh = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(name="bn")])
    assert deepcorrect.folded_batch_norms(fresh) == ["bn"]
    assert deepcorrect.folded_batch_norms(nested_model()) == []


@pytest.mark.parametrize(
    "change,folded",
    [({}, True), ({"beta": 5.0}, True), ({"variance": 1.0}, True),
     ({"variance": 1.0 - 1e-3 + 1e-6}, True), ({"variance": 1.01}, False),
     ({"variance": 0.9}, False), ({"gamma": 1.01}, False), ({"mean": 0.01}, False)],
)
def test_is_folded_row(change, folded):
    layer = keras.layers.BatchNormalization(epsilon=1e-3)
    layer.build((None, 3))
    fold(layer, beta=change.get("beta", 0.0), variance=change.get("variance"))
    if "gamma" in change:
        layer.gamma.assign(np.full(3, change["gamma"], "float32"))
    if "mean" in change:
        layer.moving_mean.assign(np.full(3, change["mean"], "float32"))
    assert is_folded(layer) is folded


def test_finetune_auto_keeps_folded_batch_norms_frozen_and_trains_the_others():
    assert owners(finetune(folded_cnn(), 2)) == ["conv1", "conv2"]
    assert owners(finetune(folded_cnn(["bn1"]), 2)) == ["bn2", "conv1", "conv2"]
    everything = finetune(folded_cnn(["bn1"]), "all")
    assert not everything.get_layer("bn1").trainable and everything.get_layer("bn2").trainable
    assert owners(finetune(folded_cnn(), 2, train_batch_norm=False)) == ["conv1", "conv2"]


def test_finetune_true_trains_folded_batch_norms_with_a_warning_naming_them():
    with pytest.warns(UserWarning, match=r"batch norms \['bn1', 'bn2'\], but they are folded"):
        model = finetune(folded_cnn(), 2, train_batch_norm=True)
    assert owners(model) == ["bn1", "bn2", "conv1", "conv2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where nothing is folded
        finetune(bn_cnn(), 2, train_batch_norm=True)


def test_frozen_folded_batch_norm_computes_the_same_in_training_mode():
    # The reason for "auto": in training mode a trainable folded BN normalises with batch
    # statistics, which changes the outputs; a frozen one stays the identity plus beta.
    x = batch(8)
    frozen = finetune(folded_cnn(), 2)
    np.testing.assert_allclose(np.asarray(frozen(x, training=True)),
                               np.asarray(frozen(x, training=False)), rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning):
        trained = finetune(folded_cnn(), 2, train_batch_norm=True)
    assert np.abs(np.asarray(trained(x, training=True))
                  - np.asarray(trained(x, training=False))).max() > 1e-2


@pytest.mark.parametrize("value", ["yes", 1, 0, None, "Auto"])
def test_bad_train_batch_norm_is_refused(value):
    with pytest.raises(ValueError, match=r"train_batch_norm must be True, False or 'auto'"):
        finetune(bn_cnn(), 1, train_batch_norm=value)


def test_finetune_of_the_shared_mobilenet_v2_trains_no_batch_norm():
    if not MOBILENET_V2.is_file():
        pytest.skip(f"weights not found at {MOBILENET_V2}")
    pretrained = keras.applications.MobileNetV2(weights=str(MOBILENET_V2))
    norms = [layer.name for layer in pretrained.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert deepcorrect.folded_batch_norms(pretrained) == norms  # all 52 are folded
    model = finetune(pretrained, 2)
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {"Conv1", "expanded_conv_depthwise"}
    assert not any(isinstance(model.get_layer(n), keras.layers.BatchNormalization)
                   for n in trainable)


# ---------------------------------------------------------------------------
# Re-initialisation from a seed.


def test_reinitialized_is_a_function_of_the_seed():
    pretrained = bn_cnn()
    a, b, c = (reinitialized(pretrained, seed=s) for s in (3, 3, 4))
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.get_layer("conv1").kernel.numpy(),
                              c.get_layer("conv1").kernel.numpy())
    # No two layers of one shape start alike, and the seeds are in the saved config.
    assert not np.array_equal(a.get_layer("conv2").kernel.numpy(),
                              a.get_layer("conv3").kernel.numpy())
    seed = json.loads(json.dumps(a.get_layer("conv1").get_config()))["kernel_initializer"]
    assert isinstance(seed["config"]["seed"], int)


@pytest.mark.parametrize("seed", [-1, 2**31, 1.0, True, "0"])
def test_reinitialized_refuses_bad_seeds(seed):
    with pytest.raises((TypeError, ValueError), match=r"seed must be an integer in \[0, 2147483647\]"):
        reinitialized(bn_cnn(), seed=seed)

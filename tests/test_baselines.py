"""Tests for deepcorrect.baselines: Finetune-k and plain re-training."""

import keras
import numpy as np
import pytest

from deepcorrect.baselines import finetune, finetune_layer_names, reinitialized


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

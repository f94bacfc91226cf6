"""deepcorrect.ideal: accuracy with chosen filters given their clean outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import distort
from deepcorrect import rank
from deepcorrect.ideal import ideal_accuracy


def chain_cnn() -> keras.Model:
    """Conv-BN-ReLU-pool-conv-ReLU-GAP-dense, with non-trivial batch-norm statistics."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x), name="chain")
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(0, 0.3, 6), rng.normal(0, 0.2, 6),
                    rng.uniform(0.2, 1.5, 6)])
    return model


def reference_accuracy(model, clean, distorted, labels, layer_name, chosen):
    """Independent path: Keras sub-model to the conv output, numpy mix, layers called one by one."""
    layer = model.get_layer(layer_name)
    upto = keras.Model(model.inputs, layer.output)
    a_clean = np.asarray(upto(clean))
    a = np.asarray(upto(distorted)).copy()
    a[..., list(chosen)] = a_clean[..., list(chosen)]
    after = model.layers[model.layers.index(layer) + 1:]
    x = a
    for later in after:
        x = later(x, training=False) if isinstance(later, keras.layers.BatchNormalization) \
            else later(x)
    return float(np.mean(np.argmax(np.asarray(x), -1) == labels))


@pytest.fixture(scope="module")
def case():
    model = chain_cnn()
    rng = np.random.default_rng(1)
    clean = rng.uniform(0, 255, (40, 16, 16, 3)).astype("float32")
    blurred = np.asarray(distort.apply(clean, "gaussian_blur", 1.5), np.float32)
    labels = np.argmax(np.asarray(model(clean)), -1)  # clean accuracy 1 by construction
    labels[::5] = (labels[::5] + 1) % 4
    return model, clean, blurred, labels


def test_multi_filter_swaps_match_an_independent_reference(case):
    model, clean, blurred, labels = case
    sets = [[], [0], [2, 5], [1, 3, 4], list(range(6))]
    got = ideal_accuracy(model, clean, blurred, labels, "conv1", sets, batch_size=64)
    expected = [reference_accuracy(model, clean, blurred, labels, "conv1", s) for s in sets]
    np.testing.assert_allclose(got, expected)
    direct = np.argmax(np.asarray(model.predict(blurred, verbose=0)), -1)
    assert got[0] == pytest.approx(np.mean(direct == labels))  # nothing swapped
    assert got[-1] == pytest.approx(0.8)  # everything swapped: the clean accuracy


def test_single_filter_swaps_reproduce_algorithm_1(case):
    model, clean, blurred, labels = case
    ranking = rank(model, clean, labels, lambda x, level, seed: blurred, [1.0],
                   layers=["conv1"], score="gain", progress=False)
    got = ideal_accuracy(model, clean, blurred, labels, "conv1", [[j] for j in range(6)])
    np.testing.assert_allclose(got - ranking.baseline_accuracy[0],
                               ranking.priorities["conv1"], atol=1e-12)


def test_built_in_activation_is_swapped_before_it(case):
    model, clean, blurred, labels = case
    got = ideal_accuracy(model, clean, blurred, labels, "conv2", [[1, 6], list(range(8))])
    # With every filter of conv2 corrected the network sees clean conv2 outputs.
    assert got[1] == pytest.approx(0.8)
    # The split conv's linear output, swapped, then ReLU: the same as swapping after ReLU.
    post = ideal_accuracy(model, clean, blurred, labels, "conv2", [[1, 6]], site="post_activation")
    assert got[0] == pytest.approx(post[0])


@pytest.mark.parametrize("sets, match", [([[6]], "indices in"), ([[1, 1]], "twice"),
                                         ([], "non-empty")])
def test_bad_filter_sets_are_refused(case, sets, match):
    model, clean, blurred, labels = case
    with pytest.raises(ValueError, match=match):
        ideal_accuracy(model, clean, blurred, labels, "conv1", sets)


def test_bad_layer_and_shapes_are_refused(case):
    model, clean, blurred, labels = case
    with pytest.raises(ValueError, match="not a conv layer"):
        ideal_accuracy(model, clean, blurred, labels, "bn1", [[0]])
    with pytest.raises(ValueError, match="shape of clean"):
        ideal_accuracy(model, clean, blurred[:3], labels, "conv1", [[0]])

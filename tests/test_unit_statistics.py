"""Precise BN for correction units: exact pooled statistics, and `train` ending with them."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import deepcorrect
from deepcorrect.unit_statistics import unit_batch_norms
from distort import pipeline
from tests.test_training import small_cnn


def unit_model(seed: int = 0) -> tuple[keras.Model, deepcorrect.CorrectionUnit]:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    unit = deepcorrect.CorrectionUnit(3, seed=seed)
    model = keras.Model(inputs, unit(inputs))
    # Non-zero last conv: the unit's output depends on every inner layer.
    for w in unit.trainable_weights:
        w.assign(np.random.default_rng(seed).normal(0, 0.3, w.shape).astype(np.float32))
    return model, unit


def brute_force_statistics(unit, batches) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each batch norm's input over all batches, concatenated, then its moments."""
    inputs: dict[int, list[np.ndarray]] = {}
    for x in batches:
        h = unit.stack[0](x)
        for i, layer in enumerate(unit.stack[1:-1]):
            if isinstance(layer, keras.layers.BatchNormalization):
                inputs.setdefault(i, []).append(np.asarray(h, np.float64))
                mean, var = tf.nn.moments(h, axes=[0, 1, 2])
                h = (h - mean) / tf.sqrt(var + layer.epsilon) * layer.gamma + layer.beta
            else:
                h = layer(h)
    stats = []
    for i in sorted(inputs):
        every = np.concatenate(inputs[i]).reshape(-1, inputs[i][0].shape[-1])
        stats.append((every.mean(0), every.var(0)))
    return stats


def test_statistics_equal_a_brute_force_computation_over_uneven_batches():
    model, unit = unit_model()
    x = np.random.default_rng(1).normal(2.0, 3.0, (10, 6, 6, 3)).astype(np.float32)
    assert deepcorrect.refresh_unit_statistics(model, x, batch_size=4) == 3
    expected = brute_force_statistics(unit, [x[:4], x[4:8], x[8:]])
    got = [(bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in unit_batch_norms(model)]
    assert len(got) == len(expected)
    for (mean, var), (want_mean, want_var) in zip(got, expected):
        np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(var, want_var, rtol=1e-4, atol=1e-5)
    # The momentum the unit trains with is back, and nothing but the statistics moved.
    assert all(bn.momentum == 0.99 for bn in unit_batch_norms(model))


def test_a_dataset_of_tuples_gives_the_same_statistics_as_the_array():
    model, unit = unit_model()
    x = np.random.default_rng(2).normal(0.0, 1.0, (8, 6, 6, 3)).astype(np.float32)
    deepcorrect.refresh_unit_statistics(model, x, batch_size=4)
    from_array = [bn.moving_variance.numpy().copy() for bn in unit_batch_norms(model)]
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(8))).batch(4)
    deepcorrect.refresh_unit_statistics(model, ds)
    for bn, want in zip(unit_batch_norms(model), from_array):
        np.testing.assert_allclose(bn.moving_variance.numpy(), want, rtol=1e-6)


def test_a_model_without_unit_batch_norms_is_left_alone():
    model = small_cnn()
    before = [w.numpy().copy() for w in model.weights]
    assert deepcorrect.refresh_unit_statistics(model, np.zeros((2, 32, 32, 3), "float32")) == 0
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))


@pytest.mark.parametrize("data, batch_size, fragment", [
    (np.zeros((0, 6, 6, 3), "float32"), 4, "at least one image"),
    (np.zeros((2, 6, 6, 3), "float32"), 0, "batch_size"),
])
def test_bad_input_names_the_argument(data, batch_size, fragment):
    model, _ = unit_model()
    with pytest.raises(ValueError, match=fragment):
        deepcorrect.refresh_unit_statistics(model, data, batch_size=batch_size)


def test_train_ends_with_the_first_epochs_exact_statistics(cifar10_small):
    x, y = cifar10_small[0][:96], cifar10_small[1][:96]

    def trained(refresh: bool) -> keras.Model:
        model = deepcorrect.wrap(small_cnn(), {"conv1": list(range(8))}, beta=0.5)
        deepcorrect.train(model, x, y, "awgn", [20.0], preset="cpu_quick", epochs=2,
                          batch_size=32, seed=5, verbose=0, refresh_statistics=refresh)
        return model

    model = trained(True)
    after_train = [bn.moving_mean.numpy().copy() for bn in unit_batch_norms(model)]
    first_epoch = pipeline.training_dataset(x, y, "awgn", [20.0], fraction=0.5, batch_size=32,
                                            seed=5, epochs=1)
    deepcorrect.refresh_unit_statistics(model, first_epoch)
    for bn, want in zip(unit_batch_norms(model), after_train):
        np.testing.assert_allclose(bn.moving_mean.numpy(), want, rtol=1e-5, atol=1e-6)
    # Six steps at momentum 0.99 leave the moving means near their start instead.
    stale = trained(False)
    gaps = [np.abs(a.moving_mean.numpy() - b).max()
            for a, b in zip(unit_batch_norms(stale), after_train)]
    assert max(gaps) > 0.1


def test_train_checks_the_flag(cifar10_small):
    model = deepcorrect.wrap(small_cnn(), {"conv1": list(range(8))}, beta=0.5)
    with pytest.raises(TypeError, match="refresh_statistics"):
        deepcorrect.train(model, cifar10_small[0][:8], cifar10_small[1][:8], "awgn", [20.0],
                          preset="cpu_quick", epochs=1, refresh_statistics="yes")

"""tf.data pipelines and Keras preprocessing layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import distort
from distort import layers, pipeline


@pytest.fixture(scope="module")
def batch(cifar10_small):
    x, y = cifar10_small
    return x[:24], y[:24]


def _collect(ds):
    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_training_dataset_distorts_the_second_half_at_listed_levels(batch):
    x, y = batch
    levels = [0.5, 1.5, 3.0]
    ds = pipeline.training_dataset(x, y, "gaussian_blur", levels, batch_size=8, seed=1,
                                   shuffle=False)
    for i, (xb, yb) in enumerate(ds):
        xb = xb.numpy()
        clean = x[8 * i : 8 * i + 8]
        np.testing.assert_array_equal(yb.numpy(), y[8 * i : 8 * i + 8])
        np.testing.assert_array_equal(xb[:4], clean[:4])
        for j in range(4, 8):
            candidates = [distort.gaussian_blur(clean[j], s).numpy() for s in levels]
            assert any(np.array_equal(xb[j], c) for c in candidates), "level not from the list"


def test_training_dataset_is_deterministic_under_its_seed(batch):
    x, y = batch
    a = _collect(pipeline.training_dataset(x, y, "awgn", [10, 30], batch_size=8, seed=4))
    b = _collect(pipeline.training_dataset(x, y, "awgn", [10, 30], batch_size=8, seed=4))
    c = _collect(pipeline.training_dataset(x, y, "awgn", [10, 30], batch_size=8, seed=5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def _augmentations(image, shift):
    """Every flip and shift `augment_batch` may make of one image, computed with NumPy."""
    out = []
    for flipped in (image, image[:, ::-1]):
        padded = np.pad(flipped, [(shift, shift), (shift, shift), (0, 0)], mode="reflect")
        h, w = image.shape[:2]
        out += [padded[dy:dy + h, dx:dx + w] for dy in range(2 * shift + 1)
                for dx in range(2 * shift + 1)]
    return out


def test_augment_batch_flips_and_shifts_each_image_within_an_eighth(batch):
    x, _ = batch  # 32x32: shifts of up to 4 pixels
    out = pipeline.augment_batch(tf.constant(x), tf.constant([3, 9])).numpy()
    assert out.dtype == x.dtype and out.shape == x.shape
    chosen = []
    for image, result in zip(x, out):
        matches = [i for i, c in enumerate(_augmentations(image, 4)) if np.array_equal(c, result)]
        assert matches, "not a flip and shift of its own image"
        chosen.append(matches[0])
    assert len(set(chosen)) > 5  # drawn per image, not once per batch
    again = pipeline.augment_batch(tf.constant(x), tf.constant([3, 9])).numpy()
    other = pipeline.augment_batch(tf.constant(x), tf.constant([3, 10])).numpy()
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, other)


def test_training_dataset_augments_before_it_distorts(batch):
    x, y = batch
    plain = _collect(pipeline.training_dataset(x, y, "awgn", [20], batch_size=8, seed=2,
                                               shuffle=False))
    augmented = _collect(pipeline.training_dataset(x, y, "awgn", [20], batch_size=8, seed=2,
                                                   shuffle=False, augment=True))
    np.testing.assert_array_equal(augmented[1], plain[1])
    for b in range(3):  # the clean half of every batch: augmented copies of its images
        for j in range(4):
            i = 8 * b + j
            assert any(np.array_equal(augmented[0][i], c) for c in _augmentations(x[i], 4))
    assert not np.array_equal(augmented[0], plain[0])


def test_several_distortions_one_per_batch(batch):
    x, y = batch
    table = {"awgn": [40.0], "gaussian_blur": [2.0]}
    ds = pipeline.training_dataset(x, y, table, batch_size=8, seed=0, shuffle=False)
    seen = set()
    for i, (xb, _) in enumerate(ds):
        clean = x[8 * i : 8 * i + 8]
        if np.array_equal(xb.numpy()[4:], distort.gaussian_blur(clean[4:], 2.0).numpy()):
            seen.add("blur")
        else:
            noise = xb.numpy()[4:].astype(float) - clean[4:]
            assert 20 < noise.std() < 45
            seen.add("noise")
    assert seen  # each batch is one or the other


def test_restoration_pairs_keep_clean_targets(batch):
    x, y = batch
    ds = pipeline.restoration_dataset(x, y, "awgn", [20], batch_size=8, seed=0, shuffle=False)
    inputs, (targets, labels) = next(iter(ds))
    np.testing.assert_array_equal(targets.numpy(), x[:8].astype(np.float32))
    np.testing.assert_array_equal(inputs.numpy()[:4], x[:4].astype(np.float32))
    assert np.abs(inputs.numpy()[4:] - x[4:8]).mean() > 5
    np.testing.assert_array_equal(labels.numpy(), y[:8])


def test_evaluation_datasets_match_apply(batch):
    x, y = batch
    sets = pipeline.evaluation_datasets(x, y, "jpeg", [5, 20], batch_size=10)
    assert list(sets) == [None, 5.0, 20.0]
    got, labels = _collect(sets[5.0])
    np.testing.assert_array_equal(got, distort.jpeg(x, 5).numpy())
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(_collect(sets[None])[0], x)


def test_uniform_sampling_draws_in_range(batch):
    x, y = batch
    ds = pipeline.training_dataset(x, y, "awgn", (0.0, 4.0), sampling="uniform", batch_size=24,
                                   seed=0, shuffle=False)
    xb = next(iter(ds))[0].numpy().astype(float)
    assert np.abs(xb[12:] - x[12:]).max() <= 4 * 6  # six sigma of at most 4


@pytest.mark.parametrize("bad, fragment", [
    (dict(distortion="fog", levels=[1]), "name"),
    (dict(distortion="awgn", levels=[]), "levels"),
    (dict(distortion="awgn", levels=[1], fraction=1.5), "fraction"),
    (dict(distortion="awgn", levels=[1], batch_size=0), "batch_size"),
    (dict(distortion="awgn", levels=[1, 2, 3], sampling="uniform"), "levels"),
    (dict(distortion="awgn", levels=[1], sampling="normal"), "sampling"),
])
def test_pipeline_bad_arguments(batch, bad, fragment):
    x, y = batch
    with pytest.raises(ValueError, match=fragment):
        pipeline.training_dataset(x, y, **bad)


# ---------------------------------------------------------------------------
# Keras layers
# ---------------------------------------------------------------------------
def test_layer_is_identity_at_inference_and_distorts_in_training(batch):
    x = batch[0][:8].astype(np.float32)
    layer = layers.AWGN(levels=[30.0], seed=3)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    y = layer(x, training=True).numpy()
    np.testing.assert_array_equal(y[:4], x[:4])
    assert 15 < np.abs(y[4:] - x[4:]).mean() < 40


def test_layers_serialise_and_models_load_in_safe_mode(tmp_path, batch):
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.GaussianBlur(levels=[1.0, 2.0], seed=1),
        layers.JPEG(levels=[10], fraction=1.0, seed=2),
        layers.RandomDistortion("defocus_blur", [2.0], seed=3, options={"border": "constant"}),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = batch[0][:4].astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert [type(l).__name__ for l in loaded.layers[:3]] == ["GaussianBlur", "JPEG", "RandomDistortion"]
    assert loaded.layers[2].get_config()["options"] == {"border": "constant"}
    assert "Lambda" not in path.read_bytes().decode("latin-1")


def test_layers_train_inside_fit(batch):
    x, y = batch
    model = keras.Sequential([keras.Input((32, 32, 3)), layers.CameraShake(seed=0),
                              keras.layers.Rescaling(1 / 255.0), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x.astype(np.float32), y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])

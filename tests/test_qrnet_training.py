"""Tests of the QRNet loss, trainer modes, Algorithm 1 batches, checkpoints and restore."""

import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from qrnet import (
    ClassifierSpec,
    QualityRecoveryTrainer,
    build_qrnet,
    clean_batches,
    paired_batches,
    resolve_distortions,
    restore,
    train,
)

SIZE = 16
CLASSES = 5
CIFAR10 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10", "cifar10.npz")


def _classifier(name="clf", seed=0, logits=False):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(CLASSES, activation=None if logits else "softmax", name="head"),
        ],
        name=name,
    )


def _restorer(dropout=0.0, seed=0):
    keras.utils.set_random_seed(seed)
    return build_qrnet(base_width=4, depth=2, dropout=dropout)


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")
    noisy = np.clip(clean + rng.normal(0, 40, clean.shape), 0, 255).astype("float32")
    labels = rng.integers(0, CLASSES, n).astype("int32")
    return noisy, clean, labels


def _numpy_ce(probs, labels):
    probs = np.clip(probs, 1e-7, 1 - 1e-7)  # Keras clips probabilities the same way.
    return float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))


def _independent_loss(restorer, classifiers, lambdas, scales, noisy, clean, labels):
    restored = np.asarray(restorer(noisy, training=False), dtype="float64")
    loss = np.mean(np.abs(clean - restored)) / 255.0
    for classifier, lam, scale in zip(classifiers, lambdas, scales):
        probs = np.asarray(classifier((restored * scale).astype("float32"), training=False))
        loss += lam * _numpy_ce(probs.astype("float64"), labels)
    return loss


def test_loss_equals_independent_l1_plus_lambda_ce():
    restorer, classifier = _restorer(dropout=0.2), _classifier()
    noisy, clean, labels = _batch()
    trainer = QualityRecoveryTrainer(restorer, classifier, preprocessing="unit")
    assert trainer.mode == "qrnet" and trainer.lambdas == [0.01]
    terms = trainer.loss_terms(noisy, clean, labels, training=False)
    expected = _independent_loss(restorer, [classifier], [0.01], [1 / 255], noisy, clean, labels)
    np.testing.assert_allclose(float(terms["loss"]), expected, rtol=1e-5)
    trainer.compile(optimizer="adam")
    logs = trainer.evaluate(noisy, (clean, labels), batch_size=len(noisy), verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)


def test_train_step_logs_the_loss_before_its_update():
    # Dropout 0 makes the training-mode forward pass deterministic.
    restorer, classifier = _restorer(dropout=0.0), _classifier()
    noisy, clean, labels = _batch()
    expected = _independent_loss(restorer, [classifier], [0.1], [1 / 255], noisy, clean, labels)
    trainer = QualityRecoveryTrainer(restorer, classifier, lambdas=0.1, preprocessing="unit")
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = trainer.train_on_batch(noisy, (clean, labels), return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    assert set(logs) == {"loss", "l1", "ce_clf", "acc_clf"}


def test_mqrnet_loss_sums_each_classifier_with_its_lambda_and_preprocessing():
    restorer = _restorer()
    first, second = _classifier("first", 1), _classifier("second", 2, logits=True)
    noisy, clean, labels = _batch()
    trainer = QualityRecoveryTrainer(
        restorer,
        [
            ClassifierSpec(first, preprocessing="unit", weight=0.01),
            ClassifierSpec(second, preprocessing=lambda x: x / 127.5 - 1.0, weight=0.5, from_logits=True),
        ],
    )
    assert trainer.mode == "mqrnet"
    terms = trainer.loss_terms(noisy, clean, labels)
    restored = np.asarray(restorer(noisy), dtype="float64")
    logits = np.asarray(second((restored / 127.5 - 1.0).astype("float32")), dtype="float64")
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    expected = _independent_loss(restorer, [first], [0.01], [1 / 255], noisy, clean, labels)
    expected += 0.5 * float(np.mean(-np.log(softmax[np.arange(len(labels)), labels])))
    np.testing.assert_allclose(float(terms["loss"]), expected, rtol=1e-5)
    assert set(terms) >= {"ce_first", "ce_second", "l1"}


def _l1_gradients(restorer, noisy, clean):
    with tf.GradientTape() as tape:
        restored = restorer(noisy, training=False)
        loss = tf.reduce_mean(tf.abs(clean - restored)) / 255.0
    return tape.gradient(loss, restorer.trainable_variables)


def test_lambda_zero_gives_exactly_the_recnet_gradient():
    restorer, classifier = _restorer(), _classifier()
    noisy, clean, labels = _batch()
    with_classifier = QualityRecoveryTrainer(restorer, classifier, lambdas=[0.0], preprocessing="unit")
    recnet = QualityRecoveryTrainer(restorer, mode="recnet")
    assert with_classifier.mode == "recnet"
    assert len(with_classifier.trainable_variables) == len(restorer.trainable_variables)
    got = with_classifier.gradients(noisy, clean, labels, training=False)
    want = recnet.gradients(noisy, clean, labels, training=False)
    independent = _l1_gradients(restorer, noisy, clean)
    for g, w, i in zip(got, want, independent):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        np.testing.assert_allclose(np.asarray(g), np.asarray(i), rtol=1e-5, atol=1e-9)
    with_lambda = QualityRecoveryTrainer(restorer, classifier, lambdas=1.0, preprocessing="unit")
    differs = with_lambda.gradients(noisy, clean, labels, training=False)
    assert any(not np.array_equal(np.asarray(d), np.asarray(w)) for d, w in zip(differs, want))


@pytest.mark.parametrize("mode", ["recnet", "qrnet", "mqrnet", "end_to_end"])
def test_only_the_restorer_and_end_to_end_head_are_updated(mode):
    restorer = _restorer()
    classifiers = [_classifier("a", 1), _classifier("b", 2)][: 2 if mode == "mqrnet" else 1]
    before = {c.name: {l.name: [w.copy() for w in l.get_weights()] for l in c.layers} for c in classifiers}
    restorer_before = [w.copy() for w in restorer.get_weights()]
    lambdas = 0.0 if mode == "recnet" else 1.0
    trainer = QualityRecoveryTrainer(restorer, classifiers, lambdas, mode=mode, preprocessing="unit")
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    noisy, clean, labels = _batch()
    trainer.fit(noisy, (clean, labels), batch_size=3, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(restorer.get_weights(), restorer_before))
    for classifier in classifiers:
        for layer in classifier.layers:
            changed = any(
                not np.array_equal(a, b)
                for a, b in zip(layer.get_weights(), before[classifier.name][layer.name])
            )
            assert changed == (mode == "end_to_end" and layer.name == "head"), layer.name


def test_end_to_end_head_layers_count_and_bad_modes():
    classifier = _classifier()
    trainer = QualityRecoveryTrainer(_restorer(), classifier, mode="end_to_end", head_layers=2)
    trainable = {v.path.split("/")[-2] for v in trainer.trainable_variables if "clf" in v.path}
    assert trainable == {"hidden", "head"}
    with pytest.raises(ValueError, match="head_layers must be between 1 and"):
        QualityRecoveryTrainer(_restorer(), _classifier(), mode="end_to_end", head_layers=3)
    with pytest.raises(ValueError, match="needs exactly 1 classifier"):
        QualityRecoveryTrainer(_restorer(), [_classifier(), _classifier()], mode="qrnet")
    with pytest.raises(ValueError, match="needs 2 or more classifiers"):
        QualityRecoveryTrainer(_restorer(), _classifier(), mode="mqrnet")
    with pytest.raises(ValueError, match="lambdas must be 0 in mode 'recnet'"):
        QualityRecoveryTrainer(_restorer(), _classifier(), lambdas=0.1, mode="recnet")
    with pytest.raises(ValueError, match="mode must be one of"):
        QualityRecoveryTrainer(_restorer(), mode="unet")
    with pytest.raises(ValueError, match="lambdas must have one entry per classifier"):
        QualityRecoveryTrainer(_restorer(), [_classifier(), _classifier()], lambdas=[0.1])


def _add(images, name, level, seed=None):
    """A deterministic stand-in distortion: adds `level` to every pixel."""
    return images + level


def test_paired_batches_hold_clean_images_and_distorted_copies():
    images = np.arange(10 * 4 * 4 * 3).reshape(10, 4, 4, 3) % 200
    labels = np.arange(10)
    dataset = paired_batches(
        images.astype("uint8"), labels, {"add": [10.0, 20.0]}, batch_size=8, seed=3, apply_fn=_add
    )
    batches = list(dataset)
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    shifts = set()
    for inputs, (targets, batch_labels) in batches:
        half = len(inputs) // 2
        np.testing.assert_array_equal(inputs[:half], targets[:half])
        np.testing.assert_array_equal(targets[:half], targets[half:])
        np.testing.assert_array_equal(batch_labels[:half], batch_labels[half:])
        np.testing.assert_array_equal(targets[:half], images[batch_labels[:half].numpy()])
        shift = np.unique(inputs[half:] - targets[half:])
        assert len(shift) == 1  # One distortion level per batch.
        shifts.add(float(shift[0]))
    assert shifts <= {10.0, 20.0}


def test_distortion_draws_cover_every_level_and_follow_the_seed():
    fn = resolve_distortions([("add", [1.0, 2.0]), ("sub", [-3.0])], apply_fn=_add)
    draws = [float(fn(tf.zeros([1, 1, 1, 1]), tf.constant([s, 7], tf.int64))[0, 0, 0, 0]) for s in range(40)]
    assert set(draws) == {1.0, 2.0, -3.0}
    again = [float(fn(tf.zeros([1, 1, 1, 1]), tf.constant([s, 7], tf.int64))[0, 0, 0, 0]) for s in range(40)]
    assert draws == again


def test_validation_batches_repeat_and_training_batches_reshuffle():
    images = np.random.default_rng(0).integers(0, 255, (16, 4, 4, 3)).astype("uint8")
    labels = np.arange(16)
    noise = lambda x, seed: x + tf.random.stateless_normal(tf.shape(x), seed)  # noqa: E731
    fixed = paired_batches(images, labels, noise, batch_size=4, seed=1, shuffle=False)
    first, second = [np.concatenate([b[0] for b in fixed]) for _ in range(2)]
    np.testing.assert_array_equal(first, second)
    moving = paired_batches(images, labels, noise, batch_size=4, seed=1)
    first, second = [np.concatenate([b[0] for b in moving]) for _ in range(2)]
    assert not np.array_equal(first, second)
    rebuilt = paired_batches(images, labels, noise, batch_size=4, seed=1)
    np.testing.assert_array_equal(first, np.concatenate([b[0] for b in rebuilt]))


def test_clean_batches_and_batch_size_validation():
    images = np.zeros((5, 4, 4, 3), "uint8")
    batches = list(clean_batches(images, np.arange(5), batch_size=2, shuffle=False))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    with pytest.raises(ValueError, match="batch_size must be an even integer >= 2"):
        paired_batches(images, np.arange(5), lambda x, s: x, batch_size=3)


def test_train_checkpoints_every_epoch_and_resumes(tmp_path):
    noisy, clean, labels = _batch(n=8)
    distort_fn = lambda x, seed: x * 0.5  # noqa: E731
    directory = str(tmp_path / "run")
    first = QualityRecoveryTrainer(_restorer(seed=1), _classifier(), preprocessing="unit")
    history = train(first, clean, labels, distort_fn, validation=(clean, labels), epochs=2,
                    batch_size=4, checkpoint_dir=directory, verbose=0, pretrain_epochs=1)
    assert len(history["val_loss"]) == 2
    assert set(history) >= {"loss", "l1", "ce_clf", "acc_clf", "val_loss", "val_acc_clf"}
    assert sorted(os.listdir(directory)) == [
        "restorer_best.keras", "restorer_last.keras", "state-1.weights.h5", "state.json"
    ]
    last = keras.models.load_model(os.path.join(directory, "restorer_last.keras"), safe_mode=True)
    np.testing.assert_array_equal(np.asarray(last(noisy)), np.asarray(first.restorer(noisy)))

    resumed = QualityRecoveryTrainer(_restorer(seed=2), _classifier(), preprocessing="unit")
    history = train(resumed, clean, labels, distort_fn, validation=(clean, labels), epochs=3,
                    batch_size=4, checkpoint_dir=directory, verbose=0, pretrain_epochs=1)
    assert len(history["val_loss"]) == 3  # Two epochs restored, one more run.
    steps_per_epoch = len(clean) // (4 // 2)  # Each batch holds 2 clean + 2 distorted images.
    assert resumed.optimizer.iterations.numpy() == first.optimizer.iterations.numpy() + steps_per_epoch
    finished = QualityRecoveryTrainer(_restorer(seed=3), _classifier(), preprocessing="unit")
    train(finished, clean, labels, distort_fn, validation=(clean, labels), epochs=3,
          batch_size=4, checkpoint_dir=directory, verbose=0, pretrain_epochs=1)
    np.testing.assert_array_equal(
        np.asarray(finished.restorer(noisy)), np.asarray(resumed.restorer(noisy))
    )


def test_restore_matches_the_restorer_in_inference_mode():
    restorer = _restorer(dropout=0.5)
    images = np.random.default_rng(1).integers(0, 256, (5, 17, 23, 3)).astype("uint8")
    restored = restore(restorer, images, batch_size=2)
    assert restored.dtype == np.float32 and restored.shape == images.shape
    np.testing.assert_allclose(restored, np.asarray(restorer(images.astype("float32"), training=False)), atol=1e-4)
    np.testing.assert_allclose(restore(restorer, images[0]), restored[0], atol=1e-4)
    with pytest.raises(ValueError, match="images must have shape"):
        restore(restorer, np.zeros((4, 4)))


def _tiny_cifar_classifier():
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax", name="head"),
        ],
        name="tiny_cnn",
    )


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CIFAR10), reason="CIFAR-10 not found at ../shared/data")
def test_short_real_cifar10_run_reduces_the_loss():
    start = time.time()
    with np.load(CIFAR10, allow_pickle=False) as data:
        images, labels = data["x_train"][:600], data["y_train"][:600].astype("int32")
    keras.utils.set_random_seed(0)
    classifier = _tiny_cifar_classifier()
    classifier.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(images[:400].astype("float32"), labels[:400], epochs=3, batch_size=32, verbose=0)

    def noise(x, seed):
        sigma = tf.random.stateless_uniform([], seed, 10.0, 40.0)
        return tf.clip_by_value(x + sigma * tf.random.stateless_normal(tf.shape(x), seed + 1), 0, 255)

    trainer = QualityRecoveryTrainer(build_qrnet(base_width=8, depth=2), classifier)
    history = train(trainer, images[:400], labels[:400], noise, validation=(images[400:], labels[400:]),
                    epochs=4, batch_size=32, verbose=0, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert history["val_l1"][-1] < history["val_l1"][0]
    print(f"cifar10 run: {time.time() - start:.1f}s, loss {history['loss']}")


def test_evaluate_restoration_against_independent_accuracy_and_psnr():
    from qrnet.evaluate import average_over_levels, evaluate_restoration

    classifier = _classifier()
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    labels = rng.integers(0, CLASSES, 8)

    def scale(x, name, level, seed=None):
        return x * level

    identity = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()], name="same")
    rows = evaluate_restoration(classifier, images, labels, {"scale": [0.5, 0.9]}, {"same": identity},
                                preprocessing="unit", apply_fn=scale)
    assert len(rows) == 6
    for row in rows:
        seen = images * (1.0 if row["distortion"] == "clean" else row["level"])
        predicted = np.argmax(np.asarray(classifier(seen / 255.0)), axis=-1)
        assert row["accuracy"] == pytest.approx(np.mean(predicted == labels))
        assert row["top5"] == 1.0  # 5 classes: the label is always among the best 5
        if row["distortion"] != "clean":
            mse = np.mean((seen - images) ** 2, axis=(1, 2, 3))
            assert row["psnr"] == pytest.approx(np.mean(10 * np.log10(255.0**2 / mse)), rel=1e-4)
    means = average_over_levels(rows)
    assert means["scale"]["same"] == pytest.approx(means["scale"]["classifier"])


def test_top_classes_are_the_highest_scores_in_order():
    from qrnet.evaluate import classify, top_classes

    classifier = _classifier()
    images = np.random.default_rng(5).uniform(0, 255, (7, SIZE, SIZE, 3)).astype("float32")
    scores = np.asarray(classifier(images / 255.0))
    top = top_classes(classifier, images, "unit", k=3, batch_size=3)
    assert top.shape == (7, 3)
    for row, best in zip(scores, top):
        assert set(best) == set(np.argsort(row)[-3:])
        assert np.all(np.diff(row[best]) <= 0)
    assert np.array_equal(classify(classifier, images, "unit"), np.argmax(scores, axis=-1))
    assert top_classes(classifier, images, "unit", k=9).shape == (7, CLASSES)
    with pytest.raises(ValueError, match="k must be"):
        top_classes(classifier, images, k=0)

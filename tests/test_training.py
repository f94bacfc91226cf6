"""The DeepCorrect training recipe: what trains, what stays frozen, resume, label-free, strategies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import deepcorrect
from deepcorrect.training import TRAINING_PRESETS, step_schedule, train
from tests.conftest import REPO


def small_cnn(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


def weights_by_name(model):
    return {w.path: w.numpy().copy() for w in model.weights}


def test_step_schedule():
    f = step_schedule(0.1, 0.1, 10)
    assert [round(f(e), 8) for e in (0, 9, 10, 19, 20)] == [0.1, 0.1, 0.01, 0.01, 0.001]


def test_only_units_change_and_frozen_bn_stats_stay(cifar10_small):
    x, y = cifar10_small[0][:128], cifar10_small[1][:128]
    pretrained = small_cnn()
    model = deepcorrect.wrap(pretrained, {"conv1": list(range(8))}, beta=0.5)
    before = weights_by_name(model)
    train(model, x, y, "awgn", [10, 20], preset="cpu_quick", epochs=1, batch_size=32, verbose=0)
    after = weights_by_name(model)
    unit_paths = {w.path for w in model.trainable_weights}
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert changed and changed <= {p for p in before if "correction" in p or p in unit_paths} | {
        p for p in before if "moving" in p and any(u.split("/")[0] in p for u in unit_paths)}
    # The pretrained BN's moving statistics are untouched (inference mode).
    assert all(np.array_equal(before[p], after[p]) for p in before if p.startswith("bn1/"))


def test_resume_after_interruption_matches_uninterrupted(tmp_path, cifar10_small):
    x, y = cifar10_small[0][:96], cifar10_small[1][:96]

    def run(ckdir, epochs, stop_after=None):
        model = deepcorrect.wrap(small_cnn(), {"conv1": list(range(8))}, beta=0.5)
        cbs = []
        if stop_after is not None:
            class Stop(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None):
                    if epoch + 1 == stop_after:
                        raise KeyboardInterrupt
            cbs.append(Stop())
        try:
            train(model, x, y, "gaussian_blur", [1.0, 2.0], preset="cpu_quick", epochs=epochs,
                  batch_size=32, checkpoint_dir=ckdir, callbacks=cbs, verbose=0, seed=3)
        except KeyboardInterrupt:
            pass
        return model

    full = run(tmp_path / "a", 2)
    run(tmp_path / "b", 2, stop_after=1)
    assert (tmp_path / "b" / "model.keras").exists()
    resumed = run(tmp_path / "b", 2)
    probe = x[:8].astype(np.float32)
    np.testing.assert_allclose(resumed(probe).numpy(), full(probe).numpy(), atol=1e-4)
    loaded = keras.models.load_model(tmp_path / "b" / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(probe).numpy(), resumed(probe).numpy(), atol=1e-5)


def test_label_free_mode_moves_towards_the_teacher(cifar10_small):
    x = cifar10_small[0][:128]
    teacher = small_cnn(1)
    model = deepcorrect.wrap(teacher, {"conv1": list(range(8))}, beta=1.0)
    history = train(model, x, None, "awgn", [40.0], teacher=teacher, preset="cpu_quick", epochs=2,
                    batch_size=32, learning_rate=0.05, verbose=0)
    assert set(history.history) >= {"loss", "agreement"}
    assert history.history["loss"][-1] <= history.history["loss"][0]


@pytest.mark.parametrize("bad, fragment", [
    (dict(preset="imagenet21k"), "preset"),
    (dict(epochs=-1), "epochs"),
    (dict(labels=None), "labels"),
])
def test_bad_training_arguments(cifar10_small, bad, fragment):
    model = deepcorrect.wrap(small_cnn(), {"conv1": list(range(8))})
    kwargs = dict(labels=cifar10_small[1][:8], distortion="awgn", levels=[10])
    kwargs.update(bad)
    with pytest.raises(ValueError, match=fragment):
        train(model, cifar10_small[0][:8], **kwargs)


def test_frozen_model_is_refused(cifar10_small):
    model = small_cnn()
    model.trainable = False
    with pytest.raises(ValueError, match="trainable"):
        train(model, cifar10_small[0][:8], cifar10_small[1][:8], "awgn", [10])


def test_presets_have_the_paper_rates():
    assert TRAINING_PRESETS["deepcorrect_cifar"]["learning_rate"] == 0.1
    assert TRAINING_PRESETS["deepcorrect_imagenet"]["finetune_learning_rate"] == 0.001


def test_mirrored_strategy_on_two_logical_cpus():
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import deepcorrect
        from tests.test_training import small_cnn
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = deepcorrect.wrap(small_cnn(), {"conv1": list(range(8))}, beta=0.5)
        x = np.random.default_rng(0).integers(0, 256, [64, 32, 32, 3]).astype("uint8")
        y = np.random.default_rng(1).integers(0, 10, 64)
        h = deepcorrect.train(model, x, y, "awgn", [20.0], preset="cpu_quick", epochs=1,
                              batch_size=32, strategy=strategy, verbose=0)
        print("replicas", strategy.num_replicas_in_sync, "loss", h.history["loss"][0])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "replicas 2" in proc.stdout


def dropout_cnn() -> keras.Model:
    """small_cnn with dropout before the head, its weights from NumPy (no Keras seeding)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape) for w in model.weights])
    return model


def test_same_seed_gives_the_same_weights_though_dropout_was_seeded_elsewhere():
    # The dropout layer's seed generator of each copy starts wherever the process's random
    # state was; train(seed=...) must make the masks, and so the weights, a function of seed.
    x = np.random.default_rng(2).integers(0, 256, [32, 32, 32, 3]).astype("uint8")
    y = np.random.default_rng(3).integers(0, 10, 32)

    def run(seed):
        model = deepcorrect.finetune(dropout_cnn(), 1)
        train(model, x, y, "awgn", [20.0], preset="cpu_quick", epochs=1, batch_size=16,
              seed=seed, verbose=0)
        return model.get_weights()

    first, second, other = run(3), run(3), run(4)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_augment_trains_on_flipped_and_shifted_images_reproducibly(tmp_path, cifar10_small):
    x, y = cifar10_small[0][:64], cifar10_small[1][:64]

    def run(augment, checkpoint_dir=None):
        model = deepcorrect.wrap(small_cnn(), {"conv1": list(range(8))}, beta=0.5)
        train(model, x, y, "awgn", [20], preset="cpu_quick", epochs=1, batch_size=32,
              verbose=0, augment=augment, checkpoint_dir=checkpoint_dir)
        return [w.numpy() for w in model.trainable_weights]

    first, again, plain = run(True, tmp_path / "aug"), run(True), run(False)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, plain))
    with pytest.raises(ValueError, match="augment"):  # a checkpoint of another run
        run(False, tmp_path / "aug")
    with pytest.raises(TypeError, match="augment must be True or False"):
        run("yes")


def test_the_label_free_preset_augments_unless_told_otherwise(cifar10_small):
    x = cifar10_small[0][:64]
    teacher = small_cnn(1)

    def trained(**kwargs):
        model = deepcorrect.wrap(teacher, {"conv1": list(range(8))}, beta=0.5)
        train(model, x, None, "awgn", [40.0], teacher=teacher, preset="label_free", epochs=1,
              steps_per_epoch=2, verbose=0, **kwargs)
        return [w.numpy() for w in model.trainable_weights]

    default, augmented, plain = trained(), trained(augment=True), trained(augment=False)
    assert TRAINING_PRESETS["label_free"]["augment"] is True
    assert all(np.array_equal(a, b) for a, b in zip(default, augmented))
    assert any(not np.array_equal(a, b) for a, b in zip(default, plain))

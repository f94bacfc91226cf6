"""Bad training arguments, diverging runs, seeded models and folded batch norms in `wrap`.

- `deepcorrect.train`, `qrnet.train` and `qrnet.QualityRecoveryTrainer` refuse 0, negative,
  NaN, infinite, boolean and wrongly typed counts and rates, naming the argument and the
  allowed range (None means the preset's default); so do both command lines (one line on
  stderr, exit status 2, no output written).
- A run whose loss (or weights) becomes NaN or infinite stops with `TrainingDiverged`
  naming the epoch, the step and the learning rate; the model keeps the weights it had
  before that epoch, and neither the model nor a checkpoint of that epoch is written.
- `wrap(seed=...)` and `qrnet.build_qrnet(seed=...)` give the same weights for the same
  seed, other weights for another, and keep the seeds in the saved config.
- `wrap(train_head=k)` keeps folded batch norms after the head frozen, as Finetune-k does.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings

import keras
import numpy as np
import pytest

import deepcorrect
import qrnet
from deepcorrect.cli import main as deepcorrect_main
from robustkit.training_checks import TrainingDiverged, derived_seed
from qrnet.cli import main as qrnet_main


def tiny_cnn(dropout: float = 0.0) -> keras.Model:
    """A 32x32 classifier with a batch norm after each conv (trained statistics)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 3, strides=2, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="drop")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="tiny")
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5, 2, w.shape) if "variance" in w.path
                       else rng.normal(0, 0.3, w.shape) for w in model.weights])
    return model


def fold(layer):
    """An identity plus a bias, as the batch norms of converted (TFLite) weights are."""
    n = layer.moving_mean.shape[0]
    layer.moving_mean.assign(np.zeros(n, "float32"))
    layer.moving_variance.assign(np.full(n, 1.0 - layer.epsilon, "float32"))
    layer.gamma.assign(np.ones(n, "float32"))


RNG = np.random.default_rng(1)
IMAGES = RNG.integers(0, 256, (32, 32, 32, 3)).astype("uint8")
LABELS = RNG.integers(0, 10, 32).astype("int64")


@pytest.fixture(scope="module")
def wrapped():
    return deepcorrect.wrap(tiny_cnn(), {"conv1": [0, 1, 2, 3]}, beta=0.5)


def train_kwargs(**overrides):
    return {"preset": "cpu_quick", "epochs": 1, "batch_size": 16, "verbose": 0, **overrides}


# ---------------------------------------------------------------------------
# Bad arguments, through the API.

INTEGER = r"must be an integer >= {low}"
RATE = r"must be a finite number > 0"

# (argument, value, message fragment). A row is one call, refused before any training.
DEEPCORRECT_BAD = [
    ("epochs", 0, INTEGER.format(low=1)), ("epochs", -3, INTEGER.format(low=1)),
    ("epochs", True, INTEGER.format(low=1)), ("epochs", 2.0, INTEGER.format(low=1)),
    ("epochs", "3", INTEGER.format(low=1)), ("epochs", math.nan, INTEGER.format(low=1)),
    ("batch_size", 0, INTEGER.format(low=1)), ("batch_size", -4, INTEGER.format(low=1)),
    ("batch_size", False, INTEGER.format(low=1)), ("batch_size", 16.0, INTEGER.format(low=1)),
    ("learning_rate", 0.0, RATE), ("learning_rate", -0.1, RATE), ("learning_rate", math.nan, RATE),
    ("learning_rate", math.inf, RATE), ("learning_rate", True, RATE), ("learning_rate", "0.1", RATE),
    ("steps_per_epoch", 0, INTEGER.format(low=1)), ("steps_per_epoch", 1.5, INTEGER.format(low=1)),
    ("fraction", -0.1, r"must be a finite number \[0.0, 1.0\]"),
    ("fraction", 1.5, r"must be a finite number \[0.0, 1.0\]"),
    ("fraction", math.nan, r"must be a finite number \[0.0, 1.0\]"),
    ("seed", -1, r"must be an integer in \[0, 2147483647\]"),
    ("seed", 2**31, r"must be an integer in \[0, 2147483647\]"),
    ("seed", 0.5, r"must be an integer in \[0, 2147483647\]"),
    ("decay_every", 0, INTEGER.format(low=1)), ("decay_every", 1.5, INTEGER.format(low=1)),
]


@pytest.mark.parametrize("argument,value,message", DEEPCORRECT_BAD)
def test_deepcorrect_train_refuses_bad_argument(wrapped, argument, value, message):
    before = [w.copy() for w in wrapped.get_weights()]
    with pytest.raises((TypeError, ValueError), match=rf"{argument} {message}.*Received: {argument}="):
        deepcorrect.train(wrapped, IMAGES, LABELS, "awgn", [10.0],
                          **train_kwargs(**{argument: value}))
    for a, b in zip(before, wrapped.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_decay_every_sets_the_step_schedule():
    model = deepcorrect.wrap(tiny_cnn(), {"conv1": [0, 1, 2, 3]}, beta=0.5)
    history = deepcorrect.train(model, IMAGES, LABELS, "awgn", [10.0], decay_every=1,
                                **train_kwargs(epochs=2, learning_rate=0.01))
    # cpu_quick decays every 2 epochs; decay_every=1 drops the rate x0.1 after the first.
    np.testing.assert_allclose(history.history["learning_rate"], [0.01, 0.001], rtol=1e-6)


def test_deepcorrect_train_none_means_the_preset_default():
    model = deepcorrect.wrap(tiny_cnn(), {"conv1": [0, 1, 2, 3]}, beta=0.5)
    history = deepcorrect.train(model, IMAGES, LABELS, "awgn", [10.0], preset="cpu_quick",
                                epochs=None, batch_size=None, learning_rate=None,
                                steps_per_epoch=1, verbose=0)
    assert len(history.history["loss"]) == deepcorrect.TRAINING_PRESETS["cpu_quick"]["epochs"]


QRNET_BAD = [
    ("epochs", 0, INTEGER.format(low=1)), ("epochs", -1, INTEGER.format(low=1)),
    ("epochs", True, INTEGER.format(low=1)), ("epochs", 2.0, INTEGER.format(low=1)),
    ("pretrain_epochs", -1, INTEGER.format(low=0)), ("pretrain_epochs", True, INTEGER.format(low=0)),
    ("batch_size", 0, INTEGER.format(low=2)), ("batch_size", -4, INTEGER.format(low=2)),
    ("batch_size", True, INTEGER.format(low=2)), ("batch_size", 8.0, INTEGER.format(low=2)),
    ("batch_size", 7, r"must be an even integer >= 2"),
    ("learning_rate", 0.0, RATE), ("learning_rate", -1e-3, RATE), ("learning_rate", math.nan, RATE),
    ("learning_rate", math.inf, RATE), ("learning_rate", True, RATE),
    ("patience", -1, INTEGER.format(low=0)), ("patience", 1.5, INTEGER.format(low=0)),
    ("steps_per_epoch", 0, INTEGER.format(low=1)),
    ("seed", -1, r"must be an integer in \[0, 2147483647\]"),
    ("seed", True, r"must be an integer in \[0, 2147483647\]"),
]


@pytest.fixture(scope="module")
def recnet():
    return qrnet.QualityRecoveryTrainer(qrnet.build_qrnet(base_width=4, depth=2), mode="recnet")


@pytest.mark.parametrize("argument,value,message", QRNET_BAD)
def test_qrnet_train_refuses_bad_argument(recnet, argument, value, message, tmp_path):
    kwargs = {"epochs": 1, "batch_size": 8, "verbose": 0, argument: value}
    with pytest.raises((TypeError, ValueError), match=rf"{argument} {message}.*Received: {argument}="):
        qrnet.train(recnet, IMAGES[:16], LABELS[:16], {"awgn": [20.0]},
                    checkpoint_dir=str(tmp_path / "ck"), **kwargs)
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(
    "argument,value,message",
    [("head_layers", 0, INTEGER.format(low=1)), ("head_layers", -1, INTEGER.format(low=1)),
     ("head_layers", True, INTEGER.format(low=1)), ("pixel_scale", math.nan, RATE),
     ("pixel_scale", 0.0, RATE)],
)
def test_qrnet_trainer_refuses_bad_argument(argument, value, message):
    with pytest.raises((TypeError, ValueError), match=rf"{argument} {message}.*Received: {argument}="):
        qrnet.QualityRecoveryTrainer(qrnet.build_qrnet(base_width=4, depth=2), mode="recnet",
                                     **{argument: value})


# ---------------------------------------------------------------------------
# Bad arguments, through the command lines.


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("defects")
    np.savez(root / "data.npz", x_train=IMAGES, y_train=LABELS.astype("uint8"),
             x_test=IMAGES[:8], y_test=LABELS[:8].astype("uint8"))
    deepcorrect.wrap(tiny_cnn(), {"conv1": [0, 1, 2, 3]}, beta=0.5).save(root / "wrapped.keras")
    return root


def deepcorrect_train(files, out, *flags):
    return deepcorrect_main(["train", "--model", str(files / "wrapped.keras"), "--data",
                             str(files / "data.npz"), "--distortion", "awgn", "--levels", "10",
                             "--recipe", "cpu_quick", "--epochs", "1", "--batch-size", "16",
                             "--out", str(out), *flags])


def qrnet_train(files, out, *flags):
    return qrnet_main(["train", "--data", str(files / "data.npz"), "--distortion", "awgn=20",
                       "--preset", "qrnet_tiny", "--epochs", "1", "--batch-size", "8",
                       "--val-fraction", "0", "--verbose", "0", "--out", str(out), *flags])


@pytest.mark.parametrize(
    "flags,message",
    [(["--epochs", "0"], "epochs must be an integer >= 1"),
     (["--epochs", "-2"], "epochs must be an integer >= 1"),
     (["--batch-size", "0"], "batch_size must be an integer >= 1"),
     (["--batch-size", "-4"], "batch_size must be an integer >= 1"),
     (["--learning-rate", "nan"], "learning_rate must be a finite number > 0"),
     (["--learning-rate", "inf"], "learning_rate must be a finite number > 0"),
     (["--learning-rate", "0"], "learning_rate must be a finite number > 0")],
)
def test_deepcorrect_cli_refuses_bad_training_flag(files, tmp_path, capsys, flags, message):
    out = tmp_path / "out.keras"
    assert deepcorrect_train(files, out, *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "flags,message",
    [(["--epochs", "0"], "epochs must be an integer >= 1"),
     (["--batch-size", "0"], "batch_size must be an integer >= 2"),
     (["--batch-size", "7"], "batch_size must be an even integer >= 2"),
     (["--learning-rate", "nan"], "learning_rate must be a finite number > 0"),
     (["--learning-rate", "inf"], "learning_rate must be a finite number > 0"),
     (["--pretrain-epochs", "-1"], "pretrain_epochs must be an integer >= 0"),
     (["--patience", "-1"], "patience must be an integer >= 0"),
     (["--steps-per-epoch", "0"], "steps_per_epoch must be an integer >= 1"),
     (["--head-layers", "0"], "head_layers must be an integer >= 1")],
)
def test_qrnet_cli_refuses_bad_training_flag(files, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert qrnet_train(files, out, *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (out / "restorer.keras").exists()


def test_deepcorrect_cli_augment_trains_as_the_api_does(files, tmp_path):
    out = tmp_path / "aug.keras"
    assert deepcorrect_train(files, out, "--augment") == 0
    expected = keras.models.load_model(files / "wrapped.keras", safe_mode=True)
    deepcorrect.train(expected, IMAGES, LABELS, "awgn", [10.0], preset="cpu_quick", epochs=1,
                      batch_size=16, augment=True, verbose=0)
    got = keras.models.load_model(out, safe_mode=True)
    for a, b in zip(got.trainable_weights, expected.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flags, refresh", [((), True), (("--keep-moving-statistics",), False)])
def test_deepcorrect_cli_unit_statistics_follow_the_api(files, tmp_path, flags, refresh):
    out = tmp_path / "stats.keras"
    assert deepcorrect_train(files, out, *flags) == 0
    expected = keras.models.load_model(files / "wrapped.keras", safe_mode=True)
    deepcorrect.train(expected, IMAGES, LABELS, "awgn", [10.0], preset="cpu_quick", epochs=1,
                      batch_size=16, refresh_statistics=refresh, verbose=0)
    got = keras.models.load_model(out, safe_mode=True)
    moving = [w for w in expected.weights if "moving" in w.path and "unit" in w.path]
    assert moving
    got_by_path = {w.path: w for w in got.weights}
    for w in moving:
        np.testing.assert_allclose(got_by_path[w.path].numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Divergence.


class PoisonAt(keras.callbacks.Callback):
    """Sets the last trainable weight (a bias) to NaN at the start of epoch `epoch` (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.current = epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.current == self.epoch and batch == 0:
            weight = self.model.trainable_weights[-1]
            weight.assign(np.full(weight.shape, np.nan, "float32"))


def finite(model):
    return all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("kind,rate", [("wrap", 1e30), ("finetune", 1e30)])
def test_deepcorrect_train_stops_on_divergence_and_keeps_nothing_of_it(tmp_path, kind, rate):
    pretrained = tiny_cnn()
    model = (deepcorrect.wrap(pretrained, {"conv1": [0, 1, 2, 3]}, beta=0.5) if kind == "wrap"
             else deepcorrect.finetune(pretrained, 2))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(TrainingDiverged, match=rf"training diverged: .* at (the end of )?epoch 1"
                       rf"(, step \d+)?; lower learning_rate \(was {re.escape(str(rate))}\)"):
        deepcorrect.train(model, IMAGES, LABELS, "awgn", [10.0], checkpoint_dir=tmp_path / "ck",
                          **train_kwargs(epochs=2, batch_size=4, learning_rate=rate))
    assert not (tmp_path / "ck" / "state.json").exists()
    assert not (tmp_path / "ck" / "model.keras").exists()
    for a, b in zip(before, model.get_weights()):  # the weights it had before epoch 1
        np.testing.assert_array_equal(a, b)


def test_deepcorrect_divergence_in_epoch_2_keeps_the_checkpoint_of_epoch_1(tmp_path):
    model = deepcorrect.wrap(tiny_cnn(), {"conv1": [0, 1, 2, 3]}, beta=0.5)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 1; lower learning_rate"):
        deepcorrect.train(model, IMAGES, LABELS, "awgn", [10.0], checkpoint_dir=tmp_path,
                          callbacks=[PoisonAt(1)], **train_kwargs(epochs=3))
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 0
    assert sorted(p.name for p in tmp_path.glob("state-*")) == ["state-0.weights.h5"]
    saved = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert finite(saved) and finite(model)
    for a, b in zip(saved.get_weights(), model.get_weights()):  # model: the end of epoch 1
        np.testing.assert_array_equal(a, b)


def test_qrnet_train_stops_on_divergence_and_writes_no_checkpoint(tmp_path):
    trainer = qrnet.QualityRecoveryTrainer(qrnet.build_qrnet(base_width=4, depth=2), mode="recnet")
    before = [w.copy() for w in trainer.restorer.get_weights()]
    with pytest.raises(TrainingDiverged, match=r"training diverged: .* epoch 1.*\(was 1000.0\)"):
        qrnet.train(trainer, IMAGES[:16], LABELS[:16], {"awgn": [20.0]}, epochs=2, batch_size=4,
                    learning_rate=1e3, checkpoint_dir=str(tmp_path / "ck"), verbose=0)
    assert not (tmp_path / "ck").exists()
    for a, b in zip(before, trainer.restorer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_qrnet_divergence_in_epoch_2_keeps_the_checkpoint_of_epoch_1(tmp_path):
    trainer = qrnet.QualityRecoveryTrainer(qrnet.build_qrnet(base_width=4, depth=2), mode="recnet")
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 1"):
        qrnet.train(trainer, IMAGES[:16], LABELS[:16], {"awgn": [20.0]}, epochs=3, batch_size=8,
                    checkpoint_dir=str(tmp_path), callbacks=[PoisonAt(1)], patience=None,
                    verbose=0)
    state = json.loads((tmp_path / "state.json").read_text())
    assert (state["phase"], state["epoch"]) == ("main", 0)
    assert finite(keras.models.load_model(tmp_path / "restorer_last.keras", safe_mode=True))


def test_deepcorrect_cli_divergence_writes_no_model(files, tmp_path, capsys):
    out, checkpoints = tmp_path / "out.keras", tmp_path / "ck"
    code = deepcorrect_train(files, out, "--learning-rate", "1e30", "--epochs", "2",
                             "--batch-size", "4", "--checkpoint-dir", str(checkpoints))
    err = capsys.readouterr().err
    assert code == 2 and "error: training diverged:" in err and "(was 1e+30)" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not (checkpoints / "state.json").exists()


def test_qrnet_cli_divergence_writes_no_restorer(files, tmp_path, capsys):
    out = tmp_path / "run"
    code = qrnet_train(files, out, "--learning-rate", "1000", "--epochs", "2")
    err = capsys.readouterr().err
    assert code == 2 and "error: training diverged:" in err and "(was 1000.0)" in err
    assert not out.exists()


# ---------------------------------------------------------------------------
# Seeds of wrap and QRNet.


def unit_weights(model):
    return [w.numpy() for w in model.trainable_weights]


def test_wrap_is_a_function_of_its_seed():
    ranks = {"conv1": [0, 1, 2, 3], "conv2": [5, 4, 3, 2, 1, 0]}
    a, b = (deepcorrect.wrap(tiny_cnn(), ranks, beta=1.0, seed=5) for _ in range(2))
    c = deepcorrect.wrap(tiny_cnn(), ranks, beta=1.0, seed=6)
    for x, y in zip(unit_weights(a), unit_weights(b)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(unit_weights(a), unit_weights(c)))
    for name in ("conv1", "conv2"):
        config = a.get_layer(f"{name}_unit").get_config()
        assert config["kernel_initializer"]["config"]["seed"] == derived_seed(5, f"{name}_unit")
    # Inside a unit, the two inner 3x3 convs of one shape start from different weights.
    stack = a.get_layer("conv2_unit").stack
    inner = [layer.kernel.numpy() for layer in stack if layer.name in ("conv_1", "conv_2")]
    assert inner[0].shape == inner[1].shape and not np.array_equal(*inner)
    fresh = deepcorrect.wrap(tiny_cnn(), ranks, beta=1.0, seed=None)  # unseeded: fresh draws
    assert fresh.get_layer("conv1_unit").get_config()["kernel_initializer"]["config"]["seed"] is None


def test_wrap_passes_its_seed_to_a_unit_factory_that_takes_one():
    seen = []

    def factory(channels, kernel_size, name, seed=None):
        seen.append(seed)
        return deepcorrect.CorrectionUnit(channels, kernel_size=kernel_size, name=name, seed=seed)

    deepcorrect.wrap(tiny_cnn(), {"conv1": [0, 1, 2, 3]}, unit=factory, seed=9)
    assert seen == [derived_seed(9, "conv1_unit")]


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, True, "0"])
def test_wrap_refuses_bad_seed(seed):
    with pytest.raises((TypeError, ValueError), match=r"seed must be an integer in \[0, 2147483647\]"):
        deepcorrect.wrap(tiny_cnn(), {"conv1": [0, 1, 2, 3]}, seed=seed)


def test_qrnet_is_a_function_of_its_seed(tmp_path):
    a, b, c = (qrnet.build_qrnet(base_width=4, depth=2, seed=s) for s in (3, 3, 4))
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    assert a.get_config()["seed"] == 3
    dropout = a.get_layer("bottleneck_dropout").get_config()["seed"]
    assert dropout == derived_seed(3, "bottleneck_dropout")
    a.save(tmp_path / "r.keras")
    loaded = keras.models.load_model(tmp_path / "r.keras", safe_mode=True)
    assert loaded.seed == 3
    for x, y in zip(a.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2147483647\]"):
        qrnet.build_qrnet(base_width=4, depth=2, seed=-1)


# ---------------------------------------------------------------------------
# Folded batch norms in wrap.


def trainable_names(model):
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}


def test_wrap_train_head_keeps_folded_head_batch_norms_frozen():
    ranks = {"conv1": [0, 1, 2, 3]}
    plain = deepcorrect.wrap(tiny_cnn(), ranks, train_head=2)
    assert {"conv2", "bn2", "logits"} <= trainable_names(plain)
    folded = tiny_cnn()
    fold(folded.get_layer("bn2"))
    model = deepcorrect.wrap(folded, ranks, train_head=2)
    assert {"conv2", "logits"} <= trainable_names(model) and "bn2" not in trainable_names(model)


@contextlib.contextmanager
def folded_warning(expected: bool):
    """Expects the folded-batch-norm warning, or none of it."""
    if expected:
        with pytest.warns(UserWarning, match=r"\['bn1'\], but they are folded"):
            yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [w for w in caught if "folded" in str(w.message)]


@pytest.mark.parametrize("value,trained", [(False, False), ("auto", False), (True, True)])
def test_wrap_train_batch_norm_on_folded_batch_norms(value, trained):
    folded = tiny_cnn()
    fold(folded.get_layer("bn1"))
    with folded_warning(value is True):
        model = deepcorrect.wrap(folded, {"conv1": [0, 1, 2, 3]}, train_batch_norm=value)
    assert ("bn1" in trainable_names(model)) is trained
    assert "bn1" in trainable_names(
        deepcorrect.wrap(tiny_cnn(), {"conv1": [0, 1, 2, 3]}, train_batch_norm="auto"))


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_wrap_refuses_bad_train_batch_norm(value):
    with pytest.raises(ValueError, match=r"train_batch_norm must be True, False or 'auto'"):
        deepcorrect.wrap(tiny_cnn(), {"conv1": [0, 1, 2, 3]}, train_batch_norm=value)


@pytest.mark.parametrize("flag,trained", [("auto", False), ("no", False), ("yes", True)])
def test_finetune_cli_train_batch_norm_flag(tmp_path, flag, trained):
    folded = tiny_cnn()
    fold(folded.get_layer("bn1"))
    folded.save(tmp_path / "folded.keras")
    out = tmp_path / "tuned.keras"
    with folded_warning(trained):
        assert deepcorrect_main(["finetune", "--model", str(tmp_path / "folded.keras"), "--k", "1",
                                 "--train-batch-norm", flag, "--out", str(out)]) == 0
    model = keras.models.load_model(out, safe_mode=True)
    assert model.get_layer("conv1").trainable
    assert model.get_layer("bn1").trainable is trained

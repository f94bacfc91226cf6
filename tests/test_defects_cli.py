"""Defects of the command lines and of the model arguments, each checked against its fix.

- Silently accepted input (`deepcorrect rank`, `train`, `evaluate` with labels outside the
  model's classes or images of another size; `qrnet export` given a classifier): refused,
  naming the argument (`labels`, `images`, `--data`, `--model`) and what is allowed.
- A model argument that is not a Functional or Sequential model (`wrap(None, r)` raised
  AttributeError): one `TypeError` naming the argument, for every public function that
  takes a model (a table).
- What the CLI could not reach: `wrap`'s site defaults to "auto" in the API and the CLI;
  the units' kernel size (per layer), batch-norm momentum, the corrected layers and the
  trained batch norms are `wrap` flags; `train --teacher-weights`.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

import deepcorrect
from deepcorrect import baselines, cli, costs, graph, ideal, planning
from deepcorrect.adaptation import copy_keeping_trainable
from deepcorrect.export import outputs_are_probabilities, serving_functions
from robustkit.cli_common import CLIError
from qrnet import cli as qrnet_cli

SIZE = 16
CLASSES = 10


def classifier(name: str = "clf") -> keras.Model:
    """conv1 -> bn1 -> relu, conv2 (no batch norm) -> relu, pooling, 10-way softmax."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def images(count: int = 8, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3)).astype("uint8")


def ranks(model: keras.Model) -> dict[str, np.ndarray]:
    return {layer.name: np.arange(graph.filter_count(layer))
            for layer in graph.conv_layers(model)}


def write_data(path, labels, size: int = SIZE):
    """A CIFAR-style .npz with the given labels in both splits."""
    x = images(len(labels), size)
    np.savez(path, x_train=x, y_train=np.asarray(labels), x_test=x, y_test=np.asarray(labels))
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("defects")
    model = classifier("base")
    model.save(folder / "base.keras")
    ranking = deepcorrect.rank(model, images(8), np.arange(8), "awgn", [20.0], progress=False)
    ranking.save(folder / "ranking.json")
    return {"folder": folder, "model": folder / "base.keras", "ranking": folder / "ranking.json",
            "good": write_data(folder / "good.npz", np.arange(8) % CLASSES),
            "bad_labels": write_data(folder / "bad_labels.npz", [0, 1, 12, 13, 2, 3, 12, 4]),
            "big": write_data(folder / "big.npz", np.arange(8), size=2 * SIZE)}


def run(main, argv, capsys) -> tuple[int, str]:
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err.strip()


# ---------------------------------------------------------------------------
# Labels and image sizes that do not fit the model.


def test_rank_refuses_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 9\] \(model "
                       r"'clf' has 10 outputs\)\. Received: 2 labels out of range: \[12, 13\]"):
        deepcorrect.rank(classifier(), images(2), [12, 13], "awgn", [20.0], progress=False)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 9\]"):
        deepcorrect.rank(classifier(), images(2), [-1, 3], "awgn", [20.0], progress=False)


def test_rank_and_train_refuse_images_of_another_size():
    """Neither resizes (only `distort.sweep` and `deepcorrect evaluate` do): both refuse."""
    message = (r"images must be 16x16x3 images, the input size of model 'clf'\. "
               r"Received: images of 32x32x3")
    with pytest.raises(ValueError, match=message):
        deepcorrect.rank(classifier(), images(2, 32), [0, 1], "awgn", [20.0], progress=False)
    wrapped = deepcorrect.wrap(classifier(), ranks(classifier()))
    with pytest.raises(ValueError, match=message):
        deepcorrect.train(wrapped, images(4, 32), np.arange(4), "awgn", [20.0], epochs=1)


def test_train_refuses_labels_outside_the_classes():
    wrapped = deepcorrect.wrap(classifier(), ranks(classifier()))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 9\] .* \[12\]"):
        deepcorrect.train(wrapped, images(4), [0, 12, 1, 2], "awgn", [20.0], epochs=1)


@pytest.mark.parametrize("command", ["rank", "train", "evaluate"])
def test_cli_refuses_data_labels_outside_the_classes(command, saved, tmp_path, capsys):
    model = saved["model"]
    if command == "train":
        model = tmp_path / "wrapped.keras"
        deepcorrect.wrap(classifier(), ranks(classifier())).save(model)
    out = tmp_path / ("out.json" if command == "rank" else "out.keras")
    argv = {"rank": ["rank", "--model", model, "--data", saved["bad_labels"], "--distortion",
                     "awgn", "--levels", 20, "--out", out],
            "train": ["train", "--model", model, "--data", saved["bad_labels"], "--distortion",
                      "awgn", "--levels", 20, "--epochs", 1, "--out", out],
            "evaluate": ["evaluate", "--model", model, "--data", saved["bad_labels"],
                         "--distortion", "awgn", "--levels", 20, "--out", tmp_path / "eval"]}
    status, err = run(cli.main, argv[command], capsys)
    assert status == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: --data {saved['bad_labels']} does not fit --model")
    assert "labels must be class indices in [0, 9]" in err and "[12, 13]" in err
    assert not out.exists() and not (tmp_path / "eval").exists()


def test_cli_rank_refuses_data_of_another_size(saved, tmp_path, capsys):
    status, err = run(cli.main, ["rank", "--model", saved["model"], "--data", saved["big"],
                                 "--distortion", "awgn", "--levels", 20, "--out",
                                 tmp_path / "r.json"], capsys)
    assert status == 2 and "Traceback" not in err
    assert "--data" in err and "16x16x3" in err and "32x32x3" in err
    assert not (tmp_path / "r.json").exists()


def test_cli_evaluate_resizes_as_documented(saved, tmp_path, capsys):
    """evaluate (a sweep) resizes images to the model: 32x32 data on a 16x16 model is fine."""
    status, err = run(cli.main, ["evaluate", "--model", saved["model"], "--data", saved["big"],
                                 "--distortion", "awgn", "--levels", 20, "--out",
                                 tmp_path / "eval"], capsys)
    assert status == 0, err
    assert (tmp_path / "eval" / "evaluate.csv").is_file()


def test_qrnet_export_refuses_a_classifier_as_the_restorer(saved, tmp_path, capsys):
    status, err = run(qrnet_cli.main, ["export", "--model", saved["model"], "--out", tmp_path],
                      capsys)
    assert status == 2 and len(err.splitlines()) == 1, err
    assert "--model must be a restorer" in err
    assert "to (None, 10) (a classifier? pass it as --classifier)" in err and "base.keras" in err
    assert not (tmp_path / "restorer").exists()


def test_qrnet_export_checks_every_input_before_writing(tmp_path, capsys):
    import qrnet

    restorer = tmp_path / "restorer.keras"
    qrnet.build_qrnet(base_width=4, depth=2).save(restorer)
    status, err = run(qrnet_cli.main, ["export", "--model", restorer, "--classifier",
                                       tmp_path / "missing.keras", "--out", tmp_path / "out"],
                      capsys)
    assert status == 2 and "missing.keras" in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# A model argument that is not a model: one TypeError, naming the argument.


# name -> (the argument that takes the model, fn(env, value) calling it with `value`).
# `teacher=None` means "no teacher" (labelled training), so that entry is called with
# the other non-models only.
MODEL_ARGUMENTS = {
    "wrap": ("pretrained", lambda e, m: deepcorrect.wrap(m, {"conv1": np.arange(8)})),
    "rank": ("model", lambda e, m: deepcorrect.rank(m, e["x"], e["y"], "awgn", [20.0],
                                                    progress=False)),
    "train": ("model", lambda e, m: deepcorrect.train(m, e["x"], e["y"], "awgn", [20.0])),
    "train teacher": ("teacher", lambda e, m: deepcorrect.train(e["wrapped"], e["x"], None,
                                                                "awgn", [20.0], teacher=m)),
    "LabelFreeTrainer": ("student", lambda e, m: deepcorrect.LabelFreeTrainer(m, e["model"])),
    "finetune": ("pretrained", lambda e, m: deepcorrect.finetune(m, 1)),
    "reinitialized": ("pretrained", lambda e, m: deepcorrect.reinitialized(m)),
    "export": ("model", lambda e, m: deepcorrect.export(m, e["tmp"] / "serving")),
    "correction_units": ("model", lambda e, m: deepcorrect.correction_units(m)),
    "folded_batch_norms": ("model", lambda e, m: deepcorrect.folded_batch_norms(m)),
    "adapt_batch_norm": ("model", lambda e, m: deepcorrect.adapt_batch_norm(m, e["x"])),
    "batch_norm_layers": ("model", lambda e, m: deepcorrect.batch_norm_layers(m)),
    "tent": ("model", lambda e, m: deepcorrect.tent(m, e["x"])),
    "refresh_unit_statistics": ("model", lambda e, m: deepcorrect.refresh_unit_statistics(
        m, e["x"].astype("float32"))),
    "compare": ("model", lambda e, m: deepcorrect.compare(m, (e["x"], e["y"]), (e["x"], e["y"]),
                                                          "awgn")),
    "Ranking.check_model": ("model", lambda e, m: e["ranking"].check_model(m)),
    "graph.conv_layers": ("model", lambda e, m: graph.conv_layers(m)),
    "planning.choose_layers": ("model", lambda e, m: planning.choose_layers(m, {"conv1": [0]})),
    "planning.plan_corrections": ("model",
                                  lambda e, m: planning.plan_corrections(m, {"conv1": [0]})),
    "planning.head_layer_names": ("model", lambda e, m: planning.head_layer_names(m, 1)),
    "baselines.copy_model": ("model", lambda e, m: baselines.copy_model(m)),
    "baselines.finetune_layer_names": ("model",
                                       lambda e, m: baselines.finetune_layer_names(m, 1)),
    "export.serving_functions": ("model", lambda e, m: serving_functions(m)),
    "export.outputs_are_probabilities": ("model", lambda e, m: outputs_are_probabilities(m)),
    "ideal.ideal_accuracy": ("model", lambda e, m: ideal.ideal_accuracy(
        m, e["x"], e["x"], e["y"], "conv1", [[0]])),
    "ideal.IdealCorrection": ("model", lambda e, m: ideal.IdealCorrection(m, "conv1")),
    "graph.flatten": ("model", lambda e, m: graph.flatten(m)),
    "graph.leaf_layers": ("model", lambda e, m: graph.leaf_layers(m)),
    "graph.batch_norms_by_input": ("model", lambda e, m: graph.batch_norms_by_input(m)),
    "costs.multiply_adds": ("model", lambda e, m: costs.multiply_adds(m)),
    "costs.model_costs": ("model", lambda e, m: costs.model_costs(m, e["x"])),
    "adaptation.copy_keeping_trainable": ("model", lambda e, m: copy_keeping_trainable(m)),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    model = classifier()
    x, y = images(4).astype("float32"), np.arange(4)
    return {"x": x, "y": y, "model": model, "wrapped": deepcorrect.wrap(model, ranks(model)),
            "ranking": deepcorrect.rank(model, x, y, "awgn", [20.0], progress=False),
            "tmp": tmp_path_factory.mktemp("t")}


class Subclassed(keras.Model):
    def call(self, x):
        return x


@pytest.mark.parametrize("name", sorted(MODEL_ARGUMENTS))
@pytest.mark.parametrize("value, received", [(None, "=None"),
                                             (keras.layers.Dense(2), " of type Dense"),
                                             (Subclassed(), " of type Subclassed")])
def test_a_model_argument_that_is_not_a_model_is_a_type_error(env, name, value, received):
    argument, call = MODEL_ARGUMENTS[name]
    if value is None and argument == "teacher":
        pytest.skip("teacher=None is the documented default: no teacher")
    with pytest.raises(TypeError) as info:
        call(env, value)
    message = str(info.value)
    assert message.startswith(f"{argument} must be a keras.Model (Functional or Sequential). "
                              f"Received: {argument}{received}"), message


def test_trainable_parameters_takes_a_model_or_a_layer():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    assert deepcorrect.trainable_parameters(layer) == 8
    with pytest.raises(TypeError, match=r"model must be a keras.Model or a keras.layers.Layer\. "
                       r"Received: model=None"):
        deepcorrect.trainable_parameters(None)


def test_every_exported_function_taking_a_model_is_in_the_table():
    exported = set()
    for name in dir(deepcorrect):
        value = getattr(deepcorrect, name)
        if name.startswith("_") or not callable(value):
            continue
        try:
            first = next(iter(inspect.signature(value).parameters), None)
        except (TypeError, ValueError):
            continue
        if first in ("model", "pretrained", "student"):
            exported.add(name)
    assert exported - {"trainable_parameters"} <= set(MODEL_ARGUMENTS)


# ---------------------------------------------------------------------------
# wrap: the "auto" site, the units' momentum and kernel size, from the API and the CLI.


def producer(model: keras.Model, layer: str) -> str:
    return model.get_layer(layer).input._keras_history.operation.name


def test_wrap_site_auto_is_the_default():
    """After the conv's batch norm where it has one (conv1), on the conv output otherwise."""
    pretrained = classifier()
    wrapped = deepcorrect.wrap(pretrained, ranks(pretrained))
    assert producer(wrapped, "conv1_unit") == "bn1" and producer(wrapped, "relu1") == "conv1_unit"
    assert producer(wrapped, "conv2_unit") == "conv2"
    x = images(2).astype("float32")
    np.testing.assert_allclose(wrapped(x), pretrained(x), atol=1e-6)  # units start as identity
    on_conv = deepcorrect.wrap(pretrained, ranks(pretrained), site="conv")
    assert producer(on_conv, "conv1_unit") == "conv1" and producer(on_conv, "bn1") == "conv1_unit"


def test_wrap_site_batch_norm_needs_a_batch_norm_after_every_corrected_conv():
    pretrained = classifier()
    with pytest.raises(ValueError, match=r"the convs \['conv2'\] have none\. Use site='auto'"):
        deepcorrect.wrap(pretrained, ranks(pretrained), site="batch_norm")
    wrapped = deepcorrect.wrap(pretrained, ranks(pretrained), layers=["conv1"], site="batch_norm")
    assert producer(wrapped, "conv1_unit") == "bn1"


def unit_momenta(model: keras.Model) -> set[float]:
    return {layer.momentum for unit in deepcorrect.correction_units(model).values()
            for layer in unit.stack if isinstance(layer, keras.layers.BatchNormalization)}


def test_wrap_unit_bn_momentum_is_saved(tmp_path):
    pretrained = classifier()
    assert unit_momenta(deepcorrect.wrap(pretrained, ranks(pretrained))) == {0.99}
    wrapped = deepcorrect.wrap(pretrained, ranks(pretrained), unit_bn_momentum=0.9)
    assert unit_momenta(wrapped) == {0.9}
    wrapped.save(tmp_path / "w.keras")
    assert unit_momenta(keras.models.load_model(tmp_path / "w.keras", safe_mode=True)) == {0.9}
    with pytest.raises(ValueError, match=r"unit_bn_momentum must be a finite number in \[0, 1\)\. "
                       r"Received: unit_bn_momentum=1\.0"):
        deepcorrect.wrap(pretrained, ranks(pretrained), unit_bn_momentum=1.0)


def test_cli_wrap_reaches_every_unit_setting(saved, tmp_path, capsys):
    out = tmp_path / "w.keras"
    status, err = run(cli.main, ["wrap", "--model", saved["model"], "--ranking", saved["ranking"],
                                 "--layers", "conv1", "conv2", "--beta", "0.5", "conv1=1.0",
                                 "--kernel-size", "3", "conv1=5", "--unit-bn-momentum", "0.9",
                                 "--train-batch-norm", "yes", "--out", out], capsys)
    assert status == 0, err
    wrapped = keras.models.load_model(out, safe_mode=True)
    units = deepcorrect.correction_units(wrapped)
    assert (units["conv1"].channels, units["conv1"].kernel_size) == (8, 5)
    assert (units["conv2"].channels, units["conv2"].kernel_size) == (3, 3)
    assert unit_momenta(wrapped) == {0.9}
    assert wrapped.get_layer("bn1").trainable and not wrapped.get_layer("conv1").trainable
    assert producer(wrapped, "conv1_unit") == "bn1"  # the default --site auto

    status, err = run(cli.main, ["wrap", "--model", saved["model"], "--ranking", saved["ranking"],
                                 "--site", "conv", "--first", "1", "--out", tmp_path / "c.keras"],
                      capsys)
    assert status == 0, err
    on_conv = keras.models.load_model(tmp_path / "c.keras", safe_mode=True)
    assert producer(on_conv, "conv1_unit") == "conv1"
    assert list(deepcorrect.correction_units(on_conv)) == ["conv1"]


@pytest.mark.parametrize("flags, fragment", [
    (["--beta", "conv1=0.75"], "--beta has no value for the corrected layers ['conv2']"),
    (["--beta", "0.5", "conv9=0.75"], "--beta names layers that are not corrected: ['conv9']"),
    (["--kernel-size", "three"], "--kernel-size takes a int or LAYER=INT entries. Received: three"),
    (["--beta", "0.5", "0.6"], "--beta takes one value for every layer"),
    (["--unit-bn-momentum", "1.5"], "unit_bn_momentum must be a finite number in [0, 1)"),
    (["--site", "batch_norm"], "the convs ['conv2'] have none"),
])
def test_cli_wrap_bad_settings_are_one_line(saved, tmp_path, capsys, flags, fragment):
    out = tmp_path / "w.keras"
    status, err = run(cli.main, ["wrap", "--model", saved["model"], "--ranking", saved["ranking"],
                                 *flags, "--out", out], capsys)
    assert status == 2 and len(err.splitlines()) == 1, err
    assert fragment in err
    assert not out.exists()


# ---------------------------------------------------------------------------
# train --teacher-weights.


def train_argv(saved, tmp_path, *flags):
    return ["train", "--model", saved["model"], "--data", saved["good"], "--distortion", "awgn",
            "--levels", 20, "--epochs", 1, "--out", tmp_path / "t.keras", *flags]


def test_teacher_weights_default_to_weights_for_the_same_application(saved, tmp_path, capsys,
                                                                     monkeypatch):
    """Which weights each load gets, recorded by a stand-in for `load_model_spec`."""
    real, loads = cli.load_model_spec, []

    def recording(name, weights=None, flag="--model"):
        loads.append((flag, name, weights))
        if flag == "--teacher":
            raise CLIError("stop: the teacher's weights are recorded")
        return "base", (keras.models.load_model(saved["model"], safe_mode=True), None), SIZE

    monkeypatch.setattr(cli, "load_model_spec", recording)
    cases = [  # (--model, --weights, --teacher, --teacher-weights) -> teacher's weights
        (("MobileNetV2", "w.h5", "MobileNetV2", None), "w.h5"),
        (("MobileNetV2", "w.h5", "MobileNet:0.5:160", None), None),
        (("MobileNetV2", "w.h5", "MobileNet:0.5:160", "imagenet"), "imagenet"),
    ]
    for (model, weights, teacher, teacher_weights), expected in cases:
        loads.clear()
        argv = train_argv(saved, tmp_path, "--teacher", teacher, "--weights", weights)
        argv[argv.index("--model") + 1] = model
        if teacher_weights:
            argv += ["--teacher-weights", teacher_weights]
        status, err = run(cli.main, argv, capsys)
        assert status == 2 and "stop:" in err
        assert loads[-1] == ("--teacher", teacher, expected)
    assert real is not cli.load_model_spec


@pytest.mark.parametrize("flags, preset, augment", [
    ([], "deepcorrect_cifar", None),
    (["--teacher", "base.keras"], "label_free", None),
    (["--teacher", "base.keras", "--recipe", "cpu_quick"], "cpu_quick", None),
    (["--teacher", "base.keras", "--no-augment"], "label_free", False),
    (["--augment"], "deepcorrect_cifar", True),
])
def test_train_recipe_defaults_to_label_free_with_a_teacher(saved, tmp_path, capsys, monkeypatch,
                                                           flags, preset, augment):
    calls = []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        raise CLIError("stop: the training settings are recorded")

    monkeypatch.setattr(deepcorrect, "train", recording)
    flags = [str(saved["model"]) if f == "base.keras" else f for f in flags]
    status, err = run(cli.main, train_argv(saved, tmp_path, *flags), capsys)
    assert status == 2 and "stop:" in err
    assert (calls[-1]["preset"], calls[-1]["augment"]) == (preset, augment)
    assert (calls[-1]["teacher"] is not None) == ("--teacher" in flags)


@pytest.mark.parametrize("flags, fragment", [
    (["--teacher-weights", "w.h5"], "--teacher-weights needs --teacher"),
    (["--teacher", "MobileNetV2", "--teacher-weights", "missing.h5"],
     "--teacher-weights file not found: missing.h5"),
    (["--teacher", "base.keras", "--teacher-weights", "w.h5"],
     "--teacher-weights sets the weights of a keras.applications --teacher, but --teacher is a "
     ".keras file"),
    (["--teacher", "MobileNetV2", "--weights", "w.h5"],
     "--weights sets the weights of a keras.applications --model, but --model is a .keras file"),
])
def test_teacher_weights_errors_are_one_line(saved, tmp_path, capsys, flags, fragment):
    flags = [str(saved["model"]) if f == "base.keras" else f for f in flags]
    status, err = run(cli.main, train_argv(saved, tmp_path, *flags), capsys)
    assert status == 2 and len(err.splitlines()) == 1, err
    assert fragment in err
    assert not (tmp_path / "t.keras").exists()

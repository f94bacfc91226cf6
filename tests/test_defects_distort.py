"""Defects a new user of `distort` hits first, each with the behaviour that replaced it.

- `distort.Distortion(name)` is `fn(images, level, seed=0)` by position for every name, and a
  bad level reports the level's own error (it used to pass `level` into `name`).
- Atomic writes give files and folders the mode `open()` / `os.makedirs` give under the
  umask (they were 0600 / 0700).
- A kernel wider than the image can use is refused with the level, the window and the bound
  (it used to exhaust memory); eagerly a ValueError, in a graph a `tf.debugging` assert.
- One seed check everywhere: -1, 1.5, True and 2**70 are refused with one wording.
- A wrong number of per-image levels, an unwritable output, a text file named `.keras`: one
  clear line each.
- The command lines start without TensorFlow's log lines (`--verbose` shows them),
  `distort apply --list` works, `distort sweep` takes `--levels` and `--resize`, and
  `--limit` reads only the images it uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage

import deepcorrect
import distort
import qrnet
from deepcorrect import cli as deepcorrect_cli
from distort import cli as distort_cli
from distort import kernels, layers, pipeline, registry, sweep
from robustkit import cli_common, data, io
from qrnet import cli as qrnet_cli

REPO = Path(__file__).resolve().parents[1]
SIZE = 16
SEED_MESSAGE = "seed must be an integer in [0, 2147483647]. Received: seed="

# A valid level of every distortion (camera shake: 1 is "on").
LEVELS = {"awgn": 10.0, "camera_shake": 1, "combined": 2.0, "contrast": 0.5, "defocus_blur": 2.0,
          "gaussian_blur": 1.5, "jpeg": 20, "jpeg2000": 30.0, "motion_blur": 3.0,
          "motion_blur_horizontal": 3.0, "motion_blur_vertical": 3.0, "random_walk_blur": 2.0}


def _images(n: int = 2, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, [n, size, size, 3], dtype=np.uint8)


@dataclasses.dataclass
class Files:
    root: Path
    model: keras.Model

    def __call__(self, name: str) -> str:
        return os.fspath(self.root / name)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    """A tiny classifier, its ranking, a CIFAR-style .npz and a folder of non-square photos."""
    root = tmp_path_factory.mktemp("defects")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(4, 3, name="conv1"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")], name="tiny")
    model.save(root / "model.keras")
    deepcorrect.Ranking({"conv1": np.array([0.4, 0.1, 0.3, 0.2])}, model_name="tiny",
                        filter_counts={"conv1": 4}, distortion="awgn",
                        levels=[10.0]).save(root / "ranking.json")
    images = _images(4)
    labels = np.arange(4) % 3
    np.savez(root / "data.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    rng = np.random.default_rng(1)
    (root / "photos" / "a").mkdir(parents=True)
    (root / "photos" / "b").mkdir()
    for i, (w, h) in enumerate([(40, 24), (24, 36), (30, 20), (22, 44)]):
        pixels = rng.integers(0, 256, [h, w, 3], dtype=np.uint8)
        Image.fromarray(pixels).save(root / "photos" / "ab"[i % 2] / f"{i}.png")
    (root / "notes.keras").write_text("this is text, not a Keras model")
    (root / "blocker").write_text("a file where a folder is needed")
    return Files(root, model)


def _run(main: Callable, argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


# ---------------------------------------------------------------------------
# 1. distort.Distortion(name)(images, level) by position


@pytest.mark.parametrize("name", registry.names())
def test_distortion_takes_images_and_level_by_position(name):
    images = _images()
    level = LEVELS.get(name, registry.level_range(name)[0])  # others: their lowest level
    got = distort.Distortion(name)(images, level)
    np.testing.assert_array_equal(np.asarray(got),
                                  np.asarray(distort.apply(images, name, level, seed=0)))
    again = distort.Distortion(name)(images, level, 0)  # the seed by position too
    np.testing.assert_array_equal(np.asarray(again), np.asarray(got))


@pytest.mark.parametrize("name, level, message", [
    ("gaussian_blur", -1.0, "sigma must be a finite number >= 0.0. Received: sigma=-1.0"),
    ("gaussian_blur", float("nan"), "sigma must be a finite number >= 0.0. Received: sigma=nan"),
    ("jpeg", 0, "quality must be a finite number [1, 100]. Received: quality=0.0"),
    ("defocus_blur", float("inf"), "radius must be a finite number >= 0.0. Received: radius=inf"),
])
def test_distortion_reports_the_levels_own_error(name, level, message):
    with pytest.raises(ValueError) as info:
        distort.Distortion(name)(_images(), level)
    assert str(info.value) == message


def test_distortion_binds_options_and_refuses_unknown_ones():
    images = _images()
    qrnet_blur = distort.Distortion("gaussian_blur", options={"window": "4sigma-1"})
    np.testing.assert_array_equal(
        np.asarray(qrnet_blur(images, 2.0)),
        np.asarray(distort.gaussian_blur(images, 2.0, window="4sigma-1")))
    with pytest.raises(TypeError, match=r"options of 'gaussian_blur' must be among "
                                        r"\['border', 'window'\]. Received: \['windw'\]"):
        distort.Distortion("gaussian_blur", options={"windw": 3})


@pytest.mark.parametrize("levels, message", [
    ("-1", "sigma must be a finite number >= 0.0. Received: sigma=-1.0"),
    ("nan", "sigma must be a finite number >= 0.0. Received: sigma=nan"),
])
def test_rank_command_reports_bad_blur_levels(files, levels, message, capsys, monkeypatch):
    monkeypatch.chdir(files.root)
    status, _, err = _run(deepcorrect_cli.main, [
        "rank", "--model", "model.keras", "--data", "data.npz", "--distortion", "gaussian_blur",
        "--levels", levels, "--out", "r.json"], capsys)
    assert status == 2
    assert err.strip().splitlines() == [f"error: {message}"]


# ---------------------------------------------------------------------------
# 3. Atomic writes get the modes of plain writes


@pytest.fixture(params=[0o022, 0o077], ids=["umask 022", "umask 077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_outputs_have_the_modes_of_plain_writes(umask, tmp_path):
    # The reference: what open() and os.makedirs give in this process, under this umask.
    with open(tmp_path / "plain.txt", "w"):
        pass
    os.makedirs(tmp_path / "plain_dir")
    file_mode, dir_mode = _mode(tmp_path / "plain.txt"), _mode(tmp_path / "plain_dir")
    assert (file_mode, dir_mode) == (0o666 & ~umask, 0o777 & ~umask)

    with io.atomic_path(tmp_path / "x.npy") as tmp:
        np.save(tmp, np.arange(3))
    io.atomic_write_text(tmp_path / "x.json", "{}")
    with io.atomic_dir(tmp_path / "saved_model") as tmp:  # a SavedModel-like tree
        os.makedirs(os.path.join(tmp, "variables"))
        with open(os.path.join(tmp, "saved_model.pb"), "wb") as f:
            f.write(b"graph")
        with open(os.path.join(tmp, "variables", "variables.index"), "wb") as f:
            f.write(b"index")
    assert _mode(tmp_path / "x.npy") == file_mode
    assert _mode(tmp_path / "x.json") == file_mode
    assert _mode(tmp_path / "saved_model") == dir_mode
    assert _mode(tmp_path / "saved_model" / "variables") == dir_mode
    assert _mode(tmp_path / "saved_model" / "saved_model.pb") == file_mode
    assert _mode(tmp_path / "saved_model" / "variables" / "variables.index") == file_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "plain.txt", "plain_dir", "saved_model", "x.json", "x.npy"]  # no temporary left


def test_keras_files_and_command_outputs_have_plain_modes(files, tmp_path, capsys, monkeypatch):
    old = os.umask(0o022)
    try:
        with io.atomic_path(tmp_path / "m.keras") as tmp:
            files.model.save(tmp)
        with io.atomic_path(tmp_path / "m.weights.h5") as tmp:
            files.model.save_weights(tmp)
        monkeypatch.chdir(tmp_path)
        Image.fromarray(_images(1)[0]).save(tmp_path / "in.png")
        assert distort_cli.main(["apply", "in.png", "out.png", "--name", "awgn", "--level",
                                 "5"]) == 0
    finally:
        os.umask(old)
    for name in ("m.keras", "m.weights.h5", "out.png"):
        assert _mode(tmp_path / name) == 0o644, name


# ---------------------------------------------------------------------------
# 5. Kernels wider than the image are refused


BIG = [  # (call on a 2 x 32 x 32 batch, message)
    (lambda x: distort.gaussian_blur(x, 1e6),
     "sigma=1000000.0 needs a 4*sigma+1 = 4000001-pixel window, larger than the 2*32+1 the "
     "32x32 image allows; sigma must be <= 16.0 for this image"),
    (lambda x: distort.gaussian_blur(x, 17.0, window="4sigma-1"),
     "sigma=17.0 needs a 4*sigma-1 = 67-pixel window, larger than the 2*32+1 the 32x32 image "
     "allows; sigma must be <= 16.5 for this image"),
    (lambda x: distort.gaussian_blur(x, 2.0, window=67),
     "window=67 is larger than the 2*32+1 the 32x32 image allows; window must be <= 65"),
    (lambda x: distort.defocus_blur(x, 33),
     "radius=33.0 needs a 2*radius+1 = 67-pixel window, larger than the 2*32+1 the 32x32 image "
     "allows; radius must be <= 32.0 for this image"),
    (lambda x: distort.motion_blur(x, 1e6, angle=90),
     "length=1000000.0 needs a 1000000-pixel window, larger than the 2*32+1 the 32x32 image "
     "allows; length must be <= 65.0 for this image"),
    (lambda x: distort.random_walk_blur(x, 40, seed=0),
     "size=40.0 needs a 2*size+1 = 81-pixel window, larger than the 2*32+1 the 32x32 image "
     "allows; size must be <= 32.0 for this image"),
    (lambda x: distort.combined(x, 1e6, seed=0),
     "max_level=1000000.0 needs a 2*max_level+1 = 2000001-pixel window, larger than the 2*32+1 "
     "the 32x32 image allows; max_level must be <= 32.0 for this image"),
    (lambda x: distort.gaussian_blur(x, np.array([1.0, 20.0])),  # per image: the largest
     "sigma=20.0 needs a 4*sigma+1 = 81-pixel window"),
    (lambda x: distort.gaussian_blur(x, tf.constant([1.0, 20.0])),  # an eager tensor
     "sigma=20.0 needs a 4*sigma+1 = 81-pixel window"),
    (lambda x: distort.apply(x[0], "motion_blur_horizontal", 100),  # one image
     "length=100.0 needs a 100-pixel window"),
]


@pytest.mark.parametrize("call, message", BIG, ids=[m.split(" needs")[0].split(" is ")[0]
                                                      for _, m in BIG])
def test_kernels_wider_than_the_image_are_refused(call, message):
    with pytest.raises(ValueError) as info:
        call(_images(2, 32))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("call, reference", [
    (lambda x: distort.gaussian_blur(x, 16.0), kernels.gaussian(16.0)),
    (lambda x: distort.defocus_blur(x, 32.0), kernels.disk(32.0)),
    (lambda x: distort.motion_blur(x, 65.0), kernels.box(65)),
])
def test_the_widest_allowed_kernel_still_matches_scipy(call, reference):
    x = np.random.default_rng(3).uniform(0, 255, [1, 32, 32, 1]).astype(np.float32)
    expected = ndimage.convolve(x[0, ..., 0].astype(np.float64),
                                reference.astype(np.float64)[::-1, ::-1], mode="reflect")
    np.testing.assert_allclose(np.asarray(call(x))[0, ..., 0], np.clip(expected, 0, 255),
                               atol=2e-3)


def test_wide_kernels_are_refused_inside_tf_function_and_tf_data():
    images = tf.constant(_images(2, 32))
    blur = tf.function(lambda x, s: distort.gaussian_blur(x, s))
    assert blur(images, tf.constant(2.0)).shape == images.shape
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"sigma must be <= "):
        blur(images, tf.constant(1e6))
    spec = tf.TensorSpec([None, None, None, 3], tf.uint8)  # sizes known only when it runs
    disk = tf.function(lambda x: distort.defocus_blur(x, 1e6), input_signature=[spec])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"radius must be <= min"):
        disk(images)
    sizes = np.array([1.0, 50.0], np.float32)  # levels known only when the map runs
    walks = tf.data.Dataset.from_tensor_slices((_images(2, 32), sizes)).batch(2).map(
        lambda x, size: distort.random_walk_blur(x, size, seed=0))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"size must be <= min"):
        list(walks)
    with pytest.raises(ValueError, match=r"size=50.0 needs a 2\*size\+1 = 101-pixel window"):
        tf.data.Dataset.from_tensor_slices(_images(2, 32)).batch(2).map(  # sizes known: at once
            lambda x: distort.random_walk_blur(x, tf.constant(sizes), seed=0))


def test_apply_command_refuses_a_huge_level(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_images(1, 32)[0]).save("in.png")
    status, _, err = _run(distort_cli.main, ["apply", "in.png", "out.png", "--name",
                                             "gaussian_blur", "--level", "1e6"], capsys)
    assert status == 2
    assert err.strip().splitlines() == [
        "error: sigma=1000000.0 needs a 4*sigma+1 = 4000001-pixel window, larger than the "
        "2*32+1 the 32x32 image allows; sigma must be <= 16.0 for this image"]
    assert not (tmp_path / "out.png").exists()


# ---------------------------------------------------------------------------
# 6. One seed check at every entry point


def _layer(seed):
    return layers.AWGN(seed=seed)


def _rank(files, seed):
    return deepcorrect.rank(files.model, _images(4), np.arange(4) % 3, "awgn", [10],
                            seed=seed, progress=False)


SEED_ENTRY_POINTS: dict[str, Callable[[Files, Any], Any]] = {
    "awgn": lambda f, s: distort.awgn(_images(), 5.0, seed=s),
    "random_walk_blur": lambda f, s: distort.random_walk_blur(_images(), 2, seed=s),
    "camera_shake": lambda f, s: distort.camera_shake(_images(), seed=s),
    "combined": lambda f, s: distort.combined(_images(), 2.0, seed=s),
    "apply (deterministic)": lambda f, s: distort.apply(_images(), "gaussian_blur", 1.0, seed=s),
    "Distortion()": lambda f, s: distort.Distortion("awgn")(_images(), 5.0, s),
    "kernels.random_walk": lambda f, s: kernels.random_walk(2, seed=s),
    "kernels.camera_shake": lambda f, s: kernels.camera_shake(seed=s),
    "training_dataset": lambda f, s: pipeline.training_dataset(
        _images(4), np.zeros(4), "awgn", [10], batch_size=2, seed=s),
    "restoration_dataset": lambda f, s: pipeline.restoration_dataset(
        _images(4), np.zeros(4), "awgn", [10], batch_size=2, seed=s),
    "evaluation_datasets": lambda f, s: pipeline.evaluation_datasets(
        _images(4), np.zeros(4), "awgn", [10], seed=s),
    "epoch_batches": lambda f, s: pipeline.epoch_batches(_images(4), batch_size=2, seed=s,
                                                         epochs=1),
    "layers.AWGN": lambda f, s: _layer(s),
    "sweep": lambda f, s: sweep.sweep({"m": f.model}, _images(4), np.arange(4) % 3,
                                      {"awgn": [10]}, seed=s, progress=False),
    "level_grid": lambda f, s: sweep.level_grid(_images(1)[0], {"awgn": [10]},
                                                f("never.png"), seed=s),
    "deepcorrect.rank": _rank,
    "deepcorrect.wrap": lambda f, s: deepcorrect.wrap(f.model, {"conv1": [0, 1, 2, 3]}, seed=s),
    "deepcorrect.train": lambda f, s: deepcorrect.train(
        f.model, _images(4), np.arange(4) % 3, "awgn", [10], preset="cpu_quick", epochs=1,
        seed=s, verbose=0),
    "qrnet.train": lambda f, s: qrnet.train(
        qrnet.QualityRecoveryTrainer(qrnet.build_qrnet(base_width=4, depth=2), mode="recnet"),
        _images(4), np.arange(4) % 3, {"awgn": [10.0]}, batch_size=4, epochs=1, seed=s,
        verbose=0),
}
BAD_SEEDS = [(-1, ValueError, "-1"), (1.5, TypeError, "1.5"), (True, TypeError, "True"),
             (2**70, ValueError, str(2**70))]


@pytest.mark.parametrize("seed, error, shown", BAD_SEEDS, ids=["-1", "1.5", "True", "2**70"])
@pytest.mark.parametrize("entry", list(SEED_ENTRY_POINTS))
def test_every_api_entry_point_checks_its_seed(files, entry, seed, error, shown):
    with pytest.raises(error) as info:
        SEED_ENTRY_POINTS[entry](files, seed)
    assert str(info.value) == SEED_MESSAGE + shown
    assert not os.path.exists(files("never.png"))


def test_numpy_integer_seeds_are_accepted_and_mean_the_same():
    images = _images()
    np.testing.assert_array_equal(np.asarray(distort.awgn(images, 5.0, seed=np.int64(7))),
                                  np.asarray(distort.awgn(images, 5.0, seed=7)))
    np.testing.assert_array_equal(kernels.camera_shake(seed=np.uint32(2**31 - 1)),
                                  kernels.camera_shake(seed=2**31 - 1))


D, C, Q = distort_cli.main, deepcorrect_cli.main, qrnet_cli.main
SEED_COMMANDS = {
    "distort apply": (D, ["apply", "in.png", "out.png", "--name", "awgn", "--level", "5"]),
    "distort show": (D, ["show", "in.png", "grid.png"]),
    "distort sweep": (D, ["sweep", "--model", "model.keras", "--data", "data.npz", "--out", "s"]),
    "deepcorrect rank": (C, ["rank", "--model", "model.keras", "--data", "data.npz",
                             "--distortion", "awgn", "--out", "r.json"]),
    "deepcorrect wrap": (C, ["wrap", "--model", "model.keras", "--ranking", "ranking.json",
                             "--out", "w.keras"]),
    "deepcorrect train": (C, ["train", "--model", "model.keras", "--data", "data.npz",
                              "--distortion", "awgn", "--out", "t.keras"]),
    "deepcorrect evaluate": (C, ["evaluate", "--model", "model.keras", "--data", "data.npz",
                                 "--distortion", "awgn", "--out", "e"]),
    "deepcorrect demo": (C, ["demo", "--out", "demo"]),
    "qrnet train": (Q, ["train", "--data", "data.npz", "--out", "q"]),
    "qrnet evaluate": (Q, ["evaluate", "--classifier", "model.keras", "--data", "data.npz"]),
}


@pytest.mark.parametrize("text, shown", [("-1", "-1"), ("1.5", "'1.5'"), ("True", "'True'"),
                                         (str(2**70), str(2**70))],
                         ids=["-1", "1.5", "True", "2**70"])
@pytest.mark.parametrize("command", list(SEED_COMMANDS))
def test_every_command_line_checks_its_seed(files, command, text, shown, capsys, monkeypatch):
    monkeypatch.chdir(files.root)
    main, argv = SEED_COMMANDS[command]
    status, _, err = _run(main, [*argv, "--seed", text], capsys)
    assert status == 2
    assert err.strip().splitlines()[-1].endswith(f"argument --seed: {SEED_MESSAGE}{shown}")
    assert "Traceback" not in err


# ---------------------------------------------------------------------------
# 8a. One level per image


@pytest.mark.parametrize("name", [n for n in LEVELS if n not in ("camera_shake", "combined")])
def test_a_wrong_count_of_per_image_levels_is_refused(name):
    _, arg, _, _ = registry.DISTORTIONS[name]
    with pytest.raises(ValueError) as info:
        distort.apply(_images(2), name, np.full(3, LEVELS[name]), seed=0)
    assert str(info.value) == (f"{arg} must be a scalar or one level per image (2 images). "
                               "Received: 3 levels")


def test_per_image_level_count_is_checked_inside_tf_data():
    ds = tf.data.Dataset.from_tensor_slices(_images(4)).batch(2).map(
        lambda x: distort.awgn(x, tf.constant([1.0, 2.0, 3.0]), seed=0))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="sigma must be a scalar or one level per image"):
        list(ds)


# ---------------------------------------------------------------------------
# 8b. A write failure names the option and the output


@pytest.mark.parametrize("main, argv, flag_and_path", [
    (D, ["apply", "in.png", "blocker/out.png", "--name", "awgn", "--level", "5"],
     "output: cannot write blocker/out.png"),
    (D, ["sweep", "--model", "model.keras", "--data", "data.npz", "--distortions", "awgn",
         "--out", "blocker/sweep"], "--out: cannot write blocker/sweep"),
    (C, ["wrap", "--model", "model.keras", "--ranking", "ranking.json", "--out",
         "blocker/w.keras"], "--out: cannot write blocker/w.keras"),
    (Q, ["restore", "--model", "restorer.keras", "--input", "data.npz", "--key", "x_test",
         "--output", "blocker/r.npz"], "--output: cannot write blocker/r.npz"),
], ids=["distort apply", "distort sweep", "deepcorrect wrap", "qrnet restore"])
def test_a_file_in_the_way_names_the_option_and_the_path(files, main, argv, flag_and_path,
                                                         capsys, monkeypatch):
    monkeypatch.chdir(files.root)
    if not (files.root / "in.png").exists():
        Image.fromarray(_images(1)[0]).save(files.root / "in.png")
    if not (files.root / "restorer.keras").exists():
        keras.utils.set_random_seed(0)
        qrnet.build_qrnet(base_width=4, depth=2).save(files.root / "restorer.keras")
    status, _, err = _run(main, argv, capsys)
    assert status == 2
    assert err.strip().splitlines() == [
        f"error: {flag_and_path}: a file is in the way: a folder is needed"]


def test_permission_denied_names_the_option_not_the_temporary_file(files, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_images(1)[0]).save("in.png")
    real_open = os.open

    def read_only_folder(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_folder)
    status, _, err = _run(distort_cli.main, ["apply", "in.png", "out/x.png", "--name", "awgn",
                                             "--level", "5"], capsys)
    assert status == 2
    assert err.strip().splitlines() == ["error: output: cannot write out/x.png: Permission denied"]


def test_option_for_path_picks_the_most_specific_option():
    import argparse

    args = argparse.Namespace(data="runs", out="runs/a", checkpoint_dir=None, seed=0)
    assert cli_common.option_for_path(args, "runs/a/sweep.json") == "--out"
    assert cli_common.option_for_path(args, "runs/a.partial") == "--out"
    assert cli_common.option_for_path(args, "elsewhere/x.json") is None


# ---------------------------------------------------------------------------
# 8c. A text file named .keras


def test_a_text_file_named_keras_is_not_a_missing_file(files, capsys, monkeypatch):
    with pytest.raises(cli_common.CLIError) as info:
        cli_common.load_keras_file(files("notes.keras"))
    assert str(info.value) == (f"--model: {files('notes.keras')} is not a Keras model file "
                               "(not a zip archive)")
    monkeypatch.chdir(files.root)
    status, _, err = _run(deepcorrect_cli.main, ["wrap", "--model", "notes.keras", "--ranking",
                                                 "ranking.json", "--out", "w.keras"], capsys)
    assert status == 2
    assert err.strip().splitlines() == [
        "error: --model: notes.keras is not a Keras model file (not a zip archive)"]


# ---------------------------------------------------------------------------
# 9. Quiet command lines


def _baseline_tensorflow_log(environ: dict) -> list[str]:
    """What importing TensorFlow prints on stderr in this environment."""
    proc = subprocess.run([sys.executable, "-c", "import tensorflow"], env=environ,
                          capture_output=True, text=True, timeout=300)
    return proc.stderr.strip().splitlines()


def test_command_lines_print_only_the_error_line(files):
    environ = dict(os.environ, PYTHONPATH=os.fspath(REPO))
    environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
    environ.pop("DEEPCORRECT_DEBUG", None)
    runs = {
        "distort": (["-m", "distort", "apply", "nope.png", "o.png", "--name", "awgn", "--level",
                     "5"], "error: path does not exist: nope.png"),
        "deepcorrect": (["-m", "deepcorrect", "wrap", "--model", "nope.keras", "--ranking",
                         "ranking.json", "--out", "w.keras"],
                        "error: model file not found: nope.keras"),
        "qrnet": (["-m", "qrnet", "restore", "--model", "nope.keras", "--input", "data.npz",
                   "--output", "r.npz"], "error: model file not found: nope.keras"),
        "deepcorrect --verbose": (["-m", "deepcorrect", "--verbose", "wrap", "--model",
                                   "nope.keras", "--ranking", "ranking.json", "--out", "w.keras"],
                                  "error: model file not found: nope.keras"),
    }
    procs = {name: subprocess.Popen([sys.executable, *argv], cwd=files.root, env=environ,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (argv, _) in runs.items()}
    baseline = _baseline_tensorflow_log(environ)
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (name, err)
        if name.endswith("--verbose"):  # the log lines are back, the error line last
            assert len(lines) >= len(baseline) + 1, (err, baseline)
            assert lines[-1] == runs[name][1]
        else:
            assert lines == [runs[name][1]], (name, err)


# ---------------------------------------------------------------------------
# 10. distort apply --list


def test_apply_list_prints_every_distortion(capsys):
    status, out, err = _run(distort_cli.main, ["apply", "--list"], capsys)
    assert status == 0 and err == ""
    lines = out.strip().splitlines()
    assert lines[0].split() == ["name", "level", "allowed", "levels"]
    listed = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert listed == {name: arg or "-" for name, (_, arg, _, _) in registry.DISTORTIONS.items()}
    jpeg = next(line for line in lines if line.startswith("jpeg "))
    assert "[1, 100]" in jpeg
    assert "0 (off) or 1 (on)" in next(line for line in lines if line.startswith("camera_shake"))


# ---------------------------------------------------------------------------
# 13. distort sweep --levels, --resize, --limit


def _sweep(files, tmp_path, capsys, *extra) -> dict:
    argv = ["sweep", "--model", files("model.keras"), "--data", files("photos"), "--out",
            os.fspath(tmp_path / "s"), *extra]
    status, _, err = _run(distort_cli.main, argv, capsys)
    assert status == 0, err
    return json.loads((tmp_path / "s" / "sweep.json").read_text())


def test_sweep_levels_of_your_choosing(files, tmp_path, capsys):
    result = _sweep(files, tmp_path, capsys, "--levels", "jpeg=30,5", "--levels", "awgn=7")
    assert [(r["distortion"], r["level"]) for r in result["rows"]] == [
        ("jpeg", None), ("jpeg", 30.0), ("jpeg", 5.0), ("awgn", None), ("awgn", 7.0)]


def test_sweep_levels_are_checked(files, tmp_path, capsys):
    status, _, err = _run(distort_cli.main, [
        "sweep", "--model", files("model.keras"), "--data", files("photos"), "--levels",
        "jpeg=0", "--out", os.fspath(tmp_path / "s")], capsys)
    assert status == 2
    assert err.strip().splitlines() == [
        "error: --levels jpeg must be a finite number [1.0, 100.0]. Received: --levels jpeg=0.0"]


@pytest.mark.parametrize("resize", ["crop", "squash"])
def test_sweep_resize_scores_the_photos_as_the_loader_makes_them(files, tmp_path, capsys, resize):
    result = _sweep(files, tmp_path, capsys, "--levels", "awgn=10", "--resize", resize)
    # The reference: the photos squared with PIL directly.
    paths = sorted((files.root / "photos").rglob("*.png"))
    squares = []
    for path in paths:
        with Image.open(path) as im:
            if resize == "squash":
                im = im.resize((SIZE, SIZE), Image.BILINEAR)
            else:
                scale = round(SIZE * 256 / 224) / min(im.size)
                im = im.resize((max(SIZE, round(im.size[0] * scale)),
                                max(SIZE, round(im.size[1] * scale))), Image.BILINEAR)
                left, top = (im.size[0] - SIZE) // 2, (im.size[1] - SIZE) // 2
                im = im.crop((left, top, left + SIZE, top + SIZE))
            squares.append(np.asarray(im.convert("RGB")))
    labels = np.array([0 if p.parent.name == "a" else 1 for p in paths])
    expected = sweep.sweep({"model": files.model}, np.stack(squares), labels, {"awgn": [10.0]},
                           progress=False)
    clean = [r for r in result["rows"] if r["level"] is None][0]
    assert clean["confidence"] == pytest.approx(expected.rows[0]["confidence"], abs=1e-6)
    assert result["meta"]["resize"] == resize


def test_sweep_limit_reads_only_the_images_it_uses(files, tmp_path, capsys, monkeypatch):
    read = []
    real = data.read_image

    def counting(path, *args, **kwargs):
        read.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data, "read_image", counting)
    result = _sweep(files, tmp_path, capsys, "--levels", "awgn=10", "--limit", "2")
    assert result["meta"]["n"] == 2 and len(read) == 2
    read.clear()
    result = _sweep(files, tmp_path / "every", capsys, "--levels", "awgn=10", "--every", "2")
    assert result["meta"]["n"] == 2 and len(read) == 2


def test_deepcorrect_evaluate_limit_reads_only_the_images_it_uses(files, tmp_path, capsys,
                                                                  monkeypatch):
    read = []
    real = data.read_image
    monkeypatch.setattr(data, "read_image",
                        lambda path, *a, **k: read.append(path) or real(path, *a, **k))
    status, _, err = _run(deepcorrect_cli.main, [
        "evaluate", "--model", files("model.keras"), "--data", files("photos"), "--limit", "1",
        "--distortion", "awgn", "--levels", "10", "--out", os.fspath(tmp_path / "e")], capsys)
    assert status == 0, err
    assert len(read) == 1


def test_folder_loader_limit_counts_readable_images(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "0_bad.png").write_bytes(b"not a png")
    for i in range(1, 4):
        Image.fromarray(_images(1)[0]).save(tmp_path / "c" / f"{i}.png")
    with pytest.warns(UserWarning, match="skipped 1"):
        folder = data.load_image_folder(tmp_path, size=SIZE, limit=2)
    assert [Path(f).name for f in folder.files] == ["1.png", "2.png"]

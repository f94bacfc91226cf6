"""The README's command-line session (`deepcorrect rank | wrap | train | evaluate | export`),
run as documented, for every distortion of `distort.registry.names()`.

The commands are read from README.md (the shell block that starts with `deepcorrect rank`)
and run with the README's own options. Only the files change: a few-layer CNN saved as
`.keras` and 64 random 32x32 images in a CIFAR-style `.npz`, both written here; and, for
a distortion that the README's preset has no levels for, one level chosen from the
presets (`--levels`).

- `test_rank_for_every_distortion`: `rank` in-process (`deepcorrect.cli.main`) for every
  distortion name.
- `test_session_in_subprocesses`: the five commands as real processes
  (`python -m deepcorrect`), checking what each writes; for `gaussian_blur` (the README's)
  in the fast suite, for every distortion with `-m slow`.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import deepcorrect  # noqa: F401  (registers the layers the saved models use)
from distort import presets, registry

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_DATA = "../shared/data/cifar10/cifar10.npz"
STEPS = ["rank", "wrap", "train", "evaluate", "export"]
CLASSES = 10


def shell_commands(text: str, program: str = "deepcorrect") -> list[list[str]]:
    """The `program ...` commands of a shell text, continuation lines joined, as argv lists."""
    joined = text.replace("\\\n", " ")
    return [shlex.split(line.strip())[1:] for line in joined.splitlines()
            if line.strip().startswith(program + " ")]


def readme_session() -> list[list[str]]:
    """The commands of README.md's shell block that starts with `deepcorrect rank`."""
    blocks = README.read_text(encoding="utf-8").split("```bash\n")[1:]
    sessions = [shell_commands(block.split("```")[0]) for block in blocks]
    sessions = [s for s in sessions if s and s[0][0] == "rank"]
    assert len(sessions) == 1, "README.md must hold one shell block starting with deepcorrect rank"
    return sessions[0]


def level_for(name: str) -> float:
    """One level of `name` from the first preset that lists it (its middle level), else one
    inside `registry.level_range(name)`."""
    for preset in presets.preset_names():
        table = presets.get(preset)
        if name in table:
            levels = presets.levels(preset, name)
            return float(levels[len(levels) // 2])
    low, high = registry.level_range(name)
    return low + 4.0 if math.isinf(high) else (low + high) / 2.0


def adapted(argv: list[str], files: dict[str, Path], out: Path, distortion: str) -> list[str]:
    """A README command with this test's files, outputs under `out` and `distortion`."""
    result, flag = [], None
    for token in argv:
        extra = []
        if flag == "--data":
            assert token == README_DATA
            token = str(files["data"])
        elif flag in ("--model", "--ranking", "--out", "--checkpoint-dir"):
            token = str(files["model"] if token == "base.keras" else out / token)
        elif flag == "--distortion":
            token = distortion
            if distortion not in presets.get(argv[argv.index("--preset") + 1]):
                extra = ["--levels", str(level_for(distortion))]
        result += [token, *extra]
        flag = token if token.startswith("--") else None
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A few-layer CNN (conv-bn-relu, pool, conv-relu, pool, dense) and 64 images."""
    folder = tmp_path_factory.mktemp("session")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(x)
    keras.Model(inputs, outputs, name="base").save(folder / "base.keras")
    rng = np.random.default_rng(0)
    arrays = {f"{kind}_{split}": value for split in ("train", "test") for kind, value in (
        ("x", rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)),
        ("y", rng.integers(0, CLASSES, (64, 1))))}
    np.savez(folder / "data.npz", **arrays)
    return {"model": folder / "base.keras", "data": folder / "data.npz"}


def test_the_readme_session_is_the_documented_one():
    """README.md and the `deepcorrect.cli` docstring document the same five commands."""
    import deepcorrect.cli

    session = readme_session()
    assert [argv[0] for argv in session] == STEPS
    assert shell_commands(deepcorrect.cli.__doc__) == session


def check_ranking(path: Path, distortion: str) -> None:
    ranking = json.loads(path.read_text())
    assert ranking["distortion"] == distortion
    assert ranking["layer_names"] == ["conv1", "conv2"]
    for name in ("conv1", "conv2"):
        assert len(ranking["priorities"][name]) == 8
        assert all(v is not None and math.isfinite(v) for v in ranking["priorities"][name])


@pytest.mark.parametrize("distortion", registry.names())
def test_rank_for_every_distortion(tmp_path, files, distortion, capsys):
    from deepcorrect import cli

    argv = adapted(readme_session()[0], files, tmp_path, distortion)
    status = cli.main(argv)
    assert status == 0, capsys.readouterr().err
    check_ranking(tmp_path / "ranking.json", distortion)


def run_session(files: dict[str, Path], out: Path, distortion: str) -> None:
    """The README's five commands as real processes, each output checked."""
    for argv in readme_session():
        argv = adapted(argv, files, out, distortion)
        proc = subprocess.run([sys.executable, "-m", "deepcorrect", *argv], capture_output=True,
                              text=True, cwd=REPO, timeout=600)
        assert proc.returncode == 0, f"{argv[0]}: {proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr
        if argv[0] == "rank":
            check_ranking(out / "ranking.json", distortion)
        elif argv[0] == "wrap":
            wrapped = keras.models.load_model(out / "wrapped.keras", safe_mode=True)
            # The default site: after bn1 for conv1; conv2 has no batch norm.
            producer = {name: wrapped.get_layer(f"{name}_unit").input._keras_history.operation.name
                        for name in ("conv1", "conv2")}
            assert producer == {"conv1": "bn1", "conv2": "conv2"}
        elif argv[0] == "train":
            assert (out / "runs/blur/model.keras").is_file()
            trained = keras.models.load_model(out / "corrected.keras", safe_mode=True)
            assert len(trained.trainable_weights) > 0
        elif argv[0] == "evaluate":
            rows = (out / "eval/evaluate.csv").read_text().splitlines()[1:]
            levels = len(presets.get("deepcorrect_cifar").get(distortion, (None,)))
            assert len(rows) == 2 * (1 + levels)  # two models, clean and every level
            assert "| base |" in proc.stdout and "| corrected |" in proc.stdout
    import tensorflow as tf

    serving = tf.saved_model.load(str(out / "serving")).signatures["serving_default"]
    x = np.load(files["data"], allow_pickle=False)["x_test"][:4]
    expected = keras.models.load_model(out / "corrected.keras", safe_mode=True)(
        x.astype("float32"))
    np.testing.assert_allclose(serving(images=tf.constant(x))["probabilities"].numpy(),
                               np.asarray(expected), atol=1e-5)


def test_session_in_subprocesses(tmp_path, files):
    run_session(files, tmp_path, "gaussian_blur")


# The project's own distortions; the ImageNet-C ones (`imagenet_c.*`) go through `rank` in
# process above, which is where a distortion name meets the session.
@pytest.mark.slow
@pytest.mark.parametrize("distortion", [d for d in registry.names()
                                        if d != "gaussian_blur" and not d.startswith("imagenet_c.")])
def test_session_in_subprocesses_for_every_distortion(tmp_path, files, distortion):
    run_session(files, tmp_path, distortion)

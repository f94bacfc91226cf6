"""Every output file of the three command lines is written atomically (temporary file, rename).

`os.replace` is wrapped to record where each rename lands. Each command then runs in its
own empty folder, and every file it leaves there must have been renamed into place (or lie
inside a folder that was, such as a SavedModel): a file written straight to its final name
fails the test. A kill at any moment therefore leaves the old file or the new one, never
half of one (`tests/test_interruption.py` kills real processes).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pytest
from PIL import Image

import deepcorrect
import qrnet
from deepcorrect import cli as deepcorrect_cli
from distort import cli as distort_cli
from qrnet import cli as qrnet_cli

SIZE = 16


@pytest.fixture
def renames(monkeypatch) -> list[Path]:
    """The destinations of every `os.replace` made while the test runs."""
    done: list[Path] = []
    real = os.replace

    def replace(src, dst, **kwargs):
        real(src, dst, **kwargs)
        done.append(Path(dst).resolve())

    monkeypatch.setattr(os, "replace", replace)
    return done


def _not_renamed(folder: Path, renames: list[Path]) -> list[str]:
    """Files under `folder` that no rename put there (directly or inside a renamed folder)."""
    bad = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            resolved = path.resolve()
            if not any(resolved == r or r in resolved.parents for r in renames):
                bad.append(os.fspath(path.relative_to(folder)))
    return bad


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("atomic_inputs")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.ReLU(),
            keras.layers.Conv2D(6, 3, name="conv2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="tiny",
    )
    model.save(root / "model.keras")
    deepcorrect.wrap(model, {"conv1": [0, 1, 2, 3]}, beta=0.5).save(root / "wrapped.keras")
    images = rng.integers(0, 256, [16, SIZE, SIZE, 3], dtype=np.uint8)
    labels = np.arange(16) % 3
    np.savez(root / "data.npz", x_train=images, y_train=labels, x_test=images[:8],
             y_test=labels[:8])
    Image.fromarray(images[0]).save(root / "photo.png")
    (root / "photos").mkdir()
    for i in range(2):
        Image.fromarray(images[i]).save(root / "photos" / f"p{i}.png")
    deepcorrect.Ranking(
        {"conv1": np.array([0.4, 0.1, 0.3, 0.2]), "conv2": np.linspace(0, 1, 6)},
        model_name="tiny", filter_counts={"conv1": 4, "conv2": 6},
        distortion="awgn", levels=[10.0],
    ).save(root / "ranking.json")
    (root / "qr").mkdir()
    qrnet.qrnet_from_preset("qrnet_tiny").save(root / "qr" / "restorer.keras")
    return root


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    main: Callable[[list[str]], int]
    argv: list[str]
    outputs: list[str]  # files that must exist afterwards (relative to the output folder)
    slow: bool = False  # training and SavedModel exports take seconds each


D, C, Q = distort_cli.main, deepcorrect_cli.main, qrnet_cli.main
I = "{in}"
COMMANDS = [
    Command("distort apply", D, ["apply", f"{I}/photo.png", "out.png", "--name", "awgn",
                                 "--level", "10"], ["out.png"]),
    Command("distort show", D, ["show", f"{I}/photo.png", "grid.png", "--preset", "qrnet"],
            ["grid.png"]),
    Command("distort sweep", D, ["sweep", "--model", f"{I}/model.keras", "--data", f"{I}/data.npz",
                                 "--distortions", "awgn", "--limit", "8", "--out", "sweep"],
            ["sweep/sweep.json", "sweep/sweep.csv", "sweep/sweep.md", "sweep/sweep.png",
             "sweep/confidence.png", "sweep/levels.png"]),
    Command("deepcorrect rank", C, ["rank", "--model", f"{I}/model.keras", "--data",
                                    f"{I}/data.npz", "--distortion", "awgn", "--levels", "20",
                                    "--out", "ranking.json"], ["ranking.json"]),
    Command("deepcorrect wrap", C, ["wrap", "--model", f"{I}/model.keras", "--ranking",
                                    f"{I}/ranking.json", "--out", "wrapped.keras"],
            ["wrapped.keras"]),
    Command("deepcorrect finetune", C, ["finetune", "--model", f"{I}/model.keras", "--k", "1",
                                        "--out", "tuned.keras"], ["tuned.keras"]),
    Command("deepcorrect train", C, ["train", "--model", f"{I}/wrapped.keras", "--data",
                                     f"{I}/data.npz", "--distortion", "awgn", "--levels", "20",
                                     "--recipe", "cpu_quick", "--epochs", "1", "--batch-size", "8",
                                     "--checkpoint-dir", "ck", "--out", "trained.keras"],
            ["trained.keras", "ck/model.keras", "ck/state.json", "ck/state-0.weights.h5"],
            slow=True),
    Command("deepcorrect evaluate", C, ["evaluate", "--model", f"{I}/model.keras", "--data",
                                        f"{I}/data.npz", "--distortion", "awgn", "--levels", "20",
                                        "--out", "eval"],
            ["eval/evaluate.json", "eval/evaluate.csv", "eval/evaluate.md", "eval/evaluate.png"]),
    Command("deepcorrect export", C, ["export", "--model", f"{I}/model.keras", "--preprocess",
                                      "none", "--out", "serving"], ["serving/saved_model.pb"],
            slow=True),
    Command("qrnet train", Q, ["train", "--data", f"{I}/data.npz", "--classifier",
                               f"{I}/model.keras", "--preset", "qrnet_tiny", "--distortion",
                               "awgn=20", "--pretrain-epochs", "1", "--epochs", "1",
                               "--batch-size", "8", "--val-fraction", "0.25", "--verbose", "0",
                               "--out", "run"],
            ["run/restorer.keras", "run/history.json", "run/checkpoints/state.json",
             "run/checkpoints/state-0.weights.h5", "run/checkpoints/restorer_last.keras",
             "run/checkpoints/restorer_best.keras"], slow=True),
    Command("qrnet restore npz", Q, ["restore", "--model", f"{I}/qr/restorer.keras", "--input",
                                     f"{I}/data.npz", "--output", "restored.npz"],
            ["restored.npz"]),
    Command("qrnet restore folder", Q, ["restore", "--model", f"{I}/qr/restorer.keras",
                                        "--input", f"{I}/photos", "--output", "restored"],
            ["restored/p0.png", "restored/p1.png"]),
    Command("qrnet evaluate", Q, ["evaluate", "--classifier", f"{I}/model.keras", "--restorer",
                                  f"{I}/qr/restorer.keras", "--data", f"{I}/data.npz",
                                  "--distortion", "awgn=20", "--out", "rows.json"], ["rows.json"]),
    Command("qrnet export", Q, ["export", "--model", f"{I}/qr/restorer.keras", "--classifier",
                                f"{I}/model.keras", "--out", "export"],
            ["export/restorer/saved_model.pb", "export/restorer_classifier/saved_model.pb"],
            slow=True),
]


@pytest.mark.parametrize("command", [
    pytest.param(c, marks=pytest.mark.slow) if c.slow else c for c in COMMANDS],
    ids=[c.name for c in COMMANDS])
def test_command_writes_every_file_by_rename(command, inputs, renames, tmp_path, monkeypatch,
                                             capsys):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace(I, os.fspath(inputs)) for a in command.argv]
    assert command.main(argv) == 0, capsys.readouterr().err
    for output in command.outputs:
        assert (tmp_path / output).is_file(), output
    assert _not_renamed(tmp_path, renames) == []


@pytest.mark.slow
def test_overwriting_a_saved_model_folder_replaces_it_whole(inputs, renames, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "stale.txt").write_text("from an older export")
    assert C(["export", "--model", os.fspath(inputs / "model.keras"), "--out", "serving",
              "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]  # no temporary left
    assert not (tmp_path / "serving" / "stale.txt").exists()
    assert _not_renamed(tmp_path, renames) == []


def test_the_check_sees_a_file_written_in_place(renames, tmp_path):
    """The scan is not vacuous: a direct write is reported, a renamed one is not."""
    (tmp_path / "direct.json").write_text("{}")
    (tmp_path / "tmp.json").write_text("{}")
    os.replace(tmp_path / "tmp.json", tmp_path / "renamed.json")
    assert _not_renamed(tmp_path, renames) == ["direct.json"]

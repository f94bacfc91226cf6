"""Long jobs killed with SIGKILL at a random moment resume, and end as an uninterrupted run.

For each of `deepcorrect rank`, `deepcorrect train` and `qrnet train` (the real command
lines, in fresh processes, on real CIFAR-10 images):

1. the command runs uninterrupted (the reference), and we note when its first unit of work
   (a ranked layer, a training epoch) is checkpointed and when it ends;
2. the same command runs in another folder and is killed with SIGKILL after a random delay
   (from a seeded generator) between its first checkpoint and the reference's end;
3. the folder then holds no half-written file: the final output is absent (or complete and
   loadable, if the kill came after its rename), and everything else is a checkpoint file or
   a hidden temporary file, which the rerun must ignore;
4. the same command is run again, resumes, and its result equals the reference exactly:
   the same ranking (every priority and accuracy), the same weights bit for bit, the same
   loss history.

A run that finished before its kill does not test anything: it is repeated with a shorter
delay (up to three times).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pytest

from tests.conftest import CIFAR10, REPO

# Not marked slow: these run in CI (about two minutes), as the reliability issue asks.

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.fspath(REPO))


def _classifier() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(12, 3, padding="same", name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2"),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax", name="head"),
        ],
        name="cnn",
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """`data.npz` (CIFAR-10 images), a briefly trained `clf.keras` and its `wrapped.keras`."""
    if not CIFAR10.is_file():
        pytest.skip(f"CIFAR-10 not found at {CIFAR10}")
    import deepcorrect

    root = tmp_path_factory.mktemp("interruption")
    with np.load(CIFAR10, allow_pickle=False) as d:
        x, y = d["x_train"][:1400], d["y_train"][:1400].reshape(-1).astype(np.int64)
    clf = _classifier()
    clf.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    clf.fit(x[:1000], y[:1000], epochs=2, batch_size=50, verbose=0)
    clf.save(root / "clf.keras")
    np.savez(root / "data.npz", x_train=x[1000:1384], y_train=y[1000:1384],
             x_test=x[1384:], y_test=y[1384:])
    deepcorrect.wrap(clf, {"conv1": list(range(12)), "conv2": list(range(16))},
                     beta=0.5).save(root / "wrapped.keras")
    return root


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


class Job:
    """A command line, its progress (units checkpointed in a run folder) and its result."""

    def __init__(self, argv: list[str], units: int, progress: Callable[[Path], int],
                 output: str, allowed: Callable[[str], bool]):
        self.argv, self.units, self.progress = argv, units, progress
        self.output, self.allowed = output, allowed

    def start(self, folder: Path, workspace: Path) -> subprocess.Popen:
        folder.mkdir(parents=True, exist_ok=True)
        argv = [a.replace("{ws}", os.fspath(workspace)) for a in self.argv]
        return subprocess.Popen([sys.executable, *argv], cwd=folder, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def reference(self, folder: Path, workspace: Path) -> tuple[float, float]:
        """Runs to the end; returns (time of the first checkpoint, time of the end)."""
        proc = self.start(folder, workspace)
        tick, first = time.monotonic(), None
        while proc.poll() is None:
            if first is None and self.progress(folder) >= 1:
                first = time.monotonic() - tick
            time.sleep(0.02)
        end = time.monotonic() - tick
        assert proc.returncode == 0, proc.stderr.read()[-3000:]
        assert first is not None, "the reference never showed a checkpoint before ending"
        return first, end

    def kill_part_way(self, folder: Path, workspace: Path, delay: float) -> bool:
        """Starts, waits for the first checkpoint, sleeps `delay`, SIGKILLs. True if killed."""
        proc = self.start(folder, workspace)
        deadline = time.monotonic() + 300
        while self.progress(folder) < 1:
            assert proc.poll() is None, f"ended before a checkpoint: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        return proc.returncode == -signal.SIGKILL

    def check_nothing_half_written(self, folder: Path) -> bool:
        """Asserts every file is a checkpoint, a hidden temporary or a complete output.

        Returns whether the final output exists (the kill came after its rename).
        """
        for path in folder.rglob("*"):
            if path.is_file():
                name = os.fspath(path.relative_to(folder))
                assert path.name.startswith(".") or self.allowed(name), f"unexpected file {name}"
                if path.suffix == ".keras" and not path.name.startswith("."):
                    with zipfile.ZipFile(path) as archive:  # complete: a readable zip
                        assert archive.testzip() is None
                if path.suffix == ".json" or path.name.endswith(".partial"):
                    json.loads(path.read_text())
        return (folder / self.output).exists()


def _interrupt_and_resume(job: Job, workspace: Path, tmp_path: Path,
                          seed: int) -> tuple[Path, Path]:
    rng = random.Random(seed)
    first, end = job.reference(tmp_path / "reference", workspace)
    window = max(end - first, 0.5)
    for attempt in range(3):
        folder = tmp_path / f"interrupted{attempt}"
        delay = rng.uniform(0.0, 0.9) * window / 2**attempt
        killed = job.kill_part_way(folder, workspace, delay)
        finished = job.check_nothing_half_written(folder)
        if killed and not finished:
            break
    else:
        pytest.fail(f"the job finished before every kill (window {window:.2f} s)")
    done = job.progress(folder)
    assert 1 <= done <= job.units
    rerun = job.start(folder, workspace)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    return tmp_path / "reference", folder


def _weights(path: Path) -> list[np.ndarray]:
    import qrnet  # noqa: F401  (registers the restorer's layers)

    return [np.asarray(w) for w in keras.models.load_model(path, safe_mode=True,
                                                           compile=False).weights]


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = _weights(a), _weights(b)
    assert len(first) == len(second) > 0
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # 15 s of ranking in a subprocess: `make test-slow`
def test_deepcorrect_rank_resumes_after_sigkill(workspace, tmp_path):
    def progress(folder: Path) -> int:
        partial = _json(folder / "ranking.json.partial")
        final = _json(folder / "ranking.json")
        return 3 if final else len(partial["extra"]["done"]) if partial else 0

    job = Job(["-m", "deepcorrect", "rank", "--model", "{ws}/clf.keras", "--data", "{ws}/data.npz",
               "--distortion", "awgn", "--levels", "20", "40", "60", "--batch-size", "384",
               "--seed", "3", "--out", "ranking.json"],
              units=3, progress=progress, output="ranking.json",
              allowed=lambda name: name in ("ranking.json", "ranking.json.partial"))
    reference, resumed = _interrupt_and_resume(job, workspace, tmp_path, seed=1)
    expected, got = _json(reference / "ranking.json"), _json(resumed / "ranking.json")
    assert not (resumed / "ranking.json.partial").exists()
    for run in (expected, got):
        run["extra"].pop("timing")  # wall-clock seconds per layer
    assert got == expected
    priorities = np.concatenate([np.asarray(v, float) for v in expected["priorities"].values()])
    assert np.ptp(priorities) > 0, "a constant ranking would make the comparison empty"


@pytest.mark.slow  # trains for tens of seconds: `make test-slow`
def test_deepcorrect_train_resumes_after_sigkill(workspace, tmp_path):
    def progress(folder: Path) -> int:
        state = _json(folder / "ck" / "state.json")
        return state["epoch"] + 1 if state else 0

    job = Job(["-m", "deepcorrect", "train", "--model", "{ws}/wrapped.keras", "--data",
               "{ws}/data.npz", "--distortion", "awgn", "--levels", "10", "20", "40",
               "--recipe", "cpu_quick", "--epochs", "5", "--batch-size", "32", "--seed", "2",
               "--checkpoint-dir", "ck", "--out", "trained.keras"],
              units=5, progress=progress, output="trained.keras",
              allowed=lambda name: name in ("trained.keras", "ck/model.keras", "ck/state.json")
              or (name.startswith("ck/state-") and name.endswith(".weights.h5")))
    reference, resumed = _interrupt_and_resume(job, workspace, tmp_path, seed=2)
    _assert_same_weights(reference / "trained.keras", resumed / "trained.keras")
    _assert_same_weights(reference / "ck" / "model.keras", resumed / "ck" / "model.keras")
    # The units did train: the result is not the wrapped model as loaded.
    assert any(not np.array_equal(x, y) for x, y in zip(
        _weights(workspace / "wrapped.keras"), _weights(resumed / "trained.keras")))


@pytest.mark.slow  # trains for tens of seconds: `make test-slow`
def test_qrnet_train_resumes_after_sigkill(workspace, tmp_path):
    def progress(folder: Path) -> int:
        state = _json(folder / "run" / "checkpoints" / "state.json")
        if not state:
            return 0
        return state["epoch"] + 1 + (1 if state["phase"] == "main" else 0)

    checkpoints = ("restorer_best.keras", "restorer_last.keras", "state.json")
    job = Job(["-m", "qrnet", "train", "--data", "{ws}/data.npz", "--classifier", "{ws}/clf.keras",
               "--distortion", "awgn=10,30", "--distortion", "gaussian_blur=1",
               "--preset", "qrnet_tiny", "--pretrain-epochs", "1", "--epochs", "5",
               "--batch-size", "16", "--val-fraction", "0.25", "--seed", "4", "--verbose", "0",
               "--out", "run"],
              units=6, progress=progress, output="run/restorer.keras",
              allowed=lambda name: name in ("run/restorer.keras", "run/history.json")
              or name.removeprefix("run/checkpoints/") in checkpoints
              or (name.startswith("run/checkpoints/state-") and name.endswith(".weights.h5")))
    reference, resumed = _interrupt_and_resume(job, workspace, tmp_path, seed=3)
    _assert_same_weights(reference / "run" / "restorer.keras", resumed / "run" / "restorer.keras")
    expected = _json(reference / "run" / "history.json")
    assert _json(resumed / "run" / "history.json") == expected
    assert len(expected["history"]["val_loss"]) == 5

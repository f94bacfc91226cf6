"""examples/cifar10_converged.py: the converged CIFAR-10 baseline, through its command line."""

import json
import subprocess
import sys

import pytest

from tests.conftest import CIFAR10, REPO

SCRIPT = REPO / "examples" / "cifar10_converged.py"


def test_epochs_below_one_fail_in_one_line():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "0"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: --epochs must be >= 1. Received: 0"


@pytest.mark.slow  # trains one epoch: `make test-slow`
def test_quick_run_writes_a_loadable_model_and_its_history(tmp_path):
    if not CIFAR10.is_file():
        pytest.skip("CIFAR-10 not found")
    import keras

    out = tmp_path / "run"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--data", str(CIFAR10),
                    "--out", str(out)], check=True, cwd=REPO, capture_output=True)
    history = json.loads((out / "history.json").read_text())
    assert history["images"] == 512 and history["epochs"] == 1
    assert len(history["test_accuracy"]) == 1 and 0.0 <= history["test_accuracy"][0] <= 1.0
    model = keras.models.load_model(out / "baseline.keras", safe_mode=True)
    assert model.output_shape == (None, 10)

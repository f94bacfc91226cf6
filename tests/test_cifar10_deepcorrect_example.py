"""`examples/cifar10_deepcorrect.py --quick` on a few hundred real CIFAR-10 images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import CIFAR10, REPO

SCRIPT = REPO / "examples" / "cifar10_deepcorrect.py"


def test_help_lists_the_options():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0
    for option in ("--quick", "--data", "--model", "--out", "--unit-site"):
        assert option in proc.stdout


@pytest.mark.slow  # 13 methods x 2 distortions: several minutes on 2 shared CPU cores
def test_quick_run_writes_every_row(tmp_path):
    if not CIFAR10.is_file():
        pytest.skip(f"CIFAR-10 not found at {CIFAR10}")
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import cifar10_deepcorrect as example
    finally:
        sys.path.remove(str(REPO / "examples"))
    out = tmp_path / "run"
    assert example.main(["--quick", "--data", str(CIFAR10), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    names = [m["name"] for m in example.PAPER_METHODS]
    for d in ("gaussian_blur", "awgn"):
        rows = results["accuracy"][d]
        assert list(rows) == names
        assert all(len(v) == 7 and all(0 <= a <= 1 for a in v) for v in rows.values())
        # Classical restoration is told the level; at level 0 it is the baseline itself.
        assert rows["Classical"][0] == rows["Baseline"][0]
    # Deepcorr-k trains units only; -all-c also trains the head: more parameters.
    stages = results["stages"]
    assert (stages["train/deepcorr-all-c/awgn"]["trainable"]
            > stages["train/deepcorr-all/awgn"]["trainable"]
            > stages["train/deepcorr-1/awgn"]["trainable"] > 0)
    # --unit-site batch_norm (the default): the units read the batch norm after the conv.
    import keras

    model = keras.models.load_model(out / "models" / "deepcorr-1-awgn.keras")
    assert model.get_layer("conv1_unit").input._keras_history.operation.name == "bn1"
    table = (out / "table.md").read_text()
    assert all(f"| {n} |" in table for n in names)
    assert np.isfinite(results["seconds"])


def test_budget_flags_set_every_methods_budget():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import cifar10_deepcorrect as example
    finally:
        sys.path.remove(str(REPO / "examples"))
    from robustkit.cli_common import CLIError

    config = example.config_for(example.parse_args(["--repair-images", "5000", "--epochs", "2"]))
    assert config["repair"]["images"] == 5000 and config["repair"]["epochs"] == 2
    assert config["repair"]["decay_every"] == 1  # x0.1 before the last epoch
    assert config["repair"]["batch_size"] == 128  # the rest of the budget is the preset's
    sites = {m.get("site") for m in config["methods"] if m["kind"] == "deepcorrect"}
    assert sites == {"batch_norm"}
    with pytest.raises(CLIError, match="--repair-images must be at least 1. Received: 0"):
        example.config_for(example.parse_args(["--repair-images", "0"]))

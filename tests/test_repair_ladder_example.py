"""examples/repair_ladder.py: the CIFAR-10 ladder of docs/RESULTS.md, through its command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import import_example

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "repair_ladder.py"


def test_help_lists_the_options():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    for flag in ("--model", "--data", "--mixture", "--quick", "--seed", "--repair-images",
                 "--test-images", "--epochs", "--methods"):
        assert flag in out


@pytest.mark.parametrize("flag", ["--repair-images", "--test-images", "--epochs"])
def test_budget_flags_below_one_fail_in_one_line(flag, capsys):
    repair_ladder = import_example("repair_ladder")
    assert repair_ladder.main(["--model", "m.keras", flag, "0"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {flag} must be >= 1. Received: 0"


def test_every_method_is_a_valid_ladder_method():
    repair_ladder = import_example("repair_ladder")
    from deepcorrect.methods import resolve_methods

    resolved = resolve_methods(list(repair_ladder.METHODS))
    assert [m["name"] for m in resolved][0] == "baseline"
    finetunes = [m for m in resolved if m["name"].startswith("finetune")]
    assert {s["learning_rate"] for m in finetunes for s in m["steps"]} == {0.001}


@pytest.mark.slow  # repairs ten methods for two distortions: `make test-slow`
def test_quick_run_writes_the_table_and_resumes(tmp_path):
    import keras

    from studies.networks import build_network

    data = REPO.parent / "shared" / "data" / "cifar10" / "cifar10.npz"
    if not data.is_file():
        pytest.skip("CIFAR-10 not found beside the repository")
    model = build_network("cifar10_quick", (32, 32, 3), 10, seed=0)
    model.save(tmp_path / "base.keras")
    argv = [sys.executable, str(SCRIPT), "--quick", "--model", str(tmp_path / "base.keras"),
            "--data", str(data), "--out", str(tmp_path / "out")]
    first = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr[-2000:]
    table = json.loads((tmp_path / "out" / "comparison.json").read_text())
    names = {r["method"] for r in table["rows"]}
    assert {"baseline", "bn_adapt", "tent", "finetune-3", "bn_adapt+deepcorrect+tent"} <= names
    assert all(0.0 <= a <= 1.0 for r in table["rows"] for a in r["accuracy"])
    stamp = (tmp_path / "out" / "stages.json").stat().st_mtime_ns
    again = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "out" / "stages.json").stat().st_mtime_ns == stamp  # nothing redone
    assert np.isclose(json.loads((tmp_path / "out" / "comparison.json").read_text())["rows"][0]
                      ["mean"], table["rows"][0]["mean"])

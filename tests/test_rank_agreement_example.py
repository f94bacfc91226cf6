"""examples/rank_agreement.py: exact against approximate ranking, through its command line."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import import_example

REPO = Path(__file__).resolve().parents[1]


def example():
    return import_example("rank_agreement")


@pytest.mark.parametrize("flags, message", [
    (["--images", "0"], "error: --images must be >= 1. Received: 0"),
    (["--layers", "0"], "error: --layers must be >= 1. Received: 0"),
])
def test_bad_counts_fail_in_one_line(flags, message, capsys):
    argv = ["--model", "m.keras", "--data", "d.npz", "--levels", "1", *flags]
    assert example().main(argv) == 2
    assert capsys.readouterr().err.strip() == message


def test_reports_what_the_two_rankings_say(tmp_path, cifar10_small):
    import deepcorrect
    from tests.test_training import small_cnn

    x, y = cifar10_small[0][:40], cifar10_small[1][:40]
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    model = small_cnn()
    model.save(tmp_path / "m.keras")
    argv = ["--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"),
            "--images", "24", "--distortion", "awgn", "--levels", "20", "40",
            "--layers", "2", "--out", str(tmp_path / "out"), "--seed", "1"]
    assert example().main(argv) == 0
    result = json.loads((tmp_path / "out" / "agreement.json").read_text())
    pick = np.sort(np.random.default_rng(1).permutation(40)[:24])
    kwargs = dict(layers=["conv1", "conv2"], seed=1, progress=False)
    exact = deepcorrect.rank(model, x[pick], y[pick], "awgn", [20, 40], **kwargs)
    approx = deepcorrect.rank(model, x[pick], y[pick], "awgn", [20, 40], method="approx",
                              **kwargs)
    assert [r["layer"] for r in result["layers"]] == ["conv1", "conv2"]
    for row in result["layers"]:
        name = row["layer"]
        assert row["spearman"] == pytest.approx(deepcorrect.spearman(exact, approx, name))
        top_e, top_a = set(exact.top(name, 0.5).tolist()), set(approx.top(name, 0.5).tolist())
        assert row["top_overlap"] == pytest.approx(len(top_e & top_a) / len(top_e))
        assert row["exact_reliability"] == pytest.approx(
            exact.reliability(name).spearman_brown)
    assert "| conv2 | 16 |" in (tmp_path / "out" / "agreement.md").read_text()

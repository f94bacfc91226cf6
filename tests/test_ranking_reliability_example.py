"""examples/ranking_reliability.py --quick on a small CIFAR-10 network, as a user runs it."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.conftest import CIFAR10, REPO


def _example():
    spec = importlib.util.spec_from_file_location("ranking_reliability",
                                                  REPO / "examples" / "ranking_reliability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # eight exact rankings, 10 s: `make test-slow`
def test_quick_run_writes_a_consistent_table(tmp_path):
    if not CIFAR10.is_file():
        pytest.skip("CIFAR-10 not found")
    from studies.networks import build_network

    model_path = tmp_path / "model.keras"
    build_network("cifar10_quick", (32, 32, 3), seed=0).save(model_path)
    out = tmp_path / "out"
    assert _example().main(["--model", str(model_path), "--data", str(CIFAR10), "--quick",
                            "--out", str(out)]) == 0
    rows = json.loads((out / "reliability.json").read_text())
    assert {(r["images"], r["distortion"], r["score"]) for r in rows} == {
        (n, d, s) for n in (32, 64) for d in ("gaussian_blur", "awgn")
        for s in ("gain", "log_prob")}
    for r in rows:
        assert 1 <= r["distinct"] <= 32  # conv1 of cifar10_quick has 32 filters
        if not math.isnan(r["split_half"]):
            assert r["spearman_brown"] == pytest.approx(2 * r["split_half"] /
                                                        (1 + r["split_half"]))
    # Blur vs noise is symmetric: each pair of rows reports the same correlation.
    by = {(r["images"], r["distortion"], r["score"]): r["blur_vs_noise"] for r in rows}
    for n in (32, 64):
        for s in ("gain", "log_prob"):
            a, b = by[n, "gaussian_blur", s], by[n, "awgn", s]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
    assert "| 64 | conv1 | awgn | log_prob |" in (out / "reliability.md").read_text()


def test_bad_image_count_is_one_line(capsys, tmp_path):
    assert _example().main(["--model", "m.keras", "--images", "1", "--out", str(tmp_path)]) == 2
    assert "--images must be at least 2" in capsys.readouterr().err

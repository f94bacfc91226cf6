"""examples/time_to_accuracy.py: the learning-rate sweep and the time axis, through its command line."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import import_example

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "cifar10" / "cifar10.npz"


def example():
    return import_example("time_to_accuracy")


def tiny_run(tmp_path):
    """A saved untrained cifar10_quick, the output folder and the argv of a tiny run."""
    from studies.networks import build_network

    if not DATA.is_file():
        pytest.skip("CIFAR-10 not found beside the repository")
    model = build_network("cifar10_quick", (32, 32, 3), 10, seed=0)
    model.save(tmp_path / "base.keras")
    out = tmp_path / "out"
    argv = ["--quick", "--model", str(tmp_path / "base.keras"), "--data", str(DATA),
            "--out", str(out), "--train-images", "64", "--sweep-images", "32",
            "--test-images", "16", "--rank-images", "16"]
    return model, out, argv


@pytest.mark.parametrize("flag", ["--train-images", "--epochs", "--every"])
def test_counts_below_one_fail_in_one_line(flag, capsys):
    assert example().main(["--model", "m.keras", flag, "0"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {flag} must be >= 1. Received: 0"


def test_unknown_distortion_fails_in_one_line(capsys):
    assert example().main(["--model", "m.keras", "--distortion", "blurr"]) == 2
    assert "blurr" in capsys.readouterr().err


@pytest.mark.slow  # ten short trainings (about 40 s): `make test-slow`
def test_tiny_run_picks_the_best_rate_and_resumes(tmp_path, capsys):
    import distort
    from distort import presets
    from robustkit import data

    model, out, argv = tiny_run(tmp_path)
    argv += ["--every", "1"]
    assert example().main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("training ") for line in lines) == 10  # 2 x 4 rates, 2 curves
    curves = {m: json.loads((out / f"curve_{m}.json").read_text())
              for m in ("deepcorrect", "finetune-all")}
    for method, rates in example().RATES.items():
        sweep = {r: json.loads((out / "sweep" / f"{method}_{r:g}.json").read_text())
                 for r in rates}
        best = max(rates, key=lambda r: sweep[r]["records"][-1]["mean"])
        assert curves[method]["learning_rate"] == best
    # The curve starts at the untouched model's accuracy, computed here directly.
    (_, _), (x_test, y_test) = data.load_cifar10(str(DATA))
    x, y = x_test[:16], y_test[:16]
    sets = [x] + [distort.apply(x, "gaussian_blur", level, seed=0)
                  for level in presets.levels("deepcorrect_cifar", "gaussian_blur")]
    top1 = [np.mean(model.predict(np.float32(s), verbose=0).argmax(-1) == y) for s in sets]
    for run in curves.values():
        assert run["records"][0]["seconds"] == 0.0
        assert run["records"][0]["mean"] == pytest.approx(np.mean(top1))
        assert [r["step"] for r in run["records"]] == [0, 1]  # 64 images, batch 64
    assert (out / "time_axis.png").stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    assert example().main(argv) == 0  # a rerun trains nothing and reports the same table
    assert capsys.readouterr().out.strip() == (out / "time_axis.md").read_text().strip()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.json")} == stamps


def test_unknown_unit_layer_fails_in_one_line_naming_it(tmp_path, capsys):
    _, out, argv = tiny_run(tmp_path)
    argv += ["--unit-layers", "conv2", "conv9"]
    assert example().main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "conv9" in err
    assert not list(out.glob("sweep/*.json"))  # nothing was trained


@pytest.mark.slow  # ten short trainings (about 40 s): `make test-slow`
def test_unit_layers_limit_the_units_to_those_layers(tmp_path):
    import deepcorrect

    model, out, argv = tiny_run(tmp_path)
    argv += ["--unit-layers", "conv2", "conv3"]
    assert example().main(argv) == 0
    ranking = deepcorrect.Ranking.load(out / "ranking.json")
    assert list(ranking.priorities) == ["conv2", "conv3"]
    only_two = deepcorrect.trainable_parameters(deepcorrect.wrap(model, ranking, beta=0.5))
    curve = json.loads((out / "curve_deepcorrect.json").read_text())
    assert curve["parameters"] == only_two

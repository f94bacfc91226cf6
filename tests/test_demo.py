"""`deepcorrect demo --quick` end to end on real Fashion-MNIST: outputs, consistency, resume."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import distort
import robustkit.data
from deepcorrect import cli
from studies import demo
from robustkit.data import FASHION_MNIST_DIR


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not found at {FASHION_MNIST_DIR}")
    out = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def _test_split(n):
    (_, _), (x, y) = robustkit.data.load_fashion_mnist()
    return x[:n], y[:n]


@pytest.mark.slow  # shares the 45-second `deepcorrect demo --quick` run: `make test-slow`
def test_quick_demo_writes_report_table_and_figures(quick_run):
    for name in ("report.md", "table.md", "results.json", "accuracy.png", "restored.png"):
        assert (quick_run / name).stat().st_size > 0, name
    report = (quick_run / "report.md").read_text()
    table = (quick_run / "table.md").read_text()
    assert table in report and "accuracy.png" in report and "restored.png" in report
    results = json.loads((quick_run / "results.json").read_text())
    config = demo.resolve_config("fashion_mnist", quick=True)
    assert set(results["accuracy"]) == set(config["levels"])
    for d, rows in results["accuracy"].items():
        assert list(rows) == [m["name"] for m in config["methods"]]
        for name, values in rows.items():
            assert len(values) == 1 + len(config["levels"][d])
            # One table row per method, its cells the stored accuracies and their mean.
            line = next(l for l in table.split("**" + d + "**")[1].splitlines()
                        if l.startswith(f"| {name} |"))
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[1 : 2 + len(values)] == [f"{v:.3f}" for v in values] + [
                f"{np.mean(values):.3f}"]


@pytest.mark.slow  # shares the 45-second `deepcorrect demo --quick` run: `make test-slow`
def test_baseline_row_equals_an_independent_evaluation(quick_run):
    config = demo.resolve_config("fashion_mnist", quick=True)
    x, y = _test_split(config["test_images"])
    model = keras.models.load_model(quick_run / "models" / "baseline.keras")
    results = json.loads((quick_run / "results.json").read_text())
    blur = results["accuracy"]["gaussian_blur"]["Baseline"]
    expected = [float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))]
    for level in config["levels"]["gaussian_blur"]:  # blur is deterministic: no seed to match
        images = np.asarray(distort.gaussian_blur(x, level))
        expected.append(float(np.mean(model.predict(images, verbose=0).argmax(-1) == y)))
    np.testing.assert_allclose(blur, expected, atol=1e-9)
    # The clean column is the same under both distortions.
    assert results["accuracy"]["awgn"]["Baseline"][0] == blur[0]


@pytest.mark.slow  # shares the 45-second `deepcorrect demo --quick` run: `make test-slow`
def test_report_ends_with_the_recommended_repair(quick_run):
    # Recomputed from results.json: the best mean top-1 over clean and every level of both
    # distortions among the methods losing at most 0.01 of clean top-1 (demo.RECOMMEND).
    config = demo.resolve_config("fashion_mnist", quick=True)
    accuracy = json.loads((quick_run / "results.json").read_text())["accuracy"]
    names = [m["name"] for m in config["methods"]]
    mean = {n: np.mean([np.mean(rows[n]) for rows in accuracy.values()]) for n in names}
    clean = {n: np.mean([rows[n][0] for rows in accuracy.values()]) for n in names}
    eligible = [n for n in names if clean["Baseline"] - clean[n] <= 0.01 + 1e-9]
    best = max(eligible, key=lambda n: (mean[n], -eligible.index(n)))
    expected = best if mean[best] > mean["Baseline"] else "Baseline"
    section = (quick_run / "report.md").read_text().split("## Which repair?")[1]
    assert f"**{expected}**" in section
    assert {"BN-adapt", "TENT", "BN-adapt+DeepCorrect+TENT"} <= set(names)


@pytest.mark.slow  # shares the 45-second `deepcorrect demo --quick` run: `make test-slow`
def test_rerun_is_refused_then_resumes_without_retraining(quick_run, capsys):
    assert cli.main(["demo", "--quick", "--out", str(quick_run)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    stages = (quick_run / "stages.json").read_text()
    table = (quick_run / "table.md").read_text()
    (quick_run / "report.md").unlink()  # as if interrupted before the report
    assert cli.main(["demo", "--quick", "--out", str(quick_run)]) == 0
    assert (quick_run / "stages.json").read_text() == stages  # nothing was trained again
    assert (quick_run / "table.md").read_text() == table


@pytest.mark.slow  # shares the 45-second `deepcorrect demo --quick` run: `make test-slow`
def test_a_cached_restorer_loads_in_a_fresh_process(quick_run):
    # A resumed run loads finished stages in a new process, where nothing has imported
    # qrnet yet: its classes must still be found.
    import subprocess
    import sys

    (restorer,) = sorted((quick_run / "models").glob("qrnet-gaussian_blur.keras"))
    code = ("import sys; from deepcorrect.stages import read_model; "
            "print(type(read_model(sys.argv[1])).__name__)")
    proc = subprocess.run([sys.executable, "-c", code, str(restorer)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-800:]
    assert proc.stdout.strip().splitlines()[-1] == "QRNet"


@pytest.mark.slow  # shares the 45-second `deepcorrect demo --quick` run: `make test-slow`
def test_other_settings_in_the_same_folder_are_refused(quick_run, capsys):
    (quick_run / "report.md").rename(quick_run / "report.bak")
    try:
        assert cli.main(["demo", "--quick", "--seed", "1", "--out", str(quick_run)]) == 2
        assert "other settings" in capsys.readouterr().err
    finally:
        (quick_run / "report.bak").rename(quick_run / "report.md")


def test_bad_dataset_arguments_fail_in_one_line(tmp_path, capsys):
    assert cli.main(["demo", "--dataset", "cifar10", "--quick", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data" in err
    assert cli.main(["demo", "--data", str(tmp_path / "missing"), "--quick",
                     "--out", str(tmp_path / "f")]) == 2
    assert "does not exist" in capsys.readouterr().err

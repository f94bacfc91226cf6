"""`examples/qrnet_cifar10.py --quick` on a few hundred real CIFAR-10 images."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.conftest import CIFAR10, REPO


def _example():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import qrnet_cifar10
    finally:
        sys.path.remove(str(REPO / "examples"))
    return qrnet_cifar10


@pytest.mark.slow  # trains for tens of seconds: `make test-slow`
def test_quick_run_tables_figures_and_cache(tmp_path, capsys):
    if not CIFAR10.is_file():
        pytest.skip(f"CIFAR-10 not found at {CIFAR10}")
    import keras
    from PIL import Image

    example = _example()
    out, figures = tmp_path / "run", tmp_path / "figures"
    argv = ["--quick", "--data", str(CIFAR10), "--out", str(out), "--figures", str(figures),
            "--verbose", "0"]
    assert example.main(argv) == 0

    rows = json.loads((out / "rows.json").read_text())
    levels = 1 + 5 + 5  # clean and five levels of each distortion
    methods = ["classifier", "recnet", "qrnet", "mqrnet"]
    for name in ("a", "c"):
        mine = [r for r in rows if r["classifier"] == name]
        assert len(mine) == levels * len(methods)
        assert list(dict.fromkeys(r["method"] for r in mine)) == methods
        assert all(0 <= r["accuracy"] <= 1 and r["n"] == 200 for r in mine)
        # Only the unrestored clean images equal the references (PSNR infinite -> null).
        assert [r for r in mine if r["psnr"] is None] == [
            r for r in mine if r["distortion"] == "clean" and r["method"] == "classifier"]

    # The unseen classifier alone, on the clean images, checked independently.
    with np.load(CIFAR10) as data:
        x, y = data["x_test"][:200].astype("float32"), data["y_test"][:200].reshape(-1)
    unseen = keras.models.load_model(str(out / "classifier_c.keras"), safe_mode=True)
    expected = float(np.mean(np.argmax(unseen.predict(x, verbose=0), -1) == y))
    clean_c = [r for r in rows if (r["classifier"], r["distortion"], r["method"])
               == ("c", "clean", "classifier")]
    assert clean_c[0]["accuracy"] == pytest.approx(expected)

    # MQRNet's loss holds both training classifiers, QRNet's one, and neither holds "c".
    stages = json.loads((out / "stages.json").read_text())
    assert {k for k in stages["restorer/mqrnet"]["history"] if k.startswith("ce_")} == {
        "ce_a", "ce_b"}
    assert {k for k in stages["restorer/qrnet"]["history"] if k.startswith("ce_")} == {"ce_a"}

    names = sorted(p.name for p in figures.glob("*.png"))
    assert names == ["qrnet_cifar10_quality_vs_accuracy_a.png",
                     "qrnet_cifar10_quality_vs_accuracy_c.png", "qrnet_cifar10_samples.png"]
    with Image.open(figures / "qrnet_cifar10_samples.png") as image:
        width, height = image.size
    assert width > height  # 12 columns (4 cases x 3 images) by 5 rows
    report = (out / "report.md").read_text()
    for text in ("classifier c", "restorer + classifier c", "| mqrnet |", "mqrnet"):
        assert text in report

    # A rerun reuses every model and stage instead of training again.
    models = {p.name: p.stat().st_mtime_ns for p in out.glob("*.keras")}
    assert len(models) == 6
    assert example.main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.keras")} == models
    assert json.loads((out / "rows.json").read_text()) == rows

    # Other settings in the same folder are refused in one line.
    capsys.readouterr()
    assert example.main(argv + ["--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--overwrite" in err and err.count("\n") == 1


def test_help_lists_the_options():
    import subprocess

    proc = subprocess.run([sys.executable, str(REPO / "examples" / "qrnet_cifar10.py"), "--help"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0
    for option in ("--quick", "--data", "--out", "--figures", "--overwrite", "--seed"):
        assert option in proc.stdout


def test_sample_indices_pick_distinct_classes():
    example = _example()
    assert example.sample_indices(np.array([3, 3, 1, 3, 2, 1]), 3) == [0, 2, 4]
    assert example.sample_indices(np.array([5, 5]), 3) == [0]

"""Safe loading: nothing the project reads can run code hidden in a file.

- A scan of the source of `distort`, `deepcorrect`, `qrnet` and `benchmarks`: every
  `np.load` passes `allow_pickle=False`, every `load_model` passes `safe_mode=True`,
  and nothing uses `Lambda` layers, `pickle`, or Keras's unsafe-deserialisation switch.
  The scanner itself is checked on snippets that break each rule.
- Behaviour: an `.npz` holding a pickled (object) array is refused with a `ValueError`
  naming the file; a `.keras` file with a `Lambda` layer is refused by the command lines
  in one line naming the file. (`tests/test_reproducibility.py` scans every kind of saved
  model for `Lambda`, QRNet included.)
- The README's loading snippets (`import deepcorrect  # registers the layers`, then
  `keras.models.load_model(path, safe_mode=True)`; qrnet likewise) run as written in a
  fresh process, and without the import fail with the error the README documents.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from robustkit import cli_common, data

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("distort", "deepcorrect", "qrnet", "benchmarks")


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else keyword.value
    return None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def unsafe_loads(source: str) -> list[str]:
    """The rule breaks in one Python source, as "line: what" strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
                found.append(f"{line}: {name} without allow_pickle=False")
            if name.endswith("load_model") and _keyword(node, "safe_mode") is not True:
                found.append(f"{line}: {name} without safe_mode=True")
            if name.endswith("enable_unsafe_deserialization"):
                found.append(f"{line}: {name}")
        elif isinstance(node, ast.Attribute) and node.attr == "Lambda":
            found.append(f"{line}: {_dotted(node)}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib") for n in names) \
                    or "Lambda" in names:
                found.append(f"{line}: import of {', '.join(n for n in names if n)}")
    return found


def test_package_source_loads_only_safely():
    files = sorted(f for folder in SCANNED for f in (REPO / folder).rglob("*.py"))
    assert len(files) > 30
    found = [f"{f.relative_to(REPO)}:{hit}" for f in files
             for hit in unsafe_loads(f.read_text(encoding="utf-8"))]
    assert found == []


@pytest.mark.parametrize("snippet,expected", [
    ("np.load(p)", "np.load without allow_pickle=False"),
    ("np.load(p, allow_pickle=True)", "np.load without allow_pickle=False"),
    ("numpy.load(p, allow_pickle=flag)", "numpy.load without allow_pickle=False"),
    ("keras.models.load_model(p)", "keras.models.load_model without safe_mode=True"),
    ("keras.saving.load_model(p, safe_mode=False)", "keras.saving.load_model without safe_mode"),
    ("keras.config.enable_unsafe_deserialization()", "enable_unsafe_deserialization"),
    ("x = keras.layers.Lambda(lambda t: t)(x)", "keras.layers.Lambda"),
    ("from keras.layers import Lambda", "import of Lambda"),
    ("import pickle", "import of pickle"),
])
def test_the_scan_reports_each_unsafe_pattern(snippet, expected):
    found = unsafe_loads(snippet)
    assert len(found) == 1 and expected in found[0], found


def test_the_scan_accepts_safe_calls():
    assert unsafe_loads("np.load(p, allow_pickle=False)\n"
                        "keras.models.load_model(p, safe_mode=True, compile=False)\n"
                        "layers.Dense(3)") == []


def test_pickled_npz_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1))
    with pytest.raises(ValueError, match=r"cannot read .*pickled\.npz without pickle"):
        data.read_npz(path)
    with pytest.raises(ValueError, match=r"pickled\.npz without pickle"):
        data.load_cifar10(path)


def test_lambda_model_is_refused_naming_the_file(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(cli_common.CLIError, match=r"--model is not a loadable \.keras model "
                       r"\(.*Lambda.*\): .*lambda\.keras"):
        cli_common.load_keras_file(path)


def readme_loading_snippets() -> dict[str, str]:
    """README.md's Python blocks that load a saved model, by the package they import."""
    blocks = (REPO / "README.md").read_text(encoding="utf-8").split("```python\n")[1:]
    snippets = {}
    for block in (b.split("```")[0] for b in blocks):
        for package in ("deepcorrect", "qrnet"):
            if f"import {package}  # registers the layers" in block and "load_model(" in block:
                snippets[package] = block
    return snippets


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def saved_models(folder: Path) -> None:
    """The files the README's snippets load: a wrapped model and a QRNet restorer."""
    import deepcorrect
    import qrnet

    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv1"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    deepcorrect.wrap(base, {"conv1": [2, 0, 1, 3]}).save(folder / "corrected.keras")
    (folder / "runs" / "qrnet").mkdir(parents=True)
    qrnet.build_qrnet(base_width=4, depth=2).save(folder / "runs" / "qrnet" / "restorer.keras")


def test_the_readme_loading_snippets_run_as_written_in_a_fresh_process(tmp_path):
    """Each snippet, exactly as in README.md, loads its file in a new Python process; the
    deepcorrect one without its import fails with the error the README names."""
    snippets = readme_loading_snippets()
    assert sorted(snippets) == ["deepcorrect", "qrnet"]
    saved_models(tmp_path)
    for package, snippet in snippets.items():
        name = "model" if package == "deepcorrect" else "restorer"
        proc = run_python(snippet + f"\nprint('loaded', type({name}).__name__, "
                                    f"len({name}.layers))", tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split()[-3:-1] == ["loaded", "Functional" if name == "model"
                                              else "QRNet"], proc.stdout
    without = snippets["deepcorrect"].replace("import deepcorrect  # registers the layers\n", "")
    assert "import deepcorrect" not in without
    proc = run_python(without, tmp_path)
    assert proc.returncode != 0
    assert "TypeError" in proc.stderr and "Could not locate class 'CorrectionUnit'" in proc.stderr

"""The packages' public names: each listed in `__all__` resolves and is documented."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("deepcorrect", "qrnet", "distort")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_and_has_a_docstring(package):
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        value = getattr(module, name)
        if callable(value) and not isinstance(value, type(sys)):
            assert (value.__doc__ or "").strip(), f"{package}.{name} has no docstring"


def test_importing_deepcorrect_loads_neither_qrnet_nor_the_studies():
    code = ("import sys, deepcorrect; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('qrnet', 'studies')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_qrnet_does_not_load_deepcorrect():
    code = "import sys, qrnet; print('deepcorrect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

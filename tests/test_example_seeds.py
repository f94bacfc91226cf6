"""Every example script that takes `--seed` checks it as the package's command lines do.

`robustkit.seeds.seed_argument` refuses anything but an integer in [0, 2147483647] with
`check_seed`'s message; a plain `type=int` would accept -1 and word a refusal differently.
The argument is parsed before anything loads data or trains, so each script is run in
process with only a bad `--seed`.
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.conftest import REPO

EXAMPLES = REPO / "examples"


def _takes_seed(path) -> bool:
    text = path.read_text()
    return '"--seed"' in text or "from studies import analysis" in text


SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py")
                 if not p.stem.startswith("_") and _takes_seed(p))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scripts_with_a_seed_are_found():
    assert {"qrnet_cifar10", "qrnet_imagenet", "zhou_finetune", "imagenet_deepcorrect"} <= set(SCRIPTS)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_no_example_parses_the_seed_as_a_plain_int(path):
    assert not re.search(r'"--seed"[^)]*type=int\b', path.read_text())


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_refuses_a_bad_seed_with_the_seed_check_message(name, capsys):
    main = _load(name).main
    with pytest.raises(SystemExit) as info:
        main(["--seed", "1.5"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --seed: seed must be an integer in [0, 2147483647]. Received: seed='1.5'" \
        in err, err

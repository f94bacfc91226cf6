"""examples/alexnet_deepcorrect.py: the paper's AlexNet and Deepcorr-5 sizes (Table 10)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("alexnet_deepcorrect",
                                              REPO / "examples" / "alexnet_deepcorrect.py")
alexnet_example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(alexnet_example)

# DeepCorrect, Table 10: trainable parameters of each unit, and the totals as
# printed (2.81, 1.67 and 1.03 million; the paper truncates the first two and
# rounds the third, so the totals agree to within 0.01 million).
PAPER_UNITS = {
    "cw": [270_288, 739_200, 739_200, 739_200, 328_960],
    "lite": [314_568, 345_408, 345_408, 345_408, 328_960],
    "bottleneck": [40_680, 287_040, 287_040, 287_040, 127_872],
}
PAPER_TOTAL_MILLIONS = {"cw": 2.81, "lite": 1.67, "bottleneck": 1.03}


@pytest.fixture(scope="module")
def alexnet():
    return alexnet_example.build_alexnet()


def test_alexnet_has_krizhevskys_parameter_count(alexnet):
    # 60,965,224 is the well-known count of the two-group AlexNet.
    assert alexnet.count_params() == 60_965_224
    shapes = {name: tuple(alexnet.get_layer(name).output.shape[1:3])
              for name in ("conv1", "conv2", "conv3", "conv5")}
    assert shapes == {"conv1": (55, 55), "conv2": (27, 27), "conv3": (13, 13), "conv5": (13, 13)}


@pytest.mark.parametrize("unit", ["cw", "lite", "bottleneck"])
def test_deepcorr5_trainable_parameters_match_table_10(alexnet, unit):
    rng = np.random.default_rng(0)
    ranks = {name: rng.permutation(alexnet.get_layer(name).filters)
             for name in alexnet_example.DEEPCORR5_BETA}
    model = alexnet_example.deepcorr5(alexnet, ranks, unit)
    rows = alexnet_example.unit_table(model)
    assert [r["corrected_filters"] for r in rows] == [72, 192, 192, 192, 128]
    assert [r["trainable_params"] for r in rows] == PAPER_UNITS[unit]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == sum(PAPER_UNITS[unit])
    assert trainable / 1e6 == pytest.approx(PAPER_TOTAL_MILLIONS[unit], abs=0.01)


def test_deepcorr5_equals_alexnet_at_initialisation(alexnet):
    ranks = alexnet_example.identity_ranks(alexnet)
    model = alexnet_example.deepcorr5(alexnet, ranks, "bottleneck")
    x = np.random.default_rng(1).normal(0, 50, size=(1, 227, 227, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(alexnet(x)), atol=1e-6)


def test_deepcorr5_seeds_its_units_from_seed(alexnet):
    ranks = alexnet_example.identity_ranks(alexnet)

    def unit_weights(seed):
        model = alexnet_example.deepcorr5(alexnet, ranks, "bottleneck", seed=seed)
        return [np.asarray(w) for w in model.trainable_weights]

    first, again, other = unit_weights(1), unit_weights(1), unit_weights(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_local_response_normalization_matches_the_formula():
    layer = alexnet_example.LocalResponseNormalization()
    a = np.random.default_rng(2).normal(0, 30, size=(1, 2, 3, 8)).astype("float32")
    expected = np.empty_like(a)
    for c in range(8):
        lo, hi = max(0, c - 2), min(8, c + 3)
        s = np.sum(a[..., lo:hi] ** 2, axis=-1)
        expected[..., c] = a[..., c] / (2.0 + 1e-4 / 5 * s) ** 0.75
    np.testing.assert_allclose(np.asarray(layer(a)), expected, rtol=1e-5)
    clone = alexnet_example.LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.size, clone.alpha, clone.beta, clone.k) == (5, 1e-4, 0.75, 2.0)


def test_script_writes_table_and_refuses_existing_output(tmp_path, capsys):
    assert alexnet_example.main(["--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "alexnet_table10.json").read_text())
    assert summary["models"]["Deepcorr-5"]["trainable_params"] == sum(PAPER_UNITS["cw"])
    assert alexnet_example.main(["--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err

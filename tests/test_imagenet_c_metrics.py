"""Corruption Error, mCE and relative mCE against hand computations."""

from __future__ import annotations

import pytest

from distort import corruption_metrics as cm
from distort.imagenet_c.constants import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, COMMON
from distort.sweep import SweepResult


def test_hand_computed_example_with_a_custom_baseline():
    # Baseline: corruption a at 0.7 and 0.9 (mean 0.8), b at 0.5; clean 0.3.
    baseline = cm.baseline_from_errors({"a": [0.7, 0.9], "b": 0.5}, clean_error=0.3, name="ref")
    errors = {"a": [0.2, 0.4, 0.6], "b": [0.25, 0.25]}
    # CE_a = 0.4 / 0.8 = 0.5, CE_b = 0.25 / 0.5 = 0.5.
    assert cm.corruption_errors(errors, baseline) == pytest.approx({"a": 0.5, "b": 0.5})
    assert cm.mce(errors, baseline) == pytest.approx(0.5)
    # Relative: (0.4 - 0.1) / (0.8 - 0.3) = 0.6 and (0.25 - 0.1) / (0.5 - 0.3) = 0.75.
    rel = cm.relative_corruption_errors(errors, 0.1, baseline)
    assert rel == pytest.approx({"a": 0.6, "b": 0.75})
    assert cm.relative_mce(errors, 0.1, baseline) == pytest.approx(0.675)
    s = cm.summary(errors, 0.1, baseline)
    assert s["baseline"] == "ref" and s["mce"] == pytest.approx(0.5)
    assert s["relative_mce"] == pytest.approx(0.675)


def test_alexnet_baseline_constants_and_a_hand_computed_ce():
    assert list(cm.ALEXNET["errors"]) == list(COMMON)
    assert cm.ALEXNET["clean_error"] == ALEXNET_CLEAN_ERROR == 0.4348
    errors = {c: 0.5 for c in COMMON}
    errors["gaussian_noise"] = [0.5, 0.6, 0.7, 0.8, 0.9]  # mean 0.7
    ce = cm.corruption_errors(errors)
    assert ce["gaussian_noise"] == pytest.approx(0.7 / 0.886428)
    assert ce["brightness"] == pytest.approx(0.5 / 0.564592)
    expected = (0.7 / 0.886428 + sum(0.5 / ALEXNET_ERRORS[c] for c in COMMON[1:])) / 15
    assert cm.mce(errors) == pytest.approx(expected)
    rel = cm.relative_mce(errors, 0.2)
    expected = ((0.7 - 0.2) / (0.886428 - 0.4348)
                + sum((0.5 - 0.2) / (ALEXNET_ERRORS[c] - 0.4348) for c in COMMON[1:])) / 15
    assert rel == pytest.approx(expected)


def test_alexnet_scores_one_against_itself():
    assert cm.mce(dict(ALEXNET_ERRORS)) == pytest.approx(1.0)
    assert cm.relative_mce(dict(ALEXNET_ERRORS), ALEXNET_CLEAN_ERROR) == pytest.approx(1.0)


def test_bad_errors_are_refused():
    with pytest.raises(ValueError, match="Missing"):
        cm.mce({"fog": 0.5})  # the mCE needs all fifteen
    assert list(cm.corruption_errors({"fog": 0.5, "spatter": 0.4})) == ["fog"]
    with pytest.raises(ValueError, match=r"error rate in \[0, 1\]"):
        cm.mean_errors({"fog": [0.5, 1.5]})
    with pytest.raises(TypeError, match="error rate"):
        cm.mean_errors({"fog": "0.5"})
    with pytest.raises(ValueError, match="exceed its clean error"):
        cm.relative_mce({"a": 0.5}, 0.1, cm.baseline_from_errors({"a": 0.3}, 0.4))
    with pytest.raises(ValueError, match="among the baseline"):
        cm.mce({"fog": 0.5, "x": 0.1}, corruptions=["x"])


def test_errors_from_a_sweep_and_a_sweep_as_baseline():
    rows = []
    for model, top1 in (("mine", 0.9), ("other", 0.8)):
        for name in ("imagenet_c.fog", "imagenet_c.snow", "awgn"):
            rows.append({"model": model, "distortion": name, "level": None, "top1": top1})
            for s in (1, 2):
                rows.append({"model": model, "distortion": name, "level": float(s),
                             "top1": top1 - 0.1 * s})
    result = SweepResult(rows=rows)
    errors, clean = cm.errors_from_sweep(result, "mine")
    assert clean == pytest.approx(0.1)
    assert sorted(errors) == ["fog", "snow"]
    for name in errors:
        assert errors[name] == pytest.approx([0.2, 0.3])
    baseline = cm.baseline_from_errors(*cm.errors_from_sweep(result, "other"), name="other")
    # Mine: mean 0.25 per corruption; other: 0.35; CE = 0.25 / 0.35.
    assert cm.mce(errors, baseline) == pytest.approx(0.25 / 0.35)
    assert cm.relative_mce(errors, clean, baseline) == pytest.approx((0.25 - 0.1) / (0.35 - 0.2))
    with pytest.raises(ValueError, match="model must be one of"):
        cm.errors_from_sweep(result)

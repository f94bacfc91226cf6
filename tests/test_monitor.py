"""deepcorrect.DistortedAccuracy: accuracy against training seconds, and time_to_reach."""

from __future__ import annotations

import numpy as np
import pytest

import deepcorrect
import distort
from deepcorrect import monitor
from tests.test_training import small_cnn


def brute_force_top1(model, images, labels):
    pred = model.predict(np.asarray(images, np.float32), verbose=0)
    return float(np.mean(pred.argmax(-1) == labels))


def test_accuracy_matches_a_direct_computation(cifar10_small):
    x, y = cifar10_small[0][:40], cifar10_small[1][:40]
    model = small_cnn()
    cb = deepcorrect.DistortedAccuracy(x, y, "awgn", [10, 30], batch_size=16, seed=3)
    cb.set_model(model)
    expected = [brute_force_top1(model, x, y)] + [
        brute_force_top1(model, distort.apply(x, "awgn", level, seed=3), y) for level in (10, 30)]
    assert cb.columns == ["clean", "awgn@10", "awgn@30"]
    np.testing.assert_allclose(cb.evaluate(), expected, atol=1e-9)


def test_clock_counts_training_and_leaves_out_evaluations(monkeypatch, cifar10_small):
    x, y = cifar10_small[0][:8], cifar10_small[1][:8]
    clock = [0.0]
    monkeypatch.setattr(monitor.time, "perf_counter", lambda: clock[0])
    cb = deepcorrect.DistortedAccuracy(x, y, "gaussian_blur", [1], every=2, model=small_cnn())

    def slow_evaluate():  # each evaluation takes 100 s of wall time
        clock[0] += 100.0
        return [0.5, 0.25]

    monkeypatch.setattr(cb, "evaluate", slow_evaluate)
    cb.on_train_begin()
    for step in range(5):
        clock[0] += 1.0  # each training step takes 1 s
        cb.on_train_batch_end(step)
    cb.on_train_end()
    assert [r["step"] for r in cb.records] == [0, 2, 4, 5]
    assert [r["seconds"] for r in cb.records] == [0.0, 2.0, 4.0, 5.0]
    assert cb.records[-1]["mean"] == pytest.approx(0.375)


def test_records_through_train(cifar10_small):
    x, y = cifar10_small[0][:96], cifar10_small[1][:96]
    model = deepcorrect.wrap(small_cnn(), {"conv1": list(range(8))}, beta=0.5)
    cb = deepcorrect.DistortedAccuracy(x[:32], y[:32], "awgn", [20], every=2)
    deepcorrect.train(model, x, y, "awgn", [20], preset="cpu_quick", epochs=1, batch_size=32,
                      callbacks=[cb], verbose=0)
    assert [r["step"] for r in cb.records] == [0, 2, 3]
    seconds = [r["seconds"] for r in cb.records]
    assert seconds[0] == 0.0 and seconds == sorted(seconds) and seconds[-1] > 0
    # The last record is the trained model's accuracy.
    assert cb.records[-1]["accuracy"] == cb.evaluate()


def test_time_to_reach():
    records = [{"seconds": 0.0, "mean": 0.3}, {"seconds": 4.0, "mean": 0.6},
               {"seconds": 9.0, "mean": 0.8}]
    assert monitor.time_to_reach(records, 0.6) == 4.0
    assert monitor.time_to_reach(records, 0.3) == 0.0
    assert monitor.time_to_reach(records, 0.81) is None


@pytest.mark.parametrize("kwargs, word", [({"every": 0}, "every"), ({"batch_size": -1}, "batch_size"),
                                          ({"seed": -1}, "seed")])
def test_bad_arguments_name_themselves(kwargs, word, cifar10_small):
    x, y = cifar10_small[0][:4], cifar10_small[1][:4]
    with pytest.raises((ValueError, TypeError), match=word):
        deepcorrect.DistortedAccuracy(x, y, "awgn", [10], **kwargs)


def test_mismatched_labels_are_refused(cifar10_small):
    x, y = cifar10_small[0][:4], cifar10_small[1][:3]
    with pytest.raises(ValueError, match="one label each"):
        deepcorrect.DistortedAccuracy(x, y, "awgn", [10])

"""`distort.Distortion` and `distort.as_distortions`: one spec type for every entry point.

- Every accepted form (a name with levels, a `Distortion`, a dict name -> levels, a list of
  names, `Distortion`s and pairs) reads as the same `Distortion`s, checked once.
- The pipelines, `qrnet.paired_batches` and `deepcorrect.rank` give the same bytes for every
  form, and the bytes they gave before the spec type existed (hashes pinned from that code).
- Callables stay the escape hatch: `fn(images, level, seed)` for ranking,
  `distort_fn(images, seed)` for QRNet.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import distort
import qrnet
from deepcorrect.ranking.inputs import resolve_distortion
from distort import Distortion, as_distortions, pipeline
from tests.conftest import REPO

IMAGES = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
LABELS = np.arange(12) % 3


def _hash(arrays) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return digest.hexdigest()[:16]


def _flat(ds) -> list[np.ndarray]:
    return [t.numpy() for batch in ds for t in tf.nest.flatten(batch)]


# ---------------------------------------------------------------------------
# The type and the converter

AWGN = (Distortion("awgn", (10.0, 20.0)),)


@pytest.mark.parametrize("spec, levels", [
    ("awgn", [10, 20]),
    ("awgn", np.array([10.0, 20.0], np.float32)),
    (Distortion("awgn"), [10, 20]),
    (Distortion("awgn", [10, 20]), None),
    ({"awgn": [10, 20]}, None),
    ([("awgn", (10, 20))], None),
    (["awgn"], [10, 20]),
    ([Distortion("awgn", [10, 20])], None),
], ids=["name", "array levels", "bare Distortion", "Distortion", "dict", "pairs", "names",
        "Distortions"])
def test_every_form_reads_as_the_same_distortions(spec, levels):
    assert as_distortions(spec, levels) == AWGN


def test_order_options_and_several_distortions():
    found = as_distortions([("jpeg", [10]), Distortion("gaussian_blur", [1], {"border": "constant"})])
    assert [d.name for d in found] == ["jpeg", "gaussian_blur"]
    merged, = as_distortions(found[1], options={"window": "4sigma-1", "border": "reflect"})
    assert merged.options == {"border": "reflect", "window": "4sigma-1"}  # the given ones win


def test_distortion_is_frozen_hashable_and_round_trips_its_config():
    blur = Distortion("gaussian_blur", 2, {"window": "4sigma-1"})
    assert blur.levels == (2.0,)
    with pytest.raises(AttributeError):
        blur.name = "awgn"
    assert len({blur, Distortion("gaussian_blur", [2.0], {"window": "4sigma-1"})}) == 1
    config = json.loads(json.dumps(blur.to_config()))
    assert Distortion.from_config(config) == blur


def test_calling_a_distortion_is_apply_with_its_options():
    blur = Distortion("gaussian_blur", options={"window": "4sigma-1"})
    np.testing.assert_array_equal(
        blur(IMAGES, 2.0), distort.apply(IMAGES, "gaussian_blur", 2.0, window="4sigma-1"))
    noise = Distortion("awgn")
    np.testing.assert_array_equal(noise(IMAGES, 10.0), distort.apply(IMAGES, "awgn", 10.0, seed=0))


@pytest.mark.parametrize("make, error, message", [
    (lambda: Distortion("blurr"), ValueError, "name must be one of ['awgn', 'camera_shake'"),
    (lambda: as_distortions({"blurr": [1]}), ValueError, "Received: name='blurr'"),
    (lambda: Distortion("awgn", [10, -5]), ValueError,
     "levels must be a finite number >= 0.0. Received: levels=-5.0"),
    (lambda: Distortion("jpeg", [0]), ValueError, "levels must be a finite number [1.0, 100.0]"),
    (lambda: Distortion("awgn", ["ten"]), TypeError, "levels must be numbers"),
    (lambda: Distortion("gaussian_blur", options={"windw": 3}), TypeError,
     "options of 'gaussian_blur' must be among ['border', 'window']. Received: ['windw']"),
    (lambda: as_distortions({"awgn": [10]}, [20]), ValueError,
     "levels must be None when 'awgn' carries its own levels [10.0]"),
    (lambda: as_distortions({}), ValueError, "distortion must name at least one distortion"),
    (lambda: as_distortions(3), TypeError, "distortion must be a name, a Distortion"),
    (lambda: as_distortions([("awgn", [1], "x")]), TypeError, "each distortion must be a name"),
], ids=["name", "name in a dict", "level", "jpeg level", "not a number", "option",
        "levels twice", "empty", "type", "item"])
def test_errors_name_the_problem(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert message in str(info.value)


def test_unknown_name_is_worded_as_distort_words_it():
    with pytest.raises(ValueError) as ours:
        Distortion("fog")
    with pytest.raises(ValueError) as theirs:
        distort.apply(IMAGES, "fog", 1.0)
    assert str(ours.value) == str(theirs.value)


# ---------------------------------------------------------------------------
# Every entry point takes it, with the same bytes for every form


TWO = {"awgn": [10, 30], "gaussian_blur": [1, 2]}


@pytest.mark.parametrize("spec, levels, reference, reference_levels", [
    ({"gaussian_blur": [1, 2], "awgn": [10.0, 30.0]}, None, TWO, None),
    ([Distortion("awgn", [10, 30]), ("gaussian_blur", [1.0, 2.0])], None, TWO, None),
    ([Distortion("gaussian_blur", [1, 2]), Distortion("awgn", [10, 30])], None, TWO, None),
    (Distortion("awgn"), [10, 30], "awgn", [10, 30]),
    (Distortion("awgn", (10, 30)), None, "awgn", [10, 30]),
], ids=["dict", "mixed list", "Distortions", "Distortion and levels", "Distortion"])
def test_training_dataset_gives_the_same_bytes_for_every_form(spec, levels, reference,
                                                              reference_levels):
    want = _flat(pipeline.training_dataset(IMAGES, LABELS, reference, reference_levels,
                                           batch_size=4, seed=1))
    got = _flat(pipeline.training_dataset(IMAGES, LABELS, spec, levels, batch_size=4, seed=1))
    assert _hash(got) == _hash(want)


def test_pipeline_options_reach_the_distortion_either_way():
    by_keyword = pipeline.restoration_dataset(IMAGES, None, "gaussian_blur", [1.0, 1.5],
                                              batch_size=4, seed=2, window="4sigma-1")
    by_spec = pipeline.restoration_dataset(
        IMAGES, None, Distortion("gaussian_blur", [1.0, 1.5], {"window": "4sigma-1"}),
        batch_size=4, seed=2)
    assert _hash(_flat(by_keyword)) == _hash(_flat(by_spec))


def test_pipeline_refuses_a_name_twice():
    with pytest.raises(ValueError, match="distortion must name each distortion once"):
        pipeline.training_dataset(IMAGES, LABELS, [("awgn", [10]), ("awgn", [20])])


def test_evaluation_datasets_take_a_distortion_with_its_levels():
    by_name = pipeline.evaluation_datasets(IMAGES, LABELS, "awgn", [10, 20], batch_size=5, seed=4)
    by_spec = pipeline.evaluation_datasets(IMAGES, LABELS, Distortion("awgn", [10, 20]),
                                           batch_size=5, seed=4)
    assert list(by_name) == list(by_spec) == [None, 10.0, 20.0]
    for level in by_name:
        assert _hash(_flat(by_name[level])) == _hash(_flat(by_spec[level]))


def test_qrnet_takes_every_form_and_keeps_its_callables():
    def batches(spec):
        return _flat(qrnet.paired_batches(IMAGES, LABELS, spec, batch_size=4, seed=2))

    reference = batches({"awgn": [10, 20], "gaussian_blur": [1.0]})
    assert _hash(batches([("awgn", [10, 20]), ("gaussian_blur", [1])])) == _hash(reference)
    assert _hash(batches([Distortion("awgn", [10, 20]), Distortion("gaussian_blur", [1])])) \
        == _hash(reference)
    distort_fn = qrnet.resolve_distortions(lambda images, seed: images + 1.0)
    assert float(distort_fn(tf.zeros([1, 2, 2, 3]), tf.constant([0, 1], tf.int64))[0, 0, 0, 0]) == 1


def test_qrnet_checks_levels_and_names_through_the_spec():
    with pytest.raises(ValueError, match=r"Received: levels=-5.0"):
        qrnet.resolve_distortions({"awgn": [10.0, -5.0]})
    with pytest.raises(ValueError, match=r"Received: name='blurr'"):
        qrnet.resolve_distortions({"blurr": [1.0]})
    shift = qrnet.resolve_distortions({"shift": [-3.0]}, apply_fn=lambda x, name, level, seed: x + level)
    assert float(shift(tf.zeros([1, 2, 2, 3]), tf.constant([0, 1], tf.int64))[0, 0, 0, 0]) == -3.0


def test_ranking_takes_a_name_a_distortion_or_a_callable():
    name, fn = resolve_distortion("awgn")
    spec_name, spec_fn = resolve_distortion(Distortion("awgn", [10]))
    assert name == spec_name == "awgn"
    x = IMAGES.astype("float32")
    np.testing.assert_array_equal(fn(x, 10.0, 3), spec_fn(x, 10.0, 3))

    def custom(images, level, seed):
        return images

    assert resolve_distortion(custom) == ("custom", custom)
    with pytest.raises(ValueError, match="distortion must be one distortion"):
        resolve_distortion({"awgn": [10], "jpeg": [10]})


# ---------------------------------------------------------------------------
# The bytes of the code before the spec type: hashes computed with it, CPU, TF 2.21.

PINNED = {
    "train_table": "57bfb7e2aa20d6d4",
    "restore_epochs": "9caf5d604fb21d5d",
    "eval": "dab8ccc2dcbf62a7",
    "qrnet_pairs": "f7b4b964c807c534",
    "rank_fn": "3aeab5c5668fe3f6",
    "bound": "8366c9b7c40b2aed",
}


def pinned_hashes() -> dict[str, str]:
    """The hashes of `PINNED`, computed in this process."""
    table = {"gaussian_blur": [1, 2], "awgn": [10.0, 30.0], "camera_shake": [1.0], "combined": [2.0]}
    rank_fn = resolve_distortion("awgn")[1]
    blur = Distortion("gaussian_blur", options={"window": "4sigma-1"})
    got = {
        "train_table": _flat(pipeline.training_dataset(IMAGES, LABELS, table, batch_size=4, seed=1)),
        "restore_epochs": _flat(pipeline.restoration_dataset(
            IMAGES, None, "jpeg", [10, 30], batch_size=4, seed=3, epochs=3, initial_epoch=1)),
        "eval": [t for ds in pipeline.evaluation_datasets(
            IMAGES, LABELS, "awgn", [10, 20], batch_size=5, seed=4).values() for t in _flat(ds)],
        "qrnet_pairs": _flat(qrnet.paired_batches(
            IMAGES, LABELS, [("jpeg", [10]), ("awgn", [5.0, 15.0])], batch_size=4, seed=5,
            shuffle=False)),
        "rank_fn": [rank_fn(IMAGES.astype("float32"), 10.0, 3),
                    rank_fn(IMAGES.astype("float32"), 20.0, 4)],
        "bound": [blur(IMAGES, 2.0), blur(IMAGES, 1.0, 5)],
    }
    return {key: _hash(arrays) for key, arrays in got.items()}


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                    reason="hashes pinned from CPU kernels")
def test_outputs_are_byte_identical_to_the_code_before_the_spec_type():
    # In a new process: tf.data's seeded shuffle and random datasets also read TensorFlow's
    # global seed, which other tests of this process set.
    code = ("import json; from tests.test_distortion_spec import pinned_hashes; "
            "print(json.dumps(pinned_hashes()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == PINNED

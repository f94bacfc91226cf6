"""robustkit.preprocessing: keras.applications input conventions as functions and a layer."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest

from robustkit.preprocessing import APPLICATION_MODES, ImagePreprocessing, resolve


@pytest.mark.parametrize("family", sorted(APPLICATION_MODES))
def test_each_family_matches_its_keras_preprocess_input(family):
    try:
        module = importlib.import_module(f"keras.applications.{family}")
    except ImportError:
        pytest.skip(f"keras.applications has no {family}")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 3, 3, 3)).astype("float32")
    expected = module.preprocess_input(pixels.copy())
    np.testing.assert_allclose(np.asarray(resolve(family)(pixels)), expected, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ImagePreprocessing(family)(pixels)), expected, atol=1e-4)


def test_layer_in_a_saved_model_round_trips(tmp_path):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, ImagePreprocessing("caffe")(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    x = np.random.default_rng(1).uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)))


def test_configs_that_name_the_old_qrnet_layer_still_load():
    config = keras.saving.serialize_keras_object(ImagePreprocessing("tf"))
    config["registered_name"] = "qrnet>ImagePreprocessing"
    layer = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert isinstance(layer, ImagePreprocessing) and layer.mode == "tf"


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ValueError, match=r"preprocess must be None, a function, or one of .*'torch'"):
        resolve("imagenet")
    with pytest.raises(ValueError, match=r"mode must be one of .*'caffe'"):
        ImagePreprocessing("bgr")

"""Tests of the QRNet restorer architecture (qrnet/model.py)."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from qrnet import (
    PRESETS,
    CropToReference,
    ImagePreprocessing,
    QRNet,
    ReflectPadToMultiple,
    build_qrnet,
    paper_layer_count,
    qrnet_from_preset,
)


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


@pytest.mark.parametrize(
    "height, width, depth, small",
    [(17, 23, 2, False), (17, 23, 3, True), (16, 16, 2, False), (5, 3, 3, False), (1, 9, 2, True)],
)
def test_output_shape_equals_input_shape(height, width, depth, small):
    restorer = build_qrnet(base_width=4, depth=depth, small=small)
    restored = np.asarray(restorer(_images((2, height, width, 3)), training=False))
    assert restored.shape == (2, height, width, 3)
    assert restored.min() >= 0.0 and restored.max() <= 255.0


def test_static_odd_input_shape_is_kept():
    restorer = build_qrnet(input_shape=(17, 23, 3), base_width=4, depth=2)
    assert restorer.output_shape == (None, 17, 23, 3)
    assert restorer(_images((1, 17, 23, 3))).shape == (1, 17, 23, 3)


def test_dynamic_sizes_in_one_tf_function():
    restorer = build_qrnet(base_width=4, depth=2)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    run = tf.function(lambda x: restorer(x, training=False), input_signature=[spec])
    for size in [(7, 11), (16, 16), (19, 4)]:
        assert tuple(run(_images((1, *size, 3))).shape) == (1, *size, 3)


@pytest.mark.parametrize("small, expected", [(False, 34), (True, 25)])
def test_paper_layer_count_at_paper_depth(small, expected):
    # Table 1: 34 layers, input, concatenation and dropout included. Small QRNet drops one
    # conv in each of the 4 encoder stages, the bottleneck and the 4 decoder stages: 34 - 9.
    restorer = build_qrnet(base_width=4, depth=4, small=small)
    assert paper_layer_count(restorer) == expected
    kinds = [type(layer).__name__ for layer in restorer.layers]
    assert kinds.count("MaxPooling2D") == 4
    assert kinds.count("Conv2DTranspose") == 4
    assert kinds.count("Concatenate") == 4
    assert kinds.count("Dropout") == 2
    assert kinds.count("Conv2D") == (10 if small else 19)


def test_widths_initialisation_and_output_activation():
    restorer = build_qrnet(base_width=8, depth=3)
    assert restorer.get_layer("enc1_conv1").filters == 8
    assert restorer.get_layer("enc3_conv2").filters == 32
    assert restorer.get_layer("bottleneck_conv1").filters == 64
    assert restorer.get_layer("dec1_upconv").strides == (2, 2)
    assert restorer.get_layer("dec1_conv2").filters == 8
    for layer in restorer.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            assert isinstance(layer.kernel_initializer, keras.initializers.HeNormal)
    assert restorer.get_layer("output_conv").activation is keras.activations.sigmoid
    assert restorer.get_layer("enc3_dropout").rate == pytest.approx(0.2)
    assert restorer.get_layer("bottleneck_dropout").rate == pytest.approx(0.2)


def test_skip_connection_pairs_same_sized_tensors():
    restorer = build_qrnet(input_shape=(32, 32, 3), base_width=4, depth=3)
    for stage, size in [(1, 32), (2, 16), (3, 8)]:
        concat = restorer.get_layer(f"dec{stage}_concat")
        assert concat.output.shape[1:3] == (size, size)


def test_no_lambda_layers():
    restorer = build_qrnet(base_width=4, depth=2)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in restorer.layers)


def test_save_and_load_safe_mode_give_identical_outputs(tmp_path):
    restorer = build_qrnet(base_width=4, depth=2, small=True, name="restorer")
    # Move the weights away from their initial values so the check is not trivial.
    restorer.set_weights([w + 0.01 * np.sign(w) for w in restorer.get_weights()])
    path = str(tmp_path / "restorer.keras")
    restorer.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, QRNet)
    assert loaded.get_config() == restorer.get_config()
    images = _images((3, 17, 23, 3))
    np.testing.assert_array_equal(
        np.asarray(loaded(images, training=False)), np.asarray(restorer(images, training=False))
    )


@pytest.mark.parametrize("size, multiple", [(3, 4), (5, 16), (1, 8), (13, 4), (8, 8), (2, 16)])
def test_reflect_padding_matches_numpy_reflect(size, multiple):
    images = _images((1, size, size + 2, 2))
    padded = np.asarray(ReflectPadToMultiple(multiple)(images))
    pad_h = -size % multiple
    pad_w = -(size + 2) % multiple
    # A single row has nothing to reflect: it repeats (NumPy's "reflect" needs 2 or more).
    height_mode = "edge" if size == 1 else "reflect"
    expected = np.pad(images, ((0, 0), (0, pad_h), (0, 0), (0, 0)), mode=height_mode)
    expected = np.pad(expected, ((0, 0), (0, 0), (0, pad_w), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(padded, expected)


def test_crop_undoes_padding():
    images = _images((2, 7, 9, 3))
    padded = ReflectPadToMultiple(8)(images)
    np.testing.assert_array_equal(np.asarray(CropToReference()([padded, images])), images)


@pytest.mark.parametrize(
    "mode, keras_mode", [("caffe", "caffe"), ("torch", "torch"), ("symmetric", "tf")]
)
def test_image_preprocessing_matches_keras_applications(mode, keras_mode):
    images = _images((2, 4, 4, 3))
    expected = keras.applications.imagenet_utils.preprocess_input(images.copy(), mode=keras_mode)
    np.testing.assert_allclose(np.asarray(ImagePreprocessing(mode)(images)), expected, atol=1e-4)


def test_image_preprocessing_unit_and_none():
    images = _images((1, 3, 3, 3))
    np.testing.assert_allclose(np.asarray(ImagePreprocessing("unit")(images)), images / 255.0)
    np.testing.assert_array_equal(np.asarray(ImagePreprocessing("none")(images)), images)


def test_presets_build_with_overrides():
    for name, preset in PRESETS.items():
        restorer = qrnet_from_preset(name, base_width=2)
        assert restorer.depth == preset["config"]["depth"]
        assert restorer.small == preset["config"]["small"]
    assert paper_layer_count(qrnet_from_preset("qrnet_paper", base_width=2)) == 34


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth": 0}, "depth must be an integer in [1, 8]. Received: depth=0"),
        ({"base_width": 0}, "base_width must be an integer >= 1"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"input_shape": (32, 32)}, "input_shape must be"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_qrnet(**{"base_width": 4, "depth": 2, **kwargs})


def test_bad_preset_and_preprocessing_raise():
    with pytest.raises(ValueError, match="preset must be one of"):
        qrnet_from_preset("vgg")
    with pytest.raises(ValueError, match="mode must be one of"):
        ImagePreprocessing("bgr")
    with pytest.raises(ValueError, match="multiple must be an integer >= 1"):
        ReflectPadToMultiple(0)

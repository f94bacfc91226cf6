"""Tests for deepcorrect.export: a SavedModel for TF Serving, checked in a fresh process."""

import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deepcorrect.export import export, outputs_are_probabilities, resolve_preprocessing
from deepcorrect.surgery import wrap

SIZE = 16


def logits_cnn():
    keras.utils.set_random_seed(11)
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(6, 3, name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(7, name="logits"),
        ],
        name="tiny_classifier",
    )


def uint8_images(count=3, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# Runs in a fresh interpreter: loads the SavedModel with TensorFlow only and
# calls both signatures, plus inputs that must be refused.
LOAD_AND_RUN = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf

    path, inputs_file, outputs_file = sys.argv[1:4]
    data = np.load(inputs_file)
    model = tf.saved_model.load(path)
    images = model.signatures["serving_default"](images=tf.constant(data["images"]))
    encoded_files = sorted(f for f in os.listdir(os.path.dirname(inputs_file))
                           if f.startswith("encoded_"))
    encoded = tf.constant([open(os.path.join(os.path.dirname(inputs_file), f), "rb").read()
                           for f in encoded_files])
    from_bytes = model.signatures["serving_bytes"](image_bytes=encoded)
    errors = {}
    bad_inputs = {
        "float32": tf.constant(data["images"].astype("float32")),
        "wrong_size": tf.constant(data["images"][:, :8]),
        "two_channels": tf.constant(data["images"][..., :2]),
        "no_batch": tf.constant(data["images"][0]),
    }
    for name, bad in bad_inputs.items():
        try:
            model.signatures["serving_default"](images=bad)
            errors[name] = None
        except Exception as error:
            errors[name] = f"{type(error).__name__}: {error}"
    try:
        model.signatures["serving_bytes"](image_bytes=tf.constant([b"not an image"]))
        errors["junk_bytes"] = None
    except Exception as error:
        errors["junk_bytes"] = f"{type(error).__name__}: {error}"
    np.savez(outputs_file,
             probabilities=images["probabilities"].numpy(), top5=images["top5"].numpy(),
             bytes_probabilities=from_bytes["probabilities"].numpy(),
             bytes_top5=from_bytes["top5"].numpy())
    print(json.dumps(errors))
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A wrapped BN classifier exported with MobileNetV2 preprocessing, run in a fresh process."""
    base = logits_cnn()
    model = wrap(base, {"conv1": [4, 2, 0, 1, 3, 5]}, beta=0.5)
    rng = np.random.default_rng(3)
    for weight in model.get_layer("conv1_unit").trainable_weights:
        weight.assign(rng.normal(0, 0.2, weight.shape).astype("float32"))
    directory = tmp_path_factory.mktemp("export")
    path = export(model, directory / "serving", preprocess="mobilenet_v2")

    images = uint8_images()
    big = uint8_images(count=1, size=24, seed=5)[0]
    encoded = [encode(images[0], "PNG"), encode(images[1], "JPEG", quality=95),
               encode(big, "PNG")]
    np.savez(directory / "inputs.npz", images=images)
    for i, data in enumerate(encoded):
        (directory / f"encoded_{i}.bin").write_bytes(data)
    script = directory / "load_and_run.py"
    script.write_text(LOAD_AND_RUN)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, os.fspath(script), path, os.fspath(directory / "inputs.npz"),
         os.fspath(directory / "outputs.npz")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    outputs = dict(np.load(directory / "outputs.npz"))
    return {"model": model, "path": path, "images": images, "encoded": encoded,
            "big": big, "outputs": outputs, "errors": errors}


def keras_probabilities(model, pixels):
    inputs = keras.applications.mobilenet_v2.preprocess_input(np.array(pixels, "float32"))
    return tf.nn.softmax(model(inputs)).numpy()


def test_serving_default_matches_the_keras_model(exported):
    expected = keras_probabilities(exported["model"], exported["images"])
    outputs = exported["outputs"]
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-6)
    np.testing.assert_array_equal(
        outputs["top5"], np.argsort(-expected, axis=1, kind="stable")[:, :5])
    assert outputs["top5"].dtype == np.int32


def test_serving_bytes_decodes_png_jpeg_and_resizes(exported):
    outputs, model = exported["outputs"], exported["model"]
    # A PNG at the model's size is lossless: same result as the uint8 signature.
    np.testing.assert_allclose(outputs["bytes_probabilities"][0],
                               outputs["probabilities"][0], atol=1e-6)
    # A JPEG: decoders differ in their IDCT and chroma upsampling (PIL's and
    # libjpeg-turbo's fast path disagree by a few levels on noise), so the
    # reference decodes with TensorFlow's decoder, as a TF Serving client would.
    decoded = tf.io.decode_jpeg(exported["encoded"][1], channels=3).numpy()
    np.testing.assert_allclose(outputs["bytes_probabilities"][1],
                               keras_probabilities(model, decoded[None])[0], atol=1e-6)
    pil_decoded = np.asarray(Image.open(io.BytesIO(exported["encoded"][1])).convert("RGB"))
    assert np.abs(pil_decoded.astype(int) - decoded.astype(int)).mean() < 4
    # A larger PNG is resized (bilinear) to the model's input size.
    resized = tf.image.resize(exported["big"][None].astype("float32"), (SIZE, SIZE))
    np.testing.assert_allclose(outputs["bytes_probabilities"][2],
                               keras_probabilities(model, resized)[0], atol=1e-5)


@pytest.mark.parametrize("bad", ["float32", "wrong_size", "two_channels", "no_batch"])
def test_wrong_dtype_or_shape_gives_a_clear_error(exported, bad):
    error = exported["errors"][bad]
    assert error is not None and error.startswith("InvalidArgumentError")
    if bad == "float32":
        assert "uint8" in error
    else:
        assert "images must be uint8 [N, 16, 16, 3]" in error


def test_undecodable_bytes_give_a_clear_error(exported):
    assert "Unknown image file format" in exported["errors"]["junk_bytes"]


def test_saved_model_cli_lists_both_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed next to this Python")
    result = subprocess.run(
        [cli, "show", "--all", "--dir", exported["path"]],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    for expected in ("signature_def['serving_default']", "signature_def['serving_bytes']",
                     "inputs['images']", "inputs['image_bytes']", "DT_UINT8", "DT_STRING",
                     "outputs['probabilities']", "outputs['top5']", "(-1, 16, 16, 3)"):
        assert expected in text, expected


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe"])
def test_named_preprocessing_matches_keras_applications(mode):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    expected = keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode=mode)
    actual = resolve_preprocessing(mode)(tf.constant(pixels)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)


def test_model_family_names_resolve_to_their_modes():
    pixels = tf.constant([[0.0, 127.5, 255.0]])
    np.testing.assert_allclose(resolve_preprocessing("mobilenet_v2")(pixels), [[-1, 0, 1]])
    np.testing.assert_allclose(resolve_preprocessing(None)(pixels), pixels)
    np.testing.assert_allclose(resolve_preprocessing("none")(pixels), pixels)
    np.testing.assert_allclose(resolve_preprocessing("unit")(pixels), [[0, 0.5, 1]])


def test_unknown_preprocessing_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"preprocess must be None, a function, or one of .*'caffe'"):
        resolve_preprocessing("imagenet")


def test_softmax_detection_and_argument_errors(tmp_path):
    softmax_model = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(),
         keras.layers.Dense(3, activation="softmax")])
    assert outputs_are_probabilities(softmax_model)
    assert not outputs_are_probabilities(logits_cnn())
    with pytest.raises(ValueError, match="image_size must match"):
        export(softmax_model, tmp_path / "a", image_size=(8, 8))
    with pytest.raises(ValueError, match="3 channels last"):
        export(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(2)]), tmp_path / "b")
    fully_conv = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
                                   keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match="needs image_size"):
        export(fully_conv, tmp_path / "c")


def test_function_preprocessing_and_probability_outputs_in_process(tmp_path):
    keras.utils.set_random_seed(12)
    model = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3),
         keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    path = export(model, tmp_path / "serving", preprocess=lambda x: x / 255.0 - 0.5)
    restored = tf.saved_model.load(path)
    images = uint8_images(count=2)
    out = restored.signatures["serving_default"](images=tf.constant(images))
    expected = model(images.astype("float32") / 255.0 - 0.5).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)
    assert out["top5"].shape == (2, 3)  # fewer classes than 5: all of them


@pytest.mark.slow
def test_pretrained_mobilenet_v2_export(tmp_path):
    weights = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models",
                           "mobilenet_v2_1.0_224.weights.h5")
    if not os.path.exists(weights):
        pytest.skip("pretrained MobileNetV2 weights not available")
    model = keras.applications.MobileNetV2(weights=weights)
    path = export(model, tmp_path / "mobilenet", preprocess="mobilenet_v2")
    restored = tf.saved_model.load(path)
    images = uint8_images(count=2, size=224)
    out = restored.signatures["serving_default"](images=tf.constant(images))
    expected = model(keras.applications.mobilenet_v2.preprocess_input(
        images.astype("float32"))).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)

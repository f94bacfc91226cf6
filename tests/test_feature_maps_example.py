"""examples/feature_maps.py: per-layer change of conv outputs under blur and noise."""

from __future__ import annotations

import importlib.util
import json

import keras
import numpy as np
from PIL import Image
from scipy import ndimage

import distort
from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("feature_maps", REPO / "examples" / "feature_maps.py")
feature_maps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(feature_maps)


def tiny_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(4, 3, padding="valid", use_bias=False, name="first")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 3, strides=2, name="last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_relative_change_is_the_norm_ratio():
    clean = np.array([[3.0, 4.0], [1.0, 0.0]])
    noisy = np.array([[3.0, 4.0 + 5.0], [1.0, 2.0]])
    np.testing.assert_allclose(feature_maps.relative_change(clean, noisy), [1.0, 2.0])


def test_first_layer_change_matches_a_scipy_convolution(photos):
    model = tiny_cnn()
    extractor, names = feature_maps.feature_extractor(model)
    assert names == ["first", "last"]
    changes = feature_maps.layer_changes(extractor, None, photos, {"blur": ("gaussian_blur", 2.0)})
    kernel = np.asarray(model.get_layer("first").kernel)
    blurred = np.asarray(distort.apply(photos, "gaussian_blur", 2.0, seed=0)).astype("float64")

    def conv(images):  # valid cross-correlation, summed over input channels
        out = np.zeros((len(images), 62, 62, 4))
        for o in range(4):
            for c in range(3):
                out[..., o] += np.stack([ndimage.correlate(im[..., c], kernel[:, :, c, o],
                                                           mode="constant")[1:-1, 1:-1]
                                         for im in images])
        return out

    expected = feature_maps.relative_change(conv(photos.astype("float64")), conv(blurred)).mean()
    np.testing.assert_allclose(changes["blur"][0], expected, rtol=1e-4)


def test_script_writes_figure_and_summary(tmp_path, photos):
    data = tmp_path / "photos"
    for i, image in enumerate(photos):
        (data / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(data / f"class{i % 2}" / f"p{i}.png")
    model_path = tmp_path / "tiny.keras"
    tiny_cnn().save(model_path)
    out = tmp_path / "out"
    argv = ["--model", str(model_path), "--data", str(data), "--quick", "--out", str(out)]
    assert feature_maps.main(argv) == 0
    summary = json.loads((out / "feature_change.json").read_text())
    assert summary["images"] == 4 and summary["layers"] == ["first", "last"]
    assert summary["relative_change"]["awgn 50"][0] > summary["relative_change"]["gaussian_blur 4"][0]
    assert (out / "feature_maps.png").stat().st_size > 10_000
    assert feature_maps.main(argv) == 2  # refuses to overwrite

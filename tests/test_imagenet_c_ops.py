"""The ImageNet-C ops without the reference package: conventions, seeds, bad input, formulas.

`test_imagenet_c_fidelity.py` compares every corruption with the
`imagecorruptions` package; these tests hold without it: each op keeps the
shape and dtype conventions of `distort`, is reproducible (also across
processes), runs in `tf.data`, and several are checked against the published
formulas or an independent implementation (SciPy, Pillow, `colorsys`).
"""

from __future__ import annotations

import colorsys
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage, stats

import distort
from distort import imagenet_c, presets
from distort.imagenet_c import blur, common, constants, digital, noise, weather

REPO = Path(__file__).resolve().parents[1]
ALL = list(constants.ALL)


def frost_available() -> bool:
    try:
        weather.frost_folder()
    except FileNotFoundError:
        return False
    return True


def run(name, images, severity, seed=3):
    fn = imagenet_c.corruption(name)
    if name == "frost" and not frost_available():
        pytest.skip("the frost photos of the imagecorruptions package are not installed")
    return fn(images, severity, seed=seed) if imagenet_c.is_random(name) else fn(images, severity)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    # A smooth gradient with noise: every corruption changes it visibly.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    base = np.stack([yy * 5, xx * 4, 255 - yy * 5], -1)[None] + rng.normal(0, 20, [3, 40, 48, 3])
    return np.clip(base, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# Names, registry, presets
# ---------------------------------------------------------------------------
def test_every_corruption_is_registered_with_its_prefix():
    names = distort.names()
    for name in ALL:
        assert f"imagenet_c.{name}" in names
        assert distort.registry.level_range(f"imagenet_c.{name}") == (1.0, 5.0)
    # The seed papers' distortions of the same names stay what they were.
    for name in ("defocus_blur", "motion_blur", "gaussian_blur", "contrast"):
        assert distort.DISTORTIONS[name][0] is getattr(distort, name)
    assert len(presets.get("imagenet_c")) == 15 and len(presets.get("imagenet_c_extra")) == 4
    assert presets.levels("imagenet_c", "imagenet_c.fog") == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert imagenet_c.corruption_name("imagenet_c.fog") == "fog"


def test_severity_constants_are_the_references():
    # A few values of the reference's tables, and five severities everywhere.
    assert all(len(v) == 5 for v in constants.SEVERITIES.values())
    assert set(constants.SEVERITIES) == set(ALL)
    assert constants.SEVERITIES["shot_noise"] == (60, 25, 12, 5, 3)
    assert constants.SEVERITIES["glass_blur"][4] == (1.5, 4, 2)
    assert constants.SEVERITIES["jpeg_compression"] == (25, 18, 15, 10, 7)
    assert list(blur.zoom_factors(3)) == pytest.approx(np.arange(1, 1.21, 0.02).tolist())
    assert constants.ALEXNET_ERRORS["gaussian_noise"] == 0.886428
    assert len(constants.ALEXNET_ERRORS) == 15


# ---------------------------------------------------------------------------
# Conventions: shapes, dtypes, gray, single images, per-image severities, tf.data
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_conventions(images, name):
    y = run(name, images, 2)
    assert y.shape == images.shape and y.dtype == tf.uint8
    assert not np.array_equal(y.numpy(), images)
    single = run(name, images[0], 2)
    assert single.shape == images.shape[1:]
    yf = run(name, images.astype(np.float32), 2)
    assert yf.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(yf)) and float(tf.reduce_max(yf)) <= 255.0
    # Rounded floats give the uint8 result, up to float32 rounding at .5.
    assert np.abs(np.round(yf.numpy()) - y.numpy().astype(np.float32)).max() <= 1
    gray = run(name, images[..., :1], 2)
    assert gray.shape == images[..., :1].shape and gray.dtype == tf.uint8


@pytest.mark.parametrize("name", ALL)
def test_per_image_severities_are_each_images_own(images, name):
    severities = np.array([1, 3, 5])
    together = run(name, images, severities).numpy()
    for i, s in enumerate(severities):
        np.testing.assert_array_equal(together[i], run(name, images, int(s)).numpy()[i])


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur", "snow", "spatter", "fog",
                                  "elastic_transform", "glass_blur", "pixelate"])
def test_runs_in_tf_data_like_eagerly(images, name):
    fn = imagenet_c.corruption(name)
    kwargs = {"seed": 5} if imagenet_c.is_random(name) else {}
    ds = tf.data.Dataset.from_tensor_slices(images).batch(3).map(lambda x: fn(x, 4, **kwargs))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), fn(images, 4, **kwargs).numpy())
    # Through the registry and a sweep's pipeline, with a per-batch seed tensor.
    seed = tf.constant([5, 0], tf.int64)
    ds = distort.pipeline.evaluation_datasets(images, np.arange(3), f"imagenet_c.{name}", [4],
                                              batch_size=3, seed=5, include_clean=False)[4.0]
    np.testing.assert_array_equal(next(iter(ds))[0].numpy(),
                                  distort.apply(images, f"imagenet_c.{name}", 4, seed=seed).numpy())


RANDOM = [name for name in ALL if imagenet_c.is_random(name)]


@pytest.mark.parametrize("name", RANDOM)
def test_seeds_give_the_same_bytes_and_others_differ(images, name):
    a = run(name, images, 3, seed=11).numpy()
    np.testing.assert_array_equal(a, run(name, images, 3, seed=11).numpy())
    assert not np.array_equal(a, run(name, images, 3, seed=12).numpy())
    # Each image of a batch gets its own draws.
    same = np.repeat(images[:1], 2, 0)
    b = run(name, same, 3, seed=11).numpy()
    assert not np.array_equal(b[0], b[1])


DIGEST_SCRIPT = """
import hashlib, json, sys
import numpy as np
from distort import imagenet_c
rng = np.random.default_rng(0)
x = rng.integers(0, 256, [2, 36, 44, 3], dtype=np.uint8)
out = {}
for name in json.loads(sys.argv[1]):
    y = imagenet_c.corruption(name)(x, 3, seed=7).numpy()
    out[name] = hashlib.sha256(y.tobytes()).hexdigest()
print(json.dumps(out))
"""


def test_the_same_seed_gives_the_same_bytes_in_another_process():
    names = [n for n in RANDOM if n != "frost" or frost_available()]
    result = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT, json.dumps(names)],
                            capture_output=True, text=True, cwd=REPO, check=True)
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, [2, 36, 44, 3], dtype=np.uint8)
    for name in names:
        ours = imagenet_c.corruption(name)(x, 3, seed=7).numpy()
        assert hashlib.sha256(ours.tobytes()).hexdigest() == theirs[name], name


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("severity", [0, 6, 2.5, -1, float("nan"), [1, 7], [[1, 2]]])
def test_bad_severities_raise_a_value_error_naming_them(images, severity):
    with pytest.raises(ValueError, match="severity must be an integer in 1..5"):
        imagenet_c.fog(images, severity, seed=0)


@pytest.mark.parametrize("severity", [True, "3", None])
def test_non_numbers_raise_a_type_error(images, severity):
    with pytest.raises(TypeError, match="severity"):
        imagenet_c.contrast(images, severity)


def test_registry_checks_the_level_range():
    with pytest.raises(ValueError, match="severity must be an integer in 1..5"):
        distort.apply(np.zeros([1, 8, 8, 3], np.uint8), "imagenet_c.pixelate", 7)
    with pytest.raises(ValueError, match="must be among|must be one of"):
        distort.apply(np.zeros([1, 8, 8, 3], np.uint8), "imagenet_c.nope", 1)


def test_frost_without_the_reference_photos_says_so(monkeypatch):
    weather.frost_textures.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match="imagecorruptions"):
        weather.frost(np.zeros([1, 32, 32, 3], np.uint8), 1, seed=0)
    weather.frost_textures.cache_clear()


# ---------------------------------------------------------------------------
# Formulas and independent implementations
# ---------------------------------------------------------------------------
def flat(value: float, size: int = 128) -> np.ndarray:
    return np.full([1, size, size, 3], value, np.float32)


@pytest.mark.parametrize("severity", [1, 3])
def test_gaussian_noise_is_normal_with_the_published_sigma(severity):
    c = constants.SEVERITIES["gaussian_noise"][severity - 1]
    y = noise.gaussian_noise(flat(127.5), severity, seed=1).numpy()
    z = ((y - 127.5) / (255 * c)).ravel()
    z = z[np.abs(z) < 127.5 / (255 * c) - 1e-3]  # away from clipping (none at these levels)
    assert stats.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize("severity", [1, 5])
def test_shot_noise_is_poisson(severity):
    c = constants.SEVERITIES["shot_noise"][severity - 1]
    y = noise.shot_noise(flat(0.5 * 255), severity, seed=2).numpy()
    counts = np.round(y / 255 * c).astype(int).ravel()  # Poisson(0.5 c) counts, clipped at c
    lam = 0.5 * c
    observed = np.bincount(counts, minlength=c + 1)[: c + 1].astype(float)
    expected = stats.poisson.pmf(np.arange(c + 1), lam) * counts.size
    expected[-1] = stats.poisson.sf(c - 1, lam) * counts.size  # clipping gathers the tail
    keep = expected > 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_noise_sets_the_published_fraction(severity):
    c = constants.SEVERITIES["impulse_noise"][severity - 1]
    y = noise.impulse_noise(flat(100.0, 256), severity, seed=3).numpy()
    n = y.size
    for value in (0.0, 255.0):
        fraction = (y == value).mean()
        assert abs(fraction - c / 2) < 5 * np.sqrt(c / 2 * (1 - c / 2) / n)
    assert set(np.unique(np.round(y, 3)).tolist()) == {0.0, 100.0, 255.0}


def test_speckle_noise_scales_with_the_pixel():
    c = constants.SEVERITIES["speckle_noise"][0]
    y = noise.speckle_noise(flat(100.0), 1, seed=4).numpy()
    np.testing.assert_allclose(y.std(), 100.0 * c, rtol=0.02)
    assert stats.kstest(((y - 100) / (100 * c)).ravel(), "norm").pvalue > 1e-3
    assert noise.speckle_noise(flat(0.0), 5, seed=4).numpy().max() == 0


def test_contrast_brightness_saturate_formulas(images):
    x = images.astype(np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(digital.contrast(images.astype(np.float32), 2).numpy(),
                               np.clip((x - mean) * 0.3 + mean, 0, 255), atol=1e-3)
    # Black gains c on the HSV value: a gray of c * 255.
    assert np.all(digital.brightness(np.zeros([4, 4, 3], np.float32), 3).numpy() ==
                  pytest.approx(0.3 * 255, abs=1e-3))
    # Against Python's colorsys on a few pixels.
    pixels = images.reshape(-1, 3)[:50].astype(np.float64) / 255
    for severity in (1, 4):
        c = constants.SEVERITIES["brightness"][severity - 1]
        a, b = constants.SEVERITIES["saturate"][severity - 1]
        want_bright, want_sat = [], []
        for p in pixels:
            h, s, v = colorsys.rgb_to_hsv(*p)
            want_bright.append(colorsys.hsv_to_rgb(h, s, min(v + c, 1.0)))
            want_sat.append(colorsys.hsv_to_rgb(h, np.clip(s * a + b, 0, 1), v))
        got = digital.brightness((pixels * 255).astype(np.float32)[None, None], severity).numpy()
        np.testing.assert_allclose(got[0, 0], np.array(want_bright) * 255, atol=0.01)
        got = digital.saturate((pixels * 255).astype(np.float32)[None, None], severity).numpy()
        np.testing.assert_allclose(got[0, 0], np.array(want_sat) * 255, atol=0.01)


@pytest.mark.parametrize("severity", [1, 5])
def test_pixelate_and_jpeg_match_pillow(images, severity):
    image = images[0]
    c = constants.SEVERITIES["pixelate"][severity - 1]
    im = Image.fromarray(image)
    small = im.resize((int(48 * c), int(40 * c)), Image.BOX)
    want = np.asarray(small.resize((48, 40), Image.NEAREST))
    np.testing.assert_array_equal(digital.pixelate(image, severity).numpy(), want)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=constants.SEVERITIES["jpeg_compression"][severity - 1])
    want = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    np.testing.assert_array_equal(digital.jpeg_compression(image, severity).numpy(), want)


@pytest.mark.parametrize("severity", [1, 5])
def test_blurs_match_scipy(images, severity):
    x = images.astype(np.float32)
    sigma = constants.SEVERITIES["gaussian_blur"][severity - 1]
    want = ndimage.gaussian_filter(x[0].astype(np.float64), (sigma, sigma, 0), mode="nearest")
    np.testing.assert_allclose(blur.gaussian_blur(x, severity).numpy()[0], want, atol=0.01)
    kernel = blur.defocus_kernel(*constants.SEVERITIES["defocus_blur"][severity - 1])
    want = np.stack([ndimage.correlate(x[0, ..., c].astype(np.float64), kernel, mode="mirror")
                     for c in range(3)], -1)
    np.testing.assert_allclose(blur.defocus_blur(x, severity).numpy()[0],
                               np.clip(want, 0, 255), atol=0.06)
    # Zoom blur: the mean of SciPy zooms of centre crops.
    out = x[0].astype(np.float64) / 255
    acc = out.copy()
    for z in blur.zoom_factors(severity):
        rows, cols = int(np.ceil(40 / z)), int(np.ceil(48 / z))
        top, left = (40 - rows) // 2, (48 - cols) // 2
        zoomed = ndimage.zoom(out[top : top + rows, left : left + cols], (z, z, 1), order=1)
        acc += zoomed[:40, :48]
    want = np.clip(acc / (len(blur.zoom_factors(severity)) + 1), 0, 1) * 255
    np.testing.assert_allclose(blur.zoom_blur(x, severity).numpy()[0], want, atol=0.01)


def test_horizontal_motion_blur_is_a_one_sided_gaussian(images):
    radius, sigma = constants.SEVERITIES["motion_blur"][0]
    x = images[0].astype(np.float64)
    weights = np.exp(-np.arange(2 * radius + 1) ** 2 / (2 * sigma**2))
    weights /= weights.sum()
    want = sum(w * x[:, np.minimum(np.arange(48) + i, 47)] for i, w in enumerate(weights))
    got = blur.motion_blur(images[0].astype(np.float32), 1, angle=0.0).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)
    # At -90 degrees the line runs down the columns.
    got = blur.motion_blur(images[0].astype(np.float32), 1, angle=-90.0).numpy()
    want = sum(w * x[np.maximum(np.arange(40) - i, 0)] for i, w in enumerate(weights))
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_elastic_transform_matches_scipy_map_coordinates(images):
    from skimage.filters import gaussian

    rng = np.random.default_rng(5)
    u = rng.random([1, 2, 40, 48])
    x = images[0].astype(np.float64) / 255
    alpha = constants.SEVERITIES["elastic_transform"][4]
    limit = 40 * 0.005
    dx, dy = (gaussian(limit * (2 * u[0, k] - 1), (0.4, 0.48), mode="reflect", truncate=3) * alpha
              for k in range(2))
    yy, xx = np.mgrid[0:40, 0:48]
    want = np.stack([ndimage.map_coordinates(x[..., c], [yy + dy, xx + dx], order=1,
                                             mode="reflect") for c in range(3)], -1)
    got = digital.elastic_transform(images[0].astype(np.float32), 5, uniforms=u).numpy()
    np.testing.assert_allclose(got, np.clip(want, 0, 1) * 255, atol=0.05)


def test_plasma_fractal_is_periodic_and_spans_zero_to_one():
    draws = weather.plasma_draws(tf.constant([1, 2], tf.int64), 2, 64)
    maps = weather.plasma_fractal(draws, 2.0).numpy()
    assert maps.shape == (2, 64, 64)
    assert maps.min(axis=(1, 2)).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0)
    # The corner of every level keeps its value: the first point is the map's start.
    assert not np.allclose(maps[0], maps[1])


def test_line_offsets_are_the_references_taps():
    dy, dx = common.line_offsets(tf.constant([30.0]), 5)
    i = np.arange(5)
    np.testing.assert_array_equal(dy.numpy()[0], -np.ceil(i * np.sin(np.pi / 6) - 0.5))
    np.testing.assert_array_equal(dx.numpy()[0], -np.ceil(i * np.cos(np.pi / 6) - 0.5))

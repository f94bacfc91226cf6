"""Distortion ops against independent references (SciPy, NumPy, Pillow) on real photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

import distort
from distort import kernels


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def scipy_filter(images: np.ndarray, kernel: np.ndarray, mode: str = "reflect") -> np.ndarray:
    """Per-image, per-channel 2-D convolution with SciPy."""
    x = images.astype(np.float64)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[-1]):
            out[i, ..., c] = ndimage.convolve(x[i, ..., c], kernel.astype(np.float64), mode=mode, cval=0.0)
    return out


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kernel",
    [
        kernels.gaussian(0.5), kernels.gaussian(3.0), kernels.gaussian(2.0, "4sigma-1"),
        kernels.disk(0), kernels.disk(2.5), kernels.disk(8), kernels.box(1), kernels.box(4),
        kernels.box(8, 90), kernels.box(7, 30), kernels.random_walk(4, seed=2),
        kernels.camera_shake(seed=5),
    ],
)
def test_kernels_are_unit_sum_and_odd(kernel):
    assert kernel.dtype == np.float32
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert kernel.min() >= 0
    np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-5)


def test_gaussian_window_rules_match_the_papers():
    # DeepCorrect's cv2 window 4*sigma+1 and QRNet's 4*sigma-1 (7, 15, 23, 31, 39).
    assert [kernels.gaussian_window(s) for s in (0.5, 1, 2.5, 6)] == [3, 5, 11, 25]
    assert [kernels.gaussian_window(s, "4sigma-1") for s in (2, 4, 6, 8, 10)] == [7, 15, 23, 31, 39]


def test_gaussian_kernel_matches_closed_form():
    x = np.arange(-4, 5)
    g = np.exp(-(x**2) / (2 * 2.0**2))
    np.testing.assert_allclose(kernels.gaussian(2.0), np.outer(g, g) / np.outer(g, g).sum(), rtol=1e-5)


def test_disk_area_and_symmetry():
    k = kernels.disk(6)
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    np.testing.assert_allclose(k, k[::-1], atol=1e-7)
    # Anti-aliased: interior pixels carry the full weight 1 / (pi r^2).
    np.testing.assert_allclose(k[6, 6], 1 / (np.pi * 36), rtol=0.02)


def test_box_is_vasiljevic_line():
    np.testing.assert_allclose(kernels.box(3)[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(kernels.box(4)[2], [0.125, 0.25, 0.25, 0.25, 0.125], rtol=1e-6)
    np.testing.assert_allclose(kernels.box(5, 90), kernels.box(5).T, atol=1e-7)


def test_random_walk_kernels_depend_on_seed_only():
    np.testing.assert_array_equal(kernels.random_walk(4, seed=3), kernels.random_walk(4, seed=3))
    assert any(not np.array_equal(kernels.random_walk(4, seed=3), kernels.random_walk(4, seed=s))
               for s in range(4, 10))
    # Every step moves one pixel: the support is a connected path of at most 5 pixels.
    assert 2 <= np.count_nonzero(kernels.random_walk(4, seed=3)) <= 5


def test_camera_shake_is_a_centred_trajectory():
    k = kernels.camera_shake(seed=11)
    rows, cols = np.nonzero(k)
    cy, cx = (k.sum(1) * np.arange(17)).sum(), (k.sum(0) * np.arange(17)).sum()
    assert abs(cy - 8) < 1.0 and abs(cx - 8) < 1.0
    assert np.count_nonzero(k) > 10  # a path, not a dot
    assert not np.array_equal(k, kernels.camera_shake(seed=12))


# ---------------------------------------------------------------------------
# Blurs against SciPy
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.5, 1.5, 3.0])
@pytest.mark.parametrize("border", ["reflect", "constant"])
def test_gaussian_blur_matches_scipy(photos, sigma, border):
    x = photos.astype(np.float32)
    radius = kernels.gaussian_window(sigma) // 2
    ref = np.stack([
        np.stack([ndimage.gaussian_filter(x[i, ..., c].astype(np.float64), sigma, mode=border,
                                          truncate=(radius + 0.25) / sigma) for c in range(3)], -1)
        for i in range(len(x))
    ])
    got = distort.gaussian_blur(x, sigma, border=border).numpy()
    np.testing.assert_allclose(got, np.clip(ref, 0, 255), atol=2e-3)


def test_gaussian_blur_wider_than_the_image_still_reflects():
    x = np.random.default_rng(0).uniform(0, 255, [1, 8, 8, 1]).astype(np.float32)
    got = distort.gaussian_blur(x, 4.0).numpy()  # window 17 on an 8x8 image: the widest allowed
    ref = ndimage.convolve(x[0, ..., 0].astype(np.float64), kernels.gaussian(4.0).astype(np.float64),
                           mode="reflect")
    np.testing.assert_allclose(got[0, ..., 0], ref, atol=2e-3)
    with pytest.raises(ValueError, match=r"sigma=9.0 needs a 4\*sigma\+1 = 37-pixel window"):
        distort.gaussian_blur(x, 9.0)


@pytest.mark.parametrize(
    "name, level, kernel",
    [
        ("defocus_blur", 3.0, kernels.disk(3.0)),
        ("motion_blur_horizontal", 8, kernels.box(8)),
        ("motion_blur_vertical", 4, kernels.box(4, 90)),
    ],
)
def test_kernel_blurs_match_scipy(photos, name, level, kernel):
    x = photos.astype(np.float32)
    got = distort.apply(x, name, level).numpy()
    np.testing.assert_allclose(got, np.clip(scipy_filter(x, kernel), 0, 255), atol=2e-3)


@pytest.mark.parametrize("kernel", [
    kernels.gaussian(2.0),  # rank 1: two 1-D passes
    np.outer([1.0, 2, 3], [0, 1, 4, 1, 0]) / 36,  # rank 1, asymmetric, zero ends
    kernels.box(5, 30),  # dense 2-D
    np.pad(kernels.random_walk(3, seed=1), 2),  # sparse, with a zero rim to trim
], ids=["gaussian", "asymmetric-rank1", "oblique-box", "padded-walk"])
@pytest.mark.parametrize("border", ["reflect", "constant"])
def test_convolve_matches_scipy_on_every_kernel_path(photos, kernel, border):
    x = photos.astype(np.float32)
    got = distort.convolve(x, kernel, border=border).numpy()
    np.testing.assert_allclose(got, np.clip(scipy_filter(x, kernel, mode=border), 0, 255), atol=2e-3)


def test_per_image_levels_match_one_level_at_a_time(photos):
    x = photos.astype(np.float32)
    sigmas = np.array([0.0, 1.0, 2.5, 4.0], np.float32)
    got = distort.gaussian_blur(x, sigmas).numpy()
    for i, s in enumerate(sigmas):
        np.testing.assert_allclose(got[i], distort.gaussian_blur(x[i], float(s)).numpy(), atol=2e-3)


@pytest.mark.parametrize("name, level, make", [
    ("random_walk_blur", 4, lambda seed: kernels.random_walk(4, seed=seed)),
    ("camera_shake", 1, lambda seed: kernels.camera_shake(seed=seed)),
])
def test_random_blurs_use_one_kernel_per_image(photos, name, level, make):
    x = photos.astype(np.float32)
    y = distort.apply(x, name, level, seed=7).numpy()
    # Each output equals SciPy's convolution with its own random kernel: recover
    # the per-image seeds the op derives and check against them.
    seeds = distort.conventions.per_image_seeds(distort.conventions.seed_tensor(7), 4).numpy()
    for i in range(4):
        ref = scipy_filter(x[i : i + 1], make(int(seeds[i])))[0]
        np.testing.assert_allclose(y[i], np.clip(ref, 0, 255), atol=2e-3)


# SciPy's border names (ours) -> NumPy's.
NUMPY_PAD_MODES = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge",
                   "constant": "constant"}


@pytest.mark.parametrize("border", sorted(NUMPY_PAD_MODES))
@pytest.mark.parametrize("rows, cols", [((2, 3), (4, 0)), ((9, 1), (0, 12))])  # wider than 5x7
def test_pad_matches_numpy(border, rows, cols):
    x = np.arange(2 * 5 * 7 * 3, dtype=np.uint8).reshape(2, 5, 7, 3)
    want = np.pad(x, [(0, 0), rows, cols, (0, 0)], mode=NUMPY_PAD_MODES[border])
    np.testing.assert_array_equal(distort.convolution.pad(tf.constant(x), rows, cols, border).numpy(), want)


def dense_per_image(x: np.ndarray, stack: np.ndarray, border: str) -> np.ndarray:
    """Image i convolved with the whole of `stack[i]`: one dense depthwise convolution each."""
    half = stack.shape[1] // 2
    padded = np.pad(x.astype(np.float32), [(0, 0), (half, half), (half, half), (0, 0)],
                    mode=NUMPY_PAD_MODES[border])
    flipped = np.tile(stack[:, ::-1, ::-1, None, None], [1, 1, 1, x.shape[-1], 1])
    return np.concatenate([
        tf.nn.depthwise_conv2d(padded[i : i + 1], k, [1, 1, 1, 1], "VALID").numpy()
        for i, k in enumerate(flipped)
    ])


@pytest.mark.parametrize("border", ["reflect", "constant", "mirror", "nearest"])
def test_sparse_per_image_kernels_equal_the_dense_convolution(photos, border):
    # Per-image kernels run only over a window placed around each kernel's own nonzero taps
    # (3x2 of 9x9 here, at a different offset for each kernel); the outputs must be those
    # of the whole kernels.
    stack = np.stack([kernels.random_walk(4, seed=s) for s in range(4)])
    stack[3] = 0
    stack[3, 0, 7:] = 0.5  # in a corner: its window is pushed back inside the kernel
    window, rows, cols = distort.convolution.crop_kernels(stack[:, ::-1, ::-1])
    assert window.shape[1:] == (3, 2) and len(set(rows)) > 1 and len(set(cols)) > 1
    dense = np.clip(dense_per_image(photos, stack, border), 0, 255)
    got = distort.convolution.convolve_sparse(tf.constant(photos, tf.float32), stack, border).numpy()
    np.testing.assert_allclose(got, dense, rtol=0, atol=1e-4)
    got = distort.convolution.convolve_sparse(tf.constant(photos), stack, border).numpy()
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - np.round(dense)).max() <= 1


@pytest.mark.parametrize("name, level", [
    ("gaussian_blur", 0.0), ("awgn", 0.0), ("contrast", 0.0), ("defocus_blur", 0.0),
    ("motion_blur", 1), ("random_walk_blur", 0), ("camera_shake", 0), ("combined", 0.0),
])
def test_level_zero_is_identity(photos, name, level):
    np.testing.assert_array_equal(distort.apply(photos, name, level, seed=1).numpy(), photos)


# ---------------------------------------------------------------------------
# Noise and contrast
# ---------------------------------------------------------------------------
def test_awgn_statistics_and_seeds():
    flat = np.full([4, 64, 64, 3], 128.0, np.float32)
    y = distort.awgn(flat, 20.0, seed=3, clip=False).numpy() - 128.0
    assert abs(y.mean()) < 0.3
    assert abs(y.std() - 20.0) < 0.3
    # Independent per pixel and channel: neighbouring values are uncorrelated.
    assert abs(np.corrcoef(y[..., 0].ravel(), y[..., 1].ravel())[0, 1]) < 0.03
    same = distort.awgn(flat, 20.0, seed=3, clip=False).numpy() - 128.0
    np.testing.assert_array_equal(y, same)
    assert not np.array_equal(y, distort.awgn(flat, 20.0, seed=4, clip=False).numpy() - 128.0)


def test_awgn_clips_and_rounds_uint8(photos):
    y = distort.awgn(photos, 60, seed=0)
    assert y.dtype == tf.uint8
    z = distort.awgn(photos.astype(np.float32), 60, seed=0).numpy()
    np.testing.assert_array_equal(y.numpy(), np.round(z).astype(np.uint8))
    assert z.min() >= 0 and z.max() <= 255


def test_contrast_is_a_blend_with_mean_gray(photos):
    x = photos.astype(np.float64)
    lum = x @ np.array([0.299, 0.587, 0.114])
    gray = lum.reshape(len(x), -1).mean(1)[:, None, None, None]
    ref = 0.7 * x + 0.3 * gray
    np.testing.assert_allclose(distort.contrast(x.astype(np.float32), 0.3).numpy(), ref, atol=1e-3)
    flat = distort.contrast(photos, 1.0).numpy()
    assert all(len(np.unique(im)) <= 2 for im in flat)


# ---------------------------------------------------------------------------
# Codecs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("quality", [2, 10, 20, 75])
def test_jpeg_matches_pillow_psnr(photos, quality):
    ours = distort.jpeg(photos, quality).numpy()
    for i, im in enumerate(photos):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=quality)
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        assert abs(psnr(ours[i], im) - psnr(ref, im)) < 0.5


def test_jpeg_per_image_quality(photos):
    q = np.array([5, 10, 50, 95])
    got = distort.jpeg(photos, q).numpy()
    for i in range(4):
        np.testing.assert_array_equal(got[i], distort.jpeg(photos[i], int(q[i])).numpy())


def test_jpeg_accurate_dct_decodes_as_pillow(photos):
    # Pillow decodes with libjpeg's accurate integer DCT; the default (fast) DCT differs.
    quality = 10
    got = distort.jpeg(photos, quality, dct_method="INTEGER_ACCURATE").numpy()
    for i, im in enumerate(photos):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=quality)
        np.testing.assert_array_equal(got[i], np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    np.testing.assert_array_equal(distort.jpeg(photos, quality).numpy(),
                                  distort.jpeg(photos, quality, dct_method="INTEGER_FAST").numpy())
    with pytest.raises(ValueError, match="dct_method must be one of .*Received: dct_method='fast'"):
        distort.jpeg(photos, quality, dct_method="fast")


@pytest.mark.parametrize("backend", ["pillow", "glymur"])
def test_jpeg2000_reaches_the_target_psnr(photos, backend):
    if backend == "glymur" and not distort.glymur_available():
        pytest.skip("libopenjp2 not installed")
    achieved = []
    for target in (20, 26, 32, 38):
        y = distort.jpeg2000(photos, target, backend=backend).numpy()
        p = np.mean([psnr(a, b) for a, b in zip(y, photos)])
        # Within 0.5 dB of the target on average over the photos.
        assert abs(p - target) < 0.5, (target, p)
        achieved.append(p)
    assert achieved == sorted(achieved)


# ---------------------------------------------------------------------------
# Conventions: dtypes, shapes, graph mode, tf.data, seeds
# ---------------------------------------------------------------------------
ALL = [("gaussian_blur", 2.0), ("awgn", 30), ("contrast", 0.4), ("jpeg", 10), ("jpeg2000", 30),
       ("defocus_blur", 2.0), ("motion_blur", 5), ("random_walk_blur", 3), ("camera_shake", 1),
       ("combined", 4.0)]


@pytest.mark.parametrize("name, level", ALL)
def test_every_distortion_in_tf_function_and_tf_data(photos, name, level):
    eager = distort.apply(photos, name, level, seed=5).numpy()
    graph = tf.function(lambda im: distort.apply(im, name, level, seed=5))(tf.constant(photos))
    np.testing.assert_array_equal(graph.numpy(), eager)
    ds = tf.data.Dataset.from_tensors(photos).map(lambda b: distort.apply(b, name, level, seed=5))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), eager)
    single = distort.apply(photos[0], name, level, seed=5)
    assert single.shape == photos[0].shape and single.dtype == tf.uint8


@pytest.mark.parametrize("name, level", [a for a in ALL if distort.is_random(a[0])])
def test_random_distortions_seeded(photos, name, level):
    a = distort.apply(photos, name, level, seed=1).numpy()
    np.testing.assert_array_equal(a, distort.apply(photos, name, level, seed=1).numpy())
    assert not np.array_equal(a, distort.apply(photos, name, level, seed=2).numpy())


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3), h=st.integers(3, 20), w=st.integers(3, 20), c=st.sampled_from([1, 3]),
    dtype=st.sampled_from([np.uint8, np.float32]), case=st.sampled_from(ALL),
    seed=st.integers(0, 2**31 - 1),
)
def test_shapes_dtypes_ranges(n, h, w, c, dtype, case, seed):
    name, level = case
    x = np.random.default_rng(seed).uniform(0, 255, [n, h, w, c]).astype(dtype)
    # The shorter side a kernel blur needs: its kernel's half-width at this level.
    needed = {"gaussian_blur": 2 * level, "defocus_blur": level, "random_walk_blur": level,
              "combined": level, "motion_blur": (level - 1) / 2}.get(name, 0)
    if min(h, w) < needed:
        with pytest.raises(ValueError, match="for this image"):
            distort.apply(x, name, level, seed=seed)
        return
    y = distort.apply(x, name, level, seed=seed)
    assert y.shape == x.shape
    assert y.dtype.as_numpy_dtype == dtype
    y = y.numpy()
    assert y.min() >= 0 and y.max() <= 255
    if dtype == np.uint8:
        assert np.issubdtype(y.dtype, np.integer)


# ---------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda x: distort.gaussian_blur(x, -1.0), ValueError, "sigma"),
        (lambda x: distort.gaussian_blur(x, float("nan")), ValueError, "sigma"),
        (lambda x: distort.awgn(x, float("inf")), ValueError, "sigma"),
        (lambda x: distort.jpeg(x, 0), ValueError, "quality"),
        (lambda x: distort.jpeg(x, 101), ValueError, "quality"),
        (lambda x: distort.jpeg(x, 10.5), ValueError, "quality"),
        (lambda x: distort.jpeg2000(x, 5), ValueError, "psnr"),
        (lambda x: distort.jpeg2000(x, 30, backend="kakadu"), ValueError, "backend"),
        (lambda x: distort.contrast(x, 1.5), ValueError, "alpha"),
        (lambda x: distort.apply(x, "fog", 1), ValueError, "name"),
        (lambda x: distort.apply(x, "camera_shake", 3), ValueError, "level"),
        (lambda x: distort.gaussian_blur(x, 1.0, window=4), ValueError, "window"),
        (lambda x: distort.gaussian_blur(x, 1.0, border="wrap"), ValueError, "border"),
        (lambda x: distort.gaussian_blur(x, "big"), TypeError, "sigma"),
        (lambda x: distort.gaussian_blur(x[0, 0], 1.0), ValueError, "[N, H, W, C]"),
        (lambda x: distort.gaussian_blur(np.zeros([1, 8, 8, 4], np.uint8), 1.0), ValueError, "channels"),
        (lambda x: distort.gaussian_blur(np.zeros([0, 8, 8, 3], np.uint8), 1.0), ValueError, "empty"),
        (lambda x: distort.awgn(np.full([1, 4, 4, 3], np.nan, np.float32), 1.0), ValueError, "finite"),
        (lambda x: distort.presets.get("imagenet-c"), ValueError, "preset"),
    ],
)
def test_bad_arguments_name_the_argument(photos, call, error, fragment):
    with pytest.raises(error, match=None) as info:
        call(photos)
    assert fragment in str(info.value)


def test_jpeg2000_of_a_constant_image_is_returned_whole():
    # A constant image codes losslessly (infinite PSNR) at any target: the codec must still
    # return it, not fail for want of a "closest" round.
    import distort

    image = np.zeros([1, 16, 16, 3], np.uint8)
    out = np.asarray(distort.jpeg2000(image, 30))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).max() <= 1

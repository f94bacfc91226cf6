"""Compression distortions: JPEG (libjpeg, in the graph) and JPEG2000 (OpenJPEG).

Example:

>>> import numpy as np, distort
>>> images = np.random.default_rng(0).integers(0, 256, [2, 32, 32, 3], dtype=np.uint8)
>>> distort.jpeg(images, 10).shape
TensorShape([2, 32, 32, 3])
"""

from __future__ import annotations

import functools
import io

import numpy as np
import tensorflow as tf

from distort.conventions import cast_back, check_batch, check_levels

JPEG2000_BACKENDS = ("pillow", "glymur")
JPEG2000_PSNR_RANGE = (10.0, 80.0)


JPEG_DCT_METHODS = ("", "INTEGER_FAST", "INTEGER_ACCURATE")


def jpeg(images, quality, dct_method: str = ""):
    """JPEG compression at a libjpeg quality factor (Dodge & Karam: 2..20).

    Encodes and decodes every image with TensorFlow's libjpeg ops (4:2:0
    chroma subsampling, as libjpeg's default), inside the graph.

    Args:
        images: NHWC or HWC images, uint8 or float on 0..255, 1 or 3 channels.
        quality: Quality factor, an integer in 1..100; a number or one per image.
        dct_method: The decoder's inverse DCT (`tf.io.decode_jpeg`): "" (TensorFlow's
            default, the fast one), "INTEGER_FAST", or "INTEGER_ACCURATE" (Pillow's
            default, up to 3 grey levels away from the fast one).

    Returns:
        The decoded images, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> jpeg(np.zeros([8, 8, 3], np.uint8), 50).dtype
    tf.uint8
    """
    if dct_method not in JPEG_DCT_METHODS:
        raise ValueError(f"dct_method must be one of {JPEG_DCT_METHODS}. "
                         f"Received: dct_method={dct_method!r}")
    images, quality = check_levels(images, "quality", quality, 1, 100)
    if isinstance(quality, float) and quality != int(quality):
        raise ValueError(f"quality must be an integer in 1..100. Received: quality={quality}")
    x8, dtype, single = _uint8_batch(images)
    channels = x8.shape[-1] or 0

    def code(args):
        image, q = args
        data = tf.raw_ops.EncodeJpegVariableQuality(images=image, quality=q)
        return tf.image.decode_jpeg(data, channels=channels, dct_method=dct_method)

    if isinstance(quality, float):
        # One quality for the batch: no per-image quality tensor to carry along.
        q = tf.constant(int(round(quality)), tf.int32)
        y = tf.map_fn(lambda image: code((image, q)), x8, fn_output_signature=tf.uint8)
    else:
        qualities = tf.broadcast_to(tf.cast(tf.round(quality), tf.int32), tf.shape(x8)[:1])
        y = tf.map_fn(code, (x8, qualities), fn_output_signature=tf.uint8)
    return _back_from_uint8(tf.ensure_shape(y, x8.shape), dtype, single)


def _uint8_batch(images) -> tuple[tf.Tensor, tf.DType, bool]:
    """Validates images and returns them as a uint8 batch (float rounded and clipped)."""
    x, dtype, single = check_batch(images)
    if dtype != tf.uint8:
        x = cast_back(tf.cast(x, tf.float32), tf.uint8)
    return x, dtype, single


def _back_from_uint8(y: tf.Tensor, dtype: tf.DType, single: bool) -> tf.Tensor:
    """Casts a decoded uint8 batch back to the input's dtype (and single image)."""
    y = tf.cast(y, dtype) if dtype != tf.uint8 else y
    return y[0] if single else y


def jpeg2000(images, psnr, backend: str = "pillow"):
    """JPEG2000 compression with OpenJPEG at a target PSNR (Dodge & Karam: 20..40 dB).

    OpenJPEG's rate allocation targets the PSNR of each image
    (`opj_compress -q PSNR`); since it lands up to 1.5 dB low, the request is
    corrected by the measured miss (at most 4 encodes), which brings the
    achieved PSNR within about 0.3 dB of the target. Runs through `tf.numpy_function`, so it works
    in `tf.data` and `tf.function` but not inside an exported SavedModel.

    Args:
        images: NHWC or HWC images, uint8 or float on 0..255, 1 or 3 channels.
        psnr: Target PSNR in dB, in [10, 80]; a number or one per image.
        backend: "pillow" (default; Pillow's bundled OpenJPEG) or "glymur"
            (needs the system library `libopenjp2-7`).

    Returns:
        The decoded images, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> jpeg2000(np.zeros([16, 16, 3], np.uint8), 30).shape
    TensorShape([16, 16, 3])
    """
    images, psnr = check_levels(images, "psnr", psnr, *JPEG2000_PSNR_RANGE)
    encode = jpeg2000_codec(backend)
    x8, dtype, single = _uint8_batch(images)
    targets = tf.broadcast_to(tf.cast(psnr, tf.float32), tf.shape(x8)[:1])

    def run(batch, target):
        return np.stack([encode(im, float(t)) for im, t in zip(batch, target)])

    y = tf.numpy_function(run, [x8, targets], tf.uint8, stateful=False)
    return _back_from_uint8(tf.ensure_shape(y, x8.shape), dtype, single)


def jpeg2000_codec(backend: str = "pillow"):
    """One image's JPEG2000 round trip at a target PSNR, as `jpeg2000` runs it per image.

    The encoder is asked again until the decoded image is within 0.3 dB of the target
    (OpenJPEG's rate allocation lands up to 1.5 dB off), keeping the closest result.

    Args:
        backend: "pillow" (Pillow's OpenJPEG) or "glymur".

    Returns:
        `code(image, psnr) -> decoded image`, for a uint8 `[H, W, C]` image.

    Example:

    >>> import numpy as np
    >>> image = np.random.default_rng(0).integers(0, 256, [32, 32, 3], dtype=np.uint8)
    >>> jpeg2000_codec("pillow")(image, 30.0).shape
    (32, 32, 3)
    """
    if backend == "pillow":
        return functools.partial(_closed_loop, _pillow_jpeg2000)
    if backend == "glymur":
        if not glymur_available():
            raise ValueError(
                "backend='glymur' needs the OpenJPEG library libopenjp2 (Debian: "
                "apt-get install libopenjp2-7); use backend='pillow' instead"
            )
        return functools.partial(_closed_loop, _glymur_jpeg2000)
    raise ValueError(f"backend must be one of {JPEG2000_BACKENDS}. Received: backend={backend!r}")


def _closed_loop(code, image: np.ndarray, target: float, tolerance: float = 0.3,
                 max_rounds: int = 4) -> np.ndarray:
    """Re-asks OpenJPEG until the achieved PSNR is within `tolerance` dB of target.

    OpenJPEG's PSNR-driven rate allocation lands about 0.3 to 1.5 dB below the
    requested value on photos; each round shifts the request by the miss.
    Returns the closest result seen.
    """
    request, best, best_miss = target, None, np.inf
    for _ in range(max_rounds):
        out = code(image, request)
        miss = _psnr(out, image) - target
        if best is None or abs(miss) < best_miss:  # a lossless first round misses by inf
            best, best_miss = out, abs(miss)
        if abs(miss) <= tolerance or not np.isfinite(miss):
            break
        request = float(np.clip(request - miss, *JPEG2000_PSNR_RANGE))
    return best


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


def glymur_available() -> bool:
    """Whether glymur imports and finds the OpenJPEG library."""
    try:
        import glymur
    except ImportError:
        return False
    return glymur.version.openjpeg_version not in ("0.0.0", None, "")


def _pillow_jpeg2000(image: np.ndarray, psnr: float) -> np.ndarray:
    from PIL import Image

    squeeze = image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    buf = io.BytesIO()
    pil.save(buf, "JPEG2000", quality_mode="dB", quality_layers=[psnr], irreversible=True)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil.mode))
    return out[..., None] if squeeze else out


def _glymur_jpeg2000(image: np.ndarray, psnr: float) -> np.ndarray:
    """Encodes and decodes one HWC uint8 image with glymur at a target PSNR.

    Args:
        image: uint8 `[H, W, C]`, 1 or 3 channels.
        psnr: Target PSNR in dB.

    Returns:
        The decoded image, same shape.
    """
    import os
    import tempfile

    import glymur

    # OpenJPEG refuses more wavelet levels than the image has: at most
    # 1 + log2(short side), and its default of 6 needs 32 px.
    resolutions = max(1, min(6, int(np.log2(max(1, min(image.shape[:2])))) + 1))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.jp2")
        glymur.Jp2k(path, data=image[..., 0] if image.shape[-1] == 1 else image,
                    psnr=[psnr], irreversible=True, numres=resolutions)
        out = glymur.Jp2k(path)[:]
    return out.reshape(image.shape)

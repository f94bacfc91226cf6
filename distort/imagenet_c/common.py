"""What every ImageNet-C corruption shares: severities, seeds, colour handling, kernels.

A corruption is written once as `fn(x, severity, seed) -> y` on a float32 RGB
batch on the 0..1 scale, for one severity (a Python int, 1..5); `corrupt`
does the rest: it validates the images, the severity and the seed, runs
`fn`, clips, and casts back to the input's dtype (rounded for uint8). A 1-D
array of severities gives each image its own severity (every severity is
computed and each image keeps its own). Gray images (one channel) go through
the colour corruptions as three equal channels and come back as their
luminance (the reference's `rgb2gray` weights).

Example:

>>> import numpy as np
>>> from distort.imagenet_c import common
>>> common.check_severity(3)
3
"""

from __future__ import annotations

import math
import textwrap
from typing import Callable

import numpy as np
import tensorflow as tf

from distort.imagenet_c.constants import SEVERITIES
from distort.conventions import check_batch, from_float_batch, seed_tensor

RGB2GRAY = (0.2989, 0.5870, 0.1140)  # the reference's rgb2gray weights


def check_severity(severity):
    """Checks a severity: an integer 1..5, or a 1-D array/tensor of them.

    Args:
        severity: A Python or NumPy integer (or an integral float such as
            3.0, as sweeps pass levels), or one severity per image.

    Returns:
        The severity as a Python int, or an int32 vector.

    Raises:
        ValueError: If a severity is not an integer in 1..5.
        TypeError: If it is not a number.

    Example:

    >>> check_severity(2.0)
    2
    """
    if isinstance(severity, tf.Tensor) and not tf.executing_eagerly():
        # Inside a graph (tf.data): levels drawn by the pipeline; round and clip.
        return tf.clip_by_value(tf.cast(tf.round(tf.cast(severity, tf.float32)), tf.int32), 1, 5)
    value = severity.numpy() if isinstance(severity, tf.Tensor) else severity
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "iuf" or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"severity must be an integer in 1..5. Received: severity={severity!r}")
    if arr.ndim > 1:
        raise ValueError("severity must be an integer in 1..5 or a 1-D array of per-image "
                         f"severities. Received shape: {arr.shape}")
    flat = arr.reshape(-1).astype(np.float64)
    bad = [v for v in flat.tolist() if not (math.isfinite(v) and v == int(v) and 1 <= v <= 5)]
    if bad or flat.size == 0:
        shown = arr.item() if arr.ndim == 0 else arr.tolist()
        raise ValueError(f"severity must be an integer in 1..5. Received: severity={shown}")
    if arr.ndim == 0:
        return int(flat[0])
    return tf.constant(flat.astype(np.int32))


IMAGES_DOC = "NHWC or HWC images{}, uint8 or float on 0..255."
SEVERITY_DOC = "An integer 1..5, or one per image."


def corruption_doc(result: str, static: bool = False, **arguments: str) -> Callable:
    """Completes a corruption's docstring with the Args and Returns all corruptions share.

    The sections go before the docstring's `Raises:`, or else its `Example:`:
    `images` (with a static height and width if `static`), `severity`, then
    `arguments` in their order, and Returns: `result`, same shape and dtype.

    Args:
        result: What the corruption returns, such as "The blurred images".
        static: Whether the images need a static height and width.
        **arguments: The corruption's other arguments: name -> description.

    Returns:
        A decorator that completes the function's docstring and returns it.

    Example:

    >>> @corruption_doc("The same images", seed="Unused.")
    ... def identity(images, severity, seed=None):
    ...     \"\"\"Returns the images.
    ...
    ...     Example:
    ...     \"\"\"
    >>> import inspect
    >>> print(inspect.cleandoc(identity.__doc__))
    Returns the images.
    <BLANKLINE>
    Args:
        images: NHWC or HWC images, uint8 or float on 0..255.
        severity: An integer 1..5, or one per image.
        seed: Unused.
    <BLANKLINE>
    Returns:
        The same images, same shape and dtype.
    <BLANKLINE>
    Example:
    """
    entries = {"images": IMAGES_DOC.format(" with a static height and width" if static else ""),
               "severity": SEVERITY_DOC, **arguments}
    lines = ["Args:"]
    for name, text in entries.items():
        lines += textwrap.wrap(f"{name}: {text}", 92, initial_indent="    ",
                               subsequent_indent="        ")
    lines += ["", "Returns:", f"    {result}, same shape and dtype.", "", ""]
    sections = textwrap.indent("\n".join(lines), "    ").replace("    \n", "\n")

    def complete(fn: Callable) -> Callable:
        after = "    Raises:" if "    Raises:" in fn.__doc__ else "    Example:"
        head, tail = fn.__doc__.split(after, 1)
        fn.__doc__ = f"{head}{sections}{after}{tail}"
        return fn

    return complete


def params(name: str, severity: int):
    """Returns the reference's parameters of a corruption at a severity (1..5)."""
    return SEVERITIES[name][severity - 1]


def fold_seed(seed: tf.Tensor, k: int) -> tf.Tensor:
    """Derives an independent stateless seed number `k` from `seed` (shape [2])."""
    return tf.random.experimental.stateless_fold_in(seed, k)


def corrupt(images, severity, fn: Callable, seed=None, colour: bool = False,
            scale: float = 1.0) -> tf.Tensor:
    """Runs a corruption written for one severity on images of any kind.

    Args:
        images: NHWC or HWC images, uint8 or float on 0..255, 1 or 3 channels.
        severity: An integer 1..5 or one per image (see `check_severity`).
        fn: `fn(x, severity, seed) -> y`, x a float32 batch on 0..`scale`.
        seed: Seed of random corruptions (see `distort.conventions.seed_tensor`).
        colour: Whether `fn` needs RGB: gray images then go through it as
            three equal channels and come back as their luminance.
        scale: 1.0 (x on 0..1, as most reference corruptions) or 255.0.

    Returns:
        The corrupted images, same shape and dtype, clipped to 0..255.
    """
    severity = check_severity(severity)
    x, dtype, single = check_batch(images)
    x = tf.cast(x, tf.float32)
    x = x / (255.0 / scale) if scale != 255.0 else x
    gray = x.shape[-1] == 1
    if gray and colour:
        x = tf.tile(x, [1, 1, 1, 3])
    s = seed_tensor(seed)
    if isinstance(severity, int):
        y = fn(x, severity, s)
    else:
        per_image = tf.broadcast_to(severity, tf.shape(x)[:1])
        y = tf.zeros_like(x)
        for level in range(1, 6):
            mask = tf.reshape(tf.equal(per_image, level), [-1, 1, 1, 1])
            y = tf.where(mask, fn(x, level, s), y)
    y = tf.clip_by_value(y, 0.0, scale)
    if gray and colour:
        y = tf.tensordot(y, tf.constant(RGB2GRAY, tf.float32), [[3], [0]])[..., None]
    return from_float_batch(y * (255.0 / scale) if scale != 255.0 else y, dtype, single)


# ----------------------------------------------------------------------------
# Shifts, line kernels and Gaussian kernels shared by several corruptions
# ----------------------------------------------------------------------------
def clamp_pad(x: tf.Tensor, rows: int, cols: int) -> tf.Tensor:
    """Pads an NHWC batch by repeating its edge pixels (`rows`/`cols` on each side)."""
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    r = tf.clip_by_value(tf.range(-rows, h + rows), 0, h - 1)
    c = tf.clip_by_value(tf.range(-cols, w + cols), 0, w - 1)
    return tf.gather(tf.gather(x, r, axis=1), c, axis=2)


def line_offsets(angles: tf.Tensor, width: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The reference's motion-blur taps: per image and tap, the (dy, dx) of `shift`.

    Tap i of an image blurred at angle a (degrees) is the image shifted by
    `dy = -ceil(i sin(a) - 0.5)` rows and `dx = -ceil(i cos(a) - 0.5)` columns.

    Args:
        angles: `[N]` angles in degrees.
        width: Number of taps (2 * radius + 1).

    Returns:
        `(dy, dx)`, each int32 `[N, width]`.
    """
    a = tf.cast(angles, tf.float64) * (math.pi / 180.0)
    i = tf.range(width, dtype=tf.float64)[None, :]
    # The reference scales by width / hypot(width sin, width cos), which is 1 up to rounding.
    dy = -tf.math.ceil(i * tf.sin(a)[:, None] - 0.5)
    dx = -tf.math.ceil(i * tf.cos(a)[:, None] - 0.5)
    return tf.cast(dy, tf.int32), tf.cast(dx, tf.int32)


def motion_kernel_weights(radius: int, sigma: float) -> np.ndarray:
    """The reference's one-sided Gaussian tap weights (`getMotionBlurKernel`), float32."""
    i = np.arange(2 * radius + 1, dtype=np.float64)
    k = np.exp(-(i**2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    return (k / k.sum()).astype(np.float32)


@tf.function(jit_compile=True)
def _shift_sum(padded: tf.Tensor, starts_y: tf.Tensor, starts_x: tf.Tensor, weights: tf.Tensor,
               height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Sum over taps t of `weights[n, t] * padded[n, y_t : y_t + H, x_t : x_t + W]`, per image."""

    def one(args):
        image, ys, xs, ws = args
        out = tf.zeros(tf.stack([height, width, tf.shape(image)[-1]]), image.dtype)
        for t in range(weights.shape[1]):
            cut = tf.slice(image, tf.stack([ys[t], xs[t], 0]), tf.shape(out))
            out += ws[t] * cut
        return out

    return tf.map_fn(one, (padded, starts_y, starts_x, weights),
                     fn_output_signature=padded.dtype)


def line_blur(x: tf.Tensor, angles: tf.Tensor, radius: int, sigma: float) -> tf.Tensor:
    """The reference's `_motion_blur` on a batch, one angle per image.

    Sums the image shifted along the line (edge pixels repeated) with the
    one-sided Gaussian weights; taps that would shift by the image's size or
    more are dropped, as the reference stops there.

    Args:
        x: Float NHWC batch.
        angles: `[N]` angles in degrees.
        radius: The line has 2 * radius + 1 taps.
        sigma: Sigma of the tap weights.

    Returns:
        The blurred batch (not renormalised where taps were dropped).
    """
    width = 2 * radius + 1
    dy, dx = line_offsets(angles, width)
    shape = tf.shape(x)
    pad = width - 1
    weights = tf.constant(motion_kernel_weights(radius, sigma))[None, :]
    inside = tf.logical_and(tf.abs(dy) < shape[1], tf.abs(dx) < shape[2])
    # Once a tap leaves the image, the reference stops: later taps are dropped too.
    inside = tf.cast(tf.math.cumprod(tf.cast(inside, tf.int32), axis=1), tf.float32)
    weights = weights * inside
    # shifted(h, w) = x(clamp(h - dy), clamp(w - dx)), a window of the padded batch.
    starts_y = tf.clip_by_value(pad - dy, 0, 2 * pad)
    starts_x = tf.clip_by_value(pad - dx, 0, 2 * pad)
    padded = clamp_pad(x, pad, pad)
    return _shift_sum(padded, starts_y, starts_x, weights, shape[1], shape[2])


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """SciPy's `gaussian_filter` kernel: radius `int(truncate * sigma + 0.5)`, float64."""
    radius = int(truncate * float(sigma) + 0.5)
    i = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (i / sigma) ** 2)
    return k / k.sum()


def separable_filter(x: tf.Tensor, column: np.ndarray, row: np.ndarray, border: str) -> tf.Tensor:
    """Correlates every channel of an NHWC float batch with `outer(column, row)`.

    Args:
        x: Float NHWC batch.
        column: 1-D kernel along the rows (odd length).
        row: 1-D kernel along the columns (odd length).
        border: A border of `distort.convolution.pad` ("reflect" is SciPy's reflect,
            "nearest" repeats the edge, "mirror" is OpenCV's reflect-101).

    Returns:
        The filtered batch.
    """
    from distort.convolution import convolve_separable, fold, unfold

    return unfold(convolve_separable(fold(x), np.asarray(column, np.float32), border,
                                     np.asarray(row, np.float32)), tf.shape(x))


def gaussian_filter(x: tf.Tensor, sigma, border: str = "nearest", truncate: float = 4.0):
    """`scipy.ndimage.gaussian_filter` (scikit-image's `gaussian`) on every channel.

    Args:
        x: Float NHWC batch.
        sigma: One sigma, or `(sigma_rows, sigma_columns)`.
        border: "nearest" (scikit-image's default), "reflect" (SciPy's) or "mirror".
        truncate: Kernel radius in sigmas (`int(truncate * sigma + 0.5)` pixels).

    Returns:
        The blurred batch.
    """
    sy, sx = (sigma, sigma) if np.ndim(sigma) == 0 else sigma
    return separable_filter(x, gaussian_kernel_1d(sy, truncate), gaussian_kernel_1d(sx, truncate),
                            border)


def bilinear_taps(in_size: int, out_size: int, start: int, count: int):
    """SciPy `zoom(order=1)` sampling of `count` outputs from an input window.

    The window is `in_size` pixels starting at `start`, zoomed to `out_size`
    with aligned corners (SciPy's `grid_mode=False`): output i samples the
    window at `i * (in_size - 1) / (out_size - 1)`.

    Returns:
        `(lower, upper, fraction)`: NumPy index arrays into the full axis and
        the weight of `upper`.
    """
    step = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    coord = np.arange(count, dtype=np.float64) * step
    lower = np.clip(np.floor(coord).astype(np.int64), 0, in_size - 1)
    upper = np.clip(lower + 1, 0, in_size - 1)
    return lower + start, upper + start, (coord - np.floor(coord)).astype(np.float32)


def clipped_zoom(x: tf.Tensor, zoom: float, out_rows: int | None = None,
                 out_cols: int | None = None) -> tf.Tensor:
    """The reference's `clipped_zoom`: the centre crop of 1/zoom, zoomed back (bilinear).

    Args:
        x: Float NHWC batch with a static height and width.
        zoom: Zoom factor >= 1.
        out_rows: Rows to keep of the zoomed crop (default: the image's height).
        out_cols: Columns to keep (default: the image's width).

    Returns:
        The top-left `out_rows x out_cols` of the zoomed centre crop.
    """
    height, width = int(x.shape[1]), int(x.shape[2])
    axes = []
    for size, keep in ((height, out_rows), (width, out_cols)):
        crop = int(np.ceil(size / float(zoom)))
        top = (size - crop) // 2
        zoomed = int(round(crop * zoom))
        axes.append(bilinear_taps(crop, zoomed, top, min(keep or size, zoomed)))
    (r0, r1, rf), (c0, c1, cf) = axes
    rf = tf.constant(rf)[None, :, None, None]
    cf = tf.constant(cf)[None, None, :, None]
    rows = tf.gather(x, r0, axis=1) * (1 - rf) + tf.gather(x, r1, axis=1) * rf
    return tf.gather(rows, c0, axis=2) * (1 - cf) + tf.gather(rows, c1, axis=2) * cf


def zoomed_size(size: int, zoom: float) -> int:
    """Length of the reference's zoomed centre crop of an axis of `size` pixels."""
    return int(round(int(np.ceil(size / float(zoom))) * zoom))


def static_size(x: tf.Tensor, name: str) -> tuple[int, int]:
    """Returns a batch's static (height, width), or raises for unknown sizes."""
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None:
        raise ValueError(f"{name} needs images of a known height and width (static shapes); "
                         f"received shape {x.shape}")
    return int(h), int(w)

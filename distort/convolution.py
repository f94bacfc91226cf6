"""Convolution of image batches: borders, one kernel or one per image.

The kernel blurs of `distort.blur` (and the ImageNet-C blurs' padding) run on
these. A batch is convolved "folded": `[N, H, W, C]` becomes
`[1, H, W, N * C]` (`fold`), so that one depthwise convolution covers every
channel of every image and fills the SIMD registers that three channels would
leave mostly empty. Constant kernels are cropped to their nonzero part and, when
they are rank 1 (Gaussians, axis-aligned boxes), run as two 1-D passes
(`convolve_separable`). Per-image kernels are stacked (`stack_kernels`) and run
folded, or one image at a time around their few nonzero taps when they are
sparse (`convolve_sparse`).

Example:

>>> import numpy as np
>>> int(convolve(np.full([2, 8, 8, 3], 9, np.uint8), np.ones([3, 3]) / 9).numpy().max())
9
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from distort.conventions import cast_back, check_batch

BORDERS = ("reflect", "constant", "nearest", "mirror")


def _border_source(i: tf.Tensor, n: tf.Tensor, mode: str) -> tf.Tensor:
    """Maps indices `i` (any shape, any integers) of an axis of length `n` inside it."""
    if mode == "nearest":
        return tf.clip_by_value(i, 0, n - 1)
    if mode == "reflect":  # d c b a | a b c d | d c b a   (scipy "reflect")
        period = 2 * n
        m = tf.math.floormod(i, period)
        return tf.where(m >= n, period - 1 - m, m)
    # "mirror": d c b | a b c d | c b a   (scipy "mirror", cv2 REFLECT_101)
    period = tf.maximum(2 * n - 2, 1)
    m = tf.math.floormod(i, period)
    return tf.minimum(tf.where(m >= n, period - m, m), n - 1)


def pad(x: tf.Tensor, rows: tuple[int, int], cols: tuple[int, int],
        border: str = "reflect") -> tf.Tensor:
    """Pads an NHWC batch spatially.

    Args:
        x: An NHWC batch (any dtype).
        rows: Pixels to add (above, below).
        cols: Pixels to add (left, right).
        border: "reflect" (scipy's reflect, the default), "constant" (zeros,
            as the original DeepCorrect code's cv2 call), "nearest" or "mirror".

    Returns:
        The padded batch.

    Raises:
        ValueError: For an unknown border.

    Example:

    >>> import numpy as np
    >>> pad(tf.zeros([1, 4, 4, 3]), (1, 2), (0, 3), "mirror").shape
    TensorShape([1, 7, 7, 3])
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}. Received: border={border!r}")
    if border == "constant":
        return tf.pad(x, [[0, 0], list(rows), list(cols), [0, 0]])
    # Only the border strips are gathered; the image is copied whole, which is much faster
    # than gathering every column when the channels are few.
    for axis, (before, after) in ((1, rows), (2, cols)):
        n = tf.shape(x)[axis]
        head = tf.gather(x, _border_source(tf.range(-before, 0), n, border), axis=axis)
        tail = tf.gather(x, _border_source(tf.range(n, n + after), n, border), axis=axis)
        x = tf.concat([head, x, tail], axis)
    return x


def convolve(images, kernel, border: str = "reflect") -> tf.Tensor:
    """Convolves every channel of every image with a 2-D kernel.

    Args:
        images: Images (see `distort.conventions`).
        kernel: A 2-D kernel shared by the batch, or a 3-D `[N, k, k]` stack
            with one kernel per image.
        border: See `pad`.

    Returns:
        The filtered images, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> convolve(np.ones([1, 8, 8, 3], np.float32), np.ones([3, 3]) / 9).shape
    TensorShape([1, 8, 8, 3])
    """
    return apply_folded(images, lambda f, shape: convolve_folded(f, kernel, border, shape[3]))


def fold(x: tf.Tensor) -> tf.Tensor:
    """Folds a batch into channels: `[N, H, W, C]` -> `[1, H, W, N * C]`.

    Depthwise convolutions vectorise over channels, so three channels waste
    most of a SIMD register; N * C channels fill them.

    Args:
        x: An NHWC batch (any dtype).

    Returns:
        The folded batch, channel `n * C + c` holding channel c of image n.

    Example:

    >>> fold(tf.zeros([2, 5, 6, 3])).shape
    TensorShape([1, 5, 6, 6])
    """
    shape = tf.shape(x)
    return tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, shape[1], shape[2], shape[0] * shape[3]])


def unfold(y: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """Unfolds a folded batch: the inverse of `fold`.

    Args:
        y: A folded batch `[1, H, W, N * C]`.
        shape: The unfolded batch's shape `[N, H, W, C]` (e.g. `tf.shape(x)`).

    Returns:
        The NHWC batch.

    Example:

    >>> x = tf.random.uniform([2, 5, 6, 3])
    >>> bool(tf.reduce_all(unfold(fold(x), tf.shape(x)) == x))
    True
    """
    return tf.transpose(tf.reshape(y, [shape[1], shape[2], shape[0], shape[3]]), [2, 0, 1, 3])


def apply_folded(images, fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Runs a filter on images in the folded layout and casts the result back.

    `fn` gets the batch folded (see `fold`) in the input's dtype, so that
    folding and padding move uint8 bytes, and returns float32. The result is
    clipped and cast back (`distort.conventions.cast_back`) before unfolding.

    Args:
        images: Images (see `distort.conventions`).
        fn: `fn(folded, shape) -> float32 folded`, `shape` the unfolded batch's
            `[N, H, W, C]` as a tensor.

    Returns:
        The filtered images, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> blur = lambda f, shape: convolve_separable(f, np.ones([3], np.float32) / 3, "reflect")
    >>> apply_folded(np.zeros([2, 8, 8, 3], np.uint8), blur).dtype
    tf.uint8
    """
    x, dtype, single = check_batch(images)
    shape = tf.shape(x)
    y = cast_back(fn(fold(x), shape), dtype)
    y = unfold(y, shape)
    return y[0] if single else y


def convolve_folded(f: tf.Tensor, kernel, border: str, channels) -> tf.Tensor:
    """Convolves a folded batch with one kernel or one kernel per image.

    A constant 2-D kernel is cropped to its nonzero part first, and run as two
    1-D passes (`convolve_separable`) when it is rank 1 (Gaussians,
    axis-aligned boxes).

    Args:
        f: The folded batch `[1, H, W, N * C]` (see `fold`), uint8 or float
            (padded before the cast to float).
        kernel: A 2-D kernel shared by the batch or one `[N, k, k]` kernel per
            image (k odd), an array or a tensor.
        border: See `pad`.
        channels: C, the channels of each image.

    Returns:
        The convolved folded batch, float32 and not clipped.

    Example:

    >>> import numpy as np
    >>> f = fold(tf.ones([2, 8, 8, 3]))
    >>> convolve_folded(f, np.ones([3, 3]) / 9, "reflect", 3).shape
    TensorShape([1, 8, 8, 6])
    """
    if not isinstance(kernel, tf.Tensor):
        kernel = np.asarray(kernel, np.float32)
    if len(kernel.shape) == 2:
        static = _static_kernel(kernel)
        if static is not None:
            kernel = static
            factors = _factor(static)
            if factors is not None:
                # Rank 1 (axis-aligned boxes, Gaussians): two 1-D passes.
                return convolve_separable(f, factors[0], border, factors[1])
        kh, kw = kernel.shape
        if kh == 1 and kw == 1:
            return tf.cast(f, tf.float32) * kernel[0, 0]
        fp = _float(pad(f, (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), border))
        # Correlation with the flipped kernel is convolution.
        return _depthwise(fp, tf.reverse(tf.convert_to_tensor(kernel, tf.float32), [0, 1]))
    half = tf.shape(kernel)[1] // 2
    fp = _float(pad(f, (half, half), (half, half), border))
    k = tf.reverse(kernel, [1, 2])  # [n, k, k]
    k = tf.repeat(tf.transpose(k, [1, 2, 0]), channels, axis=2)[:, :, :, None]  # [k, k, n*c, 1]
    return tf.nn.depthwise_conv2d(fp, k, [1, 1, 1, 1], "VALID")


def convolve_separable(f: tf.Tensor, column: np.ndarray, border: str,
                       row: np.ndarray | None = None) -> tf.Tensor:
    """Convolves a folded batch with `outer(column, row)` as two 1-D passes.

    Args:
        f: The folded batch (see `fold`), uint8 or float.
        column: The vertical 1-D kernel, odd length.
        border: See `pad`.
        row: The horizontal 1-D kernel, odd length; defaults to `column`.

    Returns:
        The convolved folded batch, float32 and not clipped.

    Example:

    >>> import numpy as np
    >>> convolve_separable(tf.ones([1, 8, 8, 6]), np.ones([3], np.float32) / 3, "reflect").shape
    TensorShape([1, 8, 8, 6])
    """
    row = column if row is None else row
    rv, rh = len(column) // 2, len(row) // 2
    y = _float(pad(f, (rv, rv), (rh, rh), border) if rv or rh else f)
    # Vertical first, as before folding: the float sums, and so the outputs, stay identical.
    for k, taps in ((column, [-1, 1]), (row, [1, -1])):
        if len(k) > 1:
            y = _depthwise(y, tf.constant(np.reshape(k[::-1], taps), tf.float32))
        elif k[0] != 1:
            y = y * float(k[0])
    return y


def stack_kernels(make: Callable[[float, int], np.ndarray], levels, seeds) -> tf.Tensor:
    """Builds one kernel per image with NumPy, zero-padded to a common size.

    The common size is the widest nonzero extent among the kernels, so that no
    convolution runs over zero rims.

    Args:
        make: `make(level, seed) -> kernel`, an odd-sized square NumPy kernel
            (e.g. `lambda r, _: distort.kernels.disk(r)`).
        levels: One level per image, a float32 tensor `[N]`.
        seeds: One seed per image, an int64 tensor `[N]` (see
            `distort.conventions.per_image_seeds`).

    Returns:
        A float32 tensor `[N, k, k]`, k odd.

    Example:

    >>> from distort import kernels
    >>> stack_kernels(lambda r, _: kernels.disk(r), tf.constant([1.0, 2.0]),
    ...               tf.constant([0, 0], tf.int64)).shape
    TensorShape([2, 5, 5])
    """

    def build(levels_np, seeds_np):
        ks = [make(float(lv), int(sd)) for lv, sd in zip(levels_np, seeds_np)]
        # The common size is the widest nonzero extent: zero rims cost as much as weights.
        half = max(int(np.abs(np.argwhere(k) - k.shape[0] // 2).max(initial=0)) for k in ks)
        out = np.zeros([len(ks), 2 * half + 1, 2 * half + 1], np.float32)
        for i, k in enumerate(ks):
            c, r = k.shape[0] // 2, min(half, k.shape[0] // 2)
            out[i, half - r : half + r + 1, half - r : half + r + 1] = k[c - r : c + r + 1, c - r : c + r + 1]
        return out

    out = tf.numpy_function(build, [levels, seeds], tf.float32, stateful=False)
    out.set_shape([None, None, None])
    return out


def crop_kernels(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops `[N, k, k]` kernels to one window size that holds each kernel's nonzeros.

    Each kernel keeps its own window position, so sparse kernels off the centre (the
    random walks) shrink to a few taps.

    Args:
        stack: A NumPy array `[N, k, k]` of kernels.

    Returns:
        `(cropped, rows, cols)`: the kernels cropped to `[N, h, w]` (float32), and
        each window's first row and first column in its kernel (int32, `[N]`).

    Example:

    >>> import numpy as np
    >>> stack = np.zeros([2, 5, 5]); stack[0, 0, 1] = stack[1, 3, 3:] = 1
    >>> cropped, rows, cols = crop_kernels(stack)
    >>> cropped.shape, rows.tolist(), cols.tolist()
    ((2, 1, 2), [0, 3], [1, 3])
    """

    def extent(mask: np.ndarray) -> tuple[np.ndarray, int]:  # mask [N, k]
        first = np.where(mask.any(1), mask.argmax(1), 0)
        last = np.where(mask.any(1), mask.shape[1] - 1 - mask[:, ::-1].argmax(1), 0)
        size = int((last - first).max(initial=0)) + 1
        return np.minimum(first, mask.shape[1] - size).astype(np.int32), size

    nonzero = stack != 0
    rows, h = extent(nonzero.any(2))
    cols, w = extent(nonzero.any(1))
    row_index = rows[:, None, None] + np.arange(h)[None, :, None]
    col_index = cols[:, None, None] + np.arange(w)[None, None, :]
    cropped = stack[np.arange(len(stack))[:, None, None], row_index, col_index]
    return cropped.astype(np.float32), rows, cols


def convolve_sparse(x: tf.Tensor, kernel: tf.Tensor, border: str) -> tf.Tensor:
    """Convolves image i of an NHWC batch with `kernel[i]` (`[N, k, k]`, k odd).

    For sparse kernels such as the random walks (at most 5 nonzero weights in 9x9): the
    flipped kernels are cropped to one window size around each kernel's own nonzero
    weights (`crop_kernels`), each image is cut at its kernel's window position from the
    padded batch, and each is correlated with its small kernel on its own. For a batch of
    32 walks of 4 steps the window is about 4x5 taps instead of 9x9. Only zero weights
    are dropped, so the outputs are those of a dense convolution with the whole kernels
    (identical on the photos checked). Dense kernels are faster folded (`convolve_folded`).

    Args:
        x: An NHWC batch, uint8 or float.
        kernel: One kernel per image, `[N, k, k]` with k odd (a tensor or an array).
        border: See `pad`.

    Returns:
        The batch in its own dtype, clipped (and rounded for uint8) as
        `distort.conventions.cast_back` does; each image is cast back while it
        is still in the cache.

    Example:

    >>> import numpy as np
    >>> from distort import kernels
    >>> walks = np.stack([kernels.random_walk(3, seed=s) for s in range(2)])
    >>> convolve_sparse(tf.zeros([2, 16, 16, 3], tf.uint8), walks, "reflect").shape
    TensorShape([2, 16, 16, 3])
    """
    flipped = tf.reverse(tf.convert_to_tensor(kernel, tf.float32), [1, 2])  # correlation
    k, rows, cols = tf.numpy_function(crop_kernels, [flipped], [tf.float32, tf.int32, tf.int32],
                                      stateful=False)
    k.set_shape([None, None, None])
    rows.set_shape([None])
    cols.set_shape([None])
    half = tf.shape(kernel)[1] // 2
    shape = tf.shape(x)
    padded = pad(x, (half, half), (half, half), border)
    window = tf.stack([shape[1] + tf.shape(k)[1] - 1, shape[2] + tf.shape(k)[2] - 1, shape[3]])

    def one_image(args):
        image, row, col, taps = args
        cut = _float(tf.slice(image, tf.stack([row, col, 0]), window))
        taps = tf.tile(taps[:, :, None, None], [1, 1, shape[3], 1])
        return cast_back(tf.nn.depthwise_conv2d(cut[None], taps, [1, 1, 1, 1], "VALID")[0], x.dtype)

    return tf.map_fn(one_image, (padded, rows, cols, k),
                     fn_output_signature=tf.TensorSpec([None, None, None], x.dtype))


def _depthwise(folded: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """Correlates every channel of a folded batch with one `[kh, kw]` kernel (VALID)."""
    k = tf.tile(kernel[:, :, None, None], [1, 1, tf.shape(folded)[-1], 1])
    return tf.nn.depthwise_conv2d(folded, k, [1, 1, 1, 1], "VALID")


def _static_kernel(kernel) -> np.ndarray | None:
    """A constant odd-sized 2-D kernel cropped to its nonzero part (kept centred), or None."""
    k = tf.get_static_value(kernel) if isinstance(kernel, tf.Tensor) else kernel
    if k is None:
        return None
    k = np.asarray(k, np.float32)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0 or not np.any(k):
        return None
    rows, cols = np.nonzero(k)
    r = int(np.abs(rows - k.shape[0] // 2).max())
    c = int(np.abs(cols - k.shape[1] // 2).max())
    return k[k.shape[0] // 2 - r : k.shape[0] // 2 + r + 1, k.shape[1] // 2 - c : k.shape[1] // 2 + c + 1]


def _factor(k: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Splits a 2-D kernel into `(column, row)` 1-D kernels if it is rank 1, else None."""
    if k.shape[0] == 1:
        return np.ones([1], np.float32), k[0]
    if k.shape[1] == 1:
        return k[:, 0], np.ones([1], np.float32)
    u, s, vt = np.linalg.svd(k.astype(np.float64))
    if s[1] > 1e-7 * s[0]:
        return None
    col, row = u[:, 0] * np.sqrt(s[0]), vt[0] * np.sqrt(s[0])
    if np.abs(np.outer(col, row) - k).max() > 1e-6 * np.abs(k).max():
        return None
    return col.astype(np.float32), row.astype(np.float32)


def _float(x: tf.Tensor) -> tf.Tensor:
    """`x` as float32, without a cast when it is float32 already."""
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)

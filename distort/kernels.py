"""Blur kernels of the papers, as unit-sum NumPy arrays.

Every function returns a 2-D `float32` array that sums to 1, so users can
inspect and plot the point-spread functions that `distort.blur` applies.

Example:

>>> from distort import kernels
>>> k = kernels.gaussian(2.0)
>>> k.shape, round(float(k.sum()), 6)
((9, 9), 1.0)
"""

from __future__ import annotations

import math

import numpy as np

from robustkit.checks import check_level
from robustkit.seeds import check_seed

WINDOW_RULES = {
    # Name -> function of sigma giving the odd window size.
    # "4sigma+1": cv2.GaussianBlur(ksize=4*sigma+1), as the DeepCorrect code did
    # and as Dodge & Karam's "window of 4 sigma" reads for an odd window.
    "4sigma+1": lambda sigma: 2 * int(round(2 * sigma)) + 1,
    # "4sigma-1": QRNet's "four times minus one of sigma" (7, 15, ..., 39).
    "4sigma-1": lambda sigma: max(1, 2 * int(round(2 * sigma)) - 1),
    # "8sigma+1": SciPy's default truncation at 4 standard deviations per side.
    "8sigma+1": lambda sigma: 2 * int(round(4 * sigma)) + 1,
}

# Rule name -> (a, b): the window is about a * sigma + b pixels wide (before rounding to
# an odd size); `distort.blur.gaussian_blur` bounds sigma with it.
WINDOW_WIDTHS = {"4sigma+1": (4, 1), "4sigma-1": (4, -1), "8sigma+1": (8, 1)}


def gaussian_window(sigma: float, window: str | int = "4sigma+1") -> int:
    """Returns the odd window size of a Gaussian kernel.

    Args:
        sigma: Standard deviation in pixels, >= 0.
        window: A rule name from `WINDOW_RULES` ("4sigma+1" by default, the
            DeepCorrect code; "4sigma-1" for QRNet; "8sigma+1" for SciPy's
            truncation) or an explicit odd size.

    Returns:
        The window size, an odd integer >= 1.

    Example:

    >>> gaussian_window(2.0), gaussian_window(2.0, "4sigma-1"), gaussian_window(2.0, 5)
    (9, 7, 5)
    """
    check_level("sigma", sigma)
    if isinstance(window, str):
        if window not in WINDOW_RULES:
            raise ValueError(
                f"window must be one of {sorted(WINDOW_RULES)} or an odd integer >= 1. "
                f"Received: window={window!r}"
            )
        return WINDOW_RULES[window](sigma)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise TypeError(f"window must be a rule name or an odd integer. Received: window={window!r}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 1. Received: window={window}")
    return int(window)


def gaussian_1d(sigma: float, window: str | int = "4sigma+1") -> np.ndarray:
    """Returns a sampled, normalised 1-D Gaussian (the separable factor).

    Args:
        sigma: Standard deviation in pixels, >= 0 (0 gives the identity `[1]`).
        window: See `gaussian_window`.

    Returns:
        A 1-D float32 array of odd length summing to 1.

    Example:

    >>> gaussian_1d(1.0).shape
    (5,)
    """
    size = gaussian_window(sigma, window)
    if sigma == 0 or size == 1:
        return np.ones([1], np.float32)
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def gaussian(sigma: float, window: str | int = "4sigma+1") -> np.ndarray:
    """Returns a 2-D isotropic Gaussian kernel (Dodge & Karam, DeepCorrect, QRNet).

    Args:
        sigma: Standard deviation in pixels, >= 0.
        window: See `gaussian_window`.

    Returns:
        A square float32 array summing to 1.

    Example:

    >>> gaussian(1.0).shape
    (5, 5)
    """
    g = gaussian_1d(sigma, window).astype(np.float64)
    return np.outer(g, g).astype(np.float32)


def disk(radius: float, supersample: int = 8) -> np.ndarray:
    """Returns an anti-aliased uniform disk: defocus blur (Zhou; Vasiljevic).

    Each pixel's weight is the fraction of its area inside the circle of the
    given radius, estimated on a `supersample` x `supersample` sub-grid.

    Args:
        radius: Disk radius in pixels, >= 0 (0 gives the identity).
        supersample: Sub-samples per pixel side for the area estimate, >= 1.

    Returns:
        A square float32 array of size 2 * ceil(radius) + 1 summing to 1.

    Example:

    >>> disk(2).shape
    (5, 5)
    """
    check_level("radius", radius)
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1. Received: supersample={supersample}")
    half = int(math.ceil(radius - 1e-9)) if radius > 0 else 0
    if radius < 0.5:
        # Below half a pixel the disk covers only the centre pixel's area.
        return np.ones([1, 1], np.float32)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(-half, half + 1, dtype=np.float64)
    xs = (grid[:, None] + offsets[None, :]).reshape(-1)
    inside = (xs[:, None] ** 2 + xs[None, :] ** 2) <= radius**2
    n = 2 * half + 1
    area = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    return (area / area.sum()).astype(np.float32)


def box(length: int, angle: float = 0.0) -> np.ndarray:
    """Returns a one-pixel-wide line of uniform weight: linear motion blur.

    `angle=0` is Vasiljevic's horizontal box, `angle=90` the vertical one. Other
    angles draw an anti-aliased line (bilinear splatting of dense samples).

    Args:
        length: Line length in pixels, >= 1 (1 gives the identity).
        angle: Direction in degrees, counter-clockwise from horizontal.

    Returns:
        A square float32 array of odd size summing to 1.

    Example:

    >>> box(3)
    array([[0.        , 0.        , 0.        ],
           [0.33333334, 0.33333334, 0.33333334],
           [0.        , 0.        , 0.        ]], dtype=float32)
    """
    check_level("length", length)
    if length < 1:
        raise ValueError(f"length must be >= 1. Received: length={length}")
    length = int(round(length))
    if not np.isfinite(angle):
        raise ValueError(f"angle must be finite. Received: angle={angle}")
    size = length if length % 2 == 1 else length + 1
    c = (size - 1) / 2
    a = math.radians(angle)
    # Integrate the segment [-length/2, length/2] over the pixel grid: the
    # midpoints of fine sub-segments go to their nearest pixel, so an
    # axis-aligned even box gets half-weight ends ([.5, 1, 1, 1, .5] / 4).
    n = 64 * length
    t = -length / 2 + (np.arange(n) + 0.5) * (length / n)
    rows = np.clip(np.round(c - t * math.sin(a)).astype(int), 0, size - 1)
    cols = np.clip(np.round(c + t * math.cos(a)).astype(int), 0, size - 1)
    k = np.zeros([size, size], np.float64)
    np.add.at(k, (rows, cols), 1.0)
    return (k / k.sum()).astype(np.float32)


def random_walk(size: float, seed: int = 0) -> np.ndarray:
    """Returns Zhou et al.'s random-walk motion kernel.

    Starting at the centre, the walk takes `round(size)` steps of one pixel in
    a random direction (up, down, left or right); every visited position gets
    one unit of weight.

    Args:
        size: Number of steps, >= 0 (Zhou samples it from [0, 4]).
        seed: Seed of the walk, an integer in `[0, 2**31 - 1]`.

    Returns:
        A square float32 array of size 2 * round(size) + 1 summing to 1.

    Example:

    >>> random_walk(3, seed=1).shape
    (7, 7)
    """
    check_level("size", size)
    steps = int(round(size))
    rng = np.random.default_rng(check_seed(seed))
    moves = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]])[rng.integers(0, 4, steps)]
    path = np.concatenate([np.zeros([1, 2], int), np.cumsum(moves, axis=0)]) + steps
    k = np.zeros([2 * steps + 1, 2 * steps + 1], np.float64)
    np.add.at(k, (path[:, 0], path[:, 1]), 1.0)
    return (k / k.sum()).astype(np.float32)


def camera_shake(seed: int = 0, grid: int = 15, size: int = 17, points: int = 6) -> np.ndarray:
    """Returns a camera-shake kernel as Vasiljevic et al. generate them.

    Six control points are drawn on a 15 x 15 grid, joined by a Catmull-Rom
    spline, and the trajectory is drawn with an intensity that varies smoothly
    along it (a random positive weight per control point, interpolated). The
    trajectory's centroid is moved to the centre of a 17 x 17 kernel.

    Args:
        seed: Seed of the trajectory, an integer in `[0, 2**31 - 1]`.
        grid: Side of the grid the control points are drawn on.
        size: Side of the output kernel (odd, >= grid).
        points: Number of control points, >= 2.

    Returns:
        A `size` x `size` float32 array summing to 1.

    Example:

    >>> camera_shake(seed=3).shape
    (17, 17)
    """
    seed = check_seed(seed)
    if points < 2:
        raise ValueError(f"points must be >= 2. Received: points={points}")
    if size % 2 == 0 or size < grid:
        raise ValueError(f"size must be odd and >= grid={grid}. Received: size={size}")
    rng = np.random.default_rng(seed)
    ctrl = rng.uniform(0, grid - 1, size=(points, 2))
    weight = rng.uniform(0.25, 1.0, size=points)
    # Catmull-Rom through the control points, with the ends duplicated.
    p = np.concatenate([ctrl[:1], ctrl, ctrl[-1:]])
    w = np.concatenate([weight[:1], weight, weight[-1:]])
    t = np.linspace(0.0, 1.0, 256, endpoint=False)[:, None]
    # Every segment at once: p0..p3 are [segments, 1, 2], the curve [segments, 256, 2].
    p0, p1, p2, p3 = (p[i : i + points - 1, None] for i in range(4))
    curve = 0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                   + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
    intensity = w[1:points, None] + (w[2 : points + 1] - w[1:points])[:, None] * t[:, 0]
    curve, intensity = curve.reshape(-1, 2), intensity.reshape(-1)
    # Weight by the distance travelled, so slow segments are not over-exposed
    # by the sampling, then let the intensity vary along the path.
    speed = np.linalg.norm(np.gradient(curve, axis=0), axis=1) + 1e-6
    centroid = (curve * (speed * intensity)[:, None]).sum(0) / (speed * intensity).sum()
    curve = np.clip(curve - centroid + (size - 1) / 2, 0, size - 1)
    k = np.zeros([size, size], np.float64)
    _splat(k, curve[:, 0], curve[:, 1], speed * intensity)
    return (k / k.sum()).astype(np.float32)


def _splat(kernel: np.ndarray, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> None:
    """Adds weighted points to `kernel` with bilinear interpolation, in place."""
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    n = kernel.shape[0]
    index, values = [], []
    for dr, dc, wt in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        r = np.minimum(np.maximum(r0 + dr, 0), n - 1)
        c = np.minimum(np.maximum(c0 + dc, 0), n - 1)
        index.append(r * kernel.shape[1] + c)
        values.append(weights * wt)
    # One bincount adds the corners in the same order as successive np.add.at calls.
    kernel += np.bincount(np.concatenate(index), np.concatenate(values),
                          minlength=kernel.size).reshape(kernel.shape)

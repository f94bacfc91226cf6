"""Evaluation of restorers: accuracy per distortion and level, PSNR, SSIM, timing.

For every distortion and level the test images are distorted once (seeded), then
classified directly ("classifier" rows) and after each restorer (one row per restorer).
Each row also holds the PSNR and SSIM, against the clean images, of what the classifier
saw: the distorted images or the restored ones (Table 5 and Fig. 7 of the paper).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from qrnet.inference import Preprocessing, resolve_preprocessing, restore

__all__ = [
    "LEVEL_PRESETS",
    "apply_with_options",
    "average_over_levels",
    "classify",
    "distort_images",
    "evaluate_restoration",
    "format_table",
    "image_quality",
    "preset_distortions",
    "seconds_per_image",
    "top_classes",
]

# Distortion levels and options. "qrnet" is Section IV-A of the paper (images around 224 px,
# blur window "4 sigma - 1"). "qrnet_32px" is for 32x32 images such as CIFAR-10: the noise
# sigmas are kept (they are per pixel), the blur sigmas are scaled by 32 / 224, and the blur
# window is 8 sigma + 1 because "4 sigma - 1" rounds the two smallest sigmas to a 1-tap
# window (no blur at all).
_PAPER_BLUR = (2.0, 4.0, 6.0, 8.0, 10.0)
LEVEL_PRESETS: dict[str, dict[str, Any]] = {
    "qrnet": {
        "levels": {"awgn": (20.0, 40.0, 60.0, 80.0, 100.0), "gaussian_blur": _PAPER_BLUR},
        "options": {"gaussian_blur": {"window": "4sigma-1"}},
    },
    "qrnet_32px": {
        "levels": {
            "awgn": (20.0, 40.0, 60.0, 80.0, 100.0),
            "gaussian_blur": tuple(round(s * 32 / 224, 3) for s in _PAPER_BLUR),
        },
        "options": {"gaussian_blur": {"window": "8sigma+1"}},
    },
}

CLASSIFIER = "classifier"


def _default_apply():
    import distort  # The distortion package of this project.

    return distort.apply


def apply_with_options(
    options: Mapping[str, Mapping[str, Any]] | None = None,
    apply_fn: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """Binds per-distortion keyword options to `apply_fn(images, name, level, seed=...)`.

    Args:
        options: `{name: {option: value}}`, e.g. `LEVEL_PRESETS["qrnet"]["options"]`.
        apply_fn: the distortion function; defaults to `distort.apply`.

    Returns:
        `fn(images, name, level, seed=None)` passing each name's options on.

    Example:

    >>> fn = apply_with_options({"add": {"scale": 2.0}},
    ...                         lambda x, name, level, seed=None, scale=1.0: x + scale * level)
    >>> float(fn(np.zeros(1), "add", 3.0)[0])
    6.0
    """
    apply_fn = apply_fn or _default_apply()
    options = {name: dict(values) for name, values in (options or {}).items()}

    def apply(images, name, level, seed=None):
        return apply_fn(images, name, level, seed=seed, **options.get(name, {}))

    return apply


def preset_distortions(preset: str) -> tuple[dict[str, tuple[float, ...]], Callable[..., Any]]:
    """The levels and the option-bound `distort.apply` of a `LEVEL_PRESETS` entry.

    Args:
        preset: a key of `LEVEL_PRESETS`.

    Returns:
        `(levels, apply_fn)`: `{name: levels}` and `fn(images, name, level, seed=None)`.

    Example:

    >>> levels, _ = preset_distortions("qrnet_32px")
    >>> levels["gaussian_blur"]
    (0.286, 0.571, 0.857, 1.143, 1.429)
    """
    if preset not in LEVEL_PRESETS:
        raise ValueError(f"preset must be one of {sorted(LEVEL_PRESETS)}. Received: preset={preset!r}")
    entry = LEVEL_PRESETS[preset]
    return dict(entry["levels"]), apply_with_options(entry["options"])


def distort_images(
    images,
    name: str,
    level: float,
    seed: int = 0,
    batch_size: int = 256,
    apply_fn: Callable[..., Any] | None = None,
) -> np.ndarray:
    """Distorts images in batches, deterministically from `seed`.

    Args:
        images: array `(n, h, w, c)` on 0..255.
        name: distortion name (e.g. `"awgn"`, `"gaussian_blur"`).
        level: distortion level.
        seed: seed; batch `i` uses the stateless seed `[seed, i]`. Defaults to 0.
        batch_size: images per call. Defaults to 256.
        apply_fn: `apply_fn(images, name, level, seed=...)`; defaults to `distort.apply`.

    Returns:
        float32 array of distorted images on 0..255.

    Example:

    >>> add = lambda x, name, level, seed=None: x + level
    >>> distort_images(np.zeros((3, 2, 2, 1)), "add", 5.0, apply_fn=add).max()
    np.float32(5.0)
    """
    apply_fn = apply_fn or _default_apply()
    images = np.asarray(images, dtype="float32")
    out = [
        np.asarray(
            apply_fn(
                images[start : start + batch_size],
                name,
                level,
                seed=tf.constant([seed, start // batch_size], tf.int64),
            ),
            dtype="float32",
        )
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else images.copy()


def top_classes(
    classifier: keras.Model,
    images,
    preprocessing: Preprocessing = None,
    k: int = 5,
    batch_size: int = 256,
) -> np.ndarray:
    """The `k` highest-scoring classes of 0..255 images, best first.

    Ties go to the lower class index (as `np.argmax`). Fewer than `k` classes give all of them.

    Args:
        classifier: a Keras classifier.
        images: array `(n, h, w, c)` on 0..255.
        preprocessing: see `qrnet.ClassifierSpec`. Defaults to None (0..255 input).
        k: int >= 1, classes per image. Defaults to 5.
        batch_size: images per call. Defaults to 256.

    Returns:
        int array `(n, min(k, classes))`.

    Example:

    >>> clf = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
    ...                         keras.layers.Dense(3)])
    >>> top_classes(clf, np.zeros((4, 2, 2, 1)), k=2).shape
    (4, 2)
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1. Received: k={k!r}")
    prepare = resolve_preprocessing(preprocessing)

    @tf.function(reduce_retracing=True)
    def run(batch):
        return classifier(prepare(batch), training=False)

    images = np.asarray(images, dtype="float32")
    outputs = [
        np.argsort(-np.asarray(run(tf.constant(images[start : start + batch_size]))), axis=-1,
                   kind="stable")[:, :k]
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, k), "int64")


def classify(
    classifier: keras.Model,
    images,
    preprocessing: Preprocessing = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Predicted classes of 0..255 images (the first column of `top_classes`).

    Args:
        classifier: a Keras classifier.
        images: array `(n, h, w, c)` on 0..255.
        preprocessing: see `qrnet.ClassifierSpec`. Defaults to None (0..255 input).
        batch_size: images per call. Defaults to 256.

    Returns:
        int array `(n,)` of argmax classes.

    Example:

    >>> clf = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
    ...                         keras.layers.Dense(3)])
    >>> classify(clf, np.zeros((4, 2, 2, 1))).shape
    (4,)
    """
    return top_classes(classifier, images, preprocessing, 1, batch_size)[:, 0]


def image_quality(images, references) -> tuple[float, float]:
    """Mean PSNR and SSIM of images against references, both on 0..255 (max_val=255).

    Identical images have infinite PSNR.

    Args:
        images: array `(n, h, w, c)`.
        references: array of the same shape.

    Returns:
        `(psnr_db, ssim)`, means over the images.

    Example:

    >>> a = np.full((1, 16, 16, 3), 100.0)
    >>> [round(v, 2) for v in image_quality(a + 10.0, a)]
    [28.13, 1.0]
    """
    images = tf.constant(np.asarray(images, dtype="float32"))
    references = tf.constant(np.asarray(references, dtype="float32"))
    psnr = tf.image.psnr(images, references, max_val=255.0)
    ssim = tf.image.ssim(images, references, max_val=255.0)
    return float(tf.reduce_mean(psnr)), float(tf.reduce_mean(ssim))


def evaluate_restoration(
    classifier: keras.Model,
    images,
    labels,
    distortions: Mapping[str, Sequence[float]],
    restorers: Mapping[str, keras.Model] | None = None,
    preprocessing: Preprocessing = None,
    include_clean: bool = True,
    seed: int = 0,
    batch_size: int = 256,
    apply_fn: Callable[..., Any] | None = None,
) -> list[dict[str, Any]]:
    """Accuracy, PSNR and SSIM per distortion and level, without and with restorers.

    Args:
        classifier: a classifier trained on clean images.
        images: clean test images `(n, h, w, c)` on 0..255.
        labels: integer labels `(n,)`.
        distortions: `{name: levels}`.
        restorers: `{method name: restorer}` placed in front of the classifier.
            Defaults to none (classifier alone).
        preprocessing: the classifier's preprocessing (see `qrnet.ClassifierSpec`).
        include_clean: also evaluate the clean images (distortion `"clean"`, level 0).
        seed: distortion seed. Defaults to 0.
        batch_size: images per forward pass. Defaults to 256.
        apply_fn: `apply_fn(images, name, level, seed=...)`; defaults to `distort.apply`.

    Returns:
        A list of rows `{"distortion", "level", "method", "accuracy", "top5", "psnr", "ssim",
        "n"}`, method `"classifier"` for the classifier alone; `accuracy` is top-1 and `top5`
        counts the label among the 5 best classes (all classes when there are fewer).

    Example:

    >>> clf = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
    ...                         keras.layers.Dense(2)])
    >>> add = lambda x, name, level, seed=None: x + level
    >>> rows = evaluate_restoration(clf, np.zeros((4, 16, 16, 3)), np.zeros(4, int),
    ...                             {"add": [5.0]}, apply_fn=add)
    >>> [(r["distortion"], r["method"]) for r in rows]
    [('clean', 'classifier'), ('add', 'classifier')]
    """
    images = np.asarray(images, dtype="float32")
    labels = np.asarray(labels).reshape(-1).astype("int64")
    restorers = dict(restorers or {})
    if CLASSIFIER in restorers:
        raise ValueError(f"restorers must not use the name {CLASSIFIER!r}. Received: {sorted(restorers)}")
    cases = [("clean", 0.0)] if include_clean else []
    cases += [(name, float(level)) for name, levels in distortions.items() for level in levels]
    rows = []
    for name, level in cases:
        if name == "clean":
            distorted = images
        else:
            distorted = distort_images(images, name, level, seed, batch_size, apply_fn)
        candidates = {CLASSIFIER: distorted}
        for method, restorer in restorers.items():
            candidates[method] = restore(restorer, distorted, batch_size=min(batch_size, 64))
        for method, candidate in candidates.items():
            top5 = top_classes(classifier, candidate, preprocessing, 5, batch_size)
            psnr, ssim = image_quality(candidate, images)
            rows.append(
                {
                    "distortion": name,
                    "level": level,
                    "method": method,
                    "accuracy": float(np.mean(top5[:, 0] == labels)),
                    "top5": float(np.mean((top5 == labels[:, None]).any(axis=-1))),
                    "psnr": psnr,
                    "ssim": ssim,
                    "n": int(len(labels)),
                }
            )
    return rows


def average_over_levels(rows: Sequence[Mapping[str, Any]], key: str = "accuracy") -> dict:
    """Averages a metric over the levels of each distortion, per method.

    Args:
        rows: rows of `evaluate_restoration`.
        key: the metric. Defaults to `"accuracy"`.

    Returns:
        `{distortion: {method: mean}}`, clean rows included as their own distortion.

    Example:

    >>> average_over_levels([{"distortion": "awgn", "method": "m", "accuracy": 0.2},
    ...                      {"distortion": "awgn", "method": "m", "accuracy": 0.4}])
    {'awgn': {'m': 0.30000000000000004}}
    """
    grouped: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        grouped.setdefault(row["distortion"], {}).setdefault(row["method"], []).append(row[key])
    return {
        distortion: {method: float(np.mean(values)) for method, values in methods.items()}
        for distortion, methods in grouped.items()
    }


def format_table(rows: Sequence[Mapping[str, Any]], key: str = "accuracy", digits: int = 3) -> str:
    """A Markdown table: one line per distortion and level, one column per method.

    Lines `"<distortion> mean"` give the average over the levels.

    Args:
        rows: rows of `evaluate_restoration`.
        key: the metric shown. Defaults to `"accuracy"`.
        digits: decimals. Defaults to 3.

    Returns:
        The table as a string.

    Example:

    >>> print(format_table([{"distortion": "awgn", "level": 20.0, "method": "m",
    ...                      "accuracy": 0.5}]))
    | distortion | level | m |
    |---|---|---|
    | awgn | 20 | 0.500 |
    | awgn | mean | 0.500 |
    """
    methods = list(dict.fromkeys(row["method"] for row in rows))
    cells: dict[tuple[str, float], dict[str, float]] = {}
    for row in rows:
        cells.setdefault((row["distortion"], row["level"]), {})[row["method"]] = row[key]
    lines = [
        "| distortion | level | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]

    def line(name: str, level: str, values: Mapping[str, float]) -> str:
        shown = [f"{values[m]:.{digits}f}" if m in values else "" for m in methods]
        return f"| {name} | {level} | " + " | ".join(shown) + " |"

    averages = average_over_levels(rows, key)
    previous = None
    for (name, level), values in cells.items():
        if previous not in (None, name) and previous != "clean":
            lines.append(line(previous, "mean", averages[previous]))
        lines.append(line(name, f"{level:g}", values))
        previous = name
    if previous not in (None, "clean"):
        lines.append(line(previous, "mean", averages[previous]))
    return "\n".join(lines)


def seconds_per_image(fn: Callable[[tf.Tensor], Any], images, batch_size: int = 32, repeats: int = 3) -> float:
    """Best-of-`repeats` wall time per image of `fn` over `images` in batches.

    The first pass (tracing) is not timed.

    Args:
        fn: a function of a float32 batch, e.g. a `tf.function` of a model.
        images: array `(n, h, w, c)`.
        batch_size: images per call. Defaults to 32.
        repeats: timed passes. Defaults to 3.

    Returns:
        Seconds per image.

    Example:

    >>> seconds_per_image(lambda x: x * 2, np.zeros((4, 2, 2, 1)), batch_size=2) >= 0
    True
    """
    images = np.asarray(images, dtype="float32")
    batches = [tf.constant(images[s : s + batch_size]) for s in range(0, len(images), batch_size)]

    def one_pass():
        for batch in batches:
            result = fn(batch)
        np.asarray(result)

    one_pass()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        best = min(best, time.perf_counter() - start)
    return float(best / max(len(images), 1))

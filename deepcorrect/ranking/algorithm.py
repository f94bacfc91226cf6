"""`rank`: Algorithm 1 of DeepCorrect, from the arguments to a `Ranking`.

`rank` checks its arguments, flattens the model, locates each layer's swap
site, then scores the filters layer by layer with `exact` (estimating each
layer's `reliability` from the same per-image outcomes, and writing each
finished layer to the checkpoint) or all at once with `approx`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Sequence

import keras
import numpy as np

from deepcorrect import checks
from deepcorrect.flat_program import (
    Program,
    apply_preprocess,
    choose_conv_layers,
    site_for,
)
from deepcorrect.ranking import approx, exact
from deepcorrect.ranking.inputs import (
    RankDistortion,
    RankingData,
    check_filters,
    digest,
    outputs_are_logits,
    resolve_distortion,
)
from deepcorrect.ranking.reliability import Reliability, estimate
from deepcorrect.ranking.result import Ranking
from deepcorrect.ranking.schema import APPROX_SCORE, METHODS, SCORES, SITES
from robustkit.seeds import check_seed


def _load_checkpoint(path: str, run: dict[str, Any]) -> Ranking | None:
    """The partial ranking stored at `path`, after checking it is this run's."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    stored = data.get("extra", {}).get("run", {})
    for field, value in run.items():
        if stored.get(field) != value:
            raise ValueError(
                f"checkpoint={path!r} belongs to another run: {field} is "
                f"{stored.get(field)!r} there, {value!r} now. Delete it or "
                "pass another path."
            )
    return Ranking.from_dict(data)


def rank(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    distortion: RankDistortion,
    levels: Sequence[float],
    layers: Sequence[str] | None = None,
    site: str = "pre_activation",
    score: str | None = None,
    batch_size: int = 256,
    seed: int = 0,
    method: str = "exact",
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    filters: tuple[int, int] | None = None,
    reliability: bool | None = None,
) -> Ranking:
    """Ranks conv filters by correction priority (DeepCorrect, Algorithm 1).

    For every filter `j` of every chosen conv layer `i`, the priority is
    `tau(i, j) = p_swp(i, j) - p_b` (`score="gain"`): the top-1 accuracy on the
    distorted images when filter `j`'s distorted output is replaced by its
    clean output, minus the accuracy on the distorted images, averaged over
    `levels`. `score="relative_error"` is the original code's
    `|err_swp - err_b| / err_b` per level (0 where `err_b == 0`), averaged.
    `score="log_prob"`, the default, is continuous where the top-1 gain moves
    in steps of `1 / N`: the mean gain in the label's log-probability over
    images and levels. `score="log_prob_magnitude"` is that gain's magnitude,
    so that a swap that hurts ranks as high as one that helps, as with the
    original code's absolute value (on MobileNetV2's first layer, where the
    signed score chose worse filters for correction units than random ones,
    it chose better ones; docs/RESULTS.md).

    The exact method keeps each image's outcome after each swap, so it also
    measures, at little extra cost, how reproducible the priorities are
    across images (`Ranking.reliability`): the Spearman correlation between
    the priorities on two fixed halves of the images with its Spearman-Brown
    correction, and bootstrap intervals per filter.

    Args:
        model: a functional or Sequential Keras classifier (nested models
            allowed) with one input and one output of class scores
            (probabilities or logits). Run in inference mode.
        images: `(N, H, W, C)` images on the 0..255 scale (any dtype; used as
            float32). These are what `distortion` sees.
        labels: `N` class indices, or an `(N, classes)` one-hot array.
        distortion: a `distort` name such as `"gaussian_blur"` or `"awgn"`
            (resolved through `distort.apply`), or a callable
            `fn(images, level, seed) -> images`.
        levels: distortion levels to average over (non-empty). Level `k` is
            distorted with seed `seed + k`.
        layers: names of conv layers to rank, or None (default) for all conv
            layers, in model order.
        site: `"pre_activation"` (default; the conv's own output, its linear
            part for a conv with a built-in activation: where correction units
            go) or `"post_activation"` (after the single-consumer
            BatchNormalization/activation chain that follows it).
        score: `"log_prob"` (the default of the exact method: the gain in
            the true class's log-probability, `log_softmax` of logits or the
            log of probabilities clipped at `exact.LOG_PROB_EPSILON`; far more
            reliable than the top-1 gain at the same number of images, see
            docs/RESULTS.md), `"log_prob_magnitude"`, `"gain"` (the
            paper's top-1 gain) or `"relative_error"`. None (the default) means `"log_prob"` for the
            exact method; the approximate method has its own score and takes
            None (or `"gain"`, for older callers).
        batch_size: samples per forward pass (default 256). The exact method
            stacks `batch_size // chunk` filter swaps of a chunk of
            `min(N, batch_size)` images in one pass.
        seed: base seed of the distortion, and of the split halves and the
            bootstrap resamples of `reliability` (default 0).
        method: `"exact"` (default) or `"approx"` (first-order estimate from
            one forward/backward pass per image; the priority is the negated
            predicted change in cross-entropy, score `"first_order_loss"`).
        checkpoint: optional JSON path. Each finished layer is written there
            (atomically); a rerun with the same arguments skips finished
            layers. The approximate method writes it once, at the end.
        progress: show a Keras progress bar per layer (default True).
        preprocess: optional `fn(images) -> images` applied to the clean and
            the distorted images before the model (e.g. scaling to [0, 1]).
        filters: optional `(start, stop)` range of filter indices to compute in
            every layer (clipped to its filter count), to split work across
            processes; the other filters are NaN until `Ranking.merge`.
        reliability: whether to record each layer's split-half reliability
            and bootstrap intervals (`Ranking.reliability`; the halves are
            `reliability.split_halves(N, seed)`, the intervals come from
            `reliability.BOOTSTRAP_RESAMPLES` resamples). None (default):
            True for the exact method, False for the approximate one, which
            has no per-image outcomes.

    Returns:
        A `Ranking`.

    Raises:
        TypeError: if `model` is not a Functional or Sequential model.
        ValueError: on an unknown or non-conv layer name, empty images,
            images of another size than the model's input (they are not
            resized), mismatched labels or labels outside `[0, classes - 1]`,
            an unknown site/score/method, a score or `reliability=True` with
            the approximate method, empty levels, or a checkpoint of another
            run.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv1"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    >>> images = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3))
    >>> ranking = rank(model, images, np.arange(8) % 3, "awgn", [10.0],
    ...                progress=False)
    >>> ranking.top("conv1", 0.5).shape
    (2,)
    """
    checks.check_model(model)
    if keras.backend.backend() != "tensorflow":
        raise ValueError("rank needs the TensorFlow backend of Keras.")
    checks.check_choice("site", site, SITES)
    checks.check_choice("method", method, METHODS)
    if score is None:
        score = "log_prob" if method == "exact" else "gain"
    checks.check_choice("score", score, SCORES)
    if method == "approx" and score != "gain":
        raise ValueError(
            f"score={score!r} is only defined for method='exact'. "
            f"Received: score={score!r}, method={method!r}"
        )
    if method == "approx" and reliability:
        raise ValueError(
            "reliability needs per-image outcomes, which only method='exact' "
            f"has. Received: reliability={reliability!r}, method={method!r}"
        )
    reliability = method == "exact" if reliability is None else bool(reliability)
    images = np.asarray(images)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(
            f"images must be a non-empty batch. Received shape {images.shape}."
        )
    labels = checks.check_labels(labels, images.shape[0])
    checks.check_class_labels(labels, model)
    levels = [float(v) for v in np.atleast_1d(np.asarray(levels, dtype=float))]
    if not levels:
        raise ValueError(
            "levels must hold at least one distortion level. Received: levels=[]"
        )
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size!r}"
        )
    batch_size = int(batch_size)
    seed = check_seed(seed)
    filters = check_filters(filters)
    distortion_name, distort_fn = resolve_distortion(distortion)
    chosen = choose_conv_layers(model, layers)

    program = Program(model, split=chosen if site == "pre_activation" else ())
    sites = [site_for(program, layer, site, incremental=True) for layer in chosen]
    raw = images.astype(np.float32)
    data = RankingData(
        clean=apply_preprocess(preprocess, raw), labels=labels, raw=raw, levels=levels,
        distort_fn=distort_fn, preprocess=preprocess, seed=seed,
    )
    checks.check_image_size(data.clean, model)  # what the model reads, after `preprocess`
    counts = {s.layer_name: s.channels for s in sites}
    ranges = {
        s.layer_name: [min(filters[0], s.channels), min(filters[1], s.channels)]
        if filters else [0, s.channels]
        for s in sites
    }
    run_info = {
        "model_name": model.name,
        "layers": [s.layer_name for s in sites],
        "distortion": distortion_name,
        "levels": levels,
        "site": site,
        "score": score if method == "exact" else APPROX_SCORE,
        "method": method,
        "seed": int(seed),
        "filters": list(filters) if filters else None,
        "data": digest(raw, labels),
        "reliability": reliability,
    }

    def make(priorities: dict[str, np.ndarray], base: list[float],
             reliabilities: dict[str, Reliability] | None = None) -> Ranking:
        return Ranking(
            priorities=priorities, model_name=model.name, filter_counts=counts,
            distortion=distortion_name, levels=levels,
            score=run_info["score"], site=site, method=method,
            num_images=data.n, baseline_accuracy=base,
            extra={"seed": int(seed), "filters": ranges, "run": run_info},
            reliabilities=reliabilities or {},
        )

    empty = {s.layer_name: np.full(s.channels, np.nan) for s in sites}
    previous = _load_checkpoint(os.fspath(checkpoint), run_info) if checkpoint else None

    if method == "approx":
        if previous is not None:
            return previous
        bar = keras.utils.Progbar(data.n * len(levels), verbose=1 if progress else 0,
                                  unit_name="image")
        values = approx.first_order_priorities(program, sites, data, batch_size, bar)
        for s in sites:
            lo, hi = ranges[s.layer_name]
            empty[s.layer_name][lo:hi] = values[s.layer_name][lo:hi]
        result = make(empty, [])
        if checkpoint:
            result.save(checkpoint)
        return result

    done = list(previous.extra.get("done", [])) if previous else []
    timings = dict(previous.extra.get("timing", {})) if previous else {}
    priorities = previous.priorities if previous else empty
    reliabilities = dict(previous.reliabilities) if previous else {}
    from_logits = outputs_are_logits(program, data.clean)
    base_outcomes = exact.baseline_outcomes(program, data, batch_size, from_logits)
    base = list(base_outcomes.hits.sum(axis=1) / data.n)
    for s in sites:
        if s.layer_name in done:
            continue
        lo, hi = ranges[s.layer_name]
        ids = np.arange(lo, hi, dtype=np.int32)
        if progress:
            print(f"Ranking {s.layer_name}: {len(ids)} filters x "
                  f"{len(levels)} levels x {data.n} images")
        bar = keras.utils.Progbar(len(ids) * len(levels) * data.n,
                                  verbose=1 if progress else 0, unit_name="swap")
        timing = {"tail_seconds": 0.0, "tail_samples": 0}
        tick = time.perf_counter()
        swapped = exact.swap_counts(program, s, data, ids, batch_size, from_logits, bar,
                                    timing=timing)
        priorities[s.layer_name][lo:hi] = exact.scores(swapped, base_outcomes, score)
        if reliability:
            reliabilities[s.layer_name] = estimate(
                lambda w: exact.weighted_scores(swapped, base_outcomes, score, w),
                data.n, seed, s.channels, start=lo)
        timing["seconds"] = time.perf_counter() - tick
        timings[s.layer_name] = timing
        done.append(s.layer_name)
        if checkpoint:
            partial = make(priorities, base, reliabilities)
            partial.extra.update(done=done, timing=timings)
            partial.save(checkpoint)
    result = make(priorities, base, reliabilities)
    result.extra.update(done=done, timing=timings)
    return result

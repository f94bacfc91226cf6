"""Test-time batch-norm adaptation: re-estimate a model's batch-norm statistics on distorted photos.

Schneider et al. 2020 ("Improving robustness against common corruptions by
covariate shift adaptation", https://arxiv.org/abs/2006.16971) showed that a
classifier with batch norm recovers much of its accuracy on a distortion when
each `BatchNormalization` layer normalises with the mean and variance of the
distorted photos instead of those of the training set (ImageNet-C mCE
76.7 -> 62.2 for a ResNet-50), training nothing and needing no labels.
`adapt_batch_norm` returns such a copy of a model. Statistics are exact: each
layer's mean and population variance (over images, height and width) are
computed over all the given images, layer by layer in graph order, so that
every layer sees inputs already normalised by the adapted layers before it
(not a momentum average of batches). When the activations of all images fit
in `IN_MEMORY_BYTES`, this takes one pass through the graph over all of them;
otherwise one pass over the images per group of mutually independent batch
norms, each running the graph only as far as needed
(`deepcorrect.batch_norm_program`).

Prior (Schneider's N): `prior=N` mixes the source statistics (what the layer
holds) with the measured target ones as if the source were worth `N` images:
`mu = N/(N+n) mu_s + n/(N+n) mu_t`, likewise for the variance, with `n` the
number of adaptation images. `prior=None` (or 0) uses the target statistics
alone.

Folded batch norms. Weights exported after folding batch norm into the
convolutions (the quantised MobileNetV2 in `../shared/models`) keep identity
batch norms: moving mean 0, variance 1 (or `1 - epsilon`), with the real
statistics folded away. Re-estimating those layers naively normalises
activations that the network never normalised, and wrecks it. Pass clean
photos as `source_images`: each layer is then first re-expressed with the
statistics its inputs have on the clean photos as moving statistics and
scale and shift chosen so that the layer computes exactly what it computed
before (`gamma' = gamma sqrt(var_s + eps) / sqrt(var + eps)`,
`beta' = beta + gamma (mu_s - mean) / sqrt(var + eps)`), and then adapted as
above. Target inputs thereby get the output mean and spread that clean inputs
got through the original layer (source-matched adaptation). Without
`source_images` the statistics a layer holds are taken as the source ones, and
a model with identity batch norms is refused.

Batch norms inside other layers (the ones in `deepcorrect.CorrectionUnit`s of
a wrapped model) are adapted too, in their order of call, after every layer
upstream of the layer that holds them. Their names are
`"<holding layer>/<batch norm>"`. Fresh correction units hold identity
statistics (which do not matter, their last conv is zero); they are not
counted as folded.

Example:

```python
import deepcorrect, distort

blurred = distort.gaussian_blur(photos, 2.0)
adapted = deepcorrect.adapt_batch_norm(model, blurred)           # pure target statistics
mixed = deepcorrect.adapt_batch_norm(model, blurred, prior=16)   # Schneider's N = 16 images
folded = deepcorrect.adapt_batch_norm(mobilenet, blurred, source_images=photos,
                                      preprocess="mobilenet_v2")
```
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from deepcorrect.batch_norm import folded_batch_norms
from deepcorrect.batch_norm_program import BatchNormProgram, Moments, batch_norm_layers
from deepcorrect.checks import check_images, check_model
from robustkit.checks import check_level
from robustkit.preprocessing import Preprocess
from robustkit.preprocessing import resolve as resolve_preprocessing
from robustkit.training_checks import check_count

__all__ = ["CACHE_BYTES", "IN_MEMORY_BYTES", "ImageBatches", "adapt_batch_norm",
           "batch_norm_layers", "copy_keeping_trainable",
           "match_source_statistics", "prepare", "reestimate"]

def _physical_memory() -> int:
    """Bytes of physical memory (1 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2**30


# Preprocessed adaptation images are kept in memory up to this size, and
# preprocessed again in every pass above it.
CACHE_BYTES = 256 * 2**20
# Statistics are re-estimated in a single pass over the graph when the
# activations of all images alive at once fit in this size (35% of the machine's physical
# memory, between 1 and 8 GiB; MobileNetV2 at 224 px needs 9.3 MiB an image); above it, in
# one pass over the images per group of independent batch norms (52 for MobileNetV2).
IN_MEMORY_BYTES = min(8 * 2**30, max(2**30, int(0.35 * _physical_memory())))


class ImageBatches:
    """Preprocessed batches of images in the model's input dtype, in a fixed order.

    Args:
        images: the (checked) images.
        batch_size: images per batch.
        preprocess: a `robustkit.preprocessing` mode or family name, a function
            of float32 pixels, or None.
        dtype: the model input's dtype.

    Example:

    >>> [b.shape[0] for b in ImageBatches(np.zeros((5, 2, 2, 3)), 2, None, "float32")]
    [2, 2, 1]
    """

    def __init__(self, images: np.ndarray, batch_size: int, preprocess: Preprocess,
                 dtype: Any):
        self.images = images
        self.batch_size = int(batch_size)
        self.prep: Callable = resolve_preprocessing(preprocess)
        self.dtype = dtype
        self._cache: list | None = None
        if images.size * 4 <= CACHE_BYTES:
            self._cache = [self.take(idx) for idx in self._slices()]

    def _slices(self) -> list[slice]:
        n = len(self.images)
        return [slice(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]

    def take(self, index: Any) -> tf.Tensor:
        """The preprocessed images at `index` (a slice or an index array)."""
        x = np.array(self.images[index], dtype=np.float32)  # a copy: preprocess may work in place
        return tf.cast(self.prep(x), self.dtype)

    def __iter__(self) -> Iterator[tf.Tensor]:
        if self._cache is not None:
            return iter(self._cache)
        return (self.take(idx) for idx in self._slices())

    def __len__(self) -> int:
        return len(self.images)


def copy_keeping_trainable(model: keras.Model) -> keras.Model:
    """A copy of `model` with its own weights; each layer keeps its `trainable` flag.

    Example:

    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, trainable=False)])
    >>> copy_keeping_trainable(m).layers[0].trainable
    False
    """
    check_model(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def match_source_statistics(program: BatchNormProgram, source: dict[int, Moments]) -> None:
    """Re-expresses each batch norm with the measured source statistics as moving statistics.

    Each layer then holds the mean and variance `source` measured for its
    inputs, and a scale and shift chosen so that it computes the same function
    as before: `gamma' = gamma sqrt(var_s + eps) / sqrt(var + eps)`,
    `beta' = beta + gamma (mu_s - mean) / sqrt(var + eps)`.

    Args:
        program: the program of the model to modify in place.
        source: `{site index: Moments}` measured on clean photos.

    Raises:
        ValueError: for a batch norm without scale or shift (`scale=False`
            or `center=False`), which cannot hold the re-expressed layer.
    """
    for s, moments in source.items():
        layer = program.sites[s].layer
        if not (layer.scale and layer.center):
            raise ValueError(
                f"source_images need batch norms with a scale and a shift; "
                f"{program.sites[s].name!r} has scale={layer.scale}, center={layer.center}.")
        mean = layer.moving_mean.numpy().astype(np.float64)
        std = np.sqrt(layer.moving_variance.numpy().astype(np.float64) + layer.epsilon)
        gamma = layer.gamma.numpy().astype(np.float64)
        beta = layer.beta.numpy().astype(np.float64)
        layer.gamma.assign((gamma * np.sqrt(moments.variance + layer.epsilon) / std)
                           .astype(layer.gamma.dtype))
        layer.beta.assign((beta + gamma * (moments.mean - mean) / std).astype(layer.beta.dtype))
        layer.moving_mean.assign(moments.mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(moments.variance.astype(layer.moving_variance.dtype))


def reestimate(program: BatchNormProgram, batches: ImageBatches, prior: float | None = None,
               verbose: int = 0) -> None:
    """Sets every batch norm's moving statistics to those of its inputs on `batches`.

    Layer by layer in graph order, so every layer is measured with the layers
    before it already adapted: in one pass that holds the activations of all
    images when they fit in `IN_MEMORY_BYTES`, otherwise in one pass per
    group of independent layers, each running the graph up to them. With a
    `prior` N, the new statistics are `N/(N+n) source + n/(N+n) target`,
    where the source statistics are what the layer held and `n = len(batches)`.

    Args:
        program: the program of the model to modify in place.
        batches: the adaptation images.
        prior: Schneider's N in images, or None for the target statistics.
        verbose: 1 shows a progress bar over the passes.
    """
    weight = 0.0 if prior is None else prior / (prior + len(batches))
    bar = keras.utils.Progbar(len(program.sites), verbose=1 if verbose else 0,
                              unit_name="layer")

    def update(s: int, moments: Moments) -> None:
        layer = program.sites[s].layer
        mean = weight * layer.moving_mean.numpy() + (1 - weight) * moments.mean
        variance = weight * layer.moving_variance.numpy() + (1 - weight) * moments.variance
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
        bar.add(1)

    first = next(iter(batches))
    if not program.shared and (
            program.peak_bytes_per_image(first) * len(batches) <= IN_MEMORY_BYTES):
        program.adapt_in_memory(batches, update)
        return
    for group in program.generations:
        for s, moments in program.measure(batches, group).items():
            update(s, moments)


def prepare(model: keras.Model, images: Any, source_images: Any, batch_size: Any,
            preprocess: Preprocess, check_folded: bool, verbose: int = 0,
            ) -> tuple[BatchNormProgram, ImageBatches]:
    """The common start of `adapt_batch_norm` and `tent`: checks, copy, source matching.

    Returns:
        The program of a copy of `model` (source-matched when `source_images`
        are given) and the adaptation batches.

    Raises:
        ValueError: see `adapt_batch_norm`.
    """
    batch_size = check_count("batch_size", batch_size)
    BatchNormProgram(model).require_batch_norm()  # refused before anything is copied
    images = check_images(images, model, "images")
    source = None if source_images is None else check_images(source_images, model,
                                                              "source_images")
    dtype = model.inputs[0].dtype
    if source is None and check_folded:
        folded = folded_batch_norms(model)
        if folded:
            raise ValueError(
                f"model {model.name!r} has {len(folded)} batch norms with identity statistics "
                f"(mean 0, variance 1: folded into the convolutions), e.g. {folded[0]!r}. "
                "Re-estimating them would wreck the network: pass clean photos as "
                "source_images=... to adapt them source-matched.")
    program = BatchNormProgram(copy_keeping_trainable(model))
    if source is not None:
        if verbose:
            print(f"Measuring source statistics on {len(source)} clean images")
        batches = ImageBatches(source, batch_size, preprocess, dtype)
        match_source_statistics(program, program.measure(batches, range(len(program.sites))))
    return program, ImageBatches(images, batch_size, preprocess, dtype)


def adapt_batch_norm(model: keras.Model, images, *, source_images=None,
                     prior: float | None = None, batch_size: int = 64, preprocess=None,
                     verbose: int = 0, check_folded: bool = True) -> keras.Model:
    """A copy of `model` whose batch norms normalise with the statistics of `images`.

    Schneider et al. 2020: every `BatchNormalization` layer's moving mean and
    variance become the exact mean and population variance of its inputs over
    the unlabeled `images` (over images, height and width), estimated layer
    by layer in graph order. Nothing is trained; the copy runs in inference
    mode as usual and saves, loads and exports like the original.

    Args:
        model: a Functional or Sequential model with one input and one output
            and at least one batch norm (nested models, and correction units
            of `deepcorrect.wrap`, included). Not modified.
        images: the unlabeled (distorted) photos `[N, H, W, C]`: uint8 or
            float on 0..255 with `preprocess`, or whatever the model takes.
        source_images: clean photos for source-matched adaptation (see the
            module docstring); required for a model with folded (identity)
            batch norms. Defaults to None: the layers' statistics are the source.
        prior: Schneider's prior strength N, in images: the result is
            `N/(N+n)` source plus `n/(N+n)` target statistics for `n` images.
            A finite number >= 0; None (the default) or 0 uses the target
            statistics alone.
        batch_size: images per forward pass (the result does not depend on
            it). Defaults to 64.
        preprocess: maps the float32 images to the model's input: a function
            (e.g. `keras.applications.mobilenet_v2.preprocess_input`), a
            `robustkit.preprocessing` mode or family name, or None.
        verbose: 1 prints progress. Defaults to 0.
        check_folded: refuse a model with identity batch norms when no
            `source_images` are given. False re-estimates them naively (which
            breaks such a model; for comparisons). Defaults to True.

    Returns:
        The adapted copy, with the `trainable` flags of `model`.

    Raises:
        TypeError: for a model that is not Functional or Sequential, or
            non-numeric images.
        ValueError: for a model without batch norm, with folded batch norms
            and no `source_images`, with several inputs or outputs; for empty
            or misshapen images, a bad `prior` or `batch_size`.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    >>> images = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3))
    >>> adapted = adapt_batch_norm(model, images, check_folded=False)
    >>> conv_out = model.get_layer("conv")(images.astype("float32")).numpy()
    >>> np.allclose(adapted.get_layer("bn").moving_mean.numpy(), conv_out.mean((0, 1, 2)),
    ...             atol=1e-4)
    True
    """
    if prior is not None:
        prior = check_level("prior", prior, 0.0)
    program, batches = prepare(model, images, source_images, batch_size, preprocess,
                               check_folded, verbose)
    reestimate(program, batches, prior, verbose)
    return program.model

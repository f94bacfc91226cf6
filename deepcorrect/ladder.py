"""The repair ladder: the code of the steps of `deepcorrect.compare`'s methods.

The methods are data (`deepcorrect.methods`): a name and a sequence of steps, each a
dict with a `kind` and its options. `repair` runs one for one set of distortions, step
by step, each kind by its function in `STEPS`:

- `bn_adapt`: `deepcorrect.adapt_batch_norm` on the distorted repair images (no labels).
- `tent`: `deepcorrect.tent` (TENT) on the distorted repair images (no labels).
- `finetune`: `deepcorrect.finetune(k)` trained with `deepcorrect.train`.
- `deepcorrect`: `deepcorrect.rank` (`rank_for`), `deepcorrect.wrap`, `deepcorrect.train`.
- `qrnet`: a QRNet restorer (`qrnet.build_qrnet`) trained in front of the frozen model.

Trained steps use the labels of the repair images; without labels they learn from the
original model instead (label-free distillation, `deepcorrect.train(teacher=...)`; the
ranking and QRNet's cross-entropy use its predictions on the clean images).

`repair` saves the model after every step (atomically, as `.keras`) with a record in
`stages.json` (`Stages`): a rerun, or another method that starts with the same steps,
continues from the longest finished prefix (`deepcorrect.stages`).

Example:

```python
from deepcorrect import ladder, methods
from deepcorrect.stages import Stages

method = methods.resolve_method("bn_adapt+deepcorrect")
data = ladder.RepairData(x_repair, y_repair, {"gaussian_blur": [1, 2, 3]},
                         methods.resolve_budget(2), seed=0, teacher=model)
repaired, record = ladder.repair(model, method, data, "out/ladder", Stages("out/ladder"),
                                 group="gaussian_blur")
```
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from deepcorrect.methods import RANKINGS, chain_id, merge_labels
from deepcorrect.stages import Stages, read_model, write_model

# --- Repair data --------------------------------------------------------------------------


class MixtureDistortion:
    """`fn(images, index, seed)` applying the `index`-th `(name, level)` pair: for `rank`.

    `rank` averages a filter's gain over its levels; with the indices of these pairs as
    levels it averages over every level of every distortion.

    Args:
        distortions: what `distort.as_distortions` reads, e.g. `{name: levels}`; the pairs
            follow the names in sorted order, each distortion applied with its options.

    Example:

    >>> fn = MixtureDistortion({"gaussian_blur": [1.0], "awgn": [10.0]})
    >>> fn.pairs
    [('awgn', 10.0), ('gaussian_blur', 1.0)]
    """

    def __init__(self, distortions):
        from distort.spec import as_distortions

        found = sorted(as_distortions(distortions), key=lambda d: d.name)
        self._choices = [(d, level) for d in found for level in d.levels]
        self.pairs = [(d.name, level) for d, level in self._choices]
        self.__name__ = "mixture"

    def __call__(self, images, index, seed):
        distortion, level = self._choices[int(round(float(index)))]
        return distortion(images, level, seed=seed)


def distorted_images(images, distortions, seed: int,
                     fraction: float = 1.0) -> np.ndarray:
    """Images distorted once each: a distortion and one of its levels drawn per image.

    Args:
        images: `[N, H, W, C]` images on 0..255.
        distortions: what `distort.as_distortions` reads, e.g. `{name: levels}`: the
            distortions (with their options) and the levels to draw from.
        seed: seed of the draws and of random distortions.
        fraction: share of the images distorted (a seeded draw of `round(fraction * N)`
            of them); the others are returned clean. Defaults to 1.0 (every image).

    Returns:
        The distorted images, same shape and dtype.

    Example:

    >>> x = np.full((4, 8, 8, 1), 100, np.uint8)
    >>> distorted_images(x, {"awgn": [10.0, 20.0]}, seed=0).shape
    (4, 8, 8, 1)
    >>> int((distorted_images(x, {"awgn": [10.0]}, seed=0, fraction=0.5) != x).any(axis=(1, 2, 3)).sum())
    2
    """
    from distort.spec import as_distortions
    from robustkit.checks import check_level

    fraction = check_level("fraction", fraction, 0.0, 1.0)
    images = np.asarray(images)
    found = sorted(as_distortions(distortions), key=lambda d: d.name)
    rng = np.random.default_rng(seed)
    which = rng.integers(len(found), size=len(images))
    pick = rng.random(len(images))
    keep = np.zeros(len(images), bool)  # images left clean
    if fraction < 1.0:
        keep[rng.permutation(len(images))[: len(images) - int(round(fraction * len(images)))]] = True
    out = images.copy()
    for d, distortion in enumerate(found):
        levels = distortion.levels
        index = np.minimum((pick * len(levels)).astype(int), len(levels) - 1)
        for j, level in enumerate(levels):
            chosen = np.flatnonzero((which == d) & (index == j) & ~keep)
            if chosen.size:
                out[chosen] = np.asarray(distortion(images[chosen], level,
                                                    seed=seed + 1 + d * 1000 + j))
    return out


@dataclasses.dataclass
class RepairData:
    """What every step of a repair sees: the same images, distortions, budget and seed.

    Attributes:
        images: clean repair images `[N, H, W, C]` on 0..255 (the budget's first `images`).
        labels: their labels `[N]`, or None for label-free repairs.
        distortions: name -> levels the repair is for (one name, or a mixture).
        budget: from `resolve_budget`.
        seed: seed of every random choice.
        teacher: the original model (label-free targets; never modified).
        verbose: Keras progress output (0 silent).
    """

    images: np.ndarray
    labels: np.ndarray | None
    distortions: dict[str, list[float]]
    budget: dict[str, Any]
    seed: int
    teacher: Any
    verbose: int = 0
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        n = self.budget.get("images")
        self.images = np.asarray(self.images)[:n]
        if self.labels is not None:
            self.labels = np.asarray(self.labels).reshape(-1)[:n]

    def distorted(self, fraction: float = 1.0) -> np.ndarray:
        """The repair images, a `fraction` of them distorted once (`distorted_images`; cached)."""
        key = ("distorted", float(fraction))
        if key not in self._cache:
            self._cache[key] = distorted_images(self.images, self.distortions, self.seed,
                                                fraction)
        return self._cache[key]

    def frozen_teacher(self):
        """A frozen copy of the original model (distillation sets `trainable=False` on it)."""
        if "teacher" not in self._cache:
            from deepcorrect.baselines import copy_model

            copy = copy_model(self.teacher)
            copy.trainable = False
            self._cache["teacher"] = copy
        return self._cache["teacher"]

    def targets(self) -> tuple[np.ndarray, str]:
        """`(labels, "yes")`, or the original model's classes of the clean images and "teacher"."""
        if self.labels is not None:
            return self.labels, "yes"
        if "predicted" not in self._cache:
            probs = self.teacher.predict(self.images.astype(np.float32), batch_size=256,
                                         verbose=0)
            self._cache["predicted"] = np.asarray(probs).argmax(-1).astype(np.int64)
        return self._cache["predicted"], "teacher"


# --- Steps ---------------------------------------------------------------------------------


def _train(model, data: RepairData, learning_rate: float, folder: Path,
           refresh_statistics: bool = True) -> str:
    """`deepcorrect.train` with the budget, labelled or distilled from the original model."""
    import deepcorrect

    label_free = data.labels is None
    deepcorrect.train(model, data.images, None if label_free else data.labels,
                      dict(data.distortions), preset="cpu_quick", epochs=data.budget["epochs"],
                      batch_size=data.budget["batch_size"], learning_rate=learning_rate,
                      # x0.1 before the last epoch (every 2 epochs up to 3): longer budgets
                      # keep training at the full rate instead of decaying to nothing.
                      decay_every=max(2, data.budget["epochs"] - 1),
                      teacher=data.frozen_teacher() if label_free else None,
                      checkpoint_dir=folder / "checkpoints", seed=data.seed,
                      augment=data.budget["augment"], refresh_statistics=refresh_statistics,
                      verbose=data.verbose)
    return "teacher" if label_free else "yes"


def run_bn_adapt(model, step, data: RepairData, folder: Path):
    """BN adaptation (Schneider et al. 2020) on the distorted repair images.

    Clean repair images serve as the source statistics when the model's batch norms are
    folded (identity statistics), as `adapt_batch_norm` requires.
    """
    from deepcorrect.adaptation import adapt_batch_norm
    from deepcorrect.batch_norm import folded_batch_norms
    from deepcorrect.costs import batch_norm_parameters, batch_norm_statistics

    source = data.images if folded_batch_norms(model) else None
    adapted = adapt_batch_norm(model, data.distorted(step["fraction"]), source_images=source,
                               prior=step["prior"], batch_size=data.budget["batch_size"],
                               verbose=data.verbose)
    params = batch_norm_statistics(adapted)
    if source is not None:  # source matching rewrites the scales and offsets too
        params += batch_norm_parameters(adapted)
    return adapted, {"parameters": params, "labels": "no"}


def run_tent(model, step, data: RepairData, folder: Path):
    """TENT (Wang et al. 2021): batch-norm scales and offsets trained to lower the entropy."""
    from deepcorrect.batch_norm import folded_batch_norms
    from deepcorrect.costs import batch_norm_parameters, batch_norm_statistics
    from deepcorrect.tent import tent

    source = data.images if folded_batch_norms(model) else None
    epochs = data.budget["epochs"] if step["epochs"] is None else step["epochs"]
    adapted = tent(model, data.distorted(step["fraction"]), source_images=source, epochs=epochs,
                   learning_rate=step["learning_rate"], batch_size=data.budget["batch_size"],
                   seed=data.seed, verbose=data.verbose)
    return adapted, {"parameters": batch_norm_parameters(adapted)
                     + batch_norm_statistics(adapted), "labels": "no"}


def run_finetune(model, step, data: RepairData, folder: Path):
    """Finetune-k: the first k conv layers (and their batch norms) trained with the budget."""
    import deepcorrect

    tuned = deepcorrect.finetune(model, step["k"])
    labels = _train(tuned, data, step["learning_rate"], folder)
    return tuned, {"parameters": deepcorrect.trainable_parameters(tuned), "labels": labels}


def rank_for(model, data: RepairData, folder: Path, first: int | None = None,
             ranking: str = "approx"):
    """`deepcorrect.rank` on the budget's `rank_images` (cached in `folder`).

    `ranking` names `rank`'s method and score (`deepcorrect.methods.RANKINGS`): the
    first-order estimate, or exact swaps scored by the true class's log-probability
    (`"exact"`) or its magnitude (`"magnitude"`).
    """
    import deepcorrect

    n = data.budget["rank_images"]
    labels, _ = data.targets()
    if len(data.distortions) == 1:
        (name, levels), = data.distortions.items()
        distortion, levels = name, list(levels)
    else:
        distortion = MixtureDistortion(data.distortions)
        levels = list(range(len(distortion.pairs)))
    from deepcorrect.graph import conv_layers
    from robustkit.training_checks import check_count

    layers = None
    if check_count("first", first, none_ok="every conv layer") is not None:
        layers = [layer.name for layer in conv_layers(model)][: int(first)]
    method, score = RANKINGS[ranking]
    return deepcorrect.rank(model, data.images[:n], labels[:n], distortion, levels,
                            layers=layers, method=method, score=score,
                            seed=data.seed, progress=bool(data.verbose),
                            checkpoint=folder / "ranking.json")


def run_deepcorrect(model, step, data: RepairData, folder: Path):
    """Rank the filters, wrap the model with correction units and train them."""
    import deepcorrect

    folder.mkdir(parents=True, exist_ok=True)
    ranking = rank_for(model, data, folder, step["first"], step["ranking"])
    site = {} if step["site"] is None else {"site": step["site"]}
    wrapped = deepcorrect.wrap(model, ranking, beta=step["beta"], unit=step["unit"], **site)
    labels = _train(wrapped, data, step["learning_rate"], folder, step["refresh_statistics"])
    return wrapped, {"parameters": deepcorrect.trainable_parameters(wrapped), "labels": labels}


def run_qrnet(model, step, data: RepairData, folder: Path):
    """A QRNet restorer trained in front of the frozen model; returns restorer + model."""
    import keras

    import qrnet
    from deepcorrect.surgery import trainable_parameters

    shape = tuple(data.images.shape[1:])
    # A copy without the model's compile state (`clone_model` keeps it), which a saved
    # nested model would otherwise carry.
    classifier = type(model).from_config(model.get_config())
    classifier.set_weights(model.get_weights())
    restorer = qrnet.build_qrnet(input_shape=shape, base_width=step["base_width"],
                                 depth=step["depth"], name="restorer")
    probs = np.asarray(classifier.predict(data.images[:8].astype(np.float32), verbose=0))
    logits = bool(probs.min() < 0 or not np.allclose(probs.sum(-1), 1.0, atol=1e-3))
    trainer = qrnet.QualityRecoveryTrainer(
        restorer, qrnet.ClassifierSpec(classifier, from_logits=logits, name="classifier"),
        mode=step["mode"])
    trainer.compile(optimizer=keras.optimizers.Adam(step["learning_rate"]))
    targets, labels = data.targets()
    batch = data.budget["batch_size"] + data.budget["batch_size"] % 2  # half clean, half not
    qrnet.train(trainer, data.images, targets, dict(data.distortions),
                epochs=data.budget["epochs"], batch_size=batch, patience=None,
                checkpoint_dir=str(folder / "checkpoints"), seed=data.seed,
                verbose=data.verbose)
    # A fresh restorer with the trained weights: the saved model holds no training state.
    clean = qrnet.build_qrnet(input_shape=shape, base_width=step["base_width"],
                              depth=step["depth"], name="restorer")
    clean.set_weights(restorer.get_weights())
    classifier.trainable = False
    inputs = keras.Input(shape, name="pixels")
    combined = keras.Model(inputs, classifier(clean(inputs)), name=f"qrnet_{model.name}")
    return combined, {"parameters": trainable_parameters(clean),
                      "labels": "no" if step["mode"] == "recnet" else labels}


STEPS: dict[str, Callable] = {"bn_adapt": run_bn_adapt, "tent": run_tent,
                              "finetune": run_finetune, "deepcorrect": run_deepcorrect,
                              "qrnet": run_qrnet}


# --- Running a method ----------------------------------------------------------------------


def repair(model, method: Mapping[str, Any], data: RepairData, out: str | os.PathLike,
           stages: Stages, group: str):
    """Runs a method's steps on `model` for one set of distortions, resuming finished ones.

    After each step the model is saved as `out/models/<group>/<chain>.keras` and its record
    (cumulative seconds and parameters, labels needed, the steps) kept in `stages` under
    `repair/<group>/<chain>`, where `<chain>` is `chain_id` of the steps so far. The longest
    finished prefix of the steps is loaded instead of being run again.

    Args:
        model: the original model (not modified).
        method: from `resolve_method`.
        data: the repair data for `group`.
        out: the output folder.
        stages: the run's `Stages`.
        group: the name of the distortions repaired for (a distortion, or "mixture").

    Returns:
        `(repaired model, record)`; the record has `seconds`, `parameters`, `labels`,
        `steps`, `path` (relative to `out`) and `resumed` (whether a step resumed
        part-way). The model is None when every step had finished before: load it from
        `out / record["path"]` (`read_model`) when it is needed. For no steps: `model`.
    """
    out = Path(out)
    steps = list(method["steps"])
    if not steps:
        return model, {"seconds": 0.0, "parameters": 0, "labels": "no", "steps": [],
                       "path": None, "resumed": False}
    keys = [f"repair/{group}/{chain_id(steps[: i + 1])}" for i in range(len(steps))]
    paths = [Path("models") / group / f"{chain_id(steps[: i + 1])}.keras"
             for i in range(len(steps))]
    done = 0
    for i in reversed(range(len(steps))):
        if stages.done(keys[i]) and (out / paths[i]).is_file():
            done = i + 1
            break
    if done == len(steps):
        return None, stages.record(keys[-1])
    record = (stages.record(keys[done - 1]) if done else
              {"seconds": 0.0, "parameters": 0, "labels": "no", "resumed": False})
    current = read_model(out / paths[done - 1]) if done else model
    import keras

    for i in range(done, len(steps)):
        folder = out / "work" / group / chain_id(steps[: i + 1])
        resumed = folder.exists()
        keras.utils.set_random_seed(data.seed)
        start = time.time()
        current, info = STEPS[steps[i]["kind"]](current, steps[i], data, folder)
        seconds = time.time() - start
        write_model(current, out / paths[i])
        record = {"seconds": record["seconds"] + seconds,
                  "parameters": record["parameters"] + int(info["parameters"]),
                  "labels": merge_labels(record["labels"], info["labels"]),
                  "steps": steps[: i + 1], "path": str(paths[i]),
                  "resumed": bool(record["resumed"] or resumed),
                  "images": int(len(data.images)), "epochs": data.budget["epochs"],
                  "batch_size": data.budget["batch_size"]}
        stages.finish(keys[i], **record)
    return current, record

"""What every training entry point shares: argument checks, seeds, and a divergence guard.

`deepcorrect.train`, `deepcorrect.wrap` and `qrnet.train` (and the model builders behind
them) use these, so a bad `epochs`, `batch_size` or `learning_rate` is refused the same way
everywhere, the same seed gives the same weights in any process, and a run whose loss
becomes NaN or infinite stops with one clear error instead of saving a broken model.

- `check_count`, `check_rate`: argument checks; `None` is allowed only where the caller
  says it means "the preset's default" (seeds: `robustkit.seeds.check_seed`).
- `derived_seed(seed, key)`: a seed for one part of a model (a layer, a unit), the same in
  every process, different for different keys.
- `reseed_generators(model, seed)`: puts every `keras.random.SeedGenerator` of a model
  (`Dropout` and friends draw from them) in a state that depends on `seed` alone.
- `DivergenceGuard`: a callback that raises `TrainingDiverged` at the first non-finite
  loss, before any checkpoint of that epoch is written.

Example:

>>> check_count("epochs", 3)
3
>>> check_count("epochs", None, none_ok=True) is None
True
>>> check_rate("learning_rate", 0.01)
0.01
>>> derived_seed(0, "conv1") == derived_seed(0, "conv1") != derived_seed(1, "conv1")
True
"""

from __future__ import annotations

import math
import zlib
from numbers import Integral, Real
from typing import Any

import keras
import numpy as np

from robustkit.seeds import SEED_MAX, check_seed


def _or_none(none_ok: bool | str) -> str:
    if isinstance(none_ok, str):
        return f" or None ({none_ok})"
    return " or None" if none_ok else ""


def check_count(name: str, value: Any, low: int = 1, none_ok: bool | str = False) -> int | None:
    """Checks that `value` is an integer >= `low` (a count of epochs, images, steps).

    Args:
        name: The argument's name, used in the message.
        value: The value to check. Booleans and floats (even `2.0`) are refused.
        low: The smallest allowed value. Defaults to 1.
        none_ok: Whether None is allowed; a string says what None means, for the message
            (`"the preset's value"`). Defaults to False.

    Returns:
        The value as a Python int, or None.

    Raises:
        TypeError: If `value` is not an integer.
        ValueError: If `value` is smaller than `low`.

    Example:

    >>> check_count("batch_size", np.int64(32))
    32
    """
    allowed = f"an integer >= {low}" + _or_none(none_ok)
    if value is None and none_ok:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be {allowed}. Received: {name}={value!r}")
    if value < low:
        raise ValueError(f"{name} must be {allowed}. Received: {name}={value!r}")
    return int(value)


def check_rate(name: str, value: Any, none_ok: bool | str = False) -> float | None:
    """Checks that `value` is a finite real number > 0 (a learning rate).

    Args:
        name: The argument's name, used in the message.
        value: The value to check (a number or a 0-d array). Booleans, NaN and infinities
            are refused.
        none_ok: Whether None is allowed; a string says what None means, for the message.
            Defaults to False.

    Returns:
        The value as a Python float, or None.

    Raises:
        TypeError: If `value` is not a real number.
        ValueError: If `value` is NaN, infinite or not > 0.

    Example:

    >>> check_rate("learning_rate", np.float32(0.5))
    0.5
    """
    allowed = "a finite number > 0" + _or_none(none_ok)
    if value is None and none_ok:
        return None
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{name} must be {allowed}. Received: {name}={value!r}")
    if not math.isfinite(float(value)) or not float(value) > 0:
        raise ValueError(f"{name} must be {allowed}. Received: {name}={float(value)}")
    return float(value)


def derived_seed(seed: int, key: str) -> int:
    """A seed for the part of a model named `key`, derived from `seed`.

    The same `(seed, key)` gives the same value in every process (no Python `hash`, which
    is salted per process); other keys or seeds give unrelated values.

    Args:
        seed: The run's seed, an integer in `[0, SEED_MAX]`.
        key: What the seed is for, such as a layer name.

    Returns:
        An integer in `[0, SEED_MAX]`.

    Example:

    >>> derived_seed(0, "conv1_unit")
    696828517
    """
    entropy = [check_seed(seed), zlib.crc32(str(key).encode("utf-8"))]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0]) & SEED_MAX


def seed_generator_states(model: keras.layers.Layer) -> list:
    """The state variables of the `keras.random.SeedGenerator`s of `model`, in model order.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dropout(0.5)])
    >>> len(seed_generator_states(model))
    1
    """
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def reseed_generators(model: keras.layers.Layer, seed: int) -> None:
    """Sets the state of every random seed generator of `model` from `seed` alone.

    Layers such as `Dropout` draw from a `keras.random.SeedGenerator` whose initial state
    comes from the Python RNG of the process that built the layer (or a copy of it), so
    two processes would drop different units. After this call, generator `i` (in the order
    of `model.variables`) starts from `derived_seed(seed, "seed_generator_<i>")`.

    Args:
        model: A Keras model or layer.
        seed: The run's seed.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dropout(0.5)])
    >>> reseed_generators(model, 3)
    >>> seed_generator_states(model)[0].numpy().tolist() == [derived_seed(3, "seed_generator_0"), 0]
    True
    """
    for index, state in enumerate(seed_generator_states(model)):
        value = np.array([derived_seed(seed, f"seed_generator_{index}"), 0])
        state.assign(value.astype(state.dtype))


class TrainingDiverged(ValueError):
    """Training produced a NaN or infinite loss (or weights); nothing of that epoch was kept."""


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, with an error saying what to change.

    After every batch the logged losses are checked, and after every epoch the epoch's
    losses (validation included) and the model's weights. On a NaN or infinite value the
    model's weights are put back to those it had at the start of that epoch and
    `TrainingDiverged` is raised from inside `fit`. Callbacks listed after the guard (the
    checkpoints) never see that epoch end, so no model or checkpoint of it is written.
    Place it first in the callback list.

    Args:
        learning_rate: The run's initial learning rate, quoted in the message.

    Example:

    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(1e30), loss="mse")
    >>> x = np.full((8, 1), 1e10, "float32")
    >>> try:
    ...     model.fit(x, x, epochs=3, batch_size=4, verbose=0,
    ...               callbacks=[DivergenceGuard(1e30)])
    ... except TrainingDiverged as e:
    ...     print(str(e).split(";")[0])
    training diverged: loss is inf at epoch 1, step 2
    """

    def __init__(self, learning_rate: float):
        super().__init__()
        self.learning_rate = learning_rate
        self._epoch = 0
        self._start: list[np.ndarray] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start = self.model.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"at epoch {self._epoch + 1}, step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        where = f"at the end of epoch {epoch + 1}"
        self._check(logs, where)
        for weight in self.model.weights:
            if not np.isfinite(np.asarray(weight)).all():
                self._fail(f"weight {weight.path} is not finite {where}")

    def _check(self, logs, where: str) -> None:
        for key, value in (logs or {}).items():
            if "loss" not in key:
                continue
            value = float(np.asarray(value))
            if not math.isfinite(value):
                self._fail(f"{key} is {value} {where}")

    def _fail(self, what: str) -> None:
        if self._start is not None:
            self.model.set_weights(self._start)
        raise TrainingDiverged(
            f"training diverged: {what}; lower learning_rate (was {self.learning_rate}) or "
            "check the data for NaN or infinite values. Nothing of this epoch was saved, and "
            "the model holds the weights it had before it."
        )

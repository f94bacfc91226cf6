"""Argument validation shared by the distort modules."""

from __future__ import annotations

import math
from numbers import Real


def check_level(name: str, value, low: float = 0.0, high: float = math.inf) -> float:
    """Checks that a scalar level is a finite real number in [low, high].

    Args:
        name: Argument name, used in the error message.
        value: The value to check.
        low: Smallest allowed value.
        high: Largest allowed value.

    Returns:
        The value as a Python float.

    Raises:
        TypeError: If `value` is not a real number.
        ValueError: If `value` is NaN, infinite or outside [low, high].
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        try:
            import numpy as np

            if isinstance(value, np.ndarray) and value.ndim == 0:
                value = value.item()
            else:
                raise TypeError
        except TypeError:
            raise TypeError(
                f"{name} must be a real number in [{low}, {high}]. Received: {name}={value!r}"
            ) from None
    value = float(value)
    if not math.isfinite(value) or value < low or value > high:
        bound = f"[{low}, {high}]" if math.isfinite(high) else f">= {low}"
        raise ValueError(f"{name} must be a finite number {bound}. Received: {name}={value}")
    return value

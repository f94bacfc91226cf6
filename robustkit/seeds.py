"""The one check every entry point that takes a seed uses.

A seed is an integer in `[0, SEED_MAX]`: a Python or NumPy integer, not a bool or a
float. That is the range every consumer accepts: TensorFlow's stateless random ops,
Keras's `SeedGenerator` (a 32-bit state), NumPy's generators (non-negative) and
`keras.utils.set_random_seed` (below 2**32). The command lines parse `--seed` with
`seed_argument`, the same check as an `argparse` type.

Example:

>>> check_seed(7)
7
>>> check_seed(-1)
Traceback (most recent call last):
...
ValueError: seed must be an integer in [0, 2147483647]. Received: seed=-1
"""

from __future__ import annotations

import argparse
from numbers import Integral
from typing import Any

import numpy as np

SEED_MAX = 2**31 - 1


def check_seed(seed: Any, name: str = "seed", optional: bool = False) -> int | None:
    """Checks that `seed` is an integer in `[0, SEED_MAX]`.

    Args:
        seed: The seed: a Python or NumPy integer (a 0-d integer array too).
        name: The argument's name, used in the message. Defaults to `"seed"`.
        optional: Whether None is allowed (it then means "fresh randomness"); the
            message is the same either way.

    Returns:
        The seed as a Python int, or None.

    Raises:
        TypeError: If `seed` is not an integer (bools, floats and strings included).
        ValueError: If `seed` is negative or larger than `SEED_MAX`.

    Example:

    >>> import numpy as np
    >>> check_seed(np.int64(3)), check_seed(None, optional=True)
    (3, None)
    """
    allowed = f"an integer in [0, {SEED_MAX}]"  # one wording, None allowed or not
    if seed is None and optional:
        return None
    if isinstance(seed, np.ndarray) and seed.ndim == 0 and seed.dtype.kind in ("i", "u"):
        seed = seed.item()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, Integral):
        raise TypeError(f"{name} must be {allowed}. Received: {name}={seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{name} must be {allowed}. Received: {name}={seed!r}")
    return int(seed)


def seed_argument(text: str) -> int:
    """`argparse` type of `--seed`: an integer in `[0, SEED_MAX]`, or a usage error.

    Args:
        text: The command-line value.

    Returns:
        The seed.

    Raises:
        argparse.ArgumentTypeError: With `check_seed`'s message.

    Example:

    >>> seed_argument("12")
    12
    """
    try:
        value: Any = int(text.strip())
    except ValueError:
        value = text
    try:
        return check_seed(value)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None

"""One value for "a distortion": its name, the levels to draw from, its options.

Every entry point that takes a distortion reads it through `as_distortions`:
`distort.pipeline.training_dataset` and `restoration_dataset`,
`deepcorrect.train`, `deepcorrect.rank` and `qrnet.paired_batches`. It
accepts:

- a name, `"awgn"`, its levels given beside it (`levels=[10, 20]`);
- a `Distortion`, `Distortion("gaussian_blur", [1, 2], {"window": "4sigma-1"})`;
- a dict name -> levels, `{"awgn": [10, 20], "jpeg": [10]}`;
- a list of names, `Distortion`s and `(name, levels)` pairs.

Callables stay the escape hatch where an entry point takes one:
`deepcorrect.rank` takes `fn(images, level, seed)` and `qrnet.paired_batches`
takes `distort_fn(images, seed)`; a `Distortion` is itself a
`fn(images, level, seed)`.

Example:

>>> as_distortions({"awgn": [10, 20]})
(Distortion(name='awgn', levels=(10.0, 20.0), options={}),)
>>> as_distortions("jpeg", levels=[10]) == (Distortion("jpeg", [10]),)
True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from distort import registry
from robustkit.checks import check_level


@dataclasses.dataclass(frozen=True)
class Distortion:
    """A distortion by name, with the levels to draw from and its options.

    Calling it applies it at one level: `d(images, level, seed)` is
    `distort.apply(images, d.name, level, seed=seed, **d.options)`. The seed
    defaults to 0, so that a `Distortion` is a deterministic function of the
    images and the level; pass `seed=None` for fresh randomness.

    Args:
        name: A name from `distort.names()`.
        levels: The levels to draw from, each inside the distortion's range
            (`distort.registry.level_range`): a number or a sequence of
            numbers, stored as a tuple of floats. Defaults to `()`, for a
            distortion whose every call passes its level.
        options: Keyword options of the distortion's function, e.g.
            `{"window": "4sigma-1"}` for "gaussian_blur" (see
            `distort.presets.options`). Defaults to none.

    Raises:
        ValueError: For an unknown name (worded as `distort.apply` words it),
            or a level outside the distortion's range.
        TypeError: For levels that are not numbers, or an option the
            distortion's function does not take.

    Example:

    >>> import numpy as np
    >>> blur = Distortion("gaussian_blur", [1, 2], {"window": "4sigma-1"})
    >>> blur.levels
    (1.0, 2.0)
    >>> blur(np.zeros([8, 8, 3], np.uint8), 1.0).shape
    TensorShape([8, 8, 3])
    """

    name: str
    levels: tuple[float, ...] = ()
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self):
        registry.check_name(self.name)
        low, high = registry.level_range(self.name)
        levels = tuple(check_level("levels", v, low, high) for v in _as_levels(self.levels))
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "options", registry.check_options(self.name, self.options or {}))

    def __call__(self, images, level, seed: int | None = 0):
        """Applies the distortion at `level` (see `distort.apply`).

        Args:
            images: NHWC or HWC images, uint8 or float on 0..255.
            level: A number, or one level per image.
            seed: Seed of a random distortion. Defaults to 0.

        Returns:
            The distorted images, same shape and dtype.

        Example:

        >>> import numpy as np
        >>> Distortion("awgn")(np.zeros([4, 4, 3], np.uint8), 10.0, seed=1).dtype
        tf.uint8
        """
        return registry.apply(images, self.name, level, seed=seed, **self.options)

    def to_config(self) -> dict[str, Any]:
        """Returns the fields as a JSON-ready dict; `from_config` undoes it.

        Example:

        >>> Distortion("jpeg", [10]).to_config()
        {'name': 'jpeg', 'levels': [10.0], 'options': {}}
        """
        return {"name": self.name, "levels": list(self.levels), "options": dict(self.options)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Distortion:
        """Builds a `Distortion` from `to_config`'s dict.

        Example:

        >>> d = Distortion("contrast", [0.5])
        >>> Distortion.from_config(d.to_config()) == d
        True
        """
        return cls(**config)


# What `as_distortions` accepts.
DistortionSpec = str | Distortion | Mapping[str, Any] | Sequence[Any]


def entries(spec: DistortionSpec, levels=None,
            options: Mapping[str, Any] | None = None) -> list[tuple[str, tuple[float, ...], dict]]:
    """The `(name, levels, options)` a spec lists, in its order, names not checked.

    `as_distortions` is this, each entry checked as a `Distortion`. Use it
    where names outside `distort.names()` are allowed (a custom apply
    function, as `qrnet.resolve_distortions` takes).

    Args:
        spec: A name, a `Distortion`, a dict name -> levels, or a list of
            names, `Distortion`s and `(name, levels)` pairs.
        levels: Levels for every entry that carries none (a name, or a
            `Distortion` without levels). Defaults to None.
        options: Options added to every entry's own (they win on a clash).
            Defaults to None.

    Returns:
        The entries, levels as tuples of floats (empty where none).

    Raises:
        TypeError: For another kind of spec or item, or levels that are not
            numbers.
        ValueError: For `levels` given to an entry that carries its own.

    Example:

    >>> entries([("shift", [1, 2]), Distortion("awgn", [10])])
    [('shift', (1.0, 2.0), {}), ('awgn', (10.0,), {})]
    """
    if isinstance(spec, (str, Distortion)):
        items = [spec]
    elif isinstance(spec, Mapping):
        items = [(str(name), own) for name, own in spec.items()]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise TypeError("distortion must be a name, a Distortion, a dict name -> levels or a "
                        f"list of those. Received: distortion={spec!r}")
    shared = _as_levels(levels)
    out = []
    for item in items:
        if isinstance(item, str):
            name, own, own_options = item, (), {}
        elif isinstance(item, Distortion):
            name, own, own_options = item.name, item.levels, dict(item.options)
        elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
            name, own, own_options = item[0], _as_levels(item[1]), {}
        else:
            raise TypeError("each distortion must be a name, a Distortion or a (name, levels) "
                            f"pair. Received: {item!r}")
        if levels is not None:
            if own:
                raise ValueError(f"levels must be None when {name!r} carries its own levels "
                                 f"{list(own)}. Received: levels={levels!r}")
            own = shared
        out.append((name, own, {**own_options, **(options or {})}))
    return out


def as_distortions(spec: DistortionSpec, levels=None,
                   options: Mapping[str, Any] | None = None) -> tuple[Distortion, ...]:
    """Reads any accepted form of "a distortion" as `Distortion`s, checked.

    Args:
        spec: A name, a `Distortion`, a dict name -> levels, or a list of
            names, `Distortion`s and `(name, levels)` pairs.
        levels: Levels for every entry that carries none (a name, or a
            `Distortion` without levels). Defaults to None.
        options: Options added to every distortion's own (they win on a
            clash). Defaults to None.

    Returns:
        The distortions, in the spec's order (a dict's insertion order).

    Raises:
        ValueError: For an empty spec, an unknown name, a level outside its
            distortion's range, or `levels` given to an entry that carries
            its own.
        TypeError: For another kind of spec, levels that are not numbers, or
            an option a distortion does not take.

    Example:

    >>> [d.name for d in as_distortions(["awgn", ("jpeg", [10])], levels=None)]
    ['awgn', 'jpeg']
    >>> as_distortions("awgn", [10, 20])[0].levels
    (10.0, 20.0)
    """
    found = tuple(Distortion(*entry) for entry in entries(spec, levels, options))
    if not found:
        raise ValueError(f"distortion must name at least one distortion. Received: "
                         f"distortion={spec!r}")
    return found


def _as_levels(levels) -> tuple[float, ...]:
    """A number or an array-like of numbers as a flat tuple of floats (None: empty)."""
    if levels is None:
        return ()
    try:
        values = np.asarray(levels, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"levels must be numbers. Received: levels={levels!r}") from None
    return tuple(values.tolist())

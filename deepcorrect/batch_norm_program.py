"""A model's batch norms located in its flattened graph, measured exactly, layer by layer.

`BatchNormProgram` flattens a Functional or Sequential model (nested models
expanded, `deepcorrect.graph.flatten`) and finds every `BatchNormalization`
layer in it: the graph's own and those held inside other layers (the batch
norms of `deepcorrect.CorrectionUnit`s, named `"<unit>/<batch norm>"`). It runs
the graph call by call on real tensors, in inference mode or with only the
batch norms in training mode (what TENT needs), and measures the exact
per-channel mean and population variance of chosen batch norms' inputs over
many batches (`Moments`). `deepcorrect.adaptation` and `deepcorrect.tent` build
on it; nothing here modifies a model except `adapt_in_memory`'s `update`.

A batch norm inside another layer is reached by a probe: while it is measured,
its instance `call` is shadowed by one that records its input and then calls
the class's `call`, and restored afterwards.

Example:

```python
import keras
from deepcorrect.batch_norm_program import BatchNormProgram

model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                          keras.layers.BatchNormalization(name="bn")])
program = BatchNormProgram(model)
[site.name for site in program.sites]                 # ['bn']
moments = program.measure([images], [0])[0]          # the conv output's statistics
moments.mean, moments.variance
```
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Hashable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from deepcorrect import graph
from deepcorrect.checks import check_model

BatchNorm = keras.layers.BatchNormalization


@dataclasses.dataclass(frozen=True)
class BatchNormSite:
    """One batch-norm layer of a model and the graph calls that run it.

    Attributes:
        name: the layer's name; `"<owner>/<name>"` for one inside another layer.
        layer: the `BatchNormalization` layer.
        calls: indices (in the program's flat graph) of the calls that run it:
            its own calls, or those of the layer that holds it.
        owner: the leaf layer holding it (a correction unit), or None.
    """

    name: str
    layer: BatchNorm
    calls: tuple[int, ...]
    owner: keras.layers.Layer | None = None


class Moments:
    """Exact per-channel mean and population variance, accumulated over batches.

    Batches are combined with Chan et al.'s pairwise update in float64, so the
    result equals the mean and variance over all values at once.

    Args:
        axis: the channel axis of the tensors added.

    Example:

    >>> m = Moments(-1)
    >>> m.add(np.array([[1.0, 10.0], [3.0, 10.0]]))
    >>> m.add(np.array([[5.0, 40.0]]))
    >>> m.mean.tolist(), m.variance.tolist(), m.count
    ([3.0, 20.0], [2.6666666666666665, 200.0], 3)
    """

    def __init__(self, axis: int):
        self.axis = int(axis)
        self.count = 0
        self.mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def add(self, values: Any) -> None:
        """Adds a tensor (any rank, channels on `axis`)."""
        x = tf.cast(values, tf.float64)
        axis = self.axis % len(x.shape)
        axes = [a for a in range(len(x.shape)) if a != axis]
        n = int(np.prod([x.shape[a] for a in axes]))
        if n == 0:
            return
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        m2 = tf.reduce_sum(tf.square(x - mean), axis=axes).numpy()
        mean = tf.reshape(mean, [-1]).numpy()
        if self.mean is None:
            self.count, self.mean, self._m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        """The population variance (divided by the number of values)."""
        return self._m2 / self.count


def _accepts_training(operation: Any) -> bool:
    return "training" in getattr(operation, "_call_context_args", ())


def _sub_batch_norms(layer: Any) -> list[BatchNorm]:
    """Batch norms held inside a leaf layer (not a model), in creation order."""
    if isinstance(layer, BatchNorm) or not isinstance(layer, keras.layers.Layer):
        return []
    return [sub for sub in layer._flatten_layers(include_self=False) if isinstance(sub, BatchNorm)]


@contextlib.contextmanager
def _recording(sites: Sequence[tuple[int, BatchNorm]], sink: dict[int, list]) -> Iterator[None]:
    """While active, each listed batch norm appends its input to `sink[index]` when called."""
    for index, layer in sites:
        def call(inputs, *args, _layer=layer, _index=index, **kwargs):
            sink.setdefault(_index, []).append(inputs)
            return type(_layer).call(_layer, inputs, *args, **kwargs)

        vars(layer)["call"] = call  # an instance attribute shadows the class's `call`
    try:
        yield
    finally:
        for _, layer in sites:
            vars(layer).pop("call", None)


class BatchNormProgram:
    """A model as a flat list of calls, with its batch norms located in it.

    Runs the model (or the part of it needed to reach some batch norms) on real
    tensors, with every layer in inference mode or with the batch norms alone
    in training mode, and measures the inputs of chosen batch norms.

    Args:
        model: a Functional or Sequential model with one input and one output
            (nested models are expanded). It is run and measured, not copied.

    Raises:
        TypeError: for anything but a Functional or Sequential model.
        ValueError: for a model with several inputs or outputs.

    Example:

    >>> m = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1, name="c"),
    ...                       keras.layers.BatchNormalization(name="bn")])
    >>> [s.name for s in BatchNormProgram(m).sites]
    ['bn']
    """

    def __init__(self, model: keras.Model):
        check_model(model)
        flat = graph.flatten(model)
        if len(flat.inputs) != 1 or len(flat.outputs) != 1:
            raise ValueError(f"model must have one input and one output; {model.name!r} has "
                             f"{len(flat.inputs)} inputs and {len(flat.outputs)} outputs.")
        self.model = model
        self.calls = flat.calls
        self.input_key = flat.inputs[0]
        self.output_key = flat.outputs[0]
        self.producer: dict[Hashable, int] = {
            key: i for i, call in enumerate(self.calls) for key in call.outputs}
        self.sites = self._find_sites()
        self.generations = self._generations() if self.sites else []

    def require_batch_norm(self) -> None:
        """Raises a ValueError if the model has no batch norm."""
        if not self.sites:
            raise ValueError(
                f"model {self.model.name!r} has no BatchNormalization layers: batch-norm "
                "adaptation and TENT re-estimate or train batch norms, so the model needs at "
                "least one (a VGG16 has none; use deepcorrect.wrap or finetune for it).")

    def _find_sites(self) -> list[BatchNormSite]:
        leaf: dict[int, list[int]] = {}
        held: dict[int, list[int]] = {}
        for i, call in enumerate(self.calls):
            op = call.operation
            if isinstance(op, BatchNorm):
                leaf.setdefault(id(op), []).append(i)
            elif _sub_batch_norms(op):
                held.setdefault(id(op), []).append(i)
        sites = []
        done: set[int] = set()
        for i, call in enumerate(self.calls):
            op = call.operation
            if id(op) in done:
                continue
            done.add(id(op))
            if id(op) in leaf:
                sites.append(BatchNormSite(op.name, op, tuple(leaf[id(op)])))
            elif id(op) in held:
                sites.extend(BatchNormSite(f"{op.name}/{bn.name}", bn, tuple(held[id(op)]), op)
                             for bn in _sub_batch_norms(op))
        return sites

    def ancestors(self, keys: Sequence[Hashable]) -> set[int]:
        """Indices of the calls needed to compute `keys` from the model input."""
        needed: set[int] = set()
        stack = [k for k in keys if k in self.producer]
        while stack:
            i = self.producer[stack.pop()]
            if i not in needed:
                needed.add(i)
                stack.extend(k for k in self.calls[i].inputs if k in self.producer)
        return needed

    def _upstream(self, site: BatchNormSite) -> set[int]:
        """Calls whose batch norms act on `site`'s inputs (its own calls excluded)."""
        keys = [k for i in site.calls for k in self.calls[i].inputs]
        return self.ancestors(keys) - set(site.calls)

    def _generations(self) -> list[list[int]]:
        """Site indices grouped so that each group depends only on earlier groups."""
        level: dict[int, int] = {}
        previous_in_owner: dict[int, int] = {}
        for s, site in enumerate(self.sites):
            upstream = self._upstream(site)
            deps = [t for t in range(s) if upstream.intersection(self.sites[t].calls)]
            if site.owner is not None and id(site.owner) in previous_in_owner:
                deps.append(previous_in_owner[id(site.owner)])
            if site.owner is not None:
                previous_in_owner[id(site.owner)] = s
            level[s] = 1 + max((level[t] for t in deps), default=-1)
        groups: list[list[int]] = [[] for _ in range(max(level.values()) + 1)]
        for s, g in level.items():
            groups[g].append(s)
        return groups

    def run(self, x: Any, calls: Sequence[int] | None = None,
            batch_norm_training: bool = False) -> dict[Hashable, Any]:
        """Runs the given calls (default: all) in order on input `x`.

        Args:
            x: a batch in the model's input format.
            calls: indices of the calls to run, in order; None runs every call.
            batch_norm_training: call the batch norms (and the layers holding
                some) with `training=True`, every other layer with
                `training=False`. The batch norms must be trainable to use the
                batch's statistics (Keras runs a frozen one in inference mode).

        Returns:
            The computed tensors by key.
        """
        values: dict[Hashable, Any] = {self.input_key: x}
        held = {id(site.owner) for site in self.sites if site.owner is not None}
        for i in (range(len(self.calls)) if calls is None else calls):
            call = self.calls[i]
            args, kwargs = call.fill(values)
            op = call.operation
            if _accepts_training(op):
                kwargs["training"] = batch_norm_training and (
                    isinstance(op, BatchNorm) or id(op) in held)
            for key, y in zip(call.outputs, keras.tree.flatten(op(*args, **kwargs))):
                values[key] = y
        return values

    def forward(self, x: Any, batch_norm_training: bool = False) -> Any:
        """The model's output on `x` (see `run` for `batch_norm_training`)."""
        return self.run(x, batch_norm_training=batch_norm_training)[self.output_key]

    def measure(self, batches: Iterator[Any], site_indices: Sequence[int]) -> dict[int, Moments]:
        """Exact input statistics of the chosen batch norms over all batches.

        Only the calls needed to reach them run, all in inference mode.

        Args:
            batches: an iterable of input batches.
            site_indices: indices into `sites`.

        Returns:
            `{site index: Moments}` of each chosen batch norm's inputs.
        """
        chosen = [(s, self.sites[s]) for s in site_indices]
        leaf_keys = {s: [self.calls[i].inputs[0] for i in site.calls]
                     for s, site in chosen if site.owner is None}
        held_calls = {i for _, site in chosen if site.owner is not None for i in site.calls}
        needed = self.ancestors([k for keys in leaf_keys.values() for k in keys])
        needed |= held_calls | self.ancestors(
            [k for i in held_calls for k in self.calls[i].inputs])
        order = sorted(needed)
        moments = {s: Moments(site.layer.axis) for s, site in chosen}
        probes = [(s, site.layer) for s, site in chosen if site.owner is not None]
        for x in batches:
            sink: dict[int, list] = {}
            with _recording(probes, sink):
                values = self.run(x, order)
            for s, keys in leaf_keys.items():
                for key in keys:
                    moments[s].add(values[key])
            for s, tensors in sink.items():
                for tensor in tensors:
                    moments[s].add(tensor)
        for s, site in chosen:
            _check_finite(site, moments[s])
        return moments

    def peak_bytes_per_image(self, x: Any) -> int:
        """The largest size of the tensors alive at once in a forward pass, per image.

        Args:
            x: one input batch (the first image of it is run).
        """
        values = self.run(x[:1])
        last_use = self._last_use()
        live, peak = {}, 0
        for i, call in enumerate(self.calls):
            for key in call.outputs:
                live[key] = int(np.prod(values[key].shape)) * values[key].dtype.size
            peak = max(peak, sum(live.values()))
            for key in [k for k in live if last_use.get(k, -1) <= i and k != self.output_key]:
                del live[key]
        return peak

    def _last_use(self) -> dict[Hashable, int]:
        last: dict[Hashable, int] = {}
        for i, call in enumerate(self.calls):
            for key in call.inputs:
                last[key] = i
        return last

    def adapt_in_memory(self, batches: Iterator[Any],
                        update: Callable[[int, Moments], None]) -> None:
        """Adapts every batch norm in one pass, holding all batches' activations at once.

        The graph runs call by call over every batch; at each batch norm (or
        layer holding some) the statistics of its inputs over all batches are
        measured and handed to `update(site index, moments)`, which sets the
        layer, before the call runs. Only for models whose batch norms are each
        called once (`shared` False).

        Args:
            batches: the input batches.
            update: sets the moving statistics of a site from its moments.
        """
        leaf = {site.calls[0]: s for s, site in enumerate(self.sites) if site.owner is None}
        held: dict[int, list[int]] = {}
        for s, site in enumerate(self.sites):
            if site.owner is not None:
                held.setdefault(site.calls[0], []).append(s)
        last_use = self._last_use()
        values: dict[Hashable, list] = {self.input_key: list(batches)}
        count = len(values[self.input_key])

        def run_on_all(i: int) -> list:
            call, results = self.calls[i], []
            for b in range(count):
                args, kwargs = call.fill({k: values[k][b] for k in call.inputs})
                if _accepts_training(call.operation):
                    kwargs["training"] = False
                results.append(keras.tree.flatten(call.operation(*args, **kwargs)))
            return results

        for i, call in enumerate(self.calls):
            if i in leaf:
                s = leaf[i]
                moments = Moments(self.sites[s].layer.axis)
                for tensor in values[call.inputs[0]]:
                    moments.add(tensor)
                _check_finite(self.sites[s], moments)
                update(s, moments)
            for s in held.get(i, ()):
                sink: dict[int, list] = {}
                with _recording([(s, self.sites[s].layer)], sink):
                    run_on_all(i)
                moments = Moments(self.sites[s].layer.axis)
                for tensor in sink.get(s, ()):
                    moments.add(tensor)
                _check_finite(self.sites[s], moments)
                update(s, moments)
            results = run_on_all(i)
            for j, key in enumerate(call.outputs):
                values[key] = [r[j] for r in results]
            for key in call.inputs:
                if last_use[key] == i and key != self.output_key:
                    values.pop(key, None)

    @property
    def shared(self) -> bool:
        """Whether some batch norm runs in more than one call (a shared layer)."""
        return any(len(site.calls) > 1 for site in self.sites)


def _check_finite(site: BatchNormSite, moments: Moments) -> None:
    if moments.mean is None or not (np.isfinite(moments.mean).all()
                                    and np.isfinite(moments.variance).all()):
        raise ValueError(
            f"The inputs of batch norm {site.name!r} are not finite numbers on these images "
            "(overflow, or a wrong preprocess); nothing was adapted.")


def batch_norm_layers(model: keras.Model) -> list[str]:
    """Names of the batch-norm layers of `model`, in graph order.

    Nested models are expanded; a batch norm inside another layer (a
    correction unit's) is named `"<holding layer>/<batch norm>"`.

    Args:
        model: a Functional or Sequential model.

    Returns:
        The names; an empty list for a model without batch norm.

    Raises:
        TypeError: for anything but a Functional or Sequential model.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"),
    ...                       keras.layers.BatchNormalization(name="bn")])
    >>> batch_norm_layers(m)
    ['bn']
    """
    return [site.name for site in BatchNormProgram(model).sites]

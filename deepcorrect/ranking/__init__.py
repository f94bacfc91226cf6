"""Correction-priority ranking of convolutional filters (Algorithm 1).

DeepCorrect (Borkar and Karam, https://arxiv.org/abs/1705.02406, Section 4.1)
ranks every filter `j` of a convolutional layer `i` by its correction priority

    tau(i, j) = p_swp(i, j) - p_b,

the top-1 accuracy on distorted images when the distorted output of filter `j`
is replaced by its clean output, minus the accuracy on the distorted images.

How it is computed here, for any Keras functional CNN:

1. The model is flattened into a *program*: a topologically ordered list of
   steps (one per layer call, nested models expanded), each reading and writing
   named tensors. Nothing in the user's model is modified or re-wired.
2. For one layer, the *site* tensor is its output (`"pre_activation"`; a conv
   with a built-in activation is split into its linear part and the activation)
   or the end of the batch-norm/activation chain that follows it
   (`"post_activation"`).
3. The *head* computes the site tensor, plus every *boundary* tensor that the
   rest of the network reads from before the site (a residual shortcut, a
   second branch), once for the clean and once for the distorted images.
4. The *tail* runs only the steps downstream of the site. `K` filter swaps are
   evaluated in one call by stacking `K` copies of the batch, copy `k` taking
   channel `j_k` from the clean activations (`tf.where` on a one-hot mask, so
   the swapped values are bit-exact copies).
5. Per-channel layers right after the site (batch norm, elementwise
   activations, pooling, padding, depthwise convolutions with multiplier 1)
   commute with a channel swap, element for element. The swap is made after
   them, so they run once per image rather than once per stacked swap.

Besides the top-1 gain, `score="log_prob"` scores a swap by the mean gain in
the true class's log-probability, a continuous score where the top-1 gain
moves in steps of `1 / N`. The exact method keeps every image's outcome, so
each layer also gets a reliability (`Ranking.reliability`): the Spearman
correlation between the priorities on two fixed halves of the images, its
Spearman-Brown correction, and bootstrap intervals per filter.

`method="approx"` replaces step 4 by a first-order estimate from one forward
and backward pass per image: the loss change of a swap is approximated by
`sum((a_clean - a_distorted) * dLoss/da)` over the filter's positions, and the
priority is its negation.

Example:

```python
import numpy as np
import keras
from deepcorrect.ranking import rank

inputs = keras.Input((8, 8, 3))
x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
x = keras.layers.ReLU()(x)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(3, activation="softmax")(x)
model = keras.Model(inputs, outputs, name="tiny")

rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (16, 8, 8, 3)).astype("float32")
labels = rng.integers(0, 3, 16)

def noise(x, level, seed):
    return x + np.random.default_rng(seed).normal(0, level, x.shape)

ranking = rank(model, images, labels, noise, levels=[20.0, 40.0],
               preprocess=lambda x: x / 255.0, progress=False)
ranking.priorities["conv1"].shape   # (4,)
ranking.top("conv1", 0.5)           # indices of the 2 most susceptible
ranking.reliability("conv1").spearman_brown  # split-half reliability
```

The package, in reading order:

- `schema`: the values of `site`, `score` and `method`, and a ranking's JSON
  form (`FORMAT_VERSION`);
- `result`: the `Ranking` result (order, top filters, reliability, file,
  merge) and `spearman`;
- `inputs`: the distortion, the filter range and the ranking images
  (`RankingData`);
- `exact`: the swap passes, their per-image outcomes and scores (steps 3 to
  5 above);
- `reliability`: split-half reliability and bootstrap intervals
  (`Reliability`, `split_halves`);
- `approx`: the first-order estimate;
- `algorithm`: `rank` itself (checks, checkpoints, the loop over layers).

The package needs the TensorFlow backend of Keras.
"""

from deepcorrect.ranking.algorithm import rank
from deepcorrect.ranking.reliability import Reliability, split_halves
from deepcorrect.ranking.result import Ranking, spearman
from deepcorrect.ranking.schema import (
    APPROX_SCORE,
    FORMAT_VERSION,
    METHODS,
    SCORES,
    SITES,
)

__all__ = [
    "APPROX_SCORE",
    "FORMAT_VERSION",
    "METHODS",
    "SCORES",
    "SITES",
    "Ranking",
    "Reliability",
    "rank",
    "spearman",
    "split_halves",
]

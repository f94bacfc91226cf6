"""DeepCorrect and the repair ladder: make a pretrained Keras classifier robust to distortions.

Rank a model's conv filters by how much a clean output would help (`rank`), splice
correction units onto the most susceptible ones (`wrap`) and train only those (`train`);
or repair it at test time (`adapt_batch_norm`, `tent`), fine-tune it (`finetune`), and put
every repair side by side on your own model (`compare`, `recommend`). `export` writes a
SavedModel for TF Serving.

Example:

```python
import deepcorrect

ranking = deepcorrect.rank(model, images, labels, "gaussian_blur", levels=[1, 2, 3])
corrected = deepcorrect.wrap(model, ranking, beta=0.5)
deepcorrect.train(corrected, images, labels, "gaussian_blur", [1, 2, 3])
```
"""

# The command line starts quietly: this runs before anything loads TensorFlow.
from robustkit.cli_common import quiet_command_line

quiet_command_line("deepcorrect")

# Correction units, wrap and the fine-tuning baselines.
from deepcorrect.baselines import finetune, reinitialized
from deepcorrect.batch_norm import folded_batch_norms
from deepcorrect.export import export
from deepcorrect.layers import GatherChannels, ScatterChannels
from deepcorrect.surgery import correction_units, trainable_parameters, wrap
from deepcorrect.units import UNIT_PRESETS, CorrectionUnit

# Correction-priority ranking (Algorithm 1).
from deepcorrect.ranking import Ranking, rank, spearman

# Test-time repairs: batch-norm statistics adaptation and TENT.
from deepcorrect.adaptation import adapt_batch_norm, batch_norm_layers
from deepcorrect.tent import tent

# The training recipe (half-distorted batches, SGD, step schedule, resume).
from deepcorrect.training import TRAINING_PRESETS, LabelFreeTrainer, train
from deepcorrect.unit_statistics import refresh_unit_statistics
from deepcorrect.monitor import DistortedAccuracy, time_to_reach

# Every repair side by side on one model, and which one to use.
from deepcorrect.compare import ComparisonTable, Recommendation, compare, recommend

__all__ = [
    "TRAINING_PRESETS",
    "UNIT_PRESETS",
    "ComparisonTable",
    "CorrectionUnit",
    "DistortedAccuracy",
    "GatherChannels",
    "LabelFreeTrainer",
    "Ranking",
    "Recommendation",
    "ScatterChannels",
    "adapt_batch_norm",
    "batch_norm_layers",
    "compare",
    "correction_units",
    "export",
    "finetune",
    "folded_batch_norms",
    "rank",
    "recommend",
    "refresh_unit_statistics",
    "reinitialized",
    "spearman",
    "tent",
    "time_to_reach",
    "train",
    "trainable_parameters",
    "wrap",
]

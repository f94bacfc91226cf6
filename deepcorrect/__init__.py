"""deepcorrect package."""

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

# Every repair side by side on one model, and which one to use.
from deepcorrect.compare import ComparisonTable, Recommendation, compare, recommend

"""deepcorrect package."""

# Correction units and wrap.
from deepcorrect.layers import GatherChannels, ScatterChannels
from deepcorrect.surgery import correction_units, wrap
from deepcorrect.units import UNIT_PRESETS, CorrectionUnit

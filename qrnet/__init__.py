"""QRNet: restore distorted images so that pretrained classifiers classify them correctly.

Takagi et al., "Quality Recovery Network for Image Classification of Distorted Images",
IEEE Access 2019. `QRNet` is the restorer (a U-Net-like encoder-decoder on 0..255
images), `QualityRecoveryTrainer` trains it with the L1 + lambda * cross-entropy loss
against frozen classifiers (RecNet, QRNet, MQRNet and end-to-end modes), `train` runs the
paper's Algorithm 1 on the batches of `paired_batches`, `restore` applies a trained restorer,
`evaluate_restoration` measures accuracy, PSNR and SSIM per distortion and level and `export`
writes SavedModels.

Example:

>>> import numpy as np
>>> import qrnet
>>> restorer = qrnet.build_qrnet(base_width=4, depth=2)
>>> qrnet.restore(restorer, np.zeros((2, 17, 23, 3), "uint8")).shape
(2, 17, 23, 3)
"""

# The command line starts quietly: this runs before anything loads TensorFlow.
from robustkit.cli_common import quiet_command_line

quiet_command_line("qrnet")

from qrnet.batches import clean_batches, paired_batches, resolve_distortions  # noqa: E402
from qrnet.checkpoints import TrainingCheckpoint
from qrnet.evaluate import (
    LEVEL_PRESETS,
    average_over_levels,
    evaluate_restoration,
    format_table,
    preset_distortions,
)
from qrnet.export import export
from qrnet.inference import resolve_preprocessing, restore
from qrnet.model import (
    PREPROCESSING_MODES,
    PRESETS,
    CropToReference,
    ImagePreprocessing,
    QRNet,
    ReflectPadToMultiple,
    build_qrnet,
    paper_layer_count,
    qrnet_from_preset,
)
from qrnet.trainer import DEFAULT_TRAINING, MODES, ClassifierSpec, QualityRecoveryTrainer, train

__all__ = [
    "DEFAULT_TRAINING",
    "LEVEL_PRESETS",
    "MODES",
    "PREPROCESSING_MODES",
    "PRESETS",
    "ClassifierSpec",
    "CropToReference",
    "ImagePreprocessing",
    "QRNet",
    "QualityRecoveryTrainer",
    "ReflectPadToMultiple",
    "TrainingCheckpoint",
    "average_over_levels",
    "build_qrnet",
    "clean_batches",
    "evaluate_restoration",
    "export",
    "format_table",
    "paired_batches",
    "paper_layer_count",
    "preset_distortions",
    "qrnet_from_preset",
    "resolve_distortions",
    "resolve_preprocessing",
    "restore",
    "train",
]

"""The machine a benchmark ran on, for its JSON report."""

from __future__ import annotations

import os
import platform


def host() -> dict:
    """CPUs, architecture, TensorFlow/Keras versions, devices and the load at the end."""
    import keras
    import tensorflow as tf

    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "devices": [d.device_type for d in tf.config.list_logical_devices()],
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}

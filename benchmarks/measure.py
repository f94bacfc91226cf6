"""What the benchmarks share: a timed call, and the machine for the JSON report."""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """`fn()` and the wall seconds it took."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def host() -> dict:
    """CPUs, architecture, TensorFlow/Keras versions, devices and the load at the end."""
    import keras
    import tensorflow as tf

    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "devices": [d.device_type for d in tf.config.list_logical_devices()],
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}

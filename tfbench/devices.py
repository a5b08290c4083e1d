"""Where and in what precision a run computes: the tf.distribute strategy, the Keras precision
policy, and which worker of a multi-worker run is the chief (the one that writes).

Shared by every regime (the probe extracts features under the same strategy and precision that
training uses), and importable without TensorFlow: the names are plain tuples, TensorFlow is
imported when a strategy or policy is made.
"""

from __future__ import annotations

import contextlib
import os

from tfbench.settings import PRECISIONS, STRATEGIES, InvalidSettingError


_STRATEGIES = {}  # name -> the strategy made for it in this process


def make_strategy(name: str):
    """The tf.distribute strategy called `name`, one per name and process: MultiWorkerMirroredStrategy
    can be made only once, and a network kept from one trial to the next (tfbench.learner) runs
    only under the strategy it was built under.

    auto: MirroredStrategy over every local GPU when there are two or more, otherwise one device
    (the GPU if there is one, else the CPU). mirrored: MirroredStrategy over every local GPU, or over
    every logical CPU device when there is no GPU (a correctness check; slow on CPU).
    multi_worker: MultiWorkerMirroredStrategy configured from TF_CONFIG, so a run can span hosts;
    create it before any other TensorFlow work in the process.
    """
    if name not in STRATEGIES:
        raise InvalidSettingError(f"unknown strategy {name!r}; valid choices: {', '.join(STRATEGIES)}")
    if name not in _STRATEGIES:
        _STRATEGIES[name] = _new_strategy(name)
    return _STRATEGIES[name]


def _new_strategy(name: str):
    import tensorflow as tf

    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise InvalidSettingError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable (cluster and task); "
                "valid choices without it: auto, one_device, mirrored")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "mirrored" or (name == "auto" and len(gpus) >= 2):
        devices = gpus or [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")




def resolve_precision(precision: str) -> str:
    """"auto" -> mixed_float16 on GPU, float32 on CPU (float16 is ~2x slower there); others unchanged."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise InvalidSettingError(f"unknown precision {precision!r}; valid choices: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


@contextlib.contextmanager
def precision_policy(precision: str):
    """Build layers under a Keras dtype policy, then restore the previous global policy."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def is_chief(strategy) -> bool:
    """True on the one worker that writes records, logs and the kept checkpoint."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief

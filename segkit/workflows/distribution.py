"""Data-parallel training across devices, through the engine of the active Keras backend.

`mirrored`: tf.distribute.MirroredStrategy over local devices; `multi_worker_mirrored`:
tf.distribute.MultiWorkerMirroredStrategy over the machines TF_CONFIG lists (TensorFlow backend);
`data_parallel`: keras.distribution.DataParallel over local devices (JAX backend). All split each
global batch across the replicas and average gradients, so the config's batch size stays the global one.
"""

import contextlib
import functools
import json
import os
import tempfile
from pathlib import Path

import keras

from segkit.errors import SegkitError

NEEDS_BACKEND = {"mirrored": "tensorflow", "multi_worker_mirrored": "tensorflow", "data_parallel": "jax"}
CPUINFO = Path("/proc/cpuinfo")
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}'


def gpu_name() -> str | None:
    """The first GPU the active Keras backend can use (its model name where the backend tells it), or None."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name) if gpus else None
    if backend == "jax":
        import jax

        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        return gpus[0].device_kind if gpus else None
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return None


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX; Linux's /proc/cpuinfo flags). Elsewhere
    bfloat16 is emulated and slower than float32, so callers treat "unknown" as no."""
    try:
        flags = CPUINFO.read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@contextlib.contextmanager
def scope(kind: str):
    """Build and compile the model inside this context; yields the number of replicas."""
    if kind == "none":
        yield 1
        return
    _check_backend(kind)
    if kind == "data_parallel":
        previous = keras.distribution.distribution()
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
        return
    strategy = _multi_worker_strategy() if kind == "multi_worker_mirrored" else _mirrored_strategy()
    with strategy.scope():
        yield strategy.num_replicas_in_sync


@contextlib.contextmanager
def worker_scratch(kind: str):
    """Yields None where this process writes the run folder, or a temporary folder for a non-chief worker.

    Every worker of a multi-worker run takes the same steps, saving included, so non-chief workers
    write their copy of the run to a folder removed afterwards (TensorFlow's multi-worker guide);
    only the chief (task index 0) writes to the runs folder. Call it before TensorFlow runs anything.
    """
    if kind != "multi_worker_mirrored":
        yield None
        return
    _check_backend(kind)
    strategy = _multi_worker_strategy()
    if strategy.extended.should_checkpoint:
        yield None
        return
    task = strategy.cluster_resolver.task_id
    with tempfile.TemporaryDirectory(prefix=f"segkit-worker{task}-") as scratch:
        print(f"worker {task} is not the chief: its copy of the run goes to {scratch}, removed at the end")
        yield Path(scratch)


def _check_backend(kind: str) -> None:
    backend = keras.backend.backend()
    if NEEDS_BACKEND[kind] != backend:
        others = [k for k, b in NEEDS_BACKEND.items() if b == backend]
        hint = f"; use train.distribution={' or '.join(others)} on {backend}" if others else ""
        raise SegkitError(f"train.distribution={kind} needs the {NEEDS_BACKEND[kind]} backend, not {backend}{hint}")


def _mirrored_strategy():
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


@functools.cache  # one per process: TensorFlow configures collective ops once, at startup
def _multi_worker_strategy():
    import tensorflow as tf

    problem = _tf_config_problem(os.environ.get("TF_CONFIG"))
    if problem:
        raise SegkitError(f"train.distribution=multi_worker_mirrored: TF_CONFIG {problem}; expected e.g. {TF_CONFIG_EXAMPLE}")

    class MultiWorkerMirrored(tf.distribute.MultiWorkerMirroredStrategy):
        """Keras 3's fit reduces a whole (x, y) batch in one call, and scalar logs along axis 0, which TensorFlow's
        cross-worker reduce rejects (keras-team/keras#20585): reduce leaf by leaf, scalars across replicas only."""

        def reduce(self, reduce_op, value, axis):
            def reduce_leaf(leaf):
                scalar = self.experimental_local_results(leaf)[0].shape.rank == 0
                return super(MultiWorkerMirrored, self).reduce(reduce_op, leaf, None if scalar else axis)

            return tf.nest.map_structure(reduce_leaf, value)

    try:
        return MultiWorkerMirrored()
    except RuntimeError as err:  # "Collective ops must be configured at program startup"
        raise SegkitError(f"train.distribution=multi_worker_mirrored must start before TensorFlow runs anything "
                          f"in this process (run `segkit train` in a fresh process): {err}") from None


def _tf_config_problem(raw: str | None) -> str | None:
    """What is wrong with the TF_CONFIG environment variable, or None when it names a cluster and this worker's task."""
    if not raw:
        return "is not set (every worker needs its own)"
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as err:
        return f"is not valid JSON ({err})"
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker"):
        return 'has no "cluster" with a "worker" list of host:port addresses'
    if not all(isinstance(tasks, list) and all(isinstance(a, str) and ":" in a for a in tasks) for tasks in cluster.values()):
        return 'has a "cluster" entry that is not a list of host:port addresses'
    task = tf_config.get("task")
    if not isinstance(task, dict) or task.get("type") not in ("chief", "worker"):
        return 'has no "task" with "type" chief or worker'
    tasks = cluster.get(task["type"], [])
    if not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(tasks):
        return f'has "task" index {task.get("index")!r}, not one of the {len(tasks)} {task["type"]} addresses in "cluster"'
    return None

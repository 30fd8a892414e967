"""Data-parallel training across local devices, through the engine of the active Keras backend.

`mirrored`: tf.distribute.MirroredStrategy (TensorFlow backend); `data_parallel`:
keras.distribution.DataParallel (JAX backend). Both split each global batch across the devices
and average gradients, so the config's batch size stays the global batch size.
"""

import contextlib

import keras

from segkit.errors import SegkitError

NEEDS_BACKEND = {"mirrored": "tensorflow", "data_parallel": "jax"}


@contextlib.contextmanager
def scope(kind: str):
    """Build and compile the model inside this context; yields the number of replicas."""
    if kind == "none":
        yield 1
        return
    backend = keras.backend.backend()
    if NEEDS_BACKEND[kind] != backend:
        other = next(k for k, b in NEEDS_BACKEND.items() if b == backend) if backend in NEEDS_BACKEND.values() else None
        hint = f"; use train.distribution={other} on {backend}" if other else ""
        raise SegkitError(f"train.distribution={kind} needs the {NEEDS_BACKEND[kind]} backend, not {backend}{hint}")
    if kind == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        with strategy.scope():
            yield strategy.num_replicas_in_sync
        return
    previous = keras.distribution.distribution()
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield len(devices)
    finally:
        keras.distribution.set_distribution(previous)

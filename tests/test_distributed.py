"""Data-parallel training on 2 logical CPU devices matches single-device training on the same data.

Each case runs in a fresh process: the devices must be split before the backend initialises.
TensorFlow: MirroredStrategy over 2 logical CPUs; JAX: keras.distribution.DataParallel over 2 host devices.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import segkit
from conftest import REPO
from segkit.errors import SegkitError
from training_support import prepared_synthetic, tiny_config

SCRIPT = r"""
import json, os, sys
if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import segkit
from segkit.training import train as train_module
from training_support import tiny_config, tiny_model

train_module.build_model = tiny_model
results = {}
for kind in ("none", sys.argv[3]):
    config = tiny_config(sys.argv[2], train={"distribution": kind, "epochs": 2, "batch_size": 4})
    run = segkit.train(config, runs_dir=sys.argv[4], verbose=0)
    results[kind] = {"history": run.state["history"], "miou": run.metrics["miou"]}
print("RESULTS " + json.dumps(results))
"""

CASES = {"tensorflow": "mirrored", "jax": "data_parallel"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return prepared_synthetic(tmp_path_factory.mktemp("dist"))


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_device_training_matches_one_device(backend, dataset, tmp_path):
    if backend == "jax":
        pytest.importorskip("jax")
    kind = CASES[backend]
    env = {**os.environ, "KERAS_BACKEND": backend, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO), str(dataset), kind, str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"data-parallel training on 2 devices ({kind})" in proc.stdout
    results = json.loads(proc.stdout.split("RESULTS ", 1)[1])
    single, parallel = results["none"], results[kind]
    for key in ("loss", "val_loss"):
        one = [row[key] for row in single["history"]]
        two = [row[key] for row in parallel["history"]]
        # Same data and weights; only the summation order of the gradient differs (per-replica means averaged).
        np.testing.assert_allclose(two, one, rtol=2e-3, err_msg=key)
    assert parallel["miou"] == pytest.approx(single["miou"], abs=0.02)


def test_a_strategy_of_another_backend_is_a_clear_error(dataset, tmp_path):
    import keras

    other = "data_parallel" if keras.backend.backend() == "tensorflow" else "mirrored"
    with pytest.raises(SegkitError, match=f"train.distribution={other} needs the .* backend"):
        segkit.train(tiny_config(dataset, train={"distribution": other}), runs_dir=tmp_path, verbose=0)

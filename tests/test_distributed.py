"""Data-parallel training on 2 logical CPU devices matches single-device training on the same data.

Each case runs in a fresh process: the devices must be split before the backend initialises.
TensorFlow: MirroredStrategy over 2 logical CPUs; JAX: keras.distribution.DataParallel over 2 host devices.
TensorFlow multi-worker: MultiWorkerMirroredStrategy over 2 worker processes on 127.0.0.1.
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import segkit
from support import REPO
from segkit.errors import SegkitError
from segkit.workflows import config as config_lib
from training_support import tiny_config

SCRIPT = r"""
import json, os, sys
if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import segkit
from segkit.workflows import train as train_module
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


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_device_training_matches_one_device(backend, dataset, tmp_path):
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


# Multi-worker: each worker is its own process with its own TF_CONFIG (one CPU device each, so 2 replicas
# in all); the reference is a single-device run of the same config in a third process.
WORKER_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import segkit
from segkit.workflows import train as train_module
from training_support import tiny_config, tiny_model

train_module.build_model = tiny_model
config = tiny_config(sys.argv[2], train={"distribution": sys.argv[3], "epochs": 2, "batch_size": 4})
run = segkit.train(config, runs_dir=sys.argv[4], verbose=0)
written = run.path.is_dir()  # a non-chief worker's folder is gone by now
result = {"path": str(run.path), "history": run.state["history"] if written else None,
          "miou": run.metrics["miou"] if written else None}
print("RESULTS " + json.dumps(result))
"""
WORKER_TIMEOUT_S = 240


def _free_ports(count):
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _run_all(commands):
    """Runs (args, env) pairs side by side; returns their (returncode, stdout, stderr); kills them all past the timeout."""
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args, env in commands]
    try:
        outputs = [proc.communicate(timeout=WORKER_TIMEOUT_S) for proc in procs]
    except subprocess.TimeoutExpired:
        outputs = None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    if outputs is None:
        pytest.fail(f"multi-worker training did not finish within {WORKER_TIMEOUT_S} s")
    return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, outputs)]


@pytest.mark.slow
def test_two_workers_match_one_device_and_only_the_chief_writes(dataset, tmp_path):
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    base_env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(REPO)}
    base_env.pop("TF_CONFIG", None)
    runs_dir, reference_dir = tmp_path / "runs", tmp_path / "reference"
    commands = [([sys.executable, "-c", WORKER_SCRIPT, str(REPO), str(dataset), "none", str(reference_dir)], base_env)]
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {**base_env, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(scratch)}
        commands.append(([sys.executable, "-c", WORKER_SCRIPT, str(REPO), str(dataset), "multi_worker_mirrored",
                          str(runs_dir)], env))
    outputs = _run_all(commands)
    for returncode, _, stderr in outputs:
        assert returncode == 0, stderr[-3000:]
    single, chief, other = (json.loads(out.split("RESULTS ", 1)[1]) for _, out, _ in outputs)
    assert "data-parallel training on 2 devices (multi_worker_mirrored)" in outputs[1][1]
    for key in ("loss", "val_loss"):
        one = [row[key] for row in single["history"]]
        two = [row[key] for row in chief["history"]]
        np.testing.assert_allclose(two, one, rtol=2e-3, err_msg=key)
    assert chief["miou"] == pytest.approx(single["miou"], abs=0.02)
    # Only the chief's run is in the runs folder; the other worker wrote under its TMPDIR and removed it.
    assert [p.name for p in runs_dir.iterdir()] == [Path(chief["path"]).name]
    assert "worker 1 is not the chief" in outputs[2][1]
    scratch = Path(other["path"]).parent
    assert scratch.is_relative_to(tmp_path / "tmp1") and not scratch.exists()


@pytest.mark.parametrize("tf_config, problem", [
    (None, "is not set"),
    ("{cluster: 1}", "is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'has no "cluster"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}', 'has no "task"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', 'has "task" index 1, not one of the 1 worker'),
])
def test_a_missing_or_invalid_tf_config_is_a_one_line_error(tf_config, problem, dataset, tmp_path, monkeypatch):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("multi_worker_mirrored runs on the TensorFlow backend")
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    config = tiny_config(dataset, train={"distribution": "multi_worker_mirrored"})
    with pytest.raises(SegkitError, match=f"TF_CONFIG {re.escape(problem)}") as error:
        segkit.train(config, runs_dir=tmp_path / "runs", verbose=0)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_a_time_budget_is_refused_for_multi_worker_training(dataset):
    # Workers stop on their own clocks, so a time budget would end them at different steps and hang the others.
    config = tiny_config(dataset, train={"distribution": "multi_worker_mirrored", "max_minutes": 5})
    with pytest.raises(SegkitError, match="'train.max_minutes' cannot be used with train.distribution=multi_worker_mirrored"):
        config_lib.load(config)

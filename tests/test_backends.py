"""Re-runs every test marked `backend_agnostic` under the JAX backend, in a fresh process."""

import os
import subprocess
import sys

import jax  # noqa: F401 -- pinned in requirements.txt: a broken install fails here, it does not skip
import keras
import pytest

from support import REPO


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="this is the outer run")
def test_backend_agnostic_tests_pass_under_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "backend_agnostic", "-p", "no:cacheprovider", "tests"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    # Exit code 5 means no test carried the marker: that is a failure too.
    assert proc.returncode == 0, f"JAX run exited {proc.returncode}:\n{tail}\n{proc.stderr[-2000:]}"
    assert " passed" in tail, tail

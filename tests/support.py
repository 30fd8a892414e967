"""Shared by the tests: the repository root, the real data slices (required under CI=true), a local HTTP server,
model weights copied by layer name for parity with segmentation_models.

A module of its own, not conftest.py: notebooks/ has a conftest.py too, and `from conftest import ...`
would pick whichever pytest imported first.
"""

import contextlib
import functools
import http.server
import os
import subprocess
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEGKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def require_shared_data(path: Path = SHARED_DATA) -> Path:
    """`path` if it is a folder; else the test is skipped, or failed under CI=true (where the data is always there:
    a skip would hide the loss of the only real-data evidence)."""
    if path.is_dir():
        return path
    message = f"real data slices not found at {path}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}, and CI=true runs must have them", pytrace=False)
    pytest.skip(message)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_folder(root: Path):
    """Serves `root` over HTTP on 127.0.0.1 (a free port) while the block runs; yields the base URL (no trailing /)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


needs_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="segmentation_models runs on tf.keras only"
)


def random_weights(model, seed):
    """Random weights for every layer, with positive BN variances so the outputs stay finite."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([
                rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path else rng.normal(0, 0.1, w.shape)
                for w in layer.weights
            ])


def run(model, images):
    """Eager inference call: much faster than `predict` (no tracing) for a single tiny batch."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(images, training=False))


def copy_weights_by_name(source, target):
    """Copies every weighted layer of `source` into the same-named layer of `target`; both must match 1:1."""
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    target_layers = {layer.name: layer for layer in target.layers if layer.weights}
    assert source_layers.keys() == target_layers.keys()
    for name, layer in source_layers.items():
        target_layers[name].set_weights(layer.get_weights())


def assert_matches_reference(reference, model, side):
    """Same parameter count and, with the reference's random weights copied by name, the same logits on random images."""
    assert model.count_params() == reference.count_params()
    random_weights(reference, seed=1)
    copy_weights_by_name(reference, model)
    images = np.random.default_rng(2).uniform(0, 255, (2, side, side, 3)).astype("float32")
    expected, got = run(reference, images), run(model, images)
    assert got.shape == expected.shape == (2, side, side, reference.output.shape[-1])
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """`folder` with a tmpfs mounted on it for the block (`options` e.g. "size=8m" or "ro,size=1m"), unmounted after
    even when the test fails. Skipped where mounting is not allowed, failed under CI=true."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs ({options}): {mounted.stderr.decode().strip()}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:  # lazily: a failed fit leaves Keras' TensorBoard writer open until it is collected
        subprocess.run(["umount", "--lazy", str(folder)], check=True)

"""Fixtures shared by the tests (plain helpers live in support.py)."""

import os
from pathlib import Path

import pytest

from support import require_shared_data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; without it the test is skipped, or failed under CI=true."""
    return require_shared_data()


@pytest.fixture(scope="session")
def sm():
    """segmentation_models 1.0.1, the reference our U-Net and sm-style PSPNet match."""
    os.environ["SM_FRAMEWORK"] = "tf.keras"  # read when segmentation_models is imported
    import segmentation_models  # pinned in requirements.txt: a broken install fails here, it does not skip

    return segmentation_models


@pytest.fixture
def read_only_folder(tmp_path):
    """An empty folder on a small tmpfs remounted read-only: writes fail with EROFS even for root (where chmod
    does not stop them). Skipped where mounting is not allowed, failed under CI=true."""
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)

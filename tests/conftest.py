"""Fixtures shared by the tests (plain helpers live in support.py)."""

import os
from pathlib import Path

import pytest

from support import require_shared_data, tmpfs


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


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """16 prepared synthetic pairs of 32x32 (tiny_config holds out 4), made once per test module."""
    from training_support import prepared_synthetic  # imported here: it loads Keras, which most tests never need

    return prepared_synthetic(tmp_path_factory.mktemp("data"))


@pytest.fixture
def stand_in(monkeypatch):
    """segkit.train builds the tiny stand-in model instead of the configured one: a run folder in seconds."""
    from segkit.workflows import train as train_module
    from training_support import tiny_model

    monkeypatch.setattr(train_module, "build_model", tiny_model)


@pytest.fixture
def read_only_folder(tmp_path):
    """An empty folder on a small tmpfs mounted read-only: writes fail with EROFS even for root (where chmod
    does not stop them). Skipped where mounting is not allowed, failed under CI=true."""
    with tmpfs(tmp_path / "read-only", "ro,size=1m") as folder:
        yield folder


@pytest.fixture
def full_disk_folder(tmp_path):
    """An empty folder on a 64 KiB tmpfs whose space a hidden filler file has used up: writes fail with ENOSPC,
    making folders still works. Skipped where mounting is not allowed, failed under CI=true."""
    with tmpfs(tmp_path / "full-disk", "size=64k") as folder:
        filler = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: the disk is full
            pass
        finally:
            os.close(filler)
        yield folder

"""Fixtures shared by the tests (plain helpers live in support.py)."""

from pathlib import Path

import pytest

from support import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when the real slices are not on this machine."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data slices not found at {SHARED_DATA}")
    return SHARED_DATA

"""Fixtures shared by the tests (plain helpers live in support.py)."""

from pathlib import Path

import pytest

from support import require_shared_data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; without it the test is skipped, or failed under CI=true."""
    return require_shared_data()

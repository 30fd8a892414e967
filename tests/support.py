"""Shared by the tests: the repository root, the real data slices (required under CI=true), a local HTTP server.

A module of its own, not conftest.py: notebooks/ has a conftest.py too, and `from conftest import ...`
would pick whichever pytest imported first.
"""

import contextlib
import functools
import http.server
import os
import threading
from pathlib import Path

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

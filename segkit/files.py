"""Files written whole or not at all, and URLs streamed to disk while hashed: the I/O every layer shares.

Standard library only, like `segkit.errors`, so `segkit.data` and `segkit.models` may both import it
(and `segkit data prepare` never waits for Keras to start).
"""

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from segkit.errors import SegkitError

__all__ = ["atomic_path", "write_bytes", "write_text", "remove_abandoned", "download"]

_PARTIAL = ".partial-"
CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 60


@contextlib.contextmanager
def atomic_path(path):
    """Yields a fresh temporary path to write `path` (a file or a folder) at; it becomes `path` only if the block ends.

    The temporary path has `path`'s own name (writers that infer the format from the suffix, like `Model.save`,
    just work) inside a hidden folder `.<name>.partial-<pid>-<random>` beside `path`, so a half-written
    `1.jpg` never matches a `*.jpg` listing. An existing folder at `path` is swapped out and deleted after
    the rename. That folder is private to this call, so scratch files may go beside the temporary path: on
    success or error, or an interrupt, it is deleted with everything in it.
    """
    path = Path(path)
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}{_PARTIAL}{os.getpid()}-"))
    try:
        tmp = work / path.name
        yield tmp
        if path.is_dir() and tmp.is_dir():
            os.replace(path, work / ".old")  # deleted with `work` below
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def remove_abandoned(path) -> None:
    """Deletes the temporary folders `atomic_path(path)` left behind in processes that were killed (and are gone)."""
    path = Path(path)
    for work in path.parent.glob(f".{path.name}{_PARTIAL}*"):
        pid = work.name[len(f".{path.name}{_PARTIAL}") :].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(work, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def download(url: str, dest, algorithm: str = "sha256", progress=None) -> str:
    """Streams `url` into the file `dest`, hashing the bytes on the way; returns their hex digest.

    progress: called as `progress(bytes received, Content-Length or None)` after every chunk.

    A failed connection, an HTTP error or a body shorter than its Content-Length raises a one-line
    SegkitError; `dest` may then hold part of the body (write it inside `atomic_path` to drop it).
    """
    # Not keras.utils.get_file: importing Keras takes seconds (segkit.data stays numpy + OpenCV), and get_file
    # downloads straight to its final name, so a killed download of an unhashed file is later reused as complete.
    hasher = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(dest, "wb") as f:
            expected_size = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(CHUNK):
                hasher.update(chunk)
                f.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, None if expected_size is None else int(expected_size))
    except urllib.error.HTTPError as err:
        raise SegkitError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise SegkitError(f"could not download {url}: {getattr(err, 'reason', err)}") from None
    if expected_size is not None and received != int(expected_size):
        raise SegkitError(f"could not download {url}: connection closed after {received} of {expected_size} bytes")
    return hasher.hexdigest()

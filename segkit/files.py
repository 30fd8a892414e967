"""Files written whole or not at all, and URLs streamed to disk while hashed: the I/O every layer shares.

Standard library only, like `segkit.errors`, so `segkit.data` and `segkit.models` may both import it
(and `segkit data prepare` never waits for Keras to start).
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from segkit.errors import SegkitError, first_line

__all__ = ["atomic_path", "write_bytes", "write_text", "remove_abandoned", "download", "check_writable_folder",
           "check_writable_file", "writing_into", "Ledger"]

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


def check_writable_folder(folder, label: str = "folder") -> Path:
    """Refuses in one line, before any work, a folder that cannot be created or written; creates nothing.

    Args:
        folder (str | Path): the destination folder; it may be missing, with missing parents.
        label (str): how the user named it, e.g. "--out" or "--runs": the error starts with it and the path.

    A plain file at `folder` or on its way, and a read-only or unwritable nearest existing folder, are refused.
    The test is a real write (a hidden folder made and removed at once): permission bits do not stop root, a
    read-only file system does.
    """
    folder = Path(folder)
    existing = folder
    while not existing.is_dir():
        if existing.exists() or existing.is_symlink():
            what = "a file" if existing.exists() else "a broken link"
            if existing == folder:
                raise SegkitError(f"{label} {folder} is {what}, not a folder")
            raise SegkitError(f"{label} {folder} cannot be created: {existing} is {what}, not a folder")
        existing = existing.parent
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".segkit-write-check-"))
    except OSError as err:
        where = "" if existing == folder else f" (in {existing})"
        raise SegkitError(f"{label} {folder} cannot be written{where}: {err.strerror or err}") from None
    return folder


def check_writable_file(path, label: str) -> Path:
    """Refuses in one line a file that cannot be written: its folder is missing, a file, or read-only, or it is a folder.

    Args:
        path (str | Path): the file to be written later (whole, by `write_bytes` or `write_text`).
        label (str): how the user named it, e.g. "--json".
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise SegkitError(f"{label} {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise SegkitError(f"{label} {path} is a folder, not a file")
    check_writable_folder(path.parent, f"{label} {path}: folder")
    return path


@contextlib.contextmanager
def writing_into(dest, label: str):
    """Turns an OSError raised while writing into `dest` (a full disk, a file system gone read-only) into one line
    naming `label` and `dest` as the user gave them, not the hidden temporary path that `atomic_path` was writing.

    Args:
        dest (str | Path): the destination the user named.
        label (str): its option, e.g. "--out".
    """
    try:
        yield
    except OSError as err:
        raise SegkitError(f"{label} {dest}: cannot write ({err.strerror or first_line(err)})") from None


class Ledger:
    """The files segkit wrote into a folder, by name and SHA-256, kept in a hidden JSON file in that folder.

    A later call replaces a file only while it still holds what segkit wrote: a user's own file saved under
    the same name, or a segkit file the user edited, is refused (`foreign`), never lost. Digests are recorded
    before the files are written (`write`), so a call killed midway leaves every file it wrote replaceable.
    """

    def __init__(self, folder, name: str, key: str):
        """Args:
            folder (str | Path): the folder holding the files and the ledger.
            name (str): the ledger's file name, e.g. ".segkit-synthetic.json".
            key (str): the JSON key its {file name: [sha256, ...]} table lives under (what wrote the files).
        """
        self.folder, self.path, self.key = Path(folder), Path(folder) / name, key
        self.digests = self._read()

    def _read(self) -> dict[str, list[str]]:
        try:
            table = json.loads(self.path.read_text(encoding="utf-8"))[self.key]
            return {str(name): [str(d) for d in digests] for name, digests in table.items()}
        except (OSError, ValueError, UnicodeDecodeError, TypeError, KeyError, AttributeError):
            return {}  # missing, or written by an older segkit without digests: nothing is provably ours

    def owns(self, name: str) -> bool:
        """Whether file `name` is missing, or holds bytes segkit recorded for it (may be replaced)."""
        path = self.folder / name
        if not os.path.lexists(path):
            return True
        return path.is_file() and not path.is_symlink() and sha256_of(path) in self.digests.get(name, [])

    def foreign(self, names) -> list[str]:
        """Those of `names` present in the folder that segkit did not write there, or that changed since."""
        return [name for name in names if not self.owns(name)]

    def write(self, contents: dict) -> list[Path]:
        """Writes `contents` ({file name: bytes}) into the folder, each file whole; their digests are recorded first,
        so a call killed between the two leaves files the ledger still vouches for. Returns the paths."""
        for name, data in contents.items():
            self._add(name, hashlib.sha256(data).hexdigest())
        self.save()
        return [write_bytes(self.folder / name, data) for name, data in contents.items()]

    def record(self, finished: dict) -> None:
        """Records the digests of finished files ({file name in the folder: its path now}) that the caller moves in
        next: for files written as they stream, too large to hand to `write` as bytes."""
        for name, path in finished.items():
            self._add(name, sha256_of(Path(path)))
        self.save()

    def _add(self, name: str, digest: str) -> None:
        digests = self.digests.setdefault(name, [])
        if digest not in digests:
            digests.append(digest)

    def settle(self, names) -> None:
        """Forgets files that are gone, and keeps for each of `names` only its file's current digest."""
        self.digests = {name: [sha256_of(self.folder / name)] if name in names else digests
                        for name, digests in self.digests.items() if (self.folder / name).is_file()}
        self.save()

    def save(self) -> None:
        write_text(self.path, json.dumps({self.key: self.digests}, indent=1) + "\n")


def sha256_of(path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


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

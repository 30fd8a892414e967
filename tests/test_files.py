"""segkit.files: a write that fails leaves the old file and no temporary behind; downloads are hashed and complete."""

import hashlib
import http.server
import os
import subprocess
import sys
import threading

import pytest

from support import serve_folder
from segkit import files
from segkit.errors import SegkitError


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "1.jpg"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="midway"):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            assert target.read_bytes() == b"old"
            assert tmp.name == "1.jpg" and tmp.parent != tmp_path  # the writer sees the real suffix ...
            assert [p.name for p in tmp_path.glob("*.jpg")] == ["1.jpg"]  # ... yet no listing sees the half file
            raise RuntimeError("midway")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["1.jpg"]


def test_interrupt_is_cleaned_up_too(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(tmp_path / "state.json") as tmp:
            tmp.write_text("{")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_successful_writes_replace_files_and_folders_whole(tmp_path):
    files.write_text(tmp_path / "a.txt", "first")
    files.write_bytes(tmp_path / "a.txt", b"second")
    assert (tmp_path / "a.txt").read_bytes() == b"second"
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "stale.npy").write_bytes(b"x")
    with files.atomic_path(tmp_path / "cache") as tmp:
        tmp.mkdir()
        (tmp / "fresh.npy").write_bytes(b"y")
        (tmp.parent / "scratch.bin").write_bytes(b"z")  # scratch beside the temporary path goes with its folder
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["fresh.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "cache"]


def test_remove_abandoned_deletes_only_dead_processes_leftovers(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".cache.partial-{int(dead.stdout)}-abc123"
    in_progress = tmp_path / f".cache.partial-{os.getpid()}-def456"
    other = tmp_path / f".cachex.partial-{int(dead.stdout)}-ghi789"
    for folder in (abandoned, in_progress, other):
        (folder / "cache").mkdir(parents=True)
    files.remove_abandoned(tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([in_progress.name, other.name])


def test_download_streams_and_hashes(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    body = os.urandom(3 << 20)  # several chunks
    (www / "blob.bin").write_bytes(body)
    with serve_folder(www) as url:
        assert files.download(f"{url}/blob.bin", tmp_path / "a", "sha256") == hashlib.sha256(body).hexdigest()
        assert files.download(f"{url}/blob.bin", tmp_path / "b", "md5") == hashlib.md5(body).hexdigest()
        with pytest.raises(SegkitError, match=r"could not download .*/missing\.bin: HTTP 404"):
            files.download(f"{url}/missing.bin", tmp_path / "c")
    assert (tmp_path / "a").read_bytes() == body


class _Truncating(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_download_cut_short_is_an_error(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Truncating)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with pytest.raises(SegkitError, match="closed after 10 of 100 bytes") as err:
            files.download(f"http://127.0.0.1:{server.server_address[1]}/x", tmp_path / "x")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert "\n" not in str(err.value)


def test_check_writable_folder_creates_nothing_and_names_what_is_in_the_way(tmp_path, read_only_folder):
    assert files.check_writable_folder(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    with pytest.raises(SegkitError, match=r"^--out .*read-only/a cannot be written \(in .*read-only\): Read-only file system$"):
        files.check_writable_folder(read_only_folder / "a", "--out")
    (tmp_path / "plain").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(SegkitError, match=r"^--runs .*plain is a file, not a folder$"):
        files.check_writable_folder(tmp_path / "plain", "--runs")
    with pytest.raises(SegkitError, match=r"^--out .*dangling/x cannot be created: .*dangling is a broken link, not a folder$"):
        files.check_writable_folder(tmp_path / "dangling" / "x", "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "plain", "read-only"]


def test_ledger_vouches_only_for_files_as_written(tmp_path):
    ledger = files.Ledger(tmp_path, ".ledger.json", "test")
    ledger.write({"a.png": b"first", "b.png": b"second"})
    (tmp_path / "mine.png").write_bytes(b"the user's")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    reread = files.Ledger(tmp_path, ".ledger.json", "test")
    assert reread.foreign(["a.png", "b.png", "missing.png", "mine.png", "folder.png", "link.png"]) == [
        "mine.png", "folder.png", "link.png"]
    (tmp_path / "b.png").write_bytes(b"edited")
    assert reread.foreign(["a.png", "b.png"]) == ["b.png"]
    reread.write({"a.png": b"new"})  # both digests of a.png are vouched for until settled
    assert reread.digests["a.png"] == [hashlib.sha256(b"first").hexdigest(), hashlib.sha256(b"new").hexdigest()]
    (tmp_path / "b.png").unlink()
    reread.settle(["a.png"])
    assert files.Ledger(tmp_path, ".ledger.json", "test").digests == {"a.png": [hashlib.sha256(b"new").hexdigest()]}

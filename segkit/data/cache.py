"""Decode once: `prepare` turns any reader's dataset into a compact uint8 cache; `load_prepared` memory-maps it back.

A cache folder holds `images.npy` (N, H, W, 3), `masks.npy` (N, H, W) (255 = ignore) and `manifest.json`.
It is written into a temporary folder beside the target and renamed into place only when complete, so a
failed or killed prepare never leaves a cache that loads.
"""

import errno
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segkit import files
from segkit.data.palette import IGNORE_INDEX
from segkit.data.readers import Reader, open_reader
from segkit.errors import SegkitError

CACHE_VERSION = 1
# The manifest field that marks a folder as a segkit cache, and so as safe for prepare to replace.
_VERSION_KEY = "segkit_cache_version"
MANIFEST = "manifest.json"
IMAGES = "images.npy"
MASKS = "masks.npy"
# Largest --size side: 8192 x 8192 is already 200 MB per image in memory while resizing.
MAX_SIDE = 8192


def prepare(format: str, src, out, *, size=None, classes: str = "train", split: str | None = None,
            max_color_distance: float | None = None, label: str = "--out") -> dict:
    """Read the `format` dataset at `src` once and write the cache folder `out`; returns the manifest.

    size: (H, W) to resize every item to (images: area when shrinking, linear when growing; masks: nearest
    neighbour, after the colour/id mapping at full size). Needed when items differ in size.
    classes, split, max_color_distance: as in `open_reader`. An existing cache at `out` is replaced; any other
    existing content is not.
    label: how the user chose `out` ("--out", or "data.cache" when training prepares it), named by write errors.
    """
    size = None if size is None else _check_resize_hw(size)
    reader = open_reader(format, src, classes=classes, split=split, max_color_distance=max_color_distance)
    out = Path(out)
    files.check_writable_folder(out.parent, f"{label} {out}: folder")  # the cache is made beside `out`, then renamed
    _check_replaceable(out)
    try:
        with files.writing_into(out, label):  # names `out`, not the hidden folder the cache is written in
            return _write_and_move(reader, out, size)
    except MemoryError:
        raise SegkitError(f"{out}: out of memory while preparing; try a smaller --size") from None


def _write_and_move(reader: Reader, out: Path, size: tuple[int, int] | None) -> dict:
    """Write the cache into a temporary folder beside `out` and rename it into place; a failure removes it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files.remove_abandoned(out)  # left by a prepare that was killed: caches are big
    with files.atomic_path(out) as partial:
        partial.mkdir()
        manifest = _write_cache(reader, partial, size)
    return manifest


def _check_resize_hw(size) -> tuple[int, int]:
    if len(size) != 2 or not all(int(s) == s and s > 0 for s in size):
        raise SegkitError(f"size={tuple(size)}: expected two positive integers (H, W)")
    if max(size) > MAX_SIDE:
        raise SegkitError(f"size={tuple(size)}: each side must be at most {MAX_SIDE} pixels")
    return int(size[0]), int(size[1])


def _check_disk_space(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Refuse up front what would not fit: a memory-mapped write into a full disk ends in SIGBUS, not an error."""
    needed = count * size[0] * size[1] * 4  # images 3 bytes a pixel, masks 1
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OSError(errno.ENOSPC, f"the cache needs {needed:,} bytes of disk, only {free:,} are free")


def _check_replaceable(out: Path) -> None:
    """`out` may be replaced only when it is missing, empty, or provably a cache this module wrote, with nothing added.

    A bare manifest.json proves nothing (web apps and other tools write one too): the manifest must carry
    segkit's version field, and every entry must be one of the cache's own files.
    """
    if out.exists() and not out.is_dir():
        raise SegkitError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not _is_segkit_manifest(out / MANIFEST):
        raise SegkitError(f"{out}: folder exists, is not empty and is not a segkit cache "
                          f"(no {MANIFEST} written by segkit data prepare); choose another --out")
    foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in (MANIFEST, IMAGES, MASKS))
    if foreign:
        raise SegkitError(f"{out}: holds {', '.join(foreign[:3])}, which is not part of a segkit cache; "
                          "move it away or choose another --out")


def _is_segkit_manifest(path: Path) -> bool:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get(_VERSION_KEY), int)


def resize_image(image: np.ndarray, size) -> np.ndarray:
    """An RGB photo resized to `size` (H, W) as `prepare` resizes them: area when shrinking, linear when growing."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _resize(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]):
    if image.shape[:2] == size:
        return image, mask
    return resize_image(image, size), cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def _write_cache(reader: Reader, folder: Path, size: tuple[int, int] | None) -> dict:
    """Decode every item into memory-mapped arrays in `folder`, then write the manifest last."""
    images = masks = None
    pixel_counts = np.zeros(256, dtype=np.int64)
    for index, (name, image, mask) in enumerate(reader):
        if images is None:
            first_name, target = name, size or image.shape[:2]
            _check_disk_space(folder, len(reader), target)
            images = np.lib.format.open_memmap(folder / IMAGES, "w+", np.uint8, (len(reader), *target, 3))
            masks = np.lib.format.open_memmap(folder / MASKS, "w+", np.uint8, (len(reader), *target))
        elif size is None and image.shape[:2] != target:
            raise SegkitError(
                f"item {name!r} is {image.shape[1]}x{image.shape[0]} but {first_name!r} is {target[1]}x{target[0]}; "
                "give a common size (--size H W)"
            )
        images[index], masks[index] = _resize(image, mask, target)
        pixel_counts += np.bincount(masks[index].ravel(), minlength=256)

    class_names, colors = list(reader.class_names), reader.class_colors
    if reader.keep_present_only:
        class_names, colors, pixel_counts = _keep_present_classes(masks, class_names, colors, pixel_counts)
    images.flush()
    masks.flush()
    del images, masks  # close the maps before the folder is renamed

    manifest = _manifest(reader, target, class_names, colors, pixel_counts)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _keep_present_classes(masks: np.ndarray, class_names: list[str], colors: np.ndarray, pixel_counts: np.ndarray):
    """Drop the classes no pixel has and renumber the rest from 0 in table order, in the masks too."""
    present = np.flatnonzero(pixel_counts[: len(class_names)])
    renumber = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    renumber[present] = np.arange(len(present))
    for start in range(0, len(masks), 256):
        masks[start : start + 256] = renumber[masks[start : start + 256]]
    counts = np.zeros(256, dtype=np.int64)
    counts[: len(present)] = pixel_counts[present]
    counts[IGNORE_INDEX] = pixel_counts[IGNORE_INDEX]
    return [class_names[i] for i in present], colors[present], counts


def _manifest(reader: Reader, size, class_names: list[str], colors: np.ndarray, pixel_counts: np.ndarray) -> dict:
    labelled = pixel_counts[: len(class_names)]
    return {
        _VERSION_KEY: CACHE_VERSION,
        "format": reader.format,
        "source": str(Path(reader.source).resolve()),
        "split": reader.split,
        "num_items": len(reader),
        "image_size": [int(size[0]), int(size[1])],
        "classes": class_names,
        "colors": np.asarray(colors).astype(int).tolist(),
        "ignore_index": IGNORE_INDEX,
        "class_pixel_share": (labelled / max(labelled.sum(), 1)).round(6).tolist(),
        "ignored_share": round(float(pixel_counts[IGNORE_INDEX] / max(pixel_counts.sum(), 1)), 6),
        "files": {"images": IMAGES, "masks": MASKS},
        "items": list(reader.names),
        **({} if reader.max_color_distance is None else {"max_color_distance": reader.max_color_distance}),
    }


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared cache, memory-mapped: uint8 images (N, H, W, 3) and masks (N, H, W) with 255 = ignore."""

    path: Path
    images: np.ndarray
    masks: np.ndarray
    manifest: dict

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    @property
    def colors(self) -> np.ndarray:
        return np.array(self.manifest["colors"], dtype=np.uint8).reshape(-1, 3)

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def ignore_index(self) -> int:
        return int(self.manifest["ignore_index"])

    def __len__(self) -> int:
        return len(self.images)


_REQUIRED_KEYS = ("format", "num_items", "classes", "colors", "ignore_index", "image_size", "class_pixel_share", "items")


def load_prepared(path) -> PreparedDataset:
    """Open a cache written by `prepare`; a folder that is not one, or whose parts disagree, is an error."""
    path = Path(path)
    if not path.is_dir():
        raise SegkitError(f"{path}: no such folder (create it with segkit data prepare)")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise SegkitError(f"{path}: not a prepared cache (no {MANIFEST}; create it with segkit data prepare)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise SegkitError(f"{manifest_path}: not valid JSON ({err})") from None
    missing = [key for key in _REQUIRED_KEYS if key not in manifest] if isinstance(manifest, dict) else _REQUIRED_KEYS
    if missing:
        raise SegkitError(f"{manifest_path}: missing field(s) {', '.join(missing)}")
    images, masks = _load_array(path / IMAGES), _load_array(path / MASKS)
    _check_consistent(path, manifest, images, masks)
    return PreparedDataset(path, images, masks, manifest)


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SegkitError(f"{path}: missing (the cache is incomplete; prepare it again)")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise SegkitError(f"{path}: unreadable array ({err})") from None


def _check_consistent(path: Path, manifest: dict, images: np.ndarray, masks: np.ndarray) -> None:
    count, (height, width) = manifest["num_items"], manifest["image_size"]
    expected = {IMAGES: (images, (count, height, width, 3)), MASKS: (masks, (count, height, width))}
    for name, (array, shape) in expected.items():
        if array.dtype != np.uint8 or array.shape != tuple(shape):
            raise SegkitError(f"{path / name}: is {array.dtype} {array.shape}, manifest says uint8 {tuple(shape)}")
    sizes = {"colors": len(manifest["colors"]), "class_pixel_share": len(manifest["class_pixel_share"])}
    for key, length in sizes.items():
        if length != len(manifest["classes"]):
            raise SegkitError(f"{path / MANIFEST}: {key} has {length} entries for {len(manifest['classes'])} classes")
    if len(manifest["items"]) != count:
        raise SegkitError(f"{path / MANIFEST}: {len(manifest['items'])} item names for num_items={count}")


def format_summary(manifest: dict) -> str:
    """A short table: each class and its share of the labelled pixels, then the share of ignored pixels."""
    width = max(len("class"), *(len(name) for name in manifest["classes"]))
    lines = [f"{'class':<{width}}  pixel share"]
    for name, share in zip(manifest["classes"], manifest["class_pixel_share"]):
        lines.append(f"{name:<{width}}  {share:>10.2%}")
    lines.append(f"{'ignored (255)':<{width}}  {manifest['ignored_share']:>10.2%} of all pixels")
    return "\n".join(lines)

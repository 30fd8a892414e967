"""Dataset readers: each on-disk format in, `(name, RGB uint8 image, uint8 mask with 255 = ignore)` out, lazily.

`open_reader(format, src, classes=..., split=...)` lists and pairs the files up front (so a missing partner
fails before any decoding) and decodes one item at a time. Every reader exposes its class names and colours.
"""

import csv
import functools
import io
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from PIL import Image

from segkit.data.palette import (
    CAMVID11_CLASSES,
    CAMVID11_VOID,
    CITYSCAPES_LABELS,
    IGNORE_INDEX,
    TRAIN_CLASS_COLORS,
    TRAIN_CLASS_NAMES,
    distinct_cityscapes_colors,
)
from segkit.errors import SegkitError, first_line

FORMATS = ("cityscapes-pairs", "cityscapes", "camvid", "camvid32", "folder")

# A label pixel farther than this (Euclidean, RGB 0..255) from every official colour is a blend of
# neighbouring labels (the pix2pix labels were resized, then JPEG-compressed) and goes to ignore.
# Measured on the real pairs and on a palette-coloured gtFine frame: see docs/data.md.
PAIRS_MAX_COLOR_DISTANCE = 30.0
# A label image with more unmatched pixels than this is not a label image of this dataset. Measured on all 2,975
# files of the Cityscapes-pairs training split: real label halves have at most 18.9% unmatched pixels, their
# photo halves pasted in as labels at least 29.5% (300 synthetic pairs: at most 0.3% and at least 29.4%).
MAX_UNMATCHED_SHARE = 0.25
# Label images are piecewise constant, photos are textured: in a pairs label, at least this share of the pixels
# must match a colour and have the same class as their right and lower neighbours. Same measurement: real labels
# at least 71.4%, photo halves as labels at most 64.3% (97.3% of them under this limit). Synthetic labels: at
# least 93.8% at 256 x 256, but 61.2% at the 32 x 32 the tests use (1,500 scenes), hence the lower limit.
MIN_FLAT_SHARE = 0.5
# The one-class-area check compares each pixel with its right and lower neighbours: a smaller label cannot be checked.
MIN_LABEL_SIDE = 2

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CLASSES_FILE = "classes.txt"


@dataclass
class Reader:
    """A dataset opened for reading: item names, class names and colours, and a decoder per item."""

    format: str
    source: Path
    names: list[str]
    class_names: tuple[str, ...]
    class_colors: np.ndarray  # (C, 3) uint8
    read: Callable[[str], tuple[np.ndarray, np.ndarray]] = field(repr=False)
    split: str | None = None
    # True when the classes are the full label set, to be cut down to those present and renumbered.
    keep_present_only: bool = False
    # Colour labels decoded at another tolerance than PAIRS_MAX_COLOR_DISTANCE: the labels differ, so caches record it.
    max_color_distance: float | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for name in self.names:
            image, mask = self.read(name)
            yield name, image, mask


# ---------------------------------------------------------------------------------------------
# Decoding files


def _is_complete(data: np.ndarray) -> bool:
    """JPEGs end with the EOI marker and PNGs with the IEND chunk; a truncated file lacks them."""
    head, tail = data[:8].tobytes(), data[-64:].tobytes()
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" in tail
    if head.startswith(b"\x89PNG"):
        return b"IEND" in tail
    return True


def _read_encoded(path: Path) -> np.ndarray:
    """The bytes of an image file, refused when missing, empty or cut short."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise SegkitError(f"{path}: cannot read ({err.strerror or err})") from None
    if data.size == 0:
        raise SegkitError(f"{path}: empty file")
    if not _is_complete(data):
        raise SegkitError(f"{path}: truncated image file (no end marker)")
    return data


def _decode(path: Path, flags: int, data: np.ndarray | None = None) -> np.ndarray:
    data = _read_encoded(path) if data is None else data
    if data[:2].tobytes() == b"\xff\xd8":
        decoded = _decode_jpeg(path, data, flags)
    else:
        decoded = cv2.imdecode(data, flags)
    if decoded is None:
        raise SegkitError(f"{path}: corrupt or unsupported image file")
    return decoded


# libjpeg decodes damaged data as far as it can, fills the rest with grey and only prints a warning to stderr;
# these are its words for data it could not decode whole. OpenCV offers no other way to learn of them.
_JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")
_STDERR_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _capture_file(pid: int):
    """One temporary file per process (a forked child gets its own), reused under the lock: ~0.02 ms per decode."""
    return tempfile.TemporaryFile()


def _decode_jpeg(path: Path, data: np.ndarray, flags: int) -> np.ndarray | None:
    """cv2.imdecode with libjpeg's warnings caught from file descriptor 2: damage is an error."""
    with _STDERR_LOCK:
        captured = _capture_file(os.getpid())
        captured.seek(0)
        captured.truncate()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            decoded = cv2.imdecode(data, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        messages = captured.read()
    damage = [line for line in messages.decode(errors="replace").splitlines() if line.startswith(_JPEG_DAMAGE)]
    if damage:
        raise SegkitError(f"{path}: corrupt JPEG data, decoded only in part (libjpeg: {damage[0]})")
    if messages:
        os.write(2, messages)  # anything else printed meanwhile is passed on
    return decoded


def _is_palette_png(data: np.ndarray) -> bool:
    """PNG colour type 3: pixels are indices into a palette (IHDR is the first chunk; its colour type is byte 25)."""
    is_png = data[:8].tobytes() == b"\x89PNG\r\n\x1a\n" and data[12:16].tobytes() == b"IHDR"
    return is_png and data.size > 25 and data[25] == 3


def _palette_indices(path: Path, data: np.ndarray) -> np.ndarray:
    """A palette PNG's pixel indices (OpenCV would expand them to the palette's colours)."""
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            image.load()
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise SegkitError(f"{path}: corrupt palette PNG ({first_line(err)})") from None


def read_image(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3)."""
    bgr = _decode(Path(path), cv2.IMREAD_COLOR)
    if bgr.dtype != np.uint8:
        raise SegkitError(f"{path}: expected 8-bit colour, got {bgr.dtype}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_index_mask(path: Path) -> np.ndarray:
    """A single-channel 8-bit PNG of class indices, or a palette ("P" mode) PNG's indices, as uint8 (H, W)."""
    path = Path(path)
    data = _read_encoded(path)
    if _is_palette_png(data):
        return _palette_indices(path, data)
    mask = _decode(path, cv2.IMREAD_UNCHANGED, data)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        channels = 1 if mask.ndim == 2 else mask.shape[2]
        raise SegkitError(
            f"{path}: expected a single-channel 8-bit index PNG, got {channels} channel(s) of {mask.dtype}"
        )
    return mask


# ---------------------------------------------------------------------------------------------
# Colours to class indices


@functools.lru_cache(maxsize=8)
def _nearest_color_lut(colors: tuple[tuple[int, int, int], ...], max_distance: float) -> np.ndarray:
    """Index of the nearest colour for every colour on a 128^3 grid (bins of 2 levels), 255 where none is near.

    Distances are taken from each bin's centre, so a decision can be off by under one level per channel;
    one table gather per pixel is what keeps colour mapping at milliseconds per image.
    """
    centres = np.arange(128, dtype=np.float32) * 2 + 0.5
    best = np.full((128, 128, 128), np.inf, dtype=np.float32)
    nearest = np.full((128, 128, 128), IGNORE_INDEX, dtype=np.uint8)
    for index, color in enumerate(colors):
        r, g, b = ((centres - c) ** 2 for c in color)
        distance = r[:, None, None] + g[None, :, None] + b[None, None, :]
        closer = distance < best
        best[closer] = distance[closer]
        nearest[closer] = index
    nearest[best > max_distance**2] = IGNORE_INDEX
    return nearest.ravel()


def nearest_color_index(rgb: np.ndarray, colors: np.ndarray, max_distance: float) -> np.ndarray:
    """Per pixel, the index of the nearest of `colors` (K <= 255), or 255 when all are farther than max_distance."""
    lut = _nearest_color_lut(tuple(map(tuple, colors.tolist())), float(max_distance))
    q = rgb >> 1
    key = (q[..., 0].astype(np.int32) << 14) | (q[..., 1].astype(np.int32) << 7) | q[..., 2]
    return lut[key]


def exact_color_index(rgb: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Per pixel, the index of the identical colour in `colors` (distinct, K <= 255), or 255 when none matches."""
    pack = lambda c: (c[..., 0].astype(np.int32) << 16) | (c[..., 1].astype(np.int32) << 8) | c[..., 2]
    keys = pack(np.asarray(colors, dtype=np.uint8))
    order = np.argsort(keys)
    sorted_keys = keys[order]
    pixels = pack(rgb)
    slot = np.minimum(np.searchsorted(sorted_keys, pixels), len(keys) - 1)
    return np.where(sorted_keys[slot] == pixels, order[slot], IGNORE_INDEX).astype(np.uint8)


def _class_lut(class_of_index: list[int]) -> np.ndarray:
    """256-entry table from colour index to class id; index 255 (no colour matched) stays 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[: len(class_of_index)] = class_of_index
    return lut


def _check_matched(index: np.ndarray, path: Path, what: str) -> None:
    unmatched = float(np.mean(index == IGNORE_INDEX))
    if unmatched > MAX_UNMATCHED_SHARE:
        raise SegkitError(f"{path}: {unmatched:.0%} of label pixels match no {what} (is this a label image?)")


def _check_piecewise_constant(index: np.ndarray, path: Path) -> None:
    """A colour label must be mostly flat areas of one class: what a photo that happens to hold palette colours is not."""
    core = index[:-1, :-1]
    flat = (core == index[:-1, 1:]) & (core == index[1:, :-1]) & (core != IGNORE_INDEX)
    if flat.size and flat.mean() < MIN_FLAT_SHARE:
        raise SegkitError(
            f"{path}: only {flat.mean():.0%} of label pixels lie inside one-class areas; "
            "label images are piecewise constant (is this a photo?)"
        )


# ---------------------------------------------------------------------------------------------
# Listing and pairing files


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise SegkitError(f"{path}: missing folder ({what})")
    return path


def _by_name(paths, suffix: str = "") -> dict[str, Path]:
    """Image files keyed by file name without extension and without `suffix` (e.g. `_L`, `_leftImg8bit`)."""
    found: dict[str, Path] = {}
    for path in sorted(paths):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.stem.endswith(suffix):
            continue
        name = path.stem[: len(path.stem) - len(suffix)]
        if name in found:
            raise SegkitError(f"{path}: two files for item {name!r} (also {found[name].name})")
        found[name] = path
    return found


def _pair_up(images: dict[str, Path], masks: dict[str, Path], image_dir: Path, mask_dir: Path):
    """{name: (image path, mask path)} in natural order; an image or label without its partner is an error."""
    if not images:
        raise SegkitError(f"{image_dir}: no images found")
    counts = f"{len(images)} images, {len(masks)} labels"
    for name, path in images.items():
        if name not in masks:
            raise SegkitError(f"{path}: no label for this image in {mask_dir} ({counts})")
    for name, path in masks.items():
        if name not in images:
            raise SegkitError(f"{path}: no image for this label in {image_dir} ({counts})")
    return {name: (images[name], masks[name]) for name in sorted(images, key=_natural_key)}


def _split_root(src: Path, split: str | None) -> Path:
    """`src/<split>` when it exists (default split: train); otherwise `src` itself unless a split was asked for."""
    _require_dir(src, "dataset source")
    candidate = src / (split or "train")
    if candidate.is_dir():
        return candidate
    if split is not None:
        raise SegkitError(f"{candidate}: missing folder (split {split!r})")
    return src


def _index_mapper(mapping: dict[int, int]) -> Callable[[np.ndarray, Path], np.ndarray]:
    """Raw index mask -> class ids by `mapping` (255 stays ignore); any other raw value is an error naming the file."""
    known = np.zeros(256, dtype=bool)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    known[IGNORE_INDEX] = True
    for raw, class_id in mapping.items():
        known[raw], lut[raw] = True, class_id

    def apply(raw: np.ndarray, path: Path) -> np.ndarray:
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        unknown = present[~known[present]]
        if unknown.size:
            raise SegkitError(
                f"{path}: unknown label value(s) {unknown.tolist()[:8]}; expected {sorted(mapping)[:3]}..{max(mapping)} or 255"
            )
        return lut[raw]

    return apply


def _check_classes_mode(classes: str, fmt: str) -> None:
    if classes not in ("train", "all"):
        raise SegkitError(f"classes={classes!r}: expected 'train' or 'all' for format {fmt}")


def _index_mask_reader(fmt, src, split, items, class_names, colors, mapping, keep_present_only) -> Reader:
    """A reader for photo + index-PNG pairs, the shape shared by cityscapes, camvid and folder."""
    to_class = _index_mapper(mapping)

    def read(name: str):
        image_path, mask_path = items[name]
        image, mask = read_image(image_path), to_class(read_index_mask(mask_path), mask_path)
        _check_same_size(image, mask, image_path, mask_path)
        return image, mask

    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return Reader(fmt, src, list(items), tuple(class_names), colors, read, split, keep_present_only)


def _check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    if image.shape[:2] != mask.shape[:2]:
        (ih, iw), (mh, mw) = image.shape[:2], mask.shape[:2]
        raise SegkitError(f"{mask_path}: label is {mw}x{mh} but its image {image_path.name} is {iw}x{ih}")


# ---------------------------------------------------------------------------------------------
# Formats


def _open_cityscapes_pairs(src: Path, classes: str, split: str | None,
                           max_color_distance: float | None = None) -> Reader:
    """JPEG composites, photo left and colour label right, in the official Cityscapes palette; label pixels farther
    than `max_color_distance` (None: PAIRS_MAX_COLOR_DISTANCE) from every palette colour are edge blends and go to
    ignore."""
    tolerance = PAIRS_MAX_COLOR_DISTANCE if max_color_distance is None else max_color_distance
    _check_classes_mode(classes, "cityscapes-pairs")
    root = _split_root(src, split)
    split = root.name if root != src else None
    files = _by_name(root.iterdir())
    if not files:
        raise SegkitError(f"{root}: no .jpg/.png composites found")
    palette = distinct_cityscapes_colors()
    palette_colors = np.array([label.color for label in palette], dtype=np.uint8)
    if classes == "train":
        to_class = _class_lut([label.train_id for label in palette])
        names, colors = TRAIN_CLASS_NAMES, TRAIN_CLASS_COLORS
    else:
        to_class = _class_lut(list(range(len(palette))))
        names, colors = tuple(label.name for label in palette), palette_colors

    def read(name: str):
        path = files[name]
        composite = read_image(path)
        height, width = composite.shape[:2]
        if width != 2 * height:
            raise SegkitError(f"{path}: composite is {width}x{height}; expected width = 2 x height (photo | label)")
        if height < MIN_LABEL_SIDE:
            raise SegkitError(f"{path}: composite is {width}x{height}; its label half must be at least "
                              f"{MIN_LABEL_SIDE}x{MIN_LABEL_SIDE} pixels to be checked as a label")
        index = nearest_color_index(composite[:, height:], palette_colors, tolerance)
        _check_matched(index, path, f"Cityscapes colour (within distance {tolerance:g})")
        _check_piecewise_constant(index, path)
        return np.ascontiguousarray(composite[:, :height]), to_class[index]

    return Reader("cityscapes-pairs", src, sorted(files, key=_natural_key), names, colors, read, split, classes == "all",
                  max_color_distance)


def _open_cityscapes(src: Path, classes: str, split: str | None) -> Reader:
    """Official layout: leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/<split>/<city>/*_gtFine_labelIds.png."""
    _check_classes_mode(classes, "cityscapes")
    split = split or "train"
    _require_dir(src, "dataset source")
    image_root = _require_dir(src / "leftImg8bit" / split, "official layout leftImg8bit/<split>/<city>/")
    label_root = _require_dir(src / "gtFine" / split, "official layout gtFine/<split>/<city>/")
    images = _by_name(image_root.glob("*/*_leftImg8bit.png"), "_leftImg8bit")
    label_ids = _by_name(label_root.glob("*/*_gtFine_labelIds.png"), "_gtFine_labelIds")
    train_ids = _by_name(label_root.glob("*/*_gtFine_labelTrainIds.png"), "_gtFine_labelTrainIds")
    # labelIds are the source of truth; ready-made labelTrainIds are used as-is only when they are all there is.
    if label_ids:
        labels = label_ids
        if classes == "train":
            mapping = {label.id: label.train_id for label in CITYSCAPES_LABELS}
        else:
            mapping = {label.id: label.id for label in CITYSCAPES_LABELS}
    elif classes == "train":
        labels, mapping = train_ids, {i: i for i in range(len(TRAIN_CLASS_NAMES))}
    else:
        raise SegkitError(f"{label_root}: classes='all' needs *_gtFine_labelIds.png files, found none")
    items = _pair_up(images, labels, image_root, label_root)
    if classes == "train":
        names, colors = TRAIN_CLASS_NAMES, TRAIN_CLASS_COLORS
    else:
        names = [label.name for label in CITYSCAPES_LABELS]
        colors = [label.color for label in CITYSCAPES_LABELS]
    return _index_mask_reader("cityscapes", src, split, items, names, colors, mapping, classes == "all")


def _open_camvid(src: Path, classes: str, split: str | None) -> Reader:
    """SegNet layout: <split>/*.png photos and <split>annot/*.png index labels (0..10, 11 = void)."""
    _check_classes_mode(classes, "camvid")
    split = split or "train"
    _require_dir(src, "dataset source")
    image_dir = _require_dir(src / split, f"CamVid {split}/ photos")
    mask_dir = _require_dir(src / f"{split}annot", f"CamVid {split}annot/ index labels")
    items = _pair_up(_by_name(image_dir.iterdir()), _by_name(mask_dir.iterdir()), image_dir, mask_dir)
    void_name, void_id, void_color = CAMVID11_VOID
    table = list(CAMVID11_CLASSES)
    mapping = {i: i for i in range(len(table))}
    if classes == "all":
        table.append((void_name, void_color))
        mapping[void_id] = len(table) - 1
    else:
        mapping[void_id] = IGNORE_INDEX
    names, colors = zip(*table)
    return _index_mask_reader("camvid", src, split, items, names, colors, mapping, classes == "all")


def _read_class_dict(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """Kaggle CamVid's class_dict.csv: a `name,r,g,b` header, then one class per row with distinct colours."""
    if not path.is_file():
        raise SegkitError(f"{path}: missing class table (columns name,r,g,b)")
    rows = list(csv.reader(io.StringIO(_read_text(path), newline="")))
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if header != ["name", "r", "g", "b"]:
        raise SegkitError(f"{path}: line 1 must be the header name,r,g,b, got {','.join(header) or 'nothing'}")
    table, owner = [], {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        name, color = _parse_class_row(row, path, line)
        if color in owner:
            raise SegkitError(f"{path}: line {line}: colour {color} of {name!r} is already used by {owner[color]!r}")
        owner[color] = name
        table.append((name, color))
    if not table:
        raise SegkitError(f"{path}: no classes listed")
    return table


def _read_text(path: Path) -> str:
    """A UTF-8 text file (a byte-order mark is allowed) as str; other encodings are refused naming the first bad byte."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise SegkitError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        bad = f"byte 0x{err.object[err.start]:02x} at offset {err.start}"
        raise SegkitError(f"{path}: not UTF-8 text ({bad}); save it as UTF-8") from None


def _parse_class_row(row: list[str], path: Path, line: int) -> tuple[str, tuple[int, int, int]]:
    """`name,r,g,b` with 0..255 integers."""
    if len(row) != 4 or not row[0].strip():
        raise SegkitError(f"{path}: line {line}: expected name,r,g,b, got {','.join(row)!r}")
    try:
        color = tuple(int(cell) for cell in row[1:])
    except ValueError:
        raise SegkitError(f"{path}: line {line}: colour values must be integers, got {','.join(row[1:])!r}") from None
    if not all(0 <= c <= 255 for c in color):
        raise SegkitError(f"{path}: line {line}: colour values must be 0..255, got {color}")
    return row[0].strip(), color


def _open_camvid32(src: Path, classes: str, split: str | None) -> Reader:
    """Kaggle layout: <split>/*.png photos, <split>_labels/<name>_L.png RGB labels, class_dict.csv (name,r,g,b)."""
    _check_classes_mode(classes, "camvid32")
    split = split or "train"
    _require_dir(src, "dataset source")
    table = _read_class_dict(src / "class_dict.csv")
    image_dir = _require_dir(src / split, f"CamVid {split}/ photos")
    mask_dir = _require_dir(src / f"{split}_labels", f"CamVid {split}_labels/<name>_L.png colour labels")
    items = _pair_up(_by_name(image_dir.iterdir()), _by_name(mask_dir.iterdir(), "_L"), image_dir, mask_dir)
    table_colors = np.array([color for _, color in table], dtype=np.uint8)
    # In 'train' mode the void row (Kaggle's "Void", black) is ignore and the other rows are renumbered.
    kept = [i for i, (name, _) in enumerate(table) if classes == "all" or name.lower() != "void"]
    class_of_row = np.full(len(table), IGNORE_INDEX, dtype=np.uint8)
    class_of_row[kept] = np.arange(len(kept))
    to_class = _class_lut(class_of_row.tolist())

    def read(name: str):
        image_path, mask_path = items[name]
        image, label = read_image(image_path), read_image(mask_path)
        _check_same_size(image, label, image_path, mask_path)
        index = exact_color_index(label, table_colors)
        _check_matched(index, mask_path, "colour in class_dict.csv")
        return image, to_class[index]

    names = tuple(table[i][0] for i in kept)
    return Reader("camvid32", src, list(items), names, table_colors[kept], read, split, classes == "all")


def read_classes_file(path: Path) -> list[tuple[str, tuple[int, int, int] | None]]:
    """The folder format's classes file: one class per line, `name` or `name,r,g,b`; line order gives the id.

    Blank lines and lines starting with `#` are skipped. Colours are optional but all-or-none.
    """
    if not path.is_file():
        raise SegkitError(f"{path}: missing classes file (one class name per line, optionally name,r,g,b)")
    table, seen = [], set()
    for line, text in enumerate(_read_text(path).splitlines(), start=1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        cells = [cell.strip() for cell in text.split(",")]
        name, color = (cells[0], None) if len(cells) == 1 else _parse_class_row(cells, path, line)
        if name in seen:
            raise SegkitError(f"{path}: line {line}: class {name!r} is listed twice")
        seen.add(name)
        table.append((name, color))
    if not table:
        raise SegkitError(f"{path}: no classes listed")
    if len(table) > IGNORE_INDEX:
        raise SegkitError(f"{path}: {len(table)} classes; at most 255 fit a uint8 mask with 255 = ignore")
    if len({color is None for _, color in table}) > 1:
        raise SegkitError(f"{path}: give a colour for every class or for none")
    return table


def _fallback_colors(count: int) -> np.ndarray:
    """Distinct display colours when a classes file gives none: hues spread by the golden ratio."""
    hues = (np.arange(count) * 0.618034 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(count, 200, np.uint8), np.full(count, 230, np.uint8)], axis=-1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def _open_folder(src: Path, classes: str, split: str | None) -> Reader:
    """images/*.{png,jpg} and masks/<same name>.png (index PNGs, 255 = ignore) with a classes file.

    `classes` is 'train' (every class in <src>/classes.txt, ids as listed), 'all' (the same table, cut down to the
    classes present and renumbered) or the path of a classes file elsewhere.
    """
    root = _split_root(src, split) if split else _require_dir(src, "dataset source")
    split = root.name if root != src else None
    classes_path = root / CLASSES_FILE if classes in ("train", "all") else Path(classes)
    table = read_classes_file(classes_path)
    image_dir = _require_dir(root / "images", "folder format images/")
    mask_dir = _require_dir(root / "masks", "folder format masks/ (index PNGs named like the images)")
    items = _pair_up(_by_name(image_dir.iterdir()), _by_name(mask_dir.iterdir()), image_dir, mask_dir)
    names = [name for name, _ in table]
    colors = _fallback_colors(len(table)) if table[0][1] is None else [color for _, color in table]
    mapping = {i: i for i in range(len(table))}
    return _index_mask_reader("folder", src, split, items, names, colors, mapping, classes == "all")


_OPENERS = {
    "cityscapes-pairs": _open_cityscapes_pairs,
    "cityscapes": _open_cityscapes,
    "camvid": _open_camvid,
    "camvid32": _open_camvid32,
    "folder": _open_folder,
}


def open_reader(format: str, src, *, classes: str = "train", split: str | None = None,
                max_color_distance: float | None = None) -> Reader:
    """Open the dataset at `src` in `format` (one of FORMATS); files are listed and paired now, decoded on iteration.

    classes: 'train' (the evaluated classes; void -> 255) or 'all' (the full label set, void classes included;
    `prepare` keeps those present and renumbers them from 0). The folder format also takes a classes-file path.
    split: which split to read where the layout has several (default: train).
    max_color_distance: cityscapes-pairs only: how far (Euclidean, RGB 0..255) a label pixel may be from its nearest
    palette colour and still take its class; None keeps PAIRS_MAX_COLOR_DISTANCE. Larger values label more of
    the JPEG-blurred edge pixels, and more of them wrongly (docs/data.md).
    """
    if format not in _OPENERS:
        raise SegkitError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    distance = None if max_color_distance is None else check_max_color_distance(max_color_distance, format)
    if distance is None:
        return _OPENERS[format](Path(src), classes, split)
    return _OPENERS[format](Path(src), classes, split, max_color_distance=distance)


def check_max_color_distance(value, format: str) -> float | None:
    """`value` as a float, None when it is the default (the same labels, so the same cache), refused unless the
    format decodes colour labels by distance and it is a positive number."""
    if format != "cityscapes-pairs":
        raise SegkitError(f"max color distance {value!r} applies to cityscapes-pairs colour labels, not to format {format}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise SegkitError(f"max color distance must be a positive number (RGB units; default "
                          f"{PAIRS_MAX_COLOR_DISTANCE:g}), got {value!r}")
    return None if value == PAIRS_MAX_COLOR_DISTANCE else float(value)

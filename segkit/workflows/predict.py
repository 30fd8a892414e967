"""`segkit.predict`: colour masks and overlays for image files of any size, from a run folder or model file."""

import os
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from segkit import files, models, viz
from segkit.data.palette import TRAIN_CLASS_COLORS
from segkit.data.readers import read_image
from segkit.errors import SegkitError
from segkit.workflows import evaluate, loading, runs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
OUTPUT_KINDS = ("mask", "overlay")
# Hidden in --out: the name and digest of every file predict wrote there, so a later call replaces only those.
LEDGER = ".segkit-predict.json"
# The ledger is rewritten whole each time it records files, so outputs are written in blocks of images: a save per
# image would cost time quadratic in the folder's size. Bounded in bytes too, as each block waits in memory.
BLOCK_IMAGES, BLOCK_BYTES = 32, 64 << 20


def predict(model_path, inputs, *, out, input_size=None, tta=None, window=None, skip_bad=False, masks=False,
            every=1) -> list[Path]:
    """Writes `<stem>_mask.png` (class colours) and `<stem>_overlay.png` per image into `out`; returns the paths.

    model_path: a run folder or .keras file. inputs: image files and/or folders of images of any size.
    The model sees each image whole, resized to the size it was trained at (`loading.fed_size`), and its class
    probabilities are resized back to the image's size: a model trained on street scenes at 256x256 sees a
    2048x1024 photo as it saw its training images. `input_size` (H, W) feeds another size (a model of no
    fixed input only). `window` (h, w) instead predicts each image at its own resolution in overlapping tiles of
    that size: for a model trained on crops of full-resolution images.
    Every input is read before anything is written: an unreadable image stops the call with nothing written,
    or with `skip_bad` is reported in one line and left out (with a count at the end).
    Video files (.mp4, .avi, .mov) instead get `<stem>_overlay.mp4`, and with `masks` per-frame class-index PNGs,
    of one frame in `every`: see `segkit.workflows.video.predict_video`.
    """
    from segkit.workflows import video  # imported here: video.py builds on this module

    if video.handles(inputs, tta=tta, window=window, skip_bad=skip_bad, masks=masks, every=every):
        return video.predict_video(model_path, inputs, out=out, input_size=input_size, masks=masks, every=every)
    input_size = _checked_input_size(input_size, window)
    out = files.check_writable_folder(out, "--out")
    net, run = loading.load_model(model_path)
    size = loading.fed_size(net, run, input_size, window)
    colors = class_colors(run, loading.num_classes_of(net), model_path=model_path)
    paths = image_files(inputs)
    _check_output_names(paths)
    readable = _readable(paths, skip_bad)
    ledger = files.Ledger(out, LEDGER, "segkit_predict")
    _check_outputs_replaceable(readable, out, ledger)
    if window is not None:
        models.check_window(net, window)  # before --out exists: a window the model rejects writes nothing
    print(f"the model sees each image {_how_fed(size, window, input_size)}")
    written = []
    with files.writing_into(out, "--out"):
        out.mkdir(parents=True, exist_ok=True)
        predicted = (_predicted(net, number, path, colors, tta, window, size)
                     for number, path in enumerate(readable, start=1))
        for block in _blocks(predicted):
            written += ledger.write({name: data for item in block for name, data in item.outputs.items()})
            for item in block:
                print(f"{item.number} of {len(readable)}: {item.path} -> {out / item.path.stem}_{{mask,overlay}}.png "
                      f"({item.seconds:.2f} s)")
    if len(readable) < len(paths):
        print(f"skipped {len(paths) - len(readable)} of {len(paths)} images (unreadable)")
    return written


class Predicted(NamedTuple):
    number: int  # 1-based position among the inputs
    path: Path
    outputs: dict[str, bytes]  # output file name: PNG bytes
    seconds: float


def _checked_input_size(input_size, window):
    input_size = loading.checked_size(input_size, "--input-size")
    if input_size is not None and window is not None:
        raise SegkitError("--input-size resizes each image whole and --window tiles it at its own size; give one of them")
    return input_size


def _how_fed(size, window, input_size) -> str:
    if window is not None:
        return f"at its own size, in overlapping {window[0]}x{window[1]} tiles"
    if size is None:
        return "at its own size (the model file records no training size; --input-size H W resizes)"
    why = "--input-size" if input_size is not None else "the size it was trained at"
    return f"resized to {size[0]}x{size[1]} ({why}), and its mask resized back to the image's size"


def _predicted(net, number: int, path: Path, colors, tta, window, size) -> Predicted:
    start = time.perf_counter()
    image = read_image(path)
    mask = evaluate.classes_at(net, image[None], input_size=size, tta=tta, window=window)[0]
    pictures = {"mask": viz.colorize(mask, colors), "overlay": viz.overlay(image, mask, colors)}
    outputs = {name: png_bytes(pictures[kind]) for kind, name in _output_names(path).items()}
    return Predicted(number, path, outputs, time.perf_counter() - start)


def _blocks(predicted):
    """Lists of consecutive Predicted items, at most BLOCK_IMAGES long or just over BLOCK_BYTES."""
    block, size = [], 0
    for item in predicted:
        block.append(item)
        size += sum(map(len, item.outputs.values()))
        if len(block) == BLOCK_IMAGES or size >= BLOCK_BYTES:
            yield block
            block, size = [], 0
    if block:
        yield block


def _output_names(path: Path) -> dict[str, str]:
    return {kind: f"{path.stem}_{kind}.png" for kind in OUTPUT_KINDS}


def _check_outputs_replaceable(paths, out: Path, ledger: files.Ledger) -> None:
    """Refuses, before anything is written, an output that would replace one of the inputs, or a file in `out`
    that segkit predict did not write there (or that changed since): the user's own files are never lost."""
    inputs = {Path(os.path.realpath(path)): path for path in paths}
    for path in paths:
        for kind, name in _output_names(path).items():
            victim = inputs.get(Path(os.path.realpath(out / name)))
            if victim is not None:
                raise SegkitError(f"{victim}, an input, would be overwritten by the {kind} of {path}; "
                                  "choose another --out")
    foreign = ledger.foreign(name for path in paths for name in _output_names(path).values())
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise SegkitError(f"--out {out} holds {listed}, which segkit predict did not write (or which changed since); "
                          "move them away or choose another --out")


def _check_output_names(paths) -> None:
    """Outputs are named by file stem: two inputs with one stem (x.jpg and x.png, or a/x.png and b/x.png) would
    overwrite each other. Compared case-folded, as on case-insensitive file systems."""
    seen = {}
    for path in paths:
        other = seen.setdefault(path.stem.casefold(), path)
        if other != path:
            raise SegkitError(f"inputs {other} and {path} would both be written as {path.stem}_mask.png and "
                              f"{path.stem}_overlay.png; rename one, or predict them into separate --out folders")


def _readable(paths, skip_bad) -> list[Path]:
    """The paths whose images decode (each is read once here, so a bad one stops the call before anything is written)."""
    good = []
    for path in paths:
        try:
            read_image(path)
        except SegkitError as err:
            if not skip_bad:
                raise SegkitError(f"{err} (nothing written; --skip-bad predicts the other images)") from None
            print(f"skipped {err}")  # the message starts with the path
            continue
        good.append(path)
    if not good:
        raise SegkitError(f"none of the {len(paths)} images can be read; nothing written")
    return good


def class_colors(run, num_classes: int, model_path=None) -> np.ndarray:
    """The run's class colours (dataset.json), else those the model file at `model_path` records; without either,
    the Cityscapes palette for 19 classes, else a fixed one."""
    if run is not None and run.file(runs.DATASET).is_file():
        return np.asarray(run.dataset["colors"], dtype=np.uint8)
    saved = loading.trained_labels(model_path) if model_path is not None else None
    if saved is not None and saved["colors"] is not None and len(saved["colors"]) == num_classes:
        return np.asarray(saved["colors"], dtype=np.uint8)
    if num_classes == len(TRAIN_CLASS_COLORS):
        return TRAIN_CLASS_COLORS
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(num_classes, 3), dtype=np.uint8)


def image_files(inputs) -> list[Path]:
    """The image files named by `inputs` (files, or folders scanned one level deep), in a stable order."""
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise SegkitError("no input images given")
    found_files = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SegkitError(f"folder {item} has no images ({', '.join(IMAGE_SUFFIXES)})")
            found_files.extend(found)
        elif item.is_file() or item.is_symlink():  # a link that leads nowhere (a loop) is named when read, as in a folder
            found_files.append(item)
        else:
            raise SegkitError(f"input {item} does not exist")
    return _without_repeats(found_files)


def _without_repeats(paths) -> list[Path]:
    """`paths` in order, each file once (a folder and a file inside it may both be named)."""
    unique = {}
    for path in paths:
        # realpath, not resolve(): a symlink loop is then reported when the image is read, in one line, as data prepare does
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Writes an RGB uint8 array to `path` as a PNG, whole or not at all."""
    files.write_bytes(path, png_bytes(rgb))


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 array encoded as PNG."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise SegkitError(f"could not encode a {rgb.shape} image as PNG")
    return encoded.tobytes()

"""Model files: segkit's .keras files written with the classes they predict, and any .keras file read back safely
(archive members bounded, safe mode on, auxiliary heads removed), or refused in one line when segkit cannot use it;
the size a loaded model is fed images at."""

import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

from segkit import models
from segkit.data.palette import IGNORE_INDEX
from segkit.errors import SegkitError, first_line
from segkit.workflows import runs

MAX_CLASSES = IGNORE_INDEX  # masks hold class indices 0..254; 255 marks ignored pixels
# Bounds on a .keras archive, checked before Keras reads it: Keras stores members uncompressed and its own guard
# starts at 4 GiB, so a 1 MB file could make it inflate a gigabyte of config.json or model.weights.h5.
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
JSON_MEMBERS = ("config.json", METADATA)
MAX_JSON_BYTES = 16 * 2**20  # the largest segkit model's config.json is about 0.2 MB
MAX_INFLATION = 20  # uncompressed / stored bytes, of each member and of all together (weights re-zipped: under 2)
INFLATION_FLOOR = 16 * 2**20  # fewer uncompressed bytes than this are harmless at any ratio
METADATA_KEY = "segkit"  # metadata.json["segkit"] = {"classes": [...], "colors": [[r, g, b], ...]}


def load_model(source) -> tuple[keras.Model, "runs.Run | None"]:
    """(inference model, its run or None) from a run folder (its best.keras) or a .keras model file.

    Loaded with Keras' safe mode on: a model file can carry no code. A file that is not a Keras model, a
    decompression bomb (`check_archive`), one with layers segkit does not know, or a model segkit cannot use
    (no fixed input, several outputs, over MAX_CLASSES classes) is a one-line SegkitError.
    """
    path, run = model_file(source)
    check_archive(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 -- Keras raises many types for damaged or foreign files
        raise SegkitError(f"model {path} cannot be loaded: {_load_failure(err)}") from None
    return _segmentation_model(models.without_aux(_functional(model, path)), path), run


def save_model(model, path, *, classes, colors) -> None:
    """Saves `model` as a .keras file whose metadata.json also records the classes it predicts and their colours,
    so a model file copied out of its run folder still names its classes (see `trained_classes`).

    Args:
        model (keras.Model): the model to save.
        path (str | Path): the .keras file to write (give an `files.atomic_path` one: it is written twice).
        classes (list[str]): class names, in class-index order.
        colors (array-like): (classes, 3) RGB colours of the classes.
    """
    path = Path(path)
    model.save(path)
    extra = {METADATA_KEY: {"classes": [str(name) for name in classes],
                            "colors": [[int(v) for v in rgb] for rgb in colors]}}
    # Keras writes metadata.json itself; the archive is copied member by member with it extended (stored, as Keras is).
    rewritten = path.with_name(path.name + ".metadata")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w") as target:
        for info in source.infolist():
            if info.filename == METADATA:
                target.writestr(info, json.dumps({**json.loads(source.read(info)), **extra}))
            else:
                large = info.file_size >= zipfile.ZIP64_LIMIT
                with source.open(info) as member, target.open(info, "w", force_zip64=large) as copy:
                    shutil.copyfileobj(member, copy, 2**20)
    os.replace(rewritten, path)


def trained_classes(source) -> list[str] | None:
    """The class names the model at `source` predicts: its run's dataset.json, else those its .keras file records
    (`save_model`); None for a model file from elsewhere.

    Args:
        source (str | Path): a run folder or a .keras model file.
    """
    labels = trained_labels(source)
    return None if labels is None else labels["classes"]


def trained_labels(source) -> dict | None:
    """{"classes": names, "colors": (classes, 3) RGB lists or None} of the model at `source`: its run's dataset.json,
    else what its .keras file records (`save_model`); None for a model file from elsewhere.

    Args:
        source (str | Path): a run folder or a .keras model file.
    """
    path, run = model_file(source)
    if run is not None and run.file(runs.DATASET).is_file():
        return {"classes": list(run.dataset["classes"]), "colors": run.dataset["colors"]}
    check_archive(path)
    with zipfile.ZipFile(path) as archive:
        if METADATA not in archive.namelist():
            return None
        try:
            saved = json.loads(archive.read(METADATA)).get(METADATA_KEY) or {}
        except (ValueError, AttributeError):
            raise SegkitError(f"model {path} has a damaged {METADATA} (not a JSON object)") from None
    classes = saved.get("classes") if isinstance(saved, dict) else None
    if not isinstance(classes, list):
        return None
    colors = saved.get("colors")
    valid = (isinstance(colors, list) and len(colors) == len(classes)
             and all(isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v < 256 for v in c)
                     for c in colors))
    return {"classes": [str(name) for name in classes], "colors": colors if valid else None}


def check_classes(model_name, model_classes, data_path, data_classes) -> None:
    """Refuses, in one line naming the first difference, data whose class names are not the model's.

    Names are compared ignoring case and the choice of space, "_" or "-" ("Traffic_light" is "traffic light").

    Args:
        model_name (str | Path): how the message names the model.
        model_classes (list[str] | None): the model's class names; None (unknown) checks nothing.
        data_path (str | Path): how the message names the data.
        data_classes (list[str]): the data's class names.
    """
    if model_classes is None or [_plain(n) for n in model_classes] == [_plain(n) for n in data_classes]:
        return
    pairs = enumerate(zip(model_classes, data_classes))
    index = next((i for i, (ours, theirs) in pairs if _plain(ours) != _plain(theirs)),
                 min(len(model_classes), len(data_classes)))
    raise SegkitError(f"model {model_name} was trained on other classes than the data at {data_path}: class {index} is "
                      f"{_name_at(model_classes, index)} for the model but {_name_at(data_classes, index)} in the data")


def _name_at(names, index) -> str:
    return repr(names[index]) if index < len(names) else "missing (the list ends)"


def _plain(name) -> str:
    return re.sub(r"[\s_-]+", " ", str(name)).strip().casefold()


def check_archive(path) -> None:
    """Refuses, before anything reads it, a .keras file that is no zip archive or whose members would inflate far
    beyond their stored size (decompression bombs) or whose config.json / metadata.json would exceed MAX_JSON_BYTES.

    Args:
        path (str | Path): the .keras file.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise SegkitError(f"model {path} is not a .keras model archive (a zip file): truncated, or not a model "
                          "file") from None
    for info in members:
        if info.filename in JSON_MEMBERS and info.file_size > MAX_JSON_BYTES:
            raise SegkitError(f"model {path} is refused: its {info.filename} would be {_size(info.file_size)} "
                              f"(a model's is at most {_size(MAX_JSON_BYTES)})")
        if _inflates(info.file_size, info.compress_size):
            raise SegkitError(f"model {path} is refused: its {info.filename} would inflate from "
                              f"{_size(info.compress_size)} to {_size(info.file_size)} (a decompression bomb, not a model)")
    inflated, stored = sum(i.file_size for i in members), sum(i.compress_size for i in members)
    if _inflates(inflated, stored):
        raise SegkitError(f"model {path} is refused: its members would inflate from {_size(stored)} to {_size(inflated)} "
                          "in all (a decompression bomb, not a model)")
    weights = next((info for info in members if info.filename == WEIGHTS), None)
    if weights is not None:
        _check_weight_arrays(path, weights)


def _check_weight_arrays(path, info) -> None:
    """HDF5 compresses arrays itself: the arrays model.weights.h5 declares are bounded against its stored size too.

    The member is read into memory (its size is bounded above), as Keras reads it, since seeking within a zip member
    is slow; then only the file's structure is walked. A file h5py cannot open is left for Keras to report.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            content = io.BytesIO(archive.read(info))
        with h5py.File(content, "r") as weights:
            declared = _array_bytes(weights)
    except (OSError, ValueError):
        return
    if _inflates(declared, info.compress_size):
        raise SegkitError(f"model {path} is refused: the arrays in its {WEIGHTS} would take {_size(declared)} from "
                          f"{_size(info.compress_size)} stored (a decompression bomb, not a model)")


def _array_bytes(group) -> int:
    sizes = []
    group.visititems(lambda name, item: sizes.append(item.size * item.dtype.itemsize)
                     if isinstance(item, h5py.Dataset) else None)
    return sum(sizes)


def _inflates(size: int, stored: int) -> bool:
    return size > INFLATION_FLOOR and size > MAX_INFLATION * max(stored, 1)


def _size(size: int) -> str:
    """Bytes as a person reads them: 9.1 KiB, 228.9 MiB, 1.1 GiB."""
    scaled, unit = next((size / 2**p, u) for p, u in ((30, "GiB"), (20, "MiB"), (10, "KiB"), (0, "bytes"))
                        if size >= 2**p or p == 0)
    return f"{size} bytes" if unit == "bytes" else f"{scaled:.1f} {unit}"


def model_file(source) -> tuple[Path, "runs.Run | None"]:
    """(the .keras file, its run or None) that `source`, a run folder or a .keras file, names; one-line errors.

    Args:
        source (str | Path): a run folder (its best.keras) or a .keras model file.
    """
    path = Path(source)
    if not path.is_dir():
        if not path.is_file():
            raise SegkitError(f"model {path} does not exist (give a run folder or a .keras file)")
        if path.suffix != ".keras":
            raise SegkitError(f"model {path} is not a .keras file")
        return path, None
    run = runs.Run.open(path)
    if not run.file(runs.BEST).is_file():
        raise SegkitError(f"run {run.path} has no {runs.BEST} yet (no epoch finished)")
    return run.file(runs.BEST), run


def _load_failure(err) -> str:
    """Why Keras could not load a model: the unknown class or the code it met, else its first line."""
    # Keras wraps "Could not locate class 'X'" deep inside a generic "could not be deserialized properly".
    unknown = re.search(r"Could not locate (class|function) '([^']+)'", str(err))
    if unknown:
        return (f"it uses {unknown[1]} '{unknown[2]}', which is neither a Keras nor a segkit one "
                "(custom code is not loaded from model files)")
    # Keras' own advice (pass safe_mode=False) is no option on the command line, and segkit never takes it.
    if "safe_mode=False" in str(err):
        code = re.search(r"Requested the (?:deserialization|loading) of (an? .+?)(?: whose|\.)", str(err))
        return (f"it holds Python code ({code[1].replace('`', '') if code else 'a function'}), which segkit never runs "
                "from a model file; save the model with Keras' built-in layers or registered custom layers instead")
    return first_line(err)


def _functional(model, path):
    """`model` as a functional model of one input and one output (or segkit's {"logits", "aux_logits"}): a Sequential
    model, or one whose input or output is a list of one, rebuilt as one (sharing its weights); a one-line error
    for a model with no fixed input (subclassed, or a Sequential one saved before it was built) or several outputs."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        inputs = outputs = None
    if not inputs or not outputs:
        raise SegkitError(f"model {path} has no fixed input (a subclassed model, or a Sequential one saved before "
                          "it was built); segkit loads models built on a keras.Input")
    sequential = isinstance(model, keras.Sequential)
    if len(outputs) > 1 and not (not sequential and isinstance(model.output, dict) and "logits" in model.output):
        raise SegkitError(f"model {path} has {len(outputs)} outputs; segkit uses models with one output of "
                          "per-pixel class scores (B, H, W, classes)")
    if sequential or any(isinstance(ends, (list, tuple)) for ends in (model.input, model.output)):
        return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0], name=model.name)
    return model


def _segmentation_model(model, path):
    """`model` when it maps (B, H, W, 3) images to (B, H, W, classes) logits for at most MAX_CLASSES classes;
    a one-line error otherwise."""
    inputs, outputs = keras.tree.flatten(model.input), keras.tree.flatten(model.output)
    shapes = f"input {tuple(inputs[0].shape)}, output {tuple(outputs[0].shape)}"
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] not in (None, 3) or len(outputs[0].shape) != 4:
        raise SegkitError(f"model {path} is not a segmentation model: it must take RGB images (B, H, W, 3) and give "
                          f"per-pixel class scores (B, H, W, classes), but has {shapes}")
    if outputs[0].shape[-1] is None or outputs[0].shape[-1] > MAX_CLASSES:
        raise SegkitError(f"model {path} predicts {outputs[0].shape[-1]} classes; segkit masks hold at most "
                          f"{MAX_CLASSES} (class index {IGNORE_INDEX} marks ignored pixels)")
    return model


def num_classes_of(model) -> int:
    return int(keras.tree.flatten(model.output)[0].shape[-1])


def trained_size(model, run=None) -> tuple[int, int] | None:
    """(H, W) the model saw whole images at in training: its fixed input size, else its run's prepared image size
    (dataset.json); None for a model file of no fixed size from elsewhere."""
    fixed = keras.tree.flatten(model.input)[0].shape[1:3]
    if None not in fixed:
        return tuple(int(side) for side in fixed)
    if run is not None and run.file(runs.DATASET).is_file():
        return tuple(int(side) for side in run.dataset["image_size"])
    return None


def fed_size(net, run, input_size=None, window=None) -> tuple[int, int] | None:
    """(H, W) images (and video frames) are resized to before the model sees them: `input_size`, else the size it
    was trained at (`trained_size`); None, their own size, with a `window` or for a model file of no fixed
    input from elsewhere. A one-line error when `input_size` is not a size the model takes."""
    fixed = trained_size(net)
    if input_size is not None and fixed is not None and tuple(input_size) != fixed:
        raise SegkitError(f"the model takes {fixed[0]}x{fixed[1]} images only; it cannot be fed at --input-size "
                          f"{input_size[0]} {input_size[1]}")
    if window is not None:
        return None
    return tuple(input_size) if input_size is not None else fixed or trained_size(net, run)


def checked_size(value, what: str) -> tuple[int, int] | None:
    """`value` as an (H, W) tuple of two positive integers, None as None; a one-line error naming `what` otherwise."""
    if value is None:
        return None
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value)):
        raise SegkitError(f"{what} must be two positive integers (H, W), got {value!r}")
    return tuple(int(v) for v in value)


def window_for(model, size, window=None):
    """Sliding-window tiles for images larger than a fixed-size model's input; None when padding suffices."""
    if window is not None:
        return tuple(window)
    fixed = keras.tree.flatten(model.input)[0].shape[1:3]
    if any(limit is not None and side > limit for side, limit in zip(size, fixed)):
        return tuple(fixed)
    return None

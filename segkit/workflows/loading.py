"""Trained models back from disk: a run folder's best.keras or a .keras file, safe mode on, auxiliary heads removed."""

import re
import zipfile
from pathlib import Path

import keras

from segkit import models
from segkit.errors import SegkitError, first_line
from segkit.workflows import runs


def load_model(source) -> tuple[keras.Model, "runs.Run | None"]:
    """(inference model, its run or None) from a run folder (its best.keras) or a .keras model file.

    Loaded with Keras' safe mode on: a model file can carry no code. A file that is not a Keras model,
    or one with layers segkit does not know, is a one-line SegkitError.
    """
    path, run = model_file(source)
    if not zipfile.is_zipfile(path):
        raise SegkitError(f"model {path} is not a .keras model archive (a zip file): truncated, or not a model file")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 -- Keras raises many types for damaged or foreign files
        raise SegkitError(f"model {path} cannot be loaded: {_load_failure(err)}") from None
    return _segmentation_model(models.without_aux(model), path), run


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
    """Why Keras could not load a model: the unknown class it met, else its first line."""
    # Keras wraps "Could not locate class 'X'" deep inside a generic "could not be deserialized properly".
    unknown = re.search(r"Could not locate (class|function) '([^']+)'", str(err))
    if unknown:
        return (f"it uses {unknown[1]} '{unknown[2]}', which is neither a Keras nor a segkit one "
                "(custom code is not loaded from model files)")
    return first_line(err)


def _segmentation_model(model, path):
    """`model` when it maps (B, H, W, 3) images to (B, H, W, classes) logits; a one-line error otherwise."""
    inputs, outputs = keras.tree.flatten(model.input), keras.tree.flatten(model.output)
    shapes = f"input {tuple(inputs[0].shape)}, output {tuple(outputs[0].shape)}"
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] not in (None, 3) or len(outputs[0].shape) != 4:
        raise SegkitError(f"model {path} is not a segmentation model: it must take RGB images (B, H, W, 3) and give "
                          f"per-pixel class scores (B, H, W, classes), but has {shapes}")
    return model


def num_classes_of(model) -> int:
    return int(keras.tree.flatten(model.output)[0].shape[-1])


def window_for(model, size, window=None):
    """Sliding-window tiles for images larger than a fixed-size model's input; None when padding suffices."""
    if window is not None:
        return tuple(window)
    fixed = keras.tree.flatten(model.input)[0].shape[1:3]
    if any(limit is not None and side > limit for side, limit in zip(size, fixed)):
        return tuple(fixed)
    return None

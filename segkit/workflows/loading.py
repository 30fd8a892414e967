"""Trained models back from disk: a run folder's best.keras or a .keras file, safe mode on, auxiliary heads removed."""

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
    path = Path(source)
    run = None
    if path.is_dir():
        run = runs.Run.open(path)
        path = run.file(runs.BEST)
        if not path.is_file():
            raise SegkitError(f"run {run.path} has no {runs.BEST} yet (no epoch finished)")
    elif not path.is_file():
        raise SegkitError(f"model {path} does not exist (give a run folder or a .keras file)")
    elif path.suffix != ".keras":
        raise SegkitError(f"model {path} is not a .keras file")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 -- Keras raises many types for damaged or foreign files
        raise SegkitError(f"model {path} cannot be loaded: {first_line(err)}") from None
    return models.without_aux(model), run


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

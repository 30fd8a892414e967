"""Score plots: a confusion-matrix heatmap and per-class IoU bars for one or several models."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from segkit.errors import SegkitError

__all__ = ["plot_confusion", "plot_class_iou", "format_scores"]

# Beyond this many classes the per-cell numbers become unreadable; the colours still tell.
_MAX_ANNOTATED_CLASSES = 20
_CELL_INCHES = 0.55  # room for a two-digit percentage at _CELL_FONTSIZE
_CELL_FONTSIZE = 10


def plot_confusion(cm, class_names, normalize=True, title=None):
    """Heatmap of a confusion matrix (rows = truth, columns = prediction) with class names on both axes.

    With `normalize`, each row is divided by its total, so a cell reads "share of this true class
    predicted as that class" and the diagonal is the class accuracy; a class with no true pixels
    is left blank rather than drawn as 0, and so is a cell that rounds to 0%.
    `title` names the model (run) the matrix belongs to.
    """
    cm = np.asarray(cm)
    names = [str(name) for name in class_names]
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(names):
        raise SegkitError(f"plot_confusion needs a square matrix with one row per class name; got shape {cm.shape} for {len(names)} names")
    values = _row_normalised(cm) if normalize else cm.astype(np.float64)
    size = max(4.0, _CELL_INCHES * len(names) + 2.0)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of true pixels" if normalize else "pixels")
    ticks = np.arange(len(names))
    axes.set_xticks(ticks, names, rotation=60, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    kind = "rows normalised, %" if normalize else "pixels"
    axes.set_title(f"{title}: confusion matrix ({kind})" if title else f"Confusion matrix ({kind})")
    if len(names) <= _MAX_ANNOTATED_CLASSES:
        _annotate_cells(axes, values, percent=normalize)
    return figure


def plot_class_iou(ious, class_names=None, title=None):
    """Per-class IoU bars, one colour per model, side by side; `title` goes after "IoU per class".

    `ious`: a mapping model name -> per-class IoUs, or a DataFrame with one column per model and
    one row per class (its index gives the class names unless `class_names` is given). NaN (a
    class absent from truth and prediction) draws no bar.
    """
    table = _iou_table(ious, class_names)
    models, names = list(table.columns), list(table.index)
    width = min(16.0, max(6.0, 0.25 * len(names) * max(len(models), 2) + 2.0))
    figure = Figure(figsize=(width, 4.5), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(models)
    positions = np.arange(len(names))
    for offset, model in enumerate(models):
        shift = (offset - (len(models) - 1) / 2) * width
        axes.bar(positions + shift, table[model].to_numpy(dtype=np.float64), width, label=model)
    axes.set_xticks(positions, names, rotation=60, ha="right", rotation_mode="anchor")
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("IoU")
    axes.set_title(f"IoU per class: {title}" if title else "IoU per class")
    axes.grid(axis="y", alpha=0.3)
    if len(models) > 1:
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars reach 1.0
    return figure


def format_scores(table: pd.DataFrame, decimals: int = 3):
    """A per-class score table for display with a fixed number of decimals (never 1.2e-05), NaN as "n/a".

    Integer columns (pixel counts) keep their digits; returns a pandas Styler.
    """
    floats = table.select_dtypes("number").columns.difference(table.select_dtypes("integer").columns)
    return table.style.format(f"{{:.{decimals}f}}", subset=list(floats), na_rep="n/a")


def _row_normalised(cm):
    totals = cm.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(cm, totals, out=np.full(cm.shape, np.nan), where=totals > 0)


def _annotate_cells(axes, values, percent):
    brightest = np.nanmax(values) if np.any(np.isfinite(values)) else 1.0
    for (row, column), cell in np.ndenumerate(values):
        text = f"{100 * cell:.0f}" if percent else f"{cell:.0f}"
        if np.isnan(cell) or text == "0":  # blank zeros leave the few real confusions standing out
            continue
        colour = "white" if cell > 0.6 * brightest else "black"
        axes.text(column, row, text, ha="center", va="center", fontsize=_CELL_FONTSIZE, color=colour)


def _iou_table(ious, class_names):
    """A DataFrame with one column per model and one row per class, from a mapping or a frame."""
    if isinstance(ious, pd.DataFrame):
        table = ious.copy()
    else:
        columns = {str(model): np.asarray(values, dtype=np.float64).ravel() for model, values in dict(ious).items()}
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise SegkitError(f"plot_class_iou got models with different class counts: {sorted(lengths)}")
        table = pd.DataFrame(columns)
    if table.shape[1] == 0 or table.shape[0] == 0:
        raise SegkitError("plot_class_iou needs at least one model with at least one class")
    if class_names is not None:
        names = [str(name) for name in class_names]
        if len(names) != table.shape[0]:
            raise SegkitError(f"plot_class_iou got {len(names)} class names for {table.shape[0]} IoU values per model")
        table.index = names
    return table

"""Figures of training runs: learning curves (one or several runs on one plot) and a model-by-model prediction grid."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from segkit.errors import SegkitError
from segkit.viz.masks import overlay

__all__ = ["plot_learning_curves", "comparison_grid"]


def plot_learning_curves(histories, metrics=("loss", "miou"), title=None) -> Figure:
    """One panel per metric with epochs on x: training solid, validation dashed, one colour per run.

    `histories`: a history frame or {run name: frame}. A frame has an `epoch` column and columns
    `<metric>` and `val_<metric>` (as in a run's history.csv); a column a frame lacks is skipped.
    """
    if isinstance(histories, pd.DataFrame):
        histories = {"": histories}
    if not histories:
        raise SegkitError("plot_learning_curves needs at least one history")
    fig = Figure(figsize=(5 * len(metrics), 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    colors = [f"C{i}" for i in range(10)]
    for ax, metric in zip(axes, metrics):
        for i, (name, frame) in enumerate(histories.items()):
            prefix = f"{name} " if name else ""
            for column, style, part in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
                if column in frame:
                    ax.plot(frame["epoch"], frame[column], style, color=colors[i % 10], marker=".", label=f"{prefix}{part}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def comparison_grid(images, truth, predictions: dict, colors, alpha: float = 0.5, panel_size: float = 2.2) -> Figure:
    """One row per image: image | truth overlay | one overlay per model (`predictions`: name -> (N, H, W) classes)."""
    images, truth = np.asarray(images), np.asarray(truth)
    for name, pred in predictions.items():
        if np.shape(pred) != truth.shape:
            raise SegkitError(f"predictions of {name} have shape {np.shape(pred)}, the truth {truth.shape}")
    columns = [("image", None), ("truth", truth), *predictions.items()]
    height, width = images.shape[1:3]
    fig = Figure(figsize=(panel_size * width / height * len(columns), panel_size * len(images)), layout="constrained")
    axes = fig.subplots(len(images), len(columns), squeeze=False)
    for row, image in enumerate(images):
        for col, (title, labels) in enumerate(columns):
            axes[row, col].imshow(image if labels is None else overlay(image, np.asarray(labels)[row], colors, alpha))
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(title, fontsize=9)
    return fig

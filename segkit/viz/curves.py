"""Figures of training runs: learning curves, one or several runs on one plot."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from segkit.errors import SegkitError

__all__ = ["plot_learning_curves", "spans_decades"]

LOG_SCALE_RATIO = 100.0  # positive values spanning more than two decades get a log axis


X_AXES = {"minutes": "training minutes", "images_seen": "images seen", "epoch": "epochs"}


def plot_learning_curves(histories, metrics=("loss", "miou"), title=None, x=("minutes", "images_seen")) -> Figure:
    """One panel per metric and x axis: training solid, validation dashed, one colour per run.

    Args:
        histories: a progress frame (segkit's `Run.progress()`) or {run name: frame}. A frame has the `x`
            columns and columns `<metric>` and `val_<metric>`; a metric column a frame lacks is skipped.
        metrics: one column of panels per metric.
        title: the figure's title.
        x: one row of panels per x axis: "minutes" (training time), "images_seen", "epoch" (fractional).

    A point marks each epoch's end, so an epoch a time budget cut short sits at the fraction it ran.
    """
    if isinstance(histories, pd.DataFrame):
        histories = {"": histories}
    if not histories:
        raise SegkitError("plot_learning_curves needs at least one history")
    x = (x,) if isinstance(x, str) else tuple(x)
    unknown = [axis for axis in x if axis not in X_AXES]
    if unknown:
        raise SegkitError(f"unknown x axis {unknown[0]!r} for learning curves; choose from {', '.join(X_AXES)}")
    for name, frame in histories.items():
        missing = [axis for axis in x if axis not in frame]
        if missing:
            label = f"history {name!r}" if name else "the history"
            raise SegkitError(f"{label} has no {missing[0]!r} column; pass a run's progress() frame")
    fig = Figure(figsize=(5 * len(metrics), 3.6 * len(x)), layout="constrained")
    grid = fig.subplots(len(x), len(metrics), squeeze=False)
    for axis, row in zip(x, grid):
        for ax, metric in zip(row, metrics):
            _draw_metric(ax, histories, metric, axis)
    if title:
        fig.suptitle(title)
    return fig


def _draw_metric(ax, histories: dict, metric: str, x: str) -> None:
    drawn, right = [], 0.0
    for i, (name, frame) in enumerate(histories.items()):
        prefix = f"{name} " if name else ""
        for column, style, part in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
            if column in frame:
                ax.plot(frame[x], frame[column], style, color=f"C{i % 10}", marker=".", label=f"{prefix}{part}")
                drawn.append(frame[column].to_numpy(dtype=np.float64))
                right = max(right, float(frame[x].max()))
    if drawn and spans_decades(np.concatenate(drawn)):
        ax.set_yscale("log")
    ax.set_xlim(0, 1.04 * right or None)  # from the start of training, the last point clear of the edge
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def spans_decades(values, ratio: float = LOG_SCALE_RATIO) -> bool:
    """True when the finite values are all positive and the largest is more than `ratio` times the smallest."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return values.size > 1 and values.min() > 0 and values.max() > ratio * values.min()

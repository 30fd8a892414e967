"""Figures of training runs: learning curves, one or several runs on one plot."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from segkit.errors import SegkitError

__all__ = ["plot_learning_curves", "spans_decades"]

LOG_SCALE_RATIO = 100.0  # positive values spanning more than two decades get a log axis


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
        drawn = []
        for i, (name, frame) in enumerate(histories.items()):
            prefix = f"{name} " if name else ""
            for column, style, part in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
                if column in frame:
                    ax.plot(frame["epoch"], frame[column], style, color=colors[i % 10], marker=".", label=f"{prefix}{part}")
                    drawn.append(frame[column].to_numpy(dtype=np.float64))
        if drawn and spans_decades(np.concatenate(drawn)):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig



def spans_decades(values, ratio: float = LOG_SCALE_RATIO) -> bool:
    """True when the finite values are all positive and the largest is more than `ratio` times the smallest."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return values.size > 1 and values.min() > 0 and values.max() > ratio * values.min()

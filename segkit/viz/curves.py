"""Learning curves: loss and mIoU per epoch, training solid and validation dashed, one or several runs on one plot."""

import matplotlib.pyplot as plt
import pandas as pd

__all__ = ["plot_learning_curves"]


def plot_learning_curves(histories, metrics=("loss", "miou"), title=None):
    """One panel per metric with epochs on x; `histories` is a history frame or {run name: frame}.

    A frame has an `epoch` column and columns `<metric>` and `val_<metric>` (as in a run's
    history.csv); a metric missing from a frame is skipped for that run.
    """
    if isinstance(histories, pd.DataFrame):
        histories = {"": histories}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics):
        for i, (name, frame) in enumerate(histories.items()):
            color = colors[i % len(colors)]
            prefix = f"{name} " if name else ""
            for column, style, part in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
                if column in frame:
                    ax.plot(frame["epoch"], frame[column], style, color=color, marker=".", label=f"{prefix}{part}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

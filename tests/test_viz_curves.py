"""Learning curves: one line per run and split, and a log axis only where the values span decades."""

import numpy as np
import pandas as pd

from segkit.viz import plot_learning_curves, spans_decades


def history(loss, val_loss):
    epochs = np.arange(1, len(loss) + 1)
    return pd.DataFrame({"epoch": epochs, "minutes": 2.5 * epochs, "images_seen": 40 * epochs, "loss": loss,
                         "val_loss": val_loss, "miou": 0.1 * epochs, "val_miou": 0.05 * epochs})


def test_a_loss_that_spans_decades_gets_a_log_axis_and_the_miou_panel_stays_linear():
    fig = plot_learning_curves({"run": history([2.0, 1.0, 0.6], [8.3e5, 40.0, 1.2])})
    loss_ax, miou_ax = fig.axes[:2]  # the first row of panels: against training minutes
    assert loss_ax.get_yscale() == "log"
    assert miou_ax.get_yscale() == "linear"
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), [8.3e5, 40.0, 1.2])


def test_a_loss_within_two_decades_keeps_a_linear_axis():
    assert plot_learning_curves(history([2.0, 1.0, 0.6], [2.5, 1.5, 0.9])).axes[0].get_yscale() == "linear"


def test_spans_decades_by_hand():
    assert spans_decades([1.0, 101.0])
    assert not spans_decades([1.0, 100.0])
    assert not spans_decades([0.0, 1000.0])  # zero cannot go on a log axis
    assert not spans_decades([np.nan, 5.0])
    assert spans_decades([np.inf, 0.01, 50.0])


def test_pyramid_bins_figure_draws_each_grid_with_its_bin_edges():
    from segkit.viz import plot_pyramid_bins

    features = np.arange(35.0).reshape(5, 7)
    pooled = {1: (np.ones((1, 1)), [0], [0]), 2: (np.ones((2, 2)), [0, 2], [0, 3]), 3: (np.ones((3, 3)), [0, 1, 3], [0, 2, 4])}
    fig = plot_pyramid_bins(np.zeros((40, 56, 3), np.uint8), {"features": features, "channels": 64, "pooled": pooled})
    assert [ax.get_title() for ax in fig.axes[2:]] == ["1x1 bins", "2x2 bins", "3x3 bins"]
    assert "7x5x64" in fig.axes[1].get_title()
    edges = [sorted(line.get_xydata()[0, 1] if line.get_xydata()[0, 0] == 0 else line.get_xydata()[0, 0] for line in ax.lines)
             for ax in fig.axes[2:]]
    assert edges == [[], [2, 3], [1, 2, 3, 4]]

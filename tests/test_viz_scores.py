"""The score plots draw exactly the numbers they are given, with the class names on the axes."""

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from segkit.errors import SegkitError
from segkit.viz import format_scores, plot_class_iou, plot_confusion

NAMES = ["road", "car", "sky"]
CM = np.array([[8, 2, 0], [0, 0, 0], [1, 0, 3]])  # "car" has no true pixels


def renders(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue().startswith(b"\x89PNG")


def test_confusion_heatmap_is_row_normalised_with_names_and_blank_empty_rows():
    figure = plot_confusion(CM, NAMES)
    assert isinstance(figure, Figure) and renders(figure)
    axes = figure.axes[0]
    drawn = np.ma.filled(axes.images[0].get_array().astype(float), np.nan)
    expected = np.array([[0.8, 0.2, 0.0], [np.nan] * 3, [0.25, 0.0, 0.75]])
    np.testing.assert_allclose(drawn, expected, equal_nan=True)
    assert [t.get_text() for t in axes.get_xticklabels()] == NAMES
    assert [t.get_text() for t in axes.get_yticklabels()] == NAMES
    assert sorted(t.get_text() for t in axes.texts) == sorted(["80", "20", "25", "75"])  # 0% cells stay blank


def test_confusion_heatmap_is_titled_with_its_model():
    assert "unet-r34_synthetic_64x64" in plot_confusion(CM, NAMES, title="unet-r34_synthetic_64x64").axes[0].get_title()


def test_score_table_has_fixed_decimals_never_scientific():
    table = pd.DataFrame({"IoU": [0.0, 1.5e-05, 0.8123], "pixels": [0, 12, 123456]}, index=["a", "b", "c"])
    html = format_scores(table).to_html()
    assert ">0.000<" in html and ">0.812<" in html and ">123456<" in html
    assert "e-0" not in html and "e+0" not in html


def test_confusion_heatmap_of_counts():
    figure = plot_confusion(CM, NAMES, normalize=False)
    np.testing.assert_array_equal(figure.axes[0].images[0].get_array(), CM)
    assert "8" in [t.get_text() for t in figure.axes[0].texts]


def test_class_iou_bars_side_by_side_for_several_models():
    ious = {"unet": [0.9, np.nan, 0.5], "pspnet": [0.8, 0.1, 0.6]}
    figure = plot_class_iou(ious, NAMES)
    assert renders(figure)
    axes = figure.axes[0]
    bars = [c for c in axes.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2
    for container, values in zip(bars, ious.values()):
        heights = [patch.get_height() for patch in container]
        np.testing.assert_allclose(heights, values, equal_nan=True)
    centres = [[p.get_x() + p.get_width() / 2 for p in c] for c in bars]
    assert all(a < b for a, b in zip(*centres))  # unet left of pspnet in every class group
    assert [t.get_text() for t in axes.get_xticklabels()] == NAMES
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["unet", "pspnet"]


def test_class_iou_from_a_frame_uses_its_index_as_class_names():
    frame = pd.DataFrame({"deeplab": [0.7, 0.2, 0.4]}, index=NAMES)
    axes = plot_class_iou(frame).axes[0]
    heights = [patch.get_height() for patch in axes.containers[0]]
    np.testing.assert_allclose(heights, [0.7, 0.2, 0.4])
    assert [t.get_text() for t in axes.get_xticklabels()] == NAMES


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: plot_confusion(np.ones((3, 2)), NAMES), "square matrix"),
        (lambda: plot_confusion(CM, NAMES[:2]), "one row per class name"),
        (lambda: plot_class_iou({"a": [0.1, 0.2], "b": [0.3]}, ["x", "y"]), "different class counts"),
        (lambda: plot_class_iou({"a": [0.1, 0.2]}, NAMES), "3 class names for 2"),
        (lambda: plot_class_iou({}), "at least one model"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(SegkitError, match=message):
        call()

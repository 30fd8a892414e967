"""Mask pictures: colours per class, overlays, and the image | label grid."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segkit.errors import SegkitError
from segkit.viz import colorize, overlay, sample_grid


COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
NAMES = ("red", "green", "blue")


def test_colorize_matches_a_per_pixel_loop():
    mask = np.random.default_rng(0).choice([0, 1, 2, 255], size=(7, 9)).astype(np.uint8)
    picture = colorize(mask, COLORS, ignore_color=(9, 9, 9))
    for (r, c), value in np.ndenumerate(mask):
        expected = (9, 9, 9) if value == 255 else tuple(COLORS[value])
        assert tuple(picture[r, c]) == expected


def test_overlay_blends_classes_and_leaves_ignored_pixels_alone():
    image = np.full((1, 3, 3), 100, np.uint8)
    mask = np.array([[0, 2, 255]], np.uint8)
    # Hand-worked: 0.25 * colour + 0.75 * 100.
    np.testing.assert_array_equal(overlay(image, mask, COLORS, alpha=0.25),
                                  [[[139, 75, 75], [75, 75, 139], [100, 100, 100]]])


def test_sample_grid_has_a_row_per_sample_and_names_the_classes_present():
    images = np.zeros((3, 16, 32, 3), np.uint8)
    masks = np.zeros((3, 16, 32), np.uint8)
    masks[:, :, 16:] = 2
    fig = sample_grid(images, masks, COLORS, NAMES, predictions=np.ones_like(masks))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 9
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "label", "prediction"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["red", "green", "blue"]
    assert not sample_grid(images, masks, COLORS).legends


@pytest.mark.parametrize(
    "call",
    [
        lambda: colorize(np.array([[3]]), COLORS),
        lambda: colorize(np.zeros((2, 2, 2), np.uint8), COLORS),
        lambda: overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8), COLORS),
        lambda: overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), COLORS, alpha=2),
        lambda: sample_grid(np.zeros((2, 4, 4, 3), np.uint8), np.zeros((1, 4, 4), np.uint8), COLORS),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(SegkitError):
        call()


def test_long_column_titles_wrap_instead_of_overlapping_and_the_legend_sits_beside_the_grid():
    names = ["unet-r34_cityscapes-pairs_128x128", "pspnet-r34_cityscapes-pairs_128x128", "deeplabv3plus-r34_cityscapes-pairs_128x128"]
    masks = np.zeros((2, 16, 16), np.uint8)
    fig = sample_grid(np.zeros((2, 16, 16, 3), np.uint8), masks, COLORS, NAMES,
                      predictions={name: masks for name in names}, panel_size=1.5)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes[:5]]
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 <= right.x0, "neighbouring column titles overlap"
    assert [ax.get_title().replace("\n", "") for ax in fig.axes[2:5]] == names
    legend = fig.legends[0].get_window_extent(renderer)
    assert legend.x0 >= max(ax.get_window_extent(renderer).x1 for ax in fig.axes)

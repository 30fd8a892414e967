"""viz.thumbnail_jpeg: saved figures shrunk to JPEG for notebook outputs."""

import io

import numpy as np
import pytest
from PIL import Image

from segkit import viz
from segkit.errors import SegkitError


def _png(path, width, height):
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (200, 30, 30)  # left half red, right half black
    Image.fromarray(pixels).save(path)
    return path


def test_wide_figures_shrink_to_max_width_keeping_shape_and_content(tmp_path):
    data = viz.thumbnail_jpeg(_png(tmp_path / "wide.png", 2000, 1000), max_width=900)
    image = np.asarray(Image.open(io.BytesIO(data)))
    assert Image.open(io.BytesIO(data)).format == "JPEG" and image.shape == (450, 900, 3)
    assert np.abs(image[225, 200].astype(int) - (200, 30, 30)).max() < 12 and image[225, 700].max() < 12


def test_small_figures_keep_their_size(tmp_path):
    data = viz.thumbnail_jpeg(_png(tmp_path / "small.png", 300, 200), max_width=900)
    assert Image.open(io.BytesIO(data)).size == (300, 200)


@pytest.mark.parametrize("content", [None, b"not an image"])
def test_missing_or_unreadable_files_give_one_line(tmp_path, content):
    path = tmp_path / "figure.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SegkitError, match=r"figure.png: not a readable image"):
        viz.thumbnail_jpeg(path)

"""Masks as pictures: class colours, overlays on the photo, and image | label (| prediction) grids."""

import math
import re

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from segkit.errors import SegkitError

__all__ = ["colorize", "overlay", "sample_grid"]

IGNORE_INDEX = 255  # CONTRIBUTING.md's mask contract
TITLE_FONTSIZE = 9
LEGEND_FONTSIZE = 7
_CHAR_INCHES = 0.55 * TITLE_FONTSIZE / 72  # average glyph width of the default sans-serif font
_LEGEND_ROW_INCHES = 0.19


def colorize(mask: np.ndarray, colors, ignore_color=(0, 0, 0)) -> np.ndarray:
    """RGB uint8 (H, W, 3) picture of a class-index mask: class c gets colors[c], 255 gets `ignore_color`."""
    mask = np.asarray(mask)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise SegkitError(f"mask must be a 2-D integer array, got shape {mask.shape} dtype {mask.dtype}")
    stray = ((mask >= len(colors)) & (mask != IGNORE_INDEX)) | (mask < 0)
    if stray.any():
        raise SegkitError(f"mask value {int(mask[stray][0])} has no colour: {len(colors)} classes, and 255 = ignore")
    table = np.zeros((256, 3), np.uint8)
    table[: len(colors)] = colors
    table[IGNORE_INDEX] = ignore_color
    return table.take(mask, axis=0)  # a quarter of the time of table[mask] (fancy indexing)


def overlay(image: np.ndarray, mask: np.ndarray, colors, alpha: float = 0.5) -> np.ndarray:
    """The photo with class colours blended in at `alpha`; ignored pixels show the photo as it is."""
    image = np.asarray(image)
    if image.shape[:2] != np.shape(mask) or image.ndim != 3 or image.shape[2] != 3:
        raise SegkitError(f"image {image.shape} and mask {np.shape(mask)} do not pair up")
    if not 0 <= alpha <= 1:
        raise SegkitError(f"alpha must be in [0, 1], got {alpha!r}")
    # In place, in float32, rounded half to even: about half the time of a per-pixel blend map (videos overlay
    # every frame); ignored pixels are copied back from the photo.
    weight = np.float32(alpha)
    blended = image.astype(np.float32)
    blended *= np.float32(1) - weight
    painted = colorize(mask, colors).astype(np.float32)
    painted *= weight
    blended += painted
    result = np.rint(blended, out=blended).clip(0, 255, out=blended).astype(np.uint8)
    ignored = np.asarray(mask) == IGNORE_INDEX
    if ignored.any():  # predictions have none
        result[ignored] = image[ignored]
    return result


def sample_grid(images, masks, colors, class_names=None, *, predictions=None, alpha: float = 0.5,
                panel_size: float = 2.4) -> Figure:
    """One row per sample: image | label overlay | prediction overlays. A legend names the classes shown.

    images: (N, H, W, 3) uint8; masks: (N, H, W) class indices, 255 = ignore; predictions: None, one
    (N, H, W) array (a "prediction" column) or a dict name -> (N, H, W) array (a column per model).
    Long column titles (run names) wrap at - and _ to stay within their panel; the legend sits right of the grid.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if len(images) == 0 or len(images) != len(masks):
        raise SegkitError(f"sample_grid needs as many masks as images (at least one), got {len(images)} and {len(masks)}")
    named = {} if predictions is None else predictions if isinstance(predictions, dict) else {"prediction": predictions}
    columns = [("image", None), ("label", masks)]
    for name, labels in named.items():
        if np.shape(labels) != masks.shape:
            raise SegkitError(f"predictions of {name} have shape {np.shape(labels)}, the masks {masks.shape}")
        columns.append((name, np.asarray(labels)))

    height, width = images.shape[1:3]
    panel_w = panel_size * width / height
    fig = Figure(figsize=(panel_w * len(columns), panel_size * len(images) + 0.3), layout="constrained")
    axes = fig.subplots(len(images), len(columns), squeeze=False)
    for row, image in enumerate(images):
        for col, (title, labels) in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(image if labels is None else overlay(image, labels[row], colors, alpha))
            ax.set_axis_off()
            if row == 0:
                ax.set_title(_wrap_title(title, panel_w), fontsize=TITLE_FONTSIZE)
    if class_names is not None:
        _add_legend(fig, [m for _, m in columns[1:]], colors, class_names)
    return fig


def _add_legend(fig: Figure, label_sets, colors, class_names) -> None:
    present = np.unique(np.concatenate([np.asarray(m).ravel() for m in label_sets]))
    present = [int(c) for c in present if c != IGNORE_INDEX]
    colors = np.asarray(colors, dtype=np.float32).reshape(-1, 3) / 255
    handles = [Patch(color=colors[c], label=class_names[c]) for c in present]
    per_column = max(1, int(fig.get_figheight() / _LEGEND_ROW_INCHES))
    fig.legend(handles=handles, loc="outside right upper", ncols=max(1, math.ceil(len(handles) / per_column)),
               fontsize=LEGEND_FONTSIZE, frameon=False)


def _wrap_title(title: str, width_inches: float) -> str:
    """`title` broken into lines that fit `width_inches` at the title font size, after - _ or space."""
    limit = max(8, int(width_inches / _CHAR_INCHES))
    lines = [""]
    for piece in re.split(r"(?<=[-_ ])", title):
        if lines[-1] and len(lines[-1]) + len(piece) > limit:
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.rstrip() for line in lines)

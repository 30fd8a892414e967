"""Datasets in, one shape out: RGB uint8 images, uint8 class-index masks (255 = ignore), class names and colours."""

import importlib

from segkit.data.cache import PreparedDataset, format_summary, load_prepared, prepare, resize_image  # noqa: F401
from segkit.data.download import download  # noqa: F401
from segkit.data.palette import IGNORE_INDEX  # noqa: F401
from segkit.data.readers import (  # noqa: F401
    FORMATS,
    Reader,
    check_max_color_distance,
    open_reader,
    read_image,
    read_index_mask,
)
from segkit.data.synth import synthetic_city, synthetic_scene, write_synthetic  # noqa: F401

# The batch loader is a keras.utils.PyDataset, and importing Keras starts its backend (seconds with
# TensorFlow): load it on first use so reading, preparing and generating data stay numpy + OpenCV only.
_LOADER_NAMES = {"Augment", "holdout_split", "make_loader"}


def __getattr__(name):
    if name in _LOADER_NAMES:
        return getattr(importlib.import_module("segkit.data.loader"), name)
    raise AttributeError(f"module 'segkit.data' has no attribute {name!r}")

"""Datasets in, one shape out: RGB uint8 images, uint8 class-index masks (255 = ignore), class names and colours."""

from segkit.data.palette import IGNORE_INDEX  # noqa: F401
from segkit.data.synth import synthetic_scene, write_synthetic  # noqa: F401

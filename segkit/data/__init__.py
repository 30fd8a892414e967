"""Datasets in, one shape out: RGB uint8 images, uint8 class-index masks (255 = ignore), class names and colours."""

from segkit.data.palette import IGNORE_INDEX  # noqa: F401
from segkit.data.synth import synthetic_scene, write_synthetic  # noqa: F401
from segkit.data.loader import Augment, holdout_split, make_loader  # noqa: F401
from segkit.data.cache import PreparedDataset, format_summary, load_prepared, prepare  # noqa: F401
from segkit.data.readers import FORMATS, Reader, open_reader, read_image, read_index_mask  # noqa: F401
from segkit.data.download import download  # noqa: F401

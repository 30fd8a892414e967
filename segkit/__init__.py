"""segkit: semantic segmentation of street scenes with Keras 3."""

from segkit.errors import SegkitError

__version__ = "0.1.0"
__all__ = ["SegkitError", "__version__"]

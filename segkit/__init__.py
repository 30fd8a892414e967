"""segkit: semantic segmentation of street scenes with Keras 3."""

import importlib

from segkit import serializable
from segkit.errors import SegkitError

__version__ = "0.1.0"
__all__ = ["SegkitError", "__version__", "train", "evaluate", "predict", "compare", "export", "notebook"]

# The training API imports Keras and a backend; it loads on first use so `import segkit` stays light.
_LAZY = {"train", "evaluate", "predict", "compare", "export"}


def __getattr__(name):
    if name == "notebook":  # the notebooks' set-up module: `segkit.notebook.setup(...)` after `import segkit`
        return importlib.import_module("segkit.notebook")
    if name in _LAZY:
        return getattr(importlib.import_module(f"segkit.workflows.{name}"), name)
    raise AttributeError(f"module 'segkit' has no attribute {name!r}")


# A .keras file of any segkit model loads with plain `keras.saving.load_model` once Keras is imported.
serializable.register_with_keras()

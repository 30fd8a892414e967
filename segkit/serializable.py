"""Registers segkit's Keras classes (layers, losses, metrics, schedules) with Keras as soon as Keras is imported.

`keras.saving.load_model` finds a custom class only once the module defining it has run (safe mode never imports
it from the file). `import segkit` must stay light, without TensorFlow or JAX, so it cannot import those modules
itself: when Keras is already imported it imports them at once; otherwise it waits for Keras with a one-shot import
hook that runs them right after Keras finishes loading. Either way, after `import segkit` and `import keras` in any
order, `keras.saving.load_model("best.keras")` loads every segkit model.
"""

import importlib
import sys

# Every module that defines a class decorated with keras.saving.register_keras_serializable(package="segkit").
MODULES = ("segkit.models", "segkit.losses", "segkit.metrics", "segkit.workflows.optim")


def register_with_keras() -> None:
    """Imports MODULES now if Keras is loaded, else right after Keras finishes loading."""
    if "keras" in sys.modules:
        _import_modules()
    elif not any(isinstance(finder, _AfterKerasLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasLoads())


def _import_modules() -> None:
    for name in MODULES:
        importlib.import_module(name)


# The import system needs only these methods; importlib.abc's base classes would cost `import segkit` 12 ms.
class _AfterKerasLoads:
    """Finds `keras` through the other finders and hands back its spec with a loader that registers segkit after it."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenRegister(spec.loader, self)
                return spec
        return None


class _ThenRegister:
    """Runs Keras' own loader, puts it back in place of this one, and imports segkit's registering modules."""

    def __init__(self, loader, finder):
        self._loader, self._finder = loader, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self._loader  # nothing of the hook stays on Keras
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        _import_modules()

    def __getattr__(self, name):  # resource readers and the like come from Keras' own loader
        return getattr(self._loader, name)

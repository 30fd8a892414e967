"""A user's own code loads any segkit model with plain Keras after `import segkit`, in safe mode, on TensorFlow and JAX.

Every check runs in a fresh Python process: a module that this test process (or an earlier test) imported
would otherwise register segkit's layers and hide the fault.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support import REPO

# Builds every registered model small (plus a MobileNetV3 encoder), saves each as .keras with its logits on a fixed input.
SAVE_EVERY_MODEL = """
import json, sys
from pathlib import Path
import keras, numpy as np
from segkit import models
folder = Path(sys.argv[1])
shape = (64, 64, 3)
image = np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype("float32")
built = [(name, "resnet18" if "resnet18" in models.encoders_for(name) else None) for name in models.available()]
built.append(("deeplabv3plus", "mobilenetv3_small"))
for name, encoder in built:
    model = models.build(name, encoder, num_classes=3, input_shape=shape)
    stem = models.label(name, encoder)
    model.save(folder / f"{stem}.keras")
    np.save(folder / f"{stem}.npy", keras.ops.convert_to_numpy(model(image, training=False)))
print(json.dumps(sorted(models.label(n, e) for n, e in built)))
"""

# What a user types: nothing of segkit but `import segkit`, then Keras' own loader with its default safe mode.
LOAD_WITH_PLAIN_KERAS = """
import json, sys
from pathlib import Path
{imports}
import numpy as np
folder = Path(sys.argv[1])
image = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
gaps = {{}}
for path in sorted(folder.glob("*.keras")):
    model = keras.saving.load_model(path)
    logits = keras.ops.convert_to_numpy(model(image, training=False))
    gaps[path.stem] = float(np.max(np.abs(logits - np.load(path.with_suffix(".npy")))))
print(json.dumps({{"backend": keras.backend.backend(), "gaps": gaps}}))
"""


def _python(code, *args, backend="tensorflow"):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved-models")
    return folder, _python(SAVE_EVERY_MODEL, folder)


@pytest.mark.slow
@pytest.mark.parametrize("backend, imports", [
    ("tensorflow", "import segkit\nimport keras"),
    ("jax", "import segkit\nimport keras"),
    ("tensorflow", "import keras\nimport segkit"),  # Keras imported first: registering cannot wait for it
])
def test_plain_keras_loads_every_segkit_model_after_import_segkit(saved_models, backend, imports):
    folder, saved = saved_models
    loaded = _python(LOAD_WITH_PLAIN_KERAS.format(imports=imports), folder, backend=backend)
    assert loaded["backend"] == backend
    assert sorted(loaded["gaps"]) == saved
    assert {"pspnet-resnet18", "unet-resnet18", "deeplabv3plus-resnet18", "fastscnn"} <= set(saved)
    worst = max(loaded["gaps"].values())
    assert worst < 1e-3 * max(1.0, float(np.max([np.abs(np.load(p)).max() for p in folder.glob("*.npy")]))), loaded


def test_import_segkit_still_loads_no_deep_learning_backend():
    # `segkit --help` and `import segkit` must not pay for TensorFlow or JAX (see benchmarks/bench_import.py).
    code = "import sys, segkit; print(__import__('json').dumps(sorted({'keras', 'tensorflow', 'jax'} & set(sys.modules))))"
    assert _python(code) == []

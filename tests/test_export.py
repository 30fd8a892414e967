"""segkit.export: SavedModel and TFLite files that reproduce the Keras model's logits; clear errors otherwise.

The ONNX export's logits are checked through the command, in test_cli_models.py.
"""

import importlib.util

import keras
import numpy as np
import pytest
import tensorflow as tf

import segkit
from segkit.errors import SegkitError
from segkit.models import build
from segkit.workflows import train as train_module
from training_support import prepared_synthetic, tiny_config, tiny_model



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "build_model", tiny_model)
        return segkit.train(tiny_config(prepared_synthetic(root, count=8), train={"epochs": 1}), runs_dir=root, verbose=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


def _keras_logits(run, images):
    return keras.ops.convert_to_numpy(keras.saving.load_model(run.path / "best.keras")(images, training=False))


def test_savedmodel_gives_the_keras_logits(run, images):
    path = segkit.export(run.path, format="savedmodel")
    assert path == run.path / "export" / "best_savedmodel"
    loaded = tf.saved_model.load(str(path))
    served = loaded.serve(tf.constant(images)).numpy()
    np.testing.assert_allclose(served, _keras_logits(run, images), atol=1e-4)
    with pytest.raises(SegkitError, match="already exists"):
        segkit.export(run.path, format="savedmodel")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no partial exports left behind


def _tflite_logits(path, image):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_tflite_gives_the_keras_logits(run, images, tmp_path):
    path = segkit.export(run.path / "best.keras", format="tflite", out=tmp_path / "model.tflite")
    np.testing.assert_allclose(_tflite_logits(path, images[:1]), _keras_logits(run, images[:1]), atol=1e-3)


@pytest.mark.slow
def test_a_fresh_resnet_unet_exports_to_tflite(tmp_path):
    """Its logits reach hundreds: the check allows float32 error relative to them, not a fixed 1e-3."""
    model = build("unet", "resnet18", num_classes=3, input_shape=(32, 32, 3))
    model.save(tmp_path / "unet.keras")
    path = segkit.export(tmp_path / "unet.keras", format="tflite")
    image = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(image, training=False))
    scale = np.abs(expected).max()
    assert scale > 10  # large enough that a fixed 1e-3 would not hold
    np.testing.assert_allclose(_tflite_logits(path, image), expected, atol=1e-3 * scale)


def test_onnx_without_its_packages_names_them(run, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    hidden = ("onnx", "tf2onnx")  # installed here: hide them as a machine without them would
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name in hidden else find_spec(name, *args))
    with pytest.raises(SegkitError, match=r"onnx export needs the package\(s\) onnx, tf2onnx \(pip install onnx tf2onnx\)"):
        segkit.export(run.path, format="onnx", out=tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_format_and_missing_model(tmp_path):
    with pytest.raises(SegkitError, match="unknown export format 'coreml'; choose one of savedmodel, tflite, onnx"):
        segkit.export(tmp_path, format="coreml")
    with pytest.raises(SegkitError, match="does not exist"):
        segkit.export(tmp_path / "nothing.keras", format="savedmodel")


def test_a_read_only_or_file_out_is_refused_before_loading_the_model(run, read_only_folder, tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr("segkit.workflows.loading.load_model", no_loading)
    with pytest.raises(SegkitError, match=r"^--out .*read-only/m.tflite: folder .*read-only cannot be written: Read-only file system$"):
        segkit.export(run.path, format="tflite", out=read_only_folder / "m.tflite")
    (tmp_path / "plain").write_text("keep me")
    with pytest.raises(SegkitError, match=r"^--out .*plain/m.tflite: folder .*plain is a file, not a folder$"):
        segkit.export(run.path, format="tflite", out=tmp_path / "plain" / "m.tflite")
    assert (tmp_path / "plain").read_text() == "keep me"

"""`segkit.export`: a trained model as a TensorFlow SavedModel, TFLite or ONNX file, checked against Keras' outputs."""

import importlib.util
from pathlib import Path

import keras
import numpy as np

from segkit import files
from segkit.errors import SegkitError
from segkit.workflows import loading

FORMATS = ("savedmodel", "tflite", "onnx")
# Max abs logit difference allowed, per unit of the largest |logit| above 1: float32 error grows with the logits
# (a fresh ResNet-18 U-Net's logits reach hundreds, and TFLite and ONNX then differ from Keras by about 1e-3).
TOLERANCE = {"savedmodel": 1e-4, "tflite": 1e-3, "onnx": 1e-3}
_SUFFIX = {"savedmodel": "_savedmodel", "tflite": ".tflite", "onnx": ".onnx"}
_NEEDS = {"savedmodel": ("tensorflow",), "tflite": ("tensorflow",), "onnx": ("tensorflow", "onnx", "tf2onnx", "onnxruntime")}


def export(model_path, *, format="savedmodel", out=None, sample_size=(256, 256)) -> Path:
    """Exports the model at `model_path` (run folder or .keras file) and checks the export's logits match the Keras model's.

    out: where to write (default: `export/<format>` in the run folder, or next to the model file);
    an existing `out` is never overwritten. sample_size: (H, W) of the check input for models that take any size.
    Returns the written path.
    """
    if format not in FORMATS:
        raise SegkitError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    _check_available(format)
    out = None if out is None else _check_out(Path(out))  # before the model loads
    net, run = loading.load_model(model_path)
    out = out or _check_out(_default_out(model_path, run, format))
    sample = _sample_input(net, sample_size)
    expected = keras.ops.convert_to_numpy(net(sample, training=False))
    with files.writing_into(out, "--out"):
        out.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_path(out) as partial:
            _WRITERS[format](net, partial)
            actual = _RUNNERS[format](partial, sample)
            difference = float(np.max(np.abs(actual - expected)))
            allowed = TOLERANCE[format] * max(1.0, float(np.max(np.abs(expected))))
            if not difference <= allowed:
                raise SegkitError(f"the {format} export of {model_path} gives logits up to {difference:.3g} away from "
                                  f"Keras' (allowed {allowed:.3g}); nothing written")
    print(f"exported {model_path} -> {out} ({format}; max abs logit difference to Keras {difference:.2e})")
    return out


def _check_out(out: Path) -> Path:
    """Refuses an existing `out` (never overwritten) and a folder for it that cannot be created or written."""
    if out.exists():
        raise SegkitError(f"{out} already exists; remove it or choose another --out")
    files.check_writable_folder(out.parent, f"--out {out}: folder")
    return out


def _check_available(format: str) -> None:
    missing = [name for name in _NEEDS[format] if importlib.util.find_spec(name) is None]
    if missing:
        raise SegkitError(f"{format} export needs the package(s) {', '.join(missing)} (pip install {' '.join(missing)})")


def _default_out(model_path, run, format: str) -> Path:
    if run is not None:
        return run.path / "export" / f"best{_SUFFIX[format]}"
    path = Path(model_path)
    return path.with_name(path.stem + _SUFFIX[format])


def _sample_input(net, sample_size) -> np.ndarray:
    height, width = (side or default for side, default in zip(keras.tree.flatten(net.input)[0].shape[1:3], sample_size))
    return np.random.default_rng(0).uniform(0, 255, size=(1, height, width, 3)).astype("float32")


def _write_savedmodel(net, path: Path) -> None:
    net.export(str(path), format="tf_saved_model", verbose=False)


def _run_savedmodel(path: Path, sample) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # keep a reference: the served function needs its variables alive
    return np.asarray(loaded.serve(tf.constant(sample)))


def _write_tflite(net, path: Path) -> None:
    import tensorflow as tf

    saved = path.with_name("savedmodel.scratch")  # beside `path` in atomic_path's private folder, deleted with it
    _write_savedmodel(net, saved)
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())


def _run_tflite(path: Path, sample) -> np.ndarray:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _write_onnx(net, path: Path) -> None:
    net.export(str(path), format="onnx", verbose=False)


def _run_onnx(path: Path, sample) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path))
    return session.run(None, {session.get_inputs()[0].name: sample})[0]


_WRITERS = {"savedmodel": _write_savedmodel, "tflite": _write_tflite, "onnx": _write_onnx}
_RUNNERS = {"savedmodel": _run_savedmodel, "tflite": _run_tflite, "onnx": _run_onnx}

"""Model files segkit is handed: class names carried in the file and checked against the data, decompression bombs
refused before Keras reads them, models segkit did not build loaded or refused in one line with nothing written."""

import json
import shutil
import zipfile

import keras
import numpy as np
import pytest

import segkit
from segkit import data
from segkit.errors import SegkitError
from segkit.workflows import loading
from training_support import prepared_synthetic, tiny_config, train_with_stand_in

MiB = 2**20


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared synthetic dataset (Cityscapes' 19 train classes, 32x32) and its class names."""
    path = prepared_synthetic(tmp_path_factory.mktemp("files"), count=6)
    return path, list(data.load_prepared(path).classes)


@pytest.fixture(scope="module")
def run(prepared, tmp_path_factory):
    return train_with_stand_in(tiny_config(prepared[0], data={"val": 2}, train={"epochs": 1}),
                               tmp_path_factory.mktemp("runs"))


def _relabelled(prepared, folder, rename):
    """A copy of the prepared dataset whose manifest names class i `rename(i, name)` (same pixels, same count)."""
    path, classes = prepared
    copy = shutil.copytree(path, folder / "relabelled")
    manifest = json.loads((copy / data.cache.MANIFEST).read_text())
    manifest["classes"] = [rename(i, name) for i, name in enumerate(classes)]
    (copy / data.cache.MANIFEST).write_text(json.dumps(manifest))
    return copy


def _conv_model(classes, outputs=None, size=32):
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, outputs(inputs) if outputs else keras.layers.Conv2D(classes, 1)(inputs))


# --- class names (the model's against the data's) ---

def test_a_saved_model_file_records_its_classes_and_colours_and_still_loads(prepared, tmp_path):
    _, classes = prepared
    colors = np.arange(len(classes) * 3).reshape(-1, 3) % 256
    model = _conv_model(len(classes))
    loading.save_model(model, tmp_path / "m.keras", classes=classes, colors=colors)
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        metadata = json.loads(archive.read("metadata.json"))
        assert sorted(archive.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]  # no 4th member
    assert metadata["segkit"] == {"classes": classes, "colors": colors.tolist()}
    assert "keras_version" in metadata  # Keras' own entries kept
    assert loading.trained_classes(tmp_path / "m.keras") == classes
    image = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    loaded, _ = loading.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(image)), keras.ops.convert_to_numpy(model(image)))


def test_a_run_best_keras_names_the_classes_and_colours_of_its_dataset_json(run, prepared, tmp_path):
    copied = shutil.copy(run.path / "best.keras", tmp_path / "copied.keras")  # out of its run folder
    with zipfile.ZipFile(copied) as archive:
        saved = json.loads(archive.read("metadata.json"))["segkit"]
    assert saved == {"classes": run.dataset["classes"], "colors": run.dataset["colors"]}
    assert loading.trained_classes(copied) == prepared[1]


def test_predict_draws_a_bare_model_file_in_the_colours_it_records(tmp_path):
    import cv2

    classes, colors = ["sky", "road", "car"], np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]])
    model = _conv_model(3, size=16)
    loading.save_model(model, tmp_path / "m.keras", classes=classes, colors=colors)
    (tmp_path / "in").mkdir()
    image = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "in" / "a.png"), image[..., ::-1])
    segkit.predict(tmp_path / "m.keras", [tmp_path / "in"], out=tmp_path / "out")
    drawn = cv2.imread(str(tmp_path / "out" / "a_mask.png"))[..., ::-1]
    expected = colors[keras.ops.convert_to_numpy(model(image[None].astype("float32"))).argmax(-1)[0]]
    np.testing.assert_array_equal(drawn, expected)


def test_evaluate_refuses_a_model_file_trained_on_other_class_names(prepared, tmp_path):
    path, classes = prepared
    loading.save_model(_conv_model(len(classes)), tmp_path / "m.keras", classes=classes, colors=np.zeros((19, 3)))
    other = _relabelled(prepared, tmp_path, lambda i, name: f"class {i}" if i >= 3 else name)
    with pytest.raises(SegkitError) as err:
        segkit.evaluate(tmp_path / "m.keras", other, json_path=tmp_path / "scores.json", verbose=False)
    assert str(err.value) == (f"model {tmp_path / 'm.keras'} was trained on other classes than the data at {other}: "
                              f"class 3 is {classes[3]!r} for the model but 'class 3' in the data")
    assert not (tmp_path / "scores.json").exists()
    # the same names spelled with other case and separators are the same classes
    respelled = _relabelled(prepared, tmp_path / "b", lambda i, name: name.upper().replace(" ", "_"))
    assert segkit.evaluate(tmp_path / "m.keras", respelled, verbose=False)["num_items"] == 6


def test_evaluate_refuses_a_run_trained_on_other_class_names(run, prepared, tmp_path):
    _, classes = prepared
    swapped = _relabelled(prepared, tmp_path, lambda i, name: classes[1 - i] if i < 2 else name)
    with pytest.raises(SegkitError, match=f"class 0 is {classes[0]!r} for the model but {classes[1]!r} in the data"):
        segkit.evaluate(run.path, swapped, verbose=False)
    assert segkit.evaluate(run.path, prepared[0], verbose=False)["classes"] == classes


def test_a_model_file_from_elsewhere_has_no_names_and_is_checked_by_count_alone(prepared, tmp_path):
    _conv_model(19).save(tmp_path / "plain.keras")
    assert loading.trained_classes(tmp_path / "plain.keras") is None
    assert segkit.evaluate(tmp_path / "plain.keras", prepared[0], verbose=False)["num_items"] == 6


# --- decompression bombs ---

def _tiny_keras(path):
    _conv_model(3, size=8).save(path)
    return path


def _with_member(source, target, name, content, compression=zipfile.ZIP_DEFLATED):
    """`source` copied to `target` with member `name` replaced by (or added as) `content`, deflated."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if info.filename != name:
                new.writestr(info, old.read(info))
        new.writestr(zipfile.ZipInfo(name), content, compress_type=compression, compresslevel=9)
    return target


@pytest.fixture
def keras_never_reads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Keras was handed a file segkit should have refused")

    monkeypatch.setattr(keras.saving, "load_model", refuse)


@pytest.mark.parametrize("member, content, message", [
    # a valid config.json padded with whitespace: Keras would read (and today loads) all of it
    ("config.json", "pad", r"its config.json would be 17\.0 MiB \(a model's is at most 16\.0 MiB\)"),
    ("model.weights.h5", b"\0" * (64 * MiB), r"its model.weights.h5 would inflate from \d+\.\d KiB to 64\.0 MiB"),
])
def test_a_bomb_member_is_refused_before_keras_reads_it(tmp_path, member, content, message, keras_never_reads):
    source = _tiny_keras(tmp_path / "source.keras")
    if content == "pad":
        with zipfile.ZipFile(source) as archive:
            config = archive.read("config.json").decode()
        content = config + " " * (17 * MiB - len(config))
    bomb = _with_member(source, tmp_path / "bomb.keras", member, content)
    assert bomb.stat().st_size < 1 * MiB  # small on disk
    with pytest.raises(SegkitError, match=f"model .*bomb.keras is refused: {message}"):
        loading.load_model(bomb)


def test_weight_arrays_hdf5_itself_compresses_are_bounded_too(tmp_path, keras_never_reads):
    """A 9 KB file whose kernel declares 240 MB of gzip'd (unwritten) zeros: Keras would inflate it all."""
    import io

    import h5py

    weights = io.BytesIO()
    with h5py.File(weights, "w") as h5:
        h5.create_group("vars")
        h5.create_group("layers/input_layer/vars")
        arrays = h5.create_group("layers/conv2d/vars")
        arrays.create_dataset("0", shape=(1, 1, 3, 20_000_000), dtype="float32", compression="gzip", chunks=(1, 1, 1, 10**6))
        arrays.create_dataset("1", data=np.zeros(3, "float32"))
    bomb = _with_member(_tiny_keras(tmp_path / "source.keras"), tmp_path / "bomb.keras", "model.weights.h5",
                        weights.getvalue(), compression=zipfile.ZIP_STORED)
    assert bomb.stat().st_size < 64 * 1024
    refusal = r"bomb.keras is refused: the arrays in its model.weights.h5 would take 228\.9 MiB from \d+\.\d KiB stored"
    with pytest.raises(SegkitError, match=refusal):
        loading.load_model(bomb)


def test_many_small_members_that_inflate_together_are_refused(tmp_path, keras_never_reads):
    bomb = _tiny_keras(tmp_path / "bomb.keras")
    for i in range(3):  # each under the 16 MiB floor, together 45 MiB from about 45 KB
        shutil.move(_with_member(bomb, tmp_path / "next.keras", f"assets/{i}", b"\0" * (15 * MiB)), bomb)
    refusal = r"bomb.keras is refused: its members would inflate from \d+\.\d KiB to 45\.0 MiB in all"
    with pytest.raises(SegkitError, match=refusal):
        loading.load_model(bomb)


def test_a_deflated_real_model_still_loads(tmp_path):
    """The bounds leave real files alone: a model re-zipped with compression (as a user's zip tool might)."""
    source = _tiny_keras(tmp_path / "source.keras")
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(tmp_path / "deflated.keras", "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info))
    model, _ = loading.load_model(tmp_path / "deflated.keras")
    assert model.output.shape == (None, 8, 8, 3)


# --- models segkit did not build ---

def _images(folder):
    folder.mkdir()
    np.save(folder / "unused.npy", np.zeros(1))  # not an image: predict must not get as far as the inputs
    import cv2

    cv2.imwrite(str(folder / "a.png"), np.full((16, 16, 3), 100, np.uint8))
    return folder


def test_a_sequential_model_file_is_supported(tmp_path):
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 1)])
    model.save(tmp_path / "seq.keras")
    written = segkit.predict(tmp_path / "seq.keras", [_images(tmp_path / "in")], out=tmp_path / "out")
    assert sorted(p.name for p in written) == ["a_mask.png", "a_overlay.png"]
    expected = keras.ops.convert_to_numpy(model(np.full((1, 16, 16, 3), 100, "float32"))).argmax(-1)
    loaded, _ = loading.load_model(tmp_path / "seq.keras")
    got = keras.ops.convert_to_numpy(loaded(np.full((1, 16, 16, 3), 100, "float32"))).argmax(-1)
    np.testing.assert_array_equal(got, expected)


def _unbuilt_sequential(path):
    keras.Sequential([keras.layers.Conv2D(4, 1)]).save(path)


def _two_outputs(path):
    _conv_model(4, lambda x: [keras.layers.Conv2D(4, 1)(x), keras.layers.Conv2D(4, 1)(x)], size=16).save(path)


def _classes_300(path):
    _conv_model(300, size=16).save(path)


def _lambda_layer(path):
    _conv_model(4, lambda x: keras.layers.Lambda(lambda t: t * 2)(keras.layers.Conv2D(4, 1)(x)), size=16).save(path)


@pytest.mark.parametrize("make, message", [
    (_unbuilt_sequential, r"has no fixed input \(a subclassed model, or a Sequential one saved before it was built\)"),
    (_two_outputs, "has 2 outputs; segkit uses models with one output of per-pixel class scores"),
    (_classes_300, r"predicts 300 classes; segkit masks hold at most 255 \(class index 255 marks ignored pixels\)"),
    (_lambda_layer, r"cannot be loaded: it holds Python code \(a Lambda layer\), which segkit never runs"),
])
def test_a_foreign_model_is_refused_in_one_line_with_nothing_written(tmp_path, make, message):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns when saving an unbuilt model or a lambda
        make(tmp_path / "foreign.keras")
    inputs = _images(tmp_path / "in")
    for job in (lambda: segkit.predict(tmp_path / "foreign.keras", [inputs], out=tmp_path / "out"),
                lambda: segkit.export(tmp_path / "foreign.keras", out=tmp_path / "exported"),
                lambda: segkit.evaluate(tmp_path / "foreign.keras", tmp_path, json_path=tmp_path / "s.json")):
        with pytest.raises(SegkitError, match=f"^model .*foreign.keras {message}") as err:
            job()
        assert "\n" not in str(err.value) and "safe_mode" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.keras", "in"]

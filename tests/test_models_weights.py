"""ImageNet encoder weights: classification_models h5 files served offline from 127.0.0.1, loaded by name."""

import hashlib

import h5py
import keras
import numpy as np
import pytest

from support import serve_folder
from segkit.errors import SegkitError
from segkit.models import build, weights

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="classification_models builds tf.keras references only"
)
RELEASE_NAME = "resnet34_imagenet_1000_no_top.h5"
FEATURE_LAYERS = ["relu0", "stage2_unit1_relu1", "stage3_unit1_relu1", "stage4_unit1_relu1", "relu1"]


def write_keras2_weights(model, path):
    """Writes `model`'s weights as Keras 2's `save_weights(.h5)` did for the release files:
    root `layer_names`, one group per layer, datasets named "<layer>/<weight>:0"."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = handle.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = [name.encode() for name in names]
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name, data=value)


@pytest.fixture(scope="module")
def reference_encoder():
    """classification_models' ResNet34 without top, randomly initialised (incl. BN statistics)."""
    from classification_models.tfkeras import Classifiers  # installed with the pinned segmentation-models

    model = Classifiers.get("resnet34")[0](input_shape=(64, 64, 3), weights=None, include_top=False)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([
                rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path else rng.normal(0, 0.1, w.shape)
                for w in layer.weights
            ])
    return model


@pytest.fixture(scope="module")
def served(tmp_path_factory, reference_encoder):
    """A directory of weight files served over http on 127.0.0.1; yields (directory, base URL)."""
    directory = tmp_path_factory.mktemp("served")
    write_keras2_weights(reference_encoder, directory / "random_resnet34.h5")
    write_keras2_weights(reference_encoder, directory / RELEASE_NAME)  # random, so not the release md5
    with serve_folder(directory) as url:
        yield directory, url + "/"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def encoder_outputs(model, images):
    encoder = keras.Model(model.input, [model.get_layer(name).output for name in FEATURE_LAYERS])
    return [keras.ops.convert_to_numpy(x) for x in encoder(images, training=False)]


def assert_gives_reference_features(model, reference_encoder):
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    for got, expected in zip(encoder_outputs(model, images), encoder_outputs(reference_encoder, images)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_url_weights_give_the_reference_encoder_outputs(served, cache, reference_encoder):
    _, url = served
    model = build("unet", num_classes=3, input_shape=(64, 64, 3), encoder_weights=url + "random_resnet34.h5")
    assert_gives_reference_features(model, reference_encoder)
    assert [path.name.endswith("_random_resnet34.h5") for path in cache.iterdir()] == [True]


def test_imagenet_downloads_with_md5_check_then_uses_the_cache(served, cache, reference_encoder, monkeypatch):
    directory, url = served
    md5 = hashlib.md5((directory / RELEASE_NAME).read_bytes()).hexdigest()
    monkeypatch.setattr(weights, "RELEASE_URL", url)
    monkeypatch.setitem(weights.IMAGENET_FILES, "resnet34", (RELEASE_NAME, md5))
    build("unet", num_classes=3, input_shape=(64, 64, 3), encoder_weights="imagenet")
    assert (cache / RELEASE_NAME).read_bytes() == (directory / RELEASE_NAME).read_bytes()
    monkeypatch.setattr(weights, "RELEASE_URL", "http://127.0.0.1:9/")  # nothing listens: must use the cache
    model = build("unet", num_classes=3, input_shape=(64, 64, 3), encoder_weights="imagenet")
    assert_gives_reference_features(model, reference_encoder)


def test_release_file_with_wrong_md5_is_rejected_and_not_kept(served, cache):
    _, url = served
    with pytest.raises(SegkitError, match="expected 8caaa0ad39d927cb8ba5385bf945d582"):
        build("unet", num_classes=3, input_shape=(64, 64, 3), encoder_weights=url + RELEASE_NAME)
    assert list(cache.iterdir()) == []


def test_keras3_full_model_h5_loads_too(tmp_path, reference_encoder):
    path = tmp_path / "reference.h5"
    reference_encoder.save(path)  # Keras 3 legacy layout: `model_weights` group, "conv0/kernel" names
    model = build("unet", num_classes=3, input_shape=(64, 64, 3), encoder_weights=str(path))
    assert_gives_reference_features(model, reference_encoder)


def test_file_of_another_encoder_is_rejected(served):
    directory, _ = served
    path = str(directory / "random_resnet34.h5")
    with pytest.raises(SegkitError, match="lacks .* resnet50 encoder layers"):
        build("unet", "resnet50", num_classes=3, input_shape=(64, 64, 3), encoder_weights=path)
    with pytest.raises(SegkitError, match="layers a resnet18 encoder does not have"):
        build("unet", "resnet18", num_classes=3, input_shape=(64, 64, 3), encoder_weights=path)


def test_bad_sources_give_one_line_errors(tmp_path, cache):
    not_h5 = tmp_path / "weights.h5"
    not_h5.write_text("not hdf5")
    no_layers = tmp_path / "empty.h5"
    h5py.File(no_layers, "w").close()
    cases = [
        (str(not_h5), "not a readable HDF5 file"),
        (str(no_layers), "no 'layer_names' attribute"),
        (str(tmp_path / "missing.h5"), "no such file"),
        ("http://127.0.0.1:9/weights.h5", "could not download"),
    ]
    for source, message in cases:
        with pytest.raises(SegkitError, match=message) as error:
            build("unet", "resnet18", num_classes=3, input_shape=(64, 64, 3), encoder_weights=source)
        assert "\n" not in str(error.value)

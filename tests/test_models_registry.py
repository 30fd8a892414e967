"""Every registered model: builds by name, saves/loads as .keras in safe mode, trains a step on any backend."""

import keras
import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.models import available, build, encoders_for, label

pytestmark = pytest.mark.backend_agnostic
SHAPE = (64, 64, 3)
CLASSES = 3


@pytest.fixture(scope="module")
def tiny():
    """One model per name at 64x64 (on resnet18 where it takes one), built once for the module
    (building dominates the run time)."""
    models = {}

    def get(name):
        if name not in models:
            encoder = "resnet18" if "resnet18" in encoders_for(name) else None
            models[name] = build(name, encoder, num_classes=CLASSES, input_shape=SHAPE)
        return models[name]

    return get


def images(seed, count=2):
    return np.random.default_rng(seed).uniform(0, 255, (count, *SHAPE)).astype("float32")


def infer(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_available_lists_the_models_alphabetically():
    # the order error messages, config checks and --help list them in
    assert available() == ["bisenetv2", "deeplabv3plus", "fastscnn", "pspnet", "pspnet_sm", "unet"]


def test_labels_name_the_encoder_only_where_the_model_takes_one():
    assert label("unet", "resnet18") == "unet-resnet18"
    assert label("pspnet") == "pspnet-resnet34"
    assert label("fastscnn", "fastscnn") == label("fastscnn") == "fastscnn"
    assert label("bisenetv2") == "bisenetv2"


@pytest.mark.parametrize("name", available())
def test_keras_file_round_trip_in_safe_mode_gives_identical_logits(tiny, name, tmp_path):
    model = tiny(name)
    x = images(seed=0)
    before = infer(model, x)
    assert before.shape == (2, *SHAPE[:2], CLASSES) and before.dtype == np.float32
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    np.testing.assert_array_equal(infer(loaded, x), before)


@pytest.mark.parametrize("name", available())
def test_a_training_step_updates_encoder_and_head(tiny, name):
    model = tiny(name)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    first_conv, last_conv = convolutions[0].kernel, convolutions[-1].kernel
    before = [keras.ops.convert_to_numpy(v).copy() for v in (first_conv, last_conv)]
    masks = np.random.default_rng(1).integers(0, CLASSES, (2, *SHAPE[:2]))
    loss = float(model.train_on_batch(images(seed=2), masks))
    assert np.isfinite(loss) and loss > 0
    for variable, old in zip((first_conv, last_conv), before):
        assert np.abs(keras.ops.convert_to_numpy(variable) - old).max() > 0, variable.path


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "segnet"}, "unknown model 'segnet'; available: bisenetv2, deeplabv3plus, fastscnn, pspnet, pspnet_sm, unet"),
        ({"encoder": "vgg16"}, "unknown encoder 'vgg16' for unet; available: resnet18, resnet34, resnet50"),
        ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
        ({"num_classes": True}, "num_classes must be a positive integer, got True"),
        ({"input_shape": (64, 64)}, r"input_shape must be \(height, width, 3\)"),
        ({"input_shape": (64, 64, 1)}, r"input_shape must be \(height, width, 3\)"),
        ({"input_shape": (0, 64, 3)}, r"input_shape must be \(height, width, 3\)"),
        ({"decoder_filter": (8,)}, "unet has no option decoder_filter; its options: decoder_filters"),
    ],
)
def test_bad_arguments_name_the_value_and_the_choices(kwargs, message):
    arguments = {"name": "unet", "encoder": "resnet18", "num_classes": CLASSES, "input_shape": SHAPE, **kwargs}
    with pytest.raises(SegkitError, match=message):
        build(arguments.pop("name"), **arguments)

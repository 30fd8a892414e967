"""DeepLabV3+: ASPP at output stride 16, stage-1 skip decoder, hand-counted parameters, training and reload."""

import keras
import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.models import build, predict_probabilities, required_multiple, resnet_encoder


NUM_CLASSES = 3


def test_aspp_and_decoder_sit_at_strides_16_and_4():
    model = build("deeplabv3plus", "resnet34", num_classes=NUM_CLASSES, input_shape=(256, 512, 3))
    assert model.output_shape == (None, 256, 512, NUM_CLASSES)
    for rate in (6, 12, 18):
        assert model.get_layer(f"aspp_rate{rate}_conv").dilation_rate == (rate, rate)
    assert model.get_layer("aspp_concat").output.shape == (None, 16, 32, 5 * 256)
    assert model.get_layer("aspp_image_pool").output.shape == (None, 1, 1, 512)
    # The skip is stage 1's activated output (stride 4, 64 channels in ResNet34) projected to 48 channels.
    assert model.get_layer("decoder_skip_conv").input.shape == (None, 64, 128, 64)
    assert model.get_layer("decoder_concat").output.shape == (None, 64, 128, 256 + 48)
    assert model.get_layer("stage4_unit2_conv1").dilation_rate == (2, 2)
    assert required_multiple(model) == 16


def test_parameters_are_the_encoder_plus_a_hand_counted_head():
    def bn(channels):
        return 4 * channels

    inputs = keras.Input((64, 64, 3))
    encoder = keras.Model(inputs, resnet_encoder(inputs, depth=34)["stage4"]).count_params()
    aspp = (512 * 256 + bn(256)) + 3 * (9 * 512 * 256 + bn(256)) + (512 * 256 + bn(256))
    projection = 5 * 256 * 256 + bn(256)
    decoder = (64 * 48 + bn(48)) + (304 * 9 * 256 + bn(256)) + (256 * 9 * 256 + bn(256))
    classifier = 256 * NUM_CLASSES + NUM_CLASSES
    model = build("deeplabv3plus", "resnet34", num_classes=NUM_CLASSES, input_shape=(64, 64, 3))
    assert model.count_params() == encoder + aspp + projection + decoder + classifier


def test_resnet50_skip_comes_from_its_256_channel_stage1():
    model = build("deeplabv3plus", "resnet50", num_classes=NUM_CLASSES, input_shape=(64, 64, 3))
    assert model.get_layer("decoder_skip_conv").input.shape == (None, 16, 16, 256)
    assert model.get_layer("aspp_1x1_conv").input.shape == (None, 4, 4, 2048)


@pytest.mark.slow
def test_trains_reloads_in_safe_mode_and_predicts_any_size(tmp_path):
    keras.utils.set_random_seed(0)
    model = build("deeplabv3plus", "resnet18", num_classes=NUM_CLASSES, input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 48, 64, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, (2, 48, 64))
    # On inputs this small TensorFlow's step tracing costs more than eager execution; JAX's jit costs less.
    eager = keras.backend.backend() == "tensorflow"
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=eager)
    assert np.isfinite(np.ravel(model.train_on_batch(x, y))[0])

    logits = model.predict_on_batch(x)
    assert logits.shape == (2, 48, 64, NUM_CLASSES) and logits.dtype == np.float32
    model.save(tmp_path / "deeplab.keras")
    reloaded = keras.saving.load_model(tmp_path / "deeplab.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict_on_batch(x), logits, atol=1e-5)
    assert predict_probabilities(reloaded, x[0, :41, :50]).shape == (41, 50, NUM_CLASSES)  # padded to 48x64, cropped back


def test_sizes_that_are_not_multiples_of_16_are_refused_at_build():
    with pytest.raises(SegkitError, match="not a multiple of 16"):
        build("deeplabv3plus", num_classes=NUM_CLASSES, input_shape=(360, 480, 3))

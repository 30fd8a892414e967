"""Light encoders for U-Net and DeepLabV3+: keras.applications' MobileNetV3s, their taps, dilation, counts, training, reload."""

import keras
import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.models import build, load_encoder_weights, required_multiple
from segkit.models.applications import application_backbone, application_encoder, copy_backbone_weights

MOBILENETS = ("mobilenetv3_large", "mobilenetv3_small")
# Channels of the taps at strides 2, 4, 8, 16, 32 (MobileNetV3 paper, Tables 1 and 2: expansion sizes
# of the blocks that halve the resolution, then the last 1x1 conv).
TAP_CHANNELS = {"mobilenetv3_large": (64, 72, 240, 672, 960), "mobilenetv3_small": (16, 72, 96, 288, 576)}
STAGES = ("stem", "stage1", "stage2", "stage3", "stage4")
NUM_CLASSES = 3


def features(encoder, output_stride, size=(64, 96)):
    inputs = keras.Input((*size, 3))
    return application_encoder(inputs, encoder, output_stride=output_stride)


def bn(channels):
    return 4 * channels


def conv_bn(cin, cout, kernel):
    return kernel * kernel * cin * cout + bn(cout)


@pytest.mark.backend_agnostic  # cloning and dilating keras.applications' model, checked under JAX too
@pytest.mark.parametrize("encoder", MOBILENETS)
@pytest.mark.parametrize("output_stride, strides", [(32, (2, 4, 8, 16, 32)), (16, (2, 4, 8, 16, 16)), (8, (2, 4, 8, 8, 8))])
def test_taps_sit_at_their_strides_with_the_papers_channels(encoder, output_stride, strides):
    found = features(encoder, output_stride)
    for stage, stride, channels in zip(STAGES, strides, TAP_CHANNELS[encoder]):
        assert tuple(found[stage].shape) == (None, 64 // stride, 96 // stride, channels), (stage, stride)


def test_output_stride_16_runs_the_last_strided_block_undecimated_and_dilates_what_follows():
    model = build("deeplabv3plus", "mobilenetv3_large", num_classes=NUM_CLASSES, input_shape=(64, 64, 3))
    depthwise = {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)}
    assert depthwise["expanded_conv_12_depthwise"].strides == (1, 1)
    assert depthwise["expanded_conv_12_depthwise"].dilation_rate == (1, 1)
    assert model.get_layer("expanded_conv_12_depthwise_pad").padding == ((2, 2), (2, 2))  # 5x5 kernel, symmetric
    for index in (13, 14):
        assert depthwise[f"expanded_conv_{index}_depthwise"].dilation_rate == (2, 2)
    assert depthwise["expanded_conv_6_depthwise"].strides == (2, 2)  # earlier blocks untouched
    assert depthwise["expanded_conv_11_depthwise"].dilation_rate == (1, 1)
    assert model.get_layer("aspp_1x1_conv").input.shape == (None, 4, 4, 960)
    assert model.get_layer("decoder_skip_conv").input.shape == (None, 16, 16, 72)
    assert required_multiple(model) == 16


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("encoder", MOBILENETS)
def test_encoder_is_keras_applications_own_model(encoder):
    # Same weights in, same features out: the cloned encoder inside U-Net computes exactly what
    # keras.applications' model computes, so its layers are that model's, in order and in kind.
    keras.utils.set_random_seed(1)
    reference = application_backbone(encoder, (64, 96, 3))
    model = build("unet", encoder, num_classes=NUM_CLASSES, input_shape=(64, 96, 3))
    copy_backbone_weights(model, reference)
    encoder_output = keras.Model(model.input, model.get_layer("decoder_stage0_upsampling").input)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(encoder_output(x)), keras.ops.convert_to_numpy(reference(x)), rtol=1e-5, atol=1e-5
    )
    # The first thing the model does is keras.applications' rescaling of 0..255 RGB to -1..1.
    first = model.layers[1]
    assert isinstance(first, keras.layers.Rescaling) and (first.scale, first.offset) == (1 / 127.5, -1.0)


@pytest.mark.parametrize("encoder", MOBILENETS)
def test_parameters_are_keras_applications_count_plus_hand_counted_heads(encoder):
    backbone = application_backbone(encoder).count_params()
    stem, stage1, stage2, stage3, stage4 = TAP_CHANNELS[encoder]

    unet = build("unet", encoder, num_classes=NUM_CLASSES, input_shape=(64, 64, 3))
    decoder, cin = 0, stage4
    for skip, filters in zip((stage3, stage2, stage1, stem, 0), (256, 128, 64, 32, 16)):
        decoder += conv_bn(cin + skip, filters, 3) + conv_bn(filters, filters, 3)
        cin = filters
    assert unet.count_params() == backbone + decoder + 9 * 16 * NUM_CLASSES + NUM_CLASSES

    deeplab = build("deeplabv3plus", encoder, num_classes=NUM_CLASSES, input_shape=(64, 64, 3))
    aspp = 2 * conv_bn(stage4, 256, 1) + 3 * conv_bn(stage4, 256, 3) + conv_bn(5 * 256, 256, 1)
    head = conv_bn(stage1, 48, 1) + conv_bn(256 + 48, 256, 3) + conv_bn(256, 256, 3) + 256 * NUM_CLASSES + NUM_CLASSES
    assert deeplab.count_params() == backbone + aspp + head


@pytest.mark.parametrize("name, encoder", [("unet", "mobilenetv3_large"), ("deeplabv3plus", "mobilenetv3_small")])
def test_training_lowers_the_loss_and_the_model_reloads_in_safe_mode(name, encoder, tmp_path):
    keras.utils.set_random_seed(0)
    model = build(name, encoder, num_classes=NUM_CLASSES, input_shape=(None, None, 3))
    # 16x16 blocks of one colour per class: learnable through strides 4 to 32.
    y = np.random.default_rng(0).integers(0, NUM_CLASSES, (2, 4, 4)).repeat(16, axis=1).repeat(16, axis=2)
    x = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230]], "float32")[y]
    eager = keras.backend.backend() == "tensorflow"  # tracing costs more than it saves on inputs this small
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=eager)
    losses = [float(np.ravel(model.train_on_batch(x, y))[0]) for _ in range(6)]
    assert losses[-1] < 0.8 * losses[0], losses

    logits = model.predict_on_batch(x)
    assert logits.shape == (2, 64, 64, NUM_CLASSES) and logits.dtype == np.float32
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict_on_batch(x), logits, atol=1e-5)


def test_resnet18_stays_available_for_both_heads():
    for name in ("unet", "deeplabv3plus"):
        assert build(name, "resnet18", num_classes=NUM_CLASSES, input_shape=(32, 32, 3)).output_shape == (None, 32, 32, 3)


def test_only_keras_applications_own_imagenet_weights_are_accepted(tmp_path):
    model = build("unet", "mobilenetv3_small", num_classes=NUM_CLASSES, input_shape=(32, 32, 3))
    with pytest.raises(SegkitError, match="encoder weights 'w.h5' for mobilenetv3_small: only 'imagenet'"):
        load_encoder_weights(model, "w.h5", "mobilenetv3_small")
    with pytest.raises(SegkitError, match="output_stride 4 is not supported"):
        features("mobilenetv3_small", 4)

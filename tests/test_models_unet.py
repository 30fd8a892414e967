"""U-Net and ResNet encoder: parity with segmentation_models, dilation identity, input-size contract."""

import keras
import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.models import build
from segkit.models.resnet import resnet_encoder
from support import assert_matches_reference, copy_weights_by_name, needs_tensorflow, random_weights, run



@needs_tensorflow
@pytest.mark.parametrize("encoder", ["resnet18", "resnet34", "resnet50"])
def test_unet_matches_segmentation_models(sm, encoder):
    reference = sm.Unet(encoder, classes=5, activation="linear", encoder_weights=None, input_shape=(64, 64, 3))
    assert_matches_reference(reference, build("unet", encoder, num_classes=5, input_shape=(64, 64, 3)), 64)


@needs_tensorflow
def test_resnet34_unet_has_the_reference_parameter_count(sm):
    reference = sm.Unet("resnet34", classes=20, encoder_weights=None, input_shape=(256, 256, 3))
    model = build("unet", "resnet34", num_classes=20, input_shape=(256, 256, 3))
    assert model.count_params() == reference.count_params() == 24_458_909


@pytest.mark.parametrize("depth", [18, 50])
def test_dilated_encoder_computes_the_strided_features_densely(depth):
    """A trous identity: same weights, stride removed and later convs dilated -> a denser sampling."""
    inputs = keras.Input((64, 64, 3))
    encoders = {os: keras.Model(inputs, resnet_encoder(inputs, depth, os)) for os in (32, 16, 8)}
    random_weights(encoders[32], seed=3)
    for output_stride in (16, 8):
        copy_weights_by_name(encoders[32], encoders[output_stride])
    images = np.random.default_rng(4).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    features = {os: run(encoder, images) for os, encoder in encoders.items()}
    strided = features[32]
    for output_stride, step in [(16, {"stage3": 1, "stage4": 2}), (8, {"stage2": 1, "stage3": 2, "stage4": 4})]:
        for name, every in step.items():
            dense = features[output_stride][name]
            assert dense.shape[1] == 64 // output_stride
            np.testing.assert_allclose(dense[:, ::every, ::every], strided[name], rtol=1e-4, atol=1e-4)


def test_encoder_feature_strides_and_channels():
    inputs = keras.Input((64, 96, 3))
    features = resnet_encoder(inputs, depth=50)
    got = {name: tuple(tensor.shape[1:]) for name, tensor in features.items()}
    assert got == {
        "stem": (32, 48, 64),
        "stage1": (16, 24, 256),
        "stage2": (8, 12, 512),
        "stage3": (4, 6, 1024),
        "stage4": (2, 3, 2048),
    }


def test_encoder_rejects_unknown_depth_and_output_stride():
    inputs = keras.Input((64, 64, 3))
    with pytest.raises(SegkitError, match="depth 101"):
        resnet_encoder(inputs, depth=101)
    with pytest.raises(SegkitError, match="output_stride 4"):
        resnet_encoder(inputs, output_stride=4)


@pytest.mark.parametrize("shape", [(250, 256, 3), (256, 100, 3)])
def test_fixed_side_not_a_multiple_of_32_names_the_multiple(shape):
    with pytest.raises(SegkitError, match="not a multiple of 32"):
        build("unet", "resnet18", num_classes=3, input_shape=shape)


def test_unknown_spatial_size_takes_any_multiple_of_32():
    model = build("unet", "resnet18", num_classes=3, input_shape=(None, None, 3))
    for height, width in [(64, 96), (32, 160)]:
        logits = run(model, np.zeros((1, height, width, 3), "float32"))
        assert logits.shape == (1, height, width, 3)


@pytest.mark.parametrize("policy, compute", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_logits_are_float32_under_mixed_precision(policy, compute):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build("unet", "resnet18", num_classes=3, input_shape=(64, 64, 3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("final_conv").compute_dtype == compute
    assert model.output.dtype == "float32"

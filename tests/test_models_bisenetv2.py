"""BiSeNetV2: parameters counted from the reference implementation's layers, strides, booster heads, reload, refusals."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.models import build, encoder_layer_names, input_multiple, required_multiple, without_aux
from segkit.models.bisenetv2 import AUX_LOSS_WEIGHTS

# The reference count is written out below from mmsegmentation's mmseg/models/backbones/bisenetv2.py (DetailBranch,
# StemBlock, GELayer, CEBlock, BGALayer) and its configs/_base_/models/bisenetv2.py (decode head FCNHead 128 -> 1024,
# one conv; booster FCNHeads 16->16, 32->64, 64->256, 128->1024, two convs each), which
# bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py uses. It counts what PyTorch counts as parameters
# (convolution weights and biases, batch-norm gamma and beta): Keras' trainable weights.


def bn(channels):
    """Trainable: gamma and beta (PyTorch's parameters; the moving statistics are buffers)."""
    return 2 * channels


def conv(cin, cout, k=3, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def conv_bn(cin, cout, k=3):
    return conv(cin, cout, k) + bn(cout)


def dw_bn(channels, multiplier=1):
    return 9 * channels * multiplier + bn(channels * multiplier)


def ge_layer(cin, cout, stride):
    mid = 6 * cin
    total = conv_bn(cin, cin) + dw_bn(cin, 6) + conv_bn(mid, cout, 1)
    if stride == 2:
        total += dw_bn(mid) + dw_bn(cin) + conv_bn(cin, cout, 1)  # second depthwise; depthwise-separable shortcut
    return total


DETAIL = conv_bn(3, 64) + conv_bn(64, 64) + conv_bn(64, 64) + 2 * conv_bn(64, 64) + conv_bn(64, 128) + 2 * conv_bn(128, 128)
STEM = conv_bn(3, 16) + conv_bn(16, 8, 1) + conv_bn(8, 16) + conv_bn(32, 16)
SEMANTIC = (
    STEM
    + ge_layer(16, 32, 2) + ge_layer(32, 32, 1)
    + ge_layer(32, 64, 2) + ge_layer(64, 64, 1)
    + ge_layer(64, 128, 2) + 3 * ge_layer(128, 128, 1)
)
CONTEXT = bn(128) + conv_bn(128, 128, 1) + conv_bn(128, 128)
# Depthwise-separable convs whose pointwise part has no norm, hence a bias; two 3x3 conv-BN; the fusing conv-BN-ReLU.
BGA = 2 * (dw_bn(128) + conv(128, 128, 1, bias=True)) + 2 * conv_bn(128, 128) + conv_bn(128, 128)


def fcn_head(cin, channels, convs, classes):
    return conv_bn(cin, channels) + (convs - 1) * conv_bn(channels, channels) + conv(channels, classes, 1, bias=True)


REFERENCE_PARAMS = DETAIL + SEMANTIC + CONTEXT + BGA + fcn_head(128, 1024, 1, 19)  # 19 Cityscapes classes
BOOSTER_PARAMS = fcn_head(16, 16, 2, 19) + fcn_head(32, 64, 2, 19) + fcn_head(64, 256, 2, 19) + fcn_head(128, 1024, 2, 19)


def trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.fixture(scope="module")
def cityscapes_model():
    return build("bisenetv2", num_classes=19, input_shape=(256, 512, 3))


@pytest.mark.backend_agnostic
def test_parameters_are_those_of_the_reference_implementation(cityscapes_model):
    assert trainable(cityscapes_model) == REFERENCE_PARAMS


@pytest.mark.backend_agnostic
def test_booster_heads_add_their_parameters_and_drop_out_for_inference():
    model = build("bisenetv2", num_classes=19, input_shape=(64, 64, 3), aux_head=True)
    assert trainable(model) == REFERENCE_PARAMS + BOOSTER_PARAMS
    assert sorted(model.output) == sorted(AUX_LOSS_WEIGHTS)
    main = without_aux(model)
    assert main.name == "bisenetv2" and trainable(main) == REFERENCE_PARAMS


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("size", [(256, 256), (256, 512)])
def test_logits_are_float32_at_input_size(size):
    model = build("bisenetv2", num_classes=5, input_shape=(None, None, 3))
    x = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert logits.shape == (1, *size, 5) and logits.dtype == np.float32


@pytest.mark.backend_agnostic
def test_branches_sit_at_the_papers_strides(cityscapes_model):
    model = cityscapes_model
    shape = {name: model.get_layer(name).output.shape for name in
             ("detail1_2_relu", "detail2_3_relu", "detail3_3_relu", "stem_fuse_relu", "ge3_2_relu", "ge4_2_relu",
              "ge5_4_relu", "ce_last_relu", "bga_fuse_relu")}
    assert shape["detail1_2_relu"] == (None, 128, 256, 64)  # stride 2
    assert shape["detail2_3_relu"] == (None, 64, 128, 64)  # stride 4
    assert shape["detail3_3_relu"] == (None, 32, 64, 128)  # stride 8
    assert shape["stem_fuse_relu"] == (None, 64, 128, 16)  # stride 4
    assert shape["ge3_2_relu"] == (None, 32, 64, 32)
    assert shape["ge4_2_relu"] == (None, 16, 32, 64)
    assert shape["ge5_4_relu"] == shape["ce_last_relu"] == (None, 8, 16, 128)  # stride 32
    assert shape["bga_fuse_relu"] == (None, 32, 64, 128)  # aggregated at the detail branch's stride 8
    assert model.get_layer("ge3_1_expand_conv").depth_multiplier == 6
    assert model.get_layer("ce_add").input[1].shape == (None, 1, 1, 128)  # the context embedding broadcasts
    assert required_multiple(model) == input_multiple("bisenetv2") == 32


@pytest.mark.backend_agnostic
def test_encoder_is_the_two_branches():
    names = encoder_layer_names("bisenetv2")
    assert {"detail1_1_conv", "stem_conv_conv", "ge5_4_project_conv", "ce_last_conv"} <= names
    assert not {name for name in names if name.startswith(("bga_", "head_", "aux_"))}


def test_reloads_from_a_keras_file_in_safe_mode_in_a_fresh_process(tmp_path):
    # Default backend only: under JAX the fresh process compiles the model again (a minute on a busy machine), and
    # test_models_registry already round-trips every model in safe mode under both backends.
    keras.utils.set_random_seed(0)
    model = build("bisenetv2", num_classes=3, input_shape=(None, None, 3), aux_head=True)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False)["logits"])
    model.save(tmp_path / "bisenetv2.keras")
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, keras, segkit\n"
        "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
        "x = np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], keras.ops.convert_to_numpy(model(x, training=False)['logits']))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "bisenetv2.keras"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-4)


@pytest.mark.backend_agnostic
def test_logits_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build("bisenetv2", num_classes=3, input_shape=(64, 64, 3), aux_head=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("logits_classifier").compute_dtype == "float16"
    assert all(output.dtype == "float32" for output in model.output.values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"encoder": "resnet34"}, "unknown encoder 'resnet34' for bisenetv2; available: bisenetv2"),
        ({"encoder_weights": "imagenet"}, "bisenetv2 has no pretrained encoder weights"),
        ({"input_shape": (96, 80, 3)}, "BiSeNetV2 input side 80 .* is not a multiple of 32"),
    ],
)
def test_refusals_are_one_line_errors(kwargs, message):
    with pytest.raises(SegkitError, match=message):
        build("bisenetv2", **{"num_classes": 3, "input_shape": (64, 64, 3), **kwargs})

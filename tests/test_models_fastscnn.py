"""Fast-SCNN: the paper's parameter count and strides, hand-counted parts, training, reload, refusals."""

import keras
import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.models import aux_loss_weights, build, predict_probabilities, required_multiple, without_aux

PAPER_PARAMS = 1.11e6  # Poudel et al. 2019, Table 1 / section 4: "1.11 million parameters", 19 Cityscapes classes


def bn(channels):
    """gamma, beta, moving mean, moving variance."""
    return 4 * channels


def dw(channels):
    """3x3 depthwise convolution without bias, then batch norm."""
    return 9 * channels + bn(channels)


def pw(cin, cout):
    """1x1 convolution without bias, then batch norm."""
    return cin * cout + bn(cout)


def bottleneck(cin, cout):
    return pw(cin, 6 * cin) + dw(6 * cin) + pw(6 * cin, cout)


def params_of(model, prefix):
    return sum(layer.count_params() for layer in model.layers if layer.name.startswith(prefix))


def trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.fixture(scope="module")
def cityscapes_model():
    return build("fastscnn", num_classes=19, input_shape=(256, 512, 3))


def test_trainable_parameters_match_the_papers_1_11_million(cityscapes_model):
    # The paper rounds to 1.11 M and does not say whether its count holds the batch norms' gamma and
    # beta (11,840 here). 3% (33 k) covers that and the rounding, and is less than the smallest part a
    # wrong reading of Table 1 would add or drop: one stage-1 bottleneck holds 54.5 k trainable weights.
    assert abs(trainable(cityscapes_model) - PAPER_PARAMS) / PAPER_PARAMS < 0.03


def test_parameters_are_the_hand_counted_parts(cityscapes_model):
    model = cityscapes_model
    downsample = (27 * 32 + bn(32)) + (dw(32) + pw(32, 48)) + (dw(48) + pw(48, 64))
    extractor = sum(
        bottleneck(cin, cout)
        for cin, cout in [(64, 64), (64, 64), (64, 64), (64, 96), (96, 96), (96, 96), (96, 128), (128, 128), (128, 128)]
    )
    pyramid = 4 * pw(128, 32) + pw(256, 128)
    fusion = dw(128) + pw(128, 128) + pw(64, 128)
    classifier = 2 * (dw(128) + pw(128, 128)) + 128 * 19 + 19
    assert params_of(model, "lds_") == downsample
    assert params_of(model, "gfe_") == extractor
    assert params_of(model, "ppm_") == pyramid
    assert params_of(model, "ffm_") == fusion
    assert model.count_params() == downsample + extractor + pyramid + fusion + classifier


def test_branches_sit_at_strides_8_and_32_and_logits_at_input_size(cityscapes_model):
    model = cityscapes_model
    assert model.get_layer("lds_dsconv2_pw_relu").output.shape == (None, 32, 64, 64)
    for stage, (size, channels) in enumerate([((16, 32), 64), ((8, 16), 96), ((8, 16), 128)], start=1):
        assert model.get_layer(f"gfe_bottleneck{stage}_3_project_bn").output.shape == (None, *size, channels)
    # Residuals only where stride and width allow: not in the first block of a stage.
    names = {layer.name for layer in model.layers}
    assert {f"gfe_bottleneck{s}_{b}_add" for s in (1, 2, 3) for b in (1, 2, 3)} & names == {
        f"gfe_bottleneck{s}_{b}_add" for s in (1, 2, 3) for b in (2, 3)
    }
    assert model.get_layer("gfe_bottleneck1_1_expand_conv").filters == 6 * 64
    for bins in (1, 2, 3, 6):
        assert model.get_layer(f"ppm_bins{bins}_pool").output.shape == (None, bins, bins, 128)
    assert model.get_layer("ppm_concat").output.shape == (None, 8, 16, 256)
    assert model.get_layer("ffm_upsample").output.shape == (None, 32, 64, 128)  # x4
    assert model.get_layer("ffm_low_dwconv").dilation_rate == (4, 4)  # Table 3: "DWConv (dilation 4)"
    assert model.get_layer("ffm_add").output.shape == (None, 32, 64, 128)
    assert model.output_shape == (None, 256, 512, 19)
    assert required_multiple(model) == 32


def test_normalises_0_255_input_itself():
    model = build("fastscnn", num_classes=3, input_shape=(64, 64, 3))
    rescale = keras.Model(model.input, model.get_layer("rescale").output)
    images = np.array([0.0, 127.5, 255.0], "float32")[:, None, None, None] * np.ones((1, 64, 64, 3), "float32")
    out = keras.ops.convert_to_numpy(rescale(images))
    np.testing.assert_allclose(out.reshape(3, -1).min(axis=1), [-1, 0, 1])
    np.testing.assert_allclose(out.reshape(3, -1).max(axis=1), [-1, 0, 1])


def test_training_lowers_the_loss_and_the_model_reloads_in_safe_mode(tmp_path):
    keras.utils.set_random_seed(0)
    model = build("fastscnn", num_classes=3, input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    y = (x[..., 0] > 127).astype("int32") + (x[..., 1] > 191)  # a learnable per-pixel rule
    eager = keras.backend.backend() == "tensorflow"  # tracing costs more than it saves on inputs this small
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=eager)
    losses = [float(np.ravel(model.train_on_batch(x, y))[0]) for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0], losses

    logits = model.predict_on_batch(x)
    assert logits.shape == (2, 64, 96, 3) and logits.dtype == np.float32
    model.save(tmp_path / "fastscnn.keras")
    reloaded = keras.saving.load_model(tmp_path / "fastscnn.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict_on_batch(x), logits, atol=1e-5)
    assert predict_probabilities(reloaded, x[0, :50, :70]).shape == (50, 70, 3)  # padded to 64x96, cropped back


def test_logits_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build("fastscnn", num_classes=3, input_shape=(64, 64, 3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("logits_classifier").compute_dtype == "float16"
    assert model.output.dtype == "float32"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"encoder": "resnet34"}, "unknown encoder 'resnet34' for fastscnn; available: fastscnn"),
        ({"encoder_weights": "imagenet"}, "fastscnn has no pretrained encoder weights"),
        ({"input_shape": (96, 80, 3)}, "Fast-SCNN input side 80 .* is not a multiple of 32"),
    ],
)
def test_refusals_are_one_line_errors(kwargs, message):
    arguments = {"num_classes": 3, "input_shape": (64, 64, 3), **kwargs}
    with pytest.raises(SegkitError, match=message):
        build("fastscnn", **arguments)


def test_encoder_may_be_named_as_its_own():
    assert build("fastscnn", "fastscnn", num_classes=3, input_shape=(32, 32, 3)).name == "fastscnn"


def head_params(cin, num_classes):
    """mmsegmentation's FCNHead with num_convs=1, channels=32: 3x3 conv (no bias) + BN, then a 1x1 classifier with bias."""
    return 9 * cin * 32 + bn(32) + 32 * num_classes + num_classes


def test_aux_heads_are_mmsegmentations_two_fcn_heads_and_drop_out_for_inference(cityscapes_model):
    model = build("fastscnn", num_classes=19, input_shape=(256, 512, 3), aux_head=True)
    assert model.count_params() == cityscapes_model.count_params() + head_params(64, 19) + head_params(128, 19)
    assert aux_loss_weights(model) == {"logits": 1.0, "aux_lds_logits": 0.4, "aux_gfe_logits": 0.4}
    assert model.get_layer("aux_lds_1_conv").input.shape == (None, 32, 64, 64)  # learning to downsample, stride 8
    assert model.get_layer("aux_gfe_1_conv").input.shape == (None, 8, 16, 128)  # global feature extractor, stride 32
    assert all(output.shape == (None, 256, 512, 19) and output.dtype == "float32" for output in model.output.values())
    main = without_aux(model)
    assert main.name == "fastscnn" and main.count_params() == cityscapes_model.count_params()
    assert len(main.weights) == len(cityscapes_model.weights)


@pytest.mark.backend_agnostic
def test_without_aux_computes_what_the_plain_model_does_with_the_same_weights():
    keras.utils.set_random_seed(0)
    main = without_aux(build("fastscnn", num_classes=3, input_shape=(64, 64, 3), aux_head=True))
    plain = build("fastscnn", num_classes=3, input_shape=(64, 64, 3))
    plain.set_weights(main.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(main(x, training=False)),
                               keras.ops.convert_to_numpy(plain(x, training=False)), atol=1e-5)


def test_detail_head_is_stdcs_on_the_stride_8_features_and_drops_out_for_inference(cityscapes_model):
    model = build("fastscnn", num_classes=19, input_shape=(256, 512, 3), aux_head=True, detail_head=True)
    detail = 9 * 64 * 64 + bn(64) + 64 + 1  # 3x3 conv 64 -> 64 + BN, 1x1 conv to one channel with bias
    plain = cityscapes_model.count_params()
    assert model.count_params() == plain + head_params(64, 19) + head_params(128, 19) + detail
    assert model.get_layer("detail_head_conv").input.shape == (None, 32, 64, 64)  # learning to downsample, stride 8
    assert model.output["detail_logits"].shape == (None, 256, 512, 1) and model.output["detail_logits"].dtype == "float32"
    assert aux_loss_weights(model) == {"logits": 1.0, "aux_lds_logits": 0.4, "aux_gfe_logits": 0.4, "detail_logits": 1.0}
    alone = build("fastscnn", num_classes=19, input_shape=(256, 512, 3), detail_head=True)
    assert sorted(alone.output) == ["detail_logits", "logits"] and alone.count_params() == plain + detail
    assert without_aux(alone).count_params() == plain and len(without_aux(alone).weights) == len(cityscapes_model.weights)

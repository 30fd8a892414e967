"""PSPNet: adaptive pooling and resize layers against numpy/OpenCV, architecture as in the paper, aux head, and the
segmentation_models variant against segmentation_models itself."""

import math

import cv2
import keras
import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.models import AUX_LOSS_WEIGHTS, build, predict_probabilities, required_multiple, resnet_encoder, without_aux
from segkit.models.layers import AdaptiveAveragePooling2D, ResizeToMatch
from support import assert_matches_reference, needs_tensorflow, run


NUM_CLASSES = 4


def brute_force_adaptive_pool(x, bins_h, bins_w):
    """Average over [floor(i*H/b), ceil((i+1)*H/b)) x [...], one bin at a time (PyTorch's definition)."""
    height, width = x.shape[1:3]
    out = np.zeros((x.shape[0], bins_h, bins_w, x.shape[3]))
    for i in range(bins_h):
        rows = slice(math.floor(i * height / bins_h), math.ceil((i + 1) * height / bins_h))
        for j in range(bins_w):
            cols = slice(math.floor(j * width / bins_w), math.ceil((j + 1) * width / bins_w))
            out[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
    return out


@pytest.mark.backend_agnostic  # the custom layers' keras.ops code, checked under JAX too
@pytest.mark.parametrize("size", [(12, 12), (45, 60), (7, 5), (1, 1)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 3)])
def test_adaptive_pooling_matches_brute_force(size, bins):
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype("float32")
    bins_h, bins_w = (bins, bins) if isinstance(bins, int) else bins
    got = np.asarray(AdaptiveAveragePooling2D(bins)(x))
    np.testing.assert_allclose(got, brute_force_adaptive_pool(x, bins_h, bins_w), atol=1e-5)


@pytest.mark.backend_agnostic  # the custom layers' keras.ops code, checked under JAX too
def test_adaptive_pooling_of_45_into_6_bins_uses_pytorch_bounds():
    # Hand-worked: 45/6 = 7.5, so bins [0,8) [7,15) [15,23) [22,30) [30,38) [37,45), overlapping by one.
    x = np.arange(45, dtype="float32").reshape(1, 45, 1, 1)
    expected = [np.mean(range(a, b)) for a, b in [(0, 8), (7, 15), (15, 23), (22, 30), (30, 38), (37, 45)]]
    np.testing.assert_allclose(np.asarray(AdaptiveAveragePooling2D((6, 1))(x))[0, :, 0, 0], expected, atol=1e-5)


@pytest.mark.backend_agnostic  # the custom layers' keras.ops code, checked under JAX too
def test_layers_work_with_unknown_sizes_and_reload_in_safe_mode(tmp_path):
    features = keras.Input((None, None, 3))
    pooled = AdaptiveAveragePooling2D(3)(features)
    model = keras.Model(features, ResizeToMatch()([pooled, features]))
    x = np.random.default_rng(1).normal(size=(1, 45, 31, 3)).astype("float32")
    out = np.asarray(model(x))
    assert out.shape == (1, 45, 31, 3)
    model.save(tmp_path / "layers.keras")
    reloaded = keras.saving.load_model(tmp_path / "layers.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(x)), out)


@pytest.mark.backend_agnostic  # the custom layers' keras.ops code, checked under JAX too
def test_resize_to_match_is_opencv_bilinear_with_half_pixel_centres():
    small = np.random.default_rng(2).normal(size=(6, 5, 2)).astype("float32")
    reference = np.zeros((1, 45, 32, 1), "float32")
    got = np.asarray(ResizeToMatch()([small[None], reference]))[0]
    np.testing.assert_allclose(got, cv2.resize(small, (32, 45), interpolation=cv2.INTER_LINEAR), atol=1e-4)


@pytest.mark.parametrize("size", [(256, 256), (256, 512), (360, 480)])
def test_native_sizes_give_logits_at_input_size_from_stride_8_pyramid(size):
    model = build("pspnet", "resnet18", num_classes=NUM_CLASSES, input_shape=(*size, 3))
    assert model.output_shape == (None, *size, NUM_CLASSES)
    features = (size[0] // 8, size[1] // 8)  # 360x480 -> 45x60: bins 3 and 6 do not divide 45
    assert model.get_layer("psp_concat").output.shape == (None, *features, 512 + 4 * 128)
    for bins in (1, 2, 3, 6):
        assert model.get_layer(f"psp_bins{bins}_pool").output.shape == (None, bins, bins, 512)
    # Stages 3 and 4 are dilated 2 and 4 instead of strided.
    assert model.get_layer("stage3_unit2_conv1").dilation_rate == (2, 2)
    assert model.get_layer("stage4_unit2_conv1").dilation_rate == (4, 4)
    assert required_multiple(model) == 8


def test_head_parameters_match_a_hand_count():
    def encoder_params(depth):
        inputs = keras.Input((64, 64, 3))
        return keras.Model(inputs, resnet_encoder(inputs, depth=depth)["stage4"]).count_params()

    def bn(channels):
        return 4 * channels

    # ResNet34: 512 features -> 4 bins of 128; 3x3 head 1024 -> 512; 1x1 classifier. Aux: 256 -> 256 -> classes.
    pyramid = 4 * (512 * 128 + bn(128))
    head = 1024 * 9 * 512 + bn(512) + 512 * NUM_CLASSES + NUM_CLASSES
    aux = 256 * 9 * 256 + bn(256) + 256 * NUM_CLASSES + NUM_CLASSES
    with_aux = build("pspnet", "resnet34", num_classes=NUM_CLASSES, input_shape=(64, 64, 3), aux_head=True)
    assert with_aux.count_params() == encoder_params(34) + pyramid + head + aux
    assert without_aux(with_aux).count_params() == encoder_params(34) + pyramid + head
    # ResNet50: 2048 features, so each bin branch has 2048 / 4 = 512 filters.
    model = build("pspnet", "resnet50", num_classes=NUM_CLASSES, input_shape=(64, 64, 3))
    assert model.get_layer("psp_bins6_conv").filters == 512
    assert model.get_layer("psp_concat").output.shape[-1] == 2048 * 2


@pytest.mark.slow
def test_aux_head_trains_with_weight_0_4_and_is_dropped_for_inference(tmp_path):
    keras.utils.set_random_seed(0)
    model = build("pspnet", "resnet18", num_classes=NUM_CLASSES, input_shape=(None, None, 3), aux_head=True)
    assert set(model.output) == {"logits", "aux_logits"}
    plain = build("pspnet", "resnet18", num_classes=NUM_CLASSES, input_shape=(64, 64, 3))
    assert "aux_logits" not in [layer.name for layer in plain.layers]
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (2, 40, 56, 3)).astype("float32")  # 5x7 features: bins 2, 3, 6 overlap
    y = rng.integers(0, NUM_CLASSES, (2, 40, 56))
    targets = {"logits": y, "aux_logits": y}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # On inputs this small TensorFlow's step tracing costs more than eager execution; JAX's jit costs less.
    eager = keras.backend.backend() == "tensorflow"
    model.compile("adam", {"logits": loss, "aux_logits": loss}, loss_weights=AUX_LOSS_WEIGHTS, run_eagerly=eager)
    assert np.all(np.isfinite(model.train_on_batch(x, targets)))

    outputs = model.predict_on_batch(x)
    expected = float(loss(y, outputs["logits"])) + 0.4 * float(loss(y, outputs["aux_logits"]))
    np.testing.assert_allclose(np.ravel(model.test_on_batch(x, targets))[0], expected, rtol=1e-4)

    inference = without_aux(model)
    assert inference.output_shape == (None, None, None, NUM_CLASSES)
    assert {id(v) for v in inference.weights} <= {id(v) for v in model.weights}  # shared, not copied
    np.testing.assert_allclose(inference.predict_on_batch(x), outputs["logits"], atol=1e-5)

    inference.save(tmp_path / "pspnet.keras")
    reloaded = keras.saving.load_model(tmp_path / "pspnet.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict_on_batch(x), outputs["logits"], atol=1e-5)
    assert predict_probabilities(reloaded, x[0, :37, :50]).shape == (37, 50, NUM_CLASSES)  # padded to 40x56, cropped back


def test_sizes_that_are_not_multiples_of_8_are_refused_at_build():
    with pytest.raises(SegkitError, match="not a multiple of 8"):
        build("pspnet", num_classes=NUM_CLASSES, input_shape=(250, 256, 3))


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("name, channels, stage", [("pspnet", 512, 4), ("pspnet_sm", 128, 2)])
def test_pyramid_views_pool_the_channel_mean_of_the_pyramid_input(name, channels, stage):
    from segkit.models.pspnet import pyramid_views

    model = build(name, "resnet18", num_classes=NUM_CLASSES, input_shape=(72, 56, 3))
    image = np.random.default_rng(0).integers(0, 256, (72, 56, 3), dtype=np.uint8)
    views = pyramid_views(model, image)
    assert views["features"].shape == (9, 7) and views["channels"] == channels and views["stage"] == stage
    mean = views["features"][None, ..., None]
    for bins, (grid, row_starts, col_starts) in views["pooled"].items():
        np.testing.assert_allclose(grid, brute_force_adaptive_pool(mean, bins, bins)[0, ..., 0], rtol=1e-5, atol=1e-6)
        assert row_starts == [math.floor(i * 9 / bins) for i in range(bins)]
        assert col_starts == [math.floor(i * 7 / bins) for i in range(bins)]


@needs_tensorflow
@pytest.mark.parametrize("encoder", ["resnet18", "resnet34"])
def test_sm_variant_matches_segmentation_models(sm, encoder):
    """Same parameters and, with sm's weights copied by name, the same logits (96x96: a multiple of sm's 48)."""
    reference = sm.PSPNet(encoder, classes=19, activation="linear", encoder_weights=None,
                          input_shape=(96, 96, 3), downsample_factor=8)
    assert_matches_reference(reference, build("pspnet_sm", encoder, num_classes=19, input_shape=(96, 96, 3)), 96)


def test_sm_variant_takes_sides_sm_refuses():
    """Adaptive pooling: 128x128 (16x16 features, not a multiple of 6) builds and predicts at full size."""
    model = build("pspnet_sm", "resnet34", num_classes=NUM_CLASSES, input_shape=(128, 128, 3))
    assert run(model, np.zeros((1, 128, 128, 3), "float32")).shape == (1, 128, 128, NUM_CLASSES)


def test_pyramid_views_of_a_bfloat16_model_are_float32():
    """A model trained in mixed bfloat16 yields bfloat16 features, which numpy reductions and matplotlib refuse."""
    from segkit.models.pspnet import pyramid_views

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = build("pspnet_sm", "resnet18", num_classes=NUM_CLASSES, input_shape=(48, 48, 3))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    views = pyramid_views(model, np.zeros((48, 48, 3), np.uint8))
    assert views["features"].dtype == np.float32
    assert all(grid.dtype == np.float32 for grid, _, _ in views["pooled"].values())

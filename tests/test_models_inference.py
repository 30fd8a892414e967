"""predict_probabilities (padding, flip TTA, sliding windows), required_multiple and model_stats on small stand-in models."""

import logging

import keras
import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.models.inference import predict_probabilities, required_multiple
from segkit.models.layers import AdaptiveAveragePooling2D, ResizeToMatch
from segkit.models.stats import count_flops, model_stats

pytestmark = pytest.mark.backend_agnostic

NUM_CLASSES = 5


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def run(model, batch):
    return np.asarray(model(np.asarray(batch, "float32"), training=False))


def per_pixel_model(input_shape=(None, None, 3), multiple=4):
    """Output at a pixel depends only on that pixel, yet the graph only fits sides divisible by `multiple`."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    pixel = keras.layers.Conv2D(NUM_CLASSES, 1, bias_initializer="random_normal", name="pixel")(inputs)
    coarse = keras.layers.AveragePooling2D(multiple)(inputs)
    coarse = keras.layers.UpSampling2D(multiple)(coarse)
    coarse = keras.layers.Conv2D(NUM_CLASSES, 1, kernel_initializer="zeros", use_bias=False)(coarse)
    return keras.Model(inputs, keras.layers.Add()([pixel, coarse]))


def pixel_probabilities(model, image):
    """Independent per-pixel computation: softmax(image @ W + b) with the 1x1 convolution's weights."""
    kernel, bias = model.get_layer("pixel").get_weights()
    return softmax(image.astype("float64") @ kernel[0, 0] + bias)


def context_model(multiple=4):
    """3x3 convolutions and a pooled branch: outputs depend on neighbours and on position."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 3))
    local = keras.layers.Conv2D(NUM_CLASSES, 3, padding="same")(inputs)
    coarse = keras.layers.AveragePooling2D(multiple)(inputs)
    coarse = keras.layers.Conv2D(NUM_CLASSES, 3, padding="same")(coarse)
    coarse = keras.layers.UpSampling2D(multiple, interpolation="bilinear")(coarse)
    return keras.Model(inputs, keras.layers.Add()([local, coarse]))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (30, 46, 3)).astype("uint8")


def test_required_multiple_follows_strides_through_the_graph():
    assert required_multiple(per_pixel_model(multiple=4)) == 4
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same")(inputs)
    deep = keras.layers.MaxPooling2D(4)(x)  # stride 8
    deep = keras.layers.UpSampling2D(2)(deep)  # back to 4
    pooled = AdaptiveAveragePooling2D(3)(deep)  # size-free
    pooled = ResizeToMatch()([pooled, x])  # stride 2 again
    assert required_multiple(keras.Model(inputs, [pooled, deep])) == 8


def test_padding_is_cropped_off_and_does_not_leak_into_a_per_pixel_model(image):
    model = per_pixel_model()
    with pytest.raises(Exception):  # the raw graph cannot take 30x46: the Add sees 30 vs 28 rows
        run(model, image[None])
    for pad_mode in ("reflect", "constant"):
        probs = predict_probabilities(model, image, pad_mode=pad_mode)
        assert probs.shape == (30, 46, NUM_CLASSES) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, pixel_probabilities(model, image), atol=1e-5)


def test_padding_reflects_at_bottom_and_right_for_a_model_with_context(image):
    model = context_model()
    padded = np.pad(image.astype("float32"), ((0, 2), (0, 2), (0, 0)), mode="reflect")  # 32x48: multiples of 4
    expected = softmax(run(model, padded[None])[0])[:30, :46]
    np.testing.assert_allclose(predict_probabilities(model, image), expected, atol=1e-5)


def test_batch_in_batch_out(image):
    model = per_pixel_model()
    batch = np.stack([image, image[::-1]])
    probs = predict_probabilities(model, batch, batch_size=1)
    assert probs.shape == (2, 30, 46, NUM_CLASSES)
    np.testing.assert_allclose(probs[1], pixel_probabilities(model, image[::-1]), atol=1e-5)


def test_flip_tta_averages_the_mirrored_prediction(image):
    model = context_model(multiple=1)
    x = image[None, :28, :44].astype("float32")
    plain = softmax(run(model, x))[0]
    mirrored = softmax(run(model, x[:, :, ::-1]))[0, :, ::-1]
    tta = predict_probabilities(model, x[0], tta="flip")
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-5)
    assert np.abs(tta - plain).max() > 1e-3  # the model is not mirror-symmetric, so TTA changed something


def test_sliding_window_on_a_per_pixel_model_equals_the_whole_image():
    image = np.random.default_rng(2).integers(0, 256, (70, 90, 3)).astype("uint8")
    model = per_pixel_model()
    windowed = predict_probabilities(model, image, window=(32, 32), overlap=1 / 3)
    np.testing.assert_allclose(windowed, pixel_probabilities(model, image), atol=1e-5)
    np.testing.assert_allclose(windowed, predict_probabilities(model, image), atol=1e-5)


def test_sliding_window_averages_overlapping_tiles():
    # 32x48 image, 32x32 tiles, overlap 1/2: tiles at columns 0 and 16, averaged on columns 16..31.
    image = np.random.default_rng(3).uniform(0, 255, (32, 48, 3)).astype("float32")
    model = context_model()
    left = softmax(run(model, image[None, :, :32]))[0]
    right = softmax(run(model, image[None, :, 16:]))[0]
    expected = np.concatenate([left[:, :16], (left[:, 16:] + right[:, :16]) / 2, right[:, 16:]], axis=1)
    np.testing.assert_allclose(predict_probabilities(model, image, window=(32, 32), overlap=0.5), expected, atol=1e-5)


def _tile_by_tile(model, image, window, starts):
    """Each tile's flip-TTA softmax from direct model calls, averaged per pixel in float64."""
    total = np.zeros((*image.shape[:2], NUM_CLASSES))
    count = np.zeros((*image.shape[:2], 1))
    for r, c in starts:
        tile = image[None, r : r + window[0], c : c + window[1]]
        probs = (softmax(run(model, tile)) + softmax(run(model, tile[:, :, ::-1]))[:, :, ::-1]) / 2
        total[r : r + window[0], c : c + window[1]] += probs[0]
        count[r : r + window[0], c : c + window[1]] += 1
    return total / count


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_sliding_window_with_many_tiles_matches_a_tile_by_tile_average(batch_size):
    image = np.random.default_rng(6).uniform(0, 255, (2, 48, 104, 3)).astype("float32")
    model = context_model()
    # 32-pixel tiles, overlap 1/3: step round(32 * 2 / 3) = 21, the last tile flush with the end
    starts = [(r, c) for r in (0, 16) for c in (0, 21, 42, 63, 72)]
    got = predict_probabilities(model, image, window=(32, 32), overlap=1 / 3, batch_size=batch_size, tta="flip")
    for one, result in zip(image, got):
        np.testing.assert_allclose(result, _tile_by_tile(model, one, (32, 32), starts), atol=1e-5)


def test_sliding_window_memory_grows_with_the_image_not_the_tiles():
    """Peak numpy memory stays a few times the output, though the tiles cover the image about 4 times over."""
    import tracemalloc

    image = np.random.default_rng(7).integers(0, 256, (256, 512, 3)).astype("uint8")
    model = per_pixel_model()
    predict_probabilities(model, image[:32, :32], window=(32, 32))  # trace the model outside the measurement
    tracemalloc.start()
    try:
        probs = predict_probabilities(model, image, window=(32, 32), overlap=0.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * probs.nbytes, f"peak {peak / 1e6:.1f} MB for a {probs.nbytes / 1e6:.1f} MB result"


def test_fixed_size_model_pads_smaller_images_and_tiles_larger_ones():
    model = per_pixel_model(input_shape=(32, 32, 3))
    small = np.random.default_rng(4).integers(0, 256, (20, 27, 3)).astype("uint8")
    np.testing.assert_allclose(predict_probabilities(model, small), pixel_probabilities(model, small), atol=1e-5)
    large = np.random.default_rng(5).integers(0, 256, (50, 70, 3)).astype("uint8")
    np.testing.assert_allclose(predict_probabilities(model, large, window=(32, 32)), pixel_probabilities(model, large), atol=1e-5)


def test_inputs_a_model_cannot_take_get_one_line_errors():
    fixed = per_pixel_model(input_shape=(32, 32, 3))
    large = np.zeros((40, 33, 3), "uint8")
    with pytest.raises(SegkitError, match=r"larger than the fixed input 32x32.*window=\(32, 32\).*multiple of 4"):
        predict_probabilities(fixed, large)
    with pytest.raises(SegkitError, match="fixed input"):
        predict_probabilities(fixed, large, window=(16, 16))
    with pytest.raises(SegkitError, match="multiple of 4"):
        predict_probabilities(per_pixel_model(), large, window=(30, 32))
    bad_calls = [
        dict(images=np.zeros((32, 32), "uint8")),
        dict(images=np.zeros((32, 32, 4), "uint8")),
        dict(images=np.zeros((32, 32, 3), "uint8"), tta="vertical"),
        dict(images=np.zeros((32, 32, 3), "uint8"), overlap=1.0),
        dict(images=np.zeros((32, 32, 3), "uint8"), pad_mode="edge"),
        dict(images=np.array([["a"] * 3] * 4)[None]),
    ]
    for kwargs in bad_calls:
        with pytest.raises(SegkitError) as error:
            predict_probabilities(per_pixel_model(), **kwargs)
        assert "\n" not in str(error.value)


def test_flops_of_a_tiny_model_match_a_hand_count():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 2*8*8*4*(3*3*3) + 8*8*4 bias = 14080
    x = keras.layers.BatchNormalization()(x)  # 2 * 256 = 512
    x = keras.layers.Activation("relu")(x)  # 0
    x = keras.layers.MaxPooling2D(2)(x)  # 4*4*4 outputs * 4 = 256
    x = keras.layers.Dense(2)(x)  # 16 positions * (2*4*2 + 2 bias) = 288
    model = keras.Model(inputs, x)
    assert count_flops(model) == 14080 + 512 + 256 + 288
    params = (3 * 3 * 3 * 4 + 4) + 4 * 4 + (4 * 2 + 2)  # BN: gamma, beta, mean, variance
    assert model_stats(model) == {"params": params, "gflops": 15136 / 1e9}


def test_flops_of_adaptive_pooling_resize_and_add_match_a_hand_count():
    features = keras.Input((5, 7, 2))
    reference = keras.Input((10, 14, 1))
    # 3 bins over 5 rows: [0,2) [1,4) [3,5) -> 7 rows read; over 7 columns: [0,3) [2,5) [4,7) -> 9 columns read.
    pooled = AdaptiveAveragePooling2D(3)(features)  # 7 * 9 * 2 = 126
    resized = ResizeToMatch()([pooled, reference])  # 8 * 10*14*2 = 2240
    nearest = keras.layers.UpSampling2D(2)(features)  # 0
    total = keras.layers.Add()([resized, nearest, nearest])  # 2 * 280 = 560
    model = keras.Model([features, reference], total)
    assert count_flops(model) == 126 + 2240 + 560


def test_model_stats_needs_a_fixed_input_size():
    with pytest.raises(SegkitError, match="fixed size"):
        model_stats(per_pixel_model())


def test_a_model_of_any_input_size_is_counted_at_the_size_given():
    fixed = model_stats(per_pixel_model((16, 24, 3)))
    assert model_stats(per_pixel_model(), input_shape=(16, 24, 3)) == fixed
    # pixel conv 2*C*3 + C bias per pixel, 4x4 average pool of 3 channels, nearest upsampling, bias-free 1x1 conv, add
    pixels = 16 * 24
    hand = pixels * NUM_CLASSES * 7 + 4 * 6 * 3 * 16 + pixels * NUM_CLASSES * 6 + pixels * NUM_CLASSES
    assert fixed["gflops"] == hand / 1e9


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the warning is TensorFlow's")
def test_predicting_with_several_models_does_not_warn_of_retracing_but_other_functions_still_do(caplog, image):
    # TensorFlow counts the traces of all models' predict functions together: four models at two batch sizes warn.
    caplog.set_level(logging.WARNING, logger="tensorflow")  # notebook.setup keeps TensorFlow's log to errors
    for _ in range(4):
        model = per_pixel_model()
        predict_probabilities(model, image)
        predict_probabilities(model, np.stack([image] * 3))
    tensorflow = logging.getLogger("tensorflow")
    tensorflow.warning("5 out of the last 5 calls to <function TensorFlowTrainer.make_train_function.<locals>.one_step_on_data "
                       "at 0x0> triggered tf.function retracing.")
    retracing = [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]
    assert len(retracing) == 1 and "make_train_function" in retracing[0]

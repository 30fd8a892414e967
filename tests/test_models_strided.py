"""strided_logits and subsample_masks: where a strided model's logits sit, which mask pixels they are scored on."""

import keras
import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.models import build, strided_logits, subsample_masks

pytestmark = pytest.mark.backend_agnostic


def run(model, images):
    outputs = model(images, training=False)
    if isinstance(outputs, dict):
        return {name: keras.ops.convert_to_numpy(value) for name, value in outputs.items()}
    return keras.ops.convert_to_numpy(outputs)


def pair_means(full, stride):
    """Per axis, the mean of full-size pixels stride*i + stride//2 - 1 and stride*i + stride//2: the two whose centres
    straddle the strided pixel's centre (stride*(i + 1/2)). Bilinear upsampling from stride-8 features is linear between
    them for stride 2 and 4, so the strided logits must equal this mean."""
    first = stride // 2 - 1
    rows = (full[:, first::stride] + full[:, first + 1::stride]) / 2
    return (rows[:, :, first::stride] + rows[:, :, first + 1::stride]) / 2


@pytest.fixture(scope="module")
def fastscnn():
    keras.utils.set_random_seed(0)
    return build("fastscnn", num_classes=5, input_shape=(None, None, 3))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype("float32")


@pytest.mark.parametrize("stride", [2, 4])
def test_strided_logits_sit_between_the_full_size_pixels_the_masks_are_sampled_from(fastscnn, images, stride):
    full, strided = run(fastscnn, images), run(strided_logits(fastscnn, stride), images)
    assert strided.shape == (2, 64 // stride, 96 // stride, 5)
    np.testing.assert_allclose(strided, pair_means(full, stride), rtol=1e-4, atol=1e-4)


def test_a_model_with_auxiliary_heads_gets_every_output_strided_and_shares_the_weights(images):
    keras.utils.set_random_seed(0)
    model = build("fastscnn", num_classes=5, input_shape=(None, None, 3), aux_head=True)
    trainer = strided_logits(model, 2)
    assert {id(weight) for weight in trainer.weights} == {id(weight) for weight in model.weights}
    full, strided = run(model, images), run(trainer, images)
    assert set(strided) == {"logits", "aux_lds_logits", "aux_gfe_logits"}
    for name in strided:
        np.testing.assert_allclose(strided[name], pair_means(full[name], 2), rtol=1e-4, atol=1e-4)


def test_stride_1_is_the_model_itself(fastscnn):
    assert strided_logits(fastscnn, 1) is fastscnn


def test_a_strided_model_saves_and_loads_with_its_stride(fastscnn, images, tmp_path):
    trainer = strided_logits(fastscnn, 2)
    trainer.save(tmp_path / "trainer.keras")
    loaded = keras.saving.load_model(tmp_path / "trainer.keras")
    np.testing.assert_allclose(run(loaded, images), run(trainer, images), rtol=1e-5, atol=1e-5)


def test_a_model_that_computes_its_logits_at_the_input_size_is_refused():
    model = build("unet", "resnet18", num_classes=3, input_shape=(64, 64, 3))
    with pytest.raises(SegkitError, match=r"'unet_resnet18' computes its output 'logits' at the input size"):
        strided_logits(model, 2)


def test_subsample_masks_takes_every_kth_pixel_from_k_over_2():
    masks = np.arange(2 * 4 * 6).reshape(2, 4, 6)
    np.testing.assert_array_equal(subsample_masks(masks, 2)[0], [[7, 9, 11], [19, 21, 23]])
    np.testing.assert_array_equal(subsample_masks(masks, 2)[1], masks[1][[1, 3]][:, [1, 3, 5]])
    assert subsample_masks(masks, 1) is masks

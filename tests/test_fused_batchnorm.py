"""TensorFlow's fused batch-norm kernel in training: the same outputs, moving statistics and gradients as Keras'
own BatchNormalization (checked against it and against numpy), saved models unchanged, and `segkit train` using it."""

import keras
import numpy as np
import pytest

import segkit
from segkit.models import batchnorm
from segkit.workflows import fused_batchnorm
from segkit.workflows import train as train_module
from training_support import tiny_config

pytestmark = pytest.mark.backend_agnostic
TENSORFLOW = keras.backend.backend() == "tensorflow"


def _conv_bn(seed=0, **bn_options):
    """image -> conv -> BN -> conv: gradients reach the BN from above and flow through it to the first conv."""
    inputs = keras.Input((6, 5, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn", **bn_options)(x)
    outputs = keras.layers.Conv2D(2, 1, name="conv2")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:  # the moving statistics keep their start: mean 0, variance 1
        weight.assign(rng.normal(1.0, 0.5, weight.shape).astype("float32"))
    return model


def _pair(**bn_options):
    """(Keras' path, fused kernel) copies of one model with the same weights, and how many layers were switched."""
    keras_bn, fused = _conv_bn(**bn_options), _conv_bn(**bn_options)
    return keras_bn, fused, fused_batchnorm.use_fused_kernel(fused)


def _images(seed=1, batch=4):
    return np.random.default_rng(seed).normal(3.0, 2.0, (batch, 6, 5, 3)).astype("float32")


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def test_training_outputs_and_moving_statistics_match_keras_and_numpy():
    keras_bn, fused, switched = _pair(momentum=0.9)
    assert switched == (1 if TENSORFLOW else 0)
    x = _images()
    for _ in range(2):  # the second call starts from the first one's moving statistics
        np.testing.assert_allclose(_numpy(fused(x, training=True)), _numpy(keras_bn(x, training=True)), rtol=1e-5, atol=1e-5)
    # numpy: the conv's output statistics (biased variance), blended twice at momentum 0.9 from mean 0, variance 1.
    conv = keras.Model(fused.input, fused.get_layer("conv1").output)
    h = _numpy(conv(x)).astype(np.float64)
    mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
    bn = fused.get_layer("bn")
    np.testing.assert_allclose(_numpy(bn.moving_mean), 0.19 * mean, rtol=1e-5)
    np.testing.assert_allclose(_numpy(bn.moving_variance), 0.81 + 0.19 * var, rtol=1e-5)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(_numpy(getattr(bn, name)), _numpy(getattr(keras_bn.get_layer("bn"), name)), rtol=1e-5)


def test_one_training_step_moves_every_weight_as_keras_does():
    """Plain SGD: each weight moves by its gradient, so equal weights after a step mean equal gradients."""
    keras_bn, fused, _ = _pair()
    x, y = _images(), np.random.default_rng(2).normal(size=(4, 6, 5, 2)).astype("float32")
    before = keras_bn.get_weights()
    for model in (keras_bn, fused):
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.train_on_batch(x, y)
    for name, start, a, b in zip([w.path for w in keras_bn.weights], before, keras_bn.get_weights(), fused.get_weights()):
        step = a - start
        np.testing.assert_allclose(b - start, step, rtol=1e-3, atol=1e-4 * np.abs(step).max() + 1e-7, err_msg=name)
    assert np.abs(_numpy(keras_bn.get_layer("bn").gamma) - before[2]).max() > 1e-3  # the step did reach the BN


def test_inference_and_precise_bn_are_unchanged():
    keras_bn, fused, _ = _pair()
    batches = [_images(seed) for seed in (3, 4, 5)]
    for model in (keras_bn, fused):
        assert batchnorm.reestimate_statistics(model, iter(batches)) == 3
    np.testing.assert_allclose(_numpy(fused(batches[0])), _numpy(keras_bn(batches[0])), rtol=1e-5, atol=1e-5)
    bn = fused.get_layer("bn")
    assert bn.momentum == 0.99
    conv = keras.Model(fused.input, fused.get_layer("conv1").output)
    outputs = [_numpy(conv(x)).astype(np.float64) for x in batches]
    np.testing.assert_allclose(_numpy(bn.moving_variance), np.mean([h.var(axis=(0, 1, 2)) for h in outputs], axis=0), rtol=1e-5)


_SYNCHRONIZED = pytest.param({"synchronized": True}, marks=pytest.mark.skipif(
    not TENSORFLOW, reason="Keras takes synchronized=True only under TensorFlow"))


@pytest.mark.parametrize("options", [{"renorm": True}, _SYNCHRONIZED, {"epsilon": 1e-5}, {"axis": 1}],
                         ids=["renorm", "synchronized", "epsilon-1e-5", "axis-1"])
def test_settings_the_kernel_does_not_cover_keep_keras_path(options):
    assert _pair(**options)[2] == 0


def test_other_ranks_fall_back_to_keras_at_call_time():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.5)(inputs))
    reference = keras.models.clone_model(model)
    assert fused_batchnorm.use_fused_kernel(model) == (1 if TENSORFLOW else 0)
    x = np.random.default_rng(6).normal(2.0, 3.0, (8, 5)).astype("float32")
    np.testing.assert_allclose(_numpy(model(x, training=True)), _numpy(reference(x, training=True)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_numpy(model.layers[-1].moving_mean), 0.5 * x.mean(axis=0), rtol=1e-5)


def test_saved_models_hold_keras_own_layer(tmp_path):
    _, fused, _ = _pair()
    fused(_images(), training=True)
    fused.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.get_layer("bn")) is keras.layers.BatchNormalization
    x = _images(seed=7)
    np.testing.assert_allclose(_numpy(loaded(x)), _numpy(fused(x)), rtol=1e-6)


def test_segkit_train_trains_its_batchnorm_layers_with_the_kernel(dataset, tmp_path, monkeypatch):
    switched, use_fused_kernel = [], fused_batchnorm.use_fused_kernel

    def recording(model):
        switched.append((len(batchnorm.batchnorm_layers(model)), use_fused_kernel(model)))
        return switched[-1][1]

    monkeypatch.setattr(train_module.fused_batchnorm, "use_fused_kernel", recording)
    segkit.train(tiny_config(dataset, train={"epochs": 1}), runs_dir=tmp_path, verbose=0)
    (total, fused), = switched
    assert total > 10 and fused == (total if TENSORFLOW else 0)  # U-Net-R18: every BatchNorm layer qualifies

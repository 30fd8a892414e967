"""Precise BN: BatchNorm moving statistics re-estimated from training batches, checked against numpy."""

import keras
import numpy as np
import pytest

from segkit.models import batchnorm

pytestmark = pytest.mark.backend_agnostic
EPS = 1e-3  # Keras' BatchNormalization epsilon


def _two_bn_model(seed=0):
    """x -> BN -> Dense (fixed weights) -> BN: the second layer's statistics depend on the first one's training-mode output."""
    inputs = keras.Input((4,))
    hidden = keras.layers.BatchNormalization(epsilon=EPS, name="bn1")(inputs)
    dense = keras.layers.Dense(3, name="dense")
    outputs = keras.layers.BatchNormalization(epsilon=EPS, name="bn2")(dense(hidden))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    dense.set_weights([rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")])
    return model, dense.get_weights()


def _batches(count=3, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.normal(5.0, 3.0, size=(8, 4)) * [1, 10, 0.1, 1]).astype("float32") for _ in range(count)]


def _expected(batches, kernel, bias):
    """Per layer: the mean over batches of each batch's (mean, biased variance), the second layer fed train-mode outputs."""
    first, second = [], []
    for x in batches:
        mean, var = x.mean(0), x.var(0)
        first.append((mean, var))
        h = ((x - mean) / np.sqrt(var + EPS)) @ kernel + bias
        second.append((h.mean(0), h.var(0)))
    return [tuple(np.mean([s[i] for s in stats], axis=0) for i in range(2)) for stats in (first, second)]


def test_statistics_are_the_average_of_the_batch_statistics_and_momentum_comes_back():
    model, (kernel, bias) = _two_bn_model()
    batches = _batches()
    assert batchnorm.reestimate_statistics(model, iter(batches)) == 3
    for layer, (mean, var) in zip(batchnorm.batchnorm_layers(model), _expected(batches, kernel, bias)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), var, rtol=1e-4, atol=1e-4)
        assert layer.momentum == 0.99


def test_no_batches_leave_the_statistics_and_frozen_layers_are_not_touched():
    model, _ = _two_bn_model()
    assert batchnorm.reestimate_statistics(model, iter([])) == 0
    bn1, bn2 = batchnorm.batchnorm_layers(model)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn1.moving_variance), np.ones(4))
    bn1.trainable = False
    batchnorm.reestimate_statistics(model, iter(_batches()))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn1.moving_mean), np.zeros(4))
    assert not np.allclose(keras.ops.convert_to_numpy(bn2.moving_mean), 0)


def test_set_momentum_reaches_layers_of_nested_models():
    inner, _ = _two_bn_model()
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.BatchNormalization()])
    batchnorm.set_momentum(outer, 0.9)
    assert [layer.momentum for layer in batchnorm.batchnorm_layers(outer)] == [0.9, 0.9, 0.9]

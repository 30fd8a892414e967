"""Training BatchNorm layers with TensorFlow's fused kernel: the same statistics and gradients, a faster step.

Keras 3's BatchNormalization computes its batch statistics, normalisation and their gradients as a dozen separate
TensorFlow ops, each a pass over the activations; TensorFlow's fused kernel does it in one pass forward and two
back. On a CPU that makes Fast-SCNN's training step 1.34x faster (benchmarks/bench_batchnorm.py). The layers,
their weights and the saved model files stay Keras' own: only how a layer computes in training changes, and only
while the model trains under TensorFlow. Inference, JAX and any setting the kernel does not cover keep Keras' path.
"""

import keras

from segkit.models.batchnorm import batchnorm_layers

__all__ = ["use_fused_kernel"]

# cuDNN, TensorFlow's fused kernel on a GPU, takes no epsilon under about 1e-5; smaller ones keep Keras' path.
_MIN_EPSILON = 1.001e-5


def use_fused_kernel(model) -> int:
    """Makes every BatchNormalization layer of `model` (nested models included) that the fused kernel can compute
    train with it; returns how many. Under another backend than TensorFlow nothing changes (0).

    A layer qualifies when it normalises the last axis, without renorm, cross-replica synchronisation or an
    epsilon under 1.001e-5; calls on other than 4-D inputs, and masked ones, keep Keras' path.
    """
    if keras.backend.backend() != "tensorflow":
        return 0
    layers = [layer for layer in batchnorm_layers(model) if _qualifies(layer)]
    for layer in layers:
        layer.call = _fused_call(layer, layer.call)
    return len(layers)


def _qualifies(layer) -> bool:
    return layer.axis in (-1, 3) and not layer.renorm and not layer.synchronized and layer.epsilon >= _MIN_EPSILON


def _fused_call(layer, keras_call):
    import tensorflow as tf

    def call(inputs, training=None, mask=None):
        if not (training and layer.trainable) or mask is not None or len(inputs.shape) != 4:
            return keras_call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, "float32")  # as Keras does: statistics in float32 whatever the compute dtype
        gamma = tf.cast(layer.gamma, "float32") if layer.scale else tf.ones(x.shape[-1])
        beta = tf.cast(layer.beta, "float32") if layer.center else tf.zeros(x.shape[-1])
        y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=layer.epsilon, is_training=True)
        count = tf.cast(tf.size(x) // x.shape[-1], "float32")
        variance = unbiased * (count - 1) / count  # the kernel returns Bessel's variance; Keras keeps the batch's own
        momentum = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1 - momentum))
        layer.moving_variance.assign(layer.moving_variance * momentum + variance * (1 - momentum))
        return tf.cast(y, layer.compute_dtype)

    return call

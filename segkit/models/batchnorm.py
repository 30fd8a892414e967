"""BatchNorm moving statistics: set their momentum, or re-estimate them from training batches ("precise BN").

Keras' BatchNormalization keeps moving averages with momentum 0.99: after a few hundred steps they still
hold much of their initial values (mean 0, variance 1) and lag behind weights that change fast, so a
short run validates with statistics that do not match its activations (validation losses of 1e5 to 1e7
while the training loss is about 1). Re-estimating them with the final weights, as the average of the
batch statistics over a number of training batches, removes that lag (Wu & Johnson, "Rethinking
'Batch' in BatchNorm", 2021).
"""

import keras
import numpy as np


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer of `model`, nested models included, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(batchnorm_layers(layer))
    return found


def set_momentum(model, momentum: float) -> None:
    """Sets the moving-average momentum of every BatchNormalization layer of `model`."""
    for layer in batchnorm_layers(model):
        layer.momentum = float(momentum)


def reestimate_statistics(model, batches) -> int:
    """Replaces the moving mean and variance of every trainable BatchNormalization layer by the average of its
    batch statistics over `batches` (model inputs), each computed in training mode with the current weights.

    Returns the number of batches used; with none, the statistics stay as they were.
    """
    layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape, np.float64), np.zeros(layer.moving_variance.shape, np.float64)] for layer in layers]
    used = 0
    try:
        for layer in layers:
            layer.momentum = 0.0  # each training-mode call then leaves exactly that batch's statistics in the moving ones
        for batch in batches:
            model(batch, training=True)
            for total, layer in zip(sums, layers):
                total[0] += keras.ops.convert_to_numpy(layer.moving_mean)
                total[1] += keras.ops.convert_to_numpy(layer.moving_variance)
            used += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if used:
        for (mean, variance), layer in zip(sums, layers):
            layer.moving_mean.assign(mean / used)
            layer.moving_variance.assign(variance / used)
    return used

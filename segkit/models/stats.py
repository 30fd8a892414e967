"""Parameter count and analytic FLOPs of a segmentation model at its input size.

Convention: one multiply-add is 2 FLOPs, counted for one image (batch 1) in inference form.
- Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, Dense: 2 x multiply-adds,
  plus one add per output element when the layer has a bias.
- BatchNormalization: 2 per element (scale and shift, statistics folded in).
- Max/average pooling: pool_h x pool_w per output element; global pooling: 1 per input
  element; adaptive average pooling: 1 per input element per bin that covers it.
- Bilinear resize (UpSampling2D, ResizeToMatch): 8 per output element (4 neighbours,
  one multiply-add each); nearest-neighbour resize: 0.
- Add/Subtract/Multiply: (inputs - 1) per output element; Average: inputs per element.
- Activations, dropout, concatenation, padding, reshapes: 0 (no arithmetic worth counting).
"""

import math

import keras

from segkit.errors import SegkitError
from segkit.models.layers import AdaptiveAveragePooling2D, ResizeToMatch, adaptive_bin_bounds


def model_stats(model, input_shape=None, num_classes=None, encoder=None):
    """{"params": int, "gflops": float} of a built model, or of `build(model, ...)` given a name.

    FLOPs depend on the input size: a model built for any size (input shape (None, None, 3)) is counted at
    `input_shape=(H, W, 3)` (a copy of its graph at that size); a name is built with `input_shape` and `num_classes`.
    """
    if isinstance(model, str):
        from segkit.models import build  # the registry imports this module

        model = build(model, encoder=encoder, num_classes=num_classes, input_shape=input_shape)
    if _free_size(model) and input_shape is not None:
        model = _at_size(model, input_shape)
    if _free_size(model):
        raise SegkitError(
            f"model {model.name!r} has input shape {keras.tree.flatten(model.input)[0].shape}; "
            "FLOPs need a fixed size: build it with input_shape=(H, W, 3) or pass input_shape"
        )
    return {"params": int(model.count_params()), "gflops": count_flops(model) / 1e9}


def _free_size(model) -> bool:
    return any(side is None for side in keras.tree.flatten(model.input)[0].shape[1:])


def _at_size(model, input_shape):
    """An untrained copy of functional `model`'s graph whose input takes (B, *input_shape)."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, *input_shape]
    return model.__class__.from_config(config)


def count_flops(model):
    """Total FLOPs of one forward pass of a single image through `model` (see module docstring)."""
    return sum(_layer_flops(layer) for layer in model.layers)


def _layer_flops(layer):
    if isinstance(layer, keras.Model):
        return count_flops(layer)
    if isinstance(layer, keras.layers.InputLayer):
        return 0
    inputs = [tuple(t.shape[1:]) for t in keras.tree.flatten(layer.input)]
    outputs = [tuple(t.shape[1:]) for t in keras.tree.flatten(layer.output)]
    for kind, rule in _RULES:
        if isinstance(layer, kind):
            return rule(layer, inputs, outputs)
    return 0


def _size(shape):
    return math.prod(shape)


def _bias(layer, out_shape):
    return _size(out_shape) if getattr(layer, "use_bias", False) else 0


def _conv(layer, inputs, outputs):
    in_channels = inputs[0][-1]
    per_output = math.prod(layer.kernel_size) * in_channels // layer.groups
    return 2 * _size(outputs[0]) * per_output + _bias(layer, outputs[0])


def _conv_transpose(layer, inputs, outputs):
    out_channels = outputs[0][-1]
    return 2 * _size(inputs[0]) * math.prod(layer.kernel_size) * out_channels + _bias(layer, outputs[0])


def _depthwise(layer, inputs, outputs):
    return 2 * _size(outputs[0]) * math.prod(layer.kernel_size) + _bias(layer, outputs[0])


def _separable(layer, inputs, outputs):
    depthwise_out = (*outputs[0][:-1], inputs[0][-1] * layer.depth_multiplier)
    depthwise = 2 * _size(depthwise_out) * math.prod(layer.kernel_size)
    pointwise = 2 * _size(outputs[0]) * depthwise_out[-1]
    return depthwise + pointwise + _bias(layer, outputs[0])


def _dense(layer, inputs, outputs):
    return 2 * _size(outputs[0]) * inputs[0][-1] + _bias(layer, outputs[0])


def _batch_norm(layer, inputs, outputs):
    return 2 * _size(outputs[0])


def _pooling(layer, inputs, outputs):
    return _size(outputs[0]) * math.prod(layer.pool_size)


def _global_pooling(layer, inputs, outputs):
    return _size(inputs[0])


def _adaptive_pooling(layer, inputs, outputs):
    height, width, channels = inputs[0]
    rows = sum(end - start for start, end in adaptive_bin_bounds(height, layer.output_size[0]))
    cols = sum(end - start for start, end in adaptive_bin_bounds(width, layer.output_size[1]))
    return rows * cols * channels


def _resize(layer, inputs, outputs):
    return 8 * _size(outputs[0]) if layer.interpolation == "bilinear" else 0


def _merge(layer, inputs, outputs):
    return (len(inputs) - 1) * _size(outputs[0])


def _average(layer, inputs, outputs):
    return len(inputs) * _size(outputs[0])


_RULES = (
    (keras.layers.Conv2DTranspose, _conv_transpose),
    (keras.layers.DepthwiseConv2D, _depthwise),
    (keras.layers.SeparableConv2D, _separable),
    ((keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D), _conv),
    (keras.layers.Dense, _dense),
    (keras.layers.BatchNormalization, _batch_norm),
    ((keras.layers.MaxPooling2D, keras.layers.AveragePooling2D), _pooling),
    ((keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D), _global_pooling),
    (AdaptiveAveragePooling2D, _adaptive_pooling),
    ((keras.layers.UpSampling2D, ResizeToMatch), _resize),
    ((keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply), _merge),
    (keras.layers.Average, _average),
)

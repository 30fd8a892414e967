"""MobileNetV3 Large and Small encoders from `keras.applications`, tapped at strides 2..32, optionally dilated.

The backbone is keras.applications' own model (`include_top=False`, `include_preprocessing=True`: its first
layer rescales RGB 0..255 to -1..1, so segkit's input contract holds), cloned onto the segmentation model's
input so its layers, with their keras.applications names, sit in the segmentation model itself.

Taps: the feature at each stride is the last one before the block that halves it, i.e. the activated
1x1 expansion that feeds that block's strided depthwise convolution (read as the input of its
`expanded_conv_N_depthwise_pad` layer, whose name is stable while the activations' are not), and the
backbone's output (its final 1x1 conv, `conv_1`, activated) at stride 32:

| encoder | stride 2 | stride 4 | stride 8 | stride 16 | stride 32 |
|---|---|---|---|---|---|
| mobilenetv3_large | expanded_conv_1 (64) | expanded_conv_3 (72) | expanded_conv_6 (240) | expanded_conv_12 (672) | conv_1 (960) |
| mobilenetv3_small | stem conv (16), input of expanded_conv | expanded_conv_1 (72) | expanded_conv_3 (96) | expanded_conv_8 (288) | conv_1 (576) |

Output stride 16 (DeepLabV3+) or 8 (PSPNet): the strided depthwise convolution of the block that would
go below it runs at stride 1 with symmetric padding, and every later depthwise convolution is dilated
2 (4 after a second such block), the "a trous" rewrite of DeepLab's MobileNet backbones. The taps then
read at the new strides (at output stride 16 "stage3" and "stage4" are both at stride 16).
"""

import keras

from segkit.errors import SegkitError

# name -> (keras.applications constructor name, the depthwise-pad layers whose input is the stride 2, 4, 8, 16 tap)
APPLICATIONS = {
    "mobilenetv3_large": (
        "MobileNetV3Large",
        ("expanded_conv_1_depthwise_pad", "expanded_conv_3_depthwise_pad",
         "expanded_conv_6_depthwise_pad", "expanded_conv_12_depthwise_pad"),
    ),
    "mobilenetv3_small": (
        "MobileNetV3Small",
        ("expanded_conv_depthwise_pad", "expanded_conv_1_depthwise_pad",
         "expanded_conv_3_depthwise_pad", "expanded_conv_8_depthwise_pad"),
    ),
}
FEATURES = ("stem", "stage1", "stage2", "stage3")
# output stride -> how many of the last taps' strided blocks run undecimated (and dilate what follows)
DILATED_BLOCKS = {32: 0, 16: 1, 8: 2}


def application_backbone(name, input_shape=(None, None, 3), weights=None):
    """keras.applications' model for encoder `name` without its classifier (weights None or "imagenet")."""
    constructor = getattr(keras.applications, APPLICATIONS[name][0])
    return constructor(input_shape=input_shape, include_top=False, weights=weights, include_preprocessing=True)


def application_encoder(inputs, name, output_stride=32):
    """Runs encoder `name` (randomly initialised) on `inputs` (RGB 0..255); returns its features
    {"stem", "stage1", "stage2", "stage3", "stage4"} at strides 2, 4, 8, 16, 32 for output stride 32."""
    if output_stride not in DILATED_BLOCKS:
        raise SegkitError(f"output_stride {output_stride!r} is not supported; choose one of {sorted(DILATED_BLOCKS)}")
    taps = APPLICATIONS[name][1]
    backbone = application_backbone(name, tuple(inputs.shape[1:]))
    undecimated = taps[len(taps) - DILATED_BLOCKS[output_stride]:]
    encoder = keras.models.clone_model(
        backbone, input_tensors=inputs, clone_function=_atrous_clone(backbone, undecimated)
    )
    features = {key: encoder.get_layer(tap).input for key, tap in zip(FEATURES, taps)}
    return {**features, "stage4": encoder.output}


def copy_backbone_weights(model, backbone):
    """Copies the weights of a keras.applications `backbone` into `model`'s encoder layers of the same names."""
    for layer in backbone.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())


def _atrous_clone(backbone, undecimated_pads):
    """clone_function that runs the depthwise convolutions after each pad in `undecimated_pads` at stride 1,
    and dilates every later depthwise convolution by 2 per such block passed."""
    dilation = {}
    current = 1
    for layer in backbone.layers:
        if layer.name in undecimated_pads:
            strided = backbone.get_layer(layer.name.removesuffix("_pad"))
            # The formerly strided convolution keeps the dilation before it, padded symmetrically.
            half = current * (strided.kernel_size[0] // 2)
            dilation[layer.name] = {"padding": ((half, half), (half, half))}
            dilation[strided.name] = {"strides": (1, 1), "dilation_rate": (current, current)}
            current *= 2
        elif isinstance(layer, keras.layers.DepthwiseConv2D) and current > 1 and layer.name not in dilation:
            dilation[layer.name] = {"dilation_rate": (current, current)}

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), **dilation.get(layer.name, {})})

    return clone

"""Pre-activation ResNet18/34/50 encoders built layer for layer as `classification_models` builds them
(same layer names, so its ImageNet weights load by name), optionally dilated for output stride 16 or 8."""

from keras import layers

from segkit.errors import SegkitError

STAGE_UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
BOTTLENECK_DEPTHS = (50,)
ENCODERS = {f"resnet{depth}": depth for depth in STAGE_UNITS}
# Per stage (strides, dilations): a dilated stage keeps its resolution and widens its receptive field instead.
STRIDES_AND_DILATIONS = {
    32: ((1, 2, 2, 2), (1, 1, 1, 1)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
}
# classification_models' batch-norm settings; its ImageNet moving statistics were fitted with this epsilon.
BN_MOMENTUM = 0.99
BN_EPSILON = 2e-5


def resnet_encoder(inputs, depth=34, output_stride=32, name_prefix=""):
    """Runs a ResNet encoder on `inputs` (raw RGB 0..255, float) and returns its feature tensors.

    Returns a dict, each tensor already batch-normalised and ReLU-activated:
    `"stem"` (stride 2, layer `relu0`), `"stage1"` (stride 4, `stage2_unit1_relu1`),
    `"stage2"` (stride 8, `stage3_unit1_relu1`), `"stage3"` (stride 16, `stage4_unit1_relu1`) and
    `"stage4"` (stride 32, `relu1`). In this pre-activation ResNet a stage's activated output is the
    first BN+ReLU of the next stage, so stem..stage3 are exactly the U-Net skips of `segmentation_models`.
    With `output_stride=16` stage 4 is dilated 2 instead of strided (stage3 and stage4 both at stride 16);
    with `output_stride=8` stage 3 is dilated 2 and stage 4 dilated 4 (stage2..stage4 at stride 8).
    Strides above refer to output_stride 32. A dilated encoder computes exactly the features of the
    output-stride-32 one with the same weights, densely: `stage4` at output stride 16, sampled every
    2nd pixel, equals `stage4` at output stride 32.
    """
    if depth not in STAGE_UNITS:
        raise SegkitError(f"ResNet depth {depth!r} is not supported; choose one of {sorted(STAGE_UNITS)}")
    if output_stride not in STRIDES_AND_DILATIONS:
        raise SegkitError(
            f"output_stride {output_stride!r} is not supported; choose one of {sorted(STRIDES_AND_DILATIONS)}"
        )
    unit = _bottleneck_unit if depth in BOTTLENECK_DEPTHS else _basic_unit
    strides, dilations = STRIDES_AND_DILATIONS[output_stride]

    x = layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, scale=False, name=f"{name_prefix}bn_data"
    )(inputs)
    x = _conv(x, 64, 7, f"{name_prefix}conv0", strides=2)
    stem = _bn_relu(x, f"{name_prefix}bn0", f"{name_prefix}relu0")
    x = layers.ZeroPadding2D(1, name=f"{name_prefix}pooling0_pad")(stem)
    x = layers.MaxPooling2D(3, strides=2, name=f"{name_prefix}pooling0")(x)

    features = {"stem": stem}
    for stage, units in enumerate(STAGE_UNITS[depth]):
        filters = 64 * 2**stage
        for index in range(units):
            name = f"{name_prefix}stage{stage + 1}_unit{index + 1}_"
            first = index == 0
            # The first unit's strided-in-the-original conv keeps the previous stage's dilation: with
            # that, a dilated stage computes the undilated network's features densely (the "a trous"
            # identity), so ImageNet weights mean the same thing at every output stride.
            entry_dilation = dilations[max(stage - 1, 0)] if first else dilations[stage]
            x, activated_input = unit(
                x, filters, strides[stage] if first else 1, (entry_dilation, dilations[stage]), first, name
            )
            if first and stage > 0:
                features[f"stage{stage}"] = activated_input
    features["stage4"] = _bn_relu(x, f"{name_prefix}bn1", f"{name_prefix}relu1")
    return features


def _basic_unit(x, filters, strides, dilations, project, name):
    """Two 3x3 convolutions (dilated `dilations[0]`, `dilations[1]`); returns (output, BN+ReLU of the input)."""
    activated = _bn_relu(x, name + "bn1", name + "relu1")
    shortcut = _conv(activated, filters, 1, name + "sc", strides) if project else x
    y = _conv(activated, filters, 3, name + "conv1", strides, dilations[0])
    y = _bn_relu(y, name + "bn2", name + "relu2")
    y = _conv(y, filters, 3, name + "conv2", 1, dilations[1])
    return layers.Add(name=name + "add")([y, shortcut]), activated


def _bottleneck_unit(x, filters, strides, dilations, project, name):
    """1x1 reduce, 3x3 (strided, dilated `dilations[0]`), 1x1 expand to 4x filters;
    returns (output, BN+ReLU of the unit's input)."""
    activated = _bn_relu(x, name + "bn1", name + "relu1")
    shortcut = _conv(activated, filters * 4, 1, name + "sc", strides) if project else x
    y = _conv(activated, filters, 1, name + "conv1")
    y = _bn_relu(y, name + "bn2", name + "relu2")
    y = _conv(y, filters, 3, name + "conv2", strides, dilations[0])
    y = _bn_relu(y, name + "bn3", name + "relu3")
    y = _conv(y, filters * 4, 1, name + "conv3")
    return layers.Add(name=name + "add")([y, shortcut]), activated


def _bn_relu(x, bn_name, relu_name):
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=bn_name)(x)
    return layers.Activation("relu", name=relu_name)(x)


def _conv(x, filters, kernel_size, name, strides=1, dilation=1):
    """Bias-free convolution padded as the reference pads: symmetric `(k - 1) / 2 * dilation` pixels.

    At stride 1 that is exactly `padding="same"`; a strided convolution gets an explicit ZeroPadding2D
    because "same" would pad only the bottom/right of an even-sized input.
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(dilation * (kernel_size - 1) // 2, name=name + "_pad")(x)
        padding = "valid"
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation,
        padding=padding,
        use_bias=False,
        kernel_initializer="he_uniform",
        name=name,
    )(x)

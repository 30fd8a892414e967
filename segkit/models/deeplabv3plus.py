"""DeepLabV3+ (Chen et al., ECCV 2018) on a dilated ResNet or MobileNetV3 encoder with output stride 16.

ASPP (1x1, 3x3 at rates 6/12/18, image pooling; 256 filters each) on stage 4, projected
to 256 channels; the decoder upsamples it to stride 4, joins a 48-channel projection of
stage 1 and refines with two 3x3 convolutions before the classifier. Plain convolutions
stand in for the paper's separable ones, as in most ResNet ports. A MobileNetV3 reaches output
stride 16 with its last strided block undecimated and what follows dilated 2 (see `applications`).
"""

import keras

from segkit.models.encoders import encoder_features
from segkit.models.layers import (
    ResizeToMatch,
    check_input_multiple,
    classifier_to_input_size,
    conv_bn_relu,
)

ASPP_RATES = (6, 12, 18)
ASPP_FILTERS = 256
SKIP_FILTERS = 48
DECODER_FILTERS = 256
OUTPUT_STRIDE = 16


def build_deeplabv3plus(num_classes, input_shape=(None, None, 3), encoder="resnet34", dropout=0.1):
    """DeepLabV3+ logits at input size; sides must be multiples of 16 (`predict` pads to that)."""
    check_input_multiple(input_shape, OUTPUT_STRIDE, "DeepLabV3+")
    inputs = keras.Input(input_shape, name="image")
    features = encoder_features(inputs, encoder, output_stride=OUTPUT_STRIDE)
    x = _aspp(features["stage4"], dropout)
    skip = conv_bn_relu(features["stage1"], SKIP_FILTERS, 1, name="decoder_skip")
    x = ResizeToMatch(name="decoder_upsample")([x, skip])
    x = keras.layers.Concatenate(name="decoder_concat")([x, skip])
    x = conv_bn_relu(x, DECODER_FILTERS, 3, name="decoder_conv1")
    x = conv_bn_relu(x, DECODER_FILTERS, 3, name="decoder_conv2")
    logits = classifier_to_input_size(x, inputs, num_classes, name="logits")
    return keras.Model(inputs, logits, name=f"deeplabv3plus_{encoder}")


def _aspp(features, dropout):
    """Atrous spatial pyramid pooling: parallel 1x1, dilated 3x3 and image-level branches, projected."""
    branches = [conv_bn_relu(features, ASPP_FILTERS, 1, name="aspp_1x1")]
    for rate in ASPP_RATES:
        branches.append(conv_bn_relu(features, ASPP_FILTERS, 3, name=f"aspp_rate{rate}", dilation_rate=rate))
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(features)
    pooled = conv_bn_relu(pooled, ASPP_FILTERS, 1, name="aspp_image")
    branches.append(ResizeToMatch(name="aspp_image_resize")([pooled, features]))
    x = keras.layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, ASPP_FILTERS, 1, name="aspp_projection")
    return keras.layers.Dropout(dropout, name="aspp_dropout")(x)

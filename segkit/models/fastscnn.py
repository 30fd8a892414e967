"""Fast-SCNN (Poudel et al., BMVC 2019, "Fast-SCNN: Fast Semantic Segmentation Network"), built as the paper's Table 1-3.

Learning to downsample (conv 32 s2, DSConv 48 s2, DSConv 64 s2: stride 8), global feature extractor
(inverted-residual bottlenecks 64/96/128, expansion 6, 3 blocks each, strides 2/2/1: stride 32; then a
pyramid pooling module over 1, 2, 3 and 6 bins), feature fusion (the stride-32 branch upsampled x4, a
3x3 depthwise convolution with dilation 4, a 1x1 convolution, added to a 1x1 convolution of the stride-8
branch, ReLU), classifier (two DSConv 128, 1x1 convolution to the classes), bilinear upsampling to the
input size. Every convolution is followed by batch norm; ReLU everywhere except after the bottlenecks'
linear projections and the fusion branches (before their sum). 1.11 M parameters for 19 classes.
Dropout 0.1 before the classifier is the reference implementations' (the paper does not mention it).

With `aux_head=True` two auxiliary heads train beside the main one, as mmsegmentation's Fast-SCNN config
(configs/_base_/models/fast_scnn.py) has them: FCN heads (one 3x3 conv-BN-ReLU of 32 channels, dropout 0.1,
1x1 classifier) on the learning-to-downsample output (stride 8, 64 channels) and on the global feature
extractor's output (stride 32, 128 channels, after pyramid pooling), upsampled to the input size, loss weight
0.4 each. The paper has no auxiliary heads; mmsegmentation trains them with its sigmoid cross-entropy, segkit
with the configured loss.

With `detail_head=True` STDC's detail head (Fan et al., CVPR 2021, "Rethinking BiSeNet For Real-time Semantic
Segmentation": 3x3 conv-BN-ReLU of 64 channels, 1x1 conv to one channel) reads the learning-to-downsample
output (stride 8, where STDC reads its stage 3) and outputs one boundary logit per pixel at the input size,
"detail_logits", trained with `segkit.losses.DetailLoss` (loss weight 1, STDC's) and dropped for inference.
"""

import keras
from keras import layers

from segkit.models.layers import (
    AdaptiveAveragePooling2D,
    ResizeToMatch,
    check_input_multiple,
    classifier_to_input_size,
    conv_bn_relu,
    fcn_head,
)

DOWNSAMPLE_FILTERS = (32, 48, 64)
# (filters, blocks, stride of the first block) of the global feature extractor's three bottleneck stages.
BOTTLENECK_STAGES = ((64, 3, 2), (96, 3, 2), (128, 3, 1))
EXPANSION = 6
PYRAMID_BINS = (1, 2, 3, 6)
FUSION_FILTERS = 128
FUSION_DILATION = 4
CLASSIFIER_FILTERS = 128
INPUT_MULTIPLE = 32
# Width of the auxiliary heads' 3x3 convolution (mmsegmentation's FCNHead channels=32, num_convs=1).
AUX_HEAD_FILTERS = 32
# Width of the detail head's 3x3 convolution (STDC's BiSeNetOutput(..., 64, 1)).
DETAIL_HEAD_FILTERS = 64
DETAIL_OUTPUT = "detail_logits"
# Loss weights of the training outputs: 1 for the main head, 0.4 for each auxiliary head (mmsegmentation), 1 for the
# detail head (STDC).
AUX_LOSS_WEIGHTS = {"logits": 1.0, "aux_lds_logits": 0.4, "aux_gfe_logits": 0.4, DETAIL_OUTPUT: 1.0}


def build_fastscnn(num_classes, input_shape=(None, None, 3), encoder="fastscnn", aux_head=False, detail_head=False,
                   dropout=0.1):
    """Fast-SCNN logits `(B, H, W, num_classes)` float32 at input size; sides must be multiples of 32.

    The input is RGB 0..255, rescaled to -1..1 inside the model. Fast-SCNN is its own encoder (no
    ImageNet weights: the paper trains it from scratch), so `encoder` can only be "fastscnn".

    Args:
        num_classes (int): classes of the logits.
        input_shape (tuple): `(H, W, 3)`; fixed sides must be multiples of 32.
        encoder (str): only "fastscnn".
        aux_head (bool): add mmsegmentation's two auxiliary FCN heads; the model then outputs `{"logits": ...,
            "aux_lds_logits": ..., "aux_gfe_logits": ...}`, for training with `segkit.models.aux_loss_weights(model)`;
            `segkit.models.without_aux(model)` gives the inference model.
        detail_head (bool): add STDC's detail head, output "detail_logits" `(B, H, W, 1)` (boundary logits, for
            `segkit.losses.DetailLoss`); dropped by `without_aux` too.
        dropout (float): dropout rate before each head's classifier (the reference implementations' 0.1).
    """
    check_input_multiple(input_shape, INPUT_MULTIPLE, "Fast-SCNN")
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inputs)
    high = learning_to_downsample(x)
    low = global_feature_extractor(high)
    x = feature_fusion(high, low)
    for index in (1, 2):
        x = ds_conv(x, CLASSIFIER_FILTERS, 1, f"classifier_dsconv{index}")
    x = layers.Dropout(dropout, name="classifier_dropout")(x)
    logits = classifier_to_input_size(x, inputs, num_classes, name="logits")
    outputs = {"logits": logits}
    if aux_head:
        for name, features in (("aux_lds", high), ("aux_gfe", low)):
            outputs[f"{name}_logits"] = fcn_head(features, inputs, num_classes, AUX_HEAD_FILTERS, 1, dropout, name,
                                                 f"{name}_logits")
    if detail_head:
        detail = conv_bn_relu(high, DETAIL_HEAD_FILTERS, 3, "detail_head")
        outputs[DETAIL_OUTPUT] = classifier_to_input_size(detail, inputs, 1, name=DETAIL_OUTPUT)
    if len(outputs) == 1:
        return keras.Model(inputs, logits, name="fastscnn")
    return keras.Model(inputs, outputs, name="fastscnn_aux")


def encoder_layer_names() -> frozenset:
    """Names of the layers with weights that count as Fast-SCNN's encoder: learning to downsample and the global
    feature extractor (pyramid pooling included); feature fusion and classifier are its decoder."""
    inputs = keras.Input((None, None, 3))
    encoder = keras.Model(inputs, global_feature_extractor(learning_to_downsample(inputs)))
    return frozenset(layer.name for layer in encoder.layers if layer.weights)


def learning_to_downsample(x):
    """Conv 3x3/2 then two depthwise-separable 3x3/2 convolutions: the stride-8 features (64 channels)."""
    first, *rest = DOWNSAMPLE_FILTERS
    x = conv_bn_relu(x, first, 3, "lds_conv", strides=2)
    for index, filters in enumerate(rest, start=1):
        x = ds_conv(x, filters, 2, f"lds_dsconv{index}")
    return x


def global_feature_extractor(x):
    """Bottleneck stages to stride 32 (128 channels) and the pyramid pooling module."""
    for stage, (filters, blocks, strides) in enumerate(BOTTLENECK_STAGES, start=1):
        for block in range(blocks):
            x = bottleneck(x, filters, strides if block == 0 else 1, f"gfe_bottleneck{stage}_{block + 1}")
    return pyramid_pooling(x)


def feature_fusion(high, low):
    """Adds the upsampled, depthwise-filtered stride-32 branch to the stride-8 branch, each 1x1-projected."""
    low = ResizeToMatch(name="ffm_upsample")([low, high])
    low = layers.DepthwiseConv2D(
        3, padding="same", dilation_rate=FUSION_DILATION, use_bias=False, name="ffm_low_dwconv"
    )(low)
    low = _bn(low, "ffm_low_dwconv")
    low = layers.Activation("relu", name="ffm_low_dwconv_relu")(low)
    low = _bn(_pointwise(low, FUSION_FILTERS, "ffm_low_conv"), "ffm_low_conv")
    high = _bn(_pointwise(high, FUSION_FILTERS, "ffm_high_conv"), "ffm_high_conv")
    x = layers.Add(name="ffm_add")([high, low])
    return layers.Activation("relu", name="ffm_relu")(x)


def pyramid_pooling(x):
    """PSPNet's module: x joined with its average over 1, 2, 3, 6 bins (C/4 channels each), fused by a 1x1 conv."""
    channels = x.shape[-1]
    branches = [x]
    for bins in PYRAMID_BINS:
        pooled = AdaptiveAveragePooling2D(bins, name=f"ppm_bins{bins}_pool")(x)
        pooled = conv_bn_relu(pooled, channels // len(PYRAMID_BINS), 1, f"ppm_bins{bins}")
        branches.append(ResizeToMatch(name=f"ppm_bins{bins}_resize")([pooled, x]))
    x = layers.Concatenate(name="ppm_concat")(branches)
    return conv_bn_relu(x, channels, 1, "ppm_out")


def bottleneck(x, filters, strides, name):
    """MobileNetV2's inverted residual: 1x1 expand x6, 3x3 depthwise (strided), linear 1x1 projection;
    the input is added back when the shape allows it (stride 1, same channels)."""
    y = conv_bn_relu(x, x.shape[-1] * EXPANSION, 1, f"{name}_expand")
    y = _depthwise_bn_relu(y, strides, f"{name}_dwconv")
    y = _bn(_pointwise(y, filters, f"{name}_project"), f"{name}_project")
    if strides == 1 and x.shape[-1] == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def ds_conv(x, filters, strides, name):
    """Depthwise-separable convolution: 3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU."""
    x = _depthwise_bn_relu(x, strides, f"{name}_dw")
    x = _bn(_pointwise(x, filters, f"{name}_pw"), f"{name}_pw")
    return layers.Activation("relu", name=f"{name}_pw_relu")(x)


def _depthwise_bn_relu(x, strides, name):
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    return layers.Activation("relu", name=f"{name}_relu")(_bn(x, name))


def _pointwise(x, filters, name):
    return layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_uniform", name=f"{name}_conv")(x)


def _bn(x, name):
    return layers.BatchNormalization(name=f"{name}_bn")(x)

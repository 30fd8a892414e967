"""BiSeNetV2 (Yu et al., IJCV 2021, "BiSeNet V2: Bilateral Network with Guided Aggregation"), built as the paper's Table 1.

Detail branch: three stages of 3x3 conv-BN-ReLU (64 s2 + 64; 64 s2 + 64 x2; 128 s2 + 128 x2): stride 8, 128 channels.
Semantic branch: the stem block (conv 16 s2; a 1x1/3x3-s2 branch beside a 3x3/2 max pool, concatenated, fused by a
3x3 conv: stride 4), gather-and-expansion layers with expansion 6 (stage 3: GE s2 + GE to 32; stage 4: GE s2 + GE
to 64; stage 5: GE s2 + 3 GE to 128: stride 32) and the context embedding block (global average pool, BN, 1x1
conv added back to the map, 3x3 conv). Bilateral guided aggregation: each branch gated by a sigmoid of the other
at its own resolution, the two summed at stride 8 and fused by a 3x3 conv. Segmentation head: 3x3 conv to 1024,
1x1 to the classes, bilinear upsampling to the input size. Where the paper's figures leave a detail open (ReLUs
inside GE layers, BN after the CE block's convolutions, biases, the heads' widths) this follows mmsegmentation's
implementation, whose from-scratch Cityscapes runs are the reference figures. With `aux_head=True` four booster
heads (FCN heads on the stem and stages 3, 4 and 5, loss weight 1 each) are added for training.
"""

import keras
from keras import layers

from segkit.models.layers import ResizeToMatch, check_input_multiple, conv_bn_relu, fcn_head

# (filters, 3x3 convolutions) of each detail stage; the first convolution of a stage has stride 2.
DETAIL_STAGES = ((64, 2), (64, 3), (128, 3))
STEM_FILTERS = 16
# (filters, GE layers) of semantic stages 3, 4, 5; the first GE layer of a stage has stride 2.
SEMANTIC_STAGES = ((32, 2), (64, 2), (128, 4))
EXPANSION = 6
HEAD_FILTERS = 1024
# Booster heads: (semantic feature they read, width of their two 3x3 convolutions), as mmsegmentation's config.
BOOSTERS = (("stem", 16), ("stage3", 64), ("stage4", 256), ("stage5", 1024))
# Loss weights for a model built with aux_head=True: the main head and every booster head count 1 (mmsegmentation).
AUX_LOSS_WEIGHTS = {"logits": 1.0, **{f"aux_{stage}_logits": 1.0 for stage, _ in BOOSTERS}}
INPUT_MULTIPLE = 32


def build_bisenetv2(num_classes, input_shape=(None, None, 3), encoder="bisenetv2", aux_head=False, dropout=0.1):
    """BiSeNetV2 logits `(B, H, W, num_classes)` float32 at input size, from RGB 0..255 (rescaled to -1..1 inside).

    Args:
        num_classes (int): classes of the logits.
        input_shape (tuple): `(H, W, 3)`; fixed sides must be multiples of 32.
        encoder (str): only "bisenetv2": the model is its own encoder and trains from scratch.
        aux_head (bool): add the four booster heads; the model then outputs `{"logits": ..., "aux_stem_logits": ...,
            "aux_stage3_logits": ..., "aux_stage4_logits": ..., "aux_stage5_logits": ...}`, for training with
            `loss_weights=AUX_LOSS_WEIGHTS`; `segkit.models.without_aux(model)` gives the inference model.
        dropout (float): dropout rate before each head's classifier (mmsegmentation's 0.1).

    Example:
        >>> model = build_bisenetv2(19, input_shape=(256, 512, 3))
        >>> model.output_shape
        (None, 256, 512, 19)
    """
    check_input_multiple(input_shape, INPUT_MULTIPLE, "BiSeNetV2")
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inputs)
    detail = detail_branch(x)
    semantic = semantic_branch(x)
    x = bilateral_guided_aggregation(detail, semantic["context"])
    logits = fcn_head(x, inputs, num_classes, HEAD_FILTERS, 1, dropout, "head", "logits")
    if not aux_head:
        return keras.Model(inputs, logits, name="bisenetv2")
    outputs = {"logits": logits}
    for stage, filters in BOOSTERS:
        name = f"aux_{stage}"
        outputs[f"{name}_logits"] = fcn_head(semantic[stage], inputs, num_classes, filters, 2, dropout, name, f"{name}_logits")
    return keras.Model(inputs, outputs, name="bisenetv2_aux")


def encoder_layer_names() -> frozenset:
    """Names of the layers with weights that count as BiSeNetV2's encoder: the detail and semantic branches
    (context embedding included); the aggregation layer and the heads are its decoder."""
    inputs = keras.Input((None, None, 3))
    encoder = keras.Model(inputs, [detail_branch(inputs), semantic_branch(inputs)["context"]])
    return frozenset(layer.name for layer in encoder.layers if layer.weights)


def detail_branch(x):
    """Wide and shallow: 3x3 conv-BN-ReLU stages to stride 8, 128 channels."""
    for stage, (filters, convs) in enumerate(DETAIL_STAGES, start=1):
        for index in range(convs):
            x = conv_bn_relu(x, filters, 3, f"detail{stage}_{index + 1}", strides=2 if index == 0 else 1)
    return x


def semantic_branch(x):
    """Narrow and deep: {"stem", "stage3", "stage4", "stage5"} features (strides 4 to 32) and "context", the
    context embedding of stage 5 that the aggregation layer reads."""
    features = {"stem": stem_block(x)}
    x = features["stem"]
    for stage, (filters, count) in enumerate(SEMANTIC_STAGES, start=3):
        for index in range(count):
            x = gather_expansion(x, filters, 2 if index == 0 else 1, f"ge{stage}_{index + 1}")
        features[f"stage{stage}"] = x
    features["context"] = context_embedding(x)
    return features


def stem_block(x):
    """Conv 3x3/2, then a 1x1 + 3x3/2 conv branch beside a 3x3/2 max pool, concatenated and fused by a 3x3 conv."""
    x = conv_bn_relu(x, STEM_FILTERS, 3, "stem_conv", strides=2)
    left = conv_bn_relu(x, STEM_FILTERS // 2, 1, "stem_left1")
    left = conv_bn_relu(left, STEM_FILTERS, 3, "stem_left2", strides=2)
    right = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    x = layers.Concatenate(name="stem_concat")([left, right])
    return conv_bn_relu(x, STEM_FILTERS, 3, "stem_fuse")


def gather_expansion(x, filters, strides, name):
    """GE layer: 3x3 conv (gather), 3x3 depthwise expanding x6 (two depthwise convs, the first strided, when
    strides=2), linear 1x1 projection; added to the input (stride 1) or to a depthwise-separable projection
    of it (stride 2), then ReLU."""
    channels = x.shape[-1]
    y = conv_bn_relu(x, channels, 3, f"{name}_gather")
    y = _bn(_depthwise(y, strides, f"{name}_expand", depth_multiplier=EXPANSION), f"{name}_expand")
    if strides == 2:
        y = _bn(_depthwise(y, 1, f"{name}_dwconv"), f"{name}_dwconv")
    y = layers.Activation("relu", name=f"{name}_expand_relu")(y)
    y = _bn(_conv(y, filters, 1, f"{name}_project"), f"{name}_project")
    shortcut = x
    if strides == 2:
        shortcut = _bn(_depthwise(x, strides, f"{name}_shortcut_dw"), f"{name}_shortcut_dw")
        shortcut = _bn(_conv(shortcut, filters, 1, f"{name}_shortcut_pw"), f"{name}_shortcut_pw")
    x = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_relu")(x)


def context_embedding(x):
    """CE block: the global average (batch-normed, 1x1 conv-BN-ReLU) added to every position, then a 3x3 conv."""
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="ce_pool")(x)
    pooled = layers.BatchNormalization(name="ce_pool_bn")(pooled)
    pooled = conv_bn_relu(pooled, x.shape[-1], 1, "ce_gap")
    x = layers.Add(name="ce_add")([x, pooled])  # broadcast over H and W
    return conv_bn_relu(x, x.shape[-1], 3, "ce_last")


def bilateral_guided_aggregation(detail, semantic):
    """BGA layer: at stride 8 the detail features (depthwise-separable) gated by the upsampled sigmoid of the
    semantic features (3x3 conv); at stride 32 the downsampled detail features gated by the sigmoid of the
    semantic features (depthwise-separable); the second upsampled to stride 8, summed, fused by a 3x3 conv."""
    channels = detail.shape[-1]
    detail_keep = _conv(_bn(_depthwise(detail, 1, "bga_detail_dw"), "bga_detail_dw"), channels, 1, "bga_detail_pw", bias=True)
    detail_down = _bn(_conv(detail, channels, 3, "bga_detail_down", strides=2), "bga_detail_down")
    # Keras' "same" average excludes the padding where PyTorch's AvgPool2d(padding=1) counts it: border pixels only.
    detail_down = layers.AveragePooling2D(3, strides=2, padding="same", name="bga_detail_pool")(detail_down)
    semantic_up = _bn(_conv(semantic, channels, 3, "bga_semantic_conv"), "bga_semantic_conv")
    semantic_up = ResizeToMatch(name="bga_semantic_up")([semantic_up, detail])
    semantic_keep = _conv(_bn(_depthwise(semantic, 1, "bga_semantic_dw"), "bga_semantic_dw"), channels, 1, "bga_semantic_pw", bias=True)
    high = layers.Multiply(name="bga_detail_gated")([detail_keep, layers.Activation("sigmoid", name="bga_semantic_up_sigmoid")(semantic_up)])
    low = layers.Multiply(name="bga_semantic_gated")([detail_down, layers.Activation("sigmoid", name="bga_semantic_sigmoid")(semantic_keep)])
    low = ResizeToMatch(name="bga_semantic_gated_up")([low, detail])
    x = layers.Add(name="bga_add")([high, low])
    return conv_bn_relu(x, channels, 3, "bga_fuse")


def _depthwise(x, strides, name, depth_multiplier=1):
    return layers.DepthwiseConv2D(3, strides=strides, padding="same", depth_multiplier=depth_multiplier,
                                  use_bias=False, name=f"{name}_conv")(x)


def _conv(x, filters, kernel_size, name, strides=1, bias=False):
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=bias,
                         kernel_initializer="he_uniform", name=f"{name}_conv")(x)


def _bn(x, name):
    return layers.BatchNormalization(name=f"{name}_bn")(x)

"""PSPNet (Zhao et al., CVPR 2017) in two variants: the paper's, and the light one `segmentation_models` users run.

`build_pspnet` follows the paper: all four ResNet stages run, stages 3 and 4 dilated (2 and 4)
instead of strided, so the pyramid sees the deepest features at output stride 8.
`build_pspnet_sm` is `segmentation_models.PSPNet(downsample_factor=8)`: the encoder is cut after
its second stage (stride 8), each pyramid branch has 512 filters, a 1x1 "aggregation" block and a
3x3 classifier follow; with the same layer names, its weights load by name. On ResNet34 with 19 classes
it has 2.8 M parameters and 1.7 GFLOPs per 128x128 image, the dilated model 26.3 M and 13.7.
Both pool adaptively, so any side that is a multiple of 8 works (360x480 gives 45x60 features,
pooled to 1, 2, 3 and 6 bins like PyTorch's `AdaptiveAvgPool2d`); `segmentation_models` pools
with fixed windows and needs multiples of 48, where the two poolings agree.
"""

import keras

from segkit.models.encoders import encoder_features
from segkit.models.layers import (
    AdaptiveAveragePooling2D,
    ResizeToMatch,
    adaptive_bin_bounds,
    check_input_multiple,
    classifier_to_input_size,
    conv_bn_relu,
)

PYRAMID_BINS = (1, 2, 3, 6)
HEAD_FILTERS = 512
SM_FILTERS = 512  # segmentation_models' psp_conv_filters: every pyramid branch and the aggregation block
AUX_FILTERS = 256
OUTPUT_STRIDE = 8
# Loss weights for a model built with aux_head=True (the paper's 0.4 for the stage-3 head).
AUX_LOSS_WEIGHTS = {"logits": 1.0, "aux_logits": 0.4}


def build_pspnet(num_classes, input_shape=(None, None, 3), encoder="resnet34", aux_head=False, dropout=0.1):
    """PSPNet: dilated ResNet (output stride 8), pyramid pooling module, logits at input size.

    With `aux_head=True` the model outputs `{"logits": ..., "aux_logits": ...}`, the second
    from a head on stage 3, for training with `loss_weights=AUX_LOSS_WEIGHTS`;
    `segkit.models.without_aux(model)` gives the single-output inference model.
    """
    check_input_multiple(input_shape, OUTPUT_STRIDE, "PSPNet")
    inputs = keras.Input(input_shape, name="image")
    features = encoder_features(inputs, encoder, output_stride=OUTPUT_STRIDE)
    x = _pyramid_pooling(features["stage4"], features["stage4"].shape[-1] // len(PYRAMID_BINS), "psp_bins")
    x = conv_bn_relu(x, HEAD_FILTERS, 3, name="psp_head")
    x = keras.layers.Dropout(dropout, name="psp_head_dropout")(x)
    logits = classifier_to_input_size(x, inputs, num_classes, name="logits")
    name = f"pspnet_{encoder}"
    if not aux_head:
        return keras.Model(inputs, logits, name=name)
    aux = conv_bn_relu(features["stage3"], AUX_FILTERS, 3, name="aux_head")
    aux = keras.layers.Dropout(dropout, name="aux_head_dropout")(aux)
    aux_logits = classifier_to_input_size(aux, inputs, num_classes, name="aux_logits")
    return keras.Model(inputs, {"logits": logits, "aux_logits": aux_logits}, name=f"{name}_aux")


def build_pspnet_sm(num_classes, input_shape=(None, None, 3), encoder="resnet34"):
    """The PSPNet of `segmentation_models` (`downsample_factor=8`): pyramid on the encoder's stride-8 features.

    Args:
        num_classes: classes of the logits.
        input_shape: `(H, W, 3)`; fixed sides must be multiples of 8.
        encoder: a ResNet name ("resnet34"); the encoder runs up to its stride-8 feature map only.

    Example:
        >>> model = build_pspnet_sm(19, input_shape=(128, 128, 3))
        >>> model.count_params()  # sm.PSPNet("resnet34", classes=19, downsample_factor=8) has the same
    """
    check_input_multiple(input_shape, OUTPUT_STRIDE, "PSPNet")
    inputs = keras.Input(input_shape, name="image")
    features = encoder_features(inputs, encoder, output_stride=32)["stage2"]
    x = _pyramid_pooling(features, SM_FILTERS, "psp_level")
    x = conv_bn_relu(x, SM_FILTERS, 1, name="aggregation")
    x = keras.layers.Conv2D(num_classes, 3, padding="same", name="final_conv")(x)
    logits = ResizeToMatch(name="logits", dtype="float32")([x, inputs])
    return keras.Model(inputs, logits, name=f"pspnet_sm_{encoder}")


def _pyramid_pooling(features, branch_filters, prefix):
    """Concatenates `features` with its average over 1, 2, 3 and 6 bins, each reduced to `branch_filters` channels."""
    branches = [features]
    for bins in PYRAMID_BINS:
        x = AdaptiveAveragePooling2D(bins, name=f"{prefix}{bins}_pool")(features)
        x = conv_bn_relu(x, branch_filters, 1, name=f"{prefix}{bins}")
        branches.append(ResizeToMatch(name=f"{prefix}{bins}_resize")([x, features]))
    return keras.layers.Concatenate(name="psp_concat")(branches)


def pyramid_views(model, image) -> dict:
    """What the pyramid pooling module sees for one image, for drawing (segkit.viz.plot_pyramid_bins).

    Returns {"features": the pooled map averaged over channels (h, w), "channels": its channel count,
    "stage": the encoder stage it comes from (4 in the paper's PSPNet, 2 in the segmentation_models one),
    "pooled": {bins: (bins x bins average of that map, row bin starts, column bin starts)}}.
    """
    names = {layer.name for layer in model.layers}
    prefix, stage = ("psp_bins", 4) if f"psp_bins{PYRAMID_BINS[0]}_pool" in names else ("psp_level", 2)
    cut = keras.Model(model.input, model.get_layer(f"{prefix}{PYRAMID_BINS[0]}_pool").input)
    features = keras.ops.convert_to_numpy(cut(image[None].astype("float32"))).astype("float32")  # bfloat16 models too
    mean = features.mean(axis=-1, keepdims=True)
    height, width = mean.shape[1:3]
    pooled = {}
    for bins in PYRAMID_BINS:
        grid = keras.ops.convert_to_numpy(AdaptiveAveragePooling2D(bins)(mean))[0, ..., 0]
        pooled[bins] = (grid, [s for s, _ in adaptive_bin_bounds(height, bins)], [s for s, _ in adaptive_bin_bounds(width, bins)])
    return {"features": mean[0, ..., 0], "channels": int(features.shape[-1]), "stage": stage, "pooled": pooled}

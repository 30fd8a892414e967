"""PSPNet as in the paper (Zhao et al., CVPR 2017) on a dilated ResNet encoder.

Unlike `segmentation_models.PSPNet`, which pools the stride-8 output of the first two
ResNet stages with fixed-size windows (so sides must be multiples of 48 and the ResNet34
model has 2.8 M parameters), segkit follows the paper: all four stages run, stages 3 and 4
dilated (2 and 4) instead of strided, so the pyramid sees the deepest features at
output stride 8; the pyramid uses adaptive pooling, so any side that is a multiple of 8
works (360x480 gives 45x60 features, pooled to 1, 2, 3 and 6 bins like PyTorch's
`AdaptiveAvgPool2d`).
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
    x = _pyramid_pooling(features["stage4"])
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


def _pyramid_pooling(features):
    """Concatenates `features` with its average over 1, 2, 3 and 6 bins (each reduced to C/4 channels)."""
    branch_filters = features.shape[-1] // len(PYRAMID_BINS)
    branches = [features]
    for bins in PYRAMID_BINS:
        x = AdaptiveAveragePooling2D(bins, name=f"psp_bins{bins}_pool")(features)
        x = conv_bn_relu(x, branch_filters, 1, name=f"psp_bins{bins}")
        branches.append(ResizeToMatch(name=f"psp_bins{bins}_resize")([x, features]))
    return keras.layers.Concatenate(name="psp_concat")(branches)


def pyramid_views(model, image) -> dict:
    """What the pyramid pooling module sees for one image, for drawing (segkit.viz.plot_pyramid_bins).

    Returns {"features": the stage-4 map averaged over channels (h, w), "channels": its channel count,
    "pooled": {bins: (bins x bins average of that map, row bin starts, column bin starts)}}.
    """
    cut = keras.Model(model.input, model.get_layer(f"psp_bins{PYRAMID_BINS[0]}_pool").input)
    features = keras.ops.convert_to_numpy(cut(image[None].astype("float32")))
    mean = features.mean(axis=-1, keepdims=True)
    height, width = mean.shape[1:3]
    pooled = {}
    for bins in PYRAMID_BINS:
        grid = keras.ops.convert_to_numpy(AdaptiveAveragePooling2D(bins)(mean))[0, ..., 0]
        pooled[bins] = (grid, [s for s, _ in adaptive_bin_bounds(height, bins)], [s for s, _ in adaptive_bin_bounds(width, bins)])
    return {"features": mean[0, ..., 0], "channels": int(features.shape[-1]), "pooled": pooled}

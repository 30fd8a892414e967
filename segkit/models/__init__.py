"""Segmentation models (U-Net, PSPNet, DeepLabV3+ on ResNet or MobileNetV3 encoders; Fast-SCNN, BiSeNetV2), built by name: `build("unet", ...)`."""

import inspect

from segkit.errors import SegkitError
from segkit.models.deeplabv3plus import build_deeplabv3plus
from segkit.models import bisenetv2, deeplabv3plus, encoders, fastscnn, pspnet, unet
from segkit.models.bisenetv2 import build_bisenetv2
from segkit.models.encoders import ENCODERS
from segkit.models.fastscnn import DETAIL_OUTPUT, build_fastscnn
from segkit.models.inference import check_window, predict_probabilities, required_multiple, without_aux
from segkit.models.pspnet import AUX_LOSS_WEIGHTS, build_pspnet, build_pspnet_sm
from segkit.models.resnet import resnet_encoder
from segkit.models.stats import model_stats
from segkit.models.strided import strided_logits, subsample_masks
from segkit.models.unet import build_unet
from segkit.models.weights import load_encoder_weights

# name -> builder(num_classes, input_shape=..., encoder=..., **options) returning a keras.Model of logits.
MODELS = {
    "unet": build_unet,
    "pspnet": build_pspnet,
    "pspnet_sm": build_pspnet_sm,
    "deeplabv3plus": build_deeplabv3plus,
    "fastscnn": build_fastscnn,
    "bisenetv2": build_bisenetv2,
}
# Models that are their own encoder (and train from scratch); the others take any of ENCODERS.
OWN_ENCODER = {"fastscnn": "fastscnn", "bisenetv2": "bisenetv2"}
DEFAULT_ENCODER = "resnet34"


def available():
    """Names accepted by `build`, sorted."""
    return sorted(MODELS)


def encoders_for(name):
    """The encoder names model `name` accepts."""
    return (OWN_ENCODER[name],) if name in OWN_ENCODER else tuple(ENCODERS)


def default_encoder(name):
    """The encoder model `name` is built on when none is named."""
    return OWN_ENCODER.get(name, DEFAULT_ENCODER)


def encoder_layer_names(name, encoder=None):
    """Names of the layers with weights that form the encoder of model `name` on `encoder` (None: its default):
    the ResNet or MobileNetV3 (a model that cuts its encoder short holds a subset of them), or, for Fast-SCNN,
    which has no separate encoder, its learning-to-downsample and global feature extractor (for BiSeNetV2 its
    detail and semantic branches).

    Args:
        name (str): a model name of `available()`.
        encoder (str | None): an encoder of `encoders_for(name)`.
    """
    encoder = default_encoder(name) if encoder is None else encoder
    own = {"fastscnn": fastscnn.encoder_layer_names, "bisenetv2": bisenetv2.encoder_layer_names}
    return own[name]() if name in own else encoders.encoder_layer_names(encoder)


def label(name, encoder=None):
    """How tables name model `name` on `encoder`: "unet-resnet34"; a model that is its own encoder by its name alone."""
    encoder = default_encoder(name) if encoder is None else encoder
    return name if OWN_ENCODER.get(name) == encoder else f"{name}-{encoder}"


def aux_loss_weights(model):
    """The loss weight of each output of a model built with `aux_head=True` (or Fast-SCNN's `detail_head=True`):
    1 for "logits", 0.4 for PSPNet's "aux_logits", 1 for each of BiSeNetV2's booster heads, 0.4 for each of
    Fast-SCNN's two auxiliary heads, 1 for its "detail_logits" (`DETAIL_OUTPUT`).

    Args:
        model (keras.Model): a model whose output is a dict of logits.
    """
    weights = {**pspnet.AUX_LOSS_WEIGHTS, **bisenetv2.AUX_LOSS_WEIGHTS, **fastscnn.AUX_LOSS_WEIGHTS}
    return {name: weights[name] for name in model.output}


def input_multiple(name):
    """The number every fixed input side of model `name` must be a multiple of (its builder refuses others).

    Args:
        name (str): a model name of `available()`.
    """
    return {"unet": unet.INPUT_MULTIPLE, "pspnet": pspnet.OUTPUT_STRIDE, "pspnet_sm": pspnet.OUTPUT_STRIDE,
            "deeplabv3plus": deeplabv3plus.OUTPUT_STRIDE, "fastscnn": fastscnn.INPUT_MULTIPLE,
            "bisenetv2": bisenetv2.INPUT_MULTIPLE}[name]


def build(name, encoder=None, *, num_classes, input_shape, encoder_weights=None, **options):
    """Builds model `name` on `encoder` (None: the model's default, see `encoders_for`); it maps
    float32 RGB 0..255 images `(B, H, W, 3)` to float32 logits `(B, H, W, num_classes)`.

    `encoder_weights`: None (random), "imagenet", an http(s) URL or a local h5 path (see `load_encoder_weights`).
    `options` go to the model's builder (e.g. `decoder_filters` for "unet").
    """
    if name not in MODELS:
        raise SegkitError(f"unknown model {name!r}; available: {', '.join(available())}")
    encoder = default_encoder(name) if encoder is None else encoder
    if encoder not in encoders_for(name):
        raise SegkitError(f"unknown encoder {encoder!r} for {name}; available: {', '.join(encoders_for(name))}")
    if encoder_weights is not None and name in OWN_ENCODER:
        raise SegkitError(f"{name} has no pretrained encoder weights (it trains from scratch); got {encoder_weights!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SegkitError(f"num_classes must be a positive integer, got {num_classes!r}")
    input_shape = _checked_input_shape(input_shape)
    builder = MODELS[name]
    accepted = set(inspect.signature(builder).parameters) - {"num_classes", "input_shape", "encoder"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise SegkitError(f"{name} has no option {', '.join(unknown)}; its options: {', '.join(sorted(accepted))}")
    model = builder(num_classes, input_shape=input_shape, encoder=encoder, **options)
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights, encoder)
    return model


def _checked_input_shape(input_shape):
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    valid = (
        shape is not None
        and len(shape) == 3
        and shape[2] == 3
        and all(side is None or (isinstance(side, int) and side > 0) for side in shape[:2])
    )
    if not valid:
        raise SegkitError(f"input_shape must be (height, width, 3) with positive or None sides, got {input_shape!r}")
    return shape


__all__ = [
    "AUX_LOSS_WEIGHTS",
    "DETAIL_OUTPUT",
    "MODELS",
    "available",
    "aux_loss_weights",
    "build",
    "check_window",
    "default_encoder",
    "encoder_layer_names",
    "encoders_for",
    "input_multiple",
    "load_encoder_weights",
    "model_stats",
    "predict_probabilities",
    "required_multiple",
    "resnet_encoder",
    "strided_logits",
    "subsample_masks",
    "without_aux",
]

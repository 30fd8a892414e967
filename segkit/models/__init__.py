"""Segmentation models (U-Net, PSPNet, DeepLabV3+) on ResNet encoders, built by name: `build("unet", ...)`."""

import inspect

from segkit.errors import SegkitError
from segkit.models.deeplabv3plus import build_deeplabv3plus
from segkit.models.inference import predict_probabilities, required_multiple, without_aux
from segkit.models.pspnet import AUX_LOSS_WEIGHTS, build_pspnet
from segkit.models.resnet import ENCODERS, resnet_encoder
from segkit.models.stats import model_stats
from segkit.models.unet import build_unet
from segkit.models.weights import load_encoder_weights

# name -> builder(num_classes, input_shape=..., encoder="resnet34", **options) returning a keras.Model of logits.
MODELS = {
    "unet": build_unet,
    "pspnet": build_pspnet,
    "deeplabv3plus": build_deeplabv3plus,
}


def available():
    """Names accepted by `build`, sorted."""
    return sorted(MODELS)


def build(name, encoder="resnet34", *, num_classes, input_shape, encoder_weights=None, **options):
    """Builds model `name` on a ResNet `encoder`; it maps float32 RGB 0..255 images `(B, H, W, 3)` to
    float32 logits `(B, H, W, num_classes)`.

    `encoder_weights`: None (random), "imagenet", an http(s) URL or a local h5 path (see `load_encoder_weights`).
    `options` go to the model's builder (e.g. `decoder_filters` for "unet").
    """
    if name not in MODELS:
        raise SegkitError(f"unknown model {name!r}; available: {', '.join(available())}")
    if encoder not in ENCODERS:
        raise SegkitError(f"unknown encoder {encoder!r}; available: {', '.join(ENCODERS)}")
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
    "MODELS",
    "available",
    "build",
    "load_encoder_weights",
    "model_stats",
    "predict_probabilities",
    "required_multiple",
    "resnet_encoder",
    "without_aux",
]

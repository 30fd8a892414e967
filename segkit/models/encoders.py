"""Encoders by name for the U-Net, PSPNet and DeepLabV3+ heads: segkit's ResNets and keras.applications' MobileNetV3s."""

import keras

from segkit.errors import SegkitError
from segkit.models.applications import APPLICATIONS, application_encoder
from segkit.models.resnet import ENCODERS as RESNETS
from segkit.models.resnet import resnet_encoder

ENCODERS = (*RESNETS, *APPLICATIONS)


def encoder_features(inputs, encoder, output_stride):
    """Feature dict {"stem", "stage1", ..., "stage4"} of the encoder named like "resnet34" or
    "mobilenetv3_large" at `output_stride` (see `resnet_encoder` and `application_encoder`)."""
    if encoder in RESNETS:
        return resnet_encoder(inputs, depth=RESNETS[encoder], output_stride=output_stride)
    if encoder in APPLICATIONS:
        return application_encoder(inputs, encoder, output_stride=output_stride)
    raise SegkitError(f"unknown encoder {encoder!r}; available: {', '.join(ENCODERS)}")


def encoder_layer_names(encoder) -> frozenset:
    """Names of the layers with weights of an encoder: a model built on it has its layers under these names (at every
    output stride, the dilated ones being the same layers), so they load and freeze by name.

    Args:
        encoder (str): one of ENCODERS, e.g. "resnet34".
    """
    inputs = keras.Input((None, None, 3))
    features = encoder_features(inputs, encoder, output_stride=32)
    return frozenset(layer.name for layer in keras.Model(inputs, features["stage4"]).layers if layer.weights)

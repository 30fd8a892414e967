"""Encoders by name for the U-Net, PSPNet and DeepLabV3+ heads: segkit's ResNets and keras.applications' MobileNetV3s."""

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

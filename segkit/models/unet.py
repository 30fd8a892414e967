"""U-Net on a ResNet encoder, layer for layer the `segmentation_models.Unet` decoder, returning logits."""

import keras
from keras import layers

from segkit.errors import SegkitError
from segkit.models.resnet import ENCODERS, resnet_encoder

DECODER_FILTERS = (256, 128, 64, 32, 16)
# Five x2 upsamplings undo the encoder's stride 32; the skips are concatenated at strides 16, 8, 4 and 2.
INPUT_MULTIPLE = 32


def build_unet(num_classes, input_shape=(None, None, 3), encoder="resnet34", decoder_filters=DECODER_FILTERS):
    """U-Net: ResNet encoder, then per decoder stage x2 nearest upsampling, skip concatenation and
    two 3x3 conv + BN + ReLU; a 3x3 classifier gives `(B, H, W, num_classes)` float32 logits.

    `encoder` is one of `ENCODERS` ("resnet18", "resnet34", "resnet50"). Fixed spatial sides must be
    multiples of 32; `None` sides give a fully convolutional model that takes any multiple of 32
    (`segkit.models.predict` pads other sizes).
    """
    for side in input_shape[:2]:
        if side is not None and side % INPUT_MULTIPLE:
            raise SegkitError(
                f"U-Net input side {side} in input_shape {tuple(input_shape)} is not a multiple of "
                f"{INPUT_MULTIPLE}; pad or resize the images to a multiple of {INPUT_MULTIPLE}"
            )
    inputs = keras.Input(input_shape, name="image")
    features = resnet_encoder(inputs, depth=ENCODERS[encoder])
    skips = [features["stage3"], features["stage2"], features["stage1"], features["stem"]]

    x = features["stage4"]
    for stage, filters in enumerate(decoder_filters):
        x = layers.UpSampling2D(2, name=f"decoder_stage{stage}_upsampling")(x)
        if stage < len(skips):
            x = layers.Concatenate(name=f"decoder_stage{stage}_concat")([x, skips[stage]])
        x = _conv_bn_relu(x, filters, f"decoder_stage{stage}a")
        x = _conv_bn_relu(x, filters, f"decoder_stage{stage}b")

    x = layers.Conv2D(num_classes, 3, padding="same", name="final_conv")(x)
    # float32 so that logits (and the losses on them) stay exact under mixed precision.
    logits = layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=f"unet_{encoder}")


def _conv_bn_relu(x, filters, name):
    x = layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer="he_uniform", name=name + "_conv"
    )(x)
    x = layers.BatchNormalization(name=name + "_bn")(x)
    return layers.Activation("relu", name=name + "_relu")(x)

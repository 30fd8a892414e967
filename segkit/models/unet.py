"""U-Net on a ResNet or MobileNetV3 encoder, layer for layer the `segmentation_models.Unet` decoder, returning logits."""

import keras
from keras import layers

from segkit.models.encoders import encoder_features
from segkit.models.layers import check_input_multiple, conv_bn_relu

DECODER_FILTERS = (256, 128, 64, 32, 16)
# Five x2 upsamplings undo the encoder's stride 32; the skips are concatenated at strides 16, 8, 4 and 2.
INPUT_MULTIPLE = 32


def build_unet(num_classes, input_shape=(None, None, 3), encoder="resnet34", decoder_filters=DECODER_FILTERS):
    """U-Net: an encoder, then per decoder stage x2 nearest upsampling, skip concatenation and
    two 3x3 conv + BN + ReLU; a 3x3 classifier gives `(B, H, W, num_classes)` float32 logits.

    `encoder` is one of `ENCODERS` ("resnet18", "resnet34", "resnet50", "mobilenetv3_large",
    "mobilenetv3_small"; see `segkit.models.applications` for the MobileNets' skip taps). Fixed spatial sides must be
    multiples of 32; `None` sides give a fully convolutional model that takes any multiple of 32
    (`segkit.models.predict_probabilities` pads other sizes).
    """
    check_input_multiple(input_shape, INPUT_MULTIPLE, "U-Net")
    inputs = keras.Input(input_shape, name="image")
    features = encoder_features(inputs, encoder, output_stride=32)
    skips = [features["stage3"], features["stage2"], features["stage1"], features["stem"]]

    x = features["stage4"]
    for stage, filters in enumerate(decoder_filters):
        x = layers.UpSampling2D(2, name=f"decoder_stage{stage}_upsampling")(x)
        if stage < len(skips):
            x = layers.Concatenate(name=f"decoder_stage{stage}_concat")([x, skips[stage]])
        x = conv_bn_relu(x, filters, 3, f"decoder_stage{stage}a")
        x = conv_bn_relu(x, filters, 3, f"decoder_stage{stage}b")

    x = layers.Conv2D(num_classes, 3, padding="same", name="final_conv")(x)
    # float32 so that logits (and the losses on them) stay exact under mixed precision.
    logits = layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=f"unet_{encoder}")


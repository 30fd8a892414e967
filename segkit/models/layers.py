"""Building blocks of the segkit heads: adaptive average pooling, resize-to-match, conv-BN-ReLU, FCN heads.

The custom layers use `keras.ops` only, are registered for `.keras` safe-mode loading, and
work for static and unknown (None) spatial sizes.
"""

import keras
from keras import ops

from segkit.errors import SegkitError


def _bin_weights(length, bins, dtype):
    """(bins, length) averaging matrix with PyTorch's adaptive-pooling bin boundaries.

    Bin i covers [floor(i * L / b), ceil((i + 1) * L / b)), so bins may overlap by one
    position when L is not a multiple of b, and every position is covered.
    """
    index = ops.arange(bins)
    start = (index * length) // bins
    end = -((-(index + 1) * length) // bins)
    position = ops.arange(length)
    inside = ops.logical_and(position[None, :] >= start[:, None], position[None, :] < end[:, None])
    return ops.cast(inside, dtype) / ops.cast(end - start, dtype)[:, None]


def adaptive_bin_bounds(length, bins):
    """Python (start, end) pairs of each adaptive-pooling bin, for shape arithmetic."""
    return [((i * length) // bins, -((-(i + 1) * length) // bins)) for i in range(bins)]


@keras.saving.register_keras_serializable(package="segkit")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average-pools a (B, H, W, C) map to a fixed (bins_h, bins_w) grid for any H and W.

    Matches `torch.nn.AdaptiveAvgPool2d`: bins need not divide the input size (45 -> 6
    bins of 8 positions, overlapping by one). The average over a rectangle is separable,
    so it is computed as two small matrix products over H and W.
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(int(side) for side in output_size)

    def call(self, inputs):
        shape = ops.shape(inputs)
        rows = _bin_weights(shape[1], self.output_size[0], inputs.dtype)
        cols = _bin_weights(shape[2], self.output_size[1], inputs.dtype)
        pooled_rows = ops.einsum("ih,bhwc->biwc", rows, inputs)
        return ops.einsum("jw,biwc->bijc", cols, pooled_rows)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


@keras.saving.register_keras_serializable(package="segkit")
class ResizeToMatch(keras.layers.Layer):
    """Resizes `inputs[0]` to the spatial size of `inputs[1]` (bilinear by default), or to 1/stride of it.

    Resizing uses half-pixel centres (`keras.ops.image.resize`), like TensorFlow's and
    PyTorch's `align_corners=False`. Used wherever a branch must meet a feature map or the
    input image whose size is only known when the model is called. With `stride` k the output
    pixel (i, j) sits where the reference's pixel (k*i + k//2, k*j + k//2) does (to half a pixel
    for even k): training scores its logits against masks sampled there (`segkit.models.strided_logits`).
    """

    def __init__(self, interpolation="bilinear", stride=1, **kwargs):
        super().__init__(**kwargs)
        self.interpolation, self.stride = interpolation, int(stride)

    def call(self, inputs):
        images, reference = inputs
        size = ops.shape(reference)[1:3]
        if self.stride > 1:
            size = (size[0] // self.stride, size[1] // self.stride)
        return ops.image.resize(images, size, interpolation=self.interpolation)

    def compute_output_shape(self, input_shape):
        images_shape, reference_shape = input_shape
        height, width = (None if side is None else side // self.stride for side in reference_shape[1:3])
        return (images_shape[0], height, width, images_shape[3])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation, "stride": self.stride}


def conv_bn_relu(x, filters, kernel_size, name, dilation_rate=1, strides=1):
    """Bias-free "same" convolution, batch norm and ReLU: the building block of every segkit head."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=False,
        kernel_initializer="he_uniform",
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def classifier_to_input_size(x, inputs, num_classes, name):
    """1x1 classifier and bilinear resize to the input size: logits, float32 even under mixed precision."""
    x = keras.layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(x)
    return ResizeToMatch(name=name, dtype="float32")([x, inputs])


def fcn_head(x, inputs, num_classes, filters, convs, dropout, name, output_name):
    """FCN head: `convs` 3x3 conv-BN-ReLU of `filters`, dropout, 1x1 classifier, bilinear upsampling to the input size."""
    for index in range(convs):
        x = conv_bn_relu(x, filters, 3, f"{name}_{index + 1}")
    x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return classifier_to_input_size(x, inputs, num_classes, name=output_name)


def check_input_multiple(input_shape, multiple, model_name):
    """Raises SegkitError when a fixed side of `input_shape` is not a multiple of `multiple`."""
    for side in input_shape[:2]:
        if side is not None and side % multiple:
            raise SegkitError(
                f"{model_name} input side {side} in input_shape {tuple(input_shape)} is not a multiple of "
                f"{multiple}; build with sides that are, or with None sides and let segkit.models.predict_probabilities pad"
            )

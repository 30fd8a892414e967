"""Training views of a model whose logits stop at 1/k of the input size, so loss and metric score every k-th pixel.

Models with a final bilinear upsampling (Fast-SCNN, PSPNet, DeepLabV3+, BiSeNetV2) spend a large part of a
CPU training step at full resolution: the upsampling and its gradient, the loss and the metric over every pixel.
Their logits come from features at stride 8 or more, so scoring a regular 1/k^2 sample of the pixels against
logits upsampled to 1/k of the size keeps what the loss sees at the boundaries while the head costs about 1/k^2.
"""

import keras

from segkit.errors import SegkitError
from segkit.models.layers import ResizeToMatch


def strided_logits(model, stride):
    """A model sharing `model`'s weights whose every output is upsampled to 1/`stride` of the input size.

    Output pixel (i, j) then sits where input pixel (stride*i + stride//2, stride*j + stride//2) does, which is
    where `subsample_masks` samples the masks it is scored against. `model` itself (for inference and saving)
    keeps its full-size outputs.

    Args:
        model (keras.Model): a model whose outputs (one, or a dict) each end in a `ResizeToMatch` to the input.
        stride (int): 1 returns `model`; k > 1 divides the output sides by k (input sides must be multiples of k).

    Example:
        >>> trainer = strided_logits(build("fastscnn", num_classes=19, input_shape=(256, 256, 3)), 2)
        >>> trainer.output.shape
        (None, 128, 128, 19)
    """
    if stride == 1:
        return model
    outputs = model.output if isinstance(model.output, dict) else {None: model.output}
    strided = {name: _strided(model, output, stride) for name, output in outputs.items()}
    return keras.Model(model.input, strided[None] if None in strided else strided, name=f"{model.name}_stride{stride}")


def subsample_masks(masks, stride):
    """The mask pixels a `strided_logits` model's outputs sit on: every `stride`-th row and column from stride//2.

    Args:
        masks (np.ndarray): `(B, H, W)` class ids, H and W multiples of `stride`.
        stride (int): the model's stride; 1 returns `masks`.
    """
    offset = stride // 2
    return masks if stride == 1 else masks[:, offset::stride, offset::stride]


def _strided(model, output, stride):
    layer = output._keras_history.operation
    if not isinstance(layer, ResizeToMatch):
        raise SegkitError(f"model {model.name!r} computes its output {layer.name!r} at the input size (it ends in "
                          f"{type(layer).__name__}, not an upsampling), so a label stride of {stride} cannot make its step "
                          "cheaper; use stride 1")
    return ResizeToMatch(layer.interpolation, stride=stride, name=layer.name, dtype=layer.dtype_policy)(layer.input)

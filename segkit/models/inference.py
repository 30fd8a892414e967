"""Inference on any image size: pad to the model's stride and crop back, flip TTA, sliding windows.

`predict_probabilities` returns per-pixel class probabilities (softmax of the model's logits) as float32.
"""

import logging
import math

import keras
import numpy as np

from segkit.errors import SegkitError
from segkit.models.layers import AdaptiveAveragePooling2D, ResizeToMatch

FALLBACK_MULTIPLE = 32
_DOWNSAMPLING = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
)
_SIZE_FREE = (AdaptiveAveragePooling2D, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


class _PredictTracingFilter(logging.Filter):
    """Drops TensorFlow's warning that Keras' predict function "triggered tf.function retracing".

    TensorFlow counts the traces of every model's predict function together (keyed by Keras' code, not the
    model), so predicting with a few models, or at a few image sizes, trips a warning meant for a function
    retraced in a loop. Other functions' retracing warnings still show.
    """

    def filter(self, record):
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "make_predict_function" in message)


logging.getLogger("tensorflow").addFilter(_PredictTracingFilter())


def without_aux(model):
    """The single-output inference model of a model with auxiliary heads (shares its weights).

    A model built with `aux_head=True` outputs `{"logits": ..., "aux_logits": ...}`; this
    returns `Model(inputs, outputs["logits"])`. A single-output model is returned as is.
    """
    outputs = model.output
    if not isinstance(outputs, dict):
        return model
    if "logits" not in outputs:
        raise SegkitError(f"model {model.name!r} has outputs {sorted(outputs)} but none named 'logits'")
    return keras.Model(model.input, outputs["logits"], name=model.name.removesuffix("_aux"))


def required_multiple(model):
    """The side length every input of `model` must be a multiple of: its largest feature stride.

    Walks the layer graph multiplying strides (convolutions, pooling) and dividing by
    upsampling factors; adaptive and global pooling impose no constraint. Falls back to
    32 (the stride of a ResNet) for models whose graph cannot be walked.
    """
    try:
        largest, _ = _walk_strides(model, [1.0])
    except (AttributeError, ValueError, KeyError, TypeError):
        return FALLBACK_MULTIPLE
    return max(1, math.ceil(largest))


def _walk_strides(model, input_strides):
    """(largest stride reached, strides of the outputs) of a functional/sequential model."""
    stride_of = {id(tensor): stride for tensor, stride in zip(keras.tree.flatten(model.input), input_strides)}
    largest = max([1.0, *(s for s in input_strides if s is not None)])
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        in_strides = [stride_of.get(id(tensor)) for tensor in keras.tree.flatten(layer.input)]
        outputs = keras.tree.flatten(layer.output)
        if isinstance(layer, keras.Model):
            inner_largest, out_strides = _walk_strides(layer, in_strides)
            largest = max(largest, inner_largest)
        else:
            out_strides = [_output_stride(layer, in_strides)] * len(outputs)
        for tensor, stride in zip(outputs, out_strides):
            stride_of[id(tensor)] = stride
            if stride is not None:
                largest = max(largest, stride)
    return largest, [stride_of.get(id(tensor)) for tensor in keras.tree.flatten(model.output)]


def _output_stride(layer, in_strides):
    """Stride of a layer's output relative to the model input; None when size-free."""
    if isinstance(layer, _SIZE_FREE):
        return None
    if isinstance(layer, ResizeToMatch):
        return in_strides[1]
    known = [s for s in in_strides if s is not None]
    if not known:
        return None
    stride = known[0]
    if isinstance(layer, _DOWNSAMPLING):
        return stride * max(keras.tree.flatten(layer.strides))
    if isinstance(layer, keras.layers.UpSampling2D):
        return stride / max(layer.size)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return stride / max(layer.strides)
    return stride


def predict_probabilities(model, images, *, tta=None, window=None, overlap=1 / 3, batch_size=4, pad_mode="reflect"):
    """Class probabilities (H, W, C) float32 for one image, or (B, H, W, C) for a batch.

    images: RGB (H, W, 3) or (B, H, W, 3), uint8 or float in 0..255, any size.
    tta: None or "flip" (average the softmax of the image and its horizontal mirror).
    window: None (whole image) or (h, w): sliding-window inference with tiles of that size
        overlapping by `overlap` of a tile, probabilities averaged where tiles overlap.
    pad_mode: "reflect" or "constant" (zeros): how images are padded at the bottom and right
        to the model's required multiple (or fixed input size); the padding is cropped off.
    """
    batch, single = _as_batch(images, model)
    if tta not in (None, "flip"):
        raise SegkitError(f"tta={tta!r} is not supported; use None or 'flip'")
    if pad_mode not in ("reflect", "constant"):
        raise SegkitError(f"pad_mode={pad_mode!r} is not supported; use 'reflect' or 'constant'")
    if not 0 <= overlap < 1:
        raise SegkitError(f"overlap={overlap} must be in [0, 1)")

    def probabilities(x):
        return _probabilities(model, x, batch_size, tta)

    if window is None:
        result = _predict_whole(model, batch, probabilities, pad_mode)
    else:
        result = _predict_windows(model, batch, window, overlap, probabilities, pad_mode, batch_size)
    return result[0] if single else result


def _as_batch(images, model):
    array = np.asarray(images)
    if array.ndim not in (3, 4) or array.shape[-1] != 3 or 0 in array.shape:
        raise SegkitError(f"images must be RGB (H, W, 3) or (B, H, W, 3), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise SegkitError(f"images must be uint8 or float in 0..255, got dtype {array.dtype}")
    channels = _input_shape(model)[2]
    if channels not in (None, 3):
        raise SegkitError(f"model {model.name!r} takes {channels} input channels, not RGB")
    single = array.ndim == 3
    return (array[None] if single else array).astype("float32"), single


def _input_shape(model):
    """(h, w, channels) of the model's input, None where any size is accepted."""
    shape = keras.tree.flatten(model.input)[0].shape
    return tuple(shape[1:4])


def _probabilities(model, x, batch_size, tta):
    probs = _softmax(_logits(model, x, batch_size))
    if tta == "flip":
        mirrored = _softmax(_logits(model, x[:, :, ::-1], batch_size))
        probs = (probs + mirrored[:, :, ::-1]) / 2
    return probs


def _logits(model, x, batch_size):
    x = np.ascontiguousarray(x)
    # One batch (a chunk of tiles) skips predict()'s set-up of about 0.2 s per call; its numbers are the same.
    outputs = model.predict_on_batch(x) if len(x) <= batch_size else model.predict(x, batch_size=batch_size, verbose=0)
    return outputs["logits"] if isinstance(outputs, dict) else outputs


def _softmax(logits):
    logits = logits.astype("float32")
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _predict_whole(model, batch, probabilities, pad_mode):
    height, width = batch.shape[1:3]
    target = _padded_size(model, (height, width))
    probs = probabilities(_pad(batch, target, pad_mode))
    return probs[:, :height, :width]


def _padded_size(model, size):
    """The input size the model takes for an image of `size`: fixed size, or next multiple."""
    fixed = _input_shape(model)[:2]
    multiple = required_multiple(model)
    if any(side > limit for side, limit in zip(size, fixed) if limit is not None):
        raise SegkitError(
            f"image {size[0]}x{size[1]} is larger than the fixed input {fixed[0]}x{fixed[1]} of model "
            f"{model.name!r}; pass window={tuple(fixed)} for sliding-window inference, or build the model "
            f"with input_shape=(None, None, 3) to take any size padded to a multiple of {multiple}"
        )
    return tuple(limit if limit is not None else _round_up(side, multiple) for side, limit in zip(size, fixed))


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


def _pad(batch, size, pad_mode):
    extra = ((0, 0), (0, size[0] - batch.shape[1]), (0, size[1] - batch.shape[2]), (0, 0))
    return np.pad(batch, extra, mode=pad_mode)


def _predict_windows(model, batch, window, overlap, probabilities, pad_mode, batch_size):
    window = check_window(model, window)
    height, width = batch.shape[1:3]
    padded = _pad(batch, (max(height, window[0]), max(width, window[1])), pad_mode)
    starts = [(r, c) for r in _starts(padded.shape[1], window[0], overlap) for c in _starts(padded.shape[2], window[1], overlap)]
    results = [_average_tiles(image, window, starts, probabilities, batch_size)[:height, :width] for image in padded]
    return results[0][None] if len(results) == 1 else np.stack(results)


def _average_tiles(image, window, starts, probabilities, batch_size):
    """Per-pixel mean of the probabilities of the tiles at `starts`, summed into one buffer `batch_size` tiles at a
    time: memory grows with the image, not with the number of tiles."""
    total = None
    count = np.zeros((*image.shape[:2], 1), "float32")
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        tile_probs = probabilities(np.stack([image[r : r + window[0], c : c + window[1]] for r, c in chunk]))
        if total is None:
            total = np.zeros((*image.shape[:2], tile_probs.shape[-1]), "float32")
        for tile, (r, c) in zip(tile_probs, chunk):
            total[r : r + window[0], c : c + window[1]] += tile
            count[r : r + window[0], c : c + window[1]] += 1
    total /= count
    return total


def check_window(model, window) -> tuple[int, int]:
    """`window` as (h, w) when it fits `model` (its fixed input, or a multiple of its stride); else a one-line error."""
    if not (isinstance(window, (tuple, list)) and len(window) == 2 and all(int(s) == s and s > 0 for s in window)):
        raise SegkitError(f"window={window!r} must be a pair of positive ints (h, w)")
    window = tuple(int(side) for side in window)
    fixed = _input_shape(model)[:2]
    multiple = required_multiple(model)
    for side, limit in zip(window, fixed):
        if (limit is not None and side != limit) or (limit is None and side % multiple):
            need = f"equal the model's fixed input {fixed}" if limit is not None else f"be a multiple of {multiple}"
            raise SegkitError(f"window={window} does not fit model {model.name!r}: its sides must {need}")
    return window


def _starts(length, window, overlap):
    """Tile start offsets covering [0, length) with tiles of `window`, the last one flush with the end."""
    step = max(1, round(window * (1 - overlap)))
    starts = list(range(0, length - window + 1, step))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts

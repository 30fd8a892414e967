"""Dataset-level segmentation scores from one integer confusion matrix, and a Keras metric that accumulates it.

Every number comes from a confusion matrix `cm` (rows = truth, columns = prediction) summed over
all pixels of a dataset; pixels labelled with the ignore index (255, void) are not counted at all.
From it: IoU per class = TP / (TP + FP + FN), NaN for a class absent from both truth and prediction;
mIoU = the mean over the classes whose IoU is not NaN (the Cityscapes convention); Dice per class =
2 TP / (2 TP + FP + FN); class accuracy = TP / (truth pixels); pixel accuracy = trace / total;
frequency-weighted IoU = sum over classes of (truth share x IoU).

Boundary scores are the same figures from a second matrix counted only over the pixels of
`boundary_band`: the labelled pixels within a few pixels of a pixel of another labelled class.
"""

import cv2
import keras
import numpy as np
import pandas as pd
from keras import ops

from segkit.errors import SegkitError

__all__ = ["BOUNDARY_WIDTH", "boundary_band", "confusion_matrix", "scores", "per_class_table", "MeanIoU"]

# Half-width in label pixels of the band boundary scores count (a 7x7 window at the default 3).
BOUNDARY_WIDTH = 3


def confusion_matrix(y_true, y_pred, num_classes, ignore_index=255):
    """Counts of (true class, predicted class) over all non-ignored pixels, as an int64 (C, C) array.

    `y_true`: integer class ids of any shape, e.g. (B, H, W) or (B, H, W, 1), `ignore_index` for void.
    `y_pred`: class ids of the same shape, or scores (logits or probabilities) with one more axis of
    size `num_classes`, turned into ids by argmax. Matrices of several batches add up exactly.
    """
    num_classes = _check_num_classes(num_classes)
    truth, pred = _matching_labels(y_true, y_pred, num_classes)
    counted = truth != ignore_index
    truth, pred = truth[counted], pred[counted]
    _check_range(truth, "y_true", num_classes, ignore_index)
    _check_range(pred, "y_pred", num_classes, ignore_index)
    cell = truth.astype(np.intp) * num_classes + pred
    return np.bincount(cell, minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.int64)


def boundary_band(mask, width=BOUNDARY_WIDTH, ignore_index=255) -> np.ndarray:
    """The labelled pixels near a label edge, as a bool array of the mask's shape (the Cityscapes "trimap" band).

    A pixel is in the band when it is labelled (not `ignore_index`) and a pixel of another labelled class
    lies within `width` pixels of it in Chebyshev distance, i.e. inside the (2 width + 1) x (2 width + 1)
    window centred on it (cut at the image border). Void pixels are never in the band, and a void
    neighbour does not make an edge: a class meeting only void has no band there.

    Args:
        mask: integer class ids 0..255, (H, W) or a batch (B, H, W); each image's band is its own.
        width: the band's half-width in pixels, a positive integer.
        ignore_index: the void label.
    """
    if isinstance(width, bool) or int(width) != width or width < 1:
        raise SegkitError(f"the boundary band width must be a positive integer number of pixels, got {width!r}")
    labels = _as_integer_ids(mask, "mask")
    if labels.ndim not in (2, 3) or labels.size == 0:
        raise SegkitError(f"a mask must be (H, W) or (B, H, W), got shape {labels.shape}")
    if labels.min() < 0 or labels.max() > 255:
        raise SegkitError(f"mask labels must lie in 0..255 (uint8 masks), got {labels.min()}..{labels.max()}")
    if labels.ndim == 3:
        return np.stack([boundary_band(one, width, ignore_index) for one in labels])
    labels = labels.astype(np.uint8)
    labelled = labels != ignore_index
    # Another class is in the window exactly when the window's largest or smallest class differs from the
    # pixel's own. Void is set to 0 for the largest and 255 for the smallest, so it never decides either;
    # OpenCV pads the border so that outside pixels never decide either.
    window = np.ones((2 * int(width) + 1,) * 2, np.uint8)
    largest = cv2.dilate(np.where(labelled, labels, 0).astype(np.uint8), window)
    smallest = cv2.erode(np.where(labelled, labels, 255).astype(np.uint8), window)
    return labelled & ((largest != labels) | (smallest != labels))


def scores(cm):
    """The IoU family of a confusion matrix: a dict of per-class arrays and dataset-level floats.

    Keys: `iou`, `dice`, `accuracy` (per class recall) and `pixel_share` (per class share of the truth
    pixels), arrays of length C with NaN for classes that cannot be scored; `miou`, `mean_accuracy`,
    `mean_dice` (NaN-skipping means), `pixel_accuracy`, `fw_iou` (frequency-weighted IoU), floats.
    """
    cm = _check_confusion(cm)
    true_positive = np.diag(cm).astype(np.float64)
    truth = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    total = truth.sum()
    iou = _ratio(true_positive, truth + predicted - true_positive)
    accuracy = _ratio(true_positive, truth)
    dice = _ratio(2 * true_positive, truth + predicted)
    share = truth / total
    return {
        "iou": iou,
        "miou": float(np.nanmean(iou)),
        "dice": dice,
        "mean_dice": float(np.nanmean(dice)),
        "accuracy": accuracy,
        "mean_accuracy": float(np.nanmean(accuracy)),
        "pixel_accuracy": float(true_positive.sum() / total),
        "fw_iou": float(np.sum(np.where(share > 0, share * iou, 0.0))),
        "pixel_share": share,
    }


def per_class_table(cm, class_names):
    """A table with one row per class (IoU, accuracy, Dice, pixel share, pixels) and a last `mean` row.

    The mean row holds mIoU, mean class accuracy and mean Dice (each over the classes that are not
    NaN) with the total share (1.0) and count of labelled pixels. NaN marks a class that cannot be
    scored (absent from the truth, and for IoU and Dice also from the prediction).
    """
    cm = _check_confusion(cm)
    names = [str(name) for name in class_names]
    if len(names) != cm.shape[0]:
        raise SegkitError(f"per_class_table got {len(names)} class names for a {cm.shape[0]}-class confusion matrix")
    result = scores(cm)
    table = pd.DataFrame(
        {
            "IoU": result["iou"],
            "accuracy": result["accuracy"],
            "Dice": result["dice"],
            "pixel share": result["pixel_share"],
            "pixels": cm.sum(axis=1),
        },
        index=pd.Index(names, name="class"),
    )
    table.loc["mean"] = [result["miou"], result["mean_accuracy"], result["mean_dice"], 1.0, cm.sum()]
    table["pixels"] = table["pixels"].astype(np.int64)
    return table


# Each count is kept as high * 2**24 + low in two int32 variables: int32 is the widest integer every
# backend stores without extra flags (JAX drops int64 to int32 unless x64 is enabled), float32 counts
# stop being exact at 2**24 pixels (under 1% of a Cityscapes epoch), and the split stays exact to 2**55.
_LOW_BITS = 2**24


@keras.saving.register_keras_serializable(package="segkit")
class MeanIoU(keras.metrics.Metric):
    """Dataset-level mean IoU for `compile(metrics=[...])`: accumulates one confusion matrix over the epoch.

    `result()` is the mIoU of everything seen since the last reset (not a mean of per-batch IoUs),
    over the classes present in truth or prediction; pixels labelled `ignore_index` are skipped.
    `confusion()` returns the exact int64 matrix, for per-class IoU via `scores`. Keras resets the
    state at the start of every epoch and evaluation. Under a distribution strategy each replica
    counts its own pixels and the counts are summed when read.

    `y_pred` may be logits or probabilities: the predicted class is their argmax either way, so,
    unlike the losses, the metric takes no `from_logits`. A traced graph cannot raise on data, so
    labels outside 0..C-1 that are not `ignore_index` are counted apart: `result()` is then NaN
    and `confusion()` raises, rather than a silently wrong score. Each instance gets its own default
    name (`mean_iou`, `mean_iou_1`, ...), so several can sit side by side in one `compile`.
    """

    def __init__(self, num_classes, ignore_index=255, name=None, dtype=None):
        if name is None:
            uid = keras.backend.get_uid("segkit_mean_iou")
            name = "mean_iou" if uid == 1 else f"mean_iou_{uid - 1}"
        super().__init__(name=name, dtype=dtype)
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = int(ignore_index)
        shape = (self.num_classes, self.num_classes)
        self._low = self.add_variable(shape, "zeros", dtype="int32", name="confusion_low")
        self._high = self.add_variable(shape, "zeros", dtype="int32", name="confusion_high")
        self._invalid = self.add_variable((), "zeros", dtype="int32", name="invalid_labels")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise SegkitError(f"{self.name} counts pixels and takes no sample_weight; label pixels {self.ignore_index} to skip them")
        classes = self.num_classes
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, axis=-1)
        _check_static_shapes(tuple(y_true.shape), tuple(y_pred.shape), classes)
        truth = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        pred = ops.reshape(self._predicted_class(y_pred), (-1,))
        ignored = truth == self.ignore_index
        counted = ops.logical_and(ops.logical_and(truth >= 0, truth < classes), ops.logical_not(ignored))
        # Two extra cells collect the ignored pixels and the invalid labels, so one segment_sum does all.
        cell = ops.where(counted, truth * classes + pred, ops.where(ignored, classes * classes, classes * classes + 1))
        counts = ops.segment_sum(ops.ones_like(cell), cell, num_segments=classes * classes + 2)
        low = self._low + ops.reshape(counts[: classes * classes], (classes, classes))
        self._high.assign_add(ops.floor_divide(low, _LOW_BITS))
        self._low.assign(ops.mod(low, _LOW_BITS))
        self._invalid.assign_add(counts[classes * classes + 1])

    @staticmethod
    def _predicted_class(scores):
        """The int32 argmax of `scores` over the last axis. top_k(k=1) gives the same ids (ties go to the lower
        index) at half the cost of ops.argmax under TensorFlow, which first makes three passes to guard against
        negative zeros: it made Fast-SCNN's two-core training step 1.05x as long (benchmarks/bench_train_step.py)."""
        return ops.cast(ops.top_k(scores, 1)[1][..., 0], "int32")

    def result(self):
        cm = ops.cast(self._high, "float32") * float(_LOW_BITS) + ops.cast(self._low, "float32")
        true_positive = ops.diagonal(cm)
        union = ops.sum(cm, axis=0) + ops.sum(cm, axis=1) - true_positive
        present = ops.cast(union > 0, "float32")
        iou = ops.divide_no_nan(true_positive, union)
        miou = ops.sum(iou * present) / ops.sum(present)  # 0 / 0 = NaN before any labelled pixel
        return ops.where(self._invalid > 0, float("nan"), miou)

    def confusion(self):
        """The accumulated confusion matrix as an exact int64 (C, C) numpy array (rows truth, columns prediction)."""
        invalid = int(ops.convert_to_numpy(self._invalid))
        if invalid:
            raise SegkitError(
                f"{self.name} saw {invalid} labels outside 0..{self.num_classes - 1} that are not the ignore index {self.ignore_index}"
            )
        high = ops.convert_to_numpy(self._high).astype(np.int64)
        return high * _LOW_BITS + ops.convert_to_numpy(self._low).astype(np.int64)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }


def _ratio(numerator, denominator):
    """numerator / denominator, NaN where the denominator is 0."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, np.nan)


def _check_num_classes(num_classes):
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise SegkitError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def _as_integer_ids(values, what):
    array = np.asarray(values)
    if array.dtype.kind in "iub":
        return array
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise SegkitError(f"{what} must hold integer class ids, got dtype {array.dtype}")


def _matching_labels(y_true, y_pred, num_classes):
    """(truth, predicted ids) of one shape: squeezes a trailing 1 from truth, argmaxes scores."""
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    if truth.shape[-1:] == (1,) and pred.shape[-1:] == (num_classes,) and truth.shape[:-1] == pred.shape[:-1]:
        truth = truth[..., 0]
    if pred.shape == truth.shape + (num_classes,):
        pred = pred.argmax(axis=-1)
    elif pred.shape != truth.shape:
        raise SegkitError(
            f"y_true shape {truth.shape} does not match y_pred shape {pred.shape} "
            f"(expected the same shape, or y_pred with one more axis of {num_classes} class scores)"
        )
    if truth.size == 0:
        raise SegkitError(f"empty input: y_true has shape {truth.shape}")
    return _as_integer_ids(truth, "y_true"), _as_integer_ids(pred, "y_pred")


def _check_range(ids, what, num_classes, ignore_index):
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        bad = ids[(ids < 0) | (ids >= num_classes)][0]
        raise SegkitError(f"{what} holds label {bad}, outside 0..{num_classes - 1} and not the ignore index {ignore_index}")


def _check_static_shapes(true_shape, pred_shape, num_classes):
    same = len(true_shape) + 1 == len(pred_shape) and all(
        a is None or b is None or a == b for a, b in zip(true_shape, pred_shape)
    )
    if not same or pred_shape[-1] != num_classes:
        raise SegkitError(
            f"mask shape {true_shape} does not match prediction shape {pred_shape} "
            f"(expected (B, H, W) and (B, H, W, {num_classes}))"
        )


def _check_confusion(cm):
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise SegkitError(f"a confusion matrix must be square (C, C), got shape {cm.shape}")
    if cm.dtype.kind not in "iu" or np.any(cm < 0):
        raise SegkitError(f"a confusion matrix holds non-negative integer counts, got dtype {cm.dtype}")
    if cm.sum() == 0:
        raise SegkitError("the confusion matrix is empty: no labelled pixels were counted")
    return cm.astype(np.int64)

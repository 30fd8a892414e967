"""Segmentation losses on per-pixel logits and sparse masks whose ignore pixels (255) are left out.

Every loss takes `y_true` as integer class ids `(B, H, W)` or `(B, H, W, 1)` and `y_pred` as
`(B, H, W, C)` logits (`from_logits=True`, the default) or probabilities (`from_logits=False`).
Pixels labelled `ignore_index`, or with any id outside `0..C-1`, carry no loss and no gradient.
Each loss returns one number for the whole batch: cross-entropy, OHEM and focal are the (class-weighted)
mean over the (kept) labelled pixels of the batch; Dice and Lovasz-softmax are computed per class over the
whole batch.
Written with `keras.ops` only, so it runs under TensorFlow and JAX; registered for `.keras` files.
"""

import numpy as np
import keras
from keras import ops

from segkit.errors import SegkitError

__all__ = ["CrossEntropy", "OhemCrossEntropy", "SoftDice", "Focal", "LovaszSoftmax", "Combined", "DetailLoss",
           "boundary_targets", "get", "class_weights", "LOSS_NAMES", "DICE_CLASSES"]

_EPSILON = 1e-7
_INFINITY_BITS = 0x7F800000  # float32 +inf as int32: above every finite non-negative float
# STDC's boundary pyramid: the Laplacian's strides and the fixed weights that fuse the levels (mmsegmentation's STDCHead).
BOUNDARY_STRIDES = (1, 2, 4)
BOUNDARY_FUSION = (0.6, 0.3, 0.1)
DICE_CLASSES = ("all", "present")  # the classes soft Dice averages over: all, or those in the batch's labels


class _SegmentationLoss(keras.losses.Loss):
    """Shared arguments, input checks and label masking of the segkit losses."""

    def __init__(
        self,
        num_classes,
        class_weights=None,
        ignore_index=255,
        from_logits=True,
        name=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if int(num_classes) < 1:
            raise SegkitError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.class_weights = _check_class_weights(class_weights, self.num_classes)
        self.ignore_index = int(ignore_index)
        self.from_logits = bool(from_logits)

    def __call__(self, y_true, y_pred, sample_weight=None):
        self._check_call(y_true, sample_weight)
        return super().__call__(y_true, y_pred)

    def _check_call(self, y_true, sample_weight):
        if sample_weight is not None:
            raise SegkitError(
                f"{self.name} takes no sample_weight: label pixels {self.ignore_index} to leave them "
                "out, or pass class_weights"
            )
        if isinstance(y_true, np.ndarray):
            _check_concrete_labels(y_true, self.num_classes, self.ignore_index)

    def call(self, y_true, y_pred):
        # Shape (1,), not a scalar: Keras scales non-scalar losses by 1 / replicas under a TensorFlow
        # distribution strategy, so replica gradients are averaged rather than summed.
        return ops.reshape(self._batch_loss(y_true, y_pred), (1,))

    def _labels(self, y_true, y_pred):
        """Returns (labels, valid): int32 class ids with 0 on unlabelled pixels, and the float32 labelled-pixel mask."""
        labels = _labels_matching(y_true, y_pred, self.num_classes)
        labelled = ops.logical_and(ops.logical_and(labels >= 0, labels < self.num_classes), labels != self.ignore_index)
        return ops.where(labelled, labels, 0), ops.cast(labelled, "float32")

    def _prepare(self, y_true, y_pred):
        """Returns (one_hot, valid, y_pred): masked one-hot truth, the labelled-pixel mask, float32 scores."""
        labels, valid = self._labels(y_true, y_pred)
        return ops.one_hot(labels, self.num_classes) * valid[..., None], valid, ops.cast(y_pred, "float32")

    def _true_class(self, y_true, y_pred):
        """Returns (log_p_true, valid, pixel_weight), float32 (B, H, W): each pixel's log-probability of its true
        class (0 where unlabelled), the labelled-pixel mask and each pixel's class weight (0 where unlabelled)."""
        (labels, valid), y_pred = self._labels(y_true, y_pred), ops.cast(y_pred, "float32")
        if self.from_logits:
            # Gathers the true class: no one-hot tensor the size of the scores (under TensorFlow one fused kernel).
            log_p_true = -ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        else:
            p_true = ops.squeeze(ops.take_along_axis(y_pred, labels[..., None], axis=-1), axis=-1)
            log_p_true = ops.log(ops.clip(p_true, _EPSILON, 1.0))
        return log_p_true * valid, valid, ops.take(self._weights(), labels) * valid

    def _probabilities(self, y_pred):
        return ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred

    def _weights(self):
        if self.class_weights is None:
            return ops.ones((self.num_classes,), dtype="float32")
        return ops.convert_to_tensor(self.class_weights, dtype="float32")

    @staticmethod
    def _weighted_pixel_mean(pixel_weight, per_pixel):
        """Mean of `per_pixel` weighted by `pixel_weight` (a pixel's class weight, 0 to leave it out); 0 when all are 0."""
        return ops.divide_no_nan(ops.sum(pixel_weight * per_pixel), ops.sum(pixel_weight))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "class_weights": self.class_weights,
            "ignore_index": self.ignore_index,
            "from_logits": self.from_logits,
        }


@keras.saving.register_keras_serializable(package="segkit")
class CrossEntropy(_SegmentationLoss):
    """Categorical cross-entropy on sparse masks: the class-weighted mean of -log p(true class) over labelled pixels.

    With class weights w, the loss is sum(w[y] * ce) / sum(w[y]) (the PyTorch convention), so
    weights change the balance between classes, not the scale of the loss.
    """

    def __init__(self, num_classes, class_weights=None, ignore_index=255, from_logits=True, name="cross_entropy", **kwargs):
        super().__init__(num_classes, class_weights, ignore_index, from_logits, name=name, **kwargs)

    def _batch_loss(self, y_true, y_pred):
        log_p_true, _, pixel_weight = self._true_class(y_true, y_pred)
        return self._weighted_pixel_mean(pixel_weight, -log_p_true)


@keras.saving.register_keras_serializable(package="segkit")
class OhemCrossEntropy(_SegmentationLoss):
    """Cross-entropy over the hard pixels only: online hard example mining as mmseg's OHEMPixelSampler.

    A labelled pixel is kept when its true-class probability is below max(threshold, q), where q is
    the probability of the (min_kept * batch)-th least confident labelled pixel (0-based; the last one
    when fewer are labelled), so at least min_kept pixels per image stay (the strict `<` can drop ties).
    The loss is the class-weighted mean of -log p(true class) over the kept pixels; which pixels are
    kept carries no gradient.
    """

    def __init__(self, num_classes, threshold=0.7, min_kept=10000, class_weights=None, ignore_index=255, from_logits=True,
                 name="ohem_cross_entropy", **kwargs):
        super().__init__(num_classes, class_weights, ignore_index, from_logits, name=name, **kwargs)
        if not 0 < float(threshold) <= 1 or int(min_kept) < 0:
            raise SegkitError(f"OHEM threshold must be in (0, 1] and min_kept >= 0, got {threshold} and {min_kept}")
        self.threshold, self.min_kept = float(threshold), int(min_kept)

    def _batch_loss(self, y_true, y_pred):
        log_p_true, valid, pixel_weight = self._true_class(y_true, y_pred)
        kept = self._hard_pixels(ops.stop_gradient(ops.exp(log_p_true)), valid)
        return self._weighted_pixel_mean(pixel_weight * kept, -log_p_true)

    def _hard_pixels(self, p_true, valid):
        """1 for the kept pixels, 0 elsewhere (and on every unlabelled pixel)."""
        flat = ops.reshape(ops.where(valid > 0, p_true, 2.0), (-1,))  # unlabelled pixels sort last
        labelled = ops.cast(ops.sum(valid), "int32")
        kth = ops.maximum(ops.minimum(self.min_kept * ops.shape(p_true)[0], labelled - 1), 0)
        below = ops.sum(ops.cast(flat < self.threshold, "int32"))
        # More than kth pixels below the threshold put the kth one below it too: the threshold decides, and the
        # search for the kth pixel is skipped.
        threshold = ops.cond(below > kth, lambda: ops.convert_to_tensor(self.threshold, "float32"),
                             lambda: ops.maximum(self._kth_pixel(flat, kth), self.threshold))
        return ops.cast(p_true < threshold, "float32") * valid

    @staticmethod
    def _kth_pixel(flat, kth):
        """The kth-smallest (0-based) of the batch's flattened true-class probabilities."""
        return _kth_smallest(flat, kth)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold, "min_kept": self.min_kept}


def _kth_smallest(values, k):
    """The k-th smallest (0-based) of the non-negative float32 `values`: `sort(values)[k]`, exactly, for 0 <= k < size.

    Non-negative floats order as their int32 bit patterns do, so 31 halvings of the range [-1, bits(inf)] pin it down,
    each a count over all values. Counting uses every core, where a sort of the batch's pixels runs on one thread:
    late in training, when min_kept decides nearly every step, the sort made Fast-SCNN's two-core step 1.17x as long
    as cross-entropy's, the search 1.05x (benchmarks/bench_losses.py).
    """

    def at(bits):  # the float of a bit pattern: only scalars are viewed (Keras' view needs a known last dimension)
        return ops.view(bits, "float32")

    def halve(_, bounds):  # count(values <= at(low)) <= k < count(values <= at(high)) holds throughout
        low, high = bounds
        middle = low + (high - low) // 2  # at(-1) is NaN, which no value is <=: a count of 0, as the bits say
        past_k = ops.sum(ops.cast(values <= at(middle), "int32")) > k
        return ops.where(past_k, low, middle), ops.where(past_k, middle, high)

    start = (ops.convert_to_tensor(-1, "int32"), ops.convert_to_tensor(_INFINITY_BITS, "int32"))
    return at(ops.fori_loop(0, 31, halve, start)[1])


@keras.saving.register_keras_serializable(package="segkit")
class LovaszSoftmax(_SegmentationLoss):
    """Lovasz-softmax (Berman et al. 2018): a convex surrogate of 1 - IoU per class, averaged over the classes present.

    As the authors' lovasz_softmax(probas, labels, classes="present", per_image=False): for each class c
    present in the batch's labelled pixels, errors |1[y = c] - p_c| sorted in decreasing order are
    dotted with the Lovasz gradient of the Jaccard loss; ignored pixels take no part. Class weights,
    when given, weight the per-class average.

    With `bins`, each class's errors are grouped into `bins` equal-width bins of [0, 1] instead of sorted: the
    pixels of a bin count as tied and share the bin's Jaccard step equally. That stays within 1 / bins of the sorted
    value (the Jaccard steps are non-negative and sum to at most 1) at a fraction of the cost: on a CPU the per-class
    sort of every pixel is most of this loss's time (TensorFlow's top_k), a per-bin sum is not.
    """

    def __init__(self, num_classes, class_weights=None, ignore_index=255, from_logits=True, bins=None,
                 name="lovasz_softmax", **kwargs):
        super().__init__(num_classes, class_weights, ignore_index, from_logits, name=name, **kwargs)
        if bins is not None and (isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2):
            raise SegkitError(f"Lovasz bins must be an integer of at least 2 or None (sort), got {bins!r}")
        self.bins = None if bins is None else int(bins)

    def _batch_loss(self, y_true, y_pred):
        one_hot, valid, y_pred = self._prepare(y_true, y_pred)
        truth = ops.reshape(one_hot, (-1, self.num_classes))
        labelled = ops.reshape(valid, (-1, 1))
        errors = ops.abs(truth - ops.reshape(self._probabilities(y_pred), (-1, self.num_classes)))
        per_class = self._binned(truth, labelled, errors) if self.bins else self._sorted(truth, labelled, errors)
        weights = self._weights() * ops.cast(ops.sum(truth, axis=0) > 0, "float32")
        return ops.divide_no_nan(ops.sum(weights * per_class), ops.sum(weights))

    @staticmethod
    def _sorted(truth, labelled, errors):
        # Unlabelled pixels get error -1: sorted after every labelled one, where the Lovasz gradient is 0.
        errors = ops.where(labelled > 0, errors, -1.0)
        order = ops.argsort(-errors, axis=0)
        sorted_errors = ops.maximum(ops.take_along_axis(errors, order, axis=0), 0.0)
        return ops.sum(sorted_errors * _lovasz_grad(ops.take_along_axis(truth, order, axis=0)), axis=0)

    def _binned(self, truth, labelled, errors):
        classes, bins = self.num_classes, self.bins
        # Bin 0 holds the largest errors, so each class's bins run in the sorted order; unlabelled pixels go to a
        # last segment that is dropped.
        descending = (bins - 1) - ops.minimum(ops.cast(ops.floor(ops.stop_gradient(errors) * bins), "int32"), bins - 1)
        segment = ops.where(labelled > 0, ops.arange(classes, dtype="int32")[None, :] * bins + descending, classes * bins)
        segment = ops.reshape(segment, (-1,))

        def per_bin(values):  # (pixels, classes) -> (bins, classes) sums
            sums = ops.segment_sum(ops.reshape(values, (-1,)), segment, num_segments=classes * bins + 1)
            return ops.transpose(ops.reshape(sums[:-1], (classes, bins)))

        counts = per_bin(ops.broadcast_to(labelled, ops.shape(truth)))
        steps = ops.stop_gradient(_lovasz_grad(per_bin(truth), counts))
        return ops.sum(ops.divide_no_nan(per_bin(errors), counts) * steps, axis=0)

    def get_config(self):
        return {**super().get_config(), "bins": self.bins}


def _lovasz_grad(truth_sorted, counts=None):
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors, per column (Berman et al., Alg. 1).

    `truth_sorted` counts the class's pixels at each sorted position; `counts` all labelled pixels there (1 each
    when None). With counts, a position is a bin of tied pixels and its step is the whole bin's.
    """
    counts = ops.ones_like(truth_sorted) if counts is None else counts
    positives = ops.sum(truth_sorted, axis=0)
    intersection = positives - ops.cumsum(truth_sorted, axis=0)
    union = positives + ops.cumsum(counts - truth_sorted, axis=0)
    jaccard = 1.0 - ops.divide_no_nan(intersection, union)
    return ops.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)


@keras.saving.register_keras_serializable(package="segkit")
class Focal(_SegmentationLoss):
    """Focal loss -(1 - p_t)^gamma log p_t (Lin et al. 2017), averaged like `CrossEntropy`; gamma=0 is cross-entropy.

    Class weights play the part of the paper's alpha.
    """

    def __init__(
        self, num_classes, gamma=2.0, class_weights=None, ignore_index=255, from_logits=True, name="focal", **kwargs
    ):
        super().__init__(num_classes, class_weights, ignore_index, from_logits, name=name, **kwargs)
        if not float(gamma) >= 0:
            raise SegkitError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def _batch_loss(self, y_true, y_pred):
        log_p_true, _, pixel_weight = self._true_class(y_true, y_pred)
        modulation = ops.power(ops.maximum(1.0 - ops.exp(log_p_true), 0.0), self.gamma)
        return self._weighted_pixel_mean(pixel_weight, -modulation * log_p_true)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="segkit")
class SoftDice(_SegmentationLoss):
    """Multiclass soft Dice loss: 1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s) per class over the batch, averaged.

    Sums run over all labelled pixels of the batch (ignore pixels are zeroed in both p and t);
    the per-class losses are averaged with the class weights (plain mean by default). The
    smoothing term `smooth` (default 1, in pixels) keeps a class absent from the batch finite:
    its Dice tends to 1 (loss 0) as the predicted mass for it goes to 0.

    `classes="present"` averages over the classes present in the batch's labelled pixels only, as
    Lovasz-softmax does. With "all" (the default) an absent class still counts, and a single
    pixel's worth of probability for it costs half its term: rare classes are pushed towards zero
    in every batch they are missing from.
    """

    def __init__(
        self, num_classes, smooth=1.0, class_weights=None, ignore_index=255, from_logits=True, classes="all",
        name="soft_dice", **kwargs
    ):
        super().__init__(num_classes, class_weights, ignore_index, from_logits, name=name, **kwargs)
        if not float(smooth) > 0:
            raise SegkitError(f"Dice smooth must be > 0 (it keeps absent classes finite), got {smooth}")
        if classes not in DICE_CLASSES:
            raise SegkitError(f"Dice classes must be one of {', '.join(DICE_CLASSES)}, got {classes!r}")
        self.smooth = float(smooth)
        self.classes = classes

    def _batch_loss(self, y_true, y_pred):
        one_hot, valid, y_pred = self._prepare(y_true, y_pred)
        probabilities = self._probabilities(y_pred) * valid[..., None]
        pixel_axes = tuple(range(len(one_hot.shape) - 1))
        intersection = ops.sum(probabilities * one_hot, axis=pixel_axes)
        total = ops.sum(probabilities, axis=pixel_axes) + ops.sum(one_hot, axis=pixel_axes)
        dice = (2.0 * intersection + self.smooth) / (total + self.smooth)
        weights = self._weights()
        if self.classes == "present":
            weights = weights * ops.cast(ops.sum(one_hot, axis=pixel_axes) > 0, "float32")
        return ops.divide_no_nan(ops.sum(weights * (1.0 - dice)), ops.sum(weights))

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth, "classes": self.classes}


@keras.saving.register_keras_serializable(package="segkit")
class Combined(keras.losses.Loss):
    """A weighted sum of segkit losses, e.g. cross-entropy + Dice: sum_i weights[i] * losses[i]."""

    def __init__(self, losses, weights=None, name="combined", **kwargs):
        super().__init__(name=name, **kwargs)
        self.losses = [keras.saving.deserialize_keras_object(loss) if isinstance(loss, dict) else loss for loss in losses]
        if not self.losses or not all(isinstance(loss, _SegmentationLoss) for loss in self.losses):
            raise SegkitError(f"Combined takes a non-empty list of segkit losses, got {losses!r}")
        self.weights = [1.0] * len(self.losses) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.losses):
            raise SegkitError(f"Combined got {len(self.losses)} losses but {len(self.weights)} weights")

    def __call__(self, y_true, y_pred, sample_weight=None):
        for loss in self.losses:  # the parts' call() is used below, so their checks run here
            loss._check_call(y_true, sample_weight)
        return super().__call__(y_true, y_pred)

    def call(self, y_true, y_pred):
        return sum(weight * loss.call(y_true, y_pred) for weight, loss in zip(self.weights, self.losses))

    def get_config(self):
        return {
            **super().get_config(),
            "losses": [keras.saving.serialize_keras_object(loss) for loss in self.losses],
            "weights": self.weights,
        }


@keras.saving.register_keras_serializable(package="segkit")
class DetailLoss(keras.losses.Loss):
    """STDC's detail aggregation loss (Fan et al., CVPR 2021): binary cross-entropy + Dice between a one-channel
    boundary logit map `(B, H, W, 1)` and `boundary_targets` of the integer mask `(B, H, W)`.

    The cross-entropy is the mean over the labelled pixels of the batch; the Dice loss is STDC's, per image
    (1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1), sums over the labelled pixels), averaged over the batch;
    the two are added with weight 1 each, as STDC trains them. Pixels labelled `ignore_index` carry no loss.
    """

    def __init__(self, ignore_index=255, threshold=0.1, name="detail", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index, self.threshold = int(ignore_index), float(threshold)

    def call(self, y_true, y_pred):
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.squeeze(y_true, axis=-1)
        targets, valid = boundary_targets(y_true, self.ignore_index, self.threshold)
        logits = ops.cast(ops.squeeze(y_pred, axis=-1), "float32")
        # Stable sigmoid cross-entropy on logits: max(x, 0) - x t + log(1 + exp(-|x|)).
        bce = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
        bce = ops.divide_no_nan(ops.sum(bce * valid), ops.sum(valid))
        probabilities, targets = ops.sigmoid(logits) * valid, targets * valid
        dice = 1.0 - (2.0 * ops.sum(probabilities * targets, axis=(1, 2)) + 1.0) / (
            ops.sum(probabilities, axis=(1, 2)) + ops.sum(targets, axis=(1, 2)) + 1.0)
        # Shape (1,), as the other segkit losses: averaged over replicas under a TensorFlow distribution strategy.
        return ops.reshape(bce + ops.mean(dice), (1,))

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index, "threshold": self.threshold}


def boundary_targets(labels, ignore_index=255, threshold=0.1):
    """STDC's binary boundary map of integer masks `(B, H, W)`, and the labelled-pixel mask: both float32 `(B, H, W)`.

    The 3x3 Laplacian of the label ids (8 * label[p] - the sum of its 8 neighbours) is read at strides 1, 2
    and 4 (centres at multiples of the stride, as STDC's strided convolution with padding 1), each level
    thresholded at `threshold` and repeated back to full size (nearest), and the levels fused with mmsegmentation's
    fixed weights 0.6, 0.3, 0.1 (STDC learns a 1x1 convolution there, but its weights get no gradient through
    the threshold) and thresholded again. So a pixel is a boundary when the stride-1 or stride-2 level marks it
    (the stride-4 level's 0.1 alone is not above the threshold). As in STDC, only the side with the higher class
    id of an edge is marked at stride 1.

    Unlike STDC, which convolves the raw ids with zero padding, unlabelled (`ignore_index`) pixels and pixels
    outside the image are no neighbours: the sum runs over the labelled in-image neighbours q of p, of
    label[p] - label[q], and is 0 at an unlabelled p. So neither the image border (a crop's edge) nor an edge
    with void is a boundary; `DetailLoss` also leaves unlabelled pixels out.

    Args:
        labels (tensor): integer class ids `(B, H, W)`, `ignore_index` for unlabelled pixels.
        ignore_index (int): the id of unlabelled pixels.
        threshold (float): STDC's 0.1 for each level and for the fused map.
    """
    labels = ops.cast(labels, "int32")
    valid = ops.cast(labels != ignore_index, "float32")
    response = _laplacian(ops.cast(ops.where(labels != ignore_index, labels, 0), "float32"), valid)
    height, width = ops.shape(labels)[1], ops.shape(labels)[2]
    fused = ops.zeros_like(response)
    for stride, weight in zip(BOUNDARY_STRIDES, BOUNDARY_FUSION):
        level = ops.cast(response[:, ::stride, ::stride] > threshold, "float32")
        level = ops.repeat(ops.repeat(level, stride, axis=1), stride, axis=2)[:, :height, :width]
        fused = fused + weight * level
    return ops.cast(fused > threshold, "float32"), valid


def _laplacian(values, valid):
    """Sum of values[p] - values[q] over the 8 neighbours q of p that are labelled and inside the image; 0 at unlabelled p."""
    height, width = ops.shape(values)[1], ops.shape(values)[2]
    padding = ((0, 0), (1, 1), (1, 1))  # zeros: outside the image is unlabelled
    padded_values, padded_valid = ops.pad(values * valid, padding), ops.pad(valid, padding)
    neighbour_sum, neighbour_count = 0.0, 0.0
    for dy in range(3):
        for dx in range(3):
            if (dy, dx) != (1, 1):
                neighbour_sum = neighbour_sum + padded_values[:, dy:dy + height, dx:dx + width]
                neighbour_count = neighbour_count + padded_valid[:, dy:dy + height, dx:dx + width]
    return valid * (neighbour_count * values - neighbour_sum)


_TERMS = {"ce": CrossEntropy, "dice": SoftDice, "focal": Focal, "lovasz": LovaszSoftmax, "ohem": OhemCrossEntropy}
LOSS_NAMES = ("ce", "dice", "focal", "ce+dice", "focal+dice", "ce+lovasz", "ohem", "ohem+dice", "ohem+lovasz")


def get(name, *, num_classes, class_weights=None, ignore_index=255, from_logits=True, ohem_threshold=0.7, ohem_min_kept=10000,
        lovasz_bins=None, dice_classes="all"):
    """The loss called `name` (one of `LOSS_NAMES`): a single term, or terms joined by "+" summed by `Combined`.

    `ohem_threshold` and `ohem_min_kept` are `OhemCrossEntropy`'s threshold and min_kept (used by the "ohem" losses only),
    `lovasz_bins` is `LovaszSoftmax`'s bins (the "lovasz" losses; None sorts), `dice_classes` is `SoftDice`'s classes
    (the "dice" losses).
    """
    if name not in LOSS_NAMES:
        raise SegkitError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    common = {"num_classes": num_classes, "class_weights": class_weights, "ignore_index": ignore_index, "from_logits": from_logits}
    own_options = {"ohem": {"threshold": ohem_threshold, "min_kept": ohem_min_kept}, "lovasz": {"bins": lovasz_bins},
                   "dice": {"classes": dice_classes}}
    terms = [_TERMS[term](**own_options.get(term, {}), **common) for term in name.split("+")]
    return terms[0] if len(terms) == 1 else Combined(terms, name=name.replace("+", "_"))


def class_weights(class_pixel_share, method="median", max_weight=None):
    """Per-class loss weights from each class's share of the labelled pixels (a manifest's `class_pixel_share`).

    `class_pixel_share` is a sequence in class order, or a mapping class name -> share (read in
    its order). "median" is median-frequency balancing (Eigen & Fergus 2015): median(share) / share,
    the median taken over the classes that occur; "inverse" is 1 / share scaled to mean 1 over the
    classes that occur. A class that never occurs (share 0) gets weight 0: it has no pixels to weigh.
    `max_weight` caps the weight of very rare classes.
    """
    values = class_pixel_share.values() if hasattr(class_pixel_share, "values") else class_pixel_share
    share = np.asarray(list(values), dtype=np.float64)
    if share.ndim != 1 or share.size == 0 or not np.all(np.isfinite(share)) or np.any(share < 0) or share.sum() == 0:
        raise SegkitError(f"class_pixel_share must be non-negative finite numbers, not all 0; got {share.tolist()}")
    occurs = share > 0
    inverse = np.where(occurs, 1.0 / np.where(occurs, share, 1.0), 0.0)
    if method == "median":
        weights = np.median(share[occurs]) * inverse
    elif method == "inverse":
        weights = inverse / inverse[occurs].mean()
    else:
        raise SegkitError(f"unknown class weight method {method!r}; choose median or inverse")
    return weights if max_weight is None else np.minimum(weights, float(max_weight))


def _labels_matching(y_true, y_pred, num_classes):
    """Integer labels (B, H, W) from y_true, after checking the static shapes against y_pred (B, H, W, C)."""
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    same = len(true_shape) + 1 == len(pred_shape) and all(
        a is None or b is None or a == b for a, b in zip(true_shape, pred_shape)
    )
    if not same:
        raise SegkitError(f"mask shape {true_shape} does not match prediction shape {pred_shape} (expected (B, H, W) and (B, H, W, C))")
    if pred_shape[-1] != num_classes:
        raise SegkitError(f"prediction has {pred_shape[-1]} channels but the loss was built for num_classes={num_classes}")
    if 0 in pred_shape:
        raise SegkitError(f"empty prediction of shape {pred_shape}")
    return ops.cast(y_true, "int32")


def _check_concrete_labels(y_true, num_classes, ignore_index):
    """Raises on ids that are neither a class nor the ignore index (possible only with concrete numpy masks)."""
    labels = np.asarray(y_true)
    bad = labels[(labels != ignore_index) & ((labels < 0) | (labels >= num_classes))]
    if bad.size:
        raise SegkitError(f"mask holds label {bad.flat[0]}, outside 0..{num_classes - 1} and not the ignore index {ignore_index}")


def _check_class_weights(weights, num_classes):
    if weights is None:
        return None
    weights = [float(w) for w in np.asarray(weights, dtype=np.float64).ravel()]
    if len(weights) != num_classes or not all(np.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
        raise SegkitError(f"class_weights must be {num_classes} non-negative numbers, not all 0; got {weights}")
    return weights

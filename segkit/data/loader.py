"""Batches for `model.fit` from prepared arrays: shuffling, paired augmentation, optional one-hot targets.

Images come out as float32 RGB in 0..255, not normalised: every segkit model normalises inside itself
(see CONTRIBUTING.md). Masks come out as int32 class indices with 255 = ignore. numpy and OpenCV only,
so the same loader feeds TensorFlow, JAX and PyTorch.
"""

from dataclasses import dataclass

import cv2
import keras
import numpy as np

from segkit.data import sampling
from segkit.data.palette import IGNORE_INDEX
from segkit.errors import SegkitError

__all__ = ["Augment", "holdout_split", "make_loader"]


@dataclass(frozen=True)
class Augment:
    """Random augmentation of an (image, mask) pair.

    Geometry (flip, scale, crop) is one affine warp applied to both: the image with bilinear
    interpolation, the mask with nearest neighbour, areas outside the source padded with 0 (image)
    and 255 = ignore (mask). Colour jitter (brightness, contrast, saturation, each by a factor in
    1 +- color_jitter) changes the image only.

    hflip: probability of a horizontal flip.
    scale: range of the random zoom factor; (1, 1) turns zooming off.
    crop: output (height, width); None keeps the input size.
    color_jitter: strength of the colour jitter; 0 turns it off.
    """

    hflip: float = 0.5
    scale: tuple[float, float] = (0.75, 1.25)
    crop: tuple[int, int] | None = None
    color_jitter: float = 0.2

    def __post_init__(self):
        if not 0 <= self.hflip <= 1:
            raise SegkitError(f"Augment: hflip is a probability in [0, 1], got {self.hflip!r}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise SegkitError(f"Augment: scale must be (low, high) with 0 < low <= high, got {self.scale!r}")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 1):
            raise SegkitError(f"Augment: crop must be (height, width) of positive sizes, got {self.crop!r}")
        if not 0 <= self.color_jitter < 1:
            raise SegkitError(f"Augment: color_jitter must be in [0, 1), got {self.color_jitter!r}")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return tuple(self.crop) if self.crop is not None else (height, width)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Augments a uint8 (H, W, 3) image and (H, W) mask; returns the image as float32 0..255, the mask uint8."""
        out_h, out_w = self.output_size(*mask.shape)
        warp = self._random_warp(mask.shape, (out_h, out_w), rng)
        image = cv2.warpAffine(image, warp, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = cv2.warpAffine(mask, warp, (out_w, out_h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=IGNORE_INDEX)
        if self.color_jitter > 0:
            image = cv2.transform(image, self._random_color_matrix(image, rng))  # saturates to 0..255
        return image.astype(np.float32), mask

    def _random_warp(self, in_shape, out_shape, rng: np.random.Generator) -> np.ndarray:
        """Source-to-output affine matrix: zoom by s about pixel centres, random crop/pad offset, maybe mirror."""
        (in_h, in_w), (out_h, out_w) = in_shape, out_shape
        s = rng.uniform(*self.scale)
        flip = rng.random() < self.hflip
        # Whole-pixel offsets of the output window in the zoomed image (negative: the zoomed image is smaller and
        # gets padded); whole pixels keep an unzoomed crop an exact copy rather than a half-pixel blur.
        oy, ox = (rng.integers(min(0, spare), max(0, spare), endpoint=True)
                  for spare in (int(np.floor(in_h * s)) - out_h, int(np.floor(in_w * s)) - out_w))
        # Pixel centres: output x = s * (x + 0.5) - 0.5 - ox.
        tx, ty = 0.5 * s - 0.5 - ox, 0.5 * s - 0.5 - oy
        if flip:
            return np.array([[-s, 0, out_w - 1 - tx], [0, s, ty]], np.float64)
        return np.array([[s, 0, tx], [0, s, ty]], np.float64)

    def _random_color_matrix(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Saturation, then contrast about the mean grey, then brightness: all linear, so one 3x4 matrix.

        saturation: x -> g + s (x - g) with g = luma(x); contrast: x -> m + c (x - m); brightness: x -> b x.
        """
        brightness, contrast, saturation = rng.uniform(1 - self.color_jitter, 1 + self.color_jitter, 3)
        luma = np.array([0.299, 0.587, 0.114])
        mean_grey = float(np.dot(cv2.mean(image)[:3], luma))
        saturate = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), luma)
        linear = brightness * contrast * saturate
        offset = brightness * (1 - contrast) * mean_grey * np.ones((3, 1))
        return np.hstack([linear, offset])


class SegmentationBatches(keras.utils.PyDataset):
    """(x, y) batches over `indices` of paired image/mask arrays; see `make_loader`."""

    def __init__(self, images, masks, indices, batch_size, *, shuffle, augment, one_hot, num_classes, seed, class_uniform=0.0,
                 **pydataset_kwargs):
        super().__init__(**pydataset_kwargs)
        self.images, self.masks = images, masks
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.one_hot, self.seed = one_hot, seed
        self.class_uniform = class_uniform if shuffle else 0.0
        self.holders = sampling.class_holders(masks, self.indices) if self.class_uniform else None
        if self.class_uniform and not self.holders:
            raise SegkitError(f"class_uniform={class_uniform} needs a class in the masks, but every one of the "
                              f"{len(self.indices)} is ignore (255) or holds each label on under 1/256 of its pixels")
        self.epoch = 0
        self.order = self._order_for(0)
        self._other = (None, None)  # (epoch, order) last drawn for an epoch other than the loader's own
        self.num_classes = num_classes
        # Row 255 of the one-hot lookup is all zeros: ignored pixels get no target at all.
        self.one_hot_rows = np.eye(256, num_classes or 0, dtype=np.float32)

    def _order_for(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        return sampling.epoch_order(self.indices, np.random.default_rng([self.seed, epoch]), class_uniform=self.class_uniform,
                                    holders=self.holders)

    def _other_order(self, epoch: int) -> np.ndarray:
        # Training's _EpochSteps asks for batches by epoch without advancing the loader: draw each epoch's order once.
        drawn_epoch, order = self._other
        if drawn_epoch != epoch:
            order = self._order_for(epoch)
            self._other = (epoch, order)  # one tuple, replaced whole: safe with PyDataset's worker threads
        return order

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order_for(self.epoch)

    def __getitem__(self, batch: int):
        return self.batch_of(self.epoch, batch)

    def batch_of(self, epoch: int, batch: int):
        """Batch `batch` of epoch `epoch`: a function of (seed, epoch, batch) alone, whichever epoch the loader is at."""
        if not 0 <= batch < len(self):
            raise IndexError(f"batch {batch} out of range for {len(self)} batches")
        order = self.order if epoch == self.epoch else self._other_order(epoch)
        picks = order[batch * self.batch_size : (batch + 1) * self.batch_size]
        if self.augment is None:
            x = np.asarray(self.images[picks], np.float32)
            y = np.asarray(self.masks[picks])
        else:
            x, y = self._augmented(picks, epoch, batch)
        return x, self._targets(y)

    def _augmented(self, picks: np.ndarray, epoch: int, batch: int):
        out_h, out_w = self.augment.output_size(*self.masks.shape[1:3])
        x = np.empty((len(picks), out_h, out_w, 3), np.float32)
        y = np.empty((len(picks), out_h, out_w), np.uint8)
        for slot, item in enumerate(picks):
            # One generator per (seed, epoch, position): results do not depend on which worker runs it.
            rng = np.random.default_rng([self.seed, epoch, batch * self.batch_size + slot])
            x[slot], y[slot] = self.augment(np.asarray(self.images[item]), np.asarray(self.masks[item]), rng)
        return x, y

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if not self.one_hot:
            return y.astype(np.int32)
        stray = (y >= self.num_classes) & (y != IGNORE_INDEX)
        if stray.any():
            raise SegkitError(f"mask value {int(y[stray].max())} is neither a class below num_classes={self.num_classes} nor 255")
        return self.one_hot_rows[y]


def make_loader(images, masks, indices, batch_size: int, *, shuffle: bool = True, augment: Augment | None = None,
                one_hot: bool = False, num_classes: int | None = None, seed: int = 0, class_uniform: float = 0.0,
                **pydataset_kwargs) -> keras.utils.PyDataset:
    """A `keras.utils.PyDataset` of (x, y) batches for `model.fit`.

    images: (N, H, W, 3) uint8 array or memmap; masks: (N, H, W) uint8, 255 = ignore.
    indices: which items to serve (e.g. from `holdout_split`). The last batch may be smaller.
    shuffle: a new order after every `on_epoch_end` (Keras also calls it once as `fit` starts), drawn from
        (seed, epoch count), so runs are reproducible.
    class_uniform: with shuffle, the share of each epoch's draws that pick a class uniformly at random, then an item
        holding it (`segkit.data.sampling.epoch_order`); 0 serves every item once per epoch.
    augment: an `Augment`, or None for the items as they are.
    x: float32 (B, H, W, 3) RGB 0..255. y: int32 (B, H, W) with 255 = ignore, or with one_hot=True float32
    (B, H, W, num_classes) where ignored pixels are all zeros.
    pydataset_kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of `keras.utils.PyDataset`.
    """
    _check_arrays(images, masks)
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise SegkitError(f"indices must be a non-empty 1-D array of integers, got shape {indices.shape} dtype {indices.dtype}")
    if indices.min() < 0 or indices.max() >= len(images):
        raise SegkitError(f"indices must lie in [0, {len(images)}), got {indices.min()}..{indices.max()}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise SegkitError(f"batch_size must be a positive integer, got {batch_size!r}")
    if augment is not None and not isinstance(augment, Augment):
        raise SegkitError(f"augment must be a segkit.data.Augment or None, got {type(augment).__name__}")
    if one_hot and (not isinstance(num_classes, (int, np.integer)) or not 0 < num_classes < IGNORE_INDEX):
        raise SegkitError(f"one_hot=True needs num_classes between 1 and 254, got {num_classes!r}")
    if not 0 <= class_uniform <= 1:
        raise SegkitError(f"class_uniform must be a share in [0, 1], got {class_uniform!r}")
    return SegmentationBatches(images, masks, indices, int(batch_size), shuffle=shuffle, augment=augment, one_hot=one_hot,
                               num_classes=num_classes, seed=seed, class_uniform=class_uniform, **pydataset_kwargs)


def _check_arrays(images, masks) -> None:
    if getattr(images, "ndim", None) != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise SegkitError(f"images must be a uint8 array (N, H, W, 3), got {getattr(images, 'shape', type(images))} "
                          f"{getattr(images, 'dtype', '')}")
    if getattr(masks, "ndim", None) != 3 or masks.dtype != np.uint8:
        raise SegkitError(f"masks must be a uint8 array (N, H, W), got {getattr(masks, 'shape', type(masks))} {getattr(masks, 'dtype', '')}")
    if masks.shape != images.shape[:3]:
        raise SegkitError(f"images {images.shape[:3]} and masks {masks.shape} do not pair up")


def holdout_split(num_items: int, val, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of range(num_items) into sorted (train_idx, val_idx).

    val: a count (int >= 1) or a fraction in (0, 1), rounded to the nearest count and at least 1.
    """
    if not isinstance(num_items, (int, np.integer)) or num_items < 2:
        raise SegkitError(f"holdout_split needs at least 2 items, got {num_items!r}")
    if isinstance(val, (float, np.floating)) and 0 < val < 1:
        n_val = max(1, int(round(val * num_items)))
    elif isinstance(val, (int, np.integer)) and not isinstance(val, bool) and val >= 1:
        n_val = int(val)
    else:
        raise SegkitError(f"val must be a count >= 1 or a fraction in (0, 1), got {val!r}")
    if n_val >= num_items:
        raise SegkitError(f"val = {val!r} leaves no training items out of {num_items}")
    order = np.random.default_rng(seed).permutation(num_items)
    return np.sort(order[n_val:]), np.sort(order[:n_val])

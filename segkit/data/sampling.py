"""Which items an epoch of training draws: a plain shuffle, or class-uniform sampling that brings the images of rare
classes round more often (the `class_uniform_pct` of NVIDIA's semantic-segmentation recipe, Zhu et al. 2019)."""

import numpy as np

from segkit.data.palette import IGNORE_INDEX

__all__ = ["MIN_CLASS_SHARE", "class_pixel_counts", "class_holders", "epoch_order"]

# A class counts as in an image from this share of its pixels on: the stray labels that JPEG-blurred edges
# leave in colour-coded masks would otherwise make every image hold nearly every class.
MIN_CLASS_SHARE = 1 / 256


def class_pixel_counts(masks, indices) -> np.ndarray:
    """(len(indices), 255) int64: how many pixels of each label value below 255 (ignore) each listed mask holds."""
    indices = np.asarray(indices, dtype=np.int64)
    counts = np.zeros((len(indices), IGNORE_INDEX), dtype=np.int64)
    for row, item in enumerate(indices):  # one mask at a time: memory stays flat on a memmapped dataset
        counts[row] = np.bincount(np.asarray(masks[item]).ravel(), minlength=256)[:IGNORE_INDEX]
    return counts


def class_holders(masks, indices) -> list[np.ndarray]:
    """For each class some listed mask holds (at least MIN_CLASS_SHARE of its pixels), the items that hold it."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return []
    pixels_per_mask = int(np.prod(np.shape(masks[indices[0]])))
    holds = class_pixel_counts(masks, indices) >= MIN_CLASS_SHARE * pixels_per_mask
    return [indices[holds[:, label]] for label in np.flatnonzero(holds.any(axis=0))]


def epoch_order(indices, rng: np.random.Generator, *, class_uniform: float = 0.0, holders=None) -> np.ndarray:
    """One epoch's draws: len(indices) items.

    class_uniform: the share of draws that pick a class uniformly at random among `holders`, then one of its items
        uniformly; the rest are the first items of a random permutation (each item at most once). 0 is the plain
        permutation of `indices`.
    holders: `class_holders` of the same items (needed when class_uniform > 0).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if not class_uniform:
        return rng.permutation(indices)
    by_class = int(round(class_uniform * len(indices)))
    classes = rng.integers(len(holders), size=by_class)
    sizes = np.array([len(items) for items in holders])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # Item k of class c's holders sits at starts[c] + k of their concatenation; k = floor(u * n_c) is uniform over them.
    positions = starts[classes] + (rng.random(by_class) * sizes[classes]).astype(np.int64)
    picked = np.concatenate(holders)[positions]
    plain = rng.permutation(indices)[: len(indices) - by_class]
    return rng.permutation(np.concatenate([plain, picked]))

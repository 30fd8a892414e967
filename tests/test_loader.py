"""The batch loader: shapes, order and shuffling, one-hot targets, and image/mask alignment under augmentation."""

import keras
import numpy as np
import pytest

from segkit.data import Augment, holdout_split, make_loader
from segkit.errors import SegkitError

pytestmark = pytest.mark.backend_agnostic

CODE = 13  # images encode their own mask: channel 0 = 13 * class


def _self_describing(n=10, h=24, w=32, seed=0, block=4):
    """Masks of random square blocks (values 0..18, some 255) and images whose channel 0 is 13 * mask."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 19, (n, h // block, w // block)).astype(np.uint8)
    blocks[rng.random(blocks.shape) < 0.1] = 255
    masks = blocks.repeat(block, axis=1).repeat(block, axis=2)
    images = np.zeros((n, h, w, 3), np.uint8)
    images[..., 0] = np.where(masks == 255, 0, masks * CODE)
    images[..., 1] = rng.integers(0, 256, (n, h, w))  # noise, so a flipped image is never its own mirror
    return images, masks


def _epoch(loader):
    xs, ys = zip(*(loader[i] for i in range(len(loader))))
    return np.concatenate(xs), np.concatenate(ys)


def test_batches_cover_the_indices_once_with_a_partial_last_batch():
    images, masks = _self_describing(n=10)
    indices = np.array([7, 2, 9, 4, 0, 5, 3])
    loader = make_loader(images, masks, indices, 3, shuffle=False)
    assert len(loader) == 3
    shapes = [(loader[i][0].shape, loader[i][1].shape) for i in range(3)]
    assert shapes == [((3, 24, 32, 3), (3, 24, 32))] * 2 + [((1, 24, 32, 3), (1, 24, 32))]
    x, y = loader[0]
    assert x.dtype == np.float32 and y.dtype == np.int32
    x, y = _epoch(loader)
    np.testing.assert_array_equal(x, images[indices].astype(np.float32))  # raw 0..255, not rescaled
    np.testing.assert_array_equal(y, masks[indices].astype(np.int32))
    with pytest.raises(IndexError):
        loader[3]


def test_shuffle_reorders_each_epoch_deterministically_from_the_seed():
    images, masks = _self_describing(n=12)
    indices = np.arange(12)
    a, b, c = (make_loader(images, masks, indices, 5, seed=s) for s in (1, 1, 2))
    first_a, first_b, first_c = (_item_order(ld, images) for ld in (a, b, c))
    assert sorted(first_a) == list(range(12))
    assert first_a == first_b and first_a != first_c and first_a != list(range(12))
    a.on_epoch_end()
    b.on_epoch_end()
    second_a = _item_order(a, images)
    assert second_a != first_a and sorted(second_a) == list(range(12))
    assert second_a == _item_order(b, images)


def _item_order(loader, images):
    """Which source item each served image is, found by exact comparison with every item."""
    x, _ = _epoch(loader)
    flat = images.reshape(len(images), -1).astype(np.float32)
    return [int(np.flatnonzero((flat == row).all(1))[0]) for row in x.reshape(len(x), -1)]


def test_batches_do_not_depend_on_the_order_they_are_asked_for():
    """Workers fetch batches in any order: each batch must be a function of (seed, epoch, batch) only."""
    images, masks = _self_describing(n=9)
    augment = Augment(hflip=0.5, scale=(0.8, 1.2), crop=(16, 16), color_jitter=0.3)
    forward = make_loader(images, masks, np.arange(9), 2, augment=augment, seed=4)
    backward = make_loader(images, masks, np.arange(9), 2, augment=augment, seed=4)
    got_backward = {i: backward[i] for i in reversed(range(len(backward)))}
    for i in range(len(forward)):
        x, y = forward[i]
        np.testing.assert_array_equal(x, got_backward[i][0])
        np.testing.assert_array_equal(y, got_backward[i][1])


def test_one_hot_matches_brute_force_and_ignored_pixels_are_all_zero():
    images, masks = _self_describing(n=4)
    _, y = make_loader(images, masks, np.arange(4), 4, shuffle=False, one_hot=True, num_classes=19)[0]
    assert y.shape == (4, 24, 32, 19) and y.dtype == np.float32
    for c in range(19):
        np.testing.assert_array_equal(y[..., c], (masks == c).astype(np.float32))
    np.testing.assert_array_equal(y.sum(-1), (masks != 255).astype(np.float32))


def test_one_hot_rejects_mask_values_beyond_num_classes():
    images, masks = _self_describing(n=2)
    with pytest.raises(SegkitError, match="num_classes=5"):
        make_loader(images, masks, [0, 1], 2, one_hot=True, num_classes=5)[0]


def test_flip_and_crop_move_image_and_mask_together_exactly():
    """Unzoomed: every output is an exact window of the pair or of its mirror, and both halves agree.

    A flip (or crop) applied to one side only breaks the image-encodes-mask identity.
    """
    images, masks = _self_describing(n=40)
    augment = Augment(hflip=0.5, scale=(1.0, 1.0), crop=(24, 20), color_jitter=0.0)
    x, y = _epoch(make_loader(images, masks, np.arange(40), 8, augment=augment, shuffle=False, seed=3))
    flipped = 0
    for item in range(40):
        windows = {}
        for mirrored, (img, msk) in ((False, (images[item], masks[item])), (True, (images[item, :, ::-1], masks[item, :, ::-1]))):
            for left in range(32 - 20 + 1):
                if np.array_equal(img[:, left : left + 20], x[item]):
                    windows[mirrored] = left
                    np.testing.assert_array_equal(msk[:, left : left + 20], y[item])
        assert len(windows) == 1, f"item {item}: output is not a window of the pair or its mirror"
        flipped += True in windows
    assert 8 <= flipped <= 32  # hflip=0.5 over 40 items


def test_zoom_keeps_image_and_mask_aligned_and_mask_values_discrete():
    images, masks = _self_describing(n=24, h=48, w=64, block=8)
    augment = Augment(hflip=0.5, scale=(0.5, 1.6), crop=(40, 56), color_jitter=0.0)
    x, y = _epoch(make_loader(images, masks, np.arange(24), 6, augment=augment, seed=9))
    assert x.shape == (24, 40, 56, 3) and y.shape == (24, 40, 56)
    # Nearest neighbour only: no value between classes ever appears in a mask.
    assert set(np.unique(y)) <= set(np.unique(masks))
    valid = y != 255
    decoded = np.round(x[..., 0] / CODE)
    # Bilinear image vs nearest mask differ only along block edges.
    assert (decoded[valid] == y[valid]).mean() > 0.8
    # Padding (zoomed-out items smaller than the crop): ignore in the mask, black in the image.
    pad = (y == 255) & (x.sum(-1) == 0)
    assert pad.any()


def test_zoom_factor_and_flip_direction_follow_the_warp():
    """A mask holding its column index: zoom x2 repeats every column twice, a flip makes rows count down."""
    masks = np.broadcast_to(np.arange(64, dtype=np.uint8), (2, 8, 64)).copy()
    images = np.repeat(masks[..., None], 3, axis=-1)
    for hflip, step in ((0.0, 1), (1.0, -1)):
        augment = Augment(hflip=hflip, scale=(2.0, 2.0), crop=(8, 64), color_jitter=0.0)
        _, y = make_loader(images, masks, [0, 1], 2, augment=augment, shuffle=False)[0]
        row = y[0, 4]
        assert set(np.diff(row)) <= {0, step}
        _, counts = np.unique(row, return_counts=True)
        assert np.all(counts[1:-1] == 2)


def test_color_jitter_changes_the_image_only():
    images, masks = _self_describing(n=6)
    augment = Augment(hflip=0.0, scale=(1.0, 1.0), color_jitter=0.5)
    x, y = _epoch(make_loader(images, masks, np.arange(6), 3, augment=augment, shuffle=False))
    np.testing.assert_array_equal(y, masks)
    assert np.abs(x - images).max() > 10
    assert x.min() >= 0 and x.max() <= 255


class _RecordOrder(keras.callbacks.Callback):
    def __init__(self, loader):
        super().__init__()
        self.loader, self.orders = loader, []

    def on_epoch_begin(self, epoch, logs=None):
        self.orders.append(self.loader.order.tolist())


def _fit_orders(seed):
    images, masks = _self_describing(n=8, h=16, w=16)
    loader = make_loader(images, masks, np.arange(8), 4, augment=Augment(crop=(16, 16)), seed=seed)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(19, 1)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    recorder = _RecordOrder(loader)
    history = model.fit(loader, epochs=3, verbose=0, callbacks=[recorder])
    assert len(history.history["loss"]) == 3
    return recorder.orders


def test_color_jitter_keeps_greys_grey_and_their_order():
    """Brightness, contrast and saturation change grey levels monotonically and never tint a grey."""
    ramp = np.linspace(0, 255, 32 * 32).reshape(1, 32, 32, 1).round().astype(np.uint8)
    images = np.repeat(np.repeat(ramp, 3, axis=-1), 8, axis=0)
    masks = np.zeros((8, 32, 32), np.uint8)
    augment = Augment(hflip=0.0, scale=(1.0, 1.0), color_jitter=0.4)
    x, _ = _epoch(make_loader(images, masks, np.arange(8), 8, augment=augment, shuffle=False))
    assert np.abs(x[..., 0] - x[..., 1]).max() <= 1 and np.abs(x[..., 1] - x[..., 2]).max() <= 1
    assert np.all(np.diff(x[..., 0].reshape(8, -1), axis=1) >= 0)
    assert len({float(v) for v in x[:, 16, 16, 0]}) > 4  # each item gets its own factors


def test_fit_reshuffles_every_epoch_reproducibly():
    orders = _fit_orders(seed=0)
    assert all(sorted(order) == list(range(8)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3
    assert _fit_orders(seed=0) == orders


def test_holdout_split_partitions_the_items():
    train, val = holdout_split(50, 0.2, seed=1)
    assert len(val) == 10 and len(train) == 40
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(50))
    again, _ = holdout_split(50, 0.2, seed=1)
    other, _ = holdout_split(50, 0.2, seed=2)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    assert len(holdout_split(50, 7)[1]) == 7


@pytest.mark.parametrize("num_items, val", [(50, 0), (50, 1.0), (50, 50), (1, 0.5), (50, "10"), (50, True)])
def test_holdout_split_rejects_bad_sizes(num_items, val):
    with pytest.raises(SegkitError):
        holdout_split(num_items, val)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda im, m: (im.astype(np.float32), m, [0], 1, {}), "images"),
        (lambda im, m: (im, m[:, :-1], [0], 1, {}), "pair up"),
        (lambda im, m: (im, m, [0, 10], 1, {}), "indices"),
        (lambda im, m: (im, m, [], 1, {}), "indices"),
        (lambda im, m: (im, m, [0], 0, {}), "batch_size"),
        (lambda im, m: (im, m, [0], 1, {"one_hot": True}), "num_classes"),
        (lambda im, m: (im, m, [0], 1, {"augment": "flip"}), "Augment"),
        (lambda im, m: (im, m, [0], 1, {"class_uniform": 1.5}), "class_uniform must be a share in \\[0, 1\\], got 1.5"),
    ],
)
def test_bad_arguments_raise_one_line_errors(change, message):
    images, masks, indices, batch_size, kwargs = change(*_self_describing(n=10))
    with pytest.raises(SegkitError, match=message) as err:
        make_loader(images, masks, indices, batch_size, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [{"hflip": 2}, {"scale": (1.2, 0.8)}, {"crop": (0, 5)}, {"color_jitter": 1.5}])
def test_bad_augment_settings_raise(kwargs):
    with pytest.raises(SegkitError):
        Augment(**kwargs)


def test_batch_of_any_epoch_equals_that_epochs_batch_after_its_shuffles():
    images, masks = _self_describing(n=8, h=16, w=16)
    loader = make_loader(images, masks, np.arange(8), 3, augment=Augment(crop=(16, 16)), seed=4)
    wanted = [loader.batch_of(epoch, 1) for epoch in range(3)]
    for epoch in range(3):
        x, y = loader[1]
        np.testing.assert_array_equal(x, wanted[epoch][0])
        np.testing.assert_array_equal(y, wanted[epoch][1])
        loader.on_epoch_end()
    assert not np.array_equal(wanted[0][1], wanted[1][1])

"""Class-uniform sampling: class presence counted against brute force, and each item's draw rate against the
probability worked out from the holders (pick a class uniformly, then one of its items)."""

import numpy as np
import pytest

from segkit.data import make_loader
from segkit.data.sampling import MIN_CLASS_SHARE, class_holders, class_pixel_counts, epoch_order
from segkit.errors import SegkitError
from segkit.workflows import config


def _masks():
    """Five 32x32 masks (a class is held from 1024 / 256 = 4 pixels on) with known class pixels."""
    masks = np.full((5, 32, 32), 255, np.uint8)
    masks[0] = 0                       # road everywhere
    masks[1, :16] = 0
    masks[1, 16, :3] = 7               # 3 pixels of class 7: a stray edge, not held
    masks[2, :8] = 0
    masks[2, 20, :4] = 7               # 4 pixels: held
    masks[3, :2, :5] = 9               # 10 pixels of class 9, the rest ignored
    masks[4, :, :] = 0
    masks[4, 0, :4] = 9
    return masks


def test_class_pixel_counts_match_brute_force():
    masks = _masks()
    counts = class_pixel_counts(masks, [4, 1, 3])
    expected = [[np.sum(masks[i] == c) for c in range(255)] for i in (4, 1, 3)]
    np.testing.assert_array_equal(counts, expected)


def test_a_class_is_held_from_the_minimum_share_of_pixels_on():
    assert MIN_CLASS_SHARE * 32 * 32 == 4
    holders = class_holders(_masks(), np.arange(5))
    assert [h.tolist() for h in holders] == [[0, 1, 2, 4], [2], [3, 4]]  # classes 0, 7, 9
    assert [h.tolist() for h in class_holders(_masks(), [1, 3])] == [[1], [3]]  # class 7's 3 pixels do not count


def test_without_class_uniform_the_order_is_the_plain_shuffle_runs_had_before():
    indices = np.arange(3, 40)
    order = epoch_order(indices, np.random.default_rng([5, 2]))
    np.testing.assert_array_equal(order, np.random.default_rng([5, 2]).permutation(indices))


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_each_item_is_drawn_at_the_rate_class_uniform_sampling_gives_it(share):
    indices = np.arange(5)
    holders = class_holders(_masks(), indices)
    epochs = 4000
    counts = np.zeros(5)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = epoch_order(indices, rng, class_uniform=share, holders=holders)
        assert len(order) == 5
        counts += np.bincount(order, minlength=5)
    by_class = round(share * 5)
    # Per epoch: the plain part serves 5 - by_class distinct items of a permutation; each class-uniform draw picks
    # class c with 1/3 and then each of its n_c holders with 1/n_c.
    per_draw = np.zeros(5)
    for items in holders:
        per_draw[items] += 1 / len(holders) / len(items)
    expected = (5 - by_class) / 5 + by_class * per_draw
    np.testing.assert_allclose(counts / epochs, expected, atol=0.05)
    assert expected.argmax() == 2 and expected[0] < 1  # the only image with class 7 comes round most often


def test_the_loader_draws_class_uniformly_only_when_it_shuffles():
    masks = _masks()
    images = np.zeros((5, 32, 32, 3), np.uint8)
    images[..., 0] = np.arange(5)[:, None, None]  # each image names its item
    shuffled = make_loader(images, masks, np.arange(5), 5, class_uniform=1.0, seed=3)
    served = np.concatenate([shuffled.batch_of(epoch, 0)[0][:, 0, 0, 0] for epoch in range(400)]).astype(int)
    assert np.bincount(served, minlength=5)[2] > 1.5 * 400  # class 7's only image: about 2.1 an epoch, not 1
    in_order = make_loader(images, masks, np.arange(5), 5, shuffle=False, class_uniform=1.0)
    np.testing.assert_array_equal(in_order[0][0][:, 0, 0, 0], np.arange(5))


def test_a_class_uniform_share_outside_0_1_is_refused():
    assert config.load({"data": {"path": "x"}, "train": {"class_uniform": 0.5}})["train"]["class_uniform"] == 0.5
    with pytest.raises(SegkitError, match=r"'train.class_uniform' must be a share in \[0, 1\], got 1.5"):
        config.load({"data": {"path": "x"}, "train": {"class_uniform": 1.5}})


def test_class_uniform_sampling_of_masks_holding_no_class_is_refused_in_one_line():
    masks = np.full((3, 32, 32), 255, np.uint8)
    masks[:, 0, :3] = 4  # 3 pixels: under the 4 that hold a class
    with pytest.raises(SegkitError, match=r"^class_uniform=0.5 needs a class in the masks, but every one of the 3 is ignore"):
        make_loader(np.zeros((3, 32, 32, 3), np.uint8), masks, np.arange(3), 2, class_uniform=0.5)

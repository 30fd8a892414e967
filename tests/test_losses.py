"""segkit.losses against numpy reference formulas, with ignore pixels, class weights and gradients."""

import keras
import numpy as np
import pytest

from segkit import losses
from segkit.data import make_loader
from segkit.errors import SegkitError
from segkit.metrics import MeanIoU

pytestmark = pytest.mark.backend_agnostic

IGNORE = 255
CLASSES = 4


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def reference_ce(y, logits, weights=None, gamma=0.0):
    """Class-weighted mean over labelled pixels of -(1 - p_t)^gamma log p_t, pixel by pixel."""
    probabilities = softmax(logits.astype(np.float64))
    weights = np.ones(logits.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    total, weight_sum = 0.0, 0.0
    for index in zip(*np.nonzero(y != IGNORE)):
        p_true = probabilities[index][y[index]]
        total += weights[y[index]] * -((1 - p_true) ** gamma) * np.log(p_true)
        weight_sum += weights[y[index]]
    return total / weight_sum if weight_sum else 0.0


def reference_dice(y, logits, weights=None, smooth=1.0, present_only=False):
    probabilities = softmax(logits.astype(np.float64))
    valid = y != IGNORE
    weights = np.ones(logits.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    per_class, used = [], []
    for c in range(logits.shape[-1]):
        p = probabilities[..., c][valid]
        t = (y[valid] == c).astype(np.float64)
        if present_only and t.sum() == 0:
            continue
        per_class.append(1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth))
        used.append(weights[c])
    return float(np.dot(used, per_class) / np.sum(used))


def reference_ohem(y, logits, weights=None, threshold=0.7, min_kept=10000):
    """mmseg's OHEMPixelSampler, pixel by pixel: keep p_true < max(threshold, k-th smallest p_true), k = min_kept * batch."""
    probabilities = softmax(logits.astype(np.float64))
    weights = np.ones(logits.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    labelled = list(zip(*np.nonzero(y != IGNORE)))
    p_true = np.array([probabilities[index][y[index]] for index in labelled])
    if not labelled:
        return 0.0
    cut = max(threshold, sorted(p_true)[min(min_kept * y.shape[0], len(p_true) - 1)])
    kept = [(index, p) for index, p in zip(labelled, p_true) if p < cut]
    total = sum(weights[y[index]] * -np.log(p) for index, p in kept)
    weight_sum = sum(weights[y[index]] for index, _ in kept)
    return total / weight_sum if weight_sum else 0.0


def reference_lovasz(y, logits, weights=None):
    """The authors' lovasz_softmax_flat (classes="present") in numpy, one class at a time, ignored pixels removed."""
    probabilities = softmax(logits.astype(np.float64))[y != IGNORE]
    labels = y[y != IGNORE]
    weights = np.ones(logits.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    per_class, used = [], []
    for c in range(logits.shape[-1]):
        fg = (labels == c).astype(np.float64)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - probabilities[:, c])
        order = np.argsort(-errors, kind="stable")
        fg_sorted = fg[order]
        jaccard = 1 - (fg.sum() - np.cumsum(fg_sorted)) / (fg.sum() + np.cumsum(1 - fg_sorted))
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        per_class.append(errors[order] @ jaccard)
        used.append(weights[c])
    return float(np.dot(used, per_class) / np.sum(used))


def sample(seed=0, shape=(2, 5, 6)):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES - 1, shape)  # the last class is absent from the truth
    y[rng.random(shape) < 0.3] = IGNORE
    logits = rng.normal(scale=2.0, size=shape + (CLASSES,)).astype("float32")
    return y.astype("int32"), logits


WEIGHTS = [0.5, 2.0, 1.0, 3.0]
REFERENCES = {
    "ce": lambda y, z, w: reference_ce(y, z, w),
    "focal": lambda y, z, w: reference_ce(y, z, w, gamma=2.0),
    "dice": lambda y, z, w: reference_dice(y, z, w),
    "ce+dice": lambda y, z, w: reference_ce(y, z, w) + reference_dice(y, z, w),
    "focal+dice": lambda y, z, w: reference_ce(y, z, w, gamma=2.0) + reference_dice(y, z, w),
    "ce+lovasz": lambda y, z, w: reference_ce(y, z, w) + reference_lovasz(y, z, w),
    "ohem": lambda y, z, w: reference_ohem(y, z, w),
    "ohem+dice": lambda y, z, w: reference_ohem(y, z, w) + reference_dice(y, z, w),
    "ohem+lovasz": lambda y, z, w: reference_ohem(y, z, w) + reference_lovasz(y, z, w),
}


def value(loss, y, y_pred):
    return float(keras.ops.convert_to_numpy(loss(y, y_pred)))


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_loss_matches_numpy_reference_for_logits_and_probabilities(name, weights):
    y, logits = sample()
    expected = REFERENCES[name](y, logits, weights)
    on_logits = losses.get(name, num_classes=CLASSES, class_weights=weights)
    on_probabilities = losses.get(name, num_classes=CLASSES, class_weights=weights, from_logits=False)
    assert value(on_logits, y, logits) == pytest.approx(expected, rel=1e-5)
    assert value(on_probabilities, y, softmax(logits).astype("float32")) == pytest.approx(expected, rel=1e-4)
    assert value(on_logits, y[..., None], logits) == pytest.approx(expected, rel=1e-5)  # (B, H, W, 1) masks


@pytest.mark.parametrize("bins", [2, 16, 1024])
@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_binned_lovasz_is_within_one_bin_width_of_the_sorted_one(bins, weights):
    # The Jaccard steps are non-negative and sum to at most 1 per class, so tying the errors within a bin moves the
    # loss by less than the bin's width.
    for seed in range(3):
        y, logits = sample(seed, shape=(2, 9, 11))
        binned = value(losses.LovaszSoftmax(CLASSES, class_weights=weights, bins=bins), y, logits)
        assert abs(binned - reference_lovasz(y, logits, weights)) <= 1 / bins + 1e-6


def test_binned_lovasz_by_hand():
    # Two classes, four pixels labelled 0, 0, 1, 1 with p(class 0) = 0.9, 0.6, 0.3, 0.2. Both classes' errors are
    # 0.1, 0.4, 0.3, 0.2. Sorted, class 0 meets fg, bg, bg, fg: Jaccard 1/2, 2/3, 3/4, 1, steps 1/2, 1/6, 1/12, 1/4,
    # loss 0.4/2 + 0.3/6 + 0.2/12 + 0.1/4 = 7/24. Class 1 meets bg, fg, fg, bg: Jaccard 1/3, 2/3, 1, 1, loss
    # (0.4 + 0.3 + 0.2)/3 = 3/10. Mean 71/240. Two bins put all four errors in the lower one: its mean error 0.25
    # times its whole step 1, for each class. Eight bins separate them, giving the sorted value again.
    y = np.array([[[0, 0, 1, 1]]], dtype="int32")
    p0 = np.array([0.9, 0.6, 0.3, 0.2], dtype="float32")
    probabilities = np.stack([p0, 1 - p0], axis=-1)[None, None]
    assert value(losses.LovaszSoftmax(2, from_logits=False), y, probabilities) == pytest.approx(71 / 240, rel=1e-6)
    assert value(losses.LovaszSoftmax(2, from_logits=False, bins=8), y, probabilities) == pytest.approx(71 / 240, rel=1e-6)
    assert value(losses.LovaszSoftmax(2, from_logits=False, bins=2), y, probabilities) == pytest.approx(0.25, rel=1e-6)


def test_binned_lovasz_gradient_is_finite_and_zero_on_ignored_pixels():
    y, logits = sample(seed=1)
    grad = gradient(losses.get("ohem+lovasz", num_classes=CLASSES, ohem_threshold=1.0, lovasz_bins=64), y, logits)
    assert np.all(np.isfinite(grad)) and np.all(grad[y == IGNORE] == 0)
    assert np.all(np.abs(grad[y != IGNORE]).sum(axis=-1) > 0)


@pytest.mark.parametrize("bins", [1, 0, 2.5, True, "64"])
def test_lovasz_bins_must_be_an_integer_of_at_least_two(bins):
    with pytest.raises(SegkitError, match="Lovasz bins must be an integer of at least 2 or None"):
        losses.LovaszSoftmax(CLASSES, bins=bins)


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_dice_over_present_classes_matches_numpy_reference(weights):
    y, logits = sample()  # the last class is absent, so "present" and "all" differ
    present = reference_dice(y, logits, weights, present_only=True)
    assert present != pytest.approx(reference_dice(y, logits, weights), rel=1e-3)
    assert value(losses.SoftDice(CLASSES, class_weights=weights, classes="present"), y, logits) == pytest.approx(present, rel=1e-5)
    combined = losses.get("ohem+dice", num_classes=CLASSES, class_weights=weights, dice_classes="present")
    assert value(combined, y, logits) == pytest.approx(reference_ohem(y, logits, weights) + present, rel=1e-5)


def test_dice_over_present_classes_by_hand():
    # Two pixels of class 0, each predicted 0.5 / 0.5, smooth 1. Class 0: (2 * 1 + 1) / (1 + 2 + 1) = 3/4, loss 1/4.
    # Class 1, absent: (0 + 1) / (1 + 0 + 1) = 1/2, loss 1/2. All classes: mean 3/8; present only: 1/4.
    y = np.array([[[0, 0]]], dtype="int32")
    probabilities = np.full((1, 1, 2, 2), 0.5, dtype="float32")
    assert value(losses.SoftDice(2, from_logits=False), y, probabilities) == pytest.approx(3 / 8, rel=1e-6)
    assert value(losses.SoftDice(2, from_logits=False, classes="present"), y, probabilities) == pytest.approx(1 / 4, rel=1e-6)


def test_dice_classes_must_be_all_or_present():
    with pytest.raises(SegkitError, match="Dice classes must be one of all, present, got 'absent'"):
        losses.SoftDice(CLASSES, classes="absent")


def test_class_weights_shift_the_loss_towards_the_weighted_class():
    y = np.array([[[0, 0, 1, 1]]], dtype="int32")
    logits = np.array([[[[3.0, 0], [3, 0], [0, 1], [0, 1]]]], dtype="float32")  # class 0 confident, class 1 less so
    plain = value(losses.CrossEntropy(2), y, logits)
    favour_1 = value(losses.CrossEntropy(2, class_weights=[1.0, 4.0]), y, logits)
    ce_0, ce_1 = -np.log(softmax(logits[0, 0, 0])[0]), -np.log(softmax(logits[0, 0, 2])[1])
    assert plain == pytest.approx((ce_0 + ce_1) / 2, rel=1e-5)
    assert favour_1 == pytest.approx((ce_0 + 4 * ce_1) / 5, rel=1e-5)
    assert favour_1 > plain


def gradient(loss, y, logits):
    """d loss / d logits with the backend's own autodiff."""
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(lambda z: loss(y, z))(logits))
    import tensorflow as tf

    z = tf.Variable(logits)
    with tf.GradientTape() as tape:
        result = loss(y, z)
    return tape.gradient(result, z).numpy()


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_gradients_are_finite_nonzero_and_zero_on_ignored_pixels(name):
    y, logits = sample(seed=1)
    # ohem_threshold=1 keeps every labelled pixel (p < 1): OHEM gives no gradient to the easy pixels it drops.
    grad = gradient(losses.get(name, num_classes=CLASSES, ohem_threshold=1.0), y, logits)
    assert np.all(np.isfinite(grad))
    labelled = y != IGNORE
    assert np.all(np.abs(grad[labelled]).sum(axis=-1) > 0)
    assert np.all(grad[~labelled] == 0)


def test_cross_entropy_gradient_is_softmax_minus_one_hot_over_weights():
    y, logits = sample(seed=2)
    grad = gradient(losses.CrossEntropy(CLASSES, class_weights=WEIGHTS), y, logits)
    labelled = y != IGNORE
    pixel_weight = np.where(labelled, np.take(WEIGHTS, np.where(labelled, y, 0)), 0.0)
    one_hot = np.eye(CLASSES)[np.where(labelled, y, 0)]
    expected = (softmax(logits.astype(np.float64)) - one_hot) * (pixel_weight / pixel_weight.sum())[..., None]
    np.testing.assert_allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_logits_at_ignored_pixels_do_not_change_the_loss(name):
    y, logits = sample(seed=3)
    scrambled = logits.copy()
    scrambled[y == IGNORE] = np.random.default_rng(9).normal(scale=50, size=scrambled[y == IGNORE].shape)
    loss = losses.get(name, num_classes=CLASSES)
    assert value(loss, y, scrambled) == value(loss, y, logits)


def test_perfect_prediction_gives_near_zero_dice_and_cross_entropy():
    y = np.array([[[0, 1, 2], [2, 1, IGNORE]]], dtype="int32")  # class 3 absent
    logits = 30.0 * np.eye(CLASSES, dtype="float32")[np.where(y == IGNORE, 3, y)]
    logits[y == IGNORE] = np.array([0, 0, 0, 30.0]) * -1  # wrong, but ignored
    assert value(losses.SoftDice(CLASSES), y, logits) < 1e-6
    assert value(losses.CrossEntropy(CLASSES), y, logits) < 1e-6
    assert value(losses.SoftDice(CLASSES), y, -logits) > 0.5  # and a wrong one is far from 0


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_absent_classes_and_all_ignored_batches_stay_finite(name):
    loss = losses.get(name, num_classes=CLASSES)
    _, logits = sample(seed=4)
    only_class_0 = np.zeros(logits.shape[:-1], dtype="int32")
    all_ignored = np.full(logits.shape[:-1], IGNORE, dtype="int32")
    assert np.isfinite(value(loss, only_class_0, logits))
    assert value(loss, all_ignored, logits) == 0.0
    assert np.all(gradient(loss, all_ignored, logits) == 0)


def test_focal_with_gamma_zero_is_cross_entropy():
    y, logits = sample(seed=5)
    assert value(losses.Focal(CLASSES, gamma=0.0), y, logits) == pytest.approx(value(losses.CrossEntropy(CLASSES), y, logits), rel=1e-6)


def tiny_model():
    inputs = keras.Input((6, 8, 3))
    return keras.Model(inputs, keras.layers.Conv2D(CLASSES, 3, padding="same")(inputs))


@pytest.mark.parametrize("name", ["ce+dice", "focal", "ce+lovasz", "ohem"])
def test_one_fit_step_moves_every_weight_by_a_finite_amount(name):
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 255, (4, 6, 8, 3)).astype("float32") / 255
    y = rng.integers(0, CLASSES, (4, 6, 8)).astype("int32")
    y[:, :2] = IGNORE
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.get(name, num_classes=CLASSES))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for old, new in zip(before, model.get_weights()):
        assert np.all(np.isfinite(new)) and np.any(old != new)


def test_compiled_model_with_segkit_loss_and_metric_saves_and_loads(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 6, 8, 3)).astype("float32")
    y = rng.integers(0, CLASSES, (3, 6, 8)).astype("int32")
    y[0, 0] = IGNORE
    model = tiny_model()
    loss = losses.get("ce+dice", num_classes=CLASSES, class_weights=WEIGHTS)
    model.compile(optimizer="adam", loss=loss, metrics=[MeanIoU(CLASSES, name="miou")])
    before = model.evaluate(x, y, return_dict=True, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.loss.get_config() == loss.get_config()
    after = loaded.evaluate(x, y, return_dict=True, verbose=0)
    assert after == pytest.approx(before, rel=1e-6)


def test_labels_out_of_range_inside_a_graph_are_masked_like_ignore():
    # A traced graph cannot raise on data: such labels get no loss (segkit.data rejects them earlier).
    y, logits = sample(seed=8)
    inputs = keras.Input((5, 6, CLASSES))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss=losses.CrossEntropy(CLASSES))
    out_of_range = np.where(y == IGNORE, 7, y)
    assert model.evaluate(logits, out_of_range, verbose=0) == pytest.approx(model.evaluate(logits, y, verbose=0))


def test_class_weights_from_pixel_shares_by_hand():
    shares = [0.5, 0.3, 0.2, 0.0]
    # median over the classes that occur (0.5, 0.3, 0.2) is 0.3 -> 0.3 / share; the absent class gets 0
    np.testing.assert_allclose(losses.class_weights(shares), [0.6, 1.0, 1.5, 0.0])
    inverse = np.array([2, 10 / 3, 5])
    np.testing.assert_allclose(losses.class_weights(shares, method="inverse"), list(inverse / inverse.mean()) + [0.0])
    np.testing.assert_allclose(losses.class_weights({"road": 0.9, "pole": 0.1}, max_weight=2.0), [0.5 / 0.9, 2.0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: losses.get("iou", num_classes=3), "unknown loss 'iou'; choose one of ce, dice, focal, ce\\+dice"),
        (lambda: losses.get("ce", num_classes=3, class_weights=[1, 2]), "class_weights must be 3"),
        (lambda: losses.class_weights([0.5, -0.1]), "non-negative"),
        (lambda: losses.class_weights([0, 0]), "not all 0"),
        (lambda: losses.class_weights([0.5, 0.5], method="log"), "unknown class weight method"),
        (lambda: losses.Focal(3, gamma=-1), "gamma"),
        (lambda: losses.SoftDice(3, smooth=0), "smooth"),
    ],
)
def test_bad_arguments_raise_one_line(call, message):
    with pytest.raises(SegkitError, match=message):
        call()


@pytest.mark.parametrize(
    "y, logits, message",
    [
        (np.zeros((2, 5, 5), "int32"), np.zeros((2, 5, 6, CLASSES), "float32"), "does not match prediction shape"),
        (np.zeros((2, 5, 6), "int32"), np.zeros((2, 5, 6, 3), "float32"), "3 channels"),
        (np.full((2, 5, 6), 9, "int32"), np.zeros((2, 5, 6, CLASSES), "float32"), "label 9, outside 0..3"),
        (np.zeros((0, 5, 6), "int32"), np.zeros((0, 5, 6, CLASSES), "float32"), "empty"),
    ],
)
@pytest.mark.parametrize("name", ["ce", "ce+dice"])
def test_bad_masks_raise_one_line(name, y, logits, message):
    with pytest.raises(SegkitError, match=message):
        losses.get(name, num_classes=CLASSES)(y, logits)


def test_sample_weight_is_refused():
    y, logits = sample()
    with pytest.raises(SegkitError, match="takes no sample_weight"):
        losses.CrossEntropy(CLASSES)(y, logits, sample_weight=np.ones(2))


@pytest.mark.parametrize("threshold, min_kept", [(0.7, 3), (0.2, 3), (0.2, 0), (1.0, 0)])
def test_ohem_keeps_the_pixels_mmseg_would(threshold, min_kept):
    y, logits = sample(seed=11)
    loss = losses.OhemCrossEntropy(CLASSES, threshold=threshold, min_kept=min_kept, class_weights=WEIGHTS)
    assert value(loss, y, logits) == pytest.approx(reference_ohem(y, logits, WEIGHTS, threshold, min_kept), rel=1e-5)


@pytest.mark.parametrize("threshold, min_kept, kept", [
    (0.5, 1, [0.3, 0.1]),  # the 2nd smallest is 0.3: the threshold max(0.5, 0.3) = 0.5 decides
    (0.2, 3, [0.6, 0.3, 0.1]),  # only 0.1 is below 0.2: the 4th smallest, 0.9, decides (p < 0.9 is kept)
])
def test_ohem_by_hand_on_four_pixels(threshold, min_kept, kept):
    p_true = np.array([0.9, 0.6, 0.3, 0.1])  # true-class probabilities of one image's four pixels
    probabilities = np.stack([p_true, 1 - p_true], axis=-1).reshape(1, 1, 4, 2).astype("float32")
    y = np.zeros((1, 1, 4), "int32")
    loss = losses.OhemCrossEntropy(2, threshold=threshold, min_kept=min_kept, from_logits=False)
    assert value(loss, y, probabilities) == pytest.approx(-np.mean(np.log(kept)), rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_ohem_finds_the_kth_smallest_probability_exactly_as_a_sort(seed):
    # Ties, zeros, the threshold itself and unlabelled pixels' 2.0, as OHEM hands them over; the pick must be the
    # sorted array's own float, not a neighbour, or the strict `p < threshold` keeps a different set of pixels.
    rng = np.random.default_rng(seed)
    values = np.round(rng.random(5000), 3).astype("float32")
    values[rng.random(5000) < 0.2] = 2.0
    values[rng.random(5000) < 0.05] = 0.0
    values[rng.random(5000) < 0.05] = np.float32(0.7)
    values[:7] = np.nextafter(np.float32(0.7), np.float32(1))
    for k in [0, 1, 2499, int(rng.integers(5000)), 4999]:
        picked = keras.ops.convert_to_numpy(losses._kth_smallest(keras.ops.convert_to_tensor(values), k))
        assert picked.dtype == np.float32 and picked == np.sort(values)[k], k


def test_ohem_where_min_kept_decides_runs_compiled_on_batches_of_unknown_shape():
    # threshold 0.01 is under every pixel, so min_kept decides and the k-th pixel is searched for in the traced step.
    y, _ = sample(seed=13)
    images = np.random.default_rng(13).integers(0, 256, y.shape + (3,), dtype=np.uint8)
    inputs = keras.Input((None, None, 3))
    scores = keras.layers.Dense(CLASSES, kernel_initializer=keras.initializers.RandomNormal(0, 0.02, seed=1))(inputs)
    model = keras.Model(inputs, scores)
    model.compile("sgd", losses.OhemCrossEntropy(CLASSES, threshold=0.01, min_kept=3), jit_compile=False)

    def batches(size):  # segkit's loader, as training feeds it: Keras traces the step with batch, height and width unknown
        return make_loader(images, y.astype(np.uint8), np.arange(len(y)), size, shuffle=False)

    logits = keras.ops.convert_to_numpy(model(images.astype("float32")))
    evaluated = model.evaluate(batches(len(y)), verbose=0)
    assert evaluated == pytest.approx(reference_ohem(y, logits, threshold=0.01, min_kept=3), rel=1e-5)
    model.fit(batches(1), epochs=1, verbose=0)


def test_lovasz_of_a_hard_prediction_is_one_minus_the_iou_of_each_present_class():
    # At 0/1 probabilities the Lovasz extension equals the set function it extends: 1 - IoU per class.
    y, logits = sample(seed=12, shape=(2, 7, 9))
    predicted = logits.argmax(-1)
    one_hot = np.eye(CLASSES, dtype="float32")[predicted]
    keep = y != IGNORE
    present = np.unique(y[keep])
    iou = [np.sum((y == c) & (predicted == c) & keep) / np.sum(((y == c) | (predicted == c)) & keep) for c in present]
    loss = losses.LovaszSoftmax(CLASSES, from_logits=False)
    assert value(loss, y, one_hot) == pytest.approx(1 - np.mean(iou), rel=1e-6)
    assert value(loss, y, one_hot) == pytest.approx(reference_lovasz(y, np.log(np.clip(one_hot, 1e-12, 1))), rel=1e-6)


# STDC's detail guidance: Laplacian boundary targets at strides 1, 2, 4, fused with weights 0.6, 0.3, 0.1.
def reference_boundary(label, ignore=IGNORE, threshold=0.1):
    """Pixel by pixel: the Laplacian response of p is the sum of label[p] - label[q] over its labelled in-image
    neighbours q (0 at an unlabelled p); level s reads it at (s * (y // s), s * (x // s)); levels fused 0.6/0.3/0.1."""
    height, width = label.shape

    def response(y, x):
        if label[y, x] == ignore:
            return 0.0
        total = 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                qy, qx = y + dy, x + dx
                if (dy or dx) and 0 <= qy < height and 0 <= qx < width and label[qy, qx] != ignore:
                    total += float(label[y, x]) - float(label[qy, qx])
        return total

    fused = np.zeros((height, width))
    for stride, weight in ((1, 0.6), (2, 0.3), (4, 0.1)):
        for y in range(height):
            for x in range(width):
                fused[y, x] += weight * (response(stride * (y // stride), stride * (x // stride)) > threshold)
    return (fused > threshold).astype(np.float32)  # 0.1 exactly (the stride-4 level alone) is not above 0.1


def reference_detail_loss(label, logits, ignore=IGNORE):
    """Binary cross-entropy over the labelled pixels of the batch plus STDC's per-image Dice (smooth 1), averaged."""
    logits = logits.astype(np.float64)[..., 0]
    targets = np.stack([reference_boundary(image) for image in label]).astype(np.float64)
    valid = label != ignore
    p = 1 / (1 + np.exp(-logits))
    bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    dice = [1 - (2 * (p[i] * targets[i])[valid[i]].sum() + 1) / (p[i][valid[i]].sum() + targets[i][valid[i]].sum() + 1)
            for i in range(len(label))]
    return bce[valid].mean() + np.mean(dice)


def hand_made_label():
    label = np.zeros((12, 16), np.uint8)
    label[:, 9:] = 2  # a vertical edge between classes 0 and 2
    label[3:7, 2:6] = 5  # a block of class 5
    label[8:, :4] = IGNORE  # a void corner
    label[10, 12] = 1  # a single lower pixel inside class 2
    return label


def test_detail_targets_match_the_brute_force_laplacian_pyramid():
    label = hand_made_label()
    targets, valid = losses.boundary_targets(label[None])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(targets)[0], reference_boundary(label))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(valid)[0], label != IGNORE)


def test_detail_targets_of_a_hand_worked_edge():
    # 0 | 1 edge between columns 2 and 3 of a 4x8 label: the stride-1 level marks the higher side (column 3);
    # the stride-2 level reads columns 0, 2, 4, 6, none of which touches the edge from the higher side; the
    # stride-4 level alone (weight 0.1) never exceeds the threshold. No border or void edge is a boundary.
    label = np.zeros((4, 8), np.uint8)
    label[:, 3:] = 1
    label[:, 7] = IGNORE
    expected = np.zeros((4, 8), np.float32)
    expected[:, 3] = 1
    targets, _ = losses.boundary_targets(label[None])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(targets)[0], expected)
    label[:, 2:] = 1  # edge between columns 1 and 2: now the stride-2 level's column 2 sees it and paints columns 2-3
    expected[:] = 0
    expected[:, 2:4] = 1
    targets, _ = losses.boundary_targets(label[None])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(targets)[0], expected)


def test_detail_loss_is_bce_plus_dice_over_labelled_pixels():
    label = np.stack([hand_made_label(), np.fliplr(hand_made_label())])
    logits = np.random.default_rng(0).normal(0, 2, (*label.shape, 1)).astype("float32")
    value = keras.ops.convert_to_numpy(losses.DetailLoss()(label, logits))
    np.testing.assert_allclose(value, reference_detail_loss(label, logits), rtol=1e-5)
    changed = logits.copy()
    changed[label == IGNORE] = 50.0  # unlabelled pixels carry no loss
    np.testing.assert_allclose(keras.ops.convert_to_numpy(losses.DetailLoss()(label, changed)), value, rtol=1e-6)


def test_detail_loss_round_trips_through_its_config():
    loss = keras.losses.deserialize(keras.losses.serialize(losses.DetailLoss(ignore_index=7)))
    assert isinstance(loss, losses.DetailLoss) and loss.ignore_index == 7

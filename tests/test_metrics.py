"""segkit.metrics against brute-force counting, a hand-worked example, and the dataset-vs-batch trap."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segkit.errors import SegkitError
from segkit.losses import CrossEntropy
from segkit.metrics import MeanIoU, boundary_band, confusion_matrix, per_class_table, scores
from support import REPO

pytestmark = pytest.mark.backend_agnostic

IGNORE = 255


def brute_force_scores(truth, pred, num_classes):
    """Per-class IoU / Dice / accuracy by comparing pixel sets one class at a time, pixels one by one."""
    pairs = [(t, p) for t, p in zip(truth.ravel().tolist(), pred.ravel().tolist()) if t != IGNORE]
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in pairs:
        cm[t, p] += 1
    iou, dice, accuracy = [], [], []
    for c in range(num_classes):
        both = sum(1 for t, p in pairs if t == c and p == c)
        either = sum(1 for t, p in pairs if t == c or p == c)
        in_truth = sum(1 for t, _ in pairs if t == c)
        in_pred = sum(1 for _, p in pairs if p == c)
        iou.append(both / either if either else np.nan)
        dice.append(2 * both / (in_truth + in_pred) if either else np.nan)
        accuracy.append(both / in_truth if in_truth else np.nan)
    present = [v for v in iou if not np.isnan(v)]
    correct = sum(1 for t, p in pairs if t == p)
    fw = sum(sum(1 for t, _ in pairs if t == c) * iou[c] for c in range(num_classes) if not np.isnan(iou[c]))
    return cm, {
        "iou": np.array(iou),
        "dice": np.array(dice),
        "accuracy": np.array(accuracy),
        "miou": sum(present) / len(present) if present else np.nan,
        "pixel_accuracy": correct / len(pairs) if pairs else np.nan,
        "fw_iou": fw / len(pairs) if pairs else np.nan,
    }


@st.composite
def label_maps(draw):
    """Random (truth, pred, C): some ignore pixels, classes that may be absent from one or both maps."""
    num_classes = draw(st.integers(1, 6))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7))
    used = draw(st.lists(st.integers(0, num_classes - 1), min_size=1, max_size=num_classes, unique=True))
    truth = draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from(used + [IGNORE])))
    pred = draw(hnp.arrays(np.int32, shape, elements=st.integers(0, num_classes - 1)))
    return truth, pred, num_classes


@settings(max_examples=150, deadline=None)
@given(label_maps())
def test_confusion_and_scores_match_brute_force(case):
    truth, pred, num_classes = case
    expected_cm, expected = brute_force_scores(truth, pred, num_classes)
    cm = confusion_matrix(truth, pred, num_classes)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected_cm)
    if expected_cm.sum() == 0:  # every pixel ignored: nothing to score, and it says so
        with pytest.raises(SegkitError, match="no labelled pixels"):
            scores(cm)
        return
    result = scores(cm)
    for key in ("iou", "dice", "accuracy"):
        np.testing.assert_allclose(result[key], expected[key], rtol=1e-12, equal_nan=True)
    for key in ("miou", "pixel_accuracy", "fw_iou"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12)
    assert result["mean_accuracy"] == pytest.approx(np.nanmean(expected["accuracy"]), rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(label_maps(), st.integers(0, 2**31 - 1))
def test_scores_input_and_batch_accumulation_agree(case, seed):
    truth, pred, num_classes = case
    logits = np.random.default_rng(seed).normal(size=pred.shape + (num_classes,))
    logits[..., :] -= 10 * (np.arange(num_classes) != pred[..., None])  # argmax is pred
    np.testing.assert_array_equal(confusion_matrix(truth, logits, num_classes), confusion_matrix(truth, pred, num_classes))
    split = truth.shape[0] // 2
    parts = confusion_matrix(truth[:split], pred[:split], num_classes) if split else 0
    parts = parts + confusion_matrix(truth[split:], pred[split:], num_classes)
    np.testing.assert_array_equal(parts, confusion_matrix(truth, pred, num_classes))


def test_hand_worked_three_class_example():
    truth = np.array([[0, 0, 0, 1], [1, 1, 2, 255]])
    pred = np.array([[0, 0, 1, 1], [1, 2, 2, 0]])
    # Counted pixels (the 255 one is not): truth 0 -> pred 0,0,1; truth 1 -> 1,1,2; truth 2 -> 2.
    # class 0: TP 2, FP 0, FN 1 -> IoU 2/3, Dice 4/5, accuracy 2/3
    # class 1: TP 2, FP 1, FN 1 -> IoU 2/4, Dice 4/6, accuracy 2/3
    # class 2: TP 1, FP 1, FN 0 -> IoU 1/2, Dice 2/3, accuracy 1
    cm = confusion_matrix(truth, pred, 3)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 2, 1], [0, 0, 1]])
    result = scores(cm)
    np.testing.assert_allclose(result["iou"], [2 / 3, 1 / 2, 1 / 2])
    np.testing.assert_allclose(result["dice"], [4 / 5, 4 / 6, 2 / 3])
    np.testing.assert_allclose(result["accuracy"], [2 / 3, 2 / 3, 1])
    assert result["miou"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)
    assert result["fw_iou"] == pytest.approx(3 / 7 * 2 / 3 + 3 / 7 * 1 / 2 + 1 / 7 * 1 / 2)

    table = per_class_table(cm, ["road", "car", "sky"])
    assert list(table.index) == ["road", "car", "sky", "mean"]
    np.testing.assert_allclose(table.loc["car", ["IoU", "accuracy", "Dice", "pixel share"]], [1 / 2, 2 / 3, 4 / 6, 3 / 7])
    assert table.loc["mean", "IoU"] == pytest.approx(result["miou"])
    assert table.loc["mean", "pixels"] == 7
    assert "road" in str(table) and "mean" in str(table)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = confusion_matrix(np.array([0, 0, 2]), np.array([0, 0, 2]), num_classes=3)
    result = scores(cm)
    assert np.isnan(result["iou"][1]) and np.isnan(result["dice"][1])
    assert result["miou"] == 1.0  # classes 0 and 2 are perfect; class 1 does not drag it to 2/3


# Two batches on which the mean of per-batch mIoUs and the dataset mIoU part ways.
# Batch A: 100 class-0 pixels, all right  -> IoU0 = 1, class 1 absent -> batch mIoU 1.
# Batch B: one class-0 pixel predicted 1, one class-1 pixel right -> IoU0 = 0, IoU1 = 1/2 -> 1/4.
# Mean of batch mIoUs: 5/8. Whole dataset: cm [[100, 1], [0, 1]] -> IoU0 = 100/101, IoU1 = 1/2.
BATCH_A = (np.zeros((1, 10, 10)), np.zeros((1, 10, 10)))
BATCH_B = (np.array([[[0, 1] + [IGNORE] * 98]]).reshape(1, 10, 10), np.ones((1, 10, 10)))
DATASET_MIOU = (100 / 101 + 1 / 2) / 2


def _logits(labels, num_classes=2):
    return keras.utils.to_categorical(labels.astype(int), num_classes).astype("float32") * 4.0


def test_dataset_miou_is_not_the_mean_of_batch_mious():
    per_batch = [scores(confusion_matrix(t, p, 2))["miou"] for t, p in (BATCH_A, BATCH_B)]
    assert np.mean(per_batch) == pytest.approx(5 / 8)
    total = confusion_matrix(BATCH_A[0], BATCH_A[1], 2) + confusion_matrix(BATCH_B[0], BATCH_B[1], 2)
    assert scores(total)["miou"] == pytest.approx(DATASET_MIOU)

    metric = MeanIoU(2)
    for truth, pred in (BATCH_A, BATCH_B):
        metric.update_state(truth, _logits(pred))
    assert float(metric.result()) == pytest.approx(DATASET_MIOU, rel=1e-6)
    np.testing.assert_array_equal(metric.confusion(), total)
    metric.reset_state()
    assert np.isnan(float(metric.result()))


def _identity_model(num_classes):
    """Outputs its input logits unchanged and keeps doing so under fit (learning rate 0)."""
    inputs = keras.Input((None, None, num_classes))
    head = keras.layers.Conv2D(num_classes, 1, use_bias=False)
    model = keras.Model(inputs, head(inputs))
    head.set_weights([np.eye(num_classes, dtype="float32")[None, None]])
    return model


def test_keras_metric_in_evaluate_and_fit_is_dataset_level_and_resets_each_epoch():
    x = np.concatenate([_logits(BATCH_A[1]), _logits(BATCH_B[1])])
    y = np.concatenate([BATCH_A[0], BATCH_B[0]]).astype("int32")
    metric = MeanIoU(2)
    model = _identity_model(2)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=CrossEntropy(2), metrics=[metric])
    logs = model.evaluate(x, y, batch_size=1, return_dict=True, verbose=0)
    assert logs[metric.name] == pytest.approx(DATASET_MIOU, rel=1e-6)

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, (5, 6, 7)).astype("int32")
    y[rng.random(y.shape) < 0.2] = IGNORE
    x = rng.normal(size=(5, 6, 7, 3)).astype("float32")
    metric = MeanIoU(3)
    model = _identity_model(3)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=CrossEntropy(3), metrics=[metric])
    history = model.fit(x, y, batch_size=2, epochs=2, verbose=0)  # batches of 2, 2, 1
    expected = confusion_matrix(y, x, 3)
    np.testing.assert_array_equal(metric.confusion(), expected)  # one epoch's worth, not two
    assert history.history[metric.name][-1] == pytest.approx(scores(expected)["miou"], rel=1e-6)


def test_keras_metric_predicts_numpys_argmax_even_on_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, (3, 9, 11)).astype("int32")
    scores_ = rng.integers(-2, 3, (3, 9, 11, 5)).astype("float32")  # five levels over five classes: many ties
    metric = MeanIoU(5)
    metric.update_state(y, scores_)
    np.testing.assert_array_equal(metric.confusion(), confusion_matrix(y, scores_.argmax(-1), 5))


def test_keras_metric_counts_exactly_past_float32_precision():
    odd_batch = np.zeros((1, 999, 1001), dtype="int32")  # 999,999 pixels, all class 0
    logits = np.zeros((1, 999, 1001, 2), dtype="float32")
    logits[..., 0] = 1.0
    metric = MeanIoU(2)
    for _ in range(17):
        metric.update_state(odd_batch, logits)
    # 16,999,983 is odd and above 2**24, so a float32 counter could not hold it.
    assert metric.confusion()[0, 0] == 17 * 999_999
    assert float(np.float32(17 * 999_999)) != 17 * 999_999


def test_keras_metric_names_are_distinct_and_config_round_trips():
    first, second = MeanIoU(3), MeanIoU(3)
    assert first.name != second.name
    clone = MeanIoU.from_config(first.get_config())
    assert clone.name == first.name and clone.num_classes == 3 and clone.ignore_index == IGNORE


def test_keras_metric_flags_invalid_labels_instead_of_scoring_them():
    metric = MeanIoU(2)
    metric.update_state(np.array([[[0, 7]]]), _logits(np.array([[[0, 1]]])))
    assert np.isnan(float(metric.result()))
    with pytest.raises(SegkitError, match="labels outside 0..1"):
        metric.confusion()
    with pytest.raises(SegkitError, match="does not match prediction shape"):
        metric.update_state(np.zeros((1, 2, 3)), np.zeros((1, 2, 2, 2)))


@pytest.mark.parametrize(
    "truth, pred, classes, message",
    [
        (np.zeros((2, 3)), np.zeros((2, 4)), 2, "does not match"),
        (np.array([0, 5]), np.array([0, 1]), 3, "y_true holds label 5, outside 0..2"),
        (np.array([0, -1]), np.array([0, 1]), 3, "y_true holds label -1"),
        (np.array([0, 1]), np.array([0, 3]), 3, "y_pred holds label 3"),
        (np.zeros((0, 4)), np.zeros((0, 4)), 3, "empty input"),
        (np.array([0.5, 1.0]), np.array([0, 1]), 3, "integer class ids"),
        (np.array([0, 1]), np.array([0, 1]), 0, "num_classes"),
    ],
)
def test_bad_input_raises_one_line(truth, pred, classes, message):
    with pytest.raises(SegkitError, match=message) as info:
        confusion_matrix(truth, pred, classes)
    assert "\n" not in str(info.value)


def test_ignored_pixels_may_hold_any_prediction_and_trailing_axis_is_accepted():
    truth = np.array([[0, IGNORE], [1, 1]])[None, ..., None]  # (1, 2, 2, 1)
    logits = _logits(np.array([[[0, 0], [1, 0]]]))
    np.testing.assert_array_equal(confusion_matrix(truth, logits, 2), [[1, 0], [1, 1]])


@pytest.mark.parametrize(
    "cm, message",
    [
        (np.zeros((2, 2), dtype=np.int64), "no labelled pixels"),
        (np.ones((2, 3), dtype=np.int64), "square"),
        (np.array([[1, -1], [0, 1]]), "non-negative integer"),
        (np.eye(2), "non-negative integer"),
    ],
)
def test_scores_reject_bad_matrices(cm, message):
    with pytest.raises(SegkitError, match=message):
        scores(cm)
    with pytest.raises(SegkitError, match="2 class names for a 3-class"):
        per_class_table(np.eye(3, dtype=np.int64), ["a", "b"])


MIRRORED_FIT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from segkit.losses import CrossEntropy
    from segkit.metrics import MeanIoU

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, (10, 8, 9)).astype("int32")
    y[rng.random(y.shape) < 0.25] = 255
    x = rng.normal(size=(10, 8, 9, 4)).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((None, None, 4))
        head = keras.layers.Conv2D(4, 1, use_bias=False)
        model = keras.Model(inputs, head(inputs))
        head.set_weights([np.eye(4, dtype="float32")[None, None]])
        metric = MeanIoU(4)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=CrossEntropy(4), metrics=[metric])
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    fit_cm = metric.confusion().tolist()
    logs = model.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    json.dump({"replicas": strategy.num_replicas_in_sync, "fit_cm": fit_cm, "fit_miou": history.history[metric.name][-1],
               "evaluate_cm": metric.confusion().tolist(), "evaluate_miou": logs[metric.name],
               "x": x.tolist(), "y": y.tolist()}, sys.stdout)
    """
)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="MirroredStrategy is TensorFlow's")
def test_keras_metric_under_mirrored_strategy_matches_numpy():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", MIRRORED_FIT], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["replicas"] == 2
    expected = confusion_matrix(np.array(run["y"]), np.array(run["x"]), 4)
    np.testing.assert_array_equal(run["fit_cm"], expected)
    np.testing.assert_array_equal(run["evaluate_cm"], expected)
    assert run["fit_miou"] == pytest.approx(scores(expected)["miou"], rel=1e-6)
    assert run["evaluate_miou"] == pytest.approx(scores(expected)["miou"], rel=1e-6)


def brute_force_band(mask, width, ignore_index=IGNORE):
    """Pixel by pixel: labelled, with a labelled pixel of another class in the (2 width + 1)^2 window."""
    height, cols = mask.shape
    band = np.zeros(mask.shape, bool)
    for y in range(height):
        for x in range(cols):
            if mask[y, x] == ignore_index:
                continue
            for ny in range(max(0, y - width), min(height, y + width + 1)):
                for nx in range(max(0, x - width), min(cols, x + width + 1)):
                    if mask[ny, nx] != ignore_index and mask[ny, nx] != mask[y, x]:
                        band[y, x] = True
    return band


def test_boundary_band_hand_worked_5x5():
    V = IGNORE
    mask = np.array([
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 1],
        [0, V, V, 1, 1],
        [2, 2, V, 1, 1],
        [2, 2, 2, 2, 2],
    ], np.uint8)
    # Width 1 (3x3 window): (1,1) and (4,1) touch only their own class and void, so they are not in the band;
    # the void pixels never are, though they touch three classes; (2,0) is in it through the 2 below it.
    expected = np.array([
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [1, 0, 0, 1, 0],
        [1, 1, 0, 1, 1],
        [0, 0, 1, 1, 1],
    ], bool)
    np.testing.assert_array_equal(boundary_band(mask, 1), expected)
    # Width 2 (5x5 window): (0,0) sees rows 0..2, cols 0..2, only 0 and void -> out; (0,1) sees col 3's 1 -> in;
    # (1,1) now reaches the 1 at (0,3) -> in.
    wide = boundary_band(mask, 2)
    assert not wide[0, 0] and wide[0, 1] and not wide[2, 1] and wide[1, 1]
    np.testing.assert_array_equal(wide, brute_force_band(mask, 2))


@st.composite
def band_cases(draw):
    """(mask (H, W), width, ignore index): few classes so edges are common, void anywhere."""
    ignore = draw(st.sampled_from([IGNORE, 0]))
    classes = draw(st.lists(st.sampled_from([0, 1, 2, 7, 254, 255]), min_size=1, max_size=4, unique=True))
    shape = draw(st.tuples(st.integers(1, 9), st.integers(1, 9)))
    mask = draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from(classes + [ignore])))
    return mask, draw(st.integers(1, 4)), ignore


@settings(max_examples=200, deadline=None)
@given(band_cases())
def test_boundary_band_matches_a_brute_force_loop(case):
    mask, width, ignore = case
    np.testing.assert_array_equal(boundary_band(mask, width, ignore_index=ignore), brute_force_band(mask, width, ignore))


def test_boundary_band_of_a_batch_is_each_images_own_band():
    rng = np.random.default_rng(0)
    masks = rng.choice(np.array([0, 1, 3, IGNORE], np.uint8), size=(3, 12, 10), p=[0.6, 0.2, 0.1, 0.1])
    masks[1] = 1  # one class only: no edge, so no band
    band = boundary_band(masks, 2)
    assert band.shape == masks.shape and not band[1].any()
    for one, expected in zip(band, masks):
        np.testing.assert_array_equal(one, brute_force_band(expected, 2))


@pytest.mark.parametrize(
    "mask, width, message",
    [
        (np.zeros((4, 4), np.uint8), 0, "width must be a positive integer"),
        (np.zeros((4, 4), np.uint8), 1.5, "width must be a positive integer"),
        (np.zeros((4, 4), np.int32) + 300, 1, "0..255"),
        (np.zeros((4,), np.uint8), 1, "must be .H, W. or .B, H, W."),
        (np.full((4, 4), 0.5), 1, "integer class ids"),
    ],
)
def test_boundary_band_bad_input_raises_one_line(mask, width, message):
    with pytest.raises(SegkitError, match=message) as info:
        boundary_band(mask, width)
    assert "\n" not in str(info.value)

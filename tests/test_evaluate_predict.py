"""segkit.evaluate and segkit.predict on a trained stand-in run, checked against direct model calls and numpy."""

import hashlib
import json
import re
import shutil

import cv2
import keras
import numpy as np
import pytest

import segkit
from segkit import data, files, metrics, models
from segkit.errors import SegkitError
from segkit.workflows import evaluate, loading
from segkit.workflows import predict as predict_module
from training_support import (band_by_shifts, boundary_scores, brute_force_confusion, brute_force_iou, predict_classes,
                              prepared_synthetic, softmax, tiny_config, train_with_stand_in, upsample_bilinear)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    dataset = prepared_synthetic(root)
    run = train_with_stand_in(tiny_config(dataset), root / "runs")
    return run, dataset


def test_evaluate_scores_every_item_like_a_brute_force_count(trained, tmp_path):
    run, dataset = trained
    result = segkit.evaluate(run.path, dataset, json_path=tmp_path / "scores.json", verbose=False)
    prepared = data.load_prepared(dataset)
    model = keras.saving.load_model(run.path / "best.keras")
    pred = predict_classes(model, np.asarray(prepared.images))
    iou, miou = brute_force_iou(np.asarray(prepared.masks), pred, prepared.num_classes)
    assert result["num_items"] == len(prepared.images)
    assert result["miou"] == pytest.approx(miou, abs=1e-12)
    np.testing.assert_allclose([np.nan if v is None else v for v in result["per_class_iou"].values()], iou, atol=1e-12)
    assert json.loads((tmp_path / "scores.json").read_text())["miou"] == result["miou"]
    # the same through the model file instead of the run folder
    assert segkit.evaluate(run.path / "best.keras", dataset, verbose=False)["miou"] == result["miou"]


def test_evaluate_with_flip_tta_averages_the_mirrored_softmax(trained):
    run, dataset = trained
    result = segkit.evaluate(run.path, dataset, tta="flip", verbose=False)
    prepared = data.load_prepared(dataset)
    model = keras.saving.load_model(run.path / "best.keras")
    images = np.asarray(prepared.images, np.float32)
    softmax = lambda x: keras.ops.convert_to_numpy(keras.ops.softmax(model(x, training=False), axis=-1))  # noqa: E731
    probs = (softmax(images) + softmax(images[:, :, ::-1])[:, :, ::-1]) / 2
    _, miou = brute_force_iou(np.asarray(prepared.masks), probs.argmax(-1), prepared.num_classes)
    assert result["miou"] == pytest.approx(miou, abs=1e-12)


def test_evaluate_scores_the_boundary_band_like_an_independent_count(trained, tmp_path, capsys):
    run, dataset = trained
    result = segkit.evaluate(run.path, dataset, json_path=tmp_path / "scores.json")
    prepared = data.load_prepared(dataset)
    truth = np.asarray(prepared.masks)
    pred = predict_classes(keras.saving.load_model(run.path / "best.keras"), np.asarray(prepared.images))
    miou, accuracy = boundary_scores(truth, pred, prepared.num_classes, metrics.BOUNDARY_WIDTH)
    assert result["boundary_width"] == metrics.BOUNDARY_WIDTH
    assert result["boundary_miou"] == pytest.approx(miou, abs=1e-12)
    assert result["boundary_pixel_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["boundary_miou"] == result["boundary_miou"]
    assert np.sum(saved["boundary_confusion_matrix"]) == band_by_shifts(truth, metrics.BOUNDARY_WIDTH).sum()
    printed = capsys.readouterr().out
    assert f"mIoU {miou:.4f}  pixel accuracy {accuracy:.4f}" in printed and "px band" in printed


def test_evaluate_prints_the_per_class_table(trained, capsys):
    run, dataset = trained
    segkit.evaluate(run.path, dataset)
    printed = capsys.readouterr().out
    assert "road" in printed and "bicycle" in printed and "mIoU" in printed


def test_predict_writes_masks_and_overlays_of_each_input_size(trained, tmp_path):
    run, _ = trained
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    sizes = {"wide": (37, 70), "square": (32, 32)}
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(folder / f"{name}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    written = segkit.predict(run.path, [folder], out=tmp_path / "out")
    assert sorted(p.name for p in written) == ["square_mask.png", "square_overlay.png", "wide_mask.png", "wide_overlay.png"]
    colors = np.asarray(run.dataset["colors"], np.uint8)
    for name, (h, w) in sizes.items():
        mask_rgb = cv2.imread(str(tmp_path / "out" / f"{name}_mask.png"))[..., ::-1]
        overlay = cv2.imread(str(tmp_path / "out" / f"{name}_overlay.png"))
        assert mask_rgb.shape == overlay.shape == (h, w, 3)
        # every pixel of the mask is one of the run's class colours
        matches = (mask_rgb[:, :, None, :] == colors[None, None]).all(-1)
        assert matches.any(-1).all()
    # where the image already fits the model, the classes are the direct model call's argmax
    image = cv2.imread(str(folder / "square.png"))[..., ::-1]
    expected = colors[predict_classes(keras.saving.load_model(run.path / "best.keras"), image[None])[0]]
    got = cv2.imread(str(tmp_path / "out" / "square_mask.png"))[..., ::-1]
    np.testing.assert_array_equal(got, expected)


def _expected_classes(model, image, size):
    """The classes of `image` with the model fed at `size` and its softmax upsampled back, by hand (cv2 to shrink
    or grow as data preparation does, numpy bilinear back), and where the two best classes are within rounding."""
    grow = size[0] * size[1] > image.shape[0] * image.shape[1]
    fed = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR if grow else cv2.INTER_AREA)
    logits = keras.ops.convert_to_numpy(model(fed[None].astype("float32"))).astype(np.float64)
    probs = upsample_bilinear(softmax(logits), image.shape[:2])[0]
    top_two = np.sort(probs, axis=-1)[..., -2:]
    return probs.argmax(-1), top_two[..., 1] - top_two[..., 0] < 1e-5


@pytest.mark.parametrize("size", [(64, 96), (20, 24)], ids=["larger", "smaller"])
def test_predict_feeds_each_image_whole_at_the_size_the_model_was_trained_at(trained, tmp_path, capsys, size):
    run, _ = trained
    image = np.random.default_rng(5).integers(0, 256, (*size, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photo.png"), image[..., ::-1])
    segkit.predict(run.path, [tmp_path / "photo.png"], out=tmp_path / "out")
    assert "the model sees each image resized to 32x32 (the size it was trained at)" in capsys.readouterr().out
    colors = np.asarray(run.dataset["colors"], np.uint8)
    expected, near_tie = _expected_classes(keras.saving.load_model(run.path / "best.keras"), image, (32, 32))
    got = cv2.imread(str(tmp_path / "out" / "photo_mask.png"))[..., ::-1]
    assert near_tie.mean() < 0.01
    np.testing.assert_array_equal(got[~near_tie], colors[expected][~near_tie])


def test_classes_resized_one_class_at_a_time_match_a_joint_resize_and_argmax():
    rng = np.random.default_rng(8)
    probs = rng.random((9, 13, 6)).astype(np.float32)
    probs[..., 4] = probs[..., 1]  # exact ties keep the lower class, as argmax does
    joint = cv2.resize(probs, (37, 23), interpolation=cv2.INTER_LINEAR).argmax(-1)
    np.testing.assert_array_equal(evaluate._resized_argmax(probs, (23, 37)), joint)


def test_classes_of_a_large_photo_never_hold_every_class_at_full_size(trained):
    import tracemalloc

    run, _ = trained
    model = keras.saving.load_model(run.path / "best.keras")
    size = (1200, 1600)
    photo = np.random.default_rng(9).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    all_classes = size[0] * size[1] * 19 * 4  # float32 maps of the run's 19 classes at the photo's size: 146 MB
    tracemalloc.start()
    try:
        classes = evaluate.classes_at(model, photo, input_size=(32, 32))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert classes.shape == (1, *size)
    assert peak < all_classes / 4, f"peak {peak / 2**20:.0f} MiB"


def test_predict_window_tiles_each_image_at_its_own_size_instead(trained, tmp_path, capsys):
    run, _ = trained
    image = np.random.default_rng(6).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photo.png"), image[..., ::-1])
    segkit.predict(run.path, [tmp_path / "photo.png"], out=tmp_path / "out", window=(32, 32))
    assert "at its own size, in overlapping 32x32 tiles" in capsys.readouterr().out
    model = keras.saving.load_model(run.path / "best.keras")
    colors = np.asarray(run.dataset["colors"], np.uint8)
    expected = models.predict_probabilities(model, image, window=(32, 32)).argmax(-1)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "photo_mask.png"))[..., ::-1], colors[expected])
    assert not np.array_equal(expected, _expected_classes(model, image, (32, 32))[0])  # tiling is not resizing


def _channel_model_file(path, input_shape=(None, None, 3)):
    """A .keras file of a model whose three class logits are a pixel's R, G, B over 32; no run, no recorded size."""
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, keras.layers.Rescaling(1 / 32)(inputs))
    loading.save_model(model, path, classes=["red", "green", "blue"], colors=[[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    return model


def test_predict_input_size_feeds_a_model_of_no_fixed_size_at_that_size(tmp_path, capsys):
    model = _channel_model_file(tmp_path / "channels.keras")
    image = np.random.default_rng(7).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photo.png"), image[..., ::-1])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    segkit.predict(tmp_path / "channels.keras", [tmp_path / "photo.png"], out=tmp_path / "own")
    assert "at its own size (the model file records no training size" in capsys.readouterr().out
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "own" / "photo_mask.png"))[..., ::-1], colors[image.argmax(-1)])
    segkit.predict(tmp_path / "channels.keras", [tmp_path / "photo.png"], out=tmp_path / "small", input_size=(10, 15))
    assert "resized to 10x15 (--input-size)" in capsys.readouterr().out
    expected, near_tie = _expected_classes(model, image, (10, 15))
    got = cv2.imread(str(tmp_path / "small" / "photo_mask.png"))[..., ::-1]
    assert near_tie.mean() < 0.01
    np.testing.assert_array_equal(got[~near_tie], colors[expected][~near_tie])


def test_the_trained_size_is_the_fixed_input_else_the_runs_image_size(trained, tmp_path):
    run, _ = trained
    free = _channel_model_file(tmp_path / "free.keras")
    assert loading.trained_size(free) is None
    assert loading.trained_size(free, run) == tuple(run.dataset["image_size"]) == (32, 32)
    assert loading.trained_size(_channel_model_file(tmp_path / "fixed.keras", (24, 40, 3)), run) == (24, 40)


@pytest.mark.parametrize("options, message", [
    ({"input_size": (32, 32), "window": (32, 32)}, "--input-size resizes each image whole and --window tiles it"),
    ({"input_size": (0, 32)}, r"--input-size must be two positive integers \(H, W\), got \(0, 32\)"),
    ({"input_size": "32x32"}, "--input-size must be two positive integers"),
    ({"input_size": (64, 64)}, "the model takes 32x32 images only; it cannot be fed at --input-size 64 64"),
])
def test_predict_refuses_an_input_size_it_cannot_feed_before_writing_anything(trained, tmp_path, options, message):
    run, _ = trained
    folder = _write_images(tmp_path / "images", ["a.png"])
    with pytest.raises(SegkitError, match=message) as err:
        segkit.predict(run.path, [folder], out=tmp_path / "out", **options)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Bad input


def test_a_model_for_other_classes_is_refused(trained, tmp_path_factory):
    run, _ = trained
    other = prepared_synthetic(tmp_path_factory.mktemp("other"), count=4, classes="all")
    with pytest.raises(SegkitError, match="predicts 19 classes but the data at .* has"):
        segkit.evaluate(run.path, other, verbose=False)


@pytest.mark.parametrize("content, message", [(b"not a zip", "model.keras is not a .keras model archive"),
                                              ("truncated", "model.keras is not a .keras model archive"),
                                              (None, "does not exist")])
def test_unreadable_or_missing_model_files(trained, tmp_path, content, message):
    path = tmp_path / "model.keras"
    if content == "truncated":
        whole = (trained[0].path / "best.keras").read_bytes()
        content = whole[: len(whole) // 2]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SegkitError, match=message) as err:
        segkit.evaluate(path, tmp_path, verbose=False)
    assert "File not found" not in str(err.value)


@pytest.mark.parametrize("inputs, outputs", [((8,), lambda x: keras.layers.Dense(3)(x)),
                                             ((8, 8, 3), lambda x: keras.layers.GlobalAveragePooling2D()(x)),
                                             ((8, 8, 1), lambda x: keras.layers.Conv2D(3, 1)(x))])
def test_a_keras_file_that_is_not_a_segmentation_model_is_refused(tmp_path, inputs, outputs):
    inputs = keras.Input(inputs)
    keras.Model(inputs, outputs(inputs)).save(tmp_path / "other.keras")
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SegkitError, match="other.keras is not a segmentation model"):
        segkit.predict(tmp_path / "other.keras", [tmp_path / "images"], out=tmp_path / "out")


def test_a_foreign_keras_file_with_unknown_layers_is_refused(tmp_path):
    @keras.saving.register_keras_serializable(package="elsewhere")
    class Unknown(keras.layers.Layer):
        def call(self, x):
            return x

    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, Unknown()(inputs)).save(tmp_path / "foreign.keras")
    keras.saving.get_custom_objects().pop("elsewhere>Unknown")
    with pytest.raises(SegkitError, match="foreign.keras cannot be loaded: it uses class 'Unknown', which is neither"):
        segkit.predict(tmp_path / "foreign.keras", [tmp_path], out=tmp_path / "out")


def test_evaluate_checks_the_json_folder_and_batch_size_before_scoring(trained, tmp_path, monkeypatch):
    run, dataset = trained

    def no_scoring(*args, **kwargs):
        raise AssertionError("the evaluation ran before the arguments were checked")

    monkeypatch.setattr("segkit.workflows.evaluate.confusion", no_scoring)
    with pytest.raises(SegkitError, match="missing/scores.json: folder .*missing does not exist"):
        segkit.evaluate(run.path, dataset, json_path=tmp_path / "missing" / "scores.json", verbose=False)
    for size in (0, -3):
        with pytest.raises(SegkitError, match=f"batch size must be a positive integer, got {size}"):
            segkit.evaluate(run.path, dataset, batch_size=size, verbose=False)


def test_evaluate_on_a_missing_dataset_and_a_non_run_folder(trained, tmp_path):
    run, _ = trained
    with pytest.raises(SegkitError, match="does not exist"):
        segkit.evaluate(run.path, tmp_path / "missing", verbose=False)
    with pytest.raises(SegkitError, match="is not a segkit run folder"):
        segkit.evaluate(tmp_path, tmp_path, verbose=False)


def test_predict_bad_inputs(trained, tmp_path):
    run, _ = trained
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegkitError, match="broken.png"):
        segkit.predict(run.path, [tmp_path / "broken.png"], out=tmp_path / "out")
    with pytest.raises(SegkitError, match="has no images"):
        segkit.predict(run.path, [tmp_path / "empty"], out=tmp_path / "out")
    with pytest.raises(SegkitError, match="missing.png does not exist"):
        segkit.predict(run.path, [tmp_path / "missing.png"], out=tmp_path / "out")


def _write_images(folder, names, size=(32, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return folder


@pytest.mark.parametrize("layout", [{"a": ["x.jpg", "x.png"]}, {"a": ["x.png"], "b": ["x.png"]}, {"a": ["X.png"], "b": ["x.jpg"]}])
def test_predict_refuses_inputs_whose_outputs_would_share_a_name(trained, tmp_path, layout):
    run, _ = trained
    for folder, names in layout.items():
        _write_images(tmp_path / folder, names)
    with pytest.raises(SegkitError, match=r"(?i)x.(png|jpg) and .*x.(png|jpg) would both be written as x_mask.png"):
        segkit.predict(run.path, [tmp_path / folder for folder in layout], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_predict_takes_a_file_named_twice_once(trained, tmp_path):
    run, _ = trained
    folder = _write_images(tmp_path / "a", ["x.png", "y.png"])
    written = segkit.predict(run.path, [folder, folder / "x.png"], out=tmp_path / "out")
    assert sorted(p.name for p in written) == ["x_mask.png", "x_overlay.png", "y_mask.png", "y_overlay.png"]


def test_predict_checks_every_input_before_writing_anything(trained, tmp_path):
    run, _ = trained
    folder = _write_images(tmp_path / "images", ["a.png", "c.png"])
    (folder / "b.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SegkitError, match="b.png") as err:
        segkit.predict(run.path, [folder], out=tmp_path / "out")
    assert "--skip-bad" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_predict_checks_the_window_before_writing_anything(trained, tmp_path):
    run, _ = trained
    folder = _write_images(tmp_path / "images", ["a.png"])
    with pytest.raises(SegkitError, match=r"window=\(17, 17\) does not fit") as err:
        segkit.predict(run.path, [folder], out=tmp_path / "out", window=(17, 17))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_predict_skip_bad_reports_each_skipped_file_and_predicts_the_rest(trained, tmp_path, capsys):
    run, _ = trained
    folder = _write_images(tmp_path / "images", ["a.png", "d.png"])
    (folder / "b.png").write_bytes(b"\x89PNG not really")
    (folder / "c.jpg").write_bytes(b"")
    written = segkit.predict(run.path, [folder], out=tmp_path / "out", skip_bad=True)
    assert sorted(p.name for p in written) == ["a_mask.png", "a_overlay.png", "d_mask.png", "d_overlay.png"]
    lines = capsys.readouterr().out.splitlines()
    skipped = [line for line in lines if line.startswith("skipped ")]
    assert len(skipped) == 3 and "b.png" in skipped[0] and "c.jpg" in skipped[1]
    assert skipped[-1] == "skipped 2 of 4 images (unreadable)"
    with pytest.raises(SegkitError, match="none of the 2 images"):
        segkit.predict(run.path, [folder / "b.png", folder / "c.jpg"], out=tmp_path / "out2", skip_bad=True)
    assert not (tmp_path / "out2").exists()


def test_predict_out_that_is_a_file_is_refused_first(trained, tmp_path):
    run, _ = trained
    folder = _write_images(tmp_path / "images", ["a.png"])
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(SegkitError, match="out is a file, not a folder"):
        segkit.predict(run.path, [folder], out=tmp_path / "out")
    assert (tmp_path / "out").read_text() == "keep me"


def test_cli_predict_skip_bad_and_one_line_errors(trained, tmp_path, capsys):
    from segkit import cli

    run, _ = trained
    folder = _write_images(tmp_path / "images", ["a.png"])
    (folder / "b.png").write_bytes(b"junk")
    assert cli.main(["predict", str(run.path), str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segkit: error: ") and err.count("\n") == 1 and "b.png" in err
    assert cli.main(["predict", str(run.path), str(folder), "--out", str(tmp_path / "out"), "--skip-bad"]) == 0
    assert "skipped 1 of 2 images" in capsys.readouterr().out
    assert (tmp_path / "out" / "a_mask.png").is_file()
    good = str(folder / "a.png")
    assert cli.main(["predict", str(run.path), good, "--out", str(tmp_path / "sized"), "--input-size", "32", "32"]) == 0
    assert "resized to 32x32 (--input-size)" in capsys.readouterr().out
    assert cli.main(["predict", str(run.path), good, "--out", str(tmp_path / "no"), "--input-size", "64", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segkit: error: the model takes 32x32 images only") and err.count("\n") == 1
    for args in (["--batch-size", "0"], ["--batch-size", "-3"], ["--json", str(tmp_path / "no" / "x.json")]):
        assert cli.main(["evaluate", str(run.path), "--data", str(trained[1]), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("segkit: error: ") and err.count("\n") == 1


def _halvable_images(rng, count, size):
    """uint8 images whose 2x2 blocks average to whole numbers: base value +d, -d, +e, -e. Area shrinking by 2 is exact."""
    half = (size[0] // 2, size[1] // 2)
    base = rng.integers(40, 216, (count, *half, 3))
    d, e = rng.integers(-40, 40, (2, count, *half, 3))
    images = np.empty((count, *size, 3), np.int64)
    images[:, 0::2, 0::2], images[:, 0::2, 1::2] = base + d, base - d
    images[:, 1::2, 0::2], images[:, 1::2, 1::2] = base + e, base - e
    return images.astype(np.uint8), base


def _channel_model():
    """Hand-made: a 32x32-input model whose three class logits are the image's R, G, B over 32."""
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, keras.layers.Rescaling(1 / 32)(inputs))


@pytest.mark.parametrize("make_model", [_channel_model,
                                        lambda: models.build("fastscnn", num_classes=3, input_shape=(32, 32, 3))],
                         ids=["hand-made", "fastscnn"])
def test_confusion_fed_at_a_smaller_size_matches_resize_predict_upsample_by_hand(make_model):
    rng = np.random.default_rng(3)
    keras.utils.set_random_seed(3)
    model = make_model()
    images, halved = _halvable_images(rng, 3, (64, 64))
    masks = rng.integers(0, 3, (3, 64, 64)).astype(np.uint8)
    masks[:, :4] = 255
    items = np.array([2, 0])
    logits = keras.ops.convert_to_numpy(model(halved[items].astype("float32"), training=False))
    probs = upsample_bilinear(softmax(logits.astype(np.float64)), (64, 64))
    pred = probs.argmax(-1)
    # float32 against float64 may flip a pixel whose two best classes are within rounding of each other, no more
    top_two = np.sort(probs, axis=-1)[..., -2:]
    near_tie = top_two[..., 1] - top_two[..., 0] < 1e-5
    classes = evaluate.classes_at(model, images[items], input_size=(32, 32))
    assert classes.shape == pred.shape and np.array_equal(classes[~near_tie], pred[~near_tie])
    expected = brute_force_confusion(masks[items], pred, 3)
    cm, boundary_cm = evaluate.confusion(model, images, masks, items, num_classes=3, batch_size=1, input_size=(32, 32))
    near_ties = int(np.sum(near_tie & (masks[items] != 255)))
    assert np.abs(cm - expected).sum() <= 2 * near_ties and cm.sum() == expected.sum()
    # the band is taken from the 64x64 labels, not from the 32x32 the model was fed at
    in_band = np.where(band_by_shifts(masks[items], metrics.BOUNDARY_WIDTH), masks[items], 255)
    expected_band = brute_force_confusion(in_band, pred, 3)
    assert np.abs(boundary_cm - expected_band).sum() <= 2 * near_ties and boundary_cm.sum() == expected_band.sum()
    assert len(np.unique(pred)) > 1  # the case has class borders for the upsampling to move


def test_evaluate_feeds_the_model_at_its_training_size_and_scores_at_the_labels_size(trained, tmp_path):
    run, _ = trained
    larger = prepared_synthetic(tmp_path, count=4, size=(64, 64))
    result = segkit.evaluate(run.path, larger, input_size=(32, 32), verbose=False)
    prepared = data.load_prepared(larger)
    shrunk = np.stack([cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA) for image in np.asarray(prepared.images)])
    logits = keras.ops.convert_to_numpy(keras.saving.load_model(run.path / "best.keras")(shrunk.astype("float32")))
    pred = upsample_bilinear(softmax(logits.astype(np.float64)), (64, 64)).argmax(-1)
    assert result["miou"] == pytest.approx(brute_force_iou(np.asarray(prepared.masks), pred, 19)[1], abs=1e-12)
    assert result["input_size"] == [32, 32]
    # without input_size the model is fed at the size it was trained at: the same scores
    default = segkit.evaluate(run.path, larger, verbose=False)
    assert default["input_size"] == [32, 32] and default["miou"] == result["miou"]
    for bad in ((32,), (0, 32), (32.5, 32), "32x32"):
        with pytest.raises(SegkitError, match="input size must be two positive integers"):
            segkit.evaluate(run.path, larger, input_size=bad, verbose=False)


def _no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the destination was checked")

    monkeypatch.setattr("segkit.workflows.loading.load_model", refuse)


def test_predict_never_writes_over_one_of_its_inputs(trained, tmp_path):
    run, _ = trained
    same = _write_images(tmp_path / "same", ["a.jpg", "a_mask.png"])
    before = {p.name: p.read_bytes() for p in same.iterdir()}
    with pytest.raises(SegkitError, match=r"same/a_mask.png, an input, would be overwritten by the mask of .*same/a.jpg"):
        segkit.predict(run.path, [same], out=same)
    assert {p.name: p.read_bytes() for p in same.iterdir()} == before


def test_predict_replaces_only_files_it_wrote_itself(trained, tmp_path):
    run, _ = trained
    images = _write_images(tmp_path / "images", ["a.png", "b.png"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_overlay.png").write_bytes(b"the user's own picture")
    with pytest.raises(SegkitError, match=r"--out .*out holds b_overlay.png, which segkit predict did not write"):
        segkit.predict(run.path, [images], out=out)
    assert sorted(p.name for p in out.iterdir()) == ["b_overlay.png"]
    (out / "b_overlay.png").unlink()
    first = {p.name: p.read_bytes() for p in segkit.predict(run.path, [images], out=out)}
    again = {p.name: p.read_bytes() for p in segkit.predict(run.path, [images], out=out)}  # its own files: replaced
    assert again == first
    (out / "a_mask.png").write_bytes(b"edited by hand")
    with pytest.raises(SegkitError, match=r"out holds a_mask.png, which segkit predict did not write \(or which changed"):
        segkit.predict(run.path, [images], out=out)
    assert (out / "a_mask.png").read_bytes() == b"edited by hand"


def test_predict_records_its_outputs_in_blocks_and_a_call_killed_midway_leaves_them_replaceable(trained, tmp_path,
                                                                                                monkeypatch):
    run, _ = trained
    images = _write_images(tmp_path / "images", [f"{i}.png" for i in range(5)])
    out = tmp_path / "out"
    saves = []
    save = files.Ledger.save
    monkeypatch.setattr(files.Ledger, "save", lambda ledger: (saves.append(len(ledger.digests)), save(ledger)))
    monkeypatch.setattr(predict_module, "BLOCK_IMAGES", 2)
    written = segkit.predict(run.path, [images], out=out)
    assert saves == [4, 8, 10]  # one rewrite per block of two images (two files each), not one per image
    ledger = json.loads((out / predict_module.LEDGER).read_text())["segkit_predict"]
    assert ledger == {p.name: [hashlib.sha256(p.read_bytes()).hexdigest()] for p in written}
    predict = models.predict_probabilities
    calls = []

    def failing_on_the_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return predict(*args, **kwargs)

    monkeypatch.setattr(models, "predict_probabilities", failing_on_the_fourth)
    shutil.rmtree(out)
    with pytest.raises(KeyboardInterrupt):
        segkit.predict(run.path, [images], out=out)
    assert sorted(p.name for p in out.glob("*.png")) == ["0_mask.png", "0_overlay.png", "1_mask.png", "1_overlay.png"]
    monkeypatch.setattr(models, "predict_probabilities", predict)
    assert len(segkit.predict(run.path, [images], out=out)) == 10  # the first block's files are segkit's: replaced


def test_predict_refuses_a_read_only_or_file_out_before_loading_the_model(trained, read_only_folder, tmp_path, monkeypatch):
    run, _ = trained
    images = _write_images(tmp_path / "images", ["a.png"])
    _no_model_loading(monkeypatch)
    with pytest.raises(SegkitError, match=r"^--out .*read-only/masks cannot be written \(in .*read-only\): Read-only file system$"):
        segkit.predict(run.path, [images], out=read_only_folder / "masks")
    (tmp_path / "plain").write_text("keep me")
    with pytest.raises(SegkitError, match=r"^--out .*plain/masks cannot be created: .*plain is a file, not a folder$"):
        segkit.predict(run.path, [images], out=tmp_path / "plain" / "masks")
    assert (tmp_path / "plain").read_text() == "keep me"


def test_predict_on_a_full_disk_names_out_not_a_hidden_folder(trained, full_disk_folder, tmp_path):
    run, _ = trained
    images = _write_images(tmp_path / "images", ["a.png"], size=(64, 64))
    out = full_disk_folder / "masks"
    with pytest.raises(SegkitError, match=r"^--out .*full-disk/masks: cannot write \(No space left on device\)") as err:
        segkit.predict(run.path, [images], out=out)
    assert ".partial" not in str(err.value) and "\n" not in str(err.value)
    assert not list(out.glob("*.png"))


def test_predict_reports_a_symlink_loop_in_an_input_folder_in_one_line(trained, tmp_path, capsys):
    run, _ = trained
    folder = _write_images(tmp_path / "images", ["a.png"])
    (folder / "loop.png").symlink_to("loop.png")
    with pytest.raises(SegkitError, match=r"images/loop.png: cannot read \(Too many levels of symbolic links\)"):
        segkit.predict(run.path, [folder], out=tmp_path / "out")
    written = segkit.predict(run.path, [folder], out=tmp_path / "out", skip_bad=True)
    assert sorted(p.name for p in written) == ["a_mask.png", "a_overlay.png"]


def test_predict_reports_a_symlink_loop_named_as_an_input_in_one_line(trained, tmp_path):
    run, _ = trained
    folder = _write_images(tmp_path / "images", ["a.png"])
    loop = tmp_path / "loop.png"
    loop.symlink_to("loop.png")
    with pytest.raises(SegkitError, match=r"loop.png: cannot read \(Too many levels of symbolic links\)"):
        segkit.predict(run.path, [loop, folder / "a.png"], out=tmp_path / "out")
    written = segkit.predict(run.path, [loop, folder / "a.png"], out=tmp_path / "out", skip_bad=True)
    assert sorted(p.name for p in written) == ["a_mask.png", "a_overlay.png"]


def test_predict_over_a_folder_shows_n_of_m_time_per_image_and_each_skipped_path_once(trained, tmp_path, capsys):
    run, _ = trained
    folder = _write_images(tmp_path / "images", ["a.png", "c.png"])
    (folder / "b.png").write_bytes(b"junk")
    segkit.predict(run.path, [folder], out=tmp_path / "out", skip_bad=True)
    lines = capsys.readouterr().out.splitlines()
    skipped = [line for line in lines if "b.png" in line]
    assert len(skipped) == 1 and skipped[0].count("b.png") == 1
    progress = [line for line in lines if " of 2: " in line]
    assert [line.split(":")[0] for line in progress] == ["1 of 2", "2 of 2"]
    for line, name in zip(progress, ["a", "c"]):
        assert f"{name}.png -> " in line and re.search(r"\(\d+\.\d\d s\)$", line)


def test_evaluate_checks_that_the_json_file_can_be_written_before_loading_the_model(trained, read_only_folder, tmp_path,
                                                                                    monkeypatch):
    run, dataset = trained
    _no_model_loading(monkeypatch)
    monkeypatch.setattr("segkit.workflows.evaluate.load_model", segkit.workflows.loading.load_model)
    with pytest.raises(SegkitError, match=r"^--json .*read-only/scores.json: folder .*read-only cannot be written: "
                                          r"Read-only file system$"):
        segkit.evaluate(run.path, dataset, json_path=read_only_folder / "scores.json", verbose=False)
    (tmp_path / "scores.json").mkdir()
    with pytest.raises(SegkitError, match=r"^--json .*scores.json is a folder, not a file$"):
        segkit.evaluate(run.path, dataset, json_path=tmp_path / "scores.json", verbose=False)


def test_cli_refuses_overwriting_an_input_a_run_twice_and_read_only_destinations_in_one_line(trained, read_only_folder,
                                                                                            tmp_path, capsys):
    from segkit import cli

    run, dataset = trained
    same = _write_images(tmp_path / "same", ["a.jpg", "a_mask.png"])
    before = (same / "a_mask.png").read_bytes()
    ro = str(read_only_folder)
    for args, named in [
        (["predict", str(run.path), str(same), "--out", str(same)], "a_mask.png, an input"),
        (["compare", str(run.path), str(run.path), "--out", str(tmp_path / "report")], "is given twice"),
        (["data", "synth", f"{ro}/set", "--count", "1", "--size", "32", "32"], "read-only/set cannot be written"),
        (["evaluate", str(run.path), "--data", str(dataset), "--json", f"{ro}/x.json"], "--json"),
        (["export", str(run.path), "--format", "savedmodel", "--out", f"{ro}/m"], "--out"),
        (["predict", str(run.path), str(same / "a.jpg"), "--out", f"{ro}/masks"], "--out"),
        (["compare", str(run.path), "--out", f"{ro}/report"], "--out"),
    ]:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("segkit: error: ") and err.count("\n") == 1 and named in err, (args, err)
    assert (same / "a_mask.png").read_bytes() == before
    assert not (tmp_path / "report").exists()

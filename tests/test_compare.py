"""segkit.compare: the table and report hold each run's own numbers, re-scored on common items when needed."""

import json

import cv2
import keras
import numpy as np
import pytest

import segkit
from segkit import data, metrics, models
from segkit.cli import main
from segkit.errors import SegkitError
from segkit.workflows import compare as compare_module
from segkit.workflows import config, runs
from training_support import (band_by_shifts, boundary_scores, brute_force_iou, predict_classes, prepared_synthetic,
                              softmax, tiny_config, tiny_model, train_with_stand_in, upsample_bilinear)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Two runs on the same validation items (different learning rates) and one with another seed (other items)."""
    root = tmp_path_factory.mktemp("compare")
    dataset = prepared_synthetic(root)
    a = train_with_stand_in(tiny_config(dataset, name="a"), root / "runs")
    b = train_with_stand_in(tiny_config(dataset, optimizer={"learning_rate": 0.003}), root / "runs")
    c = train_with_stand_in(tiny_config(dataset, train={"seed": 5}), root / "runs")
    return dataset, a, b, c


def test_table_and_report_hold_each_runs_own_numbers(three_runs, tmp_path):
    dataset, a, b, _ = three_runs
    result = segkit.compare([a.path, b.path], out=tmp_path)
    table = result["table"]
    assert list(table.index) == ["a", "tiny"]  # run names are config names
    for run, (_, row) in zip((a, b), table.iterrows()):
        assert row["mIoU"] == run.metrics["miou"]
        assert row["pixel accuracy"] == run.metrics["pixel_accuracy"]
        assert row["training (min)"] == pytest.approx(run.state["train_seconds"] / 60)
        assert row["epochs"] == 2 and row["latency (ms/image)"] > 0
    expected_params = tiny_model(None, 19, (32, 32)).count_params()
    assert (table["params (M)"] * 1e6).round().astype(int).tolist() == [expected_params] * 2
    assert result["per_class"].shape == (19, 2)
    report = (tmp_path / "report.md").read_text()
    assert f"{a.metrics['miou']:.4g}" in report and f"{b.metrics['miou']:.4g}" in report
    assert "all were validated on the same items" in report
    for figure in ("class_iou.png", "learning_curves.png", "qualitative.png"):
        assert (tmp_path / figure).stat().st_size > 1000 and f"]({figure})" in report
    assert len(list(tmp_path.glob("confusion_*.png"))) == 2


def test_table_holds_boundary_scores_like_an_independent_count_on_the_validation_items(three_runs, tmp_path):
    dataset, a, b, _ = three_runs
    table = segkit.compare([a.path, b.path], out=tmp_path, latency=False)["table"]
    prepared = data.load_prepared(dataset)
    items = np.sort(a.dataset["val"]["indices"])
    truth = np.asarray(prepared.masks[items])
    for run, (_, row) in zip((a, b), table.iterrows()):
        pred = predict_classes(keras.saving.load_model(run.path / "best.keras"), np.asarray(prepared.images[items]))
        miou, accuracy = boundary_scores(truth, pred, 19, metrics.BOUNDARY_WIDTH)
        # Training validated in batches, this predicts in one: on one thread oneDNN rounds the two differently,
        # enough to flip a near-tie pixel or two of the band, never more.
        band_pixels = band_by_shifts(truth, metrics.BOUNDARY_WIDTH, 255).sum()
        assert row["boundary acc (3 px)"] == pytest.approx(accuracy, abs=2.5 / band_pixels)
        assert row["boundary mIoU (3 px)"] == pytest.approx(miou, rel=1e-2)
        assert row["TTA"] == "none"
    report = (tmp_path / "report.md").read_text()
    assert "| boundary mIoU (3 px) | boundary acc (3 px) |" in report and "Test-time augmentation: none" in report


def test_flip_tta_scores_like_evaluate_with_flip_and_is_timed_with_the_flips(tmp_path, monkeypatch):
    dataset = prepared_synthetic(tmp_path, count=8)
    held_out = prepared_synthetic(tmp_path, count=4, seed=1)
    run = train_with_stand_in(tiny_config(dataset, name="own", data={"val_path": str(held_out)}), tmp_path / "runs")
    timed = []
    predict = models.predict_probabilities

    def recording(model, images, **kwargs):
        if np.ndim(images) == 3:  # one image at a time: the latency calls
            timed.append(kwargs.get("tta"))
        return predict(model, images, **kwargs)

    monkeypatch.setattr(models, "predict_probabilities", recording)
    flipped = segkit.compare([run.path], out=tmp_path / "flip", tta="flip")["table"].loc["own"]
    expected = segkit.evaluate(run.path, held_out, tta="flip", verbose=False)
    for column, key in [("mIoU", "miou"), ("pixel accuracy", "pixel_accuracy"),
                        ("boundary mIoU (3 px)", "boundary_miou"), ("boundary acc (3 px)", "boundary_pixel_accuracy")]:
        assert flipped[column] == pytest.approx(expected[key], abs=1e-12)
    assert timed == ["flip"] * (1 + compare_module.LATENCY_REPEATS) and flipped["TTA"] == "flip"
    assert "Test-time augmentation: flip" in (tmp_path / "flip" / "report.md").read_text()
    plain = segkit.compare([run.path], out=tmp_path / "plain", latency=False)["table"].loc["own"]
    assert plain["mIoU"] == run.metrics["miou"] == segkit.evaluate(run.path, held_out, verbose=False)["miou"]
    with pytest.raises(SegkitError, match="tta='mirror' is not supported"):
        segkit.compare([run.path], out=tmp_path / "bad", tta="mirror")


def test_a_model_trained_on_random_crops_is_counted_at_the_size_it_is_fed(three_runs, tmp_path):
    dataset, a, _, _ = three_runs
    cropped = train_with_stand_in(tiny_config(dataset, name="cropped", augment={"enabled": True, "crop": [16, 16]}),
                                  tmp_path / "runs")
    assert keras.saving.load_model(cropped.path / "best.keras").input.shape[1:3] == (None, None)
    table = segkit.compare([a.path, cropped.path], out=tmp_path / "compare", latency=False)["table"]
    hand_built = models.model_stats(tiny_model(None, 19, (32, 32)))
    assert table["GFLOPs"].tolist() == [hand_built["gflops"]] * 2


def test_runs_validated_on_different_items_are_rescored_on_the_first_runs_items(three_runs, tmp_path):
    dataset, a, _, c = three_runs
    assert a.dataset["val"]["indices"] != c.dataset["val"]["indices"]
    table = segkit.compare([a.path, c.path], out=tmp_path, latency=False)["table"]
    prepared = data.load_prepared(dataset)
    items = np.asarray(a.dataset["val"]["indices"])
    for run, miou in zip((a, c), table["mIoU"]):
        model = keras.saving.load_model(run.path / "best.keras")
        pred = predict_classes(model, np.asarray(prepared.images[items]))
        assert miou == pytest.approx(brute_force_iou(np.asarray(prepared.masks[items]), pred, 19)[1], abs=1e-12)
    assert "evaluating every model again" in (tmp_path / "report.md").read_text()


def test_unfinished_runs_and_runs_on_other_classes_are_refused(three_runs, tmp_path):
    _, a, _, _ = three_runs
    unfinished = runs.Run.create(tmp_path / "runs", config.load({"data": {"path": "x"}}))
    with pytest.raises(SegkitError, match="has not finished"):
        segkit.compare([a.path, unfinished.path], out=tmp_path / "out")
    other = tmp_path / "other"
    other.mkdir()
    for item in a.path.iterdir():
        if item.is_file():
            (other / item.name).write_bytes(item.read_bytes())
    described = {**a.dataset, "classes": ["x"] * 19}
    runs.write_json(other / "dataset.json", described)
    with pytest.raises(SegkitError, match="predict different classes"):
        segkit.compare([a.path, other], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def sized_runs(tmp_path_factory):
    """Runs on one raw folder of 64x64 pairs holding out the same seeded items: prepared at 32x32 (twice, in two
    caches) and at 64x64."""
    root = tmp_path_factory.mktemp("sizes")
    raw = root / "raw"
    data.write_synthetic(raw, 16, seed=0, size=(64, 64))

    def run(name, size, cache, **sections):
        spec = {"format": "cityscapes-pairs", "size": list(size), "cache": str(root / cache)}
        return train_with_stand_in(tiny_config(raw, name=name, data=spec, **sections), root / "runs")

    small = run("small", (32, 32), "cache-a")
    large = run("large", (64, 64), "cache-a")
    small_elsewhere = run("small2", (32, 32), "cache-b", optimizer={"learning_rate": 0.003})
    return small, large, small_elsewhere


def test_runs_at_different_sizes_are_scored_on_the_largest_labels_each_fed_at_its_size(sized_runs, tmp_path, monkeypatch):
    small, large, _ = sized_runs
    assert small.dataset["val"]["path"] != large.dataset["val"]["path"]
    fed_for_latency = []
    monkeypatch.setattr(compare_module, "_latency_ms", lambda model, split, size, tta: fed_for_latency.append(size) or 1.0)
    result = segkit.compare([small.path, large.path], out=tmp_path)
    table = result["table"]
    assert table["input size"].tolist() == ["32x32", "64x64"] and fed_for_latency == [(32, 32), (64, 64)]
    reference = data.load_prepared(large.dataset["val"]["path"])
    items = np.sort(large.dataset["val"]["indices"])
    assert items.tolist() == sorted(small.dataset["val"]["indices"])
    images, truth = np.asarray(reference.images[items]), np.asarray(reference.masks[items])
    small_model = keras.saving.load_model(small.path / "best.keras")
    shrunk = np.stack([cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA) for image in images])
    logits = keras.ops.convert_to_numpy(small_model(shrunk.astype("float32"), training=False))
    small_pred = upsample_bilinear(softmax(logits.astype(np.float64)), (64, 64)).argmax(-1)
    assert table.loc["small", "mIoU"] == pytest.approx(brute_force_iou(truth, small_pred, 19)[1], abs=1e-12)
    assert table.loc["small", "mIoU"] != small.metrics["miou"]  # its own 32x32 labels gave another score
    large_pred = predict_classes(keras.saving.load_model(large.path / "best.keras"), images)
    assert table.loc["large", "mIoU"] == large.metrics["miou"] == pytest.approx(brute_force_iou(truth, large_pred, 19)[1])
    report = (tmp_path / "report.md").read_text()
    assert "scored at 64x64 labels" in report and "small 32x32, large 64x64" in report
    # the order of the runs does not change the judging
    again = segkit.compare([large.path, small.path], out=tmp_path / "again", latency=False)["table"]
    assert again.loc["small", "mIoU"] == table.loc["small", "mIoU"]


def test_label_size_judges_at_a_smaller_runs_labels_and_names_the_sizes_when_absent(sized_runs, tmp_path):
    small, large, _ = sized_runs
    table = segkit.compare([small.path, large.path], out=tmp_path, latency=False, label_size=(32, 32))["table"]
    reference = data.load_prepared(small.dataset["val"]["path"])
    items = np.sort(small.dataset["val"]["indices"])
    images, truth = np.asarray(reference.images[items]), np.asarray(reference.masks[items])
    large_model = keras.saving.load_model(large.path / "best.keras")
    grown = np.stack([data.resize_image(image, (64, 64)) for image in images])  # fed at its trained size
    logits = keras.ops.convert_to_numpy(large_model(grown.astype("float32"), training=False))
    large_pred = upsample_bilinear(softmax(logits.astype(np.float64)), (32, 32)).argmax(-1)
    assert table.loc["large", "mIoU"] == pytest.approx(brute_force_iou(truth, large_pred, 19)[1], abs=1e-12)
    assert table.loc["large", "mIoU"] != large.metrics["miou"]  # its own 64x64 labels gave another score
    assert table.loc["small", "mIoU"] == pytest.approx(small.metrics["miou"], abs=1e-12)
    assert "scored at 32x32 labels" in (tmp_path / "report.md").read_text()
    with pytest.raises(SegkitError, match=r"^--label-size 48x48: the runs' validation items are prepared at 32x32, 64x64; give"):
        segkit.compare([small.path, large.path], out=tmp_path / "none", latency=False, label_size=(48, 48))
    assert not (tmp_path / "none").exists()


def test_runs_on_the_same_items_and_size_in_different_caches_keep_their_metrics(sized_runs, tmp_path, monkeypatch):
    small, _, small_elsewhere = sized_runs
    assert small.dataset["val"]["path"] != small_elsewhere.dataset["val"]["path"]
    monkeypatch.setattr(compare_module.evaluate, "confusion", lambda *a, **k: pytest.fail("re-evaluated"))
    table = segkit.compare([small.path, small_elsewhere.path], out=tmp_path, latency=False)["table"]
    assert table["mIoU"].tolist() == [small.metrics["miou"], small_elsewhere.metrics["miou"]]
    assert table["pixel accuracy"].tolist() == [small.metrics["pixel_accuracy"], small_elsewhere.metrics["pixel_accuracy"]]
    assert table["input size"].tolist() == ["32x32", "32x32"]
    assert "all were validated on the same items" in (tmp_path / "report.md").read_text()


@pytest.fixture(scope="module")
def tolerance_runs(tmp_path_factory):
    """Two runs holding out the same items of one raw folder of JPEG pairs, its labels decoded at the default colour
    distance and at 50."""
    root = tmp_path_factory.mktemp("tolerance")
    raw = root / "raw"
    data.write_synthetic(raw, 16, seed=0, size=(32, 32))

    def run(name, **spec):
        spec = {"format": "cityscapes-pairs", "cache": str(root / "cache"), **spec}
        return train_with_stand_in(tiny_config(raw, name=name, data=spec), root / "runs")

    return raw, run("strict"), run("loose", max_color_distance=50)


def test_runs_on_labels_decoded_at_other_colour_distances_are_judged_on_the_first_runs_labels(tolerance_runs, tmp_path):
    _, strict, loose = tolerance_runs
    assert loose.dataset["val"]["indices"] == strict.dataset["val"]["indices"]
    assert "distance50" in loose.dataset["val"]["path"] and "distance" not in strict.dataset["val"]["path"]
    strict_data, loose_data = (data.load_prepared(run.dataset["val"]["path"]) for run in (strict, loose))
    kept = np.asarray(strict_data.masks) != 255
    np.testing.assert_array_equal(np.asarray(loose_data.masks)[kept], np.asarray(strict_data.masks)[kept])
    assert (np.asarray(loose_data.masks) != 255).sum() > kept.sum()
    items = np.sort(strict.dataset["val"]["indices"])
    for order, judge in (((strict, loose), strict_data), ((loose, strict), loose_data)):
        out = tmp_path / order[0].config["name"]
        table = segkit.compare([run.path for run in order], out=out, latency=False)["table"]
        truth, images = np.asarray(judge.masks[items]), np.asarray(judge.images[items])
        for run in order:
            pred = predict_classes(keras.saving.load_model(run.path / "best.keras"), images)
            expected = brute_force_iou(truth, pred, 19)[1]
            assert table.loc[run.config["name"], "mIoU"] == pytest.approx(expected, abs=1e-12)
        assert "evaluating every model again on the first run's validation split" in (out / "report.md").read_text()


def test_evaluate_decodes_raw_pairs_at_a_colour_distance_and_refuses_one_for_prepared_data(tolerance_runs, tmp_path,
                                                                                          monkeypatch):
    raw, strict, loose = tolerance_runs
    monkeypatch.chdir(tmp_path)  # the command prepares into data/prepared
    argv = ["evaluate", str(strict.path), "--data", str(raw), "--format", "cityscapes-pairs", "--max-color-distance", "50",
            "--json", "scores.json"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "scores.json").read_text())
    prepared = data.load_prepared(result["data"])
    assert prepared.manifest["max_color_distance"] == 50
    np.testing.assert_array_equal(prepared.masks, data.load_prepared(loose.dataset["val"]["path"]).masks)
    pred = predict_classes(keras.saving.load_model(strict.path / "best.keras"), np.asarray(prepared.images))
    assert result["miou"] == pytest.approx(brute_force_iou(np.asarray(prepared.masks), pred, 19)[1], abs=1e-12)
    with pytest.raises(SegkitError, match=r"is a prepared dataset, its labels already decoded; give the raw dataset"):
        segkit.evaluate(strict.path, loose.dataset["val"]["path"], max_color_distance=50, verbose=False)


def test_a_run_given_twice_is_refused_naming_it(three_runs, tmp_path):
    _, a, b, _ = three_runs
    same_run_spelled_otherwise = a.path.parent.parent / a.path.parent.name / ".." / a.path.parent.name / a.path.name
    with pytest.raises(SegkitError, match=rf"^run .*{a.path.name} is given twice \(as .* and .*\.\..*\)") as err:
        segkit.compare([a.path, b.path, same_run_spelled_otherwise], out=tmp_path / "out", latency=False)
    assert str(a.path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_names_label_the_rows_legends_and_confusion_files_in_order(three_runs, tmp_path, monkeypatch):
    _, a, b, _ = three_runs
    legends = []
    plot = compare_module.viz.plot_learning_curves
    monkeypatch.setattr(compare_module.viz, "plot_learning_curves", lambda histories: legends.append(list(histories))
                        or plot(histories))
    result = segkit.compare([a.path, b.path], out=tmp_path / "out", latency=False, names=["35 min", "70 min"])
    assert list(result["table"].index) == ["35 min", "70 min"] and list(result["per_class"].columns) == ["35 min", "70 min"]
    assert result["table"].loc["70 min", "mIoU"] == b.metrics["miou"] and legends == [["35 min", "70 min"]]
    assert sorted(p.name for p in (tmp_path / "out").glob("confusion_*")) == ["confusion_35 min.png", "confusion_70 min.png"]


@pytest.mark.parametrize("names, message", [
    (["one"], r"^1 names given for 2 runs; give one name per run, in order$"),
    (["x", "x"], r"^run name 'x' is given twice; names must differ$"),
    (["ok", "a/b"], r"^run name 'a/b' cannot name a file \(confusion_a/b.png\)"),
    (["ok", " "], r"^run name ' ' cannot name a file"),
])
def test_names_that_do_not_fit_are_refused_before_loading_any_run(three_runs, tmp_path, monkeypatch, names, message):
    _, a, b, _ = three_runs
    monkeypatch.setattr(compare_module, "_load", lambda *args: pytest.fail("a run was loaded before the names were checked"))
    with pytest.raises(SegkitError, match=message):
        segkit.compare([a.path, b.path], out=tmp_path / "out", names=names)
    assert not (tmp_path / "out").exists()


def test_report_links_to_figures_of_runs_named_with_spaces_work(three_runs, tmp_path):
    import re
    import urllib.parse

    dataset, a, _, _ = three_runs
    spaced = train_with_stand_in(tiny_config(dataset, name="my run (v2)"), tmp_path / "runs")
    segkit.compare([a.path, spaced.path], out=tmp_path / "out", latency=False)
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (tmp_path / "out" / "report.md").read_text())
    assert len(links) == 5  # three figures and two confusion matrices, each a link markdown renders
    assert {urllib.parse.unquote(link) for link in links} == {p.name for p in (tmp_path / "out").glob("*.png")}
    assert "confusion_my run (v2).png" in {urllib.parse.unquote(link) for link in links}


def test_a_read_only_or_file_out_is_refused_before_loading_any_run(three_runs, read_only_folder, tmp_path, monkeypatch):
    _, a, b, _ = three_runs

    def no_loading(*args, **kwargs):
        raise AssertionError("a run was loaded before --out was checked")

    monkeypatch.setattr(compare_module, "_load", no_loading)
    with pytest.raises(SegkitError, match=r"^--out .*read-only/report cannot be written \(in .*\): Read-only file system$"):
        segkit.compare([a.path, b.path], out=read_only_folder / "report")
    (tmp_path / "plain").write_text("keep me")
    with pytest.raises(SegkitError, match=r"^--out .*plain is a file, not a folder$"):
        segkit.compare([a.path, b.path], out=tmp_path / "plain")
    assert (tmp_path / "plain").read_text() == "keep me"


def test_out_keeps_the_users_own_files_and_replaces_only_what_compare_wrote(three_runs, tmp_path, monkeypatch):
    _, a, b, _ = three_runs
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    (out / "qualitative.png").write_bytes(b"my figure")

    def no_scoring(*args, **kwargs):
        raise AssertionError("runs were scored before --out's own files were found")

    with monkeypatch.context() as patch:
        patch.setattr(compare_module, "_latency_ms", no_scoring)
        with pytest.raises(SegkitError, match=r"^--out .*out holds report.md, qualitative.png, which segkit compare did "
                                              r"not write \(or which changed since\); move them away or choose another --out$"):
            segkit.compare([a.path, b.path], out=out)
    assert (out / "report.md").read_text() == "my notes" and (out / "qualitative.png").read_bytes() == b"my figure"
    assert sorted(p.name for p in out.iterdir()) == ["qualitative.png", "report.md"]  # nothing else written either
    (out / "qualitative.png").unlink()
    (out / "report.md").unlink()
    segkit.compare([a.path, b.path], out=out, latency=False)
    segkit.compare([a.path, b.path], out=out, latency=False)  # its own report is replaced
    with open(out / "class_iou.png", "ab") as figure:  # a figure edited since
        figure.write(b"edited")
    with pytest.raises(SegkitError, match=r"holds class_iou.png, which segkit compare did not write"):
        segkit.compare([a.path, b.path], out=out, latency=False)


def test_classes_at_zero_counts_what_prints_as_zero_and_skips_absent_classes():
    from segkit.workflows.compare import classes_at_zero

    scores = {"road": 0.91, "pole": 0.0, "rider": 0.0004, "train": 0.0006, "bus": float("nan")}
    assert classes_at_zero(scores) == 2  # pole and rider print as 0.000; train as 0.001; bus is absent
    assert classes_at_zero(list(scores.values())) == 2

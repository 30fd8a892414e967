"""segkit.compare: the table and report hold each run's own numbers, re-scored on common items when needed."""

import keras
import numpy as np
import pytest

import segkit
from segkit import data
from segkit.errors import SegkitError
from segkit.workflows import config, runs
from training_support import brute_force_iou, predict_classes, prepared_synthetic, tiny_config, tiny_model, train_with_stand_in


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

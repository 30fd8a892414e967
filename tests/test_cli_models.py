"""`segkit evaluate | predict | compare | export | quickstart`: each command passes its options to the Python API.

Each command's output is checked against the same call made through the API (or against Keras itself).
"""

import json

import cv2
import keras
import numpy as np
import onnxruntime
import pytest

import segkit
from segkit import cli, quickstart
from segkit.workflows import runs
from segkit.workflows import train as train_module
from training_support import prepared_synthetic, tiny_config, tiny_model, train_with_stand_in


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    dataset = prepared_synthetic(root)
    first = train_with_stand_in(tiny_config(dataset, name="first"), root / "runs")
    second = train_with_stand_in(tiny_config(dataset, name="second", optimizer={"learning_rate": 0.003}), root / "runs")
    return dataset, first, second


def test_evaluate_writes_the_apis_scores_with_tta(trained, tmp_path):
    dataset, run, _ = trained
    args = ["evaluate", str(run.path), "--data", str(dataset), "--tta", "flip", "--batch-size", "3"]
    assert cli.main([*args, "--json", str(tmp_path / "cli.json")]) == 0
    expected = segkit.evaluate(run.path, dataset, tta="flip", batch_size=3, json_path=tmp_path / "api.json", verbose=False)
    got = json.loads((tmp_path / "cli.json").read_text())
    assert got == json.loads((tmp_path / "api.json").read_text())
    assert got["tta"] == "flip" and got["miou"] == expected["miou"] and got["num_items"] == 16


def _read_rgb(path):
    return cv2.imread(str(path))[..., ::-1]


def test_predict_writes_the_apis_masks_with_tta_and_window(trained, tmp_path, capsys):
    _, run, _ = trained
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8))
    args = ["predict", str(run.path), str(image), "--out", str(tmp_path / "cli"), "--tta", "flip", "--window"]
    assert cli.main([*args, "32", "32"]) == 0
    segkit.predict(run.path, [image], out=tmp_path / "api", tta="flip", window=(32, 32))
    for name in ("street_mask.png", "street_overlay.png"):
        np.testing.assert_array_equal(_read_rgb(tmp_path / "cli" / name), _read_rgb(tmp_path / "api" / name))
    # --window reaches the API: the stand-in takes 32 x 32 tiles only
    assert cli.main([*args, "16", "16"]) == 2
    assert "window=(16, 16) does not fit model" in capsys.readouterr().err


def test_compare_writes_the_apis_report_without_latency(trained, tmp_path, capsys):
    _, first, second = trained
    args = ["compare", str(first.path), str(second.path), "--out", str(tmp_path / "cli"), "--no-latency"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    result = segkit.compare([first.path, second.path], out=tmp_path / "api", latency=False)
    # the CLI prints the table; the API returns it and prints only where the report went (a notebook shows it once)
    assert "pixel accuracy" in printed and "pixel accuracy" not in capsys.readouterr().out
    assert (tmp_path / "cli" / "report.md").read_text() == result["report"].read_text()
    assert result["table"]["latency (ms/image)"].isna().all()
    assert list(result["table"]["mIoU"]) == [first.metrics["miou"], second.metrics["miou"]]


def test_compare_passes_flip_tta_to_the_api(trained, tmp_path, capsys):
    _, first, _ = trained
    assert cli.main(["compare", str(first.path), "--out", str(tmp_path / "cli"), "--no-latency", "--tta", "flip"]) == 0
    assert "flip" in capsys.readouterr().out
    result = segkit.compare([first.path], out=tmp_path / "api", latency=False, tta="flip")
    assert (tmp_path / "cli" / "report.md").read_text() == result["report"].read_text()
    assert result["table"]["TTA"].tolist() == ["flip"]


def test_compare_passes_names_to_the_api(trained, tmp_path, capsys):
    _, first, second = trained
    args = ["compare", str(first.path), str(second.path), "--out", str(tmp_path / "cli"), "--no-latency"]
    assert cli.main([*args, "--names", "short", "long"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("long ")
    result = segkit.compare([first.path, second.path], out=tmp_path / "api", latency=False, names=["short", "long"])
    assert (tmp_path / "cli" / "report.md").read_text() == result["report"].read_text()
    assert cli.main([*args, "--names", "one"]) == 2
    assert "1 names given for 2 runs" in capsys.readouterr().err


def test_export_writes_an_onnx_file_with_the_keras_logits(trained, tmp_path):
    _, run, _ = trained
    out = tmp_path / "model.onnx"
    assert cli.main(["export", str(run.path), "--format", "onnx", "--out", str(out)]) == 0
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(keras.saving.load_model(run.path / "best.keras")(images, training=False))
    session = onnxruntime.InferenceSession(str(out))
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: images})[0], expected, atol=1e-4)


@pytest.mark.slow
def test_quickstart_trains_both_models_and_compares_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "build_model", tiny_model)  # the stand-in: ResNet-34s would take minutes
    out = tmp_path / "qs"
    assert cli.main(["quickstart", "--out", str(out), "--count", "10", "--seed", "4", "--epochs", "1"]) == 0
    run_dirs = sorted((out / "runs").iterdir())
    expected_names = sorted(name.removesuffix(".yaml") for name in quickstart.QUICKSTART_MODELS)
    assert [d.name.rsplit("-", 2)[0] for d in run_dirs] == expected_names  # <config name>-<date>-<time>
    report = (out / "comparison" / "report.md").read_text()
    for run_dir in run_dirs:
        run_config = runs.Run.open(run_dir).config
        assert run_config["train"]["epochs"] == 1 and run_config["data"]["path"] == str(out / "synthetic")
        assert run_config["data"]["size"] == [128, 128] and run_config["data"]["cache"] == str(out / "cache")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert f"{metrics['miou']:.4g}" in report
    assert len(list((out / "synthetic").glob("*.jpg"))) == 10 and (out / "samples.png").is_file()
    printed = capsys.readouterr().out
    assert str(out / "comparison" / "report.md") in printed and "pixel accuracy" in printed  # the table, printed

"""segkit.train: run folder contents, metrics from the saved model, resume after a kill, NaN stop, bad input."""

import importlib.util
import json

import keras
import numpy as np
import pandas as pd
import pytest

import segkit
from segkit import data
from segkit.errors import SegkitError
from segkit.models import batchnorm, bisenetv2
from segkit.workflows import config as config_lib
from segkit.workflows import distribution, runs
from segkit.workflows import train as train_module
from training_support import brute_force_run_scores, killed_run, prepared_synthetic, tiny_config, tiny_model
from training_support import train_quietly as _train


def test_run_folder_holds_history_checkpoints_and_metrics_of_the_best_model(dataset, stand_in, tmp_path):
    run = _train(tiny_config(dataset, train={"epochs": 3}), tmp_path)
    assert run.path.parent == tmp_path and run.path.name.startswith("tiny-")
    names = {p.name for p in run.path.iterdir()}
    assert {"config.yaml", "state.json", "dataset.json", "best.keras", "last-0003.keras", "history.csv",
            "metrics.json", "per_class.csv", "figures"} <= names
    assert not [n for n in names if n.startswith(".") or (n.startswith("last-") and n != "last-0003.keras")]
    assert run.config["train"]["epochs"] == 3 and run.config["data"]["path"] == str(dataset)
    for figure in ("learning_curves.png", "confusion.png", "val_predictions.png"):
        assert (run.path / "figures" / figure).stat().st_size > 1000
    if importlib.util.find_spec("tensorboard"):
        assert any((run.path / "tensorboard").rglob("events.out.tfevents.*"))

    history = pd.read_csv(run.path / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    assert np.isfinite(history[["loss", "val_loss", "miou", "val_miou"]].to_numpy()).all()
    best_epoch = int(history["val_miou"].idxmax()) + 1

    # metrics.json is best.keras evaluated on the validation items: recompute it by brute force.
    _, expected_val = data.holdout_split(len(data.load_prepared(dataset).images), 4, seed=0)
    np.testing.assert_array_equal(run.dataset["val"]["indices"], expected_val)
    iou, miou, accuracy = brute_force_run_scores(run, dataset)
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(miou, abs=1e-12)
    assert metrics["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    per_class = [np.nan if v is None else v for v in metrics["per_class_iou"].values()]
    np.testing.assert_allclose(per_class, iou, atol=1e-12)
    assert metrics["best_epoch"] == best_epoch
    # ...and it is the model Keras' streaming metric scored best during training.
    assert metrics["miou"] == pytest.approx(history["val_miou"].max(), abs=1e-5)
    table = pd.read_csv(run.path / "per_class.csv", index_col=0)
    np.testing.assert_allclose(table["IoU"].iloc[:-1].to_numpy(), iou, atol=1e-6)


def test_same_config_and_seed_give_the_same_metrics(dataset, stand_in, tmp_path):
    config = tiny_config(dataset, augment={"enabled": True})
    first = _train(config, tmp_path / "a")
    second = _train(config, tmp_path / "b")
    pd.testing.assert_frame_equal(pd.read_csv(first.path / "history.csv").drop(columns="seconds"),
                                  pd.read_csv(second.path / "history.csv").drop(columns="seconds"))
    assert first.metrics["miou"] == second.metrics["miou"]
    other = _train(tiny_config(dataset, augment={"enabled": True}, train={"seed": 1}), tmp_path / "c")
    assert other.metrics["miou"] != first.metrics["miou"]


@pytest.mark.parametrize("steps_per_epoch, augment", [(None, False), (2, True)], ids=["whole-epochs", "2-of-3-steps"])
def test_a_run_killed_mid_commit_resumes_to_the_uninterrupted_result(dataset, stand_in, tmp_path, monkeypatch, recwarn,
                                                                     steps_per_epoch, augment):
    config = tiny_config(dataset, train={"epochs": 3, "steps_per_epoch": steps_per_epoch}, augment={"enabled": augment},
                         optimizer={"schedule": "poly", "name": "sgd", "learning_rate": 0.05})
    whole = _train(config, tmp_path / "whole")

    killed = killed_run(config, tmp_path / "killed", monkeypatch, 3)
    state = json.loads((killed / "state.json").read_text())
    assert state["epoch"] == 2 and state["checkpoint"] == "last-0002.keras"
    assert (killed / "last-0002.keras").is_file()
    assert len(pd.read_csv(killed / "history.csv")) == 2

    resumed = _train(None, None, resume=killed)
    assert resumed.path == killed
    assert sorted(p.name for p in killed.glob("last-*.keras")) == ["last-0003.keras"]  # the uncommitted one is gone
    a, b = (pd.read_csv(r.path / "history.csv").drop(columns="seconds") for r in (whole, resumed))
    pd.testing.assert_frame_equal(a, b, atol=1e-5)
    steps = steps_per_epoch or 3  # 12 training items, batch 4: 3 batches
    assert list(b["steps"]) == [steps] * 3
    assert not [w for w in recwarn if "ran out of data" in str(w.message)]
    # poly schedule continued from the restored step count: lr = 0.05 * (1 - step / total) ** 0.9 at each epoch's end
    expected = [0.05 * (1 - e / 3) ** 0.9 for e in (1, 2, 3)]
    np.testing.assert_allclose(b["learning_rate"], expected, atol=1e-7)
    for x, y in zip(*(keras.saving.load_model(r.path / "last-0003.keras").get_weights() for r in (whole, resumed))):
        np.testing.assert_allclose(x, y, atol=1e-5)
    with pytest.raises(SegkitError, match="has finished"):
        _train(None, None, resume=killed)


@keras.saving.register_keras_serializable(package="segkit_tests")
class PoisonAfter(keras.layers.Layer):
    """Identity until it has run `steps` training steps, then NaN: a loss that blows up mid-run."""

    def __init__(self, steps, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, x, training=False):
        if training:
            self.count.assign_add(1.0)
        # Added, not multiplied: a where() over x * nan would already poison the gradients of good steps.
        return x + keras.ops.where(self.count > self.steps, np.nan, 0.0)

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(dataset, tmp_path, monkeypatch):
    def poisoned(cfg, num_classes, image_size):
        base = tiny_model(cfg, num_classes, image_size)
        return keras.Model(base.input, PoisonAfter(4)(base.output))  # epoch 1 has 3 steps; step 2 of epoch 2 is NaN

    monkeypatch.setattr(train_module, "build_model", poisoned)
    with pytest.raises(SegkitError, match=r"NaN or infinite at epoch 2, step 2.*last good checkpoint \(epoch 1\)"):
        _train(tiny_config(dataset, train={"epochs": 4}), tmp_path)
    (run_dir,) = tmp_path.iterdir()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epoch"] == 1 and state["status"] == "stopped: non-finite loss"
    assert sorted(p.name for p in run_dir.glob("last-*.keras")) == ["last-0001.keras"]
    assert not (run_dir / "metrics.json").exists()
    weights = keras.saving.load_model(run_dir / "last-0001.keras").get_weights()
    assert all(np.isfinite(w).all() for w in weights)


def tiny_aux_model(cfg, num_classes, image_size):
    """Stand-in for PSPNet with aux_head=True: outputs {"logits", "aux_logits"}."""
    base = tiny_model(cfg, num_classes, image_size)
    aux = keras.layers.Conv2D(num_classes, 1, name="aux")(base.layers[-2].output)
    return keras.Model(base.input, {"logits": base.output, "aux_logits": aux})


def test_aux_head_is_weighted_0_4_and_best_keras_is_the_inference_model(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", tiny_aux_model)
    run = _train(tiny_config(dataset, model={"name": "pspnet", "aux_head": True}), tmp_path)
    history = pd.read_csv(run.path / "history.csv")
    assert {"logits_loss", "aux_logits_loss", "miou", "val_miou"} <= set(history.columns)
    # total loss = main + 0.4 * aux (Keras logs running means over the same steps)
    np.testing.assert_allclose(history["loss"], history["logits_loss"] + 0.4 * history["aux_logits_loss"], rtol=1e-4)
    best = keras.saving.load_model(run.path / "best.keras")
    assert not isinstance(best.output, dict) and best.output.shape[-1] == 19
    assert run.metrics["miou"] == pytest.approx(history["val_miou"].max(), abs=1e-5)


def tiny_booster_model(cfg, num_classes, image_size):
    """Stand-in for BiSeNetV2 with aux_head=True: "logits" and its four booster outputs."""
    base = tiny_model(cfg, num_classes, image_size)
    boosters = [name for name in bisenetv2.AUX_LOSS_WEIGHTS if name != "logits"]
    heads = {name: keras.layers.Conv2D(num_classes, 1, name=name)(base.layers[-2].output) for name in boosters}
    return keras.Model(base.input, {"logits": base.output, **heads})


def test_bisenetv2_booster_heads_each_weigh_1_and_best_keras_is_the_inference_model(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", tiny_booster_model)
    run = _train(tiny_config(dataset, model={"name": "bisenetv2", "encoder": None, "aux_head": True}), tmp_path)
    history = pd.read_csv(run.path / "history.csv")
    parts = ["logits_loss"] + [f"aux_{stage}_logits_loss" for stage in ("stem", "stage3", "stage4", "stage5")]
    assert set(parts) <= set(history.columns)
    np.testing.assert_allclose(history["loss"], history[parts].sum(axis=1), rtol=1e-4)
    best = keras.saving.load_model(run.path / "best.keras")
    assert not isinstance(best.output, dict) and best.output.shape[-1] == 19


def tiny_detail_model(cfg, num_classes, image_size):
    """Stand-in for Fast-SCNN with detail_head=True: "logits" and the one-channel boundary logits "detail_logits"."""
    base = tiny_model(cfg, num_classes, image_size)
    detail = keras.layers.Conv2D(1, 1, name="detail_logits")(base.layers[-2].output)
    return keras.Model(base.input, {"logits": base.output, "detail_logits": detail})


def test_detail_head_trains_with_the_detail_loss_weighted_1_and_best_keras_is_the_inference_model(dataset, tmp_path, monkeypatch):
    # The configured cross-entropy would refuse the one-channel output: training at all shows the detail loss takes it.
    monkeypatch.setattr(train_module, "build_model", tiny_detail_model)
    run = _train(tiny_config(dataset, model={"name": "fastscnn", "encoder": None, "detail_head": True}), tmp_path)
    history = pd.read_csv(run.path / "history.csv")
    assert {"logits_loss", "detail_logits_loss"} <= set(history.columns)
    np.testing.assert_allclose(history["loss"], history["logits_loss"] + history["detail_logits_loss"], rtol=1e-4)
    best = keras.saving.load_model(run.path / "best.keras")
    assert not isinstance(best.output, dict) and best.output.shape[-1] == 19


# ---------------------------------------------------------------------------------------------
# Bad input: one-line SegkitError, nothing created or overwritten


def test_dataset_path_that_does_not_exist(tmp_path):
    with pytest.raises(SegkitError, match="does-not-exist does not exist"):
        _train(tiny_config(tmp_path / "does-not-exist"), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_raw_folder_without_format_says_what_to_give(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(SegkitError, match="not a prepared dataset.*cityscapes-pairs"):
        _train(tiny_config(tmp_path / "raw"), tmp_path / "runs")


def test_validation_data_with_other_classes(dataset, tmp_path_factory, tmp_path):
    other = prepared_synthetic(tmp_path_factory.mktemp("all"), count=6, classes="all")
    config = tiny_config(dataset, data={"val_path": str(other)})
    with pytest.raises(SegkitError, match="classes"):
        _train(config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_prepared_size_differs_from_config_size(dataset, tmp_path):
    with pytest.raises(SegkitError, match="data.size is 64x64 but the prepared dataset .* is 32x32"):
        _train(tiny_config(dataset, data={"size": [64, 64]}), tmp_path)


def test_a_limit_too_small_for_a_holdout_split_names_data_limit(dataset, tmp_path):
    with pytest.raises(SegkitError, match=r"data.limit=1 leaves 1 item of .*needs at least 2"):
        _train(tiny_config(dataset, data={"limit": 1}), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_model_the_config_cannot_build_leaves_no_run_folder(dataset, tmp_path_factory, tmp_path):
    with pytest.raises(SegkitError, match="missing.h5"):
        _train(tiny_config(dataset, model={"encoder_weights": str(tmp_path / "missing.h5")}), tmp_path / "runs")
    odd = prepared_synthetic(tmp_path_factory.mktemp("odd"), count=6, size=(48, 48))
    with pytest.raises(SegkitError, match="not a multiple of 32"):
        _train(tiny_config(odd), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_misspelt_key_and_unknown_optimizer(dataset, tmp_path):
    with pytest.raises(SegkitError, match=r"'train.epoch'.*did you mean 'train.epochs'"):
        _train(tiny_config(dataset), tmp_path, overrides={"train.epoch": 3})
    with pytest.raises(SegkitError, match="valid: adam, adamw, sgd"):
        _train(tiny_config(dataset), tmp_path, overrides=["optimizer.name=rmsprop"])


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(SegkitError, match="is not a segkit run folder"):
        _train(None, None, resume=tmp_path / "notes")
    with pytest.raises(SegkitError, match="does not exist"):
        _train(None, None, resume=tmp_path / "missing")


def test_resume_with_a_foreign_checkpoint_fails_and_leaves_the_run_as_it_was(dataset, stand_in, tmp_path):
    run = _train(tiny_config(dataset, train={"epochs": 2}), tmp_path)
    state = json.loads((run.path / "state.json").read_text())
    run.write_state({**state, "status": "training", "epoch": 1})
    before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    (run.path / "last-0002.keras").write_bytes(b"not a keras file")
    before["last-0002.keras"] = b"not a keras file"
    with pytest.raises(SegkitError, match="last-0002.keras cannot be loaded"):
        _train(None, None, resume=run.path)
    after = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    assert after == before


def test_resume_refuses_new_settings(dataset, tmp_path):
    with pytest.raises(SegkitError, match="not both"):
        _train(tiny_config(dataset), tmp_path, resume=tmp_path)


# The brute force predicts through Keras' compiled step as segkit does, so even float16 / bfloat16 scores agree exactly
# (an eager call rounds differently and flips a few pixels near a tie: 2e-5 and 5e-5 mIoU here).
@pytest.mark.parametrize("setting", [True, "bfloat16"])
def test_mixed_precision_trains_and_restores_the_global_policy(dataset, stand_in, tmp_path, setting):
    run = _train(tiny_config(dataset, train={"mixed_precision": setting, "epochs": 1}), tmp_path)
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert np.isfinite(pd.read_csv(run.path / "history.csv")[["loss", "val_loss"]].to_numpy()).all()
    assert run.metrics["miou"] == pytest.approx(brute_force_run_scores(run, dataset)[1], abs=1e-12)


def test_cli_errors_are_one_line_with_exit_code_2(dataset, tmp_path, capsys):
    from segkit import cli

    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{path: {dataset}}}\ntrain: {{epochs: 1}}\n")
    assert cli.main(["train", str(config), "--set", "train.epoch=2", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segkit: error: ") and err.count("\n") == 1 and "did you mean 'train.epochs'" in err
    assert cli.main(["train", str(config), "--resume", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a segkit run folder" in capsys.readouterr().err
    for name in ("../escaped", "a/b"):
        assert cli.main(["train", str(config), "--set", f"name={name}", "--runs", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "'name' must be one folder name" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("escaped")]
    assert not (tmp_path / "runs").exists()


def test_time_budget_stops_mid_epoch_and_still_validates_and_saves_that_epoch(dataset, stand_in, tmp_path):
    run = _train(tiny_config(dataset, train={"epochs": 5, "max_minutes": 1e-6, "batch_size": 2}), tmp_path)
    history = pd.read_csv(run.path / "history.csv")
    assert list(history["epoch"]) == [1] and list(history["steps"]) == [1]  # 6 steps per epoch otherwise
    assert run.epochs_run == pytest.approx(1 / 6)  # what compare and the ablation table report
    assert np.isfinite(history["val_miou"]).all()
    assert run.state["status"] == "finished" and (run.path / "best.keras").is_file()
    # the one-step model is what best.keras holds and what metrics.json scores
    _, miou, _ = brute_force_run_scores(run, dataset)
    assert json.loads((run.path / "metrics.json").read_text())["miou"] == pytest.approx(miou, abs=1e-12)
    assert history["val_miou"].iloc[0] == pytest.approx(run.metrics["miou"], abs=1e-5)


def tiny_bn_model(cfg, num_classes, image_size):
    """The stand-in with a BatchNormalization on raw 0..255 pixels: batch variances in the thousands, moving ones start at 1."""
    inputs = keras.Input((*image_size, 3))
    x = keras.layers.BatchNormalization()(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    logits = keras.layers.Conv2D(num_classes, 1, dtype="float32")(x)
    return keras.Model(inputs, logits, name="tiny_bn")


def test_precise_bn_gives_validation_the_statistics_of_the_training_data(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", tiny_bn_model)
    pixel_mean = np.asarray(data.load_prepared(dataset).images, np.float64).mean(axis=(0, 1, 2))
    val_loss, moving_mean = {}, {}
    for batches in (0, 3):
        run = _train(tiny_config(dataset, train={"epochs": 1, "precise_bn": batches}), tmp_path / str(batches))
        val_loss[batches] = pd.read_csv(run.file("history.csv"))["val_loss"].iloc[-1]
        bn = next(layer for layer in keras.saving.load_model(run.file(runs.BEST)).layers if "batch_normalization" in layer.name)
        moving_mean[batches] = keras.ops.convert_to_numpy(bn.moving_mean)
    # Three steps at momentum 0.99 leave the moving mean at 3 % of the pixel mean; re-estimated, it is the pixel mean
    # of the training batches (12 of the 16 items), and the validation loss is lower.
    assert np.all(moving_mean[0] < 0.1 * pixel_mean)
    np.testing.assert_allclose(moving_mean[3], pixel_mean, rtol=0.1)
    assert val_loss[3] < val_loss[0]


@pytest.mark.parametrize(
    "gpu, cpu_bfloat16, policy",
    [(None, False, "float32"), (None, True, "mixed_bfloat16"), ("Tesla T4", True, "mixed_float16")],
)
def test_mixed_precision_auto_is_float16_on_a_gpu_and_bfloat16_on_a_cpu_that_has_it(
    dataset, stand_in, tmp_path, monkeypatch, gpu, cpu_bfloat16, policy
):
    seen = []
    fit = train_module._fit
    monkeypatch.setattr(distribution, "gpu_name", lambda: gpu)
    monkeypatch.setattr(distribution, "cpu_has_bfloat16", lambda: cpu_bfloat16)
    monkeypatch.setattr(train_module, "_fit", lambda *args: (seen.append(keras.mixed_precision.dtype_policy().name), fit(*args))[1])
    _train(tiny_config(dataset, train={"mixed_precision": "auto", "epochs": 1}), tmp_path)
    assert seen == [policy] and keras.mixed_precision.dtype_policy().name == "float32"


@pytest.mark.parametrize(
    "cpuinfo, expected",
    [("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n", True), ("flags\t\t: fpu amx_tile amx_bf16\n", True),
     ("flags\t\t: fpu avx2 avx512f\n", False), (None, False)],
)
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, monkeypatch, cpuinfo, expected):
    cpuinfo_file = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        cpuinfo_file.write_text(cpuinfo)
    monkeypatch.setattr(distribution, "CPUINFO", cpuinfo_file)
    assert distribution.cpu_has_bfloat16() is expected


def test_a_shipped_synthetic_config_trains_as_it_is_in_an_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = {"data.count": 10, "data.size": [64, 64], "train.epochs": 1, "train.steps_per_epoch": 1,
            "train.batch_size": 2, "train.precise_bn": 1}
    run = _train("unet-r34_synthetic_128x128", "runs", overrides=tiny)
    assert run.state["status"] == "finished" and run.metrics["num_val"] == 2
    pairs = tmp_path / "data" / "prepared" / "synthetic-10-seed0"
    assert sorted(p.name for p in pairs.glob("*.jpg")) == sorted(f"{i}.jpg" for i in range(1, 11))
    reference = data.write_synthetic(tmp_path / "reference", 1, seed=0)[0]  # seeded: the same pairs as `segkit data synth`
    assert (pairs / "1.jpg").read_bytes() == reference.read_bytes()
    out = capsys.readouterr().out
    assert "resolved config" in out and "  format: synthetic" in out and "  count: 10" in out
    assert run.config == config_lib.load("unet-r34_synthetic_128x128", tiny)  # the run folder keeps the resolved config


def test_model_bn_momentum_reaches_every_batchnorm_layer():
    cfg = config_lib.load({"data": {"path": "x"}, "model": {"encoder": "resnet18", "bn_momentum": 0.9}})
    layers = batchnorm.batchnorm_layers(train_module.build_model(cfg, 3, (64, 64)))
    assert len(layers) > 20 and {layer.momentum for layer in layers} == {0.9}


def test_data_val_0_trains_on_every_item_keeps_the_final_weights_and_is_evaluated_on_other_data(
        dataset, stand_in, tmp_path, tmp_path_factory, monkeypatch, capsys):
    from segkit import notebook
    from training_support import brute_force_iou, predict_classes

    trained_on = []
    make_loader = train_module.data_lib.make_loader

    def recording_loader(images, masks, indices, *args, shuffle, **kwargs):
        if shuffle:
            trained_on.append(np.sort(np.asarray(indices)))
        return make_loader(images, masks, indices, *args, shuffle=shuffle, **kwargs)

    monkeypatch.setattr(train_module.data_lib, "make_loader", recording_loader)
    run = _train(tiny_config(dataset, data={"val": 0}, train={"epochs": 2, "batch_size": 4}), tmp_path)
    count = len(data.load_prepared(dataset).images)  # 16 items, 4 steps of 4 per epoch
    assert trained_on and all(np.array_equal(seen, np.arange(count)) for seen in trained_on)
    assert run.dataset["train"]["num_items"] == count and run.dataset["val"] is None
    assert "no validation" in capsys.readouterr().out

    history = pd.read_csv(run.path / "history.csv")
    assert list(history["steps"]) == [4, 4] and not [c for c in history.columns if c.startswith("val_")]
    progress = run.progress()
    assert list(progress["images_seen"]) == [count, 2 * count] and run.epochs_run == 2
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["num_val"] == 0 and "miou" not in metrics and metrics["epochs"] == metrics["best_epoch"] == 2
    assert (run.path / "figures" / "learning_curves.png").stat().st_size > 1000
    if importlib.util.find_spec("tensorboard"):
        assert any((run.path / "tensorboard").rglob("events.out.tfevents.*"))

    # best.keras holds the final weights: those of the last checkpoint, saved after the last step.
    best = keras.saving.load_model(run.path / "best.keras")
    last = keras.saving.load_model(run.path / "last-0002.keras", compile=False)
    for kept, final in zip(best.get_weights(), last.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, final)

    other = prepared_synthetic(tmp_path_factory.mktemp("other"), count=4, seed=7)
    result = segkit.evaluate(run.path, other, verbose=False)
    prepared = data.load_prepared(other)
    _, miou = brute_force_iou(np.asarray(prepared.masks), predict_classes(best, np.asarray(prepared.images)),
                              prepared.num_classes)
    assert result["miou"] == pytest.approx(miou, abs=1e-12)

    # What needs a run's own validation items says in one line that this run has none, and how to score it.
    for call in (lambda: segkit.compare([run.path], out=tmp_path / "compared", latency=False),
                 lambda: notebook.validation_grid(run), lambda: notebook.learning_check(run)):
        with pytest.raises(SegkitError, match=rf"run {run.path} was trained without validation \(data.val: 0\)") as err:
            call()
        assert "\n" not in str(err.value) and f"segkit evaluate {run.path} --data" in str(err.value)
    assert not (tmp_path / "compared").exists()  # refused before anything is written


def test_precise_bn_without_validation_reestimates_the_statistics_best_keras_keeps(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", tiny_bn_model)
    pixel_mean = np.asarray(data.load_prepared(dataset).images, np.float64).mean(axis=(0, 1, 2))
    run = _train(tiny_config(dataset, data={"val": 0}, train={"epochs": 1, "precise_bn": 3}), tmp_path)
    bn = next(layer for layer in keras.saving.load_model(run.file(runs.BEST)).layers if "batch_normalization" in layer.name)
    # Four steps at momentum 0.99 leave the moving mean at 4 % of the pixel mean; re-estimated, it is the pixel mean.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), pixel_mean, rtol=0.1)

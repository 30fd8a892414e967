"""The training-recipe levers: learning-rate schedules, SGD/AdamW, weight EMA, crops and progressive sizes, CPU settings."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

import segkit
from segkit import data
from segkit.errors import SegkitError
from segkit.workflows import config, optim
from segkit.workflows import train as train_module
from segkit.workflows.callbacks import EmaWeights
from training_support import tiny_config, tiny_model


def schedule_values(schedule, steps):
    return [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("kind, warmup, expected", [
    # lr 0.1, 10 steps. Warm-up of 2: 0.1 * 1/2, 0.1 * 2/2; then constant.
    ("constant", 2, [0.05, 0.1, 0.1, 0.1, 0.1, 0.1]),
    # poly, power 2, after a warm-up of 2: 0.1 * (1 - (s - 2) / 8) ** 2 at s = 2, 6, 10, 12 -> 0.1, 0.025, 0, 0.
    ("poly", 2, [0.05, 0.1, 0.1, 0.025, 0.0, 0.0]),
    # poly without warm-up: 0.1 * (1 - s / 10) ** 2 at s = 0, 1, 2, 6, 10, 12.
    ("poly", 0, [0.1, 0.081, 0.064, 0.016, 0.0, 0.0]),
    # onecycle, warm-up 4 of 10: 0.1 * (0.04 + 0.96 (s + 1) / 4) at s = 0, 1, then 0.1 (1 + cos(pi (s - 4) / 6)) / 2
    # at s = 2 (still warming: 0.1 * (0.04 + 0.96 * 3 / 4) = 0.076), 6 (t = 1/3: 0.075), 10, 12 (0).
    ("onecycle", 4, [0.028, 0.052, 0.076, 0.075, 0.0, 0.0]),
])
def test_schedule_values_match_a_hand_computation(kind, warmup, expected):
    schedule = optim.WarmupSchedule(0.1, total_steps=10, kind=kind, warmup_steps=warmup, power=2.0)
    assert schedule_values(schedule, [0, 1, 2, 6, 10, 12]) == pytest.approx(expected, abs=1e-7)
    # A resumed run rebuilds the schedule from its config: the same step gives the same rate.
    again = optim.WarmupSchedule.from_config(schedule.get_config())
    assert schedule_values(again, [0, 3, 7]) == schedule_values(schedule, [0, 3, 7])


def optimizer_spec(**values):
    return {**config.defaults()["optimizer"], **values}


def test_config_warmup_share_becomes_steps_and_the_optimizer_follows_its_step_count():
    optimizer = optim.build(optimizer_spec(learning_rate=0.2, schedule="poly", power=1.0, warmup=0.25), total_steps=8)
    rates = []
    for step in (0, 1, 2, 5):
        optimizer.iterations.assign(step)
        rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    # warm-up 2 steps: 0.1, 0.2; then 0.2 * (1 - (s - 2) / 6): s = 2 -> 0.2, s = 5 -> 0.1.
    assert rates == pytest.approx([0.1, 0.2, 0.2, 0.1], abs=1e-7)
    assert isinstance(optim.build(optimizer_spec(), 8).learning_rate, keras.Variable)  # constant stays a plain rate


@pytest.mark.backend_agnostic
def test_sgd_nesterov_with_weight_decay_takes_the_hand_computed_step():
    optimizer = optim.build(optimizer_spec(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), 10)
    var = keras.Variable(np.array([1.0, -2.0], "float32"))
    grad = np.array([0.5, 0.25], "float32")
    optimizer.apply([keras.ops.convert_to_tensor(grad)], [var])
    # decay: w <- w - lr * wd * w; velocity v = -lr g; Nesterov: w <- w + momentum * v - lr g.
    w = np.array([1.0, -2.0]) * (1 - 0.1 * 0.01)
    expected = w + 0.9 * (-0.1 * grad) - 0.1 * grad
    np.testing.assert_allclose(keras.ops.convert_to_numpy(var), expected, rtol=1e-6)


class RawWeights(keras.callbacks.Callback):
    """Records the trained (raw) weights after every step."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        if hasattr(self.model, "jax_state_sync"):  # JAX holds the weights outside the variables during an epoch
            self.model.jax_state_sync()
        self.seen.append([np.array(keras.ops.convert_to_numpy(v)) for v in self.model.trainable_variables])


@pytest.mark.backend_agnostic
def test_validation_uses_the_hand_computed_weight_average_and_training_continues_on_the_raw_weights():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)).astype("float32"), rng.normal(size=(12, 1)).astype("float32")
    x_val, y_val = rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=(5, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optim.build(optimizer_spec(name="sgd", learning_rate=0.1, ema=0.6), 10), loss="mse")
    raw, ema = RawWeights(), EmaWeights()
    history = model.fit(x, y, batch_size=4, epochs=2, validation_data=(x_val, y_val), callbacks=[raw, ema], verbose=0)
    # Keras' EMA: the first step copies the weights, then average <- m * average + (1 - m) * weights.
    averages = []
    for step, weights in enumerate(raw.seen):
        averages.append(weights if step == 0 else [0.6 * a + 0.4 * w for a, w in zip(averages[-1], weights)])
    for epoch, last_step in enumerate((2, 5)):
        kernel, bias = averages[last_step]
        expected = np.mean((x_val @ kernel + bias - y_val) ** 2)
        assert history.history["val_loss"][epoch] == pytest.approx(expected, rel=1e-5)
    final_raw = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    for got, want in zip(final_raw, raw.seen[-1]):
        np.testing.assert_array_equal(got, want)  # not the average Keras copies over them when fit ends
    with ema.swapped():
        for got, want in zip(model.trainable_variables, averages[-1]):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=1e-6)


def test_best_keras_holds_the_average_that_validation_scored(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", tiny_model)
    run = segkit.train(tiny_config(dataset, optimizer={"learning_rate": 0.01, "ema": 0.9}), runs_dir=tmp_path, verbose=0)
    history = pd.read_csv(run.path / "history.csv")
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(history["val_miou"].max(), abs=1e-5)  # metrics.json evaluates best.keras
    best = keras.saving.load_model(run.path / "best.keras", compile=False)
    last = keras.saving.load_model(run.last_checkpoint(), compile=False)
    differs = [not np.allclose(a, b) for a, b in zip(best.get_weights(), last.get_weights())]
    assert any(differs)  # the checkpoint keeps the raw weights to resume from


@pytest.mark.parametrize("progressive, done, expected", [
    (None, 0, [(0, 6, None)]),
    ([[1, [16, 16]], [3, [24, 32]], [5, [32, 32]]], 0, [(0, 2, (16, 16)), (2, 4, (24, 32)), (4, 6, (32, 32))]),
    ([[1, [16, 16]], [3, [24, 32]], [5, [32, 32]]], 3, [(3, 4, (24, 32)), (4, 6, (32, 32))]),
    ([[1, [16, 16]], [9, [32, 32]]], 0, [(0, 6, (16, 16))]),  # a stage after the last epoch never starts
])
def test_progressive_stages_split_the_epochs_and_skip_what_a_resumed_run_has_done(progressive, done, expected):
    cfg = config.load({"data": {"path": "x"}, "train": {"epochs": 6, "progressive": progressive}})
    assert train_module.stages(cfg, done) == expected


def test_progressive_training_feeds_each_stage_its_crop_and_validates_at_full_size(dataset, tmp_path, monkeypatch):
    built, crops = [], []
    monkeypatch.setattr(train_module, "build_model", lambda cfg, n, size: built.append(size) or tiny_model(cfg, n, size))
    make_loader = data.make_loader
    monkeypatch.setattr(data, "make_loader", lambda *a, **kw: crops.append(kw.get("augment") and kw["augment"].crop) or make_loader(*a, **kw))
    cfg = tiny_config(dataset, train={"epochs": 3, "batch_size": 4, "progressive": [[1, [16, 16]], [3, [32, 32]]]})
    run = segkit.train(cfg, runs_dir=tmp_path, verbose=0)
    assert set(built) == {(None, None)}  # the crop check builds it once more
    assert [c for c in crops if c is not None] == [(16, 16), (32, 32)]  # augment.enabled is false: crops only
    assert list(pd.read_csv(run.path / "history.csv")["epoch"]) == [1, 2, 3]
    assert run.state["status"] == "finished"


def test_a_crop_the_model_cannot_take_is_a_one_line_error(dataset, tmp_path):
    with pytest.raises(SegkitError, match=r"training crop 20x20 .* not a multiple of 32"):
        segkit.train(tiny_config(dataset, augment={"enabled": True, "crop": [20, 20]}), runs_dir=tmp_path / "runs", verbose=0)
    assert not (tmp_path / "runs").exists()  # checked before the run folder is made


@pytest.mark.parametrize("jit", [True, False])
def test_jit_compile_reaches_keras(jit):
    cfg = config.load({"data": {"path": "x"}, "train": {"jit_compile": jit}})
    model = tiny_model(cfg, 3, (32, 32))
    train_module._compile(model, cfg, SimpleNamespace(num_classes=3), total_steps=10)
    assert model.jit_compile is jit


def test_threads_set_tensorflow_intra_op_threads_in_a_fresh_process():
    code = ("import tensorflow as tf; from segkit.workflows.train import set_threads; set_threads(1); "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert out.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("section, values, message", [
    ("optimizer", {"schedule": "cosine"}, r"'optimizer.schedule' is 'cosine'; valid: constant, poly, onecycle"),
    ("optimizer", {"schedule": "onecycle"}, r"onecycle needs a rising phase: set optimizer.warmup > 0"),
    ("optimizer", {"warmup": 1.0}, r"'optimizer.warmup' is a share of the steps in \[0, 1\), got 1.0"),
    ("optimizer", {"span": "minutes"}, r"'optimizer.span' is 'minutes'; valid: auto, epochs, budget"),
    ("optimizer", {"span": "budget", "schedule": "poly"}, r"'optimizer.span' budget needs train.max_minutes and a poly or onecycle"),
    ("optimizer", {"ema": 1.5}, r"'optimizer.ema' is a momentum in \(0, 1\)"),
    ("optimizer", {"nesterov": True}, r"'optimizer.nesterov' applies to sgd only, not 'adam'"),
    ("loss", {"ohem_threshold": 0}, r"'loss.ohem_threshold' must be in \(0, 1\]"),
    ("loss", {"lovasz_bins": 1}, r"'loss.lovasz_bins' must be at least 2 or null, got 1"),
    ("loss", {"dice_classes": "some"}, r"'loss.dice_classes' is 'some'; valid: all, present"),
    ("train", {"jit_compile": "yes"}, r"'train.jit_compile' is 'yes'; valid: auto, true, false"),
    ("train", {"threads": 0}, r"'train.threads' must be >= 1 or null, got 0"),
    ("augment", {"crop": [128]}, r"'augment.crop' must be \[H, W\] with positive integers"),
    ("train", {"progressive": [[2, [64, 64]]]}, r"epochs must start at 1 and increase, got \[2\]"),
    ("train", {"progressive": [[1, 64]]}, r"'train.progressive' must be \[\[epoch, \[H, W\]\], ...\]"),
])
def test_bad_lever_values_are_one_line_errors(section, values, message):
    with pytest.raises(SegkitError, match=message) as err:
        config.load({"data": {"path": "x"}, section: values})
    assert "\n" not in str(err.value)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _flat(cfg) -> dict:
    return {f"{section}.{key}": value for section, values in cfg.items() if isinstance(values, dict) for key, value in values.items()}


def _warmup_steps(cfg) -> int:
    """The warm-up in optimizer steps on the 2,975 Cityscapes training pairs less the held-out ones."""
    steps_per_epoch = -(-(2975 - cfg["data"]["val"]) // cfg["train"]["batch_size"])
    return round(cfg["optimizer"]["warmup"] * cfg["train"]["epochs"] * steps_per_epoch)


# The conditions a lever is judged under: the baseline's data, held-out items and seed, and the budget of the config it
# extends (a lever on the 140-minute config is judged at 140 minutes); benchmarks/levers/ may also swap the model.
SAME_AS_BASELINE = {"data.path", "data.val", "train.seed"}


def _only_base(path: Path) -> Path:
    """The one config a lever file extends (its `_base_`, relative to the file)."""
    (base,) = yaml.safe_load(path.read_text())[config.BASE_KEY]
    return path.parent / base


@pytest.mark.parametrize("folder, fixed", [
    ("ablations", {"model.name", "model.encoder"}),
    ("levers", set()),
])
def test_each_lever_changes_its_base_but_not_the_conditions_it_is_judged_under(folder, fixed):
    files = sorted((BENCHMARKS / folder).glob("*.yaml"))
    baseline = _flat(config.load(BENCHMARKS / folder / "baseline.yaml"))
    # The data path is the download's; accuracy_cpu.sh points every run at the shared copy with --set data.path.
    assert baseline["data.path"] == "data/cityscapes-pairs" and baseline["data.val"] == 300
    assert baseline["data.val_split"] is None  # a seeded 300 of the training pairs, not the val split
    assert len(files) > 1
    for path in files:
        lever, base = _flat(config.load(path)), _flat(config.load(_only_base(path)))
        changed = {k for k, v in lever.items() if v != base[k]}
        assert path.stem == "baseline" or changed, path.name
        assert not changed & (fixed | SAME_AS_BASELINE | {"train.max_minutes"}), path.name
        assert {k: lever[k] for k in SAME_AS_BASELINE} == {k: baseline[k] for k in SAME_AS_BASELINE}, path.name
        assert path.read_text().startswith("# Lever") or path.stem == "baseline", path.name


# The recipe as docs/benchmarks.md's ablation and 25-minute lever tables measured it; the shipped config has moved on.
MEASURED_BASELINE = {
    "model.name": "fastscnn", "data.size": [256, 256], "train.batch_size": 8, "train.label_stride": 1,
    "optimizer.name": "adamw", "optimizer.learning_rate": 2.0e-3, "optimizer.weight_decay": 1.0e-4,
    "augment.scale": [1, 1], "augment.color_jitter": 0,
}


@pytest.mark.parametrize("folder, loss_name", [("ablations", "ce"), ("levers", "ohem")])
def test_the_lever_baselines_keep_the_recipe_their_tables_were_measured_with(folder, loss_name):
    cfg = config.load(BENCHMARKS / folder / "baseline.yaml")
    baseline = _flat(cfg)
    assert {key: baseline[key] for key in MEASURED_BASELINE} == MEASURED_BASELINE
    assert baseline["loss.name"] == loss_name
    assert _warmup_steps(cfg) == 100


# Two cores took 38-62 s an epoch at label stride 4.
QUICKEST_EPOCH_SECONDS = 38


@pytest.mark.parametrize("minutes", [70, 140])
def test_a_longer_budget_recipe_changes_only_the_budget_and_its_loss_and_keeps_the_warm_up_steps(minutes):
    short, long = (config.load(f"fastscnn_cityscapes-pairs_256x256_cpu-{n}min") for n in (35, minutes))
    changed = {k for k, v in _flat(long).items() if v != _flat(short)[k]}
    assert changed == {"train.max_minutes", "train.epochs", "optimizer.warmup", "loss.name"}
    # Measured with OHEM alone, before soft Dice joined the 35-minute recipe.
    assert (short["loss"]["name"], long["loss"]["name"]) == ("ohem+dice", "ohem")
    assert long["train"]["max_minutes"] == minutes
    assert _warmup_steps(short) == _warmup_steps(long) == 100
    # Ceilings the budget does not reach, even with epochs 1.4x quicker than the quickest measured.
    assert long["train"]["epochs"] > 1.4 * minutes * 60 / QUICKEST_EPOCH_SECONDS
    assert short["train"]["epochs"] > 1.4 * 35 * 60 / QUICKEST_EPOCH_SECONDS

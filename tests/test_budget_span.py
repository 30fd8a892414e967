"""optimizer.span: budget: the learning-rate decay ends where train.max_minutes runs out, on a clock the tests fake."""

import itertools
import warnings

import keras
import numpy as np
import pandas as pd
import pytest

import segkit
from segkit.errors import SegkitError
from segkit.workflows import callbacks, config, optim, runs
from segkit.workflows import train as train_module
from training_support import Killed, kill_at_commit, tiny_config, tiny_model


def rates(schedule, steps):
    return [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]


@pytest.mark.backend_agnostic
def test_a_schedule_whose_length_changes_midway_continues_on_the_new_length():
    schedule = optim.WarmupSchedule(0.1, total_steps=10, kind="poly", warmup_steps=2, power=2.0)
    assert rates(schedule, [4]) == pytest.approx([0.05625], abs=1e-7)  # 0.1 * (1 - (4 - 2) / 8) ** 2
    schedule.total_steps.assign(6.0)
    # 0.1 * (1 - (s - 2) / 4) ** 2 at s = 4, 5, 6, 7; the warm-up (0.1 * (s + 1) / 2) is unchanged.
    assert rates(schedule, [0, 4, 5, 6, 7]) == pytest.approx([0.05, 0.025, 0.00625, 0.0, 0.0], abs=1e-7)
    again = optim.WarmupSchedule.from_config(schedule.get_config())  # a saved model keeps the length it had
    assert schedule.get_config()["total_steps"] == 6 and rates(again, [3, 5]) == rates(schedule, [3, 5])
    schedule.total_steps.assign(1.0)  # a length inside the warm-up: the decay takes one step after it
    assert rates(schedule, [1, 2, 3]) == pytest.approx([0.1, 0.1, 0.0], abs=1e-7)


class FakeTime(keras.callbacks.Callback):
    """A clock that takes 1 s per training step and 5 s per validation; stops training after the step that reaches
    `budget` (as RunRecorder does) and records the learning rate each step is given."""

    def __init__(self, budget):
        super().__init__()
        self.seconds, self.budget, self.given = 0.0, budget, []

    def on_train_batch_begin(self, batch, logs=None):
        if hasattr(self.model, "jax_state_sync"):  # JAX holds the optimizer state outside its variables during an epoch
            self.model.jax_state_sync()
        self.given.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.seconds += 1
        self.model.stop_training = self.seconds >= self.budget

    def on_test_end(self, logs=None):
        self.seconds += 5


def fit_on_fake_time(budget_span: bool):
    """SGD (lr 0.1, linear poly over 10 epochs x 10 steps) on a bias whose gradient is 1 at every step, 60 fake seconds."""
    spec = {**config.defaults()["optimizer"], "name": "sgd", "learning_rate": 0.1, "momentum": 0.0, "schedule": "poly", "power": 1.0}
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(optim.build(spec, total_steps=100, budget=budget_span), loss=lambda y, p: keras.ops.mean(p))
    fake = FakeTime(budget=60)
    span = [callbacks.BudgetSpan(optim.schedule_length(model.optimizer), 100, 60, lambda: fake.seconds)] if budget_span else []
    x = np.zeros((40, 2), "float32")
    model.fit(x, x[:, :1], batch_size=4, epochs=10, validation_data=(x[:4], x[:4, :1]), callbacks=[fake, *span], verbose=0)
    return model, fake.given


@pytest.mark.backend_agnostic
def test_the_budget_span_ends_the_decay_at_the_step_where_the_budget_runs_out():
    model, given = fit_on_fake_time(budget_span=True)
    # 4 epochs of 10 steps take 40 s + 4 x 5 s of validation: the 41st step reaches 60 s and is the last one.
    assert len(given) == 41
    assert given[-1] < 0.05 * 0.1 and given[-2] < 0.05 * 0.1
    assert max(given) == pytest.approx(0.1)
    # The compiled train step took the rates the moving schedule gave: the bias (gradient 1) fell by their sum.
    bias = float(keras.ops.convert_to_numpy(model.layers[0].bias)[0])
    assert bias == pytest.approx(-sum(given), rel=1e-5)

    _, fixed = fit_on_fake_time(budget_span=False)
    assert len(fixed) == 41 and fixed[-1] == pytest.approx(0.1 * (1 - 40 / 100))  # the epoch span stops at 60 %


def train_on_fake_time(dataset, tmp_path, monkeypatch, span):
    """A tiny run whose clock takes 1 s per reading (a few readings per step and per epoch end), over 1 minute."""
    monkeypatch.setattr(train_module, "build_model", tiny_model)
    ticks = itertools.count()
    monkeypatch.setattr(callbacks, "clock", lambda: float(next(ticks)))
    cfg = tiny_config(dataset, train={"epochs": 24, "batch_size": 2, "max_minutes": 1.0, "precise_bn": 0},
                      optimizer={"schedule": "poly", "learning_rate": 0.01, "span": span})
    return segkit.train(cfg, runs_dir=tmp_path / span, verbose=0)


def test_a_timed_run_ends_its_poly_decay_with_the_budget_and_an_epoch_spanned_one_does_not(dataset, tmp_path, monkeypatch):
    budget = pd.read_csv(train_on_fake_time(dataset, tmp_path, monkeypatch, "auto").path / "history.csv")
    epochs = pd.read_csv(train_on_fake_time(dataset, tmp_path, monkeypatch, "epochs").path / "history.csv")
    assert len(budget) < 24 and len(epochs) < 24  # the budget stopped both (6 steps per epoch, 144 in all)
    assert budget["learning_rate"].iloc[-1] < 0.05 * 0.01
    steps = epochs["steps"].sum()
    assert epochs["learning_rate"].iloc[-1] == pytest.approx(0.01 * (1 - steps / 144) ** 0.9, rel=1e-4)
    assert epochs["learning_rate"].iloc[-1] > 0.3 * 0.01


def test_a_killed_budget_spanned_run_resumes_and_still_ends_its_decay_with_the_budget(dataset, tmp_path, monkeypatch):
    commit = kill_at_commit(monkeypatch, 3)
    with pytest.raises(Killed):
        train_on_fake_time(dataset, tmp_path, monkeypatch, "auto")
    monkeypatch.setattr(runs.Run, "write_state", commit)
    run = segkit.train(None, resume=next((tmp_path / "auto").iterdir()), verbose=0)
    history = pd.read_csv(run.path / "history.csv")
    assert list(history["epoch"]) == list(range(1, len(history) + 1)) and 3 < len(history) < 24
    assert history["learning_rate"].iloc[-1] < 0.05 * 0.01


def test_a_checkpoint_brings_back_the_estimated_length_and_loads_without_warnings(tmp_path):
    spec = {**config.defaults()["optimizer"], "schedule": "poly"}

    def compiled():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optim.build(spec, total_steps=100, budget=True), loss="mse")
        return model

    saved = compiled()
    saved.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=1, verbose=0)
    optim.schedule_length(saved.optimizer).assign(37.0)
    saved.save(tmp_path / "last.keras")
    resumed = compiled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras only warns when it skips an optimizer state that does not fit
        train_module._restore(resumed, tmp_path / "last.keras")
        loaded = keras.saving.load_model(tmp_path / "last.keras", compile=False)
    assert float(keras.ops.convert_to_numpy(optim.schedule_length(resumed.optimizer))) == 37.0
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 1
    for got, want in zip(loaded.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_a_checkpoint_without_the_length_does_not_resume_a_budget_spanned_run_from_scratch(tmp_path):
    spec = {**config.defaults()["optimizer"], "schedule": "poly"}
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optim.build(spec, total_steps=100), loss="mse")  # span epochs: no length in the optimizer state
    model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=1, verbose=0)
    model.save(tmp_path / "old.keras")
    model.compile(optim.build(spec, total_steps=100, budget=True), loss="mse")
    with pytest.raises(SegkitError, match=r"old.keras cannot be loaded into this run's model: its optimizer state does not fit this run's optimizer$"):
        train_module._restore(model, tmp_path / "old.keras")


def test_a_budget_that_runs_out_while_an_epoch_is_saved_starts_no_further_epoch(dataset, tmp_path, monkeypatch, capsys):
    """The clock stands still but for a jump past the budget while epoch 2 is committed: epoch 2 is the last."""
    monkeypatch.setattr(train_module, "build_model", tiny_model)
    now = [0.0]
    monkeypatch.setattr(callbacks, "clock", lambda: now[0])
    commit = callbacks.RunRecorder._commit

    def slow_commit(self, row):
        commit(self, row)
        if row["epoch"] == 2:
            now[0] += 3600.0

    monkeypatch.setattr(callbacks.RunRecorder, "_commit", slow_commit)
    cfg = tiny_config(dataset, train={"epochs": 5, "batch_size": 2, "max_minutes": 1.0, "precise_bn": 0})
    run = segkit.train(cfg, runs_dir=tmp_path, verbose=0)
    history = pd.read_csv(run.path / "history.csv")
    assert list(history["epoch"]) == [1, 2] and (history["steps"] == history["epoch_steps"]).all()
    assert capsys.readouterr().out.count("time budget of 1.0 min reached") == 1


@pytest.mark.parametrize("budget_seconds, steps, message", [
    (11.5, [6], "time budget of 0.2 min reached after step 6/6 of epoch 1 (0.5 s left, less than a step): stopping"),
    (12.5, [6, 2], "time budget of 0.2 min reached after step 2/6 of epoch 2: stopping"),
])
def test_no_epoch_starts_with_less_time_left_than_a_step(dataset, tmp_path, monkeypatch, capsys, budget_seconds, steps, message):
    """Fake time: 1 s a step, 5 s to commit an epoch; 12 training items in batches of 2 are 6 steps an epoch.

    Epoch 1 ends at 6 + 5 = 11 s. With 0.5 s left it is the last; with 1.5 s left epoch 2 runs until its second step
    passes the budget (13 s)."""
    monkeypatch.setattr(train_module, "build_model", tiny_model)
    now = [0.0]
    monkeypatch.setattr(callbacks, "clock", lambda: now[0])
    step_begin, commit = callbacks.RunRecorder.on_train_batch_begin, callbacks.RunRecorder._commit

    def timed_step_begin(self, batch, logs=None):
        now[0] += 1.0
        step_begin(self, batch, logs)

    def timed_commit(self, row):
        commit(self, row)
        now[0] += 5.0

    monkeypatch.setattr(callbacks.RunRecorder, "on_train_batch_begin", timed_step_begin)
    monkeypatch.setattr(callbacks.RunRecorder, "_commit", timed_commit)
    cfg = tiny_config(dataset, train={"epochs": 5, "batch_size": 2, "max_minutes": budget_seconds / 60, "precise_bn": 0})
    run = segkit.train(cfg, runs_dir=tmp_path, verbose=0)
    assert list(pd.read_csv(run.path / "history.csv")["steps"]) == steps
    assert message in capsys.readouterr().out

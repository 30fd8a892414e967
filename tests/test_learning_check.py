"""notebook.learning_check: passes a run that learnt, fails one that could not (learning rate 1e-12)."""

import numpy as np
import pytest

import segkit
from segkit import metrics, notebook
from segkit.errors import SegkitError
from segkit.workflows import runs
from segkit.workflows import train as train_module
from training_support import prepared_synthetic, tiny_config, tiny_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return prepared_synthetic(tmp_path_factory.mktemp("data"), count=24)


def _run(dataset, runs_dir, learning_rate):
    config = tiny_config(dataset, train={"epochs": 3}, optimizer={"name": "adam", "learning_rate": learning_rate})
    return segkit.train(config, runs_dir=runs_dir, verbose=0)


def test_a_run_that_learns_passes_and_one_with_learning_rate_1e_12_fails(dataset, monkeypatch, tmp_path):
    monkeypatch.setattr(train_module, "build_model", tiny_model)
    evidence = notebook.learning_check(_run(dataset, tmp_path / "good", 1e-2))
    assert evidence.startswith("learnt:")
    with pytest.raises(SegkitError, match="did not fall|not above the majority-class baseline"):
        notebook.learning_check(_run(dataset, tmp_path / "frozen", 1e-12))


def test_majority_baseline_matches_the_metrics_of_a_constant_prediction():
    cm = np.array([[50, 10, 0, 0], [5, 20, 5, 0], [0, 0, 10, 0], [0, 0, 0, 0]])
    truth = cm.sum(axis=1)
    constant = np.zeros_like(cm)
    constant[:, truth.argmax()] = truth
    assert notebook.majority_baseline(cm) == pytest.approx(metrics.scores(constant)["miou"])
    assert notebook.majority_baseline(cm) == pytest.approx(60 / 100 / 3)  # by hand: share 0.6, three classes present


def test_non_finite_validation_loss_and_short_runs_fail(tmp_path):
    run = runs.Run.create(tmp_path, {"name": "x", "data": {"path": "x", "size": None}})
    full = {"steps": 5, "epoch_steps": 5, "seconds": 1.0}
    rows = [{"epoch": 1, "loss": 2.0, "val_loss": 1.0, **full}, {"epoch": 2, "loss": 1.0, "val_loss": float("inf"), **full}]
    run.write_state({**run.state, "history": rows})
    with pytest.raises(SegkitError, match=r"not finite in epoch\(s\) \[2\]"):
        notebook.learning_check(run)
    run.write_state({**run.state, "history": rows[:1]})
    with pytest.raises(SegkitError, match="at least 2 full epochs, found 1$"):
        notebook.learning_check(run)

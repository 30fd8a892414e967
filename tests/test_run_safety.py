"""A run folder stays consistent whatever happens to its process: one writer at a time (a lock the operating system
drops with its process), SIGTERM stops like Ctrl-C, a full or read-only disk ends in one line naming --runs, and
best.keras is the inference model alone (the optimizer state lives only in the resume checkpoint)."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pandas as pd
import pytest
import yaml

import segkit
from segkit import cli, data
from segkit.errors import SegkitError
from segkit.workflows import run_report, runs
from segkit.workflows import train as train_module
from segkit.workflows.callbacks import RunRecorder
from support import tmpfs
from training_support import brute_force_run_scores, tiny_config

STAND_IN_CLI = Path(__file__).with_name("stand_in_cli.py")


@pytest.fixture
def small_disk(tmp_path):
    """An empty folder on an 8 MiB tmpfs (room for a stand-in run), for a test to fill up when it chooses."""
    with tmpfs(tmp_path / "disk", "size=8m") as folder:
        yield folder


def _config_file(tmp_path, dataset, **sections) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(dataset, **sections)))
    return path


def _segkit(*args, step_seconds: float = 0.0) -> subprocess.Popen:
    """`segkit ARGS` with the stand-in model in a process of its own; every training batch `step_seconds` slower."""
    env = {**os.environ, "STAND_IN_STEP_SECONDS": str(step_seconds)}
    return subprocess.Popen([sys.executable, str(STAND_IN_CLI), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state(run: Path) -> dict:
    return json.loads((run / runs.STATE).read_text())


def _first_committed_epoch(runs_dir: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    """The run folder of `process` once it has committed an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        for run in runs_dir.glob("*/") if runs_dir.is_dir() else []:
            if (run / runs.STATE).is_file() and _state(run)["epoch"] >= 1:
                return run
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"no epoch was committed within {timeout} s")


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _leftovers(run: Path) -> list:
    """Hidden (partial) files and checkpoints state.json does not name."""
    named = _state(run)["checkpoint"]
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".") or (p.name.startswith("last-") and p.name != named))


@pytest.mark.slow
def test_a_second_writer_is_refused_in_one_line_and_a_writer_killed_with_sigkill_leaves_no_lock(dataset, tmp_path):
    runs_dir = tmp_path / "runs"
    first = _segkit("train", _config_file(tmp_path, dataset, train={"epochs": 20}), "--runs", runs_dir, step_seconds=1.0)
    try:
        run = _first_committed_epoch(runs_dir, first)
        second = _segkit("train", "--resume", run)
        _, err = second.communicate(timeout=300)
        assert second.returncode == 2
        assert _last_line(err) == (f"segkit: error: run {run} is being trained by another process; wait for it to end, "
                                   "or stop it, before resuming")
        assert first.poll() is None  # the refusal left the first writer training
    finally:
        first.kill()  # SIGKILL: no handler runs, the lock goes with the process
        first.wait()
    third = _segkit("train", "--resume", run)
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err
    state = _state(run)
    assert state["status"] == "finished" and [row["epoch"] for row in state["history"]] == list(range(1, 21))


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_commits_says_how_to_resume_and_exits_143(dataset, tmp_path):
    runs_dir = tmp_path / "runs"
    process = _segkit("train", _config_file(tmp_path, dataset, train={"epochs": 20}), "--runs", runs_dir, step_seconds=1.0)
    run = _first_committed_epoch(runs_dir, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143 and _last_line(err) == "segkit: terminated"
    state = _state(run)
    assert state["status"] == "stopped: interrupted" and state["epoch"] >= 1
    assert (f"interrupted: {run} keeps its last committed epoch ({state['epoch']}); "
            f"continue with: segkit train --resume {run}") in out
    assert (run / state["checkpoint"]).is_file() and (run / runs.BEST).is_file() and _leftovers(run) == []
    with runs.Run.open(run).lock():  # released: a resume may start at once
        pass


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_resumes_to_the_uninterrupted_result(dataset, tmp_path):
    config = _config_file(tmp_path, dataset, train={"epochs": 3},
                          optimizer={"schedule": "poly", "name": "sgd", "learning_rate": 0.05})
    whole = _segkit("train", config, "--runs", tmp_path / "whole")
    assert whole.communicate(timeout=300) and whole.returncode == 0
    stopped = _segkit("train", config, "--runs", tmp_path / "stopped", step_seconds=0.5)
    run = _first_committed_epoch(tmp_path / "stopped", stopped)
    stopped.send_signal(signal.SIGTERM)  # within epoch 2
    stopped.communicate(timeout=120)
    assert stopped.returncode == 143 and _state(run)["epoch"] in (1, 2)
    resumed = _segkit("train", "--resume", run)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    [finished] = (tmp_path / "whole").iterdir()
    a, b = (pd.read_csv(r / runs.HISTORY).drop(columns="seconds") for r in (finished, run))
    pd.testing.assert_frame_equal(a, b, atol=1e-5)
    for x, y in zip(*(keras.saving.load_model(r / "last-0003.keras").get_weights() for r in (finished, run))):
        np.testing.assert_allclose(x, y, atol=1e-5)


def _fill(folder: Path) -> None:
    """Writes a hidden file into `folder` until its file system has no room left."""
    filler = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.write(filler, b"\0" * 65536):
            pass
    except OSError:  # ENOSPC
        pass
    finally:
        os.close(filler)


def _fill_before_commit(monkeypatch, disk: Path, epoch: int) -> None:
    """Fills `disk` just before the run first commits `epoch` (once: a resume after making room commits normally)."""
    commit, filled = RunRecorder._commit, []

    def commit_on_a_full_disk(self, row):
        if row["epoch"] == epoch and not filled:
            filled.append(_fill(disk))
        commit(self, row)

    monkeypatch.setattr(RunRecorder, "_commit", commit_on_a_full_disk)


def test_a_full_disk_at_the_first_checkpoint_is_one_line_naming_runs_and_leaves_a_run_that_claims_nothing(
        dataset, stand_in, small_disk, monkeypatch, capsys, tmp_path):
    runs_dir = small_disk / "runs"
    _fill_before_commit(monkeypatch, small_disk, epoch=1)
    code = cli.main(["train", str(_config_file(tmp_path, dataset)), "--runs", str(runs_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    [run] = list(runs_dir.iterdir())
    assert code == 2 and err == [f"segkit: error: --runs {runs_dir}: cannot write (No space left on device); no epoch of "
                                 f"{run} had finished; make room, then continue with: segkit train --resume {run}"]
    state = _state(run)
    assert state["epoch"] == 0 and state["checkpoint"] is None and state["best_epoch"] is None
    assert not (run / runs.BEST).exists() and _leftovers(run) == []
    (small_disk / ".filler").unlink()
    assert segkit.train(None, resume=run, verbose=0).state["status"] == "finished"


def test_a_full_disk_at_a_later_save_keeps_the_committed_epoch_and_its_files(dataset, stand_in, small_disk, monkeypatch):
    runs_dir = small_disk / "runs"
    _fill_before_commit(monkeypatch, small_disk, epoch=2)
    with pytest.raises(SegkitError) as err:
        segkit.train(tiny_config(dataset, train={"epochs": 3}), runs_dir=runs_dir, verbose=0)
    [run] = list(runs_dir.iterdir())
    assert str(err.value) == (f"--runs {runs_dir}: cannot write (No space left on device); {run} keeps its last "
                              f"committed epoch (1); make room, then continue with: segkit train --resume {run}")
    state = _state(run)
    assert state["epoch"] == 1 and state["checkpoint"] == "last-0001.keras" and state["best_epoch"] == 1
    assert _leftovers(run) == []
    for name in ("last-0001.keras", runs.BEST):
        keras.saving.load_model(run / name, compile=False)  # whole


def test_a_full_disk_while_the_report_is_written_is_finished_by_the_resume_it_suggests(dataset, stand_in, small_disk,
                                                                                       monkeypatch, capsys, tmp_path):
    runs_dir = small_disk / "runs"
    finish_run, filled = run_report.finish_run, []

    def finish_on_a_full_disk(run, data, **options):
        if not filled:
            filled.append(_fill(small_disk))
        return finish_run(run, data, **options)

    monkeypatch.setattr(run_report, "finish_run", finish_on_a_full_disk)
    code = cli.main(["train", str(_config_file(tmp_path, dataset)), "--runs", str(runs_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    [run] = list(runs_dir.iterdir())
    assert code == 2 and err == [f"segkit: error: --runs {runs_dir}: cannot write (No space left on device); training of "
                                 f"{run} finished (2 epochs) but its report is not written; make room, then write it "
                                 f"with: segkit train --resume {run}"]
    assert _state(run)["status"] == "finished" and not (run / runs.METRICS).exists()
    (small_disk / ".filler").unlink()
    assert cli.main(["train", "--resume", str(run)]) == 0
    finished = runs.Run.open(run)
    assert finished.metrics["epochs"] == 2 and (run / runs.PER_CLASS).is_file()
    assert sorted(p.name for p in (run / "figures").iterdir()) == ["confusion.png", "learning_curves.png",
                                                                   "val_predictions.png"]
    assert finished.metrics["miou"] == pytest.approx(brute_force_run_scores(finished, dataset)[1], abs=1e-12)
    with pytest.raises(SegkitError, match="has finished .*nothing to resume"):
        segkit.train(None, resume=run)


def _raw_pairs(folder: Path) -> Path:
    data.write_synthetic(folder, 4, size=(32, 32))
    return folder


@pytest.mark.parametrize("kind", ["read-only", "a file"])
def test_runs_that_cannot_be_written_are_refused_before_data_is_prepared_or_a_model_built(kind, read_only_folder, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setattr(train_module, "build_model", lambda *args: pytest.fail("a model was built"))
    if kind == "read-only":
        runs_dir, message = read_only_folder / "runs", "Read-only file system"
    else:
        runs_dir, message = tmp_path / "runs", "file"
        runs_dir.write_text("not a folder")
    cache = tmp_path / "cache"
    config = tiny_config(_raw_pairs(tmp_path / "raw"), data={"format": "cityscapes-pairs", "cache": str(cache), "val": 1})
    with pytest.raises(SegkitError, match=rf"^--runs {re.escape(str(runs_dir))} .*{message}"):
        segkit.train(config, runs_dir=runs_dir)
    assert not cache.exists()


def test_a_cache_that_cannot_be_written_is_named_by_its_config_key_not_an_option_train_lacks(read_only_folder, tmp_path):
    cache = read_only_folder / "prepared"
    config = tiny_config(_raw_pairs(tmp_path / "raw"), data={"format": "cityscapes-pairs", "cache": str(cache), "val": 1})
    with pytest.raises(SegkitError, match=rf"^data.cache {re.escape(str(cache))}/\S+: folder {re.escape(str(cache))} "
                                          r"cannot be written \(in .*\): Read-only file system$"):
        segkit.train(config, runs_dir=tmp_path / "runs")


def test_a_missing_val_split_folder_is_named_before_the_train_split_is_prepared(tmp_path):
    raw = tmp_path / "raw"
    _raw_pairs(raw / "train")
    cache = tmp_path / "cache"
    config = tiny_config(raw, data={"format": "cityscapes-pairs", "split": "train", "val_split": "val", "cache": str(cache)})
    with pytest.raises(SegkitError, match=rf"^{re.escape(str(raw / 'val'))}: missing folder \(split 'val'\)"):
        segkit.train(config, runs_dir=tmp_path / "runs")
    assert not cache.exists()


def _optimizer_values(model_file: Path) -> int:
    """How many optimizer variables a .keras file stores."""
    with zipfile.ZipFile(model_file) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
        return len(weights["optimizer/vars"]) if "optimizer" in weights else 0


def test_best_keras_holds_no_optimizer_state_and_predicts_as_the_checkpoint_of_its_epoch(dataset, stand_in, tmp_path):
    run = segkit.train(tiny_config(dataset, train={"epochs": 1}), runs_dir=tmp_path, verbose=0)
    best, checkpoint = run.path / runs.BEST, run.path / "last-0001.keras"
    trainable = len(keras.saving.load_model(checkpoint, compile=False).trainable_weights)
    assert _optimizer_values(best) == 0 and _optimizer_values(checkpoint) >= 2 * trainable  # Adam: two moments each
    images = np.asarray(data.load_prepared(dataset).images[:8]).astype("float32")
    logits = [keras.ops.convert_to_numpy(keras.saving.load_model(path, compile=False)(images)) for path in (best, checkpoint)]
    np.testing.assert_array_equal(*logits)

"""Logs for files, bars for people: stdout written to a file gets one plain line per epoch, a terminal keeps Keras'
progress bar; both show the steps that really ran when the time budget stops an epoch."""

import contextlib
import io
import re

import pandas as pd
import pytest

import segkit
from training_support import tiny_config


pytestmark = pytest.mark.usefixtures("stand_in")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _train_printing_to(stream, config, runs_dir):
    with contextlib.redirect_stdout(stream):
        return segkit.train(config, runs_dir=runs_dir)


def test_stdout_to_a_file_gets_one_plain_line_per_epoch(dataset, tmp_path):
    log = tmp_path / "train.log"
    with open(log, "w") as stream:
        run = _train_printing_to(stream, tiny_config(dataset, train={"epochs": 2, "batch_size": 2}), tmp_path / "runs")
    text = log.read_text()
    assert "\x1b" not in text and "\r" not in text and "━" not in text  # no ANSI codes, no redrawn bar
    history = pd.read_csv(run.file("history.csv"))
    expected = [rf"epoch {row.epoch}/2  steps {row.steps}/{row.epoch_steps}  loss {row.loss:.4f}  mIoU {row.miou:.4f}  "
                rf"val mIoU {row.val_miou:.4f}  \d+ s" for row in history.itertuples()]
    lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(lines) == len(expected) == 2 and list(history["steps"]) == [6, 6]
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_a_budget_stop_shows_the_steps_that_ran_in_the_log_line_and_the_message(dataset, tmp_path):
    log = io.StringIO()  # not a terminal: what `segkit train ... > train.log` sees
    _train_printing_to(log, tiny_config(dataset, train={"epochs": 5, "max_minutes": 1e-6, "batch_size": 2}), tmp_path)
    lines = log.getvalue().splitlines()
    assert [line.split("  loss")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/5  steps 1/6"]
    assert "time budget of 0.0 min reached after step 1/6 of epoch 1: stopping" in lines


def test_a_terminal_keeps_the_progress_bar_ending_at_the_steps_that_ran(dataset, tmp_path):
    terminal = Terminal()
    _train_printing_to(terminal, tiny_config(dataset, train={"epochs": 5, "max_minutes": 1e-6, "batch_size": 2}), tmp_path)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue())  # the bar's colours
    assert "━" in shown and not any(line.startswith("epoch ") for line in shown.splitlines())
    last_bar = [part for part in re.split(r"[\r\n]", shown) if "━" in part][-1]
    assert re.search(r"\b1/6\b", last_bar) and "6/6" not in shown

"""The `segkit` command with training_support's stand-in model, for tests that need a real process to lock or kill.

STAND_IN_STEP_SECONDS=s makes every training batch take s seconds longer, so a test can act mid-run.
Run as `python tests/stand_in_cli.py train ...`; exits with the command's exit code.
"""

import os
import sys
import time

import training_support
from segkit import cli
from segkit.workflows import train as train_module


def _slowed(get_batch, seconds: float):
    def get_slow_batch(self, index):
        time.sleep(seconds)
        return get_batch(self, index)

    return get_slow_batch


if __name__ == "__main__":
    train_module.build_model = training_support.tiny_model
    step_seconds = float(os.environ.get("STAND_IN_STEP_SECONDS", "0"))
    if step_seconds:
        train_module._EpochSteps.__getitem__ = _slowed(train_module._EpochSteps.__getitem__, step_seconds)
    sys.exit(cli.main())  # no arguments: it reads sys.argv and ends the process as the segkit command does

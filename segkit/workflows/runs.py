"""Run folders: one per training run, written atomically so a killed run leaves a usable folder.

Layout of `runs/<config-name>-<timestamp>/`:
    config.yaml      the resolved config            dataset.json   classes, colours, split
    state.json       the commit point: finished epochs, history, best score, last checkpoint name
    last-NNNN.keras  model + optimizer state after epoch NNNN (the one state.json names)
    best.keras       the inference model with the best validation mIoU (without validation, data.val: 0: the last)
    history.csv      one row per finished epoch      tensorboard/   TensorBoard logs (TensorFlow only)
    metrics.json, per_class.csv, figures/*.png      written when training ends
"""

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

from segkit import files
from segkit.errors import SegkitError
from segkit.workflows import config as config_lib

STATE = "state.json"
CONFIG = "config.yaml"
DATASET = "dataset.json"
BEST = "best.keras"
HISTORY = "history.csv"
METRICS = "metrics.json"
PER_CLASS = "per_class.csv"
FIGURES = "figures"
FOLDER_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")  # a run folder ends <YYYYmmdd-HHMMSS>[-<attempt>] (Run.create)
_SIZE_PART = re.compile(r"_\d+x\d+(?=_|$)")  # configs are named <model>_<data>_<H>x<W>[_<budget>]


def run_name(config: dict) -> str:
    """The config's name with its _HxW part set to the size actually trained (data.size overridden in a smoke run)."""
    size = config["data"]["size"]
    if size is None:
        return config["name"]
    return _SIZE_PART.sub(f"_{size[0]}x{size[1]}", config["name"], count=1)


def write_json(path, obj) -> None:
    files.write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


class Run:
    """A run folder on disk. `Run.create` starts one, `Run.open` checks an existing one."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, runs_dir, config: dict) -> "Run":
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(100):
            path = runs_dir / f"{run_name(config)}-{stamp}{f'-{attempt}' if attempt else ''}"
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise SegkitError(f"could not create a new run folder in {runs_dir}")
        run = cls(path)
        try:
            files.write_text(path / CONFIG, config_lib.dump(config))
            run.write_state({"epoch": 0, "checkpoint": None, "history": [], "best_miou": None, "best_epoch": None,
                             "train_seconds": 0.0, "status": "created"})
        except OSError as err:  # a full disk: no folder without a state.json is left behind
            shutil.rmtree(path, ignore_errors=True)
            raise SegkitError(f"--runs {runs_dir}: cannot create a run folder ({err.strerror or err})") from None
        return run

    @classmethod
    def open(cls, path) -> "Run":
        """An existing run folder; a clear error when `path` is not one (or its state is unreadable)."""
        path = Path(path)
        if not path.is_dir():
            raise SegkitError(f"run folder {path} does not exist")
        missing = [name for name in (CONFIG, STATE) if not (path / name).is_file()]
        if missing:
            raise SegkitError(f"{path} is not a segkit run folder (no {' or '.join(missing)})")
        run = cls(path)
        run.state  # noqa: B018 -- parse now so a damaged state fails here, with the file's name
        return run

    @contextlib.contextmanager
    def lock(self):
        """Holds the run folder's lock while the block runs; another process holding it is refused in one line.

        An flock on the folder itself, which the operating system releases when its process ends however it
        ends: a run killed with kill -9 leaves no lock behind, and no lock file is ever left in the folder.
        """
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SegkitError(f"run {self.path} is being trained by another process; wait for it to end, "
                                  "or stop it, before resuming") from None
            yield self
        finally:
            os.close(fd)  # releases the lock

    @property
    def config(self) -> dict:
        try:
            raw = yaml.safe_load((self.path / CONFIG).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise SegkitError(f"{self.path / CONFIG} is unreadable: {str(err).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise SegkitError(f"{self.path / CONFIG} is not a segkit config")
        return config_lib.load(raw)

    @property
    def state(self) -> dict:
        return self._read_json(STATE)

    def write_state(self, state: dict) -> None:
        write_json(self.path / STATE, state)

    @property
    def dataset(self) -> dict:
        return self._read_json(DATASET)

    @property
    def metrics(self) -> dict:
        return self._read_json(METRICS)

    @property
    def validated(self) -> bool:
        """Whether training held out validation items; a run with data.val: 0 trained on every item and has none."""
        return self.dataset["val"] is not None

    def require_validation(self, needed_for: str) -> None:
        """Raises a one-line SegkitError, saying how to score the run instead, when it has no validation items.

        Args:
            needed_for: what needs them, completing "it has no validation items ..." (e.g. "to compare it on").
        """
        if not self.validated:
            raise SegkitError(f"run {self.path} was trained without validation (data.val: 0), so it has no validation "
                              f"items {needed_for}; score it on other data with: segkit evaluate {self.path} --data DATA")

    @property
    def epochs_run(self) -> float:
        """Epochs trained, the last counted by the share of its steps that ran (a time budget ends one part-way)."""
        progress = self.progress()
        return float(progress["epoch"].iloc[-1]) if len(progress) else 0.0

    def progress(self) -> pd.DataFrame:
        """The run's history, one row per epoch, placed where that epoch ended, for curves and tables.

        Adds `minutes` (training minutes so far: the epochs' seconds summed, validation included) and
        `images_seen` (steps so far x the batch size) and makes `epoch` fractional: epochs done so far, an
        epoch the time budget cut short counted by the share of its steps that ran (steps < epoch_steps).
        """
        frame = pd.DataFrame(self.state["history"])
        if frame.empty:
            return pd.DataFrame(columns=["epoch", "steps", "epoch_steps", "minutes", "images_seen"])
        cfg = self.config["train"]
        if "epoch_steps" not in frame:  # rows written before they carried it
            frame["epoch_steps"] = self._epoch_steps(cfg)
        elif frame["epoch_steps"].isna().any():  # a run resumed across that change
            frame["epoch_steps"] = frame["epoch_steps"].fillna(self._epoch_steps(cfg))
        frame["epoch_steps"] = frame["epoch_steps"].astype(int)
        frame["steps"] = frame["steps"].astype(int)
        frame["epoch"] = (frame["steps"] / frame["epoch_steps"]).cumsum()
        frame["minutes"] = frame["seconds"].cumsum() / 60
        frame["images_seen"] = frame["steps"].cumsum() * cfg["batch_size"]
        return frame

    def _epoch_steps(self, train_cfg: dict) -> int:
        """A full epoch's steps, from the training split's size and the batch size (and steps_per_epoch)."""
        full = math.ceil(self.dataset["train"]["num_items"] / train_cfg["batch_size"])
        return full if train_cfg["steps_per_epoch"] is None else min(full, train_cfg["steps_per_epoch"])

    def file(self, name: str) -> Path:
        return self.path / name

    def checkpoint_name(self, epoch: int) -> str:
        return f"last-{epoch:04d}.keras"

    def last_checkpoint(self) -> Path | None:
        name = self.state["checkpoint"]
        return self.path / name if name else None

    def remove_stale_checkpoints(self) -> None:
        """Deletes checkpoints other than the one state.json names (left by a run killed between save and commit)."""
        keep = self.state["checkpoint"]
        for path in self.path.glob("last-*.keras"):
            if path.name != keep:
                path.unlink(missing_ok=True)

    def figure_path(self, name: str) -> Path:
        (self.path / FIGURES).mkdir(exist_ok=True)
        return self.path / FIGURES / name

    def _read_json(self, name: str) -> dict:
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise SegkitError(f"{self.path} is not a finished segkit run folder (no {name})") from None
        except (OSError, ValueError) as err:
            raise SegkitError(f"{self.path / name} is unreadable: {err}") from None

"""Run folders: one per training run, written atomically so a killed run leaves a usable folder.

Layout of `runs/<config-name>-<timestamp>/`:
    config.yaml      the resolved config            dataset.json   classes, colours, split
    state.json       the commit point: finished epochs, history, best score, last checkpoint name
    last-NNNN.keras  model + optimizer state after epoch NNNN (the one state.json names)
    best.keras       the inference model with the best validation mIoU
    history.csv      one row per finished epoch      tensorboard/   TensorBoard logs (TensorFlow only)
    metrics.json, per_class.csv, figures/*.png      written when training ends
"""

import json
import math
import re
from datetime import datetime
from pathlib import Path

import numpy as np
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
MIN_LOSS_FALL = 0.02  # the last epoch's training loss must be at least 2% below the first's: noise is not learning
_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")  # <run name>-<YYYYmmdd-HHMMSS>[-<attempt>]
_SIZE_PART = re.compile(r"_\d+x\d+(?=_|$)")  # configs are named <model>_<data>_<H>x<W>[_<budget>]


def run_name(config: dict) -> str:
    """The config's name with its _HxW part set to the size actually trained (data.size overridden in a smoke run)."""
    size = config["data"]["size"]
    if size is None:
        return config["name"]
    return _SIZE_PART.sub(f"_{size[0]}x{size[1]}", config["name"], count=1)


def write_json(path, obj) -> None:
    files.write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def find_finished(runs_dir, config_name: str, overrides: dict | None = None) -> "Run | None":
    """The newest finished run of config `config_name` in `runs_dir` (training done, metrics written), or None.

    overrides: {"data.size": [128, 128], ...}: values the run's config must also have, so that, say, a smoke
    run is not taken for a full one. Folders that are not readable run folders are passed over.
    """
    # Matched by the config's name, not the folder's: a run's folder names the size it trained (run_name).
    stamped = [(_STAMP.search(p.name), p) for p in Path(runs_dir).glob("*-*") if p.is_dir()]
    for _, path in sorted((((m.group(1), int(m.group(2) or 0)), p) for m, p in stamped if m), reverse=True):
        try:
            run = Run.open(path)
            cfg = run.config
            done = run.state["status"] == "finished" and (path / METRICS).is_file()
        except SegkitError:
            continue
        if done and cfg["name"] == config_name and all(_value(cfg, key) == value for key, value in (overrides or {}).items()):
            return run
    return None


def _value(config: dict, key: str):
    section, _, name = key.partition(".")
    return config[section][name] if name else config[section]


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
        files.write_text(path / CONFIG, config_lib.dump(config))
        run.write_state({"epoch": 0, "checkpoint": None, "history": [], "best_miou": None, "best_epoch": None,
                         "train_seconds": 0.0, "status": "created"})
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
    def epochs_run(self) -> float:
        """Epochs trained, the last counted by the share of its steps that ran (a time budget ends one part-way)."""
        cfg = self.config["train"]
        full = math.ceil(self.dataset["train"]["num_items"] / cfg["batch_size"])
        if cfg["steps_per_epoch"] is not None:
            full = min(full, cfg["steps_per_epoch"])
        return sum(entry["steps"] for entry in self.state["history"]) / full

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


def learning_check(run: "Run") -> str:
    """Raises SegkitError unless a finished run learnt something; returns the one-line evidence when it did.

    Learnt means: every validation loss is finite, the training loss of the last epoch is at least
    MIN_LOSS_FALL below the first's (so at least two epochs), and the validation mIoU of best.keras beats
    the majority-class baseline (every pixel predicted as the most frequent true class).
    """
    history = run.state["history"]
    if len(history) < 2:
        raise SegkitError(f"learning check of {run.path}: needs at least 2 finished epochs, found {len(history)}")
    bad = [row["epoch"] for row in history if not math.isfinite(row.get("val_loss", math.nan))]
    if bad:
        raise SegkitError(f"learning check of {run.path}: validation loss is not finite in epoch(s) {bad}")
    first, last = history[0]["loss"], history[-1]["loss"]
    if not last <= (1 - MIN_LOSS_FALL) * first:
        raise SegkitError(f"learning check of {run.path}: training loss did not fall ({first:.4g} -> {last:.4g})")
    miou, baseline = run.metrics["miou"], majority_baseline(run.metrics["confusion_matrix"])
    if not miou > baseline:
        raise SegkitError(f"learning check of {run.path}: validation mIoU {miou:.4f} is not above the "
                          f"majority-class baseline {baseline:.4f}")
    return (f"learnt: validation loss finite, training loss {first:.4g} -> {last:.4g}, "
            f"mIoU {miou:.4f} > majority-class baseline {baseline:.4f}")


def majority_baseline(confusion_matrix) -> float:
    """mIoU of predicting the most frequent true class everywhere, on the pixels of a confusion matrix.

    That class scores its pixel share (its union is every pixel), every other class present scores 0.
    """
    truth = np.asarray(confusion_matrix, dtype=np.int64).sum(axis=1)
    return float(truth.max() / truth.sum() / np.count_nonzero(truth))

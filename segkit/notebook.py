"""The set-up call every notebook makes after installing segkit: data, accelerator, run folders, smoke parameters.

`env = segkit.notebook.setup("cityscapes-pairs")` downloads (or finds) the dataset, says which accelerator
it found, optionally keeps run folders on Google Drive (Colab), and returns what the notebook needs: where
the data and runs are and the overrides that make `segkit.train` use them (on a GPU, in mixed precision).
CI shrinks every run through SEGKIT_NB_* environment variables (notebooks/conftest.py).
"""

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ warnings after start-up stay out of stored outputs

from segkit import data as data_lib
from segkit.errors import SegkitError


def _import_backend_quietly() -> None:
    """Loads Keras and its backend with stderr pointed at /dev/null for the duration.

    TensorFlow's start-up lines (absl, oneDNN) ignore TF_CPP_MIN_LOG_LEVEL set inside a running process, and a
    notebook stores whatever reaches file descriptor 2. An import error still raises as usual.
    """
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_backend_quietly()

DATASETS = ("cityscapes-pairs", "camvid", "synthetic")
DATA_ENV = {"cityscapes-pairs": "SEGKIT_NB_DATA", "camvid": "SEGKIT_NB_CAMVID"}  # a copy to use instead of downloading
DRIVE_MOUNT = Path("/content/drive")  # where Colab mounts Google Drive
SMOKE = {"SEGKIT_NB_SIZE": 128, "SEGKIT_NB_EPOCHS": 2, "SEGKIT_NB_SUBSET": 24, "SEGKIT_NB_BATCH": 4}  # CI's small runs
SYNTHETIC_COUNT = 160


@dataclass
class Env:
    """What a notebook works with. `overrides()` adapts a config to it: `segkit.train(name, overrides=env.overrides())`."""

    dataset: str | None
    data: Path | None  # the dataset folder (None when no dataset was asked for)
    runs: Path  # where run folders go (on Google Drive with drive=True)
    gpu: str | None  # the GPU's name, None on CPU
    smoke: bool  # CI's small parameters apply: runs are seconds, not minutes
    params: dict = field(default_factory=dict)  # the smoke parameters: size, epochs, subset, batch, encoder_weights
    started: float = field(default_factory=time.time)

    @property
    def size(self) -> int:
        """The square side a notebook shows and prepares data at: the smoke size, else the pairs' native 256."""
        return self.params.get("size", 256)

    def summary(self) -> str:
        """Machine, Keras and minutes so far: the line a notebook's stored outputs end with."""
        import keras

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # taskset counts
        where = f"GPU {self.gpu}" if self.gpu else f"{platform.machine()} CPU, {cores} core{'s' * (cores > 1)}"
        return (f"{where}, Keras {keras.__version__} on {keras.backend.backend()}; "
                f"this notebook ran in {(time.time() - self.started) / 60:.1f} min")

    def overrides(self, **extra) -> dict:
        """Config overrides that point a config at this data, train in float16 on a GPU and, in smoke mode, shrink
        the run; `extra` adds more. An override, not a global dtype policy, so the run's config.yaml says so."""
        found = {"train.mixed_precision": True} if self.gpu else {}
        size, epochs, subset, batch = (self.params.get(k) for k in ("size", "epochs", "subset", "batch"))
        if self.data is not None:
            found["data.path"] = str(self.data)
            if self.dataset in ("camvid", "cityscapes-pairs"):
                found.update({"data.format": self.dataset, "data.split": "train"})
            if self.dataset != "synthetic":
                found["data.val_split"] = "val" if (self.data / "val").is_dir() else None  # else data.val is held out
                if subset and found["data.val_split"] is None:
                    found["data.val"] = 0.2  # a share of the smoke subset: the configs' held-out counts exceed it
        if size:  # CamVid keeps roughly its 3:4 shape, in multiples of 32 (360x480 -> 128x160 at size 128)
            found["data.size"] = [size, 32 * round(size * 4 / 3 / 32)] if self.dataset == "camvid" else [size, size]
        found.update({key: value for key, value in (("data.limit", subset), ("train.epochs", epochs),
                                                    ("train.batch_size", batch)) if value})
        if self.params.get("encoder_weights"):
            weights = self.params["encoder_weights"]
            found["model.encoder_weights"] = None if weights == "none" else weights
        return {**found, **extra}


def setup(dataset: str | None = None, runs="runs", drive: bool = False, smoke: bool | None = None, *,
          data_root="data", cpu_minutes: float | None = None) -> Env:
    """Gets a notebook ready: the dataset, the accelerator, the run folder and the smoke parameters.

    dataset: "cityscapes-pairs" or "camvid" (downloaded into `data_root` once, with a progress bar), "synthetic"
        (the built-in city, generated once) or None. SEGKIT_NB_DATA / SEGKIT_NB_CAMVID point at a copy of the
        Cityscapes pairs / CamVid instead.
    runs: folder for run folders (SEGKIT_NB_RUNS wins); with drive=True, inside My Drive, so a disconnected
        Colab runtime loses at most the epoch in progress (`segkit.train(resume=...)` continues a run).
    smoke: None reads CI's SEGKIT_NB_SIZE / _EPOCHS / _SUBSET / _BATCH / _ENCODER_WEIGHTS; True uses CI's small
        values; False ignores them. cpu_minutes: the notebook's full-run time on a CPU, said when there is no GPU.
    """
    if dataset is not None and dataset not in DATASETS:
        raise SegkitError(f"unknown dataset {dataset!r} for setup; choose one of {', '.join(DATASETS)} or None")
    params = _smoke_params(smoke)
    gpu = _accelerator(cpu_minutes)
    runs = Path(os.environ.get("SEGKIT_NB_RUNS", runs))  # as given: stored outputs show no machine paths
    if drive:
        runs = _on_drive(runs)
    runs.mkdir(parents=True, exist_ok=True)
    print(f"run folders: {runs}")
    data = None if dataset is None else _dataset(dataset, Path(data_root))
    _notebook_display()
    return Env(dataset, data, runs, gpu, smoke=bool(params), params=params)


def _smoke_params(smoke: bool | None) -> dict:
    if smoke is False:
        return {}
    env = {key: os.environ.get(key, str(value) if smoke else None) for key, value in SMOKE.items()}
    params = {key.removeprefix("SEGKIT_NB_").lower(): _positive_int(key, value) for key, value in env.items() if value}
    weights = os.environ.get("SEGKIT_NB_ENCODER_WEIGHTS", "none" if smoke else None)
    return {**params, "encoder_weights": weights} if weights else params


def _positive_int(key: str, text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise SegkitError(f"{key}={text!r}: expected a positive whole number")
    return int(text)


def _accelerator(cpu_minutes: float | None) -> str | None:
    """Prints the accelerator found and returns the GPU's name (None on a CPU)."""
    import keras

    from segkit.workflows.distribution import gpu_name

    gpu = gpu_name()
    if gpu:
        print(f"GPU: {gpu} (Keras {keras.backend.backend()} backend); training in mixed precision (float16)")
        return gpu
    estimate = f" (about {cpu_minutes:.0f} minutes for this notebook's full run)" if cpu_minutes else ""
    print(f"CPU only: this will be slow{estimate}. On Colab: Runtime > Change runtime type > GPU")
    return None


def _on_drive(runs: Path) -> Path:
    try:
        from google.colab import drive
    except ImportError:
        raise SegkitError("drive=True needs Google Colab (google.colab is not importable here); "
                          "use drive=False to keep run folders locally") from None
    drive.mount(str(DRIVE_MOUNT))
    return DRIVE_MOUNT / "MyDrive" / "segkit" / runs.name


def _dataset(name: str, root: Path) -> Path:
    if name == "synthetic":
        return data_lib.synthetic_city(root / f"synthetic-{SYNTHETIC_COUNT}-seed0", SYNTHETIC_COUNT)
    given = os.environ.get(DATA_ENV[name])
    if not given:
        return data_lib.download(name, root)
    if not Path(given).is_dir():
        raise SegkitError(f"{DATA_ENV[name]}={given}: no such folder")
    return Path(given)


def _notebook_display() -> None:
    """Compact stored outputs: inline JPEG figures at 72 dpi, three decimals in tables, and TensorFlow's Python
    log (retracing warnings, "Assets written to ...") kept to errors."""
    import logging

    import matplotlib.pyplot as plt
    import pandas as pd

    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    pd.set_option("display.precision", 3)
    plt.rcParams["figure.dpi"] = 72
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")
        shell.run_line_magic("config", "InlineBackend.figure_formats = ['jpeg']")

"""The set-up call every notebook makes after installing segkit: data, accelerator, run folders, smoke parameters.

`env = segkit.notebook.setup("cityscapes-pairs")` downloads (or finds) the dataset, says which accelerator
it found, optionally keeps run folders on Google Drive (Colab), and returns what the notebook needs: where
the data and runs are and the overrides that make `segkit.train` use them (on a GPU, in mixed precision).
The test suite shrinks every run through SEGKIT_NB_* environment variables (notebooks/conftest.py).

The notebooks' own helpers live here too, and only here: `model_stats`, `find_finished`, `learning_check`,
`validation_grid`, `photo_file`, `how_made` (how a shown run was made, read from it) and `train_step_seconds`.
Nothing else in segkit imports this module.
"""

import math
import os
import platform
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ warnings after start-up stay out of stored outputs

import numpy as np

from segkit import data as data_lib
from segkit import files
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

# After the quiet import above: these load Keras and its backend.
from segkit import models, viz  # noqa: E402
from segkit.workflows import config as config_lib  # noqa: E402
from segkit.workflows import loading, run_report, runs, train  # noqa: E402
from segkit.workflows.predict import write_png  # noqa: E402

DATASETS = ("cityscapes-pairs", "camvid", "synthetic")
DATA_ENV = {"cityscapes-pairs": "SEGKIT_NB_DATA", "camvid": "SEGKIT_NB_CAMVID"}  # a copy to use instead of downloading
DRIVE_MOUNT = Path("/content/drive")  # where Colab mounts Google Drive
SMOKE = {"SEGKIT_NB_SIZE": 128, "SEGKIT_NB_EPOCHS": 2, "SEGKIT_NB_SUBSET": 24, "SEGKIT_NB_BATCH": 4}  # CI's small runs
SYNTHETIC_COUNT = 160
MIN_LOSS_FALL = 0.02  # the last epoch's training loss must be at least 2% below the first's: noise is not learning


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
            if self.dataset != "synthetic" and not (self.data / "val").is_dir():
                # A copy without a val split holds data.val out; with one, the config decides, as on the command line.
                found["data.val_split"] = None
                if subset:
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


def model_stats(config, overrides=None, *, num_classes: int = 19) -> dict:
    """{"params", "gflops", "size"} of the model a config builds, per image of its data.size (H, W).

    Args:
        config: a shipped config's name, a YAML path or a loaded config dict.
        overrides: {"model.name": "pspnet", ...} applied to a named or YAML config first.
        num_classes: classes of the output layer (19 for the Cityscapes pairs, 11 for CamVid).

    An auxiliary training head and pretrained weights play no part.
    """
    cfg = config if isinstance(config, dict) else config_lib.load(config, overrides)
    size = tuple(cfg["data"]["size"])
    plain = {**cfg, "model": {**cfg["model"], "aux_head": False, "detail_head": False, "encoder_weights": None}}
    return {**models.model_stats(train.build_model(plain, num_classes, size)), "size": size}


def find_finished(runs_dir, config: str, overrides: dict | None = None) -> "runs.Run | None":
    """The newest finished run of a config in `runs_dir` (training done, metrics written), or None.

    Args:
        runs_dir: the folder holding run folders.
        config: the config's name (a run's folder names the size it trained, so the name is read from its config.yaml).
        overrides: {"data.size": [128, 128], ...}: values the run's config must also have, so that, say, a smoke
            run is not taken for a full one.

    Folders that are not readable run folders are passed over.
    """
    stamped = [(runs.FOLDER_STAMP.search(p.name), p) for p in Path(runs_dir).glob("*-*") if p.is_dir()]
    for _, path in sorted((((m.group(1), int(m.group(2) or 0)), p) for m, p in stamped if m), reverse=True):
        try:
            run = runs.Run.open(path)
            cfg = run.config
            done = run.state["status"] == "finished" and run.file(runs.METRICS).is_file()
        except SegkitError:
            continue
        if done and cfg["name"] == config and all(_value(cfg, key) == value for key, value in (overrides or {}).items()):
            return run
    return None


def _value(config: dict, key: str):
    section, _, name = key.partition(".")
    return config[section][name] if name else config[section]


def learning_check(run: runs.Run) -> str:
    """Raises SegkitError unless a finished run learnt something; returns the one-line evidence when it did.

    Args:
        run: a finished run (its state.json history and metrics.json are read).

    Learnt means: every validation loss is finite, the training loss of the last full epoch is at least
    MIN_LOSS_FALL below the first's (so at least two full epochs), and the validation mIoU of best.keras beats
    the majority-class baseline (every pixel predicted as the most frequent true class). An epoch the time
    budget cut short is no full epoch: its loss is an average over the steps that ran, not over an epoch.
    """
    history = run.state["history"]
    if history and not any("val_loss" in row for row in history):  # trained with data.val: 0?
        run.require_validation("for the learning check, which needs its validation loss and mIoU")
    bad = [row["epoch"] for row in history if not math.isfinite(row.get("val_loss", math.nan))]
    if bad:
        raise SegkitError(f"learning check of {run.path}: validation loss is not finite in epoch(s) {bad}")
    progress = run.progress()
    full = progress[progress["steps"] >= progress["epoch_steps"]]
    if len(full) < 2:
        cut = progress[progress["steps"] < progress["epoch_steps"]]
        partial = "".join(f" and a partial one ({row.steps}/{row.epoch_steps} steps)" for row in cut.itertuples())
        raise SegkitError(f"learning check of {run.path}: needs at least 2 full epochs, found {len(full)}{partial}")
    first, last = full["loss"].iloc[0], full["loss"].iloc[-1]
    if not last <= (1 - MIN_LOSS_FALL) * first:
        raise SegkitError(f"learning check of {run.path}: training loss did not fall over the full epochs "
                          f"({first:.4g} -> {last:.4g})")
    miou, baseline = run.metrics["miou"], majority_baseline(run.metrics["confusion_matrix"])
    if not miou > baseline:
        raise SegkitError(f"learning check of {run.path}: validation mIoU {miou:.4f} is not above the "
                          f"majority-class baseline {baseline:.4f}")
    return (f"learnt: validation loss finite, training loss {first:.4g} -> {last:.4g} over {len(full)} full epochs, "
            f"mIoU {miou:.4f} > majority-class baseline {baseline:.4f}")


def majority_baseline(confusion_matrix) -> float:
    """mIoU of predicting the most frequent true class everywhere, on the pixels of a confusion matrix.

    Args:
        confusion_matrix: (C, C) pixel counts, rows the true classes.

    That class scores its pixel share (its union is every pixel), every other class present scores 0.
    """
    truth = np.asarray(confusion_matrix, dtype=np.int64).sum(axis=1)
    return float(truth.max() / truth.sum() / np.count_nonzero(truth))


def validation_grid(run: runs.Run, count: int = 3):
    """image | label | prediction of the run's best model for the first `count` validation items, with a class legend.

    Args:
        run: a finished run whose validation data is still prepared on disk.
        count: how many validation items (rows) to show.
    """
    split = run_report.validation_split(run)
    model, _ = loading.load_model(run.path)
    images, truth, predicted = run_report.predicted_samples(split, {"prediction": model}, count)
    return viz.sample_grid(images, truth, split.dataset.colors, split.dataset.classes, predictions=predicted, panel_size=2.0)


def photo_file(source, *, fallback=None, folder="photos") -> Path:
    """A photo for `segkit.predict` as a file.

    Args:
        source: a path; an http(s) URL, downloaded into `folder`; "upload", a file picker in Colab; or empty.
        fallback: an RGB uint8 array written to `folder`/sample.png when `source` is empty.
        folder: where downloaded, uploaded and fallback photos go.
    """
    source, folder = str(source or ""), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if source.startswith(("http://", "https://")):
        target = folder / (Path(urllib.parse.urlparse(source).path).name or "photo.jpg")
        with files.atomic_path(target) as tmp:
            files.download(source, tmp)
        return target
    if source == "upload":
        from google.colab import files as colab_files  # only in Colab

        name, content = next(iter(colab_files.upload().items()))
        target = folder / Path(name).name
        files.write_bytes(target, content)
        return target
    if source:
        if not Path(source).is_file():
            raise SegkitError(f"photo {source} does not exist")
        return Path(source)
    if fallback is None:
        raise SegkitError("no photo given: pass a file, an http(s) URL or 'upload'")
    target = folder / "sample.png"
    write_png(target, np.asarray(fallback, dtype=np.uint8))
    return target


def train_step_seconds(config, overrides=None, *, num_classes: int = 19, steps: int = 5) -> float:
    """Median seconds of one training step of the model a config builds, on random data of its batch and size.

    Args:
        config: a shipped config's name, a YAML path or a loaded config dict.
        overrides: {"model.name": "pspnet", ...} applied to the config first.
        num_classes: classes of the output layer.
        steps: timed steps, after two untimed ones that trace and warm up.

    Cross-entropy and the config's optimizer, in the config's precision (train.mixed_precision), scored at its
    train.label_stride: what a budget buys on this machine, before validation and checkpoints take their share.
    """
    import keras

    cfg = config_lib.load(config, overrides) if not isinstance(config, dict) else config
    batch, (height, width) = cfg["train"]["batch_size"], cfg["data"]["size"]
    saved = keras.mixed_precision.dtype_policy()
    mixed = train.mixed_precision_policy(cfg["train"]["mixed_precision"])
    if mixed:
        keras.mixed_precision.set_dtype_policy(mixed)
    try:
        plain = {**cfg, "model": {**cfg["model"], "aux_head": False, "detail_head": False, "encoder_weights": None}}
        stride = cfg["train"]["label_stride"]
        model = models.strided_logits(train.build_model(plain, num_classes, (height, width)), stride)
        model.compile(keras.optimizers.AdamW(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    finally:
        keras.mixed_precision.set_dtype_policy(saved)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, height, width, 3)).astype("float32")
    masks = models.subsample_masks(rng.integers(0, num_classes, (batch, height, width)).astype("int32"), stride)
    seconds = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        model.train_on_batch(images, masks)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds[2:]))


def how_made(run: runs.Run, env: Env) -> str:
    """One Markdown paragraph saying how a run a notebook shows was made, read from the run itself: machine, data,
    precision, minutes, epochs, and the command that makes it again.

    Args:
        run: a finished run.
        env: the notebook's `setup()` result (its overrides are part of the command).
    """
    cfg, dataset, last = run.config, run.dataset, run.progress().iloc[-1]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = f"a {env.gpu} GPU" if env.gpu else f"{_cpu_name()}, {cores} of {os.cpu_count()} cores, no GPU"
    start = _starting_point(cfg["model"])
    if run.validated:
        held_out = len(dataset["val"]["indices"])
        split = f"its `{cfg['data']['val_split']}` split" if cfg["data"]["val_split"] else f"a seeded {held_out:,} held out"
        validation = f"validated on {split} ({held_out:,} items)"
    else:
        validation = "not validated (data.val: 0, every item trained on)"
    policy = train.mixed_precision_policy(cfg["train"]["mixed_precision"])
    precision = f"{policy.removeprefix('mixed_')} mixed precision" if policy else "float32"
    command = " ".join(["segkit train", cfg["name"], *(f"--set {key}={_cli_value(value)}" for key, value in env.overrides().items())])
    return (f"**How this run was made.** `{cfg['name']}` on {machine}, {start}, in {precision}: "
            f"{dataset['train']['num_items']:,} items of `{cfg['data']['path']}` trained on, {validation}, "
            f"at {'x'.join(map(str, dataset['image_size']))}. "
            f"{last['minutes']:.1f} minutes of training (budget {cfg['train']['max_minutes']} min): "
            f"{last['epoch']:.2f} epochs, {int(run.progress()['steps'].sum()):,} steps, {int(last['images_seen']):,} images seen. "
            f"Again: `{command}`")


def _starting_point(model_cfg: dict) -> str:
    """Where a run's weights started: from scratch, a trained model (model.init_from) or an encoder's weights."""
    if model_cfg.get("init_from"):
        source = Path(model_cfg["init_from"])
        return f"initialised from `{source.parent.name if source.name == 'best.keras' else source.name}`"
    if model_cfg["encoder_weights"]:
        return f"encoder from {model_cfg['encoder_weights']} weights"
    return "from scratch"


def _cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"an {platform.machine()} CPU"


def _cli_value(value) -> str:
    """How `--set key=value` spells a value: YAML's null, true and [a, b]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)

"""segkit.notebook.setup: dataset download from a local server, accelerator line, Google Drive via a stand-in
google.colab package, CI's smoke parameters."""

import importlib
import io
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import pytest

from support import serve_folder
from segkit import notebook
from segkit.errors import SegkitError
from segkit.workflows import config, distribution
from segkit.workflows.train import mixed_precision_policy

download_module = importlib.import_module("segkit.data.download")  # segkit.data.download is the function
ENV_KEYS = ("SEGKIT_NB_DATA", "SEGKIT_NB_CAMVID", "SEGKIT_NB_RUNS", "SEGKIT_NB_ENCODER_WEIGHTS", *notebook.SMOKE)
FILES = {"cityscapes/train/1.jpg": b"a" * 3000, "cityscapes/val/1.jpg": b"b" * 3000}

STAND_IN_DRIVE = '''
from pathlib import Path

mounted = []


def mount(path):
    mounted.append(path)
    (Path(path) / "MyDrive").mkdir(parents=True, exist_ok=True)
'''


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(distribution, "gpu_name", lambda: None)


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A stand-in google.colab on sys.path (google stays a namespace package, so google.protobuf still imports)."""
    package = tmp_path / "fake-colab" / "google" / "colab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "drive.py").write_text(STAND_IN_DRIVE)
    monkeypatch.syspath_prepend(str(tmp_path / "fake-colab"))
    monkeypatch.setattr(notebook, "DRIVE_MOUNT", tmp_path / "content" / "drive")
    yield notebook.DRIVE_MOUNT
    for name in ("google.colab.drive", "google.colab"):
        sys.modules.pop(name, None)


def test_downloads_the_dataset_with_a_progress_bar_and_says_cpu_only(tmp_path, monkeypatch, capsys):
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "cityscapes.tar.gz", "w:gz") as tar:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with serve_folder(www) as base:
        archive = download_module.Archive(f"{base}/cityscapes.tar.gz", None, ("train", "val"))
        monkeypatch.setitem(download_module.DATASETS, "cityscapes-pairs", archive)
        env = notebook.setup("cityscapes-pairs", runs="my-runs", cpu_minutes=42)
    out = capsys.readouterr().out
    # Relative as found, so stored notebook outputs show no machine paths.
    assert env.data == Path("data/cityscapes-pairs") and (tmp_path / env.data / "val" / "1.jpg").read_bytes() == b"b" * 3000
    assert f"[{'#' * 30}] 100%" in out
    assert "CPU only: this will be slow (about 42 minutes for this notebook's full run)" in out
    assert env.gpu is None and env.smoke is False and env.runs.is_dir() and env.runs.name == "my-runs"
    # A downloaded copy has val/: the config decides how to validate (the CPU recipes hold out 300 as on the CLI).
    assert env.overrides() == {"data.path": str(env.data), "data.format": "cityscapes-pairs", "data.split": "train"}


def test_pairs_without_a_val_split_hold_out_a_share_of_the_smoke_subset(tmp_path, monkeypatch):
    (tmp_path / "pairs" / "train").mkdir(parents=True)
    monkeypatch.setenv("SEGKIT_NB_DATA", str(tmp_path / "pairs"))
    real = notebook.setup("cityscapes-pairs", runs=tmp_path / "runs", smoke=False).overrides()
    assert real["data.val_split"] is None and "data.val" not in real  # the config's held-out count applies
    smoke = notebook.setup("cityscapes-pairs", runs=tmp_path / "runs", smoke=True).overrides()
    assert smoke["data.val_split"] is None and smoke["data.val"] == 0.2 and smoke["data.limit"] == 24


def test_importing_it_first_keeps_the_backend_start_up_noise_off_stderr():
    result = subprocess.run([sys.executable, "-c", "import segkit.notebook, keras"], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, check=True)
    assert result.stderr == ""


def test_tensorflow_python_log_is_kept_to_errors(tmp_path):
    logging.getLogger("tensorflow").setLevel(logging.NOTSET)
    notebook.setup(None, runs=tmp_path / "runs")
    tf_log = logging.getLogger("tensorflow")
    assert not tf_log.isEnabledFor(logging.WARNING) and tf_log.isEnabledFor(logging.ERROR)


def test_on_a_gpu_it_names_it_and_its_overrides_train_in_float16_without_a_global_policy(monkeypatch, capsys):
    monkeypatch.setattr(distribution, "gpu_name", lambda: "Tesla T4")
    before = keras.mixed_precision.dtype_policy().name
    env = notebook.setup(None)
    assert keras.mixed_precision.dtype_policy().name == before
    assert env.gpu == "Tesla T4" and "GPU: Tesla T4" in capsys.readouterr().out and env.data is None
    cfg = config.load({"data": {"path": "x"}, "train": {"mixed_precision": False}}, env.overrides())
    assert mixed_precision_policy(cfg["train"]["mixed_precision"]) == "mixed_float16"


def test_drive_mounts_google_drive_and_puts_run_folders_there(colab):
    env = notebook.setup(None, runs="runs", drive=True)
    from google.colab import drive

    assert drive.mounted == [str(colab)]
    assert env.runs == colab / "MyDrive" / "segkit" / "runs" and env.runs.is_dir()


def test_drive_outside_colab_is_a_one_line_error():
    with pytest.raises(SegkitError, match="drive=True needs Google Colab"):
        notebook.setup(None, drive=True)


def test_smoke_parameters_come_from_the_environment_and_shrink_the_overrides(tmp_path, monkeypatch):
    camvid = tmp_path / "camvid"
    (camvid / "val").mkdir(parents=True)
    monkeypatch.setenv("SEGKIT_NB_CAMVID", str(camvid))
    monkeypatch.setenv("SEGKIT_NB_SIZE", "128")
    monkeypatch.setenv("SEGKIT_NB_EPOCHS", "2")
    monkeypatch.setenv("SEGKIT_NB_ENCODER_WEIGHTS", "none")
    monkeypatch.setenv("SEGKIT_NB_RUNS", str(tmp_path / "ci-runs"))
    env = notebook.setup("camvid")
    assert env.smoke and env.data == camvid and env.runs == tmp_path / "ci-runs"
    assert env.overrides(**{"train.seed": 3}) == {
        "data.path": str(camvid), "data.format": "camvid", "data.split": "train",
        "data.size": [128, 160], "train.epochs": 2, "model.encoder_weights": None, "train.seed": 3}
    assert notebook.setup("camvid", smoke=False).overrides() == {
        "data.path": str(camvid), "data.format": "camvid", "data.split": "train"}


def test_smoke_true_uses_the_ci_values_and_synthetic_data_is_generated_once(monkeypatch):
    monkeypatch.setattr(notebook, "SYNTHETIC_COUNT", 3)
    env = notebook.setup("synthetic", smoke=True)
    assert sorted(p.name for p in env.data.glob("*.jpg")) == ["1.jpg", "2.jpg", "3.jpg"]
    assert env.params == {"size": 128, "epochs": 2, "subset": 24, "batch": 4, "encoder_weights": "none"}
    assert env.overrides()["data.size"] == [128, 128] and "data.val_split" not in env.overrides()


@pytest.mark.parametrize("dataset, env_value, message", [
    ("mnist", None, "unknown dataset 'mnist' for setup"),
    ("cityscapes-pairs", "SEGKIT_NB_SIZE=big", "SEGKIT_NB_SIZE='big': expected a positive whole number"),
    ("cityscapes-pairs", "SEGKIT_NB_DATA=/no/such/folder", "SEGKIT_NB_DATA=/no/such/folder: no such folder"),
])
def test_bad_arguments_are_one_line_errors(monkeypatch, dataset, env_value, message):
    if env_value:
        monkeypatch.setenv(*env_value.split("=", 1))
    with pytest.raises(SegkitError, match=message):
        notebook.setup(dataset)

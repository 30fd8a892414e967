"""What a Colab user gets: the wheel, installed in a fresh virtual environment outside the checkout, runs
notebook 02's smoke configuration from an empty folder, with a stand-in google.colab module and the
notebook's install cell pointed at that wheel."""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from segkit import data

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_unet_resnet34.ipynb"
SMOKE = {"SEGKIT_NB_SIZE": "64", "SEGKIT_NB_EPOCHS": "2", "SEGKIT_NB_SUBSET": "16", "SEGKIT_NB_BATCH": "4",
         "SEGKIT_NB_ENCODER_WEIGHTS": "none", "KERAS_BACKEND": "tensorflow"}
STAND_IN = {  # google.colab as far as the notebooks touch it; importing it at start-up makes the kernel look like Colab's
    "google/colab/__init__.py": "from google.colab import drive, files  # noqa: F401\n",
    "google/colab/files.py": "def upload():\n    raise RuntimeError('no file picker in CI')\n",
    "google/colab/drive.py": "def mount(path):\n    raise RuntimeError('no Google Drive in CI')\n",
    "sitecustomize.py": "import google.colab  # noqa: F401\n",
}


def run(*args, **kwargs):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kwargs)


def fresh_venv(root: Path) -> Path:
    """A virtual environment that sees the installed dependencies (a .pth file) but not the checkout; returns its python."""
    run(sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", root)
    python = root / "bin" / "python"
    venv_site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    (venv_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.mark.slow
def test_the_wheel_runs_notebook_02_in_a_colab_like_kernel_from_an_empty_folder(tmp_path):
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "--no-build-isolation", "-q", "-w", wheels)
    (wheel,) = wheels.glob("segkit-*.whl")
    python = fresh_venv(tmp_path / "venv")
    run(python, "-m", "pip", "install", "--no-deps", "-q", wheel)
    installed = run(python, "-c", "import segkit; print(segkit.__file__)", cwd=tmp_path).stdout.strip()
    assert Path(installed).is_relative_to(tmp_path / "venv") and not Path(installed).is_relative_to(REPO)

    for name, text in STAND_IN.items():
        (tmp_path / "colab" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "colab" / name).write_text(text)
    kernels = tmp_path / "jupyter" / "kernels" / "venv"
    kernels.mkdir(parents=True)
    kernel = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "venv", "language": "python"}
    (kernels / "kernel.json").write_text(json.dumps(kernel))
    city = tmp_path / "city"
    data.write_synthetic(city / "train", count=24, seed=0)
    work = tmp_path / "empty"
    work.mkdir()
    shutil.copy(NOTEBOOK, work)  # the kernel starts in the notebook's folder: this one, holding nothing else

    env = {**os.environ, **SMOKE, "SEGKIT_NB_DATA": str(city), "SEGKIT_NB_RUNS": "runs", "PIP_NO_INDEX": "1",
           "SEGKIT_INSTALL": str(wheel), "PYTHONPATH": str(tmp_path / "colab"), "JUPYTER_PATH": str(tmp_path / "jupyter")}
    result = subprocess.run([python, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                             "--ExecutePreprocessor.kernel_name=venv", "--ExecutePreprocessor.timeout=900", NOTEBOOK.name],
                            cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    executed = nbformat.read(work / NOTEBOOK.name, as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "you may need to restart the kernel" in printed  # the install cell's %pip ran: the kernel looked like Colab's
    assert "learnt:" in printed  # the learning check ran and passed
    assert list((work / "runs").glob("unet-r34_cityscapes-pairs_64x64_cpu-35min-*/metrics.json"))  # written where the user works
    assert (work / "data" / "prepared").is_dir()

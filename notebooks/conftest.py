"""Smoke parameters for the notebooks under nbval: the built-in synthetic city, small images, two short epochs.

segkit.notebook.setup() reads SEGKIT_NB_* environment variables (without them a notebook makes a
real run); the kernels nbval starts inherit this process's environment, so setting them here, before
collection, turns every notebook into a CPU-sized smoke run. Values already set in the environment
win (os.environ.setdefault). The kernels import the installed segkit (pip install -e . in a checkout),
as a Colab user's would: nothing here puts the checkout on their path.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEGKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
SYNTHETIC = REPO / "data" / "notebook-smoke-city"
SYNTHETIC_COUNT = 48
SMOKE_RUNS = REPO / "runs" / "notebooks-smoke"
# CI always has ../shared/data: there a missing slice is a broken setup, never a reason to fall back or skip.
ON_CI = os.environ.get("CI", "").lower() == "true"


def _synthetic_city() -> Path:
    """A small seeded synthetic city in the pairs layout (written once): learning on it is checked by 02 and 03."""
    if len(list((SYNTHETIC / "train").glob("*.jpg"))) < SYNTHETIC_COUNT:
        from segkit.data import write_synthetic

        # train/ as in the real layout, so the notebooks find the composites in the same place.
        write_synthetic(SYNTHETIC / "train", count=SYNTHETIC_COUNT, seed=0)
    return SYNTHETIC


_SMOKE = {
    "KERAS_BACKEND": "tensorflow",
    "SEGKIT_NB_SIZE": "128",  # both sides; the pairs are 256 x 256, CamVid 360 x 480 is resized to 128 x 160
    "SEGKIT_NB_EPOCHS": "2",
    "SEGKIT_NB_SUBSET": "24",  # images of the training data used (a validation share is held out of them)
    "SEGKIT_NB_BATCH": "4",
    "SEGKIT_NB_ENCODER_WEIGHTS": "none",  # the configs ask for ImageNet weights; CI has no network
    "SEGKIT_NB_RUNS": str(SMOKE_RUNS),
    "SEGKIT_NB_CAMVID": str(SHARED_DATA / "camvid11"),
}
for _key, _value in _SMOKE.items():
    os.environ.setdefault(_key, _value)
if ON_CI and not (Path(os.environ["SEGKIT_NB_CAMVID"]) / "train").is_dir():
    raise RuntimeError(f"real data slice {os.environ['SEGKIT_NB_CAMVID']} not found, and CI=true runs must have it "
                       "(notebook 05 is never skipped on CI)")
if "SEGKIT_NB_DATA" not in os.environ:
    os.environ["SEGKIT_NB_DATA"] = str(_synthetic_city())
# Smoke runs are throwaway (about 200 MB of checkpoints each): every session starts with an empty folder.
if Path(os.environ["SEGKIT_NB_RUNS"]) == SMOKE_RUNS:
    shutil.rmtree(SMOKE_RUNS, ignore_errors=True)


READS_CAMVID = re.compile(r"""setup\(\s*dataset\s*=\s*["']camvid["']""")


def pytest_collection_modifyitems(config, items):
    """Without CamVid (no ../shared/data, nothing downloaded) a notebook's cells from its first one that reads CamVid
    (`notebook.setup(dataset="camvid")`) on are skipped, saying why: all of 05, the last section of 01.

    Under CI=true a missing CamVid has already stopped the run when this file was loaded.
    """
    camvid = Path(os.environ["SEGKIT_NB_CAMVID"])
    if (camvid / "train").is_dir():
        return
    skip = pytest.mark.skip(reason=f"CamVid not found at {camvid} (set SEGKIT_NB_CAMVID or run segkit data download camvid)")
    reached = set()  # notebooks whose CamVid cell has been collected: it and every later cell are skipped
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None:
            continue
        notebook = str(item.fspath)
        if notebook in reached or READS_CAMVID.search(cell.source):
            reached.add(notebook)
            item.add_marker(skip)

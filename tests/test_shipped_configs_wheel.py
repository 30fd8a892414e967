"""Every config the wheel ships runs on the user's data: loaded from the built wheel, outside the checkout, each one
reads the folder `segkit data download` writes for its dataset (or generates the synthetic city)."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from segkit.data.download import DATASETS

REPO = Path(__file__).resolve().parents[1]
DOWNLOAD_OUT = "data"  # the folder the docs' `segkit data download NAME --out data` writes into

READ_CONFIGS = """
import json, segkit
from segkit.workflows import config
print(json.dumps({"package": segkit.__file__, "configs": {name: config.load(name)["data"] for name in config.shipped()}}))
"""


@pytest.mark.slow
def test_every_config_in_the_wheel_reads_where_segkit_data_download_writes(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheels")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheels").glob("segkit-*.whl")
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)  # a wheel is the installed tree, zipped
    shown = subprocess.run([sys.executable, "-c", READ_CONFIGS], cwd=tmp_path, capture_output=True, text=True,
                           env={"PATH": "", "PYTHONPATH": str(installed), "KERAS_BACKEND": "tensorflow"})
    assert shown.returncode == 0, shown.stderr[-2000:]
    found = json.loads(shown.stdout.splitlines()[-1])
    assert Path(found["package"]).is_relative_to(installed)  # the wheel's segkit, not the checkout's
    assert len(found["configs"]) >= 10

    misplaced = {}
    for name, data in found["configs"].items():
        if data["format"] == "synthetic":  # generated into data.cache on first use, nothing to download
            expected = {"path": None}
        else:
            assert data["format"] in DATASETS, f"{name}: no `segkit data download {data['format']}`"
            expected = {"path": f"{DOWNLOAD_OUT}/{data['format']}", "split": "train"}
            if data["val_split"] is not None:  # a downloaded dataset holds train/ and val/
                expected["val_split"] = "val"
        got = {key: data[key] for key in expected}
        if got != expected:
            misplaced[name] = got
    assert misplaced == {}


def test_the_cityscapes_cpu_recipes_hold_out_a_seeded_300_of_the_training_pairs():
    from segkit.workflows import config

    recipes = [name for name in config.shipped() if "_cityscapes-pairs_" in name and "_cpu-" in name]
    assert len(recipes) >= 3, recipes  # U-Net, PSPNet and Fast-SCNN at least
    held_out = {name: (config.load(name)["data"]["val_split"], config.load(name)["data"]["val"]) for name in recipes}
    assert held_out == {name: (None, 300) for name in recipes}

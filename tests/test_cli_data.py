"""`segkit data prepare`: prints the per-class summary; bad input is one `segkit: error:` line, exit 2, nothing written."""

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from support import REPO
from segkit.cli import main
from segkit.data import load_prepared



def write_pairs(folder: Path, count: int = 3, size: int = 32) -> Path:
    """Composites photo | label in official colours: road on top, car below."""
    folder.mkdir(parents=True, exist_ok=True)
    label = np.zeros((size, size, 3), np.uint8)
    label[: size // 2] = (128, 64, 128)
    label[size // 2 :] = (0, 0, 142)
    for i in range(1, count + 1):
        composite = np.concatenate([np.full_like(label, 40 * i), label], axis=1)
        cv2.imwrite(str(folder / f"{i}.png"), composite[..., ::-1])
    return folder


def test_prepare_prints_summary_and_writes_cache(tmp_path, capsys):
    src = write_pairs(tmp_path / "pairs")
    rc = main(["data", "prepare", "cityscapes-pairs", str(src), "--out", str(tmp_path / "cache"), "--size", "16", "16"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:20]}
    assert rows["road"] == "50.00%" and rows["car"] == "50.00%" and rows["sky"] == "0.00%"
    assert "prepared 3 items" in out
    data = load_prepared(tmp_path / "cache")
    assert data.images.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(np.unique(data.masks[:, :8]), [0])
    np.testing.assert_array_equal(np.unique(data.masks[:, 8:]), [13])


def test_prepare_max_color_distance_labels_edge_blends_and_records_it(tmp_path):
    src = write_pairs(tmp_path / "pairs", count=1)
    composite = cv2.imread(str(src / "1.png"))[..., ::-1].copy()
    composite[:8, 32:] = (128 + 28, 64 - 28, 128)  # 39.6 from road: ignored at the default 30
    cv2.imwrite(str(src / "1.png"), composite[..., ::-1])
    for out, extra in (("default", []), ("loose", ["--max-color-distance", "50"])):
        assert main(["data", "prepare", "cityscapes-pairs", str(src), "--out", str(tmp_path / out), *extra]) == 0
    default, loose = load_prepared(tmp_path / "default"), load_prepared(tmp_path / "loose")
    assert (default.masks[0, :8] == 255).all() and (loose.masks[0, :16] == 0).all()
    assert "max_color_distance" not in default.manifest and loose.manifest["max_color_distance"] == 50
    assert loose.manifest["ignored_share"] == 0 and default.manifest["ignored_share"] == 0.25


def test_prepare_classes_all_and_split(tmp_path, capsys):
    write_pairs(tmp_path / "pairs" / "val", count=2)
    rc = main(["data", "prepare", "cityscapes-pairs", str(tmp_path / "pairs"), "--out", str(tmp_path / "c"),
               "--split", "val", "--classes", "all"])  # fmt: skip
    assert rc == 0
    manifest = load_prepared(tmp_path / "c").manifest
    assert manifest["classes"] == ["road", "car"] and manifest["num_items"] == 2 and manifest["split"] == "val"


def corrupt_jpeg(src: Path) -> str:
    cv2.imwrite(str(src / "2.jpg"), np.zeros((32, 64, 3), np.uint8))
    data = (src / "2.jpg").read_bytes()
    (src / "2.jpg").write_bytes(data[: len(data) // 2])
    (src / "2.png").unlink()
    return r"2\.jpg: truncated"


def wrong_ratio(src: Path) -> str:
    cv2.imwrite(str(src / "3.png"), np.zeros((32, 32, 3), np.uint8))
    return r"3\.png: composite is 32x32"


def mixed_sizes(src: Path) -> str:
    cv2.imwrite(str(src / "3.png"), np.zeros((16, 32, 3), np.uint8))
    return r"item '3' is 16x16 but '1' is 32x32; give a common size \(--size H W\)"


def not_labels(src: Path) -> str:
    cv2.imwrite(str(src / "1.png"), np.full((32, 64, 3), (10, 250, 90), np.uint8))
    return r"1\.png: 100% of label pixels match no Cityscapes colour"


@pytest.mark.parametrize("damage", [corrupt_jpeg, wrong_ratio, mixed_sizes, not_labels])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, damage):
    src = write_pairs(tmp_path / "pairs")
    message = damage(src)
    rc = main(["data", "prepare", "cityscapes-pairs", str(src), "--out", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("segkit: error: ")
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["camvid", "{tmp}/nowhere"], "nowhere: missing folder"),
        (["folder", "{tmp}/pairs"], r"classes\.txt: missing classes file"),
        (["camvid32", "{tmp}/pairs"], r"class_dict\.csv: missing class table"),
        (["cityscapes-pairs", "{tmp}/pairs", "--classes", "some"], "classes='some': expected 'train' or 'all'"),
        (["cityscapes-pairs", "{tmp}/pairs", "--size", "9000", "64"], r"size=\(9000, 64\): each side must be at most 8192"),
        (["cityscapes-pairs", "{tmp}/pairs", "--max-color-distance", "0"], r"max color distance must be a positive number"),
        (["camvid", "{tmp}/pairs", "--max-color-distance", "50"], r"applies to cityscapes-pairs colour labels, not to format camvid"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    write_pairs(tmp_path / "pairs")
    argv = ["data", "prepare", *[a.format(tmp=tmp_path) for a in args], "--out", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "cache").exists()


def test_installed_command_prints_no_traceback(tmp_path):
    src = write_pairs(tmp_path / "pairs")
    corrupt_jpeg(src)
    cmd = [sys.executable, "-m", "segkit.cli", "data", "prepare", "cityscapes-pairs", str(src), "--out", str(tmp_path / "c")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("segkit:")]
    assert errors == [f"segkit: error: {src / '2.jpg'}: truncated image file (no end marker)"]
    assert not (tmp_path / "c").exists()

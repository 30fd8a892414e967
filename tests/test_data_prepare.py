"""prepare -> load_prepared: the cache round trip, the manifest's numbers, resizing, atomic writes, bad caches."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from support import REPO
from segkit.data import format_summary, load_prepared, open_reader, prepare
from segkit.errors import SegkitError


CLASSES_TXT = "road,128,64,128\ncar,0,0,142\nperson,220,20,60\nsky,70,130,180\n"


def write_folder(root: Path, sizes=((20, 30),) * 4, seed: int = 0, values=(0, 1, 2, 255)):
    """Folder-format replica: images/, masks/ (index PNGs), classes.txt; returns [(name, image, mask)]."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text(CLASSES_TXT)
    items = []
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.choice(np.array(values, np.uint8), (h, w))
        cv2.imwrite(str(root / "images" / f"im{i}.png"), image[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), mask)
        items.append((f"im{i}", image, mask))
    return items


def test_round_trip_and_manifest(tmp_path):
    items = write_folder(tmp_path / "src")
    manifest = prepare("folder", tmp_path / "src", tmp_path / "cache")
    data = load_prepared(tmp_path / "cache")

    assert len(data) == 4 and data.images.shape == (4, 20, 30, 3) and data.masks.shape == (4, 20, 30)
    assert isinstance(data.images, np.memmap) and data.images.dtype == np.uint8 == data.masks.dtype
    for i, (_, image, mask) in enumerate(items):
        np.testing.assert_array_equal(data.images[i], image)
        np.testing.assert_array_equal(data.masks[i], mask)

    assert data.manifest == manifest == json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["format"] == "folder" and manifest["num_items"] == 4 and manifest["image_size"] == [20, 30]
    assert manifest["source"] == str((tmp_path / "src").resolve())
    assert manifest["items"] == ["im0", "im1", "im2", "im3"]
    assert data.classes == ("road", "car", "person", "sky") and data.num_classes == 4 and data.ignore_index == 255
    np.testing.assert_array_equal(data.colors, [[128, 64, 128], [0, 0, 142], [220, 20, 60], [70, 130, 180]])

    all_masks = np.stack([mask for _, _, mask in items])
    labelled = all_masks[all_masks != 255]
    expected_share = [np.mean(labelled == c) for c in range(4)]
    np.testing.assert_allclose(manifest["class_pixel_share"], expected_share, atol=1e-6)
    assert manifest["class_pixel_share"][3] == 0
    assert manifest["ignored_share"] == pytest.approx(np.mean(all_masks == 255), abs=1e-6)


def test_resize_images_area_masks_nearest(tmp_path):
    items = write_folder(tmp_path / "src", sizes=((40, 60), (40, 60)))
    prepare("folder", tmp_path / "src", tmp_path / "small", size=(20, 15))
    small = load_prepared(tmp_path / "small")
    assert small.manifest["image_size"] == [20, 15]
    rows, cols = np.arange(20) * 40 // 20, np.arange(15) * 60 // 15  # nearest neighbour, by hand
    for i, (_, image, mask) in enumerate(items):
        np.testing.assert_array_equal(small.masks[i], mask[rows][:, cols])
        # area = mean of each 2x4 block, by hand (cv2 rounds; allow 1 level)
        block_mean = image.reshape(20, 2, 15, 4, 3).mean(axis=(1, 3))
        assert np.abs(small.images[i].astype(float) - block_mean).max() <= 1

    prepare("folder", tmp_path / "src", tmp_path / "big", size=(80, 120))
    big = load_prepared(tmp_path / "big")
    np.testing.assert_array_equal(big.images[0], cv2.resize(items[0][1], (120, 80), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(big.masks[0], np.repeat(np.repeat(items[0][2], 2, 0), 2, 1))


def test_differing_sizes_need_size(tmp_path):
    write_folder(tmp_path / "src", sizes=((20, 30), (20, 30), (24, 30)))
    with pytest.raises(SegkitError, match=r"item 'im2' is 30x24 but 'im0' is 30x20; give a common size \(--size H W\)"):
        prepare("folder", tmp_path / "src", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    assert prepare("folder", tmp_path / "src", tmp_path / "cache", size=(16, 16))["num_items"] == 3


def test_classes_all_keeps_present_ids_renumbered(tmp_path):
    root = tmp_path / "cs"
    rng = np.random.default_rng(1)
    label_ids = rng.choice(np.array([0, 7, 26, 33, 5], np.uint8), (16, 32))
    for folder, name, array in (("leftImg8bit", "leftImg8bit", rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)),
                                ("gtFine", "gtFine_labelIds", label_ids)):  # fmt: skip
        (root / folder / "train" / "bonn").mkdir(parents=True)
        cv2.imwrite(str(root / folder / "train" / "bonn" / f"bonn_000000_000019_{name}.png"), array)
    manifest = prepare("cityscapes", root, tmp_path / "all", classes="all")
    data = load_prepared(tmp_path / "all")
    assert data.classes == ("unlabeled", "dynamic", "road", "car", "bicycle")
    new_id = {0: 0, 5: 1, 7: 2, 26: 3, 33: 4}
    np.testing.assert_array_equal(data.masks[0], np.vectorize(new_id.get)(label_ids))
    np.testing.assert_array_equal(data.colors[2], (128, 64, 128))
    assert manifest["ignored_share"] == 0
    np.testing.assert_allclose(manifest["class_pixel_share"], [np.mean(label_ids == i) for i in new_id], atol=1e-6)

    train = prepare("cityscapes", root, tmp_path / "train")
    assert len(train["classes"]) == 19
    assert train["ignored_share"] == pytest.approx(np.mean(np.isin(label_ids, [0, 5])), abs=1e-6)


def test_failed_prepare_leaves_nothing(tmp_path):
    write_folder(tmp_path / "src", sizes=((20, 30),) * 6)
    (tmp_path / "src" / "images" / "im3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(SegkitError, match=r"im3\.png: (truncated|corrupt)"):
        prepare("folder", tmp_path / "src", tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_killed_prepare_leaves_no_loadable_cache(tmp_path):
    """SIGKILL in the middle of decoding (the 3rd image): no cache at --out; the next prepare cleans up."""
    write_folder(tmp_path / "src", sizes=((20, 30),) * 6)
    script = f"""
import os, signal
import segkit.data.readers as readers
real_read_image, calls = readers.read_image, []
def read_image_then_die(path):
    calls.append(path)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_read_image(path)
readers.read_image = read_image_then_die
from segkit.data import prepare
prepare("folder", {str(tmp_path / "src")!r}, {str(tmp_path / "cache")!r})
"""
    env = {**os.environ, "KERAS_BACKEND": "numpy", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftovers = [p for p in tmp_path.iterdir() if p.name != "src"]
    assert not (tmp_path / "cache").exists() and len(leftovers) == 1  # the dead process's partial folder
    with pytest.raises(SegkitError, match="no such folder"):
        load_prepared(tmp_path / "cache")
    with pytest.raises(SegkitError, match="not a prepared cache"):
        load_prepared(leftovers[0])

    prepare("folder", tmp_path / "src", tmp_path / "cache")
    assert len(load_prepared(tmp_path / "cache")) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "src"]


def test_existing_cache_is_replaced_other_folders_are_not(tmp_path):
    write_folder(tmp_path / "a", sizes=((20, 30),) * 2, seed=1)
    write_folder(tmp_path / "b", sizes=((10, 10),) * 3, seed=2)
    prepare("folder", tmp_path / "a", tmp_path / "cache")
    prepare("folder", tmp_path / "b", tmp_path / "cache")
    assert load_prepared(tmp_path / "cache").images.shape == (3, 10, 10, 3)

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(SegkitError, match=r"notes: folder exists, is not empty and is not a segkit cache"):
        prepare("folder", tmp_path / "a", tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "contents",
    [
        {"manifest.json": '{"name": "webapp"}', "index.html": "<html>", "src/app.js": "x"},
        {"manifest.json": "[1, 2]", "index.html": "<html>"},
        {"manifest.json": "\xff not json", "index.html": "<html>"},
    ],
    ids=["foreign-manifest", "manifest-not-an-object", "manifest-not-json"],
)
def test_folder_with_a_foreign_manifest_is_refused_and_kept(tmp_path, contents):
    write_folder(tmp_path / "src", sizes=((20, 30),) * 2)
    out = tmp_path / "webapp"
    for name, text in contents.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    with pytest.raises(SegkitError, match=r"not a segkit cache \(no manifest\.json written by segkit data prepare\)") as err:
        prepare("folder", tmp_path / "src", out)
    assert "\n" not in str(err.value) and str(out) in str(err.value)
    assert {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()} == contents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "webapp"]


def test_cache_holding_a_user_file_is_refused_and_kept(tmp_path):
    write_folder(tmp_path / "src", sizes=((20, 30),) * 2)
    prepare("folder", tmp_path / "src", tmp_path / "cache")
    (tmp_path / "cache" / "notes.txt").write_text("mine")
    with pytest.raises(SegkitError, match=r"cache: holds notes\.txt, which is not part of a segkit cache"):
        prepare("folder", tmp_path / "src", tmp_path / "cache")
    assert (tmp_path / "cache" / "notes.txt").read_text() == "mine"
    assert len(load_prepared(tmp_path / "cache")) == 2


def test_unwritable_out_is_one_line(tmp_path):
    write_folder(tmp_path / "src", sizes=((20, 30),) * 2)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SegkitError, match=r"^--out .*a_file/cache: folder .*a_file is a file, not a folder$") as err:
        prepare("folder", tmp_path / "src", tmp_path / "a_file" / "cache")
    assert "\n" not in str(err.value)
    assert (tmp_path / "a_file").read_text() == "x"


def test_size_has_an_upper_bound(tmp_path):
    write_folder(tmp_path / "src", sizes=((20, 30),) * 2)
    with pytest.raises(SegkitError, match=r"size=\(100000, 100000\): each side must be at most 8192"):
        prepare("folder", tmp_path / "src", tmp_path / "cache", size=(100000, 100000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_cache_larger_than_the_free_disk_is_refused_before_writing(tmp_path, monkeypatch):
    write_folder(tmp_path / "src", sizes=((20, 30),) * 4)
    free = 4 * 20 * 30 * 4 - 1  # one byte short of images (3 bytes a pixel) plus masks (1 byte)
    monkeypatch.setattr("segkit.data.cache.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, free))
    with pytest.raises(SegkitError, match=r"^--out .*/cache: cannot write \(the cache needs 9,600 bytes of disk, "
                                          r"only 9,599 are free\)$"):
        prepare("folder", tmp_path / "src", tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_out_of_memory_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    write_folder(tmp_path / "src", sizes=((20, 30),) * 2)

    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr("segkit.data.cache._resize", exhausted)
    with pytest.raises(SegkitError, match=r"cache: out of memory while preparing; try a smaller --size"):
        prepare("folder", tmp_path / "src", tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_load_prepared_rejects_what_is_not_a_cache(tmp_path):
    with pytest.raises(SegkitError, match="no such folder"):
        load_prepared(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegkitError, match=r"not a prepared cache \(no manifest\.json"):
        load_prepared(tmp_path / "empty")

    write_folder(tmp_path / "src", sizes=((20, 30),) * 2)
    prepare("folder", tmp_path / "src", tmp_path / "cache")
    manifest_path = tmp_path / "cache" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())

    manifest_path.write_text(json.dumps({**manifest, "num_items": 3}))
    with pytest.raises(SegkitError, match=r"images\.npy: is uint8 \(2, 20, 30, 3\), manifest says uint8 \(3, 20, 30, 3\)"):
        load_prepared(tmp_path / "cache")
    manifest_path.write_text(json.dumps({**manifest, "colors": manifest["colors"][:2]}))
    with pytest.raises(SegkitError, match="colors has 2 entries for 4 classes"):
        load_prepared(tmp_path / "cache")
    manifest_path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "classes"}))
    with pytest.raises(SegkitError, match="missing field.s. classes"):
        load_prepared(tmp_path / "cache")
    manifest_path.write_text("{ not json")
    with pytest.raises(SegkitError, match="not valid JSON"):
        load_prepared(tmp_path / "cache")
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "cache" / "masks.npy").unlink()
    with pytest.raises(SegkitError, match=r"masks\.npy: missing"):
        load_prepared(tmp_path / "cache")


def test_format_summary_lists_every_class_and_ignore():
    manifest = {"classes": ["road", "traffic light"], "class_pixel_share": [0.75, 0.25], "ignored_share": 0.125}
    lines = format_summary(manifest).splitlines()
    assert lines[1].split() == ["road", "75.00%"]
    assert lines[2].split() == ["traffic", "light", "25.00%"]
    assert lines[3].startswith("ignored (255)") and "12.50%" in lines[3]


# ---------------------------------------------------------------------------------------------
# Real slices


def test_real_pairs_prepare(shared_data, tmp_path):
    source = shared_data / "cityscapes_pairs" / "train"
    subset = tmp_path / "subset"
    subset.mkdir()
    for path in sorted(source.glob("*.jpg"))[:8]:
        (subset / path.name).symlink_to(path)
    manifest = prepare("cityscapes-pairs", subset, tmp_path / "cache", size=(128, 128))
    data = load_prepared(tmp_path / "cache")
    assert data.images.shape == (8, 128, 128, 3) and data.num_classes == 19 and manifest["split"] is None
    reader = open_reader("cityscapes-pairs", subset)
    _, mask = reader.read(reader.names[2])
    np.testing.assert_array_equal(data.masks[2], mask[::2, ::2])
    labelled = data.masks[data.masks != 255]
    np.testing.assert_allclose(manifest["class_pixel_share"], np.bincount(labelled, minlength=19) / labelled.size, atol=1e-6)
    assert 0.05 < manifest["ignored_share"] < 0.4
    assert manifest["class_pixel_share"][0] > 0.2  # road dominates street scenes


def test_real_camvid_and_cityscapes_prepare(shared_data, tmp_path):
    manifest = prepare("camvid", shared_data / "camvid11", tmp_path / "camvid", split="val", size=(180, 240))
    data = load_prepared(tmp_path / "camvid")
    assert data.images.shape == (6, 180, 240, 3) and manifest["split"] == "val"
    assert set(np.unique(data.masks)) <= set(range(11)) | {255}
    raw = cv2.imread(str(shared_data / "camvid11" / "valannot" / f"{manifest['items'][0]}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(data.masks[0], np.where(raw == 11, 255, raw)[::2, ::2])

    manifest = prepare("cityscapes", shared_data / "cityscapes_gtfine_sample", tmp_path / "cs", split="val", classes="all")
    assert manifest["num_items"] == 1 and manifest["classes"][0] == "ego vehicle"
    assert len(manifest["classes"]) == 14  # the frame's 14 distinct label ids


def test_a_full_disk_names_out_not_the_hidden_folder_the_cache_is_written_in(full_disk_folder, tmp_path):
    write_folder(tmp_path / "src", sizes=((20, 30),) * 2)
    with pytest.raises(SegkitError, match=r"^--out .*full-disk/cache: cannot write \(the cache needs 4,800 bytes") as err:
        prepare("folder", tmp_path / "src", full_disk_folder / "cache")
    assert ".partial" not in str(err.value)
    assert sorted(p.name for p in full_disk_folder.iterdir()) == [".filler"]


def test_a_read_only_out_is_one_line_before_reading_the_dataset(read_only_folder, tmp_path, monkeypatch):
    write_folder(tmp_path / "src", sizes=((20, 30),) * 2)
    monkeypatch.setattr("segkit.data.cache._write_cache", lambda *args: pytest.fail("the dataset was read"))
    with pytest.raises(SegkitError, match=r"^--out .*read-only/cache: folder .*read-only cannot be written: "
                                          r"Read-only file system$"):
        prepare("folder", tmp_path / "src", read_only_folder / "cache")

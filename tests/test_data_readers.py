"""Readers: every format on a replica the test writes and on the real slices; colour mapping against brute force."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segkit.data.palette import CITYSCAPES_LABELS, label_id_to_train_id
from segkit.data.readers import (
    MAX_UNMATCHED_SHARE,
    PAIRS_MAX_COLOR_DISTANCE,
    exact_color_index,
    nearest_color_index,
    open_reader,
)
from segkit.errors import SegkitError


# Hand-copied from cityscapesScripts' labels.py, independent of segkit's table: colour -> trainId.
OFFICIAL = {
    (128, 64, 128): 0, (244, 35, 232): 1, (70, 70, 70): 2, (102, 102, 156): 3, (190, 153, 153): 4,
    (153, 153, 153): 5, (250, 170, 30): 6, (220, 220, 0): 7, (107, 142, 35): 8, (152, 251, 152): 9,
    (70, 130, 180): 10, (220, 20, 60): 11, (255, 0, 0): 12, (0, 0, 142): 13, (0, 0, 70): 14,
    (0, 60, 100): 15, (0, 80, 100): 16, (0, 0, 230): 17, (119, 11, 32): 18,
    # void colours: ignore, never a neighbouring class
    (0, 0, 0): 255, (111, 74, 0): 255, (81, 0, 81): 255, (250, 170, 160): 255, (230, 150, 140): 255,
    (180, 165, 180): 255, (150, 100, 100): 255, (150, 120, 90): 255, (0, 0, 90): 255, (0, 0, 110): 255,
}  # fmt: skip
OFFICIAL_COLORS = np.array(list(OFFICIAL), dtype=np.uint8)
OFFICIAL_TRAIN_IDS = np.array(list(OFFICIAL.values()))


def write_png(path: Path, array: np.ndarray) -> Path:
    """RGB (H, W, 3) or index (H, W) array to a lossless PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), array[..., ::-1] if array.ndim == 3 else array)
    return path


def write_jpg(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return path


def block_label(rng, colors: np.ndarray, size: int = 64, block: int = 8):
    """A label image of flat 8x8 blocks of random table colours, and the row index of each pixel."""
    rows = rng.integers(0, len(colors), size=(size // block, size // block))
    rows = np.kron(rows, np.ones((block, block), dtype=int))
    return colors[rows], rows


def brute_force_nearest(rgb: np.ndarray, colors: np.ndarray):
    distance = np.sqrt(((rgb[..., None, :].astype(float) - colors.astype(float)) ** 2).sum(-1))
    order = np.sort(distance, axis=-1)
    return distance.argmin(-1), order[..., 0], order[..., 1]


# ---------------------------------------------------------------------------------------------
# Colour mapping


def test_nearest_color_index_matches_brute_force_away_from_ties():
    rng = np.random.default_rng(0)
    noisy = OFFICIAL_COLORS[rng.integers(0, len(OFFICIAL_COLORS), 20000)].astype(int) + rng.integers(-25, 26, (20000, 3))
    rgb = np.concatenate([np.clip(noisy, 0, 255), rng.integers(0, 256, (20000, 3))]).astype(np.uint8)
    index = nearest_color_index(rgb, OFFICIAL_COLORS, PAIRS_MAX_COLOR_DISTANCE)

    nearest, best, second = brute_force_nearest(rgb, OFFICIAL_COLORS)
    expected = np.where(best > PAIRS_MAX_COLOR_DISTANCE, 255, nearest)
    # The table works on bins of 2 levels (distances off by < 0.87): near-ties and near-threshold cases may differ.
    clear = (second - best > 1.75) & (np.abs(best - PAIRS_MAX_COLOR_DISTANCE) > 0.9)
    assert clear.mean() > 0.85
    np.testing.assert_array_equal(index[clear], expected[clear])


def test_exact_color_index_matches_brute_force():
    rng = np.random.default_rng(1)
    colors = rng.integers(0, 256, (12, 3)).astype(np.uint8)
    rgb = np.concatenate([colors[rng.integers(0, 12, 500)], rng.integers(0, 256, (500, 3)).astype(np.uint8)])
    equal = (rgb[:, None, :] == colors[None]).all(-1)
    expected = np.where(equal.any(-1), equal.argmax(-1), 255)
    np.testing.assert_array_equal(exact_color_index(rgb, colors), expected)


# ---------------------------------------------------------------------------------------------
# cityscapes-pairs


def write_pairs(folder: Path, count: int = 3, seed: int = 0, jpeg: bool = False, block: int = 8):
    """Composites photo | block label in official colours; returns {name: (photo, expected trainIds)}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(1, count + 1):
        label, rows = block_label(rng, OFFICIAL_COLORS, block=block)
        photo = rng.integers(0, 256, label.shape, dtype=np.uint8)
        composite = np.concatenate([photo, label], axis=1)
        if jpeg:
            write_jpg(folder / f"{i}.jpg", composite)
        else:
            write_png(folder / f"{i}.png", composite)
        truth[str(i)] = (photo, OFFICIAL_TRAIN_IDS[rows])
    return truth


def test_pairs_split_composite_and_map_official_colours(tmp_path):
    truth = write_pairs(tmp_path, count=3)
    reader = open_reader("cityscapes-pairs", tmp_path)
    assert len(reader.class_names) == 19 and reader.class_names[0] == "road" and reader.class_names[18] == "bicycle"
    assert [name for name, _, _ in reader] == ["1", "2", "3"]
    for name, image, mask in reader:
        photo, expected = truth[name]
        np.testing.assert_array_equal(image, photo)
        np.testing.assert_array_equal(mask, expected)


def test_pairs_void_colours_and_far_colours_go_to_ignore(tmp_path):
    label = np.zeros((16, 16, 3), dtype=np.uint8)
    label[:, :4] = (0, 0, 88)  # 2 from caravan (void), 18 from truck: void, not pulled into truck
    label[:, 4:8] = (108, 70, 4)  # 6 from dynamic (void), far from the rest
    label[:, 8:12] = (128 + 10, 64 - 10, 128 + 10)  # road, 17 away
    label[:, 12:] = (128, 64 + 40, 128 - 40)  # 57 from road and far from everything else
    write_png(tmp_path / "a.png", np.concatenate([np.zeros_like(label), label], axis=1))
    (_, _, mask), = list(open_reader("cityscapes-pairs", tmp_path))
    assert (mask[:, :8] == 255).all()
    assert (mask[:, 8:12] == 0).all()
    assert (mask[:, 12:] == 255).all()


def test_pairs_max_color_distance_moves_the_line_between_a_class_and_ignore(tmp_path):
    label = np.zeros((16, 16, 3), dtype=np.uint8)
    label[:, :12] = (128 + 10, 64 - 10, 128 + 10)  # road, 17 away
    label[:, 12:] = (128 + 28, 64 - 28, 128)  # road, 39.6 away (a quarter of the label: more would not pass as one)
    nearest, best, _ = brute_force_nearest(label[0, [0, 12]], OFFICIAL_COLORS)
    assert OFFICIAL_TRAIN_IDS[nearest].tolist() == [0, 0] and 15 < best[0] < 20 < 30 < best[1] < 50
    write_png(tmp_path / "a.png", np.concatenate([np.zeros_like(label), label], axis=1))
    masks = {distance: open_reader("cityscapes-pairs", tmp_path, max_color_distance=distance).read("a")[1]
             for distance in (None, 20, 50)}
    assert (masks[None][:, :12] == 0).all() and (masks[None][:, 12:] == 255).all()  # the default: 30
    assert (masks[50] == 0).all()
    assert (masks[20][:, :12] == 0).all() and (masks[20][:, 12:] == 255).all()
    assert open_reader("cityscapes-pairs", tmp_path, max_color_distance=50).max_color_distance == 50
    assert open_reader("cityscapes-pairs", tmp_path, max_color_distance=PAIRS_MAX_COLOR_DISTANCE).max_color_distance is None


@pytest.mark.parametrize(
    "format, value, message",
    [
        ("camvid", 50, r"^max color distance 50 applies to cityscapes-pairs colour labels, not to format camvid$"),
        ("cityscapes-pairs", 0, r"^max color distance must be a positive number \(RGB units; default 30\), got 0$"),
        ("cityscapes-pairs", -5.0, r"got -5.0$"),
        ("cityscapes-pairs", float("inf"), r"got inf$"),
        ("cityscapes-pairs", float("nan"), r"got nan$"),
        ("cityscapes-pairs", True, r"got True$"),
        ("cityscapes-pairs", "50", r"got '50'$"),
    ],
)
def test_a_bad_max_color_distance_is_one_line_naming_it(tmp_path, format, value, message):
    write_pairs(tmp_path, count=1)
    with pytest.raises(SegkitError, match=message):
        open_reader(format, tmp_path, max_color_distance=value)


def test_real_pairs_at_distance_50_keep_every_label_of_30_and_add_edge_pixels_near_their_colour(shared_data):
    folder = shared_data / "cityscapes_pairs" / "train"
    strict, loose = open_reader("cityscapes-pairs", folder), open_reader("cityscapes-pairs", folder, max_color_distance=50)
    shares = []
    for name in strict.names[:5]:
        (_, at_30), (_, at_50) = strict.read(name), loose.read(name)
        kept = at_30 != 255
        np.testing.assert_array_equal(at_50[kept], at_30[kept])
        label = cv2.imread(str(folder / f"{name}.jpg"))[:, 256:, ::-1]
        added = (at_50 != 255) & ~kept
        distance = np.linalg.norm(label[added].astype(float) - loose.class_colors[at_50[added]], axis=-1)
        assert np.all((30 - 2 < distance) & (distance < 50 + 2))  # the colour table's bins are 2 levels wide
        shares.append((kept.mean(), (at_50 != 255).mean()))
    assert all(loose_share > strict_share + 0.02 for strict_share, loose_share in shares), shares


def test_pairs_classes_all_keeps_every_distinct_colour(tmp_path):
    write_pairs(tmp_path, count=1, seed=3)
    reader = open_reader("cityscapes-pairs", tmp_path, classes="all")
    distinct = list(dict.fromkeys(label.color for label in CITYSCAPES_LABELS))
    assert len(reader.class_names) == len(distinct) == 29
    assert reader.class_names[0] == "unlabeled"
    (_, _, mask), = list(reader)
    label = cv2.imread(str(tmp_path / "1.png"))[:, 64:, ::-1]
    # every pixel's id points back at exactly its colour
    np.testing.assert_array_equal(reader.class_colors[mask], label)


def test_pairs_jpeg_still_maps_within_threshold(tmp_path):
    truth = write_pairs(tmp_path, count=2, jpeg=True, block=16)
    for name, _, mask in open_reader("cityscapes-pairs", tmp_path):
        expected = truth[name][1]
        is_class, labelled = expected != 255, mask != 255
        assert np.mean(labelled[is_class]) > 0.8  # random neighbours everywhere: many blended JPEG edges
        assert np.mean(mask[is_class & labelled] == expected[is_class & labelled]) > 0.98
        assert np.mean(labelled[~is_class]) < 0.1  # e.g. trailer (void) beside car: 32 apart, blends split


def test_pairs_split_folder_is_used_when_present(tmp_path):
    write_pairs(tmp_path / "train", count=2)
    write_pairs(tmp_path / "val", count=1)
    default = open_reader("cityscapes-pairs", tmp_path)
    assert len(default) == 2 and default.split == "train"
    assert len(open_reader("cityscapes-pairs", tmp_path, split="val")) == 1
    with pytest.raises(SegkitError, match="test"):
        open_reader("cityscapes-pairs", tmp_path, split="test")


def test_real_pairs_mostly_within_threshold(shared_data):
    reader = open_reader("cityscapes-pairs", shared_data / "cityscapes_pairs" / "train")
    assert len(reader) == 1000
    for name in reader.names[:5]:
        image, mask = reader.read(name)
        composite = cv2.imread(str(shared_data / "cityscapes_pairs" / "train" / f"{name}.jpg"))[..., ::-1]
        np.testing.assert_array_equal(image, composite[:, :256])
        label = composite[:, 256:]
        _, best, _ = brute_force_nearest(label, OFFICIAL_COLORS)
        assert np.mean(best <= PAIRS_MAX_COLOR_DISTANCE) > 0.8
        # pixels mapped to a class really are that class's colour, give or take JPEG noise
        labelled = mask != 255
        distance = np.linalg.norm(label[labelled].astype(float) - reader.class_colors[mask[labelled]], axis=-1)
        assert np.all(distance <= PAIRS_MAX_COLOR_DISTANCE + 1)


# Of all 2,975 files in cityscapes_pairs_full/train, the real labels closest to the limits (most pixels far from
# every palette colour, fewest inside one-class areas) and the photos that come closest to passing as labels.
HARDEST_REAL_LABELS = ("610.jpg", "1494.jpg", "1493.jpg", "1495.jpg")
MOST_LABEL_LIKE_PHOTOS = ("2049.jpg", "1069.jpg", "2539.jpg", "1701.jpg")


def _pairs_sample(shared_data, hardest):
    """A reader of the full training split and the names of every 10th pair plus `hardest`."""
    reader = open_reader("cityscapes-pairs", shared_data / "cityscapes_pairs_full" / "train")
    assert len(reader) == 2975
    return reader, reader.names[::10] + [Path(name).stem for name in hardest]


def test_real_pairs_pass_the_label_checks(shared_data):
    reader, names = _pairs_sample(shared_data, HARDEST_REAL_LABELS)
    for name in names:
        reader.read(name)  # raises on a rejected label half


def test_photo_pasted_as_label_is_rejected(shared_data, tmp_path):
    real, names = _pairs_sample(shared_data, MOST_LABEL_LIKE_PHOTOS)
    for name in names:
        photo = cv2.imread(str(real.source / f"{name}.jpg"))[:, :256]
        cv2.imwrite(str(tmp_path / f"{name}.jpg"), np.concatenate([photo, photo], axis=1), [cv2.IMWRITE_JPEG_QUALITY, 95])
    reader = open_reader("cityscapes-pairs", tmp_path)
    for name in reader.names:
        with pytest.raises(SegkitError, match=rf"{name}\.jpg: .*(is this a label image|is this a photo)"):
            reader.read(name)


def test_label_of_scattered_palette_colours_is_rejected(tmp_path):
    """Every pixel an exact official colour, but no two neighbours alike: not a piecewise-constant label image."""
    rng = np.random.default_rng(0)
    label = OFFICIAL_COLORS[rng.integers(0, len(OFFICIAL_COLORS), (64, 64))]
    write_png(tmp_path / "x.png", np.concatenate([label, label], axis=1))
    with pytest.raises(SegkitError, match=r"x\.png: only \d+% of label pixels lie inside one-class areas"):
        list(open_reader("cityscapes-pairs", tmp_path))


def test_pairs_mapping_agrees_with_official_train_ids(shared_data, tmp_path):
    """Independent check: paint the official gtFine frame in palette colours, JPEG it as pairs, read it back."""
    label_dir = shared_data / "cityscapes_gtfine_sample" / "gtFine" / "val" / "frankfurt"
    label_ids = cv2.imread(str(label_dir / "frankfurt_000000_000294_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
    train_ids = cv2.imread(str(label_dir / "frankfurt_000000_000294_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    color_of_id = np.zeros((256, 3), dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        color_of_id[label.id] = label.color
    painted = color_of_id[label_ids]
    height = painted.shape[0]
    for left in (0, height):  # two square crops -> two 2:1 composites
        crop = painted[:, left : left + height]
        write_jpg(tmp_path / f"{left}.jpg", np.concatenate([np.zeros_like(crop), crop], axis=1), quality=90)
    for name, _, mask in open_reader("cityscapes-pairs", tmp_path):
        left = int(name)
        expected = train_ids[:, left : left + height]
        is_class, labelled = expected != 255, mask != 255
        assert np.mean(labelled[is_class]) > 0.88  # only edge blends of real classes go to ignore
        assert np.mean(mask[is_class & labelled] == expected[is_class & labelled]) > 0.99
        assert np.mean(labelled[~is_class]) < 0.01  # void stays void


# ---------------------------------------------------------------------------------------------
# cityscapes (official layout)


def write_cityscapes(root: Path, split: str = "train", label_kind: str = "labelIds"):
    """One city, two frames, labelIds covering every official id; returns {name: raw labels}."""
    rng = np.random.default_rng(5)
    raw = {}
    for frame in ("aachen_000000_000019", "aachen_000001_000019"):
        ids = rng.integers(0, 34, (32, 64)).astype(np.uint8) if label_kind == "labelIds" else rng.choice(
            np.r_[0:19, 255], (32, 64)).astype(np.uint8)
        write_png(root / "leftImg8bit" / split / "aachen" / f"{frame}_leftImg8bit.png", rng.integers(0, 256, (32, 64, 3), dtype=np.uint8))
        write_png(root / "gtFine" / split / "aachen" / f"{frame}_gtFine_{label_kind}.png", ids)
        raw[frame] = ids
    return raw


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    raw = write_cityscapes(tmp_path)
    reader = open_reader("cityscapes", tmp_path)
    id_to_train = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                   26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
    for name, image, mask in reader:
        expected = np.vectorize(lambda i: id_to_train.get(int(i), 255))(raw[name])
        np.testing.assert_array_equal(mask, expected)
        assert image.shape == (32, 64, 3)


def test_cityscapes_label_train_ids_used_as_is(tmp_path):
    raw = write_cityscapes(tmp_path, split="val", label_kind="labelTrainIds")
    for name, _, mask in open_reader("cityscapes", tmp_path, split="val"):
        np.testing.assert_array_equal(mask, raw[name])
    with pytest.raises(SegkitError, match="labelIds"):
        open_reader("cityscapes", tmp_path, split="val", classes="all")


def test_cityscapes_real_frame_matches_its_label_train_ids(shared_data):
    root = shared_data / "cityscapes_gtfine_sample"
    (name, image, mask), = list(open_reader("cityscapes", root, split="val"))
    train_ids = cv2.imread(str(next((root / "gtFine").rglob("*labelTrainIds.png"))), cv2.IMREAD_UNCHANGED)
    raw = cv2.imread(str(next((root / "gtFine").rglob("*labelIds.png"))), cv2.IMREAD_UNCHANGED)
    assert name == "frankfurt_000000_000294" and image.shape == (128, 256, 3)
    np.testing.assert_array_equal(mask, label_id_to_train_id()[raw])
    # the sample's own labelTrainIds were resized separately from its labelIds: near-identical, not identical
    assert np.mean(mask == train_ids) > 0.99


# ---------------------------------------------------------------------------------------------
# camvid (SegNet 11 classes) and camvid32 (Kaggle)


def test_camvid_real_slice_void_to_ignore(shared_data):
    root = shared_data / "camvid11"
    reader = open_reader("camvid", root, split="val")
    assert len(reader) == 6 and reader.class_names[0] == "sky" and len(reader.class_names) == 11
    name, image, mask = next(iter(reader))
    raw = cv2.imread(str(root / "valannot" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, np.where(raw == 11, 255, raw))
    np.testing.assert_array_equal(image, cv2.imread(str(root / "val" / f"{name}.png"))[..., ::-1])
    assert len(open_reader("camvid", root)) == 12


def test_camvid_replica_and_all_classes(tmp_path):
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 12, (24, 32)).astype(np.uint8)
    write_png(tmp_path / "test" / "f1.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    write_png(tmp_path / "testannot" / "f1.png", raw)
    (_, _, mask), = list(open_reader("camvid", tmp_path, split="test"))
    np.testing.assert_array_equal(mask, np.where(raw == 11, 255, raw))
    reader = open_reader("camvid", tmp_path, split="test", classes="all")
    assert reader.class_names[-1] == "void"
    np.testing.assert_array_equal(next(iter(reader))[2], raw)


CLASS_DICT = "name,r,g,b\nAnimal,64,128,64\nArchway,192,0,128\nBicyclist,0,128,192\nCar,64,0,128\nVoid,0,0,0\nWall,64,192,0\n"


def write_camvid32(root: Path, split: str = "train", class_dict: str = CLASS_DICT, count: int = 2):
    """Kaggle layout replica: <split>/<name>.png, <split>_labels/<name>_L.png, class_dict.csv."""
    (root / "class_dict.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "class_dict.csv").write_text(class_dict)
    colors = np.array([[64, 128, 64], [192, 0, 128], [0, 128, 192], [64, 0, 128], [0, 0, 0], [64, 192, 0]], np.uint8)
    rng = np.random.default_rng(4)
    rows = {}
    for i in range(count):
        label, rows[f"0001TP_{i:06d}"] = block_label(rng, colors, size=32, block=4)
        write_png(root / split / f"0001TP_{i:06d}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        write_png(root / f"{split}_labels" / f"0001TP_{i:06d}_L.png", label)
    return rows


def test_camvid32_exact_colours_void_ignored(tmp_path):
    rows = write_camvid32(tmp_path)
    reader = open_reader("camvid32", tmp_path)
    assert reader.class_names == ("Animal", "Archway", "Bicyclist", "Car", "Wall")
    np.testing.assert_array_equal(reader.class_colors[-1], (64, 192, 0))
    train_id_of_row = np.array([0, 1, 2, 3, 255, 4])
    for name, _, mask in reader:
        np.testing.assert_array_equal(mask, train_id_of_row[rows[name]])
    all_reader = open_reader("camvid32", tmp_path, classes="all")
    assert "Void" in all_reader.class_names
    for name, _, mask in all_reader:
        np.testing.assert_array_equal(mask, rows[name])


def test_camvid32_val_split(tmp_path):
    write_camvid32(tmp_path, split="val", count=3)
    assert len(open_reader("camvid32", tmp_path, split="val")) == 3


# ---------------------------------------------------------------------------------------------
# folder


def write_folder(root: Path, classes_text: str = "road,128,64,128\ncar,0,0,142\n# comment\n\nperson,220,20,60\n", count: int = 2):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text(classes_text)
    rng = np.random.default_rng(6)
    masks = {}
    for i in range(count):
        masks[f"img{i}"] = rng.choice(np.array([0, 1, 2, 255], np.uint8), (20, 30))
        write_jpg(root / "images" / f"img{i}.jpg", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
        write_png(root / "masks" / f"img{i}.png", masks[f"img{i}"])
    return masks


def test_folder_with_coloured_classes_file(tmp_path):
    masks = write_folder(tmp_path)
    reader = open_reader("folder", tmp_path)
    assert reader.class_names == ("road", "car", "person")
    np.testing.assert_array_equal(reader.class_colors, [[128, 64, 128], [0, 0, 142], [220, 20, 60]])
    for name, image, mask in reader:
        np.testing.assert_array_equal(mask, masks[name])
        assert image.shape == (20, 30, 3)


@pytest.mark.parametrize("bits", [8, 2])
def test_folder_takes_palette_png_masks_as_indices(tmp_path, bits):
    """VOC-style masks: mode "P" PNGs whose pixel values are the class indices and whose palette is only for display."""
    masks = write_folder(tmp_path)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192]  # VOC: index 255 drawn cream
    for name, mask in masks.items():
        if bits == 2:  # a 4-entry palette: Pillow writes 2 bits per pixel, so the ignore value must be < 4
            mask[mask == 255] = 2
        image = Image.fromarray(mask, mode="P")
        image.putpalette(palette[: 3 * 4] if bits == 2 else palette)
        image.save(tmp_path / "masks" / f"{name}.png", bits=bits)
        with Image.open(tmp_path / "masks" / f"{name}.png") as saved:
            assert saved.mode == "P"
        assert (tmp_path / "masks" / f"{name}.png").read_bytes()[24:26] == bytes([bits, 3])  # IHDR: depth, palette
    reader = open_reader("folder", tmp_path)
    for name, _, mask in reader:
        np.testing.assert_array_equal(mask, masks[name])


def test_folder_names_only_classes_file_elsewhere(tmp_path):
    write_folder(tmp_path / "data", classes_text="a\n")
    elsewhere = tmp_path / "my_classes.txt"
    elsewhere.write_text("road\ncar\nperson\n")
    reader = open_reader("folder", tmp_path / "data", classes=str(elsewhere))
    assert reader.class_names == ("road", "car", "person")
    assert len({tuple(c) for c in reader.class_colors}) == 3
    with pytest.raises(SegkitError, match=r"img0\.png.*unknown label value"):
        list(open_reader("folder", tmp_path / "data"))  # masks hold 1 and 2, the local file lists one class


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file and what is wrong


def test_truncated_jpeg_names_the_file(tmp_path):
    write_pairs(tmp_path, count=2, jpeg=True)
    data = (tmp_path / "2.jpg").read_bytes()
    (tmp_path / "2.jpg").write_bytes(data[: len(data) // 2])
    reader = open_reader("cityscapes-pairs", tmp_path)
    reader.read("1")
    with pytest.raises(SegkitError, match=r"2\.jpg: truncated"):
        reader.read("2")


def _damage_middle(data: bytes, damage: str) -> bytes:
    """Spoil a JPEG's entropy-coded data half way through; it still starts and ends with valid markers."""
    middle = len(data) // 2
    if damage == "cut":
        return data[:middle] + data[-2:]
    return data[:middle] + bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)) + data[middle + 2000 :]


def _camvid_with_jpeg_photo(root: Path, photo: np.ndarray) -> Path:
    write_jpg(root / "train" / "f1.jpg", photo)
    write_png(root / "trainannot" / "f1.png", np.zeros(photo.shape[:2], np.uint8))
    return root / "train" / "f1.jpg"


def _folder_with_jpeg_photo(root: Path, photo: np.ndarray) -> Path:
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("road\n")
    write_jpg(root / "images" / "f1.jpg", photo)
    write_png(root / "masks" / "f1.png", np.zeros(photo.shape[:2], np.uint8))
    return root / "images" / "f1.jpg"


@pytest.mark.parametrize("damage", ["cut", "garbage"])
@pytest.mark.parametrize("fmt, write", [("camvid", _camvid_with_jpeg_photo), ("folder", _folder_with_jpeg_photo)])
def test_jpeg_corrupt_in_the_middle_is_refused(shared_data, tmp_path, fmt, write, damage):
    """Before: accepted, its lower part decoded as flat grey. libjpeg reports the damage; the reader must act on it."""
    photo = cv2.imread(str(shared_data / "camvid11" / "train" / "0001TP_007470.png"))[..., ::-1]
    path = write(tmp_path, photo)
    intact = open_reader(fmt, tmp_path).read("f1")[0]
    path.write_bytes(_damage_middle(path.read_bytes(), damage))
    assert path.read_bytes()[-2:] == b"\xff\xd9"
    with pytest.raises(SegkitError, match=r"f1\.jpg: corrupt JPEG data, decoded only in part \(libjpeg: Corrupt JPEG data") as err:
        open_reader(fmt, tmp_path).read("f1")
    assert "\n" not in str(err.value)
    assert np.abs(intact.astype(int) - photo).mean() < 3  # the intact file decodes fine


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_png_names_the_file(tmp_path, damage):
    write_camvid32(tmp_path, count=1)
    label = tmp_path / "train_labels" / "0001TP_000000_L.png"
    data = label.read_bytes()
    label.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:16] + b"\x00garbage" * 20 + data[-12:])
    with pytest.raises(SegkitError, match=r"0001TP_000000_L\.png: (truncated|corrupt)"):
        list(open_reader("camvid32", tmp_path))


def test_composite_not_two_to_one(tmp_path):
    write_png(tmp_path / "wide.png", np.zeros((32, 96, 3), np.uint8))
    with pytest.raises(SegkitError, match=r"wide\.png: composite is 96x32"):
        list(open_reader("cityscapes-pairs", tmp_path))


@pytest.mark.parametrize("label_rgb", [(128, 64, 128), (0, 0, 0)])  # road; the void colour
def test_a_one_by_two_composite_is_refused_in_one_line_naming_the_file(tmp_path, label_rgb):
    write_png(tmp_path / "tiny.png", np.array([[(90, 90, 90), label_rgb]], np.uint8))
    with pytest.raises(SegkitError, match=r"tiny\.png: composite is 2x1; its label half must be at least 2x2 pixels"):
        list(open_reader("cityscapes-pairs", tmp_path))


def test_label_colours_mostly_unmatched_says_share(tmp_path):
    photo_like_label = np.full((32, 32, 3), (30, 200, 90), np.uint8)  # far from every official colour
    photo_like_label[:8] = (128, 64, 128)
    write_png(tmp_path / "x.png", np.concatenate([photo_like_label, photo_like_label], axis=1))
    with pytest.raises(SegkitError, match=r"x\.png: 75% of label pixels match no"):
        list(open_reader("cityscapes-pairs", tmp_path))
    assert MAX_UNMATCHED_SHARE < 0.75


def test_camvid32_unknown_colours_says_share(tmp_path):
    write_camvid32(tmp_path, count=1)
    write_png(tmp_path / "train_labels" / "0001TP_000000_L.png", np.full((32, 32, 3), 7, np.uint8))
    with pytest.raises(SegkitError, match=r"_L\.png: 100% of label pixels match no colour in class_dict\.csv"):
        list(open_reader("camvid32", tmp_path))


def test_missing_partner_named(tmp_path):
    write_camvid32(tmp_path, count=2)
    (tmp_path / "train_labels" / "0001TP_000001_L.png").unlink()
    with pytest.raises(SegkitError, match=r"0001TP_000001\.png: no label .*2 images, 1 labels"):
        open_reader("camvid32", tmp_path)
    write_folder(tmp_path / "f", count=2)
    write_png(tmp_path / "f" / "masks" / "stray.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(SegkitError, match=r"stray\.png: no image .*2 images, 3 labels"):
        open_reader("folder", tmp_path / "f")


def test_image_and_label_sizes_differ(tmp_path):
    write_folder(tmp_path, count=1)
    write_png(tmp_path / "masks" / "img0.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(SegkitError, match=r"img0\.png: label is 10x10 but its image img0\.jpg is 30x20"):
        list(open_reader("folder", tmp_path))


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(SegkitError, match="missing folder"):
        open_reader("cityscapes-pairs", tmp_path / "nope")
    with pytest.raises(SegkitError, match="no .jpg/.png composites"):
        open_reader("cityscapes-pairs", tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    with pytest.raises(SegkitError, match=r"train: no images found"):
        open_reader("camvid", tmp_path)
    with pytest.raises(SegkitError, match=r"valannot: missing folder"):
        (tmp_path / "val").mkdir() or open_reader("camvid", tmp_path, split="val")
    with pytest.raises(SegkitError, match=r"leftImg8bit/train: missing folder"):
        open_reader("cityscapes", tmp_path)
    with pytest.raises(SegkitError, match="unknown dataset format 'voc'"):
        open_reader("voc", tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        (CLASS_DICT + "Road,64,128,64\n", r"line 8: colour \(64, 128, 64\) of 'Road' is already used by 'Animal'"),
        (CLASS_DICT + "Road,64,128\n", r"line 8: expected name,r,g,b"),
        (CLASS_DICT + "Road,64,x,1\n", r"line 8: colour values must be integers"),
        (CLASS_DICT + "Road,64,300,1\n", r"line 8: colour values must be 0..255"),
        ("label,r,g,b\nA,1,2,3\n", r"line 1 must be the header name,r,g,b"),
        ("name,r,g,b\n", "no classes listed"),
    ],
)
def test_bad_class_dict(tmp_path, text, message):
    write_camvid32(tmp_path, class_dict=text, count=1)
    with pytest.raises(SegkitError, match=r"class_dict\.csv: " + message):
        open_reader("camvid32", tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [("a\na\n", "class 'a' is listed twice"), ("a,1,2,3\nb\n", "every class or for none"), ("", "no classes listed"),
     ("a,1,2\n", "line 1: expected name,r,g,b")],
)  # fmt: skip
def test_bad_classes_file(tmp_path, text, message):
    write_folder(tmp_path, classes_text=text, count=1)
    with pytest.raises(SegkitError, match=r"classes\.txt: .*" + message):
        open_reader("folder", tmp_path)


def test_class_tables_that_are_not_utf8_are_one_line_errors(tmp_path):
    latin1 = "name,r,g,b\nCafé,1,2,3\n".encode("latin-1")
    write_camvid32(tmp_path / "kaggle", count=1)
    (tmp_path / "kaggle" / "class_dict.csv").write_bytes(latin1)
    with pytest.raises(SegkitError, match=r"class_dict\.csv: not UTF-8 text \(byte 0xe9 at offset 14\)"):
        open_reader("camvid32", tmp_path / "kaggle")
    write_folder(tmp_path / "folder", count=1)
    (tmp_path / "folder" / "classes.txt").write_bytes("road\nCafé\n".encode("latin-1"))
    with pytest.raises(SegkitError, match=r"classes\.txt: not UTF-8 text \(byte 0xe9 at offset 8\)"):
        open_reader("folder", tmp_path / "folder")


def test_three_channel_mask_is_rejected(tmp_path):
    write_folder(tmp_path, count=1)
    write_png(tmp_path / "masks" / "img0.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(SegkitError, match=r"img0\.png: expected a single-channel 8-bit index PNG, got 3"):
        list(open_reader("folder", tmp_path))

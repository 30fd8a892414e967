"""Shared by the training tests: a tiny prepared synthetic dataset, configs for it, and a stand-in model.

The stand-in (a few convolutions, no batch norm) compiles in about a second, so the tests exercise
run folders, checkpoints and resume without paying for a ResNet; tests that need the real models
build them through the config as a user would.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

import segkit
from segkit import data
from segkit.workflows import runs
from segkit.workflows import train as train_module

SIZE = (32, 32)


def prepared_synthetic(root: Path, count: int = 16, seed: int = 0, size=SIZE, classes: str = "train") -> Path:
    """Writes `count` synthetic pairs and prepares them; returns the prepared folder."""
    raw = root / f"raw-{count}-{seed}-{size[0]}x{size[1]}"
    data.write_synthetic(raw, count, seed=seed, size=size)
    out = root / f"prepared-{count}-{seed}-{size[0]}x{size[1]}-{classes}"
    data.prepare("cityscapes-pairs", raw, out, classes=classes)
    return out


class Killed(BaseException):
    """Stands for SIGKILL: raised between writing a checkpoint and committing it."""


def kill_at_commit(monkeypatch, epoch: int):
    """Makes committing `epoch` (writing state.json) raise Killed; returns the real commit, to put back before resuming."""
    commit = runs.Run.write_state

    def write_state_or_die(self, state):
        if state["epoch"] == epoch:
            raise Killed
        commit(self, state)

    monkeypatch.setattr(runs.Run, "write_state", write_state_or_die)
    return commit


def train_quietly(config, runs_dir, **kwargs):
    """`segkit.train` into `runs_dir` with no progress output."""
    return segkit.train(config, runs_dir=runs_dir, verbose=0, **kwargs)


def killed_run(config, runs_dir: Path, monkeypatch, epoch: int) -> Path:
    """Trains `config` into `runs_dir`, killed while committing `epoch`; returns the run folder, the real commit back."""
    commit = kill_at_commit(monkeypatch, epoch)
    with pytest.raises(Killed):
        train_quietly(config, runs_dir)
    monkeypatch.setattr(runs.Run, "write_state", commit)
    (killed,) = runs_dir.iterdir()
    return killed


def tiny_config(data_path, **sections) -> dict:
    """A config for a few quick steps on `data_path`; `sections` update sections (train={"epochs": 3}) or set name="x"."""
    config = {
        "name": "tiny",
        "model": {"name": "unet", "encoder": "resnet18"},
        "data": {"path": str(data_path), "val": 4},
        "train": {"batch_size": 4, "epochs": 2, "seed": 0},
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "augment": {"enabled": False},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    return config


def tiny_model(cfg, num_classes, image_size):
    """Stand-in for train.build_model: conv, strided conv, bilinear upsampling, 1x1 classifier to logits."""
    inputs = keras.Input((*image_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
    logits = keras.layers.Conv2D(num_classes, 1, dtype="float32")(x)
    return keras.Model(inputs, logits, name="tiny")


def brute_force_iou(truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int = 255):
    """Per-class IoU with a Python loop over classes (NaN where a class is in neither), and their NaN-skipping mean."""
    keep = truth != ignore
    t, p = truth[keep], pred[keep]
    iou = []
    for c in range(num_classes):
        union = np.sum((t == c) | (p == c))
        iou.append(np.sum((t == c) & (p == c)) / union if union else np.nan)
    iou = np.array(iou)
    return iou, float(np.nanmean(iou))


def brute_force_run_scores(run, dataset: Path):
    """(per-class IoU, mIoU, pixel accuracy) of the run's best.keras on its validation items of `dataset`, by brute force."""
    prepared = data.load_prepared(dataset)
    val_idx = np.asarray(run.dataset["val"]["indices"])
    pred = predict_classes(keras.saving.load_model(run.path / "best.keras"), np.asarray(prepared.images[val_idx]))
    truth = np.asarray(prepared.masks[val_idx])
    iou, miou = brute_force_iou(truth, pred, prepared.num_classes)
    return iou, miou, float(np.mean(pred[truth != 255] == truth[truth != 255]))


def predict_classes(model, images: np.ndarray) -> np.ndarray:
    """argmax of the model's logits from Keras' own compiled predict step, in one batch (no padding: the images have
    the model's input size). Not an eager `model(x)`: under mixed precision the compiled graph's fused float16 and
    bfloat16 kernels round differently from op-by-op execution, enough to flip pixels near a tie."""
    return np.argmax(keras.ops.convert_to_numpy(model.predict_on_batch(images.astype("float32"))), axis=-1)


def train_with_stand_in(config, runs_dir):
    """`segkit.train` with the stand-in model in place of the configured one: a run folder in seconds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "build_model", tiny_model)
        return segkit.train(config, runs_dir=runs_dir, verbose=0)


def upsample_bilinear(maps: np.ndarray, size) -> np.ndarray:
    """(B, h, w, C) resized to (B, *size, C) by a numpy loop-free bilinear with half-pixel centres, clamped at the edges."""

    def taps(out_len, in_len):
        src = np.clip((np.arange(out_len) + 0.5) * in_len / out_len - 0.5, 0, in_len - 1)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, in_len - 1), src - low

    (r0, r1, wr), (c0, c1, wc) = taps(size[0], maps.shape[1]), taps(size[1], maps.shape[2])
    rows = maps[:, r0] * (1 - wr)[None, :, None, None] + maps[:, r1] * wr[None, :, None, None]
    return rows[:, :, c0] * (1 - wc)[None, None, :, None] + rows[:, :, c1] * wc[None, None, :, None]


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def brute_force_confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    keep = truth != ignore
    return np.bincount(truth[keep].astype(int) * num_classes + pred[keep], minlength=num_classes**2).reshape(num_classes, num_classes)


def band_by_shifts(masks: np.ndarray, width: int, ignore: int = 255) -> np.ndarray:
    """The boundary band of (B, H, W) masks without OpenCV: each window offset compared by shifting the padded masks."""
    batch, height, cols = masks.shape
    padded = np.full((batch, height + 2 * width, cols + 2 * width), ignore, masks.dtype)
    padded[:, width:width + height, width:width + cols] = masks
    band = np.zeros(masks.shape, bool)
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            other = padded[:, dy:dy + height, dx:dx + cols]
            band |= (other != ignore) & (other != masks)
    return band & (masks != ignore)


def boundary_scores(truth: np.ndarray, pred: np.ndarray, num_classes: int, width: int, ignore: int = 255):
    """(mIoU, pixel accuracy) over the band's pixels only, by `band_by_shifts` and `brute_force_iou`."""
    band = band_by_shifts(truth, width, ignore)
    assert 0 < band.sum() < np.sum(truth != ignore)  # a case where the band is neither empty nor everything
    miou = brute_force_iou(np.where(band, truth, ignore), pred, num_classes, ignore)[1]
    return miou, float(np.mean(pred[band] == truth[band]))

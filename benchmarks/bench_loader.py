"""Loader throughput on the real Cityscapes pairs: the prepared cache + `make_loader` against a naive per-epoch decoder.

The naive loader does what the popular notebooks do every epoch: decode each JPEG with cv2, split it, and map
every label pixel to its nearest palette colour with numpy. Both run in this process, one core, side by side;
figures are medians over --repeats. Also measures how fast the synthetic city is written.

    python benchmarks/bench_loader.py [--pairs DIR] [--repeats 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from segkit.data import Augment, load_prepared, make_loader, prepare, write_synthetic
from segkit.data.palette import CITYSCAPES_LABELS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PAIRS = Path(os.environ.get("SEGKIT_SHARED_DATA", REPO.parent / "shared" / "data")) / "cityscapes_pairs" / "train"
TRAIN_STEP_IMAGES_PER_S = 3.5  # ResNet34 U-Net training step on this CPU, 256x256, batch 8


def naive_epoch(files: list[Path], batch_size: int, rng: np.random.Generator) -> int:
    """Decode, split and map colours per pixel for every file, in a shuffled order; returns images served."""
    colors = np.array([l.color for l in CITYSCAPES_LABELS], np.int32)
    train_ids = np.array([l.train_id for l in CITYSCAPES_LABELS], np.uint8)
    order = rng.permutation(len(files))
    served = 0
    for start in range(0, len(order), batch_size):
        xs, ys = [], []
        for i in order[start : start + batch_size]:
            composite = cv2.imread(str(files[i]))[..., ::-1]
            half = composite.shape[1] // 2
            photo, label = composite[:, :half], composite[:, half:].astype(np.int32)
            distances = ((label.reshape(-1, 1, 3) - colors[None]) ** 2).sum(-1)
            ys.append(train_ids[distances.argmin(1)].reshape(label.shape[:2]))
            xs.append(photo.astype(np.float32))
        batch = np.stack(xs), np.stack(ys).astype(np.int32)
        served += len(batch[0])
    return served


def loader_epoch(loader) -> int:
    served = 0
    for i in range(len(loader)):
        x, _ = loader[i]
        served += len(x)
    loader.on_epoch_end()
    return served


def rate(run, repeats: int) -> tuple[float, float]:
    """Median items per wall-clock second and per CPU second of `run()` (which returns its item count).

    On a shared machine the wall-clock rate depends on the other jobs; the CPU-time rate is what one core does.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        items = run()
        wall.append(items / (time.perf_counter() - start_wall))
        cpu.append(items / (time.process_time() - start_cpu))
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS, help="folder of Cityscapes pair JPEGs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--naive-items", type=int, default=160, help="files per naive epoch (it is slow)")
    parser.add_argument("--synth-count", type=int, default=200)
    args = parser.parse_args(argv)
    if not args.pairs.is_dir():
        print(f"no Cityscapes pairs at {args.pairs}; pass --pairs DIR", file=sys.stderr)
        return 2
    files = sorted(args.pairs.glob("*.jpg"))
    cv2.setNumThreads(1)  # one core for both loaders, so the comparison is like for like

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = prepare("cityscapes-pairs", args.pairs, Path(tmp) / "cache")
        prepare_s = time.perf_counter() - start
        dataset = load_prepared(Path(tmp) / "cache")
        loader = make_loader(dataset.images, dataset.masks, np.arange(len(dataset)), args.batch_size,
                             augment=Augment(hflip=0.5, scale=(0.75, 1.25), crop=None, color_jitter=0.2), seed=0)
        plain = make_loader(dataset.images, dataset.masks, np.arange(len(dataset)), args.batch_size, seed=0)
        rng = np.random.default_rng(0)
        naive_files = files[: args.naive_items]
        naive = rate(lambda: naive_epoch(naive_files, args.batch_size, rng), args.repeats)
        augmented = rate(lambda: loader_epoch(loader), args.repeats)
        unaugmented = rate(lambda: loader_epoch(plain), args.repeats)
        synth = rate(lambda: len(write_synthetic(Path(tmp) / "synth", args.synth_count, seed=0)), args.repeats)

    size = "x".join(map(str, manifest["image_size"]))
    print(f"real pairs: {len(files)} files from {args.pairs}; prepared once at {size} in {prepare_s:.1f} s")
    print(f"batch {args.batch_size}, one thread, medians of {args.repeats} epochs; per wall-clock second | per CPU second")
    rows = [
        (f"naive: cv2 decode + nearest colour per pixel ({len(naive_files)} files/epoch)", naive),
        ("make_loader + Augment (flip, scale 0.75-1.25, colour jitter)", augmented),
        ("make_loader, no augmentation", unaugmented),
    ]
    for name, (wall, cpu) in rows:
        print(f"  {name:<66} {wall:8.1f} | {cpu:8.1f} images/s")
    print(f"  augmented loader / naive: {augmented[0] / naive[0]:.1f}x wall, {augmented[1] / naive[1]:.1f}x CPU (target >= 10x)")
    target = 5 * TRAIN_STEP_IMAGES_PER_S
    print(f"  augmented loader / (5 x {TRAIN_STEP_IMAGES_PER_S} = {target:.1f} images/s): {augmented[0] / target:.1f}x wall")
    print(f"synthetic city, writing {args.synth_count} 256x512 JPEGs: {synth[0]:.1f} | {synth[1]:.1f} pairs/s (target >= 100)")
    print("rerun: python benchmarks/bench_loader.py" + ("" if args.pairs == DEFAULT_PAIRS else f" --pairs {args.pairs}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: confusion-matrix accumulation against per-image numpy loops, the boundary band's cost per image,
and MeanIoU's cost in a training epoch.

Run from the repository root:  python benchmarks/bench_metrics.py
(`--quick` for a smoke run, `--only band` for one part; set KERAS_BACKEND=jax to time the epoch part under JAX).
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from segkit.losses import CrossEntropy  # noqa: E402
from segkit.metrics import BOUNDARY_WIDTH, MeanIoU, boundary_band, confusion_matrix  # noqa: E402

CLASSES = 19
IGNORE = 255
PARTS = ("confusion", "band", "epoch")
# Cityscapes-like class frequencies: road, building, vegetation, sky, car dominate; poles, signs, riders are rare.
SHARES = np.array([33, 5.5, 20, 0.6, 0.8, 1.1, 0.2, 0.5, 14, 1, 3.6, 1.1, 0.1, 6.3, 0.3, 0.2, 0.2, 0.1, 0.4])


def street_masks(count, height, width, seed):
    """Blocky label maps with Cityscapes-like class shares, ~8% void, and predictions that are ~85% right."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice(CLASSES, size=(count, height // 16, width // 16), p=SHARES / SHARES.sum())
    truth = coarse.repeat(16, axis=1).repeat(16, axis=2).astype(np.uint8)
    truth[rng.random(truth.shape) < 0.08] = IGNORE
    wrong = rng.random(truth.shape) < 0.15
    pred = np.where(wrong, rng.integers(0, CLASSES, truth.shape), np.where(truth == IGNORE, 0, truth)).astype(np.uint8)
    return truth, pred


def segkit_per_image(truth, pred):
    cm = np.zeros((CLASSES, CLASSES), np.int64)
    for t, p in zip(truth, pred):
        cm += confusion_matrix(t, p, CLASSES)
    return cm


def segkit_batches_of_16(truth, pred):
    cm = np.zeros((CLASSES, CLASSES), np.int64)
    for start in range(0, len(truth), 16):
        cm += confusion_matrix(truth[start : start + 16], pred[start : start + 16], CLASSES)
    return cm


def add_at_per_image(truth, pred):
    cm = np.zeros((CLASSES, CLASSES), np.int64)
    for t, p in zip(truth, pred):
        counted = t != IGNORE
        np.add.at(cm, (t[counted], p[counted]), 1)
    return cm


def nested_class_loops(truth, pred):
    cm = np.zeros((CLASSES, CLASSES), np.int64)
    for t, p in zip(truth, pred):
        for i in range(CLASSES):
            is_i = t == i
            for j in range(CLASSES):
                cm[i, j] += np.count_nonzero(is_i & (p == j))
    return cm


def median_seconds(function, repeats, *args):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_confusion(count, repeats, subset):
    truth, pred = street_masks(count, 256, 512, seed=0)
    print(f"\n## Confusion matrix: {count} masks 256x512, {CLASSES} classes, {np.mean(truth == IGNORE):.1%} void; "
          f"median of {repeats} runs")
    rows = []
    for label, function, masks in [
        ("segkit.metrics.confusion_matrix, per image", segkit_per_image, count),
        ("segkit.metrics.confusion_matrix, batches of 16", segkit_batches_of_16, count),
        ("numpy np.add.at, per image", add_at_per_image, count),
        (f"numpy nested class loops, per image ({subset} masks, x{count // subset})", nested_class_loops, subset),
    ]:
        seconds, cm = median_seconds(function, repeats, truth[:masks], pred[:masks])
        np.testing.assert_array_equal(cm, segkit_per_image(truth[:masks], pred[:masks]))  # all methods agree
        rows.append((label, seconds * count / masks))
    base = rows[0][1]
    print(f"{'method':<70} {f's / {count} masks':>14} {'vs segkit':>10}")
    for label, seconds in rows:
        print(f"{label:<70} {seconds:>14.3f} {seconds / base:>9.1f}x")


def band_by_shifts(mask, width):
    """The boundary band in plain numpy: every offset of the window compared by shifting the padded mask."""
    height, cols = mask.shape
    padded = np.full((height + 2 * width, cols + 2 * width), IGNORE, mask.dtype)
    padded[width:-width, width:-width] = mask
    band = np.zeros(mask.shape, bool)
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            other = padded[dy : dy + height, dx : dx + cols]
            band |= (other != IGNORE) & (other != mask)
    return band & (mask != IGNORE)


def bench_boundary_band(repeats):
    print(f"\n## Boundary band (width {BOUNDARY_WIDTH}, a {2 * BOUNDARY_WIDTH + 1}x{2 * BOUNDARY_WIDTH + 1} window) "
          f"on one mask; median of {repeats} runs")
    print(f"{'size':<10} {'band share':>10} {'boundary_band ms':>17} {'numpy shifts ms':>16} {'confusion_matrix ms':>20}")
    for height, width in [(256, 256), (1024, 2048)]:
        truth, pred = street_masks(1, height, width, seed=3)
        seconds, band = median_seconds(boundary_band, repeats, truth[0])
        shifts, reference = median_seconds(band_by_shifts, repeats, truth[0], BOUNDARY_WIDTH)
        np.testing.assert_array_equal(band, reference)  # both methods agree
        counting, _ = median_seconds(confusion_matrix, repeats, truth[0], pred[0], CLASSES)
        print(f"{f'{height}x{width}':<10} {band.mean():>10.1%} {1000 * seconds:>17.2f} {1000 * shifts:>16.2f} {1000 * counting:>20.2f}")


def small_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((256, 512, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(CLASSES, 1)(x))


def bench_epoch(images, epochs):
    truth, _ = street_masks(images, 256, 512, seed=1)
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, truth.shape + (3,)).astype("float32")
    variants = {
        "no metric": [],
        "segkit MeanIoU(19)": [MeanIoU(CLASSES)],
        "keras.metrics.MeanIoU(19, ignore_class=255)": [
            keras.metrics.MeanIoU(CLASSES, sparse_y_pred=False, ignore_class=IGNORE)
        ],
    }
    models = {}
    for label, metrics in variants.items():
        models[label] = small_model()
        models[label].compile(optimizer="adam", loss=CrossEntropy(CLASSES), metrics=metrics)
        models[label].fit(x, truth, batch_size=8, epochs=1, verbose=0)  # warm-up: traces and compiles
    seconds = {label: [] for label in variants}
    for _ in range(epochs):  # interleaved, so load from other processes hits every variant alike
        for label, model in models.items():
            start = time.perf_counter()
            model.fit(x, truth, batch_size=8, epochs=1, verbose=0)
            seconds[label].append(time.perf_counter() - start)
    print(f"\n## Training epoch: {images} images 256x512, batch 8, 3-conv model, backend {keras.backend.backend()}; "
          f"median of {epochs} interleaved epochs after a warm-up epoch")
    base = statistics.median(seconds["no metric"])
    print(f"{'metric':<50} {'s / epoch':>10} {'overhead':>9}")
    for label, times in seconds.items():
        print(f"{label:<50} {statistics.median(times):>10.3f} {100 * (statistics.median(times) / base - 1):>8.1f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: checks the script works")
    parser.add_argument("--only", choices=PARTS, help="run only this part")
    args = parser.parse_args()
    count, repeats, subset, images, epochs = (40, 1, 4, 8, 1) if args.quick else (500, 3, 20, 32, 5)
    print(f"python {platform.python_version()}, numpy {np.__version__}, keras {keras.__version__}, {platform.machine()}")
    parts = {"confusion": lambda: bench_confusion(count, repeats, subset), "band": lambda: bench_boundary_band(repeats * 7),
             "epoch": lambda: bench_epoch(images, epochs)}
    for name in [args.only] if args.only else PARTS:
        parts[name]()
    flags = (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    print(f"\nrerun: KERAS_BACKEND={keras.backend.backend()} python benchmarks/bench_metrics.py{flags}")


if __name__ == "__main__":
    main()

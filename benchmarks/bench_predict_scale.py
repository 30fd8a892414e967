"""Benchmark: photos larger than the training images, fed whole at the training size (predict's default) or tiled at
their own size (`--window`).

A model trained on the Cityscapes pairs saw 2048x1024 street scenes squeezed to 256x256. This enlarges a run's
held-out pair photos to frames of the scenes' 2:1 shape (512x1024 and 1024x2048; their labels by nearest neighbour),
predicts each both ways with the functions `segkit predict` uses, and prints pixel accuracy and mIoU against the
enlarged labels. Enlarged photos are blurrier than real ones of that size; the objects' scale is what differs.
Then what resizing the classes back to a 4000x3000 photo costs: one class at a time (`evaluate.classes_at`, what
predict does) against all of them in one cv2.resize, alternating, median seconds and peak traced memory.

Run from the repository root, with a run folder trained on the pairs:
    python benchmarks/bench_predict_scale.py RUN --set data.path=../shared/data/cityscapes_pairs_full --set data.split=train
    python benchmarks/bench_predict_scale.py RUN --count 16 --sizes 512x1024 1024x2048 --repeats 5
"""

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segkit import metrics, models  # noqa: E402
from segkit.workflows import config, datasets, evaluate, loading, runs  # noqa: E402


def scores(net, split, num_classes, count, size, window) -> tuple[dict, float]:
    """(metrics.scores of `count` held-out items enlarged to `size`, seconds); tiled at their own size when `window`."""
    trained = loading.fed_size(net, None, None, window)
    cm = np.zeros((num_classes, num_classes), np.int64)
    start = time.perf_counter()
    for index in split.indices[:count]:
        photo = cv2.resize(np.asarray(split.dataset.images[int(index)]), size[::-1], interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(np.asarray(split.dataset.masks[int(index)]), size[::-1], interpolation=cv2.INTER_NEAREST)
        predicted = evaluate.classes_at(net, photo[None], input_size=trained, window=window)[0]
        cm += metrics.confusion_matrix(label, predicted, num_classes)
    return metrics.scores(cm), time.perf_counter() - start


def resize_cost(probs: np.ndarray, size, repeats: int) -> dict:
    """{way: (median seconds, peak traced bytes)} of turning `probs` (h, w, classes) into classes at `size`."""
    ways = {
        "one class at a time (predict)": lambda: evaluate._resized_argmax(probs, size),
        "all classes in one cv2.resize": lambda: cv2.resize(probs, size[::-1], interpolation=cv2.INTER_LINEAR).argmax(-1),
    }
    seconds = {way: [] for way in ways}
    peaks = {}
    for _ in range(repeats):
        for way, call in ways.items():
            tracemalloc.start()
            start = time.perf_counter()
            call()
            seconds[way].append(time.perf_counter() - start)
            peaks[way] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return {way: (statistics.median(seconds[way]), peaks[way]) for way in ways}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder trained on the Cityscapes pairs")
    parser.add_argument("--set", action="append", default=[], help="config override to find the run's data, as in train")
    parser.add_argument("--count", type=int, default=16, help="held-out items to score")
    parser.add_argument("--sizes", nargs="+", default=["512x1024", "1024x2048"], help="enlarged frame sizes, HxW")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the 4000x3000 resize, each way")
    args = parser.parse_args()
    net, run = loading.load_model(args.run)
    data = datasets.training_data(config.load(run.file(runs.CONFIG), args.set))
    trained = loading.trained_size(net, run)
    print(f"{run.path.name}: trained at {trained[0]}x{trained[1]}; {args.count} held-out items")
    print("| photo size | fed | pixel accuracy | mIoU | seconds |\n|---|---|---:|---:|---:|")
    for text in args.sizes:
        size = tuple(int(v) for v in text.split("x"))
        for label, window in (("whole, resized to the training size (default)", None), ("tiled at its own size", trained)):
            result, seconds = scores(net, data.val, data.num_classes, args.count, size, window)
            print(f"| {size[0]}x{size[1]} | {label} | {result['pixel_accuracy']:.3f} | {result['miou']:.3f} | {seconds:.0f} |")
    photo = cv2.resize(np.asarray(data.val.dataset.images[int(data.val.indices[0])]), (4000, 3000))
    probs = models.predict_probabilities(net, cv2.resize(photo, trained[::-1], interpolation=cv2.INTER_AREA))
    print(f"\nclasses of a 4000x3000 photo from {trained[0]}x{trained[1]} probabilities, median of {args.repeats}:")
    print("| resized back | seconds | peak traced memory (MiB) |\n|---|---:|---:|")
    for way, (seconds, peak) in resize_cost(probs, (3000, 4000), args.repeats).items():
        print(f"| {way} | {seconds:.2f} | {peak / 2**20:.0f} |")
    print(f"rerun: python benchmarks/bench_predict_scale.py {args.run} {' '.join('--set ' + s for s in args.set)} "
          f"--count {args.count} --sizes {' '.join(args.sizes)} --repeats {args.repeats}")


if __name__ == "__main__":
    main()

"""Peak memory of sliding-window prediction on one large image (default 1500x2000, 256x256 tiles, 19 classes).

Prints the peak of numpy/Python allocations (tracemalloc), the process's peak RSS, the time, and a SHA-1 of
the probabilities, so two versions of segkit can be compared for memory and for identical results.
Weights come from a fixed seed (no download). Run from the repository root, on one thread:
    OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python benchmarks/bench_window_memory.py
"""

import argparse
import hashlib
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from segkit import models  # noqa: E402
from segkit.models.inference import predict_probabilities  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(1500, 2000), metavar=("H", "W"))
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--classes", type=int, default=19)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = models.build("unet", encoder=args.encoder, num_classes=args.classes, input_shape=(None, None, 3))
    image = np.random.default_rng(0).integers(0, 256, (*args.size, 3), dtype=np.uint8)
    window = (args.window, args.window)
    predict_probabilities(model, image[: args.window, : args.window], window=window)  # build the predict step outside the measurement

    tracemalloc.start()
    start = time.perf_counter()
    probs = predict_probabilities(model, image, window=window)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(f"image {args.size[0]}x{args.size[1]}, tiles {window}, unet-{args.encoder}, {args.classes} classes")
    print(f"result {probs.nbytes / 2**20:.0f} MiB; peak numpy/Python allocations {peak / 2**20:.0f} MiB; "
          f"peak RSS {rss / 2**20:.0f} MiB; {seconds:.1f} s")
    print(f"sha1 of the probabilities {hashlib.sha1(probs.tobytes()).hexdigest()}")


if __name__ == "__main__":
    main()

"""Benchmark: what the TensorBoard validation pictures and per-class IoU cost, as a share of a training epoch.

Trains a shipped config (default: Fast-SCNN on the real Cityscapes pairs at 256x256, the CPU config) for two epochs
with `segkit.train`, timing each epoch (training steps and validation, as history.csv's `seconds`) and each call
of the callback that writes the pictures and the per-class IoU (`ValidationSummaries.on_epoch_end`). The second
epoch is the steady state: the first includes tracing and compilation on both sides.

Run from the repository root (reads ../shared/data):
    python benchmarks/bench_tensorboard.py
    python benchmarks/bench_tensorboard.py --steps 100    # shorter epochs: an upper bound on the share
"""

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import segkit  # noqa: E402
from segkit.workflows import tensorboard  # noqa: E402

CONFIG = "fastscnn_cityscapes-pairs_256x256_cpu-35min"
DATA = "../shared/data/cityscapes_pairs_full/train"  # the 2,975 real training pairs; the config holds out 300


def timed_callback(seconds: list):
    """Wraps ValidationSummaries.on_epoch_end so each call's wall time lands in `seconds`."""
    write = tensorboard.ValidationSummaries.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        write(self, epoch, logs)
        seconds.append(time.perf_counter() - start)

    tensorboard.ValidationSummaries.on_epoch_end = on_epoch_end


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--steps", type=int, default=None, help="training steps per epoch (default: the full epoch)")
    parser.add_argument("--data", default=DATA, help="the Cityscapes pairs folder (data.path)")
    parser.add_argument("--cache", default="data/prepared", help="where the raw dataset is prepared (data.cache)")
    args = parser.parse_args()

    callback_seconds = []
    timed_callback(callback_seconds)
    overrides = {"train.epochs": 2, "train.max_minutes": None, "optimizer.span": "epochs", "data.cache": args.cache,
                 "data.path": args.data, "data.split": None,
                 "train.steps_per_epoch": args.steps}
    with tempfile.TemporaryDirectory() as runs_dir:
        run = segkit.train(args.config, overrides=overrides, runs_dir=runs_dir, verbose=0)
        history = run.state["history"]

    print(f"\nconfig {args.config}, {tensorboard.PICTURES} pictures per epoch; {platform.processor() or platform.machine()}")
    print(f"{'epoch':>5} {'steps':>6} {'epoch s':>9} {'callback s':>11} {'share':>7}")
    for row, spent in zip(history, callback_seconds):
        print(f"{row['epoch']:>5} {row['steps']:>6} {row['seconds']:>9.1f} {spent:>11.3f} {100 * spent / row['seconds']:>6.2f}%")
    command = " ".join(["python benchmarks/bench_tensorboard.py", *sys.argv[1:]])
    print(f"rerun: {command}")


if __name__ == "__main__":
    main()

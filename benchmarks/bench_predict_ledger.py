"""Benchmark: what `segkit predict`'s ledger costs over a large folder, recorded per image against per block.

The ledger (the hidden JSON naming every file predict wrote, with its SHA-256) is rewritten whole whenever it records
files. Recorded once per image, N images cost time and bytes quadratic in N; predict records a block of
`predict.BLOCK_IMAGES` images at a time. This writes N images' two outputs (1 kB each, so the ledger dominates) through
`files.Ledger.write` both ways, side by side, and prints the median time and the bytes the ledger wrote.

Run from the repository root:
    python benchmarks/bench_predict_ledger.py
    python benchmarks/bench_predict_ledger.py --images 2000 10000 --repeats 3
"""

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segkit import files  # noqa: E402
from segkit.workflows import predict  # noqa: E402

PAYLOAD = b"\x89PNG" + bytes(1020)


def write_all(folder: Path, images: int, block: int) -> tuple[float, int]:
    """Seconds and ledger bytes written to record `images` images' outputs `block` images at a time."""
    ledger = files.Ledger(folder, predict.LEDGER, "segkit_predict")
    ledger_bytes = 0
    start = time.perf_counter()
    for first in range(0, images, block):
        names = [f"{i}_{kind}.png" for i in range(first, min(first + block, images)) for kind in predict.OUTPUT_KINDS]
        ledger.write({name: PAYLOAD for name in names})
        ledger_bytes += ledger.path.stat().st_size
    return time.perf_counter() - start, ledger_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}; median of {args.repeats}, the two ways alternating")
    print(f"{'images':>7} {'per image s':>12} {'ledger MB':>10} {f'per {predict.BLOCK_IMAGES} s':>9} "
          f"{'ledger MB':>10} {'ratio':>6}")
    for images in args.images:
        timings = {1: [], predict.BLOCK_IMAGES: []}
        written = {}
        for _ in range(args.repeats):
            for block in timings:
                with tempfile.TemporaryDirectory() as folder:
                    seconds, written[block] = write_all(Path(folder), images, block)
                timings[block].append(seconds)
        single, blocked = (statistics.median(timings[b]) for b in timings)
        print(f"{images:>7} {single:>12.2f} {written[1] / 1e6:>10.1f} {blocked:>9.2f} "
              f"{written[predict.BLOCK_IMAGES] / 1e6:>10.1f} {single / blocked:>5.0f}x")
    print("\nrerun: python benchmarks/bench_predict_ledger.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

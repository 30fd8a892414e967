"""Disk a run folder's model files take: best.keras with the optimizer state (as segkit saved it before) and without.

A run keeps two model files: the resume checkpoint last-NNNN.keras (weights + optimizer state, which resume
needs) and best.keras (what evaluate, predict, compare and export load). The model of CONFIG is built, compiled
with its optimizer and trained one step on random images (so the optimizer holds real, non-zero moments), then
saved both ways, as training saves them. Prints the file sizes and the disk of the two model files per run.

    python benchmarks/bench_checkpoint_size.py [--config unet-r34_synthetic_128x128] [--classes 19]
"""

import argparse
import tempfile
from pathlib import Path

import keras
import numpy as np

from segkit import losses
from segkit.workflows import config as config_lib
from segkit.workflows import optim
from segkit.workflows import train as train_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="unet-r34_synthetic_128x128")
    parser.add_argument("--classes", type=int, default=19)
    args = parser.parse_args()
    cfg = config_lib.load(args.config)
    size = tuple(cfg["data"]["size"])
    model = train_module.build_model(cfg, args.classes, size)
    model.compile(optim.build(cfg["optimizer"], total_steps=100), loss=losses.get("ce", num_classes=args.classes))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, *size, 3)).astype("float32")
    masks = rng.integers(0, args.classes, (2, *size)).astype("int32")
    model.train_on_batch(images, masks)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, inference = Path(folder) / "last-0001.keras", Path(folder) / "best.keras"
        model.save(checkpoint)
        train_module.inference_model(model).save(inference)
        full, small = checkpoint.stat().st_size / 1e6, inference.stat().st_size / 1e6
    weights = model.count_params()
    moments = sum(int(np.prod(v.shape)) for v in model.optimizer.variables)
    print(f"{args.config}: {weights / 1e6:.1f} M weights, {moments / 1e6:.1f} M optimizer values ({cfg['optimizer']['name']})")
    print(f"last-NNNN.keras (weights + optimizer, for resume): {full:.1f} MB")
    print(f"best.keras before (weights + optimizer):            {full:.1f} MB")
    print(f"best.keras now (inference model only):              {small:.1f} MB")
    print(f"model files per run: {2 * full:.1f} MB before, {full + small:.1f} MB now ({1 - (full + small) / (2 * full):.0%} less)")
    print(f"command: python benchmarks/bench_checkpoint_size.py --config {args.config} --classes {args.classes}")


if __name__ == "__main__":
    main()

"""What TensorFlow's fused batch-norm kernel saves in a training step (segkit.workflows.fused_batchnorm, which
`segkit train` applies under TensorFlow) against Keras 3's own BatchNormalization, side by side in one process: each
model is built twice with the same weights, one copy switched to the fused kernel, and their steps alternate so
machine load hits both alike. Shapes of the CPU recipes: Fast-SCNN 8 x 256x256 with OHEM, U-Net-R34 and PSPNet-R18
8 x 128x128 with cross-entropy, 19 classes, AdamW, float32. Both cores (the recipes' conditions), or pin one:
    python benchmarks/bench_batchnorm.py
    taskset -c 0 env OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python benchmarks/bench_batchnorm.py
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from bench_models import WARMUP, alternating_medians, random_batch  # noqa: E402

from segkit import losses  # noqa: E402
from segkit.models import batchnorm, build  # noqa: E402
from segkit.workflows.fused_batchnorm import use_fused_kernel  # noqa: E402

CLASSES, BATCH = 19, 8
# (model, encoder, size, loss) of the CPU configs.
RECIPES = (("fastscnn", None, 256, "ohem"), ("unet", "resnet34", 128, "ce"), ("pspnet", "resnet18", 128, "ce"))


def compiled(name, encoder, size, loss, weights=None):
    model = build(name, encoder, num_classes=CLASSES, input_shape=(size, size, 3))
    if weights is not None:
        model.set_weights(weights)
    model.compile(keras.optimizers.AdamW(2e-3, weight_decay=1e-4), losses.get(loss, num_classes=CLASSES), jit_compile=False)
    return model


def step_medians(name, encoder, size, loss, rounds):
    images, masks = random_batch(BATCH, size, CLASSES)
    keras_bn = compiled(name, encoder, size, loss)
    fused = compiled(name, encoder, size, loss, keras_bn.get_weights())
    switched = use_fused_kernel(fused)
    calls = {"Keras": lambda: keras_bn.train_on_batch(images, masks), "fused": lambda: fused.train_on_batch(images, masks)}
    return alternating_medians(calls, rounds), switched, len(batchnorm.batchnorm_layers(fused))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed training steps per model and variant")
    args = parser.parse_args()
    print(f"{len(os.sched_getaffinity(0))} CPU core(s), keras {keras.__version__}, batch {BATCH}, {CLASSES} classes, "
          f"median of {args.rounds} alternating training steps after {WARMUP} warm-up")
    print("| model | input | BatchNorm layers (fused) | Keras BatchNorm | fused kernel | speed-up |\n|---|---|---:|---:|---:|---:|")
    for name, encoder, size, loss in RECIPES:
        medians, switched, total = step_medians(name, encoder, size, loss, args.rounds)
        label = name if encoder is None else f"{name}-{encoder}"
        print(f"| {label} | {BATCH} x {size}x{size} | {total} ({switched}) | {medians['Keras'] * 1000:.0f} ms | "
              f"{medians['fused'] * 1000:.0f} ms | **{medians['Keras'] / medians['fused']:.2f}x** |", flush=True)
    print("\nrerun: python benchmarks/bench_batchnorm.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

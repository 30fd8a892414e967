"""Training step of the CPU recipes' models in float32 against mixed bfloat16 (train.mixed_precision: bfloat16),
on this CPU, TensorFlow backend, side by side in one process: each model is built twice (the dtype policy is taken
when a layer is made), then the two copies alternate step by step so machine load hits both alike.

Models and shapes of the CPU configs: U-Net-R34 and PSPNet-R18 at 8 x 128x128, Fast-SCNN at 16 x 256x256 (the batch
of its first CPU recipe; it now trains batch 8), 19 classes, AdamW, sparse cross-entropy on logits. bfloat16 pays off only where the CPU computes it natively
(AVX512-BF16 or AMX); elsewhere oneDNN emulates it. Pin it to one core for the one-core recipes:
    taskset -c 0 env OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python benchmarks/bench_mixed_precision.py
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

from segkit.models import build  # noqa: E402
from segkit.models import label as model_label  # noqa: E402
from segkit.workflows.distribution import cpu_has_bfloat16  # noqa: E402

CLASSES = 19
# (model, encoder, batch, size) of the CPU configs (Fast-SCNN: its first recipe's batch).
RECIPES = (("unet", "resnet34", 8, 128), ("pspnet", "resnet18", 8, 128), ("fastscnn", None, 16, 256))
POLICIES = ("float32", "mixed_bfloat16")


def compiled(name, encoder, size, policy):
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = build(name, encoder, num_classes=CLASSES, input_shape=(size, size, 3))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    # No XLA: on this CPU it made the bfloat16 U-Net step slower (and Fast-SCNN's bfloat16 gradient does not compile).
    model.compile(keras.optimizers.AdamW(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    return model


def step_medians(name, encoder, batch, size, rounds):
    images, masks = random_batch(batch, size, CLASSES)
    models = {policy: compiled(name, encoder, size, policy) for policy in POLICIES}
    calls = {policy: (lambda m=model: m.train_on_batch(images, masks)) for policy, model in models.items()}
    return alternating_medians(calls, rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed training steps per model and policy")
    args = parser.parse_args()
    native = "yes" if cpu_has_bfloat16() else "no (emulated)"
    print(f"{len(os.sched_getaffinity(0))} CPU core(s) to run on, native bfloat16: {native}, keras {keras.__version__}, {CLASSES} classes")
    print(f"training step, median of {args.rounds} alternating steps after {WARMUP} warm-up")
    print(f"  {'model':20s} {'batch':>10s} {'float32 ms':>11s} {'bfloat16 ms':>12s} {'speed-up':>9s}")
    for name, encoder, batch, size in RECIPES:
        medians = step_medians(name, encoder, batch, size, args.rounds)
        label = model_label(name, encoder)
        print(f"  {label:20s} {batch:>3d}x{size}x{size} {medians['float32'] * 1000:11.0f} "
              f"{medians['mixed_bfloat16'] * 1000:12.0f} {medians['float32'] / medians['mixed_bfloat16']:8.2f}x", flush=True)
    print("\nrerun: python benchmarks/bench_mixed_precision.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

"""What each loss, and XLA, costs in a Fast-SCNN training step (the CPU recipe's shape: 8 x 256x256, 19 classes,
AdamW, BatchNorm on TensorFlow's fused kernel), TensorFlow backend, side by side in one process: one model per
variant, their steps alternating so machine load hits all alike. From scratch every pixel's true-class probability
(about 1/19) is below OHEM's threshold (0.7), so the threshold decides and "ohem" looks for no k-th pixel. Late in
training fewer than min_kept x batch pixels are below it and min_kept decides: "ohem, min_kept decides" sets the
threshold to 0.01, under every pixel, so every step finds the batch's (min_kept x batch)-th smallest of 524,288
probabilities, by the counting search segkit uses; "..., sorting" finds it by sorting them all, as OHEM did before.
The "XLA" rows compile the step with jit_compile=True (train.jit_compile: true; "auto", the default, means no XLA
on a CPU-only machine). --label-stride 4 times the step as the recipe trains it (train.label_stride: 4: logits
upsampled to 64x64, masks sampled there, min_kept divided by 16), where Lovasz-softmax's per-class sort of every
pixel is the cost that its binned form (loss.lovasz_bins) avoids. Run with both cores (the goal conditions) or pin one:
    python benchmarks/bench_losses.py [--label-stride 4]
    taskset -c 0 env OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python benchmarks/bench_losses.py
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
from segkit.models import build, strided_logits, subsample_masks  # noqa: E402
from segkit.workflows import config  # noqa: E402
from segkit.workflows.fused_batchnorm import use_fused_kernel  # noqa: E402

CLASSES, BATCH, SIZE, LOVASZ_BINS = 19, 8, 256, 8192
MIN_KEPT = config.load("fastscnn_cityscapes-pairs_256x256_cpu-35min")["loss"]["ohem_min_kept"]  # per image, as the recipe


class SortingOhem(losses.OhemCrossEntropy):
    """OHEM finding the k-th smallest probability by sorting every pixel's, as segkit's OHEM did before it counted."""

    @staticmethod
    def _kth_pixel(flat, kth):
        return keras.ops.take(keras.ops.sort(flat), kth)


VARIANTS = {  # label -> (loss name or class, OHEM's threshold, XLA, Lovasz bins)
    "ce": ("ce", 0.7, False, None),
    "ohem": ("ohem", 0.7, False, None),
    "ohem, min_kept decides": ("ohem", 0.01, False, None),
    "..., sorting": (SortingOhem, 0.01, False, None),
    "ce+lovasz": ("ce+lovasz", 0.7, False, None),
    "ohem+dice": ("ohem+dice", 0.7, False, None),
    "ohem+lovasz": ("ohem+lovasz", 0.7, False, None),
    "..., binned": ("ohem+lovasz", 0.7, False, LOVASZ_BINS),
    "ce, XLA": ("ce", 0.7, True, None),
    "ohem, XLA": ("ohem", 0.7, True, None),
}


def compiled(name, threshold, jit, bins, stride):
    model = build("fastscnn", None, num_classes=CLASSES, input_shape=(SIZE, SIZE, 3))
    use_fused_kernel(model)
    trainer = strided_logits(model, stride)
    min_kept = MIN_KEPT // stride**2
    loss = (losses.get(name, num_classes=CLASSES, ohem_threshold=threshold, ohem_min_kept=min_kept, lovasz_bins=bins)
            if isinstance(name, str) else name(CLASSES, threshold=threshold, min_kept=min_kept))
    trainer.compile(keras.optimizers.AdamW(2e-3, weight_decay=1e-4), loss, jit_compile=jit)
    return trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed training steps per variant")
    parser.add_argument("--label-stride", type=int, default=1, help="train.label_stride of the step (the recipe's: 4)")
    args = parser.parse_args()
    images, masks = random_batch(BATCH, SIZE, CLASSES)
    masks = subsample_masks(masks, args.label_stride)
    models = {label: compiled(*spec, args.label_stride) for label, spec in VARIANTS.items()}
    calls = {label: (lambda m=model: m.train_on_batch(images, masks)) for label, model in models.items()}
    medians = alternating_medians(calls, args.rounds)
    print(f"{len(os.sched_getaffinity(0))} CPU core(s), keras {keras.__version__}; Fast-SCNN train step, "
          f"{BATCH}x{SIZE}x{SIZE}, label stride {args.label_stride}, median of {args.rounds} alternating steps after {WARMUP} warm-up")
    for label, seconds in medians.items():
        print(f"  {label:22s} {seconds * 1000:7.0f} ms  {seconds / medians['ce']:5.2f}x ce")
    print("\nrerun: python benchmarks/bench_losses.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

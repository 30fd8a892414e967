"""What `train.label_stride` saves in the Fast-SCNN CPU recipe's training step (8 x 256x256, 19 classes, AdamW,
OHEM cross-entropy, the MeanIoU training metric, BatchNorm on TensorFlow's fused kernel), TensorFlow backend: one
model per stride, their steps alternating so machine load hits all alike. Stride k upsamples the logits to 1/k of
the input (`segkit.models.strided_logits`), scores the masks' every k-th pixel (`subsample_masks`) and divides
OHEM's min_kept by k^2, as training does. Run with both cores (the recipe's conditions):
    python benchmarks/bench_label_stride.py
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

from segkit import losses, metrics  # noqa: E402
from segkit.models import build, strided_logits, subsample_masks  # noqa: E402
from segkit.workflows.fused_batchnorm import use_fused_kernel  # noqa: E402

CLASSES, BATCH, SIZE, MIN_KEPT = 19, 8, 256, 10000
STRIDES = (1, 2, 4)


def compiled(stride):
    model = build("fastscnn", None, num_classes=CLASSES, input_shape=(SIZE, SIZE, 3))
    use_fused_kernel(model)
    trainer = strided_logits(model, stride)
    trainer.compile(keras.optimizers.AdamW(4e-3, weight_decay=1e-4),
                    losses.get("ohem", num_classes=CLASSES, ohem_min_kept=MIN_KEPT // stride**2),
                    metrics=[metrics.MeanIoU(CLASSES)])
    return trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="timed training steps per stride")
    args = parser.parse_args()
    images, masks = random_batch(BATCH, SIZE, CLASSES)
    calls = {}
    for stride in STRIDES:
        trainer, strided_masks = compiled(stride), subsample_masks(masks, stride)
        calls[stride] = lambda m=trainer, y=strided_masks: m.train_on_batch(images, y)
    medians = alternating_medians(calls, args.rounds)
    print(f"{len(os.sched_getaffinity(0))} CPU core(s), keras {keras.__version__}; Fast-SCNN train step with OHEM and "
          f"MeanIoU, {BATCH}x{SIZE}x{SIZE}, median of {args.rounds} alternating steps after {WARMUP} warm-up")
    for stride, seconds in medians.items():
        side = SIZE // stride
        print(f"  label_stride {stride} (logits {side}x{side})  {seconds * 1000:6.0f} ms  "
              f"{medians[1] / seconds:5.2f}x faster than stride 1")
    print("\nrerun: python benchmarks/bench_label_stride.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

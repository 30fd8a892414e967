"""What the loss's and the training metric's formulations cost in Fast-SCNN's CPU training step, as `segkit train`
runs it (8 x 256x256, 19 classes, AdamW, OHEM cross-entropy, the MeanIoU metric, BatchNorm on TensorFlow's fused
kernel), side by side in one process: one model per variant, same weights, their steps alternating so machine load
hits all alike. Variants:
  segkit          the loss gathers each pixel's true-class log-probability; MeanIoU takes top_k(k=1) as the argmax
  one-hot loss    the loss as a one-hot tensor times log_softmax, summed over the classes (its earlier formulation)
  ops.argmax      MeanIoU with keras.ops.argmax (its earlier formulation)
  no metric       no training metric at all: what MeanIoU costs in all
  batches of 4    segkit's step on two batches of 4 (the same 8 images): what halving the batch costs an image
Both cores (the recipe's conditions), or pin one:
    python benchmarks/bench_train_step.py
    taskset -c 0 env OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python benchmarks/bench_train_step.py
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
from keras import ops  # noqa: E402

from segkit import losses, metrics  # noqa: E402
from segkit.models import build  # noqa: E402
from segkit.workflows.fused_batchnorm import use_fused_kernel  # noqa: E402

CLASSES, BATCH, SIZE = 19, 8, 256


class OneHotOhem(losses.OhemCrossEntropy):
    """OHEM with the true class picked by a one-hot product, as segkit's losses did before they gathered it."""

    def _batch_loss(self, y_true, y_pred):
        one_hot, valid, y_pred = self._prepare(y_true, y_pred)
        log_p_true = ops.sum(one_hot * ops.log_softmax(y_pred, axis=-1), axis=-1)
        kept = self._hard_pixels(ops.stop_gradient(ops.exp(log_p_true)), valid)
        return self._weighted_pixel_mean(ops.sum(one_hot, axis=-1) * kept, -log_p_true)


class ArgmaxMeanIoU(metrics.MeanIoU):
    """MeanIoU counting keras.ops.argmax's ids, as it did before it took top_k."""

    @staticmethod
    def _predicted_class(scores):
        return ops.cast(ops.argmax(scores, axis=-1), "int32")


VARIANTS = {  # label -> (loss class, metric class or None)
    "segkit": (losses.OhemCrossEntropy, metrics.MeanIoU),
    "one-hot loss": (OneHotOhem, metrics.MeanIoU),
    "ops.argmax": (losses.OhemCrossEntropy, ArgmaxMeanIoU),
    "no metric": (losses.OhemCrossEntropy, None),
    "batches of 4": (losses.OhemCrossEntropy, metrics.MeanIoU),
}


def compiled(loss, metric, weights=None):
    model = build("fastscnn", None, num_classes=CLASSES, input_shape=(SIZE, SIZE, 3))
    if weights is not None:
        model.set_weights(weights)
    use_fused_kernel(model)
    model.compile(keras.optimizers.AdamW(4e-3, weight_decay=1e-4), loss(CLASSES),
                  metrics=[] if metric is None else [metric(CLASSES)], jit_compile=False)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="timed training steps per variant")
    args = parser.parse_args()
    images, masks = random_batch(BATCH, SIZE, CLASSES)
    first = compiled(*VARIANTS["segkit"])
    models = {label: compiled(*spec, first.get_weights()) for label, spec in VARIANTS.items() if label != "segkit"}
    models = {"segkit": first, **models}
    calls = {label: (lambda m=model: m.train_on_batch(images, masks)) for label, model in models.items()}
    half = BATCH // 2
    calls["batches of 4"] = lambda m=models["batches of 4"]: (m.train_on_batch(images[:half], masks[:half]),
                                                             m.train_on_batch(images[half:], masks[half:]))
    medians = alternating_medians(calls, args.rounds)
    print(f"{len(os.sched_getaffinity(0))} CPU core(s), keras {keras.__version__}; Fast-SCNN train step, "
          f"{BATCH}x{SIZE}x{SIZE}, median of {args.rounds} alternating steps after {WARMUP} warm-up")
    for label, seconds in medians.items():
        print(f"  {label:13s} {seconds * 1000:6.0f} ms for {BATCH} images  {seconds / medians['segkit']:5.2f}x segkit")
    print("\nrerun: python benchmarks/bench_train_step.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

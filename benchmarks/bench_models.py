"""Models side by side on this CPU (TensorFlow backend): training step of segkit's ResNet34 U-Net
against segmentation_models' Unet('resnet34'), inference latency per 256x512 image, params and GFLOPs.

Training: same batch (8 x 256x256, 20 classes), Adam and sparse cross-entropy on logits for both;
warm-up steps first, then the two models alternate step by step so machine load hits both alike.
Target: segkit / reference <= 1.05. Inference: one image per call, models alternating, medians.
Run from the repository root:  python benchmarks/bench_models.py [--rounds 5] [--infer-rounds 7]
The light models (Fast-SCNN, U-Net and DeepLabV3+ on ResNet18 and MobileNetV3), inference only:
    python benchmarks/bench_models.py --light --size 256 256
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["SM_FRAMEWORK"] = "tf.keras"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import segmentation_models as sm  # noqa: E402

from segkit.models import build, model_stats  # noqa: E402
from segkit.models import label as model_label  # noqa: E402

CLASSES = 20
TRAIN_SHAPE = (256, 256, 3)
INFER_SHAPE = (256, 512, 3)
WARMUP = 2
# (model, encoder) of --light; None: the model's own encoder.
LIGHT_MODELS = (
    ("fastscnn", None),
    ("unet", "resnet18"),
    ("unet", "mobilenetv3_large"),
    ("unet", "mobilenetv3_small"),
    ("deeplabv3plus", "resnet18"),
    ("deeplabv3plus", "mobilenetv3_large"),
    ("deeplabv3plus", "mobilenetv3_small"),
)


def reference_unet(input_shape):
    return sm.Unet("resnet34", classes=CLASSES, activation="linear", encoder_weights=None, input_shape=input_shape)


def segkit_model(name, input_shape, encoder="resnet34"):
    return build(name, encoder, num_classes=CLASSES, input_shape=input_shape)


def seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def alternating_medians(calls, rounds):
    """Median seconds per call of each named callable, after warm-up, calls interleaved round by round."""
    for call in calls.values():
        for _ in range(WARMUP):
            call()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(seconds(call))
    return {name: statistics.median(values) for name, values in times.items()}


def random_batch(batch, size, classes):
    """A seeded training batch for step timings: float32 RGB 0..255 images (batch, size, size, 3) and masks of
    `classes` ids (batch, size, size)."""
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"), rng.integers(0, classes, (batch, size, size))


def training_steps(batch, rounds):
    images, masks = random_batch(batch, TRAIN_SHAPE[0], CLASSES)
    models = {"segkit unet": segkit_model("unet", TRAIN_SHAPE), "sm.Unet": reference_unet(TRAIN_SHAPE)}
    for model in models.values():
        model.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    calls = {name: (lambda m=model: m.train_on_batch(images, masks)) for name, model in models.items()}
    return alternating_medians(calls, rounds)


def inference(rounds, shape, light):
    image = np.random.default_rng(1).uniform(0, 255, (1, *shape)).astype("float32")
    if light:
        models = {model_label(name, encoder): segkit_model(name, shape, encoder) for name, encoder in LIGHT_MODELS}
    else:
        models = {model_label(name): segkit_model(name, shape) for name in ("unet", "pspnet", "deeplabv3plus")}
        models["sm.Unet"] = reference_unet(shape)
    calls = {name: (lambda m=model: m.predict_on_batch(image)) for name, model in models.items()}
    medians = alternating_medians(calls, rounds)
    return {name: (medians[name], model_stats(model)) for name, model in models.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--infer-rounds", type=int, default=7, help="timed inference calls per model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=INFER_SHAPE[:2], metavar=("H", "W"), help="inference size")
    parser.add_argument("--light", action="store_true", help="only the light models' inference table (no training)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores, keras {keras.__version__} / {keras.backend.backend()}, {CLASSES} classes")

    if not args.light:
        train = training_steps(args.batch, args.rounds)
        print(f"\ntraining step, batch {args.batch} x {TRAIN_SHAPE[0]}x{TRAIN_SHAPE[1]}, Adam + sparse CE, "
              f"median of {args.rounds} alternating steps after {WARMUP} warm-up:")
        for name, median in train.items():
            print(f"  {name:14s} {median * 1000:8.0f} ms")
        print(f"  ratio segkit / reference: {train['segkit unet'] / train['sm.Unet']:.3f}  (target <= 1.05)")

    shape = (*args.size, 3)
    print(f"\ninference, 1 image {shape[0]}x{shape[1]}, median of {args.infer_rounds} alternating calls; "
          "params and GFLOPs (1 multiply-add = 2 FLOPs) at that size:")
    print(f"  {'model':32s} {'latency ms':>10s} {'params':>12s} {'GFLOPs':>8s}")
    for name, (median, stats) in inference(args.infer_rounds, shape, args.light).items():
        print(f"  {name:32s} {median * 1000:10.1f} {stats['params']:12,d} {stats['gflops']:8.2f}")
    print("\nrerun: python benchmarks/bench_models.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

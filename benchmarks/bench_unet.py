"""Training-step time of segkit's ResNet34 U-Net against segmentation_models' Unet('resnet34'), side by side.

Same batch (8 x 256x256 x 3, 20 classes), same optimizer and loss, TensorFlow backend; the two
models alternate step by step so machine load hits both alike. Target: segkit / reference <= 1.05.
Run from the repository root:  python benchmarks/bench_unet.py [--rounds 7] [--batch 8] [--size 256]
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

from segkit.models import build  # noqa: E402

CLASSES = 20


def compiled(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def step_seconds(model, images, masks):
    start = time.perf_counter()
    model.train_on_batch(images, masks)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    shape = (args.size, args.size, 3)
    models = {
        "segkit": compiled(build("unet", "resnet34", num_classes=CLASSES, input_shape=shape)),
        "reference": compiled(
            sm.Unet("resnet34", classes=CLASSES, activation="linear", encoder_weights=None, input_shape=shape)
        ),
    }
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch, *shape)).astype("float32")
    masks = rng.integers(0, CLASSES, (args.batch, *shape[:2]))
    for model in models.values():  # compile the train function and warm the caches
        for _ in range(2):
            step_seconds(model, images, masks)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(step_seconds(model, images, masks))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{os.cpu_count()} CPU cores; training step, batch {args.batch} x {args.size}x{args.size}, {CLASSES} classes, "
          f"median of {args.rounds} alternating steps, keras {keras.__version__} / {keras.backend.backend()}")
    for name, model in models.items():
        print(f"  {name:9s} {medians[name] * 1000:8.0f} ms   params {model.count_params():,}")
    print(f"  ratio segkit / reference: {medians['segkit'] / medians['reference']:.3f}  (target <= 1.05)")
    print("rerun: python benchmarks/bench_unet.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

"""Video end to end on this CPU: frames per second of decode, predict, overlay and encode at 256x512, per model,
with each stage's share of the time (what `segkit predict MODEL clip.mp4` spends its time on).

The clip is CamVid's frames (../shared/data/camvid11_large, train and val in name order: drives filmed at 1 frame
a second), centre-cropped to 2:1 and resized to 256x512, encoded once as MPEG-4 at 30 fps and looped to --frames;
or --clip VIDEO. The models are randomly initialised, built through segkit.models at the clip's size: speed does not
depend on the weights. Each round runs every model once, alternating, so machine load hits them alike; the figures
are medians over the rounds. "fps" leaves out compiling the model's function (once per video, its own stage); "call
fps" includes it, for this clip's length.
Run from the repository root:  python benchmarks/bench_video.py [--frames 300] [--rounds 3] [--batch-sizes 4]
[--models fastscnn unet-resnet34]
The predict step alone, segkit's way against the alternatives:  python benchmarks/bench_video.py --predict-choices
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from segkit import models  # noqa: E402
from segkit.data.palette import TRAIN_CLASS_COLORS  # noqa: E402
from segkit.workflows import video  # noqa: E402

SIZE = (256, 512)
CLIP_FPS = 30
CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid11_large"
MODELS = (("fastscnn", None), ("unet", "resnet34"))
SPEED_STAGES = ("decode", "predict", "overlay", "encode")
REPEATS = 5  # calls timed together in --predict-choices


def camvid_clip(path: Path, frames: int) -> Path:
    """CamVid's train and val photos in name order, cropped to 2:1, resized to SIZE, looped to `frames`."""
    photos = sorted([*(CAMVID / "train").glob("*.png"), *(CAMVID / "val").glob("*.png")], key=lambda p: p.name)
    if not photos:
        sys.exit(f"no CamVid frames in {CAMVID}; give --clip VIDEO")
    return video.write_video((_cropped(photos[index % len(photos)]) for index in range(frames)), path, fps=CLIP_FPS)


def _cropped(photo: Path) -> np.ndarray:
    frame = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    height, width = frame.shape[:2]
    crop = frame[(height - width // 2) // 2 :][: width // 2]
    return cv2.resize(crop, SIZE[::-1], interpolation=cv2.INTER_AREA)


def run_once(model, clip: Path, batch_size: int, folder: Path) -> dict:
    return video.overlay_video(model, clip, folder / "overlay.mp4", colors=TRAIN_CLASS_COLORS, batch_size=batch_size)


def summary(name: str, batch_size: int, runs: list[dict]) -> str:
    frames = runs[0]["frames"]
    steady = [r["seconds"] - r["stages"]["compile"] for r in runs]
    fps = statistics.median(frames / s for s in steady)
    call_fps = statistics.median(frames / r["seconds"] for r in runs)
    compile_s = statistics.median(r["stages"]["compile"] for r in runs)
    shares = {stage: statistics.median(r["stages"][stage] / s for r, s in zip(runs, steady)) for stage in SPEED_STAGES}
    per_frame = {stage: statistics.median(r["stages"][stage] / frames * 1000 for r in runs) for stage in SPEED_STAGES}
    cells = " | ".join(f"{shares[stage]:.0%} ({per_frame[stage]:.1f} ms)" for stage in SPEED_STAGES)
    return f"| {name} | {batch_size} | {fps:.1f} | {call_fps:.1f} | {compile_s:.1f} s | {cells} |"


def predict_choices(batch_size: int, rounds: int) -> None:
    """Milliseconds a frame of Fast-SCNN's predict step alone, done the ways one could: how segkit does it, and the
    alternatives it was measured against."""
    import keras

    net = models.build("fastscnn", num_classes=len(TRAIN_CLASS_COLORS), input_shape=(*SIZE, 3))
    frames = np.random.default_rng(0).integers(0, 256, (batch_size, *SIZE, 3), dtype=np.uint8)
    inputs = keras.Input((*SIZE, 3), dtype="uint8")
    xla = keras.Model(inputs, keras.ops.argmax(net(keras.ops.cast(inputs, "float32")), axis=-1))
    xla.compile(jit_compile=True)
    choices = {
        "segkit: uint8 in, argmax in the compiled function": video._frame_classifier(net, SIZE, batch_size),
        "float32 logits back, argmax in numpy": lambda x: net.predict_on_batch(x.astype("float32")).argmax(-1),
        "segkit's, compiled with XLA (jit_compile)": xla.predict_on_batch,
    }
    times = {name: [] for name in choices}
    for call in choices.values():
        call(frames)  # compiles
    for _ in range(rounds):
        for name, call in choices.items():
            start = time.perf_counter()
            for _ in range(REPEATS):
                call(frames)
            times[name].append((time.perf_counter() - start) / REPEATS / batch_size * 1000)
    print(f"Fast-SCNN predict step at {SIZE[0]}x{SIZE[1]}, {batch_size} frames a call, median of {rounds} rounds:")
    print("| predict step | ms a frame |\n|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="frames of the CamVid clip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[video.BATCH_SIZE])
    parser.add_argument("--clip", type=Path, help="a video of your own instead of the CamVid clip")
    parser.add_argument("--models", nargs="+", choices=[models.label(*m) for m in MODELS],
                        default=[models.label(*m) for m in MODELS])
    parser.add_argument("--predict-choices", action="store_true",
                        help="time Fast-SCNN's predict step alone, segkit's way against the alternatives")
    args = parser.parse_args()
    if args.predict_choices:
        predict_choices(args.batch_sizes[0], args.rounds)
        print(f"\ncommand: python benchmarks/bench_video.py {' '.join(sys.argv[1:])}")
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = args.clip or camvid_clip(folder / "camvid.mp4", args.frames)
        size = video.probe(clip)["size"]
        built = {models.label(name, encoder): models.build(name, encoder, num_classes=len(TRAIN_CLASS_COLORS),
                                                          input_shape=(*size, 3))
                 for name, encoder in MODELS if models.label(name, encoder) in args.models}
        runs = {(label, batch): [] for label in built for batch in args.batch_sizes}
        for _ in range(args.rounds):
            for (label, batch), results in runs.items():
                results.append(run_once(built[label], clip, batch, folder))
        frames = runs[next(iter(runs))][0]["frames"]

    print(f"{frames} frames of {size[0]}x{size[1]}, {args.rounds} rounds, medians; per-frame ms of each stage in brackets")
    print("| model | batch | fps | call fps | compile | " + " | ".join(SPEED_STAGES) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(SPEED_STAGES))
    for (label, batch), results in runs.items():
        print(summary(label, batch, results))
    print(f"\ncommand: python benchmarks/bench_video.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()

"""Videos through a model: frames decoded, classified a few at a time, overlaid and encoded as they stream.

`segkit.predict` hands video files (.mp4, .avi, .mov) to `predict_video`, which writes `<name>_overlay.mp4`
(and with `masks`, `<name>_frame000123.png` class-index masks, numbered by source frame) whole or not at all.
Memory holds one batch of frames, whatever the video's length.
"""

import math
import os
import re
import sys
import time
from pathlib import Path

import cv2
import keras
import numpy as np

from segkit import files, viz
from segkit.data import resize_image
from segkit.errors import SegkitError
from segkit.models import required_multiple
from segkit.workflows import loading
from segkit.workflows import predict as image_predict

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov")
BATCH_SIZE = 2  # frames per model call: 1 and 2 tie for Fast-SCNN on 2 cores, 4 and 8 are slower (bench_video.py)
FOURCC = "mp4v"  # MPEG-4 Part 2: the codec OpenCV's own FFmpeg build writes into .mp4 (H.264 it cannot)
STAGES = ("compile", "decode", "predict", "overlay", "encode", "masks")
PROGRESS_EVERY_S = 0.5
MASK_DIGITS = 6  # <name>_frame000123.png

# FFmpeg prints its own complaint about a broken file (e.g. "moov atom not found") before OpenCV reports the file
# unreadable; segkit reports it in one line instead. Read by OpenCV when it first starts FFmpeg; a user's value wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def is_video(path) -> bool:
    """Whether `path` is named like a video segkit reads (.mp4, .avi, .mov, any case)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def handles(inputs, *, tta=None, window=None, skip_bad=False, masks=False, every=1) -> bool:
    """Whether `segkit.predict`'s inputs are videos (True) or images (False); a one-line error for a mix, or for
    options of the other kind."""
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    videos = [item for item in inputs if is_video(item)]
    if videos and len(videos) < len(inputs):
        raise SegkitError(f"give videos or images, not both (videos: {', '.join(map(str, videos))})")
    if videos and (tta is not None or window is not None or skip_bad):
        raise SegkitError("--tta, --window and --skip-bad apply to images; videos take --masks, --every and --input-size")
    if not videos and (masks or every != 1):
        raise SegkitError(f"--masks and --every apply to videos ({', '.join(VIDEO_SUFFIXES)}); images always get a mask")
    return bool(videos)


def predict_video(model_path, videos, *, out, input_size=None, masks=False, every=1, batch_size=BATCH_SIZE) -> list[Path]:
    """Writes `<name>_overlay.mp4` per video into `out`, at the source frame rate (divided by `every`); returns the paths.

    Args:
        model_path (str | Path): a run folder or .keras file.
        videos (str | Path | list): video files (.mp4, .avi, .mov; any codec OpenCV's FFmpeg decodes).
        out (str | Path): the output folder (created).
        input_size (tuple | None): (H, W) frames are resized to for the model; None: the size it was trained at
            (`loading.fed_size`).
        masks (bool): also write each kept frame's class-index mask as `<name>_frame000123.png`, numbered by the
            frame's place in the source video.
        every (int): keep one frame in `every` (frames 0, N, 2N, ...); the overlay video then plays at source
            fps / N, so it lasts as long as the source.
        batch_size (int): frames per model call.

    The model sees each frame resized to the size it was trained at (or `input_size`), its class probabilities
    resized back; a model file of no fixed input that records no size sees frames at their own size, resized up to
    the next multiple of its stride when they are not one already. Every video is opened before anything is
    written, and the same rules as for images keep the user's files: no output replaces an input, or a file in `out` that segkit predict did not write there.
    A video's outputs appear together when it is done: an interrupted one leaves none of its files.
    """
    videos = [Path(videos)] if isinstance(videos, (str, Path)) else [Path(v) for v in videos]
    every, batch_size = _positive("every", every), _positive("batch size", batch_size)
    input_size = loading.checked_size(input_size, "--input-size")
    out = files.check_writable_folder(out, "--out")
    _check_output_names(videos)
    for video in videos:
        probe(video)
    ledger = files.Ledger(out, image_predict.LEDGER, "segkit_predict")
    _check_outputs_replaceable(videos, out, ledger)
    net, run = loading.load_model(model_path)
    size = loading.fed_size(net, run, input_size)
    colors = image_predict.class_colors(run, loading.num_classes_of(net), model_path=model_path)
    written = []
    with files.writing_into(out, "--out"):
        out.mkdir(parents=True, exist_ok=True)
        for video in videos:
            written += _predict_one(net, colors, video, out, ledger, size=size, masks=masks, every=every,
                                    batch_size=batch_size)
    return written


def _predict_one(net, colors, video, out, ledger, *, size, masks, every, batch_size) -> list[Path]:
    target = out / f"{video.stem}_overlay.mp4"
    with files.atomic_path(target) as tmp:
        mask_folder = tmp.parent / "masks"  # beside tmp: moved into `out` only once the video is whole
        mask_folder.mkdir()
        progress = _ProgressLine(video.name) if sys.stderr.isatty() else None
        try:
            stats = overlay_video(net, video, tmp, colors=colors, every=every, input_size=size,
                                  mask_folder=mask_folder if masks else None, batch_size=batch_size, progress=progress)
        finally:
            if progress is not None:
                progress.close()
        finished = {path.name: path for path in sorted(mask_folder.iterdir())}
        ledger.record({target.name: tmp, **finished})
        mask_paths = [_move(path, out) for path in finished.values()]
    rate = f"; one frame in {every} kept, so the video plays at {stats['video_fps']:g} fps" if every > 1 else ""
    print(f"{video} -> {target}{' + masks' if masks else ''}: {stats['frames']} frames in {stats['seconds']:.1f} s "
          f"({stats['frames'] / stats['seconds']:.1f} fps){rate}")
    return [target, *mask_paths]


def _move(path: Path, folder: Path) -> Path:
    target = folder / path.name
    os.replace(path, target)
    return target


def _check_output_names(videos) -> None:
    """Outputs are named by file stem: two videos with one stem (case-folded) would write one overlay."""
    seen = {}
    for video in videos:
        other = seen.setdefault(video.stem.casefold(), video)
        if other != video:
            raise SegkitError(f"videos {other} and {video} would both be written as {video.stem}_overlay.mp4; "
                              "rename one, or predict them into separate --out folders")


def _check_outputs_replaceable(videos, out: Path, ledger: files.Ledger) -> None:
    """Refuses, before anything is written, an overlay that would replace an input video, or any output (the
    overlay, or a frame mask of any number) already in `out` that segkit predict did not write there."""
    inputs = {Path(os.path.realpath(video)): video for video in videos}
    for video in videos:
        victim = inputs.get(Path(os.path.realpath(out / f"{video.stem}_overlay.mp4")))
        if victim is not None:
            raise SegkitError(f"{victim}, an input, would be overwritten by the overlay of {video}; choose another --out")
    names = [name for video in videos for name in _existing_outputs(video, out)]
    foreign = ledger.foreign(names)
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise SegkitError(f"--out {out} holds {listed}, which segkit predict did not write (or which changed since); "
                          "move them away or choose another --out")


def _existing_outputs(video: Path, out: Path) -> list[str]:
    """The names in `out` that predicting `video` may write: its overlay, and frame masks of any number."""
    pattern = re.compile(rf"{re.escape(video.stem)}_frame\d{{{MASK_DIGITS},}}\.png")
    masks = sorted(path.name for path in out.iterdir() if pattern.fullmatch(path.name)) if out.is_dir() else []
    return [f"{video.stem}_overlay.mp4", *masks]


def overlay_video(model, video, target, *, colors, every: int = 1, input_size=None, mask_folder=None,
                  batch_size: int = BATCH_SIZE, progress=None) -> dict:
    """Streams `video` through `model` into the overlay video `target` (written as it goes; see `predict_video`).

    Args:
        model (keras.Model): a segmentation model (RGB images to per-pixel class logits).
        video (str | Path): the source video file.
        target (str | Path): the .mp4 to write.
        colors (array-like): (classes, 3) RGB class colours.
        every (int): keep one frame in `every`.
        input_size (tuple | None): (H, W) the frames are resized to for the model (its fixed input size wins);
            None: their own size.
        mask_folder (str | Path | None): an existing folder for `<video stem>_frame000123.png` class-index masks.
        batch_size (int): frames per model call.
        progress (callable | None): called as `progress(frames done, frames expected or None)` after every batch.

    Returns {"frames", "seconds", "video_fps", "stages": {stage: seconds}}: the stages (compile: the model's
    function, once per call; decode, predict, overlay, encode, masks) add up to the whole time.
    """
    every, batch_size = _positive("every", every), _positive("batch size", batch_size)
    info = probe(video)
    clock = _StageClock()
    classify = _frame_classifier(model, info["size"], batch_size, input_size)
    classify(np.zeros((1, *info["size"], 3), np.uint8))  # compiles the model's function: its own stage
    clock.mark("compile")
    capture = _open(video)
    try:
        writer = _writer(target, info["fps"] / every, info["size"])
    except SegkitError:
        capture.release()
        raise
    expected = None if info["frames"] is None else math.ceil(info["frames"] / every)
    done = 0
    try:
        for indices, frames in _batches(_decoded(capture, every), batch_size, clock):
            classes = classify(frames)
            clock.mark("predict")
            pictures = [viz.overlay(frame, mask, colors) for frame, mask in zip(frames, classes)]
            clock.mark("overlay")
            for picture in pictures:
                writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            clock.mark("encode")
            if mask_folder is not None:
                for index, mask in zip(indices, classes):
                    _write_mask(Path(mask_folder) / mask_name(video, index), mask)
                clock.mark("masks")
            done += len(frames)
            if progress is not None:
                progress(done, expected)
    finally:
        capture.release()
        writer.release()
    clock.mark("encode")  # closing the file writes the container's index
    if done == 0:
        raise SegkitError(f"video {video} has no frame OpenCV can decode")
    return {"frames": done, "seconds": clock.total(), "video_fps": info["fps"] / every, "stages": clock.seconds}


def probe(video) -> dict:
    """{"fps", "size": (H, W), "frames": count or None} of a video whose first frame decodes; else a one-line error."""
    video = Path(video)
    if not video.is_file():
        raise SegkitError(f"video {video} does not exist")
    capture = _open(video)
    try:
        ok, frame = capture.read()
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    if not ok or frame is None:
        raise SegkitError(f"video {video} has no frame OpenCV can decode (empty, truncated, or an unsupported codec)")
    if not fps > 0:
        raise SegkitError(f"video {video} has no frame rate OpenCV can read")
    return {"fps": fps, "size": frame.shape[:2], "frames": count if count > 0 else None}


def _open(video) -> cv2.VideoCapture:
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its warning would precede segkit's one line
    try:
        capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not capture.isOpened():
        capture.release()
        raise SegkitError(f"video {video} cannot be opened: not a video, or a codec OpenCV's FFmpeg cannot decode")
    return capture


def read_frames(video, every: int = 1):
    """Yields (frame number, RGB uint8 frame) of frames 0, `every`, 2 `every`, ... of `video`, one at a time.

    Args:
        video (str | Path): a video file OpenCV's FFmpeg decodes.
        every (int): keep one frame in `every`.
    """
    every = _positive("every", every)
    capture = _open(video)
    try:
        yield from _decoded(capture, every)
    finally:
        capture.release()


def write_video(frames, path, *, fps: float) -> Path:
    """Writes RGB frames as an MPEG-4 video, whole or not at all (e.g. a sequence's photos, to predict as a clip).

    Args:
        frames (iterable of np.ndarray): RGB uint8 (H, W, 3) frames of one size, taken one at a time.
        path (str | Path): the .mp4 file to write.
        fps (float): its frame rate.
    """
    path = Path(path)
    with files.atomic_path(path) as tmp:
        writer, size = None, None
        try:
            for frame in frames:
                if writer is None:
                    size = frame.shape[:2]
                    writer = _writer(tmp, fps, size)
                if frame.shape != (*size, 3) or frame.dtype != np.uint8:
                    raise SegkitError(f"frames for {path} must be RGB uint8 {size[0]}x{size[1]} like the first, "
                                      f"got shape {frame.shape} dtype {frame.dtype}")
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            if writer is not None:
                writer.release()
        if writer is None:
            raise SegkitError(f"no frames to write to {path}")
    return path


def _writer(target, fps: float, size) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*FOURCC), fps, (size[1], size[0]))
    if not writer.isOpened():
        raise SegkitError(f"cannot write the video {target}: OpenCV's {FOURCC} encoder did not open")
    return writer


def _decoded(capture, every):
    index = 0
    while True:
        if not capture.grab():
            return
        if index % every == 0:
            ok, frame = capture.retrieve()
            if not ok:
                return
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1


def _batches(frames, batch_size, clock):
    """(frame numbers, RGB frames (B, H, W, 3)) of up to `batch_size` decoded frames at a time."""
    frames = iter(frames)
    while True:
        chunk = [item for _, item in zip(range(batch_size), frames)]
        clock.mark("decode")
        if not chunk:
            return
        indices, images = zip(*chunk)
        yield indices, np.stack(images)


def _frame_classifier(model, frame_size, batch_size, input_size=None):
    """A function from RGB uint8 frames (B, H, W, 3), B <= `batch_size`, to their uint8 class maps (B, H, W).

    The argmax (and the resizing back from the model's input size) runs inside the model's compiled function: a
    class map is a 20th of the logits' bytes to bring back. A short last batch is padded to `batch_size`, so
    the function is not compiled anew for it.
    """
    fed_size = _fed_size(model, input_size or frame_size)
    inputs = keras.Input((*fed_size, 3), dtype="uint8")
    scores = model(keras.ops.cast(inputs, "float32"))
    if fed_size != tuple(frame_size):  # probabilities resized back, as `segkit evaluate --input-size` does
        scores = keras.ops.image.resize(keras.ops.softmax(scores, axis=-1), frame_size, interpolation="bilinear")
    classifier = keras.Model(inputs, keras.ops.cast(keras.ops.argmax(scores, axis=-1), "uint8"))

    def classify(frames):
        if fed_size != frames.shape[1:3]:
            frames = np.stack([resize_image(frame, fed_size) for frame in frames])
        count = len(frames)
        if count < batch_size:
            frames = np.concatenate([frames, np.zeros((batch_size - count, *frames.shape[1:]), np.uint8)])
        return keras.ops.convert_to_numpy(classifier.predict_on_batch(frames))[:count]

    return classify


def _fed_size(model, size) -> tuple[int, int]:
    """The size the model takes frames at: its fixed input size, else `size` rounded up to its stride."""
    fixed = keras.tree.flatten(model.input)[0].shape[1:3]
    multiple = required_multiple(model)
    return tuple(limit if limit is not None else -(-side // multiple) * multiple for side, limit in zip(size, fixed))


def mask_name(video, index: int) -> str:
    """`<video stem>_frame000123.png`: the class-index mask of frame `index` (counted from 0 in the source video)."""
    return f"{Path(video).stem}_frame{index:0{MASK_DIGITS}d}.png"


def _write_mask(path: Path, mask: np.ndarray) -> None:
    if not cv2.imwrite(str(path), mask):
        raise SegkitError(f"could not write {path}")


def _positive(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SegkitError(f"{name} must be a positive integer, got {value!r}")
    return value


class _StageClock:
    """Seconds per stage, each mark adding the time since the previous one: the stages add up to the wall time."""

    def __init__(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now

    def total(self) -> float:
        return sum(self.seconds.values())


class _ProgressLine:
    """`name: 120/900 frames, 23.5 fps` rewritten in place on the terminal (stderr), at most twice a second; `close`
    shows the last count and ends the line."""

    def __init__(self, name: str):
        self.name, self.start, self.shown, self.done, self.expected = name, time.perf_counter(), 0.0, 0, None

    def __call__(self, done: int, expected) -> None:
        self.done, self.expected = done, expected
        if time.perf_counter() - self.shown >= PROGRESS_EVERY_S:
            self._show(end="")

    def close(self) -> None:
        if self.shown:
            self._show(end="\n")

    def _show(self, end: str) -> None:
        self.shown = time.perf_counter()
        of = f"/{self.expected}" if self.expected else ""
        rate = self.done / (self.shown - self.start)
        print(f"\r{self.name}: {self.done}{of} frames, {rate:.1f} fps", end=end, file=sys.stderr, flush=True)

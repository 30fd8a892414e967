"""Videos through segkit.predict: overlay videos and frame masks checked against the model run on each decoded frame
by hand, memory over a long video, progress and closing lines, bad files, the output rules; viz.animation."""

import io
import re
import sys
import tracemalloc

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

import segkit
from segkit import cli, viz
from segkit.errors import SegkitError
from segkit.workflows import loading
from segkit.workflows import predict as image_predict
from segkit.workflows import video
from training_support import softmax, upsample_bilinear

SIZE = (32, 48)  # (H, W) of the generated videos
FPS = 12.0
COLORS = np.array([[250, 30, 30], [30, 250, 30], [40, 40, 250]], np.uint8)  # recorded in the model file


def write_video(path, frames: int, size=SIZE, fps=FPS, seed=0):
    """A video of `frames` frames: three colour bands (red, green, blue dominant) drifting sideways, with noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    columns = np.arange(width)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for index in range(frames):
        band = ((columns + 2 * index) * 3 // width) % 3
        rgb = np.full((height, width, 3), 60, np.int64)
        rgb[:, np.arange(width), band] = 200
        rgb += rng.integers(-20, 21, rgb.shape)
        writer.write(np.ascontiguousarray(rgb.clip(0, 255).astype(np.uint8)[..., ::-1]))
    writer.release()
    return path


def decoded_frames(path) -> list[np.ndarray]:
    """Every frame of a video as RGB, decoded here with OpenCV directly."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    capture.release()
    return frames


def channel_model(input_shape=(None, None, 3)):
    """Hand-made: three class logits per pixel, its R, G and B over 32."""
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Rescaling(1 / 32)(inputs))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "channels.keras"
    loading.save_model(channel_model(), path, classes=["red", "green", "blue"], colors=COLORS)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames=40)


def model_classes(model, frame) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(frame[None].astype("float32"))).argmax(-1)[0]


@pytest.mark.backend_agnostic
def test_overlay_video_has_every_frame_at_the_source_rate_and_the_models_classes(model_file, clip, tmp_path):
    written = segkit.predict(model_file, clip, out=tmp_path / "out", masks=True)
    frames = decoded_frames(clip)
    assert len(frames) == 40
    assert written == [tmp_path / "out" / "clip_overlay.mp4"] + [tmp_path / "out" / f"clip_frame{i:06d}.png" for i in range(40)]
    capture = cv2.VideoCapture(str(written[0]))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    capture.release()
    overlays = decoded_frames(written[0])
    assert len(overlays) == 40 and overlays[0].shape == (*SIZE, 3)
    model = keras.saving.load_model(model_file)
    for frame, mask_path, picture in zip(frames, written[1:], overlays):
        classes = model_classes(model, frame)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, classes)
        # the overlay video is MPEG-4 (lossy): it stays near the overlay of the right classes, far from a wrong one
        error = np.abs(picture.astype(int) - viz.overlay(frame, classes, COLORS)).mean()
        wrong = np.abs(picture.astype(int) - viz.overlay(frame, (classes + 1) % 3, COLORS)).mean()
        assert error < 6 and wrong > 4 * error
    assert len(np.unique(np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in written[1:]]))) == 3


def test_every_nth_frame_at_the_source_rate_over_n(model_file, clip, tmp_path, capsys):
    written = segkit.predict(model_file, [clip], out=tmp_path / "out", masks=True, every=3)
    kept = list(range(0, 40, 3))  # 14 frames
    assert [p.name for p in written[1:]] == [f"clip_frame{i:06d}.png" for i in kept]
    capture = cv2.VideoCapture(str(written[0]))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS / 3)
    capture.release()
    assert len(decoded_frames(written[0])) == len(kept)
    frames = decoded_frames(clip)
    model = keras.saving.load_model(model_file)
    for index, path in zip(kept, written[1:]):
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), model_classes(model, frames[index]))
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(rf"{re.escape(str(clip))} -> .*clip_overlay.mp4 \+ masks: 14 frames in [\d.]+ s \([\d.]+ fps\); "
                        r"one frame in 3 kept, so the video plays at 4 fps", closing)


@pytest.mark.parametrize("input_shape, options", [((16, 24, 3), {}), ((None, None, 3), {"input_size": (16, 24)})],
                         ids=["fixed-size model", "input_size"])
def test_frames_are_fed_at_the_models_size_and_its_probabilities_resized_back(tmp_path, input_shape, options):
    model = channel_model(input_shape)
    model.save(tmp_path / "model.keras")
    clip = write_video(tmp_path / "clip.mp4", frames=5)
    written = segkit.predict(tmp_path / "model.keras", clip, out=tmp_path / "out", masks=True, **options)
    for frame, path in zip(decoded_frames(clip), written[1:]):
        shrunk = cv2.resize(frame, (24, 16), interpolation=cv2.INTER_AREA)
        logits = keras.ops.convert_to_numpy(model(shrunk[None].astype("float32"))).astype(np.float64)
        probs = upsample_bilinear(softmax(logits), SIZE)[0]
        got = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        top_two = np.sort(probs, axis=-1)[..., -2:]
        near_tie = top_two[..., 1] - top_two[..., 0] < 1e-5
        assert np.array_equal(got[~near_tie], probs.argmax(-1)[~near_tie])
        assert near_tie.mean() < 0.01


def _peak_bytes(call) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_over_a_long_video(tmp_path):
    """Streaming keeps one batch of frames: 400 frames peak no higher than 100 do. Keeping the overlays (or the
    decoded frames) would add 300 x 64x96x3 bytes, 5.5 MB; the allowance is a tenth of that."""
    size = (64, 96)
    model = channel_model()
    short, long = (write_video(tmp_path / f"{n}.mp4", frames=n, size=size) for n in (100, 400))

    def run(source):
        return lambda: video.overlay_video(model, source, tmp_path / "overlay.mp4", colors=COLORS)

    run(short)()  # compiles the model's function outside the measurement
    peaks = {n: _peak_bytes(run(source)) for n, source in ((100, short), (400, long))}
    assert peaks[400] - peaks[100] < 0.1 * 300 * np.prod(size) * 3, peaks
    assert len(decoded_frames(tmp_path / "overlay.mp4")) == 400


def test_progress_line_on_a_terminal_and_the_closing_line(model_file, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    segkit.predict(model_file, clip, out=tmp_path / "out")
    captured = capsys.readouterr()
    shown = re.findall(r"\rclip.mp4: (\d+)/40 frames, [\d.]+ fps", captured.err)
    assert len(shown) >= 2 and int(shown[-1]) == 40 and captured.err.endswith("\n")  # the first batch, ..., the end
    assert re.search(r"clip_overlay.mp4: 40 frames in [\d.]+ s \([\d.]+ fps\)$", captured.out.strip())
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    segkit.predict(model_file, clip, out=tmp_path / "out")
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# Bad input and the user's files


@pytest.mark.parametrize("content", [b"", b"not a video at all", "truncated"])
def test_a_file_that_is_not_a_readable_video_is_one_line_naming_it(model_file, clip, tmp_path, capfd, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2] if content == "truncated" else content)
    assert cli.main(["predict", str(model_file), str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capfd.readouterr().err
    assert err.startswith("segkit: error: video ") and str(bad) in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_every_video_is_checked_before_anything_is_written(model_file, clip, tmp_path):
    (tmp_path / "missing").mkdir()
    with pytest.raises(SegkitError, match=r"video .*gone.mp4 does not exist"):
        segkit.predict(model_file, [clip, tmp_path / "gone.mp4"], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_outputs_never_replace_an_input_or_a_file_segkit_did_not_write(model_file, clip, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip_overlay.mp4").write_bytes(b"the user's own video")
    with pytest.raises(SegkitError, match="holds clip_overlay.mp4, which segkit predict did not write"):
        segkit.predict(model_file, clip, out=out)
    assert (out / "clip_overlay.mp4").read_bytes() == b"the user's own video"
    (out / "clip_overlay.mp4").unlink()
    (out / "clip_frame000007.png").write_bytes(b"the user's own picture")
    with pytest.raises(SegkitError, match="holds clip_frame000007.png"):
        segkit.predict(model_file, clip, out=out, masks=True)
    (out / "clip_frame000007.png").unlink()
    first = segkit.predict(model_file, clip, out=out, masks=True)
    assert segkit.predict(model_file, clip, out=out, masks=True, every=2)[0] == first[0]  # its own files: replaced
    # an input inside --out whose name is another input's overlay
    (out / "clip_overlay.mp4").unlink()
    inside = out / "clip_overlay.mp4"
    inside.write_bytes(clip.read_bytes())
    with pytest.raises(SegkitError, match="an input, would be overwritten by the overlay of"):
        segkit.predict(model_file, [clip, inside], out=out)
    assert inside.read_bytes() == clip.read_bytes()


def test_an_interrupted_video_leaves_none_of_its_files(model_file, clip, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(video.viz, "overlay", interrupted)
    with pytest.raises(KeyboardInterrupt):
        segkit.predict(model_file, clip, out=tmp_path / "out", masks=True)
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name != image_predict.LEDGER] == []


@pytest.mark.parametrize("inputs, options, message", [
    (["clip.mp4", "a.png"], {}, "give videos or images, not both"),
    (["clip.mp4"], {"tta": "flip"}, "apply to images"),
    (["clip.mp4"], {"window": (32, 32)}, "apply to images"),
    (["a.png"], {"masks": True}, "apply to videos"),
    (["a.png"], {"every": 2}, "apply to videos"),
    (["clip.mp4"], {"every": 0}, "every must be a positive integer, got 0"),
    (["clip.mp4"], {"input_size": (16, -1)}, "--input-size must be two positive integers"),
    (["clip.mp4", "other/clip.mov"], {}, "would both be written as clip_overlay.mp4"),
])
def test_options_and_inputs_that_do_not_go_together(model_file, clip, tmp_path, inputs, options, message):
    (tmp_path / "other").mkdir()
    for name in inputs:
        (tmp_path / name).write_bytes(clip.read_bytes())
    with pytest.raises(SegkitError, match=message):
        segkit.predict(model_file, [tmp_path / name for name in inputs], out=tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_cli_predict_video_with_masks_and_every(model_file, clip, tmp_path, capsys):
    args = ["predict", str(model_file), str(clip), "--out", str(tmp_path / "out"), "--masks", "--every", "4"]
    assert cli.main(args) == 0
    assert "10 frames in" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").glob("clip_*")) == (
        ["clip_frame%06d.png" % i for i in range(0, 40, 4)] + ["clip_overlay.mp4"])


def test_write_video_makes_a_clip_of_photos_whole_or_not_at_all(tmp_path):
    rng = np.random.default_rng(2)
    photos = [cv2.resize(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), (48, 32)) for _ in range(7)]
    path = video.write_video(iter(photos), tmp_path / "photos.mp4", fps=5)
    frames = decoded_frames(path)
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5) and len(frames) == 7
    capture.release()
    # MPEG-4 is lossy: each frame is near its photo, and nearer to it than to any other photo
    distances = np.array([[np.abs(frame.astype(int) - photo).mean() for photo in photos] for frame in frames])
    assert (distances.diagonal() < 12).all() and (distances.argmin(axis=1) == np.arange(7)).all()
    with pytest.raises(SegkitError, match="like the first, got shape \\(32, 40, 3\\)"):
        video.write_video([photos[0], photos[1][:, :40]], tmp_path / "mixed.mp4", fps=5)
    with pytest.raises(SegkitError, match="no frames"):
        video.write_video([], tmp_path / "empty.mp4", fps=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.mp4"]


# ---------------------------------------------------------------------------------------------
# Animations for a page


@pytest.mark.parametrize("format, tolerance", [("webp", 12), ("gif", 12)])
def test_animation_loops_every_frame_at_its_rate_scaled_down(format, tolerance):
    rng = np.random.default_rng(0)
    frames = [cv2.resize(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), (120, 80), interpolation=cv2.INTER_LINEAR)
              for _ in range(6)]
    data = viz.animation(frames, fps=5, max_width=60, format=format)
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == format.upper() and picture.n_frames == 6 and picture.size == (60, 40)
        assert picture.info["loop"] == 0
        for index, frame in enumerate(frames):
            picture.seek(index)
            shown = np.asarray(picture.convert("RGB"), np.float64)
            assert picture.info["duration"] == 200
            expected = np.asarray(Image.fromarray(frame).resize((60, 40), Image.Resampling.LANCZOS), np.float64)
            assert np.abs(shown - expected).mean() < tolerance
    with Image.open(io.BytesIO(viz.animation(frames, fps=5, max_width=200, format=format))) as picture:
        assert picture.size == (120, 80)  # never scaled up


def test_animation_refuses_bad_frames():
    with pytest.raises(SegkitError, match="at least one frame"):
        viz.animation([], fps=5)
    with pytest.raises(SegkitError, match="share one size"):
        viz.animation([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)], fps=5)
    with pytest.raises(SegkitError, match="RGB uint8"):
        viz.animation([np.zeros((8, 8), np.uint8)], fps=5)
    with pytest.raises(SegkitError, match="format 'avi'"):
        viz.animation([np.zeros((8, 8, 3), np.uint8)], fps=5, format="avi")

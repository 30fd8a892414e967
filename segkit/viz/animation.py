"""Frames as one small looping animated image (WebP or GIF) that a repository page or a notebook shows inline."""

import io

import numpy as np
from PIL import Image

from segkit.errors import SegkitError

__all__ = ["animation"]

ANIMATION_FORMATS = {"webp": "WEBP", "gif": "GIF"}


def animation(frames, *, fps: float, max_width: int = 480, format: str = "webp", quality: int = 60) -> bytes:
    """The frames as an animated image that loops, scaled down (never up) to at most `max_width` pixels wide.

    Args:
        frames (iterable of np.ndarray): RGB uint8 (H, W, 3) frames, all one size; all are held at once, so this
            is for a short clip (a few dozen frames), e.g. overlays from `segkit.workflows.video.read_frames`.
        fps (float): frames per second of the animation.
        max_width (int): the widest the frames are kept; wider ones are shrunk, keeping their aspect ratio.
        format (str): "webp" (lossy, small: for a README or docs page) or "gif" (256 colours per frame, larger;
            shown everywhere, including notebook viewers that do not show WebP).
        quality (int): WebP quality 0..100.
    """
    if format not in ANIMATION_FORMATS:
        raise SegkitError(f"animation format {format!r} is not supported; use one of {', '.join(ANIMATION_FORMATS)}")
    if not fps > 0:
        raise SegkitError(f"fps must be positive, got {fps!r}")
    pictures = [_shrunk(frame, max_width) for frame in frames]
    if not pictures:
        raise SegkitError("an animation needs at least one frame")
    if len({picture.size for picture in pictures}) > 1:
        raise SegkitError(f"animation frames must share one size, got {sorted({p.size for p in pictures})} (W, H)")
    out = io.BytesIO()
    options = {"quality": quality} if format == "webp" else {}
    pictures[0].save(out, ANIMATION_FORMATS[format], save_all=True, append_images=pictures[1:],
                     duration=round(1000 / fps), loop=0, **options)
    return out.getvalue()


def _shrunk(frame, max_width: int) -> Image.Image:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise SegkitError(f"animation frames must be RGB uint8 (H, W, 3), got shape {frame.shape} dtype {frame.dtype}")
    picture = Image.fromarray(frame)
    if picture.width > max_width:
        picture = picture.resize((max_width, max(1, round(picture.height * max_width / picture.width))),
                                 Image.Resampling.LANCZOS)
    return picture

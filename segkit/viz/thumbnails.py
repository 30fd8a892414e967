"""Saved figures made small enough to embed in a notebook's stored outputs."""

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from segkit.errors import SegkitError

__all__ = ["thumbnail_jpeg"]


def thumbnail_jpeg(path, max_width: int = 900, quality: int = 70) -> bytes:
    """The image file at `path` as JPEG bytes, scaled down (never up) to at most `max_width` pixels wide."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError) as err:
        raise SegkitError(f"{path}: not a readable image ({type(err).__name__})") from None
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()

"""Make an image fit a chat platform's upload limit without losing more than needed."""

from __future__ import annotations

import io
from pathlib import PurePath

from PIL import Image

__all__ = ["fit_upload"]

_QUALITIES = (92, 80, 65, 50)


def fit_upload(data: bytes, filename: str, limit: int) -> tuple[bytes, str]:
    """Return the bytes and name to upload: the original if it fits, else a WebP re-encode.

    The quality is lowered step by step, then the size halved, until it fits.
    The original file (with its parameters chunk) stays in the history.
    """
    if len(data) <= limit:
        return data, filename
    stem = PurePath(filename).stem
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    while True:
        for quality in _QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP", quality=quality)
            if buffer.tell() <= limit:
                return buffer.getvalue(), f"{stem}.webp"
        if min(image.size) <= 16:
            return buffer.getvalue(), f"{stem}.webp"
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.LANCZOS)

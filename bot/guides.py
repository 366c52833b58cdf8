"""ControlNet guides: the map a ControlNet was trained on, made from a user's image.

``canny`` runs here with OpenCV (no weights): the guide every backend receives is the
same map, and it is stored and can be shown. The other annotators (depth, pose, …) need
model weights the bot process does not load: a backend that offers them (`bot.ports.GuideBackend`:
Runware's preprocessing task, or the local worker with a catalog annotator whose files the
operator put in place) makes those maps, and the service stores them the same way; elsewhere
they are refused with a sentence, and a map made elsewhere can be given as it is with
``--preprocess none``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bot.errors import InvalidOption
from bot.images import InputImage

__all__ = ["CANNY_THRESHOLDS", "GuideMap", "make_guide"]


@dataclass(frozen=True, slots=True)
class GuideMap:
    """A guide map a backend made (`bot.ports.GuideBackend`): its image, unchecked, and what it was charged."""

    data: bytes
    cost: float | None = None  # None: free, or the backend does not say


# OpenCV's hysteresis thresholds as the ControlNet docs and A1111 default them (settings canny_low, canny_high).
CANNY_THRESHOLDS = (100, 200)


def make_guide(image: InputImage, preprocess: str, *, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> InputImage:
    """Return the guide map `preprocess` makes of a checked image, as a stored input is kept (PNG, RGB).

    Raises:
        InvalidOption: the preprocessing needs an annotator this bot has not configured.
    """
    if preprocess != "canny":
        reason = (
            f"'{preprocess}' needs its annotator, and this bot has none configured for it (an operator puts a"
            " catalog annotator's files in place, depth on the local backend); use canny, or give a ready-made"
            " map with --preprocess none"
        )
        raise InvalidOption("preprocess", reason)
    import cv2  # only when a guide is made: OpenCV takes a while to import

    with Image.open(io.BytesIO(image.data)) as opened:
        gray = np.asarray(opened.convert("L"))
    edges = cv2.Canny(gray, *thresholds)
    buffer = io.BytesIO()
    Image.fromarray(edges).convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    return InputImage(data, image.width, image.height, hashlib.sha256(data).hexdigest())

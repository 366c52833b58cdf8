"""ControlNet guides: the map a ControlNet was trained on, made from a user's image.

``canny`` runs here with OpenCV (no weights): the guide every backend receives is the
same map, and it is stored and can be shown. So do ``scribble`` and ``lineart`` where the
backend has no annotator of its own for them, with A1111's two that need no weights:
``scribble_xdog`` (a difference of Gaussians, thresholded) and ``lineart_standard`` (how much
darker than its blurred surroundings each pixel is, scaled by the median line), white lines
on black as those ControlNets were trained on. The other annotators (depth, pose, soft
edges, A1111's neural line art) need model weights the bot process does not load: a backend
that offers them (`bot.ports.GuideBackend`: Runware's preprocessing task, or the local
worker with a catalog annotator whose files the operator put in place) makes those maps,
and the service stores them the same way; elsewhere they are refused with a sentence, and
a map made elsewhere can be given as it is with ``--preprocess none``.
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
# The guide maps made here, with no weights.
MADE_HERE = frozenset({"canny", "scribble", "lineart"})
# A1111's scribble_xdog: the two blurs' sigmas and the stroke threshold (its default "XDoG threshold" 32).
_XDOG_SIGMAS = (0.5, 5.0)
_XDOG_THRESHOLD = 32
# A1111's lineart_standard: the blur's sigma, the darkness below which a pixel is no line, and the
# median line's darkness at least (so a page of faint lines is not stretched into heavy ones).
_LINEART_SIGMA = 6.0
_LINEART_THRESHOLD = 8.0
_LINEART_MIN_MEDIAN = 16.0


def make_guide(image: InputImage, preprocess: str, *, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> InputImage:
    """Return the guide map `preprocess` makes of a checked image, as a stored input is kept (PNG, RGB).

    Raises:
        InvalidOption: the preprocessing needs an annotator this bot has not configured.
    """
    if preprocess not in MADE_HERE:
        reason = (
            f"'{preprocess}' needs its annotator, and this bot has none configured for it (an operator puts a"
            " catalog annotator's files in place, depth and openpose on the local backend); use canny, scribble or"
            " lineart, or give a ready-made map with --preprocess none"
        )
        raise InvalidOption("preprocess", reason)
    import cv2  # only when a guide is made: OpenCV takes a while to import

    with Image.open(io.BytesIO(image.data)) as opened:
        rgb = np.asarray(opened.convert("RGB"))
    if preprocess == "canny":
        lines = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), *thresholds)
    elif preprocess == "scribble":
        fine, coarse = (cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), sigma) for sigma in _XDOG_SIGMAS)
        # Darker than its surroundings in every channel by more than half the threshold: a stroke
        # (a line, or an edge's dark side), as A1111 computes it.
        darker = np.min(coarse - fine, axis=2)
        lines = np.where(2 * darker > _XDOG_THRESHOLD, 255, 0).astype(np.uint8)
    else:
        pixels = rgb.astype(np.float32)
        # How much darker than its blurred surroundings each pixel is in every channel; the median
        # line's darkness becomes 127, so a drawing's lines come out alike whatever its contrast.
        darker = np.min(cv2.GaussianBlur(pixels, (0, 0), _LINEART_SIGMA) - pixels, axis=2).clip(0, 255)
        line = darker[darker > _LINEART_THRESHOLD]
        median = float(np.median(line)) if line.size else 0.0
        lines = (darker * (127 / max(_LINEART_MIN_MEDIAN, median))).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(lines).convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    return InputImage(data, image.width, image.height, hashlib.sha256(data).hexdigest())

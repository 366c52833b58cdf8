"""Vary (Region), Midjourney's: the parts of a result a user selected, and the mask that repaints them.

The gallery's editor sends each part selected (a box, or a lasso drawn around it) as the polygon of
its corners in the image's own pixels, the parts apart by ``;``::

    12,40 300,40 300,220 12,220;400,10 470,90 380,120

The text comes from a user's browser and is as hostile as any: at most `MAX_PARTS` parts and
`MAX_CORNERS` corners in all, every corner inside the image, the parts together at least
`MIN_SHARE` of it, else one sentence. The mask is the parts filled, grown by about one latent cell
on every side (`grown_by`), so an edge drawn along an object's outline takes the outline along.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from bot.errors import InvalidOption

__all__ = [
    "MAX_CORNERS",
    "MAX_PARTS",
    "MIN_SHARE",
    "REGION_STRENGTH",
    "Part",
    "format_parts",
    "grown_by",
    "parse_parts",
    "region_mask",
]

MAX_PARTS = 20
MAX_CORNERS = 2000  # the editor keeps a lasso to one corner per 1/128 of the image's side
MIN_SHARE = 0.01
# How much of the selection is made again: enough for new things to appear there (Midjourney's
# Vary (Region) replaces what it selects), a little of the old colours left to fit the rest.
REGION_STRENGTH = 0.9

_OPTION = "The selection"
_CORNER = re.compile(r"([0-9]{1,5}),([0-9]{1,5})")
# The longest text `MAX_CORNERS` corners can be ("12345,12345" and a space each), and the parts' separators.
_MAX_TEXT = MAX_CORNERS * 12 + MAX_PARTS


@dataclass(frozen=True, slots=True)
class Part:
    """One part selected: its corners, in order, in the image's pixels (x right, y down)."""

    corners: tuple[tuple[int, int], ...]


def parse_parts(text: str, width: int, height: int) -> tuple[Part, ...]:
    """Read the editor's selection of a `width` × `height` image.

    Raises:
        InvalidOption: nothing selected, too many parts or corners, a corner outside the image,
            or text the editor does not write; one sentence.
    """
    if not text.strip():
        raise InvalidOption(_OPTION, "is empty: drag a box or draw around the part of the image to change")
    if len(text) > _MAX_TEXT:
        raise InvalidOption(_OPTION, f"has too many corners; the most is {MAX_CORNERS}, so draw around it more simply")
    pieces = text.split(";")
    if len(pieces) > MAX_PARTS:
        raise InvalidOption(_OPTION, f"has {len(pieces)} parts; the most is {MAX_PARTS}")
    parts = []
    for piece in pieces:
        corners = []
        for word in piece.split():
            match = _CORNER.fullmatch(word)
            if match is None:
                raise InvalidOption(_OPTION, "could not be read; select the part again")
            x, y = int(match[1]), int(match[2])
            if x > width or y > height:
                raise InvalidOption(_OPTION, f"reaches past the image, which is {width}×{height} pixels")
            corners.append((x, y))
        if len(set(corners)) < 3:
            raise InvalidOption(_OPTION, "could not be read: a part needs three corners or more")
        parts.append(Part(tuple(corners)))
    corners_in_all = sum(len(part.corners) for part in parts)
    if corners_in_all > MAX_CORNERS:
        raise InvalidOption(_OPTION, f"has too many corners; the most is {MAX_CORNERS}, so draw around it more simply")
    return tuple(parts)


def format_parts(parts: Sequence[Part]) -> str:
    """Return parts as the editor writes them (`parse_parts` reads it back)."""
    return ";".join(" ".join(f"{x},{y}" for x, y in part.corners) for part in parts)


def grown_by(width: int, height: int) -> int:
    """Return how many pixels the mask grows past the parts: one latent cell (8 pixels) per 512 of the short side."""
    return max(2, round(min(width, height) / 64))


def region_mask(parts: Sequence[Part], width: int, height: int) -> bytes:
    """Return the inpainting mask of `parts` on a `width` × `height` image as a PNG: white repaints, black keeps.

    Each part is filled, then its outline drawn as wide as twice `grown_by` and a disc on each
    corner, so every pixel that near a part is white too.

    Raises:
        InvalidOption: the parts cover less than `MIN_SHARE` of the image.
    """
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for part in parts:
        draw.polygon(part.corners, fill=255)
    if mask.histogram()[255] < MIN_SHARE * width * height:
        raise InvalidOption(_OPTION, f"is too small: select at least {MIN_SHARE:.0%} of the image")
    reach = grown_by(width, height)
    for part in parts:
        draw.line([*part.corners, part.corners[0]], fill=255, width=2 * reach + 1)
        for x, y in part.corners:  # the lines end square: a disc rounds each corner
            draw.ellipse((x - reach, y - reach, x + reach, y + reach), fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()

"""Images users send (an init image, a mask), checked before anything else touches them.

Every byte from a user is hostile until `check_image` has read it: the file's
own signature says what it is (never its name), the header's dimensions are
checked against the budget before a single pixel is decoded, and what comes
out is a fresh PNG with nothing of the original but its pixels, so no EXIF,
GPS position, ICC profile or text chunk is stored or sent on. Every refusal is
an `InvalidOption` naming the option, in a sentence the user understands.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps

from bot.errors import InvalidOption

__all__ = [
    "MAX_SIDE",
    "InputImage",
    "check_image",
    "image_format",
    "input_path",
    "jpeg_segments",
    "not_an_image",
    "too_large",
    "webp_size",
]

MAX_SIDE: Final = 8192  # pixels; a 100000×40 strip fits a pixel budget but no pipeline wants it

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_FORMATS = "must be a PNG, JPEG or WebP file"
_UNREADABLE = "could not be read (damaged or cut off)"
_KIB = 1024
_MIB = 1024 * 1024


_SHA256 = re.compile(r"[0-9a-f]{64}")


def input_path(sha256: str) -> str:
    """Return where an input image is kept, relative to the data directory: ``inputs/<ab>/<sha256>.png``.

    One home for the layout: the image store writes there and the local worker reads there.

    Raises:
        ValueError: `sha256` is not 64 lowercase hex digits (so it cannot name another path).
    """
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"an input image is named by 64 lowercase hex digits, not {sha256[:80]!r}")
    return f"inputs/{sha256[:2]}/{sha256}.png"


@dataclass(frozen=True, slots=True)
class InputImage:
    """A checked image: PNG bytes without metadata, RGB (an image) or L (a mask), and their SHA-256."""

    data: bytes
    width: int
    height: int
    sha256: str


def check_image(
    data: bytes,
    *,
    option: str,
    max_bytes: int,
    pixel_budget: int,
    mask: bool = False,
    max_side: int = MAX_SIDE,
) -> InputImage:
    """Check an image a user sent and return it normalized, or refuse it.

    The checks run cheapest first, and the pixels are decoded only once the
    header has shown they fit: a few kilobytes declaring 30000×30000 pixels are
    refused without allocating them. Decoding takes CPU time (tens of
    milliseconds for a large photo), so async callers run it in a thread; it
    changes no global state, Pillow's included.

    Args:
        data: the file as received.
        option: the option the refusal names (``image``, ``mask``).
        max_bytes: the largest file accepted.
        pixel_budget: the most pixels (width × height) accepted.
        mask: read it as a mask: single-channel ``L``, white repaints, black keeps.
            Transparent parts of a mask become black (kept), so strokes drawn on a
            transparent layer are what gets repainted.
        max_side: the longest side accepted, in pixels.

    Returns:
        The image with its EXIF orientation applied, transparency flattened (onto
        white for an image), re-encoded as a PNG with no metadata; the same input
        always gives the same bytes and SHA-256.

    Raises:
        InvalidOption: the file is too big, not a PNG, JPEG or WebP, too many
            pixels, or damaged; one sentence naming `option`.
    """
    if not data:
        raise InvalidOption(option, "is an empty file")
    if len(data) > max_bytes:
        raise too_large(option, len(data), max_bytes)
    kind = image_format(data)
    if kind is None:
        raise not_an_image(option)
    # The size is read from the header before Pillow sees the file: Pillow's WebP decoder
    # allocates the whole canvas on open, and its own bomb check on open would refuse a
    # huge PNG or JPEG without saying how big it is.
    size = _HEADER_SIZE[kind](data)
    if size is not None:
        _check_size(option, *size, pixel_budget=pixel_budget, max_side=max_side)
    elif kind == "WEBP":
        raise InvalidOption(option, _UNREADABLE)
    try:
        # Image.open reads the header only; the pixels are decoded by convert/load below.
        with Image.open(io.BytesIO(data), formats=[kind]) as opened:
            _check_size(option, *opened.size, pixel_budget=pixel_budget, max_side=max_side)
            image = _normalized(opened, mask=mask)
    except InvalidOption:
        raise
    except Image.DecompressionBombError:
        # Pillow's own guard, for a budget set above its limit: still our refusal, not a crash.
        raise InvalidOption(option, "has too many pixels to read safely") from None
    except Exception:
        # Pillow's parsers raise whatever their format's code trips over on hostile bytes
        # (OSError, SyntaxError, struct.error, IndexError, ValueError…); there is no closed list.
        raise InvalidOption(option, _UNREADABLE) from None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = buffer.getvalue()
    return InputImage(encoded, image.width, image.height, hashlib.sha256(encoded).hexdigest())


def image_format(data: bytes) -> str | None:
    """Return Pillow's name for the format the bytes' signature shows, or None for any other."""
    if data.startswith(_PNG):
        return "PNG"
    if data.startswith(_JPEG):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Return the size the IHDR chunk declares; the PNG format puts it first, right after the signature."""
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return int(width), int(height)


# Start-of-frame markers: SOF0 to SOF15 but DHT (C4), JPG (C8) and DAC (CC), which share the range.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM and RST0-7 carry no length


def jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield the (marker, payload) of each segment of a JPEG's header, up to its image data.

    The walk stops where the bytes stop making sense: no marker where one should be, or the end.
    A payload is cut at the end of the bytes when its length says more.
    """
    position = 2  # after the start-of-image marker
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker in _JPEG_STANDALONE:
            position += 2
        elif marker in (0xD9, 0xDA):  # end of image, or the scan data: no header follows
            return
        else:
            (length,) = struct.unpack_from(">H", data, position + 2)
            yield marker, data[position + 4 : position + 2 + length]
            position += 2 + max(length, 2)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Return the size the first start-of-frame segment declares, walking the segments before it.

    None when the walk goes wrong; Pillow then reads the header itself, and its size
    is checked the same way before decoding.
    """
    for marker, payload in jpeg_segments(data):
        if marker in _JPEG_FRAMES:
            try:
                height, width = struct.unpack_from(">HH", payload, 1)  # after the sample precision
            except struct.error:
                return None
            return int(width), int(height)
    return None


def webp_size(data: bytes) -> tuple[int, int] | None:
    """Return the canvas size a WebP header declares, or None when the header is not one of the three kinds."""
    chunk = data[12:16]
    try:
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: a key frame's start code
            width, height = struct.unpack_from("<HH", data, 26)
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14 bits each, minus one
            (bits,) = struct.unpack_from("<I", data, 21)
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":  # extended: 24 bits each, minus one
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
            return (width, height) if len(data) >= 30 else None
    except (struct.error, IndexError):
        return None
    return None


_HEADER_SIZE: Final = {"PNG": _png_size, "JPEG": _jpeg_size, "WEBP": webp_size}


def _check_size(option: str, width: int, height: int, *, pixel_budget: int, max_side: int) -> None:
    """Refuse dimensions over the budget or the side limit, before any pixel is decoded."""
    if width < 1 or height < 1:
        raise InvalidOption(option, _UNREADABLE)
    if width * height > pixel_budget:
        side = math.isqrt(pixel_budget)
        raise InvalidOption(
            option, f"is {width}×{height} pixels; the most is {pixel_budget:,} pixels (about {side}×{side})"
        )
    if max(width, height) > max_side:
        raise InvalidOption(option, f"is {width}×{height} pixels; a side may be at most {max_side} pixels")


def _normalized(opened: Image.Image, *, mask: bool) -> Image.Image:
    """Decode the first frame, turn it upright, flatten it, and copy its pixels into an image with no metadata."""
    image = ImageOps.exif_transpose(opened)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # 16-bit grey (masks and depth maps often are): scaled to 8 bits, where a plain
        # conversion would clip everything above 255 to white.
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, (0, 0, 0, 255) if mask else (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        image = background
    converted = image.convert("L" if mask else "RGB")
    # convert() copies .info (ICC profile, EXIF, text), which the PNG encoder would write
    # back; a new image from the raw pixels carries none of it.
    return Image.frombytes(converted.mode, converted.size, converted.tobytes())


def too_large(option: str, size: int, max_bytes: int) -> InvalidOption:
    """Return the refusal of an image of `size` bytes over `max_bytes`; chats say it before fetching one."""
    return InvalidOption(option, f"is {_bytes(size, up=True)}; the most is {_bytes(max_bytes)}")


def not_an_image(option: str) -> InvalidOption:
    """Return the refusal of a file that is no PNG, JPEG or WebP image; chats say it from a declared type too."""
    return InvalidOption(option, _FORMATS)


def _bytes(size: int, *, up: bool = False) -> str:
    """Return a file size as a user reads it (``25.3 MB``, ``512 KB``, ``900 bytes``).

    A file's size is rounded up and a limit's down, so a file just over the limit
    never reads as equal to it.
    """
    for unit, name in ((_MIB, "MB"), (_KIB, "KB")):
        if size >= unit:
            tenths = size * 10 / unit
            value = (math.ceil(tenths) if up else math.floor(tenths)) / 10
            return f"{value:g} {name}"
    return f"{size} bytes"

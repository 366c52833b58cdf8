"""PNG info (A1111's tab of that name): how an image someone posts says it was made, and the ``/imagine`` for it here.

A1111, Forge, Civitai and this bot write an image's prompt and settings into its PNG as the
``parameters`` text (`bot.pngmeta`); A1111 and Forge write them into a JPEG's or WebP's EXIF
UserComment. What the text names that this bot has (a catalog model or LoRA, a sampler, the
size) becomes the ``/imagine`` text that asks for it here, checked by the same parser as
anything typed; what it names that this bot has not is left out, and said. The text is
anyone's: it is read without decoding pixels, shown without control characters, inside code
blocks, and cut to fit a chat message.
"""

from __future__ import annotations

import re
import struct

from PIL import Image

from bot.catalog import Catalog
from bot.errors import InvalidOption, shown
from bot.images import image_format
from bot.options import Defaults, Limits, imagine_command, parse_options
from bot.pngmeta import parse_parameters, read_text

__all__ = ["PNG_INFO_MOST", "png_info", "read_parameters"]

# The most characters of the parameters text shown: the reply stays within Discord's 2000.
PNG_INFO_MOST = 1000
# A1111 1.9+ writes the scheduler apart from the sampler ("DPM++ 2M" and "Karras"); these mean the sampler's own.
_OWN_SCHEDULE = {"automatic", "uniform", "normal", "default"}
# EXIF: the Exif sub-IFD, and its UserComment tag, where A1111 writes a JPEG's or WebP's parameters.
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286


def png_info(data: bytes, name: str, catalog: Catalog, defaults: Defaults, limits: Limits) -> str:
    """Return the reply to PNG info on the image file `name`: its parameters text and the ``/imagine`` here.

    Raises:
        InvalidOption: the file is no PNG, JPEG or WebP, or it carries no parameters text.
    """
    try:
        text = read_parameters(data).strip()
    except ValueError:  # no image of ours
        raise InvalidOption("PNG info", "reads PNG, JPEG and WebP files only") from None
    if not text:
        raise InvalidOption("PNG info", f"finds no generation parameters in {_clean(name, 80)}")
    options, missing = _asked(text, catalog)
    command, refused = _command(options, catalog, defaults, limits)
    lines = [f"PNG info of {_clean(name, 80)}:", _block(_clean(text, PNG_INFO_MOST))]
    if command is None:
        lines.append("No /imagine here makes it: its prompt or settings are not ones this bot takes.")
    else:
        lines += ["As /imagine here:", _block(command)]
    if missing + refused:
        lines.append("Left out, as this bot does not take them: " + ", ".join(missing + refused) + ".")
    return "\n".join(lines)


def read_parameters(data: bytes) -> str:
    """Return the A1111 parameters text an image file carries, or '' when it has none; pixels are never decoded.

    A PNG keeps it as the ``parameters`` text chunk; a JPEG or WebP (A1111 and Forge save those too,
    and Civitai serves them) as the EXIF ``UserComment``, found here by walking the file's own
    segments (JPEG) or chunks (WebP) to the EXIF block, which Pillow's `Image.Exif` reads.

    Raises:
        ValueError: the bytes are no PNG, JPEG or WebP.
    """
    kind = image_format(data)
    if kind == "PNG":
        return read_text(data).get("parameters", "")
    if kind is None:
        raise ValueError("not an image")
    block = _jpeg_exif(data) if kind == "JPEG" else _webp_exif(data)
    return _user_comment(block) if block else ""


def _jpeg_exif(data: bytes) -> bytes | None:
    """Return a JPEG's EXIF block (its APP1 segment), from the segments before the image data."""
    offset = 2  # after the start-of-image marker
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no header follows
            return None
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill byte; markers without a length
            offset += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        segment = data[offset + 4 : offset + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            return segment
        offset += 2 + max(length, 2)
    return None


def _webp_exif(data: bytes) -> bytes | None:
    """Return a WebP's EXIF chunk, from its RIFF chunks."""
    offset = 12  # after RIFF, the size and WEBP
    while offset + 8 <= len(data):
        fourcc = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        if fourcc == b"EXIF":
            return data[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def _user_comment(block: bytes) -> str:
    """Return the EXIF UserComment of an EXIF block as text ('' when there is none or it is unreadable)."""
    try:
        exif = Image.Exif()
        exif.load(block)
        raw = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:
        # Pillow's TIFF reader raises whatever hostile bytes trip it into; there is no closed list.
        return ""
    if isinstance(raw, str):
        return raw.replace("\0", "")
    if not isinstance(raw, bytes):
        return ""
    code, body = raw[:8], raw[8:]
    if code != b"UNICODE\0":  # ASCII, or undefined: A1111 writes neither, other tools UTF-8
        return body.decode("utf-8", errors="replace").replace("\0", "")
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return body.decode("utf-16", errors="replace").replace("\0", "")
    # piexif (A1111's writer) writes UTF-16 big-endian, some tools little-endian: the reading that
    # gives more ASCII is the one meant, as parameters are mostly ASCII.
    readings = [body.decode(codec, errors="replace") for codec in ("utf-16-be", "utf-16-le")]
    return max(readings, key=lambda text: sum(char.isascii() for char in text)).replace("\0", "")


def _asked(text: str, catalog: Catalog) -> tuple[dict[str, object], list[str]]:
    """Return the options an A1111 parameters text asks for, and the names in it the catalog has not."""
    parsed = parse_parameters(text)
    fields: dict[str, str] = parsed["fields"]
    options: dict[str, object] = {"prompt": parsed["prompt"]}
    missing: list[str] = []
    if parsed["negative_prompt"]:
        options["negative"] = parsed["negative_prompt"]
    loras = []
    for lora, weight in parsed["loras"]:
        found = catalog.find("lora", lora)
        if found is None:
            missing.append(f"LoRA '{_clean(lora, 60)}'")
        else:
            loras.append(f"{found.name}:{weight:g}")
    if loras:
        options["lora"] = ", ".join(loras)
    model = fields.get("Model")
    if model:
        found = catalog.find("model", model)
        if found is None:
            missing.append(f"model '{_clean(model, 60)}'")
        else:
            options["model"] = found.name
    sampler = fields.get("Sampler", "")
    schedule = fields.get("Schedule type", "")
    if sampler:
        own = not schedule or schedule.lower() in _OWN_SCHEDULE or schedule.lower() in sampler.lower()
        options["scheduler"] = sampler if own else f"{sampler} {schedule}"
    for field, option in (("Steps", "steps"), ("CFG scale", "cfg"), ("Seed", "seed"), ("Size", "size")):
        if fields.get(field):
            options[option] = fields[field]
    return options, missing


def _command(
    options: dict[str, object], catalog: Catalog, defaults: Defaults, limits: Limits
) -> tuple[str | None, list[str]]:
    """Return the /imagine text of `options` less each one this bot refuses, and those; None when the prompt is."""
    options = dict(options)
    refused: list[str] = []
    while True:
        try:
            request = parse_options(options, catalog=catalog, defaults=defaults, limits=limits).request
        except InvalidOption as error:
            # The option the sentence names goes (a sampler this bot lacks, a size off its grid), the rest stay.
            key = next((key for key in options if key != "prompt" and key in error.option.lower()), None)
            if key is None:
                return None, refused
            refused.append(f"{key} '{_clean(str(options.pop(key)), 60)}'")
            continue
        return imagine_command(request, catalog, {}), refused


def _clean(text: str, most: int) -> str:
    """Return anyone's text fit to show: printable lines, no code fence, at most `most` characters."""
    text = "\n".join(shown(line, most) for line in text.splitlines())
    text = text if len(text) <= most else text[: most - 1] + "…"
    return re.sub(r"`{3,}", "'''", text)


def _block(text: str) -> str:
    return f"```\n{text}\n```"

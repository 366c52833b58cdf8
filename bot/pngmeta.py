"""Generation parameters in an image file, in the A1111 ``parameters`` format, where A1111 keeps them.

Other tools (A1111, ComfyUI's loaders, Civitai) read this format, so an image
saved from chat still says how it was made: a PNG in its ``parameters`` text
chunk, a JPEG or WebP in its EXIF UserComment. The text is spliced into the
encoded file without re-encoding the pixels, whatever backend made it, and read
back from anyone's bytes without decoding them.

The format is three parts::

    a red fox <lora:pixel-art:0.8>
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 42, Size: 1216x832, Model: sdxl, ...
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from bot.images import image_format, jpeg_segments, webp_size
from bot.request import GenerationRequest

__all__ = [
    "LORA_TAG",
    "SDXL_CLIP_LAYER",
    "embed_parameters",
    "embed_text",
    "number_text",
    "parameters_text",
    "parse_parameters",
    "read_parameters",
    "read_text",
    "write_parameters",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A1111's tag for a LoRA in a prompt, `<lora:name:weight>` (no weight: 1), the whitespace before it
# going with it: what A1111 writes into parameters, and what the option parser reads in a typed prompt.
LORA_TAG = re.compile(r"\s*<lora:([^<>]*)>", re.IGNORECASE)
# EXIF: the Exif sub-IFD, and its UserComment tag, where A1111 keeps a JPEG's or WebP's parameters.
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE = b"UNICODE\0"  # a UserComment's character code: UTF-16 follows
# The most bytes of one compressed text chunk inflated: A1111's parameters are a few hundred.
_MAX_TEXT = 64 * 1024
# A1111's "Clip skip" of the layer SDXL reads: A1111 counts CLIP's layers from the last, 1, and reads the
# Nth (SDXL's own is the second to last; its 1, the last, A1111 reads for SDXL only when a setting says so).
# This bot's --clip-skip counts the layers skipped past SDXL's: its k is A1111's k + 2.
SDXL_CLIP_LAYER = 2
# Civitai's fields whose values are JSON written as it is (``Civitai resources: [{"type": …}, …]``).
_CIVITAI_JSON = re.compile(r"(Civitai resources|Civitai metadata):\s*")
# A1111's own pattern: values with commas are JSON-quoted.
_PARAM = re.compile(r'\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def number_text(value: float) -> str:
    """Return a number as short as it reads back exactly (7, 0.35, 1e-05)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _quoted(value: str) -> str:
    # A comma or quote would end the value early, a line break the fields line.
    return json.dumps(value, ensure_ascii=False) if any(char in value for char in ',"\n') else value


def write_parameters(
    prompt: str, negative: str | None, loras: Sequence[tuple[str, float]], fields: Mapping[str, str]
) -> str:
    """Write A1111's ``parameters`` text: the prompt and its ``<lora:…>`` tags, the negative line, the fields line."""
    lines = [prompt + "".join(f" <lora:{name}:{number_text(weight)}>" for name, weight in loras)]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    if fields:
        lines.append(", ".join(f"{key}: {_quoted(value)}" for key, value in fields.items()))
    return "\n".join(lines)


def parameters_text(
    request: GenerationRequest, seed: int, extra: dict[str, str] | None = None, *, index: int = 0
) -> str:
    """Write the A1111 ``parameters`` text for one image of a request (image `index`: its variation seed)."""
    fields: dict[str, str] = {
        "Steps": str(request.steps),
        "Sampler": request.scheduler,
        "CFG scale": number_text(request.cfg_scale),
        "Seed": str(seed),
        "Size": f"{request.width}x{request.height}",
        "Model": request.model,
    }
    if request.init_image is not None:
        # A1111's img2img field; the hashes name the stored inputs, so the row and they reproduce it.
        if request.strength is not None:
            fields["Denoising strength"] = number_text(request.strength)
        fields["Init image hash"] = request.init_image
        if request.mask_image:
            fields["Mask image hash"] = request.mask_image
        if request.upscales_alone:
            # A1111's Extras tab: an upscaler alone, after the image was made.
            fields["Postprocess upscale by"] = str(request.upscale)
            fields["Postprocess upscaler"] = request.upscaler or "the backend's own"
        elif request.upscale:
            fields["Hires upscale"] = str(request.upscale)
            fields["Hires upscaler"] = "Lanczos"
        if request.outpaint:
            fields["Outpaint"] = ",".join(str(side) for side in (*request.outpaint.sides, request.outpaint.blur))
    for index, control in enumerate(request.controlnets):
        # A1111's ControlNet extension's field; its guidance start and end are fractions of the steps that run.
        start, end = (control.start_step - 1) / request.run_steps, control.end_step / request.run_steps
        fields[f"ControlNet {index}"] = (
            f"Module: {control.preprocess}, Model: {control.model}, Weight: {number_text(control.weight)}, "
            f"Guidance Start: {number_text(round(start, 4))}, Guidance End: {number_text(round(end, 4))}, "
            f"Control Mode: {control.mode.capitalize()}, Guide hash: {control.guide}"
            # A style reference (--sref): the IP-Adapter on the style layers alone (InstantStyle).
            + (", Layers: style" if control.style else "")
        )
    if request.refiner is not None:
        base_steps, _ = request.split
        fields["Refiner"] = request.refiner.model
        # The percentage asked for, which PNG info reads back as such; the step it came to follows.
        percent = request.refiner.start_percent
        switch = percent / 100 if percent is not None else round(base_steps / request.run_steps, 4)
        fields["Refiner switch at"] = number_text(switch)
        fields["Refiner start step"] = str(base_steps)
    if request.clip_skip:
        fields["Clip skip"] = str(request.clip_skip + SDXL_CLIP_LAYER)
    if request.tiling:
        fields["Tiling"] = "True"  # as A1111 writes it
    if request.variation_strength and request.variation_seed is not None:
        fields["Variation seed"] = str(request.variation_seed + index)
        fields["Variation seed strength"] = number_text(request.variation_strength)
    if request.vae:
        fields["VAE"] = request.vae
    if request.embeddings:
        fields["Embeddings"] = ", ".join(f"{e.name}:{number_text(e.weight)}" for e in request.embeddings)
    if request.count > 1:
        fields["Batch size"] = str(request.count)
    fields.update(extra or {})
    loras = [(lora.name, lora.weight) for lora in request.loras]
    return write_parameters(request.prompt, request.negative_prompt, loras, fields)


def parse_parameters(text: str) -> dict[str, Any]:
    """Read A1111 ``parameters`` text back into prompt, negative prompt, LoRAs and fields."""
    *head, last = text.strip().split("\n")
    if not _PARAM.match(last) or "Steps:" not in last:
        head, last = [*head, last], ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in head:
        if line.startswith("Negative prompt:"):
            negative_lines.append(line.removeprefix("Negative prompt:").strip())
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    prompt = "\n".join(prompt_lines)
    # Anyone's text (PNG info): a tag without a name or whose weight is no number, and a quoted value that
    # is no JSON, are read as they can be; such a tag is given back as unread.
    loras: list[tuple[str, float]] = []
    unread: list[str] = []
    for inner in LORA_TAG.findall(prompt):
        name, _, weight = inner.strip().partition(":")
        if name.strip() and (not weight or _is_number(weight)):
            loras.append((name.strip(), float(weight or 1)))
        else:
            unread.append(f"<lora:{inner}>")
    fields: dict[str, str] = {}
    # Civitai writes some values as bare JSON, commas and all, which A1111's pattern would cut at the first.
    spans: list[tuple[int, int]] = []
    tried: set[str] = set()
    for found in _CIVITAI_JSON.finditer(last):
        if found[1] in tried or (spans and found.start() < spans[-1][1]):
            continue  # each is read once, where it first stands, and not inside the JSON of one before it
        tried.add(found[1])
        try:
            _, end = json.JSONDecoder().raw_decode(last, found.end())
        except (ValueError, RecursionError):
            continue
        fields[found[1]] = last[found.end() : end]
        spans.append((found.start(), end))
    for start, end in reversed(spans):
        last = last[:start] + last[end:]
    for key, value in _PARAM.findall(last):
        if key.strip() in fields and _CIVITAI_JSON.fullmatch(f"{key.strip()}:"):
            continue  # a second one, cut at its first comma, never stands for the first one read whole
        try:
            fields[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
        except ValueError:
            fields[key.strip()] = value.strip('"')
    return {
        "prompt": LORA_TAG.sub("", prompt).strip(),
        "negative_prompt": "\n".join(negative_lines) or None,
        "loras": loras,
        "unread_tags": unread,
        "fields": fields,
    }


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def embed_text(png: bytes, key: str, text: str) -> bytes:
    """Return the PNG with a text chunk added right after IHDR; pixels are untouched.

    Latin-1 text goes in a ``tEXt`` chunk, anything else in ``iTXt`` (UTF-8), as PIL does.
    """
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    try:
        chunk = _chunk(b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        chunk = _chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))
    (ihdr_length,) = struct.unpack(">I", png[8:12])
    end_of_ihdr = 8 + 12 + ihdr_length
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def read_text(png: bytes) -> dict[str, str]:
    """Return the text chunks (tEXt, zTXt, iTXt) of a PNG as a dict, without decoding pixels.

    The bytes may be anyone's: a chunk running past the end ends the reading, a malformed or
    undecodable one is skipped, and compressed text is inflated to `_MAX_TEXT` bytes at most (a
    zlib bomb stops there and is skipped).
    """
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    found: dict[str, str] = {}
    offset = 8
    while offset + 12 <= len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        end = offset + 12 + length
        if kind == b"IEND" or end > len(png):
            break
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            entry = _text_chunk(kind, png[offset + 8 : offset + 8 + length])
            if entry is not None:
                found[entry[0]] = entry[1]
        offset = end
    return found


def _text_chunk(kind: bytes, data: bytes) -> tuple[str, str] | None:
    """Return (key, text) of one text chunk, or None when it is malformed, undecodable or too long."""
    key, separator, rest = data.partition(b"\0")
    if not separator:
        return None
    try:
        if kind == b"tEXt":
            return key.decode("latin-1"), rest.decode("latin-1")
        if kind == b"zTXt":  # a compression method byte (0, deflate), then the compressed text
            return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
        compressed = rest[0]  # iTXt: compression flag and method, language, translated key, the text
        _language, _, rest = rest[2:].partition(b"\0")
        _translated, _, value = rest.partition(b"\0")
        return key.decode("latin-1"), (_inflate(value) if compressed else value).decode("utf-8")
    except (IndexError, ValueError, zlib.error):  # UnicodeDecodeError is a ValueError
        return None


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, _MAX_TEXT)
    if inflater.unconsumed_tail:
        raise ValueError("compressed text longer than this reads")
    return text


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
    return next(
        (payload for marker, payload in jpeg_segments(data) if marker == 0xE1 and payload.startswith(b"Exif\0\0")), None
    )


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
    if code != _UNICODE:  # ASCII, or undefined: A1111 writes neither, other tools UTF-8
        return body.decode("utf-8", errors="replace").replace("\0", "")
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return body.decode("utf-16", errors="replace").replace("\0", "")
    # piexif (A1111's writer) writes UTF-16 big-endian, some tools little-endian: the reading that
    # gives more ASCII is the one meant, as parameters are mostly ASCII.
    readings = [body.decode(codec, errors="replace") for codec in ("utf-16-be", "utf-16-le")]
    return max(readings, key=lambda text: sum(char.isascii() for char in text)).replace("\0", "")


def embed_parameters(data: bytes, output_format: str, text: str) -> bytes:
    """Return an encoded image carrying `text` where A1111 puts it; the image data is untouched.

    A PNG gets the ``parameters`` text chunk (`embed_text`); a JPEG or WebP the EXIF UserComment,
    in UTF-16 big-endian as A1111's piexif writes it: a JPEG as an APP1 segment after its JFIF
    header, a WebP as an EXIF chunk (the file turned extended, VP8X, when it was simple). Text too
    long for a JPEG segment (64 kB) is left out rather than cut.
    """
    if output_format == "png":
        return embed_text(data, "parameters", text)
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE + text.encode("utf-16-be", errors="replace")
    block = exif.tobytes()  # b"Exif\0\0" and the TIFF structure
    if output_format == "jpg":
        return _jpeg_with_exif(data, block)
    return _webp_with_exif(data, block.removeprefix(b"Exif\0\0"))


def _jpeg_with_exif(data: bytes, block: bytes) -> bytes:
    if image_format(data) != "JPEG" or len(block) + 2 > 0xFFFF:
        return data
    segment = b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block
    at = 2  # after the start of image, and after a JFIF header there, which must come first
    if data[2:4] == b"\xff\xe0":
        (length,) = struct.unpack(">H", data[4:6])
        at = 4 + length
    return data[:at] + segment + data[at:]


def _webp_with_exif(data: bytes, tiff: bytes) -> bytes:
    size = webp_size(data)
    if image_format(data) != "WEBP" or size is None:
        return data
    exif = b"EXIF" + struct.pack("<I", len(tiff)) + tiff + b"\0" * (len(tiff) & 1)
    chunks = data[12:]
    if chunks[:4] == b"VP8X":
        flags = chunks[8] | 0x08  # the EXIF flag
        chunks = chunks[:8] + bytes([flags]) + chunks[9:]
    else:
        width, height = size
        # A lossless image says in its header whether it has alpha; the VP8X flag must agree.
        alpha = chunks[:4] == b"VP8L" and (int.from_bytes(chunks[9:13], "little") >> 28) & 1
        flags = 0x08 | (0x10 if alpha else 0)
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        chunks = b"VP8X" + struct.pack("<I", 10) + bytes([flags, 0, 0, 0]) + canvas + chunks
    chunks += exif
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks

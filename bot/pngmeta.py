"""Generation parameters in the PNG text chunk, in the A1111 ``parameters`` format.

Other tools (A1111, ComfyUI's loaders, Civitai) read this format, so an image
saved from chat still says how it was made. The chunk is spliced into the
encoded PNG without re-encoding the pixels, whatever backend made it.

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
from typing import Any

from bot.request import GenerationRequest

__all__ = ["embed_text", "parameters_text", "parse_parameters", "read_text"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LORA_TAG = re.compile(r"\s*<lora:([^:<>]+):([-+0-9.eE]+)>")
# The most bytes of one compressed text chunk inflated: A1111's parameters are a few hundred.
_MAX_TEXT = 64 * 1024
# A1111's own pattern: values with commas are JSON-quoted.
_PARAM = re.compile(r'\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _number(value: float) -> str:
    return f"{value:g}"


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if ("," in value or '"' in value) else value


def parameters_text(request: GenerationRequest, seed: int, extra: dict[str, str] | None = None) -> str:
    """Write the A1111 ``parameters`` text for one image of a request."""
    prompt = request.prompt + "".join(f" <lora:{lora.name}:{_number(lora.weight)}>" for lora in request.loras)
    lines = [prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    fields: dict[str, str] = {
        "Steps": str(request.steps),
        "Sampler": request.scheduler,
        "CFG scale": _number(request.cfg_scale),
        "Seed": str(seed),
        "Size": f"{request.width}x{request.height}",
        "Model": request.model,
    }
    if request.init_image is not None:
        # A1111's img2img field; the hashes name the stored inputs, so the row and they reproduce it.
        if request.strength is not None:
            fields["Denoising strength"] = _number(request.strength)
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
            f"Module: {control.preprocess}, Model: {control.model}, Weight: {_number(control.weight)}, "
            f"Guidance Start: {_number(round(start, 4))}, Guidance End: {_number(round(end, 4))}, "
            f"Control Mode: {control.mode.capitalize()}, Guide hash: {control.guide}"
        )
    if request.refiner is not None:
        base_steps, _ = request.split
        fields["Refiner"] = request.refiner.model
        fields["Refiner switch at"] = _number(round(base_steps / request.run_steps, 4))
        fields["Refiner start step"] = str(base_steps)
    if request.clip_skip:
        fields["Clip skip"] = str(request.clip_skip)
    if request.vae:
        fields["VAE"] = request.vae
    if request.embeddings:
        fields["Embeddings"] = ", ".join(f"{e.name}:{_number(e.weight)}" for e in request.embeddings)
    if request.count > 1:
        fields["Batch size"] = str(request.count)
    fields.update(extra or {})
    lines.append(", ".join(f"{key}: {_quoted(value)}" for key, value in fields.items()))
    return "\n".join(lines)


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
    # Anyone's text (PNG info): a tag whose weight is no number, a quoted value that is no JSON, read as they can be.
    loras = [(name, float(weight)) for name, weight in _LORA_TAG.findall(prompt) if _is_number(weight)]
    fields: dict[str, str] = {}
    for key, value in _PARAM.findall(last):
        try:
            fields[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
        except ValueError:
            fields[key.strip()] = value.strip('"')
    return {
        "prompt": _LORA_TAG.sub("", prompt).strip(),
        "negative_prompt": "\n".join(negative_lines) or None,
        "loras": loras,
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

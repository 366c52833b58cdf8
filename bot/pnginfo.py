"""PNG info (A1111's tab of that name): how an image someone posts says it was made, and the ``/imagine`` for it here.

A1111, Forge, Civitai and this bot write an image's prompt and settings into its PNG as the
``parameters`` text (`bot.pngmeta`); A1111 and Forge write them into a JPEG's or WebP's EXIF
UserComment; ComfyUI keeps the graph it ran, read as such a text by `bot.comfy`. What the text
names that this bot has (a catalog model or LoRA, a sampler, the size) becomes the ``/imagine``
text that asks for it here, checked by the same parser as anything typed; what it names that
this bot has not is left out, and said. The text is anyone's: it is read without decoding
pixels, shown without control characters, inside code blocks, and cut to fit a chat message.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection

from bot.catalog import Catalog, Kind
from bot.comfy import parameters_of_workflow
from bot.errors import InvalidOption, shown
from bot.images import image_format
from bot.options import Defaults, Limits, imagine_command, parse_options
from bot.pngmeta import SDXL_CLIP_LAYER, number_text, parse_parameters, read_parameters, read_text

__all__ = ["PNG_INFO_MOST", "PNG_INFO_REPLY", "png_info"]

# The most characters of the parameters text shown, and of the whole reply where the chat says no other.
PNG_INFO_MOST = 1000
PNG_INFO_REPLY = 2000
# Less room than this for the parameters text, and it is left out (the file holds it).
_SHOWN_LEAST = 80
# A1111 1.9+ writes the scheduler apart from the sampler ("DPM++ 2M" and "Karras"); these mean the sampler's own.
_OWN_SCHEDULE = {"automatic", "uniform", "normal", "default"}
# A1111's ControlNet extension's fields, ``ControlNet 0: "Module: canny, Model: …, Weight: 1, …"``.
_CONTROLNET = re.compile(r"ControlNet \d+")
_CONTROL_MODEL = re.compile(r"\bModel: ([^,]+)")
# Civitai's resource types, as the catalog's kinds and the options that name them; the most resources read.
_CIVITAI_KINDS: dict[str, Kind] = {"checkpoint": "model", "lora": "lora", "locon": "lora", "embed": "embedding"}
_MOST_RESOURCES = 20
# The most characters of A1111's ``Lora hashes`` read: twenty LoRAs' names and hashes are far fewer.
_MOST_HASHES = 4000
# How a kind is named in the sentence of what is left out.
_LABELS = {"lora": "LoRA", "vae": "VAE"}


def png_info(
    data: bytes, name: str, catalog: Catalog, defaults: Defaults, limits: Limits, most: int = PNG_INFO_REPLY
) -> str:
    """Return the reply to PNG info on the image file `name`: its parameters text and the ``/imagine`` here.

    The reply is at most `most` characters (the chat's message limit): the parameters text
    gives way first, since the file holds it; a command that alone is longer is said to be.

    Raises:
        InvalidOption: the file is no PNG, JPEG or WebP, or it carries no parameters text.
    """
    try:
        text = read_parameters(data).strip()
    except ValueError:  # no image of ours
        raise InvalidOption("PNG info", "reads PNG, JPEG and WebP files only") from None
    head = f"PNG info of {_clean(name, 80)}:"
    if not text and image_format(data) == "PNG":
        text = (parameters_of_workflow(read_text(data).get("prompt", "")) or "").strip()
        head = f"PNG info of {_clean(name, 80)} (its ComfyUI workflow, as A1111 writes it):"
    if not text:
        raise InvalidOption("PNG info", f"finds no generation parameters in {_clean(name, 80)}")
    options, missing = _asked(text, catalog)
    command, refused = _command(options, catalog, defaults, limits)
    left = [_clean("Left out, as this bot does not take them: " + ", ".join(missing + refused) + ".", 400)]
    left = left if missing + refused else []
    if command is None:
        tail = ["No /imagine here makes it: its prompt or settings are not ones this bot takes.", *left]
    else:
        tail = ["As /imagine here:", _block(command), *left]
        if len(head) + _size(tail) > most:
            tail = [f"Its /imagine here is {len(command)} characters, more than a reply here holds ({most}).", *left]
    room = most - len(head) - _size(tail) - len(_block("")) - 1
    lines = [head, _block(_clean(text, min(PNG_INFO_MOST, room)))] if room >= _SHOWN_LEAST else [head]
    return "\n".join(lines + tail)


def _asked(text: str, catalog: Catalog) -> tuple[dict[str, object], list[str]]:
    """Return the options an A1111 parameters text asks for, and the names in it the catalog has not."""
    parsed = parse_parameters(text)
    fields: dict[str, str] = parsed["fields"]
    # Three backticks (the parser takes them) would end the command's code block early and let the
    # rest out of it: the command asks for quotes there instead.
    options: dict[str, object] = {"prompt": _unfenced(parsed["prompt"])}
    missing: list[str] = []
    if parsed["negative_prompt"]:
        options["negative"] = _unfenced(parsed["negative_prompt"])
    found = functools.partial(_found, catalog, missing)
    # A1111's ``Lora hashes: "name: 1234abcd5678, …"``: a LoRA whose file was renamed is found by its hash.
    hashes = {
        name.strip(): digest.strip()
        for name, _, digest in (part.partition(":") for part in fields.get("Lora hashes", "")[:_MOST_HASHES].split(","))
    }
    loras = [
        f"{name}:{number_text(weight)}"
        for lora, weight in parsed["loras"]
        if (name := found("lora", lora, hashes.get(lora, "")))
    ]
    if loras:
        options["lora"] = ", ".join(loras)
    missing += [f"tag '{_clean(tag, 60)}'" for tag in parsed["unread_tags"]]
    if fields.get("Model") and (model := found("model", fields["Model"], fields.get("Model hash", ""))):
        options["model"] = model
    sampler = fields.get("Sampler", "")
    schedule = fields.get("Schedule type", "")
    if sampler:
        own = not schedule or schedule.lower() in _OWN_SCHEDULE or schedule.lower() in sampler.lower()
        options["scheduler"] = sampler if own else f"{sampler} {schedule}"
    for field, option in (("Steps", "steps"), ("CFG scale", "cfg"), ("Seed", "seed"), ("Size", "size")):
        if fields.get(field):
            options[option] = fields[field]
    if fields.get("Tiling", "").lower() == "true":
        options["tile"] = "on"
    clip_skip = fields.get("Clip skip", "").strip()
    if clip_skip in ("1", "2", "3", "4"):  # A1111's 1 and 2 read SDXL's own layer: no layer skipped here
        options["clip_skip"] = str(max(0, int(clip_skip) - SDXL_CLIP_LAYER))
    elif clip_skip:
        missing.append(f"clip skip '{_clean(clip_skip, 20)}'")
    if fields.get("Refiner") and found("refiner", fields["Refiner"]):
        # The model's own refiner takes over where the image's did; a switch out of range is refused.
        options["refiner"] = _percent(fields.get("Refiner switch at", ""))
    if fields.get("VAE") and (vae := found("vae", fields["VAE"], fields.get("VAE hash", ""))):
        options["vae"] = vae
    embeddings = []
    for named in filter(None, (part.strip() for part in fields.get("Embeddings", "").split(","))):
        embedding, _, weight = named.rpartition(":") if ":" in named else (named, "", "1")
        if name := found("embedding", embedding):
            embeddings.append(f"{name}:{weight}")
    if embeddings:
        options["embedding"] = ", ".join(embeddings)
    # The catalog's kinds that these options name are the options' own names.
    options |= _civitai(catalog, fields.get("Civitai resources", ""), missing, named=set(options))
    missing += _not_carried(fields)
    variation = fields.get("Variation seed strength", "")
    if fields.get("Variation seed") and variation.strip() not in ("", "0", "0.0"):  # A1111 writes them only above 0
        options["variation_seed"] = fields["Variation seed"]  # first: a refusal naming it takes it alone
        options["variation"] = variation
    return options, missing


def _found(catalog: Catalog, missing: list[str], kind: Kind, written: str, file_hash: str = "") -> str | None:
    """Return the catalog's name for the `kind` an image's parameters call `written`, or say it is left out."""
    entry = catalog.find_written(kind, written, file_hash)
    if entry is None:
        missing.append(f"{_LABELS.get(kind, kind)} '{_clean(written, 60)}'")
    return None if entry is None else entry.name


def _not_carried(fields: dict[str, str]) -> list[str]:
    """Return what made the image that no ``/imagine`` text carries, as the left-out list names it."""
    said = []
    if fields.get("Hires upscale") and "Init image hash" not in fields:  # A1111's hires fix, in one go
        said.append(f"hires fix '{_clean(fields['Hires upscale'], 20)}' (Upscale does it after)")
    elif fields.get("Denoising strength"):  # image to image: the image it started from is not in the file
        said.append(f"the image it started from (strength '{_clean(fields['Denoising strength'], 20)}')")
    for key, label in (("Face restoration", "face restoration"), ("ADetailer model", "ADetailer")):
        if fields.get(key):
            said.append(f"{label} '{_clean(fields[key], 60)}'")
    for key, value in fields.items():
        if _CONTROLNET.fullmatch(key):  # the A1111 extension's unit, and this bot's own
            model = _CONTROL_MODEL.search(value)
            name = _clean(model[1].strip() if model else value, 60)
            said.append(f"ControlNet '{name}' (its guide is not in the file)")
    return said


def _civitai(catalog: Catalog, resources: str, missing: list[str], named: Collection[str]) -> dict[str, str]:
    """Return the options Civitai's resources ask for: its checkpoint, LoRAs and embeddings by model version.

    Civitai's own generator writes no ``Model`` and no LoRA tags, only these; a catalog entry whose Runware
    AIR is that version (``civitai:101055@128078``) is it. An option the text `named` itself is left as read.
    """
    try:
        listed = json.loads(resources) if resources else []
    except (ValueError, RecursionError):
        listed = []
    asked: dict[str, list[str]] = {}
    for resource in listed[:_MOST_RESOURCES] if isinstance(listed, list) else []:
        kind = _CIVITAI_KINDS.get(str(resource.get("type", "")).lower()) if isinstance(resource, dict) else None
        version = resource.get("modelVersionId") if kind else None
        if kind is None or kind in named or not isinstance(version, int) or isinstance(version, bool):
            continue
        entry = catalog.find_civitai(kind, version)
        if entry is None:
            called = f"{resource.get('modelName', '')} {resource.get('modelVersionName', '')}".strip()
            missing.append(f"{_LABELS.get(kind, kind)} '{_clean(called or f'Civitai version {version}', 60)}'")
            continue
        weight = resource.get("weight", 1)
        weighted = kind != "model" and isinstance(weight, int | float) and not isinstance(weight, bool)
        asked.setdefault(kind, []).append(f"{entry.name}:{number_text(weight)}" if weighted else entry.name)
    return {kind: ", ".join(names[:1] if kind == "model" else names) for kind, names in asked.items()}


def _percent(fraction: str) -> str:
    """Return a fraction of the steps (A1111's ``Refiner switch at: 0.8``) as the percentage ``--refiner`` takes."""
    try:
        return f"{round(float(fraction) * 100)}"
    except (ValueError, OverflowError):
        return fraction.strip() or "none given"


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
            named = error.option.lower()
            key = next((key for key in options if key != "prompt" and key.replace("_", " ") in named), None)
            if key is None:
                return None, refused
            refused.append(f"{key} '{_clean(str(options.pop(key)), 60)}'")
            continue
        return imagine_command(request, catalog, {}), refused


def _clean(text: str, most: int) -> str:
    """Return anyone's text fit to show: printable lines, no code fence, at most `most` characters."""
    text = "\n".join(shown(line, most) for line in text.splitlines())
    text = text if len(text) <= most else text[: most - 1] + "…"
    return _unfenced(text)


def _unfenced(text: str) -> str:
    """Return text that cannot close a code block: each run of three or more backticks as three quotes."""
    return re.sub(r"`{3,}", "'''", text)


def _size(lines: list[str]) -> int:
    """Return the characters `lines` add to a reply, each on a line of its own."""
    return sum(len(line) + 1 for line in lines)


def _block(text: str) -> str:
    return f"```\n{text}\n```"

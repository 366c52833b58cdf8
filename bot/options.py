"""Turn chat options into a complete, checked `GenerationRequest`.

Two inputs, one path. Text (Slack, the console) such as
``a red fox --seed 42 --ar 16:9 --lora pixel-art:0.8, film-grain`` is split
into a raw mapping of option names to strings; a mapping of typed options (what
Discord hands over) is used as it is. `_build` then turns the raw mapping into
a request, filling every absent option from the user's `Defaults`, then the
catalog's model entry, then the model's architecture, and `bot.rules.check`
adds the warnings. The only exception that leaves this module is
`InvalidOption`, whose message names the option and what it accepts.

Text syntax:
    * The prompt is everything before the first flag. A flag is ``--name``
      (or ``—name``, the em dash phones type for ``--``) at the start of a
      word; its value runs until the next flag, so ``--lora a:0.8, b`` is one
      value. ``--name=value`` also works. Flag names ignore case and ``_``/``-``.
    * Quotes (``"…"``, ``'…'``, ``“…”``, ``‘…’``) opening at the start of a
      word and closing at the end of one protect what they hold: a ``--`` inside
      is not a flag. They are removed when they wrap a whole value (or the whole
      prompt), and kept as typed anywhere else, so an apostrophe or quoted words
      in a prompt reach the model unchanged.
    * A mapping's ``prompt`` is read the same way, so flags typed into Discord's
      prompt field work too; an option given both ways is an error.

Defaults: ``steps``, ``scheduler``, ``cfg`` and the size in `Defaults` were
chosen for `Defaults.model`, so they apply only when the request uses that
model; another model gets its catalog defaults. `Defaults.refiner_percent`
applies to any model that has a refiner, unless the request says
``--refiner 0``; when that default would leave the base or the refiner without
a step, it is skipped with a warning rather than failing a request that never
asked for a refiner.

Aspect ratios: for a model whose native area is within 10 % of 1024² the
nearest (by ratio) of the nine standard SDXL buckets is used (`SDXL_BUCKETS`).
Any other native size (the 128² tiny model, 512² SDXL Turbo) has no published
buckets, so `size_for_ratio` picks, among all sizes that are multiples of 64
within 128–2048, the one minimising ``|ln(ratio error)| + ½·|ln(area / native
area)|``: the ratio counts most, the area keeps it near the native size. When
the size made differs from the asked ratio by more than 5 %, a warning says so.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import ValidationError

from bot.catalog import Catalog, CatalogEntry, Kind
from bot.controls import PROBE_SHA, STYLE_WEIGHT, Guide, build_controls, guide_refs
from bot.errors import InvalidOption, shown
from bot.permutations import escaped
from bot.pngmeta import LORA_TAG, number_text
from bot.request import (
    CFG,
    CLIP_SKIP,
    COUNT,
    DEFAULT_STRENGTH,
    MAX_ADDONS,
    MAX_CONTROLNETS,
    OUTPAINT_BLUR,
    PROMPT_LENGTH,
    REFINER_PERCENT,
    REPEAT,
    SEED,
    SIDE,
    STEPS,
    STRENGTH,
    VARIATION,
    WEIGHT,
    ZOOM,
    ControlNetSpec,
    GenerationRequest,
    Outpaint,
    Range,
    RefinerSpec,
    WeightedName,
    parse_size,
    refiner_percent_reason,
    refiner_split,
    run_steps,
)
from bot.rules import (
    SCHEDULERS,
    Architecture,
    Limits,
    architecture_of,
    check,
    match_scheduler,
    require_refiner_support,
)
from bot.weighting import weights_reason

__all__ = [
    "OPTIONS",
    "SDXL_BUCKETS",
    "Defaults",
    "FlagRun",
    "ImageRefs",
    "Inputs",
    "Limits",
    "PanDirection",
    "Parsed",
    "as_typed",
    "flag_runs",
    "flags_help",
    "image_refs",
    "imagine_command",
    "input_images",
    "make_square",
    "option_named",
    "pan",
    "parse_options",
    "parse_text",
    "reworded",
    "size_for_image",
    "size_for_ratio",
    "zoom_out",
]

_T = TypeVar("_T")


def _span(allowed: Range[int] | Range[float]) -> str:
    return f"{allowed.low:g}{' to ' if allowed.low < 0 else '–'}{allowed.high:g}"


@dataclass(frozen=True, slots=True)
class _Option:
    """One option of the raw mapping: how users type it, and what errors and help say of it."""

    name: str
    flags: tuple[str, ...] = ()  # as matched: lower case, `-` for `_`; help lists them in this order
    value: str = ""  # help's placeholder for what it takes
    help: str = ""  # none for the prompt, which is typed without a flag
    label: str = ""  # an error's name for it where its name reads badly in a sentence
    example: str = ""  # what "needs a value" suggests; without one, it points to the help
    keys: tuple[str, ...] = ()  # mapping keys besides its name and flags (a request field, Discord's names)
    fields: tuple[str, ...] = ()  # request fields it sets under another name, for pydantic's errors


# One record per option, in the order of the help (and README's table); the ranges come from the request model.
_TABLE: tuple[_Option, ...] = (
    _Option("prompt"),
    _Option("negative", ("no", "negative"), "TEXT", "what to keep out of the image",
            label="negative prompt", keys=("negative_prompt",), fields=("negative_prompt",)),
    _Option("model", ("model",), "NAME", "a catalog model", example="a catalog name like sdxl"),
    _Option("seed", ("seed",), "N", "the same seed and settings make the same image again (1–2⁶³−1; default random)"),
    _Option("steps", ("steps",), "N", f"denoising steps ({_span(STEPS)}; default the model's)"),
    _Option("refiner", ("refiner",), "PERCENT",
            f"the SDXL refiner takes the steps after this share ({_span(REFINER_PERCENT)}, or off)",
            example="a percent like 85, or off"),
    _Option("lora", ("lora",), "NAME[:WEIGHT], …",
            f"up to {MAX_ADDONS} LoRAs, weight {_span(WEIGHT)} (1 when left out)",
            example="like pixel-art:0.8, toy-face", fields=("loras",)),
    _Option("embedding", ("embedding",), "NAME[:WEIGHT], …",
            f"textual-inversion embeddings, as --lora (up to {MAX_ADDONS})",
            example="a catalog name, with a weight if you like (name:0.8)", fields=("embeddings",)),
    _Option("style", ("style",), "NAME", "a catalog style: its words around the prompt and in the negative",
            example="a catalog name like cinematic"),
    _Option("ar", ("ar",), "W:H", "aspect ratio, 1:4 to 4:1 (on SDXL the nearest SDXL size)",
            label="aspect ratio", example="like 16:9"),
    _Option("size", ("size",), "WxH", f"width x height in multiples of {SIDE.step}, {_span(SIDE)} (not with --ar)",
            example="like 1216x832", fields=("width", "height")),
    _Option("cfg", ("cfg",), "N", f"how closely to follow the prompt ({_span(CFG)}; default the model's)",
            fields=("cfg_scale",)),
    _Option("scheduler", ("sampler", "scheduler"), "NAME", "the sampler: " + ", ".join(SCHEDULERS),
            example="like Euler a"),
    _Option("count", ("n", "count"), "N", f"images at once ({_span(COUNT)}); image i uses seed + i"),
    _Option("repeat", ("repeat", "r"), "N",
            f"the prompt as N jobs ({_span(REPEAT)}), each its own card and seed (with --seed: seed + k × --n)"),
    _Option("variation", ("variation", "var", "subseed-strength"), "0–1",
            "a close variant of the seed's image: its noise moved this far toward another seed's (A1111's)",
            example="a strength like 0.2", fields=("variation_strength",)),
    _Option("variation_seed", ("variation-seed", "subseed"), "N",
            "with --variation: the seed moved toward (default random); image i uses it + i",
            label="variation seed", example="a seed like 1234"),
    _Option("clip_skip", ("clip-skip",), "N", f"skip the text encoder's last layers ({_span(CLIP_SKIP)})",
            label="clip skip"),
    _Option("vae", ("vae",), "NAME", "a catalog VAE (default: the model's own)",
            label="VAE", example="a catalog name like sdxl-vae-fp16-fix"),
    _Option("tile", ("tile", "tiling"), "[off]", "seamless: the image repeats edge to edge, a texture (no value: on)",
            fields=("tiling",)),
    _Option("format", ("format",), "png|jpg|webp", "the file format (default png)",
            example="png, jpg or webp", fields=("output_format",)),
    _Option("image", ("image",), "#ID[.N]",
            "start from an image: a previous one (#12, #12.2) or, in the console, a file",
            example="an attachment, or a previous image like #12 (#12.2: its second image)", fields=("init_image",)),
    _Option("strength", ("strength",), "0–1",
            f"how much of --image is made again (default {DEFAULT_STRENGTH:g}); steps × strength of the steps run"),
    _Option("mask", ("mask",), "#ID[.N]", "with --image: white repaints, black keeps",
            example="an attachment, or a previous image like #12", fields=("mask_image",)),
    _Option("outpaint", ("outpaint",), "T,R,B,L[,BLUR]",
            f"with --image: extend it by these pixels (multiples of {SIDE.step}; one number: every side)",
            example="pixels to add as TOP,RIGHT,BOTTOM,LEFT (multiples of 64), or one number for every side"),
    _Option("zoom", ("zoom",), f"{ZOOM.low:g}–{ZOOM.high:g}", "with --image: zoom out, extending every side evenly",
            example="like 1.5 or 2"),
    # ControlNet's, which `bot.controls` reads (Discord's typed options call them control…).
    _Option("cn", ("cn", "controlnet"), "NAME | NAME=GUIDE[:W][@S-E], …",
            f"ControlNets (up to {MAX_CONTROLNETS}), structure from a guide image", keys=("control",)),
    _Option("guide", ("guide",), "#ID[.N]",
            "with --cn NAME: the guide image (a previous image, an attachment, a console file)",
            keys=("control_image",)),
    _Option("preprocess", ("preprocess",), "none|canny|…",
            "how the guide becomes the ControlNet's map (default: the ControlNet's own)"),
    _Option("cn_weight", ("cn-weight",), "0–2", "how strongly the ControlNet steers (default 1)",
            label="cn-weight", keys=("control_weight",)),
    _Option("cn_start", ("cn-start",), "STEP|PCT%", "the first step it acts on (default 1)",
            label="cn-start", keys=("control_start",)),
    _Option("cn_end", ("cn-end",), "STEP|PCT%", "the last step it acts on (default the last that runs)",
            label="cn-end", keys=("control_end",)),
    _Option("cn_mode", ("cn-mode",), "balanced|prompt|controlnet",
            "which matters more: both, your prompt, or the ControlNet", label="cn-mode", keys=("control_mode",)),
    # Midjourney's style reference, which `bot.controls` reads too (Discord's attachment is style_image).
    _Option("sref", ("sref",), "#ID[:W] …",
            f"style references (up to {MAX_CONTROLNETS}): the images' look, not what they show (weight 0–2, 1)",
            label="sref", example="a previous image like #12, with a weight if you like (#12:0.6)",
            keys=("style_image",)),
    _Option("sw", ("sw",), f"0–{STYLE_WEIGHT.stop - 1}",
            "with --sref: its weight in percent for images without their own (default 100)", label="sw",
            example="a percent like 50"),
)  # fmt: skip

# The option names of the raw mapping (and of Discord's typed options).
OPTIONS: tuple[str, ...] = tuple(option.name for option in _TABLE)

# The standard SDXL training buckets (about one megapixel each).
SDXL_BUCKETS: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
)

# The lookups parsing needs, derived so that the table stays the one place an option changes.
_FLAGS: dict[str, str] = {flag: option.name for option in _TABLE for flag in option.flags}
_KEYS: dict[str, str] = {
    key: option.name
    for option in _TABLE
    for key in (option.name, *(flag.replace("-", "_") for flag in option.flags), *option.keys)
}
_LABELS: dict[str, str] = {option.name: option.label or option.name for option in _TABLE}
_EXAMPLES: dict[str, str] = {option.name: option.example for option in _TABLE if option.example}
# An error's option (a label or an option) → the option, to name it as typed.
_OPTION_OF: dict[str, str] = {label: option for option, label in _LABELS.items()} | {o: o for o in OPTIONS}
# GenerationRequest field → option, for the (defensive) pydantic error translation.
_OPTION_OF_FIELD: dict[str, str] = {field: option.name for option in _TABLE for field in option.fields}

_MAX_RATIO = 4.0
_RATIO_TOLERANCE = 1.05
_FORMATS: dict[str, Literal["png", "jpg", "webp"]] = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}
_REFINER_OFF = {"0", "off", "no", "none", "false"}
_VAE_OWN = {"default", "none", "auto", "off"}


def flags_help() -> str:
    """Return one line per flag of `/imagine`: how it is typed, what it takes and its range."""
    rows = [(", ".join(f"--{flag}" for flag in o.flags) + " " + o.value, o.help) for o in _TABLE if o.help]
    width = max(len(typed) for typed, _ in rows)
    return "\n".join(f"    {typed.ljust(width)}  {text}" for typed, text in rows)


@dataclass(frozen=True, slots=True)
class Defaults:
    """Per-user and configured defaults, used for whatever a request leaves out."""

    model: str
    steps: int | None = None
    refiner_percent: int | None = None
    width: int | None = None
    height: int | None = None
    scheduler: str | None = None
    cfg: float | None = None


@dataclass(frozen=True, slots=True)
class ImageRefs:
    """The images a request names, as typed (``#12``, ``#12.2``, or what the chat resolves: a file)."""

    image: str | None = None
    mask: str | None = None
    guides: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()  # the style references' (--sref), whose guides follow the ControlNets'

    @property
    def every_guide(self) -> tuple[tuple[str, str], ...]:
        """Return each guide with the option that names it, in the order of the request's ControlNets."""
        return (*((ref, "guide") for ref in self.guides), *((ref, "sref") for ref in self.styles))


@dataclass(frozen=True, slots=True)
class Inputs:
    """The stored input images a request starts from: sha256 names (`ImageStore.save_input`) and sizes."""

    image: str
    width: int
    height: int
    mask: str | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    """A complete request, the warnings to show under its image, and how many jobs of it to queue (``--repeat``)."""

    request: GenerationRequest
    warnings: tuple[str, ...] = ()
    repeat: int = 1


def image_refs(given: str | Mapping[str, object]) -> ImageRefs:
    """Return the images chat text or typed options name, for the caller to load, check and store.

    Raises:
        InvalidOption: an option is malformed, or a mask or strength comes without an image.
    """
    return _typed_errors(given, _image_refs)


def _image_refs(raw: Mapping[str, object]) -> ImageRefs:
    _require_image(raw)
    image = _text("image", raw["image"]) if "image" in raw else None
    mask = _text("mask", raw["mask"]) if "mask" in raw else None
    guides, styles = guide_refs(raw)
    return ImageRefs(image=image, mask=mask, guides=guides, styles=styles)


def parse_options(
    given: str | Mapping[str, object],
    *,
    catalog: Catalog,
    defaults: Defaults,
    limits: Limits,
    inputs: Inputs | None = None,
    guides: Sequence[Guide] | None = None,
) -> Parsed:
    """Parse chat text, or typed options (a Discord slash command's), into a checked request.

    Args:
        given: chat text, the prompt followed by ``--flag value`` options (``a red fox --seed 42 --ar 16:9``);
            or typed options: option name (see `OPTIONS`; flag names and aliases also work) to value, a str
            or an already typed int/float, None meaning absent, with flags inside ``prompt`` read as in text.
        catalog: the models, refiners, VAEs, LoRAs and embeddings users may name.
        defaults: the user's defaults (and the configured default model).
        limits: the policy the request must fit.
        inputs: the stored images that `image_refs` named, once loaded and checked.
        guides: the stored ControlNet guides `image_refs` named, in order, once loaded and preprocessed.

    Returns:
        The resolved request (its seed is None unless given) and its warnings.

    Raises:
        InvalidOption: an option is unknown, malformed, out of range or does not fit the model.
    """
    return _typed_errors(given, lambda raw: _build(raw, catalog, defaults, limits, inputs, guides))


# The same parser under the name that reads better where the input is chat text.
parse_text = parse_options


def _typed_errors(given: str | Mapping[str, object], read: Callable[[Mapping[str, object]], _T]) -> _T:
    """Read the raw options of chat text or typed options, naming the option of an error as the user typed it."""
    raw, typed = _raw_and_typed(given)
    try:
        return read(raw)
    except InvalidOption as error:
        raise _as_typed(error, typed) from None


def as_typed(given: str | Mapping[str, object], error: InvalidOption) -> InvalidOption:
    """Return `error` naming its option as the user typed it in `given`.

    For refusals made after parsing (an image that cannot be read), so they read like the parser's own.
    """
    try:
        _, typed = _raw_and_typed(given)
    except InvalidOption:
        return error
    return _as_typed(error, typed)


def _raw_and_typed(given: str | Mapping[str, object]) -> tuple[dict[str, object], dict[str, str]]:
    """Return the raw options and how the user typed each option's name.

    A mapping's keys are the user's (Discord's options); text's prompt is ours, not a name they typed.
    """
    if not isinstance(given, str):
        return _raw_options(given)
    raw, typed = _raw_options({"prompt": given})
    return raw, {option: name for option, name in typed.items() if option != "prompt"}


def _as_typed(error: InvalidOption, typed: Mapping[str, str]) -> InvalidOption:
    """Name the option in an error as the user typed it (``--cfg``, Discord's ``cfg``), not by its label."""
    option = _OPTION_OF.get(error.option)
    if option is None or option not in typed:
        return error
    return InvalidOption(typed[option], error.reason, error.suggestions, typed=True)


# ---------------------------------------------------------------------------
# The other way: a request → the /imagine text that parses back to it


def input_images(request: GenerationRequest) -> list[str]:
    """Return the stored images a request starts from, as the user gave them (a guide's source, not its map)."""
    found = [request.init_image, request.mask_image, *(c.source or c.guide for c in request.controlnets)]
    return [sha for sha in found if sha is not None]


def imagine_command(request: GenerationRequest, catalog: Catalog, refs: Mapping[str, str]) -> str | None:
    """Return the ``/imagine`` text that reads back as this very request, or None where none does.

    Read back as a chat's text is read: its one prompt (`bot.permutations`, the braces of the
    prompt and negative escaped), then `parse_text`.

    Every setting is written out, so the text makes the same request whatever the reader's
    saved defaults are (``--refiner off`` too, on a model with a refiner). Input images are
    written as the previous images that hold them, from `refs` (sha256 → ``#12`` or
    ``#12.2``); the caller passes the same images back to `parse_text` as its `inputs` and
    `guides`. A prompt that would read as flags or lose its quotes is quoted.

    None for what no ``/imagine`` asks: an upscale, a refiner of another model than the
    catalog's or from a step number, an input image that is no previous image (an
    attachment), ControlNets with different modes or preprocessors than one flag can say,
    or text that no quoting protects.
    """
    model = catalog.find("model", request.model)
    if model is None or request.upscale is not None:
        return None
    flags: list[tuple[str, str | None]] = [("--model", model.name)]
    if request.init_image is None:
        flags.append(("--size", f"{request.width}x{request.height}"))
    flags += [
        ("--steps", str(request.steps)),
        ("--cfg", number_text(request.cfg_scale)),
        ("--scheduler", request.scheduler),
    ]
    if request.seed is not None:
        flags.append(("--seed", str(request.seed)))
    if request.count != 1:
        flags.append(("--count", str(request.count)))
    if request.clip_skip:
        flags.append(("--clip-skip", str(request.clip_skip)))
    if request.vae is not None:
        flags.append(("--vae", request.vae))
    flags += _refiner_flag(request, model)
    for flag, names in (("--lora", request.loras), ("--embedding", request.embeddings)):
        if names:
            flags.append((flag, ", ".join(_weighted_text(name) for name in names)))
    if request.tiling:
        flags.append(("--tile", "on"))
    if request.variation_strength:
        flags.append(("--variation", number_text(request.variation_strength)))
        if request.variation_seed is not None:
            flags.append(("--variation-seed", str(request.variation_seed)))
    if request.output_format != "png":
        flags.append(("--format", request.output_format))
    flags += _image_flags(request, refs)
    flags += _control_flags(request, catalog, refs)
    if any(value is None for _, value in flags):
        return None
    rest = " ".join(f"{flag} {value}" for flag, value in flags)
    return _with_texts(request.prompt, request.negative_prompt, rest)


def _with_texts(prompt: str, negative: str | None, rest: str) -> str | None:
    """Return ``/imagine PROMPT [--no NEGATIVE] REST`` with the two texts quoted where they must be, or None.

    Checked by reading it back with the parser itself (no rule of `_scan` is restated here):
    a text may hold words that read as flags, or quotes that would pair up across the flags.
    """
    # Their braces are the user's own characters, not choices (`bot.permutations`).
    prompt, negative = escaped(prompt), None if negative is None else escaped(negative)
    negatives: Sequence[tuple[str, str]] = _QUOTE_PAIRS if negative is not None else (("", ""),)
    for open_prompt, close_prompt in _QUOTE_PAIRS:
        for open_negative, close_negative in negatives:
            text = f"{open_prompt}{prompt}{close_prompt}"
            if negative is not None:
                text += f" --no {open_negative}{negative}{close_negative}"
            text += f" {rest}"
            try:
                read, flags = _split_text(text)
            except InvalidOption:  # a word of theirs reads as a flag that does not exist, or as one given twice
                continue
            negatives_read = [value for _, option, value in flags if option == "negative"]
            whole = len(flags) == len(_scan(rest)[1]) + len(negatives_read)  # no flag of `rest` swallowed
            if read == prompt and negatives_read == ([] if negative is None else [negative]) and whole:
                return f"/imagine {text}"
    return None


def _weighted_text(name: WeightedName) -> str:
    return name.name if name.weight == 1.0 else f"{name.name}:{number_text(name.weight)}"


def _refiner_flag(request: GenerationRequest, model: CatalogEntry) -> list[tuple[str, str | None]]:
    spec = request.refiner
    if spec is None:
        # Said, so that the reader's default refiner does not join in.
        return [("--refiner", "off")] if model.refiner is not None else []
    if spec.start_percent is None or spec.model != model.refiner:
        return [("--refiner", None)]
    return [("--refiner", str(spec.start_percent))]


def _image_flags(request: GenerationRequest, refs: Mapping[str, str]) -> list[tuple[str, str | None]]:
    if request.init_image is None or request.strength is None:
        return []
    flags = [("--image", refs.get(request.init_image)), ("--strength", number_text(request.strength))]
    if request.mask_image is not None:
        flags.append(("--mask", refs.get(request.mask_image)))
    if request.outpaint is not None:
        flags.append(("--outpaint", ",".join(str(n) for n in (*request.outpaint.sides, request.outpaint.blur))))
    return flags


def _control_flags(
    request: GenerationRequest, catalog: Catalog, refs: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    styles = [control for control in request.controlnets if control.style]
    controls = [control for control in request.controlnets if not control.style]
    if not controls:
        return _style_flags(request, styles, refs)
    # --preprocess and --cn-mode apply to every ControlNet that reads a map (an IP-Adapter reads the
    # image itself); without --preprocess, each takes its catalog entry's own.
    maps = [control for control in controls if not catalog.is_ip_adapter(control.model)]
    modes = {control.mode for control in maps}
    own = [(entry.preprocess or "none") if (entry := catalog.find("controlnet", c.model)) else None for c in maps]
    chosen = [control.preprocess for control in maps]
    if len(modes) > 1 or (chosen != own and len(set(chosen)) > 1):
        return [("--cn", None)]
    items: list[str | None] = []
    for control in controls:
        ref = refs.get(control.source or control.guide)
        weight = "" if control.weight == 1.0 else f":{number_text(control.weight)}"
        items.append(None if ref is None else f"{control.model}={ref}{weight}@{control.start_step}-{control.end_step}")
    flags: list[tuple[str, str | None]] = [("--cn", None if None in items else ", ".join(map(str, items)))]
    if modes - {"balanced"}:
        flags.append(("--cn-mode", maps[0].mode))
    if chosen != own:
        flags.append(("--preprocess", chosen[0]))
    return flags + _style_flags(request, styles, refs)


def _style_flags(
    request: GenerationRequest, styles: Sequence[ControlNetSpec], refs: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    """Return ``--sref #3:0.6 #4``: style references come after the ControlNets, on every step that runs."""
    if not styles:
        return []
    last = request.controlnets[-len(styles) :]
    if any(not c.style or (c.start_step, c.end_step) != (1, request.run_steps) for c in last):
        return [("--sref", None)]
    items = [refs.get(c.guide) for c in styles]
    weights = ["" if c.weight == 1.0 else f":{number_text(c.weight)}" for c in styles]
    return [("--sref", None if None in items else " ".join(f"{i}{w}" for i, w in zip(items, weights, strict=True)))]


_QUOTE_PAIRS = (("", ""), ('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"))


# ---------------------------------------------------------------------------
# Layer 1: text and mappings → one raw mapping of option → value


def _raw_options(options: Mapping[str, object]) -> tuple[dict[str, object], dict[str, str]]:
    """Return option → value, and option → its name as the user typed it (a key, or a flag such as ``--cfg``)."""
    raw: dict[str, object] = {}
    given_as: dict[str, str] = {}
    for key, value in options.items():
        if value is None:
            continue
        if not isinstance(key, str):
            raise InvalidOption(shown(key), "is not an option", (), typed=True)
        option = _KEYS.get(key.strip().lower().replace("-", "_"))
        if option is None:
            name = shown(key) or "''"  # an empty key still needs a name to start the sentence
            raise InvalidOption(name, "is not an option", _close(key.strip().lower(), list(OPTIONS)), typed=True)
        if option in raw:
            raise InvalidOption(shown(key), f"repeats '{given_as[option]}', the same option", typed=True)
        raw[option] = value
        given_as[option] = shown(key.strip())
    prompt = raw.get("prompt")
    if isinstance(prompt, str):
        text, flagged = _split_text(prompt)
        raw["prompt"] = text
        if flagged and not text.strip():
            # "--seed 3 a cat": every word went to a flag; say where the prompt goes, not only that it is missing.
            raise InvalidOption("prompt", "is empty; describe the image first, then the flags: a red fox --seed 7")
        for typed, option, value in flagged:
            if option in raw:
                reason = f"is given twice: in the prompt and as the {given_as[option]} option"
                raise InvalidOption(typed, reason, typed=True)
            raw[option] = value
            given_as[option] = typed
    return raw, given_as


_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’"}
_FLAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class FlagRun:
    """A flag in chat text with its value: ``text[start:end]`` (up to the next flag) holds both.

    `flag` is as typed (``--AR``, ``—no``); `option` the option it sets, None for a name
    ``/imagine`` does not have (a user's option set, a typo).
    """

    start: int
    end: int
    flag: str
    option: str | None
    value: str

    @property
    def name(self) -> str:
        """The flag's name as it is saved and compared: no dashes, lower case, ``-`` for ``_``."""
        return self.flag.lstrip("-—").lower().replace("_", "-")


def flag_runs(text: str) -> list[FlagRun]:
    """Return the flags of chat text in order, quoted values read as the parser reads them."""
    return _runs(text, *_scan(text))


def option_named(key: str) -> str | None:
    """Return the option a typed option's key (``ar``, ``control_image``…) sets; None when it is none."""
    return _KEYS.get(key.strip().lower().replace("-", "_"))


def _runs(text: str, spans: dict[int, int], flags: list[tuple[int, str, int]]) -> list[FlagRun]:
    runs = []
    for index, (start, typed, value_start) in enumerate(flags):
        end = flags[index + 1][0] if index + 1 < len(flags) else len(text)
        option = _FLAGS.get(typed.lstrip("-—").lower().replace("_", "-"))
        runs.append(FlagRun(start, end, typed, option, _unwrap(text, value_start, end, spans)))
    return runs


def _split_text(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Split text into the prompt and (flag as typed, option, value) triples."""
    spans, flags = _scan(text)
    runs = _runs(text, spans, flags)
    prompt = _unwrap(text, 0, runs[0].start if runs else len(text), spans)
    found: list[tuple[str, str, str]] = []
    seen: dict[str, str] = {}
    for run in runs:
        typed = shown(run.flag)
        if run.option is None:
            suggestions = ["--" + flag for flag in _close(run.name, list(_FLAGS))]
            # The whole list no longer fits a sentence; help shows every flag with its range.
            reason = "is not an option" + ("" if suggestions else " (help lists every flag)")
            raise InvalidOption(typed, reason, suggestions, typed=True)
        if run.option in seen:
            first_typed = seen[run.option]
            same = _flag_key(first_typed) == _flag_key(typed)
            reason = "is given twice" if same else f"repeats {first_typed}, the same option"
            raise InvalidOption(typed, reason, typed=True)
        seen[run.option] = typed
        found.append((typed, run.option, run.value))
    return prompt, found


def _scan(text: str) -> tuple[dict[int, int], list[tuple[int, str, int]]]:
    """Find quoted spans (start → end) and flags (start, flag as typed, value start) in order."""
    spans: dict[int, int] = {}
    flags: list[tuple[int, str, int]] = []
    n = len(text)
    i = 0
    value_start = -1
    while i < n:
        if i == 0 or i == value_start or text[i - 1].isspace():
            close = _QUOTES.get(text[i])
            end = _closing_quote(text, i + 1, close) if close else None
            if end is not None:
                spans[i] = end + 1
                i = end + 1
                continue
            prefix = 2 if text.startswith("--", i) else 1 if text[i] == "—" else 0
            match = _FLAG_NAME.match(text, i + prefix) if prefix else None
            if match and (match.end() == n or text[match.end()].isspace() or text[match.end()] == "="):
                value_start = match.end() + (match.end() < n and text[match.end()] == "=")
                flags.append((i, text[i : match.end()], value_start))
                i = value_start
                continue
        i += 1
    return spans, flags


def _flag_key(typed: str) -> str:
    return "--" + typed.lstrip("-—").lower().replace("_", "-")


def _closing_quote(text: str, start: int, close: str) -> int | None:
    """Return where a quote closes: a `close` character at the end of a word, or None."""
    at = text.find(close, start)
    while at != -1:
        after = at + 1
        if after == len(text) or text[after].isspace() or text[after] == ",":
            return at
        at = text.find(close, after)
    return None


def _unwrap(text: str, start: int, end: int, spans: dict[int, int]) -> str:
    """Return text[start:end] stripped, without the quotes when they wrap all of it."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if spans.get(start) == end:
        return text[start + 1 : end - 1]
    return text[start:end]


# ---------------------------------------------------------------------------
# Layer 2: the raw mapping → a resolved request


def _build(
    raw: Mapping[str, object],
    catalog: Catalog,
    defaults: Defaults,
    limits: Limits,
    inputs: Inputs | None,
    guides: Sequence[Guide] | None,
) -> Parsed:
    prompt, tagged = _lora_tags(_prompt("prompt", raw.get("prompt", ""), required=True), catalog)
    negative = _prompt("negative", raw["negative"], required=False) if "negative" in raw else None
    if "style" in raw:
        prompt, negative = _styled(catalog.get("style", _catalog_name("style", raw["style"])), prompt, negative)

    model = catalog.get("model", _catalog_name("model", raw["model"]) if "model" in raw else defaults.model)
    arch = architecture_of(model.architecture)
    default_model = catalog.find("model", defaults.model)
    own = default_model is not None and default_model.name == model.name

    steps = _int(
        "steps", _pick(raw, "steps", defaults.steps if own else None, model.default_steps, arch.default_steps), STEPS
    )
    scheduler_value = _pick(
        raw, "scheduler", defaults.scheduler if own else None, model.default_scheduler, arch.default_scheduler
    )
    scheduler = match_scheduler(_text("scheduler", scheduler_value))
    cfg = _float("cfg", _pick(raw, "cfg", defaults.cfg if own else None, model.default_cfg, arch.default_cfg), CFG)
    count = _int("count", raw.get("count", 1), COUNT)
    repeat = _int("repeat", raw.get("repeat", 1), REPEAT)
    seed = _int("seed", raw["seed"], SEED) if "seed" in raw else None
    variation = _float("variation", raw.get("variation", 0.0), VARIATION)
    variation_seed = _int("variation_seed", raw["variation_seed"], SEED) if "variation_seed" in raw else None
    if variation_seed is not None and not variation:
        raise InvalidOption("variation seed", "goes with --variation, how far toward it (like --variation 0.2)")
    # --repeat moves the seed each job: the variation seed in a variation, where every image keeps the seed.
    moving, name = (variation_seed, "variation seed") if variation else (seed, "seed")
    if moving is not None and repeat > 1 and moving > (highest := SEED.high - repeat * count + 1):
        jobs = f"{repeat} jobs of {count} image" + ("s" if count > 1 else "")
        raise InvalidOption(name, f"must be at most {highest} for {jobs}, since job k uses {name} + k × {count}")
    clip_skip = _int("clip_skip", raw.get("clip_skip", 0), CLIP_SKIP)
    output_format = _format(raw.get("format", "png"))
    tiling = _switch("tile", raw.get("tile", False))
    vae = _vae(raw["vae"], catalog) if "vae" in raw else None
    loras = _with_tags(_weighted("lora", "lora", raw["lora"], catalog) if "lora" in raw else (), tagged)
    embeddings = _weighted("embedding", "embedding", raw["embedding"], catalog) if "embedding" in raw else ()

    warnings: list[str] = []
    _require_image(raw)
    strength: float | None = None
    outpaint: Outpaint | None = None
    run = steps
    if "image" in raw:
        if variation:
            raise InvalidOption("variation", "starts from text; from an image, --strength says how much changes")
        if inputs is None:
            raise InvalidOption("image", "cannot be read in this chat")
        if "size" in raw or "ar" in raw:
            option = "size" if "size" in raw else "aspect ratio"
            raise InvalidOption(option, "cannot be set with --image: the output takes the image's size")
        width, height = _size_of_input(inputs, limits, warnings)
        # The probe's stand-in (`bot.inputs.ImageInputs.probe`) is the smallest image: too small to show what a
        # slight zoom adds, which the image itself decides.
        outpaint = _outpaint(raw, width, height, sized=inputs.image != PROBE_SHA)
        if outpaint is not None:
            width += outpaint.left + outpaint.right
            height += outpaint.top + outpaint.bottom
            if width > SIDE.high or height > SIDE.high:
                option = "zoom" if "zoom" in raw else "outpaint"
                raise InvalidOption(option, f"makes {width}×{height}; sides are at most {SIDE.high}")
        strength = _float("strength", raw.get("strength", DEFAULT_STRENGTH), STRENGTH)
        run = run_steps(steps, strength)
        if run < 1:
            reason = f"{strength:g} of {steps} steps runs no step; raise --strength or --steps"
            raise InvalidOption("strength", reason)
    else:
        width, height = _size(raw, model, arch, defaults if own else None, warnings)
    refiner = _refiner(raw, model, arch, defaults, run, warnings)
    controlnets = build_controls(raw, catalog, model, run, guides)

    try:
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative,
            model=model.name,
            width=width,
            height=height,
            steps=steps,
            cfg_scale=cfg,
            scheduler=scheduler,
            seed=seed,
            count=count,
            clip_skip=clip_skip,
            tiling=tiling,
            variation_seed=variation_seed,
            variation_strength=variation,
            vae=vae,
            refiner=refiner,
            loras=loras,
            embeddings=embeddings,
            output_format=output_format,
            init_image=inputs.image if strength is not None and inputs else None,
            strength=strength,
            mask_image=inputs.mask if strength is not None and inputs else None,
            outpaint=outpaint,
            controlnets=controlnets,
        )
    except ValidationError as error:
        raise _invalid_from(error) from None
    warnings += check(request, catalog, limits)
    return Parsed(request=request, warnings=tuple(warnings), repeat=repeat)


def _require_image(raw: Mapping[str, object]) -> None:
    needs = (
        ("strength", "how much of an image is made again"),
        ("mask", "what of an image to repaint"),
        ("outpaint", "how far to extend an image"),
        ("zoom", "how far to zoom out of an image"),
    )
    for option, what in needs:
        if option in raw and "image" not in raw:
            raise InvalidOption(option, f"needs --image: it says {what}")
    if "outpaint" in raw and "zoom" in raw:
        raise InvalidOption("zoom", "cannot be combined with --outpaint; give one of them")
    if "mask" in raw and ("outpaint" in raw or "zoom" in raw):
        raise InvalidOption("mask", "cannot be combined with --outpaint or --zoom (the extension is the mask)")


def _outpaint(raw: Mapping[str, object], width: int, height: int, *, sized: bool = True) -> Outpaint | None:
    """Return the extension `--outpaint` or `--zoom` asks of a `width` × `height` image, or None.

    Not `sized`: the size is a stand-in's, so a zoom that adds nothing to it is not refused.
    """
    if "zoom" in raw:
        zoom = _float("zoom", raw["zoom"], ZOOM)
        # Even on both sides of an axis, so each side gets half of a multiple of 128.
        extra_w, extra_h = (round(side * (zoom - 1) / (2 * _SIDE_STEP)) * 2 * _SIDE_STEP for side in (width, height))
        if not extra_w and not extra_h and not sized:
            extra_w = 2 * _SIDE_STEP
        if not extra_w and not extra_h:
            raise InvalidOption("zoom", f"{zoom:g} adds nothing to {width}×{height}; zoom out further")
        return Outpaint(top=extra_h // 2, right=extra_w // 2, bottom=extra_h // 2, left=extra_w // 2)
    if "outpaint" not in raw:
        return None
    text = _text("outpaint", raw["outpaint"])
    parts = [part for part in re.split(r"[\s,]+", text) if part]
    numbers = [int(part) for part in parts] if all(_INT.fullmatch(part) for part in parts) else []
    blur = numbers.pop() if len(numbers) == 5 else 0
    sides = numbers * 4 if len(numbers) == 1 else numbers  # four sides only from 1, 4 or 5 numbers
    if len(sides) != 4 or any(side < 0 or side % _SIDE_STEP or side > SIDE.high for side in sides) or not any(sides):
        raise InvalidOption("outpaint", f"must be {_EXAMPLES['outpaint']}, not '{shown(text)}'")
    if blur not in OUTPAINT_BLUR:
        raise InvalidOption("outpaint", f"blur must be from {OUTPAINT_BLUR.low} to {OUTPAINT_BLUR.high}, not {blur}")
    return Outpaint(top=sides[0], right=sides[1], bottom=sides[2], left=sides[3], blur=blur)


def _size_of_input(inputs: Inputs, limits: Limits, warnings: list[str]) -> tuple[int, int]:
    """Return the input image's size in multiples of 64 within the sides and the pixel budget; say when it changed."""
    width, height = size_for_image(inputs.width, inputs.height, limits.pixel_budget)
    if (width, height) != (inputs.width, inputs.height):
        warnings.append(
            f"The image is {inputs.width}×{inputs.height}; the output is {width}×{height} "
            f"(sides in multiples of {_SIDE_STEP}, within the pixel budget)."
        )
    return width, height


def zoom_out(width: int, height: int, zoom: float) -> Outpaint | None:
    """Return the border that zooms a `width` × `height` result out by `zoom` at the same size, or None.

    Midjourney's Zoom Out: the output keeps the size, the image shrinks to about 1/`zoom` of it in
    the middle, and the border around it is painted anew. Borders are multiples of 64 on both ends
    of an axis; of the nearest choices per axis wins the one that strays least from the image's
    ratio and the zoom together (both in log terms). None when an axis has no room for a border
    and the smallest image a request may have (`SIDE`) between.
    """
    pair = 2 * _SIDE_STEP  # a border on both ends of an axis
    choices = []
    for side in (width, height):
        ideal = side * (1 - 1 / zoom) / pair
        steps = {max(1, math.floor(ideal)), max(1, math.ceil(ideal))}
        choices.append([n * pair for n in sorted(steps) if side - n * pair >= SIDE.low])
    if not all(choices):
        return None
    ratio = math.log(width / height)

    def error(extra: tuple[int, ...]) -> float:
        inner_w, inner_h = width - extra[0], height - extra[1]
        shrink = math.log(width / inner_w) + math.log(height / inner_h)
        return abs(math.log(inner_w / inner_h) - ratio) + abs(shrink - 2 * math.log(zoom))

    extra_w, extra_h = min(itertools.product(*choices), key=error)
    return Outpaint(top=extra_h // 2, right=extra_w // 2, bottom=extra_h // 2, left=extra_w // 2)


PanDirection = Literal["left", "right", "up", "down"]
_PAN_SIDE = {"left": "left", "right": "right", "up": "top", "down": "bottom"}


def pan(width: int, height: int, direction: PanDirection, pixel_budget: int) -> Outpaint | None:
    """Return the strip that pans a `width` × `height` result toward `direction`, or None.

    Midjourney's Pan: the canvas grows that way by half the image's side along it, in 64s,
    the image keeps its pixels, and the strip is painted to continue it. The side stops at
    the longest a request may have and at the pixel budget; None when not 64 more fit.
    """
    along, across = (width, height) if direction in ("left", "right") else (height, width)
    longest = min(SIDE.high, pixel_budget // across)
    half = max(_SIDE_STEP, (along + _SIDE_STEP) // (2 * _SIDE_STEP) * _SIDE_STEP)  # half the side, halves up
    strip = min(half, (longest - along) // _SIDE_STEP * _SIDE_STEP)
    if strip < _SIDE_STEP:
        return None
    return Outpaint.model_validate({_PAN_SIDE[direction]: strip})


def make_square(width: int, height: int, pixel_budget: int) -> Outpaint | None:
    """Return the strips that make a `width` × `height` result square, or None.

    Midjourney's Make Square: the short side grows on both ends to the long one (in 64s, the
    odd 64 on the right or bottom), the image keeps its pixels, the strips are painted to
    continue it. None for a square image, or where the square passes the pixel budget.
    """
    side, short = max(width, height), min(width, height)
    if side == short or side * side > pixel_budget:
        return None
    steps = (side - short) // _SIDE_STEP
    first, second = steps // 2 * _SIDE_STEP, (steps - steps // 2) * _SIDE_STEP
    if width < height:
        return Outpaint(left=first, right=second)
    return Outpaint(top=first, bottom=second)


def size_for_image(width: int, height: int, pixel_budget: int) -> tuple[int, int]:
    """Return the output size for an input image of that size.

    Of the sizes in multiples of 64 within 128–2048 and the pixel budget, the one that best
    balances the image's ratio (first) and its area, or the budget if smaller (second): an
    image already in multiples of 64 within the budget keeps its size.
    """
    target = math.log(width / height)
    log_area = math.log(min(width * height, pixel_budget))
    fits = [size for size in _ALL_SIZES if size[0] * size[1] <= pixel_budget]
    best = min(fits, key=lambda size: abs(size[2] - target) + 0.5 * abs(size[3] - log_area))
    return best[0], best[1]


def _pick(raw: Mapping[str, object], option: str, *fallbacks: object) -> object:
    """Return the option's value, else the first fallback that is not None."""
    if option in raw:
        return raw[option]
    return next((value for value in fallbacks if value is not None), None)


def _invalid_from(error: ValidationError) -> InvalidOption:
    """Name the option behind the first pydantic error (a safety net: values are checked before)."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "request"
    label = _label(_OPTION_OF_FIELD.get(field, field))
    message = str(first["msg"])
    return InvalidOption(label, "is invalid: " + message[:1].lower() + message[1:])


# ---------------------------------------------------------------------------
# Values


def _label(option: str) -> str:
    return _LABELS.get(option, option)


def _text(option: str, value: object) -> str:
    """Return a non-empty stripped string, or raise naming the option."""
    if not isinstance(value, str):
        raise InvalidOption(_label(option), f"must be text, not {shown(value)}")
    _require_value(option, value, _EXAMPLES.get(option, "like the help shows"))
    return value.strip()


def _require_value(option: str, value: object, example: str) -> None:
    if isinstance(value, str) and not value.strip():
        raise InvalidOption(_label(option), f"needs a value, {example}")


def _prompt(option: str, value: object, *, required: bool) -> str:
    label = _label(option)
    if not isinstance(value, str):
        raise InvalidOption(label, f"must be text, not {shown(value)}")
    # Windows line ends are the one control sequence pasted text carries innocently.
    text = value.replace("\r\n", "\n").strip()
    if not text:
        reason = "is empty; describe the image you want" if required else "needs a value, like blurry, text"
        raise InvalidOption(label, reason)
    if required and len(text) < PROMPT_LENGTH.low:
        reason = f"is too short; describe the image you want in at least {PROMPT_LENGTH.low} characters"
        raise InvalidOption(label, reason)
    if len(text) > PROMPT_LENGTH.high:
        raise InvalidOption(label, f"is {len(text)} characters long; the most is {PROMPT_LENGTH.high}")
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc" and char not in "\n\t":
            raise InvalidOption(label, f"contains a control character (U+{ord(char):04X}); remove it")
        if category == "Cs":
            raise InvalidOption(label, f"contains an invalid character (U+{ord(char):04X}); remove it")
    if (weights := weights_reason(text)) is not None:
        raise InvalidOption(label, weights)
    return text


def reworded(text: str) -> str:
    """Return a remix's words (Midjourney's Remix mode): a result's prompt re-worded, checked as /imagine's prompt.

    Words only: the image keeps its settings, LoRAs and negative prompt, which ✏️ Edit changes (so a
    flag, or an A1111 ``<lora:…>`` tag, is refused here rather than read as words). Taken as typed:
    its braces are its own characters, not choices.

    Raises:
        InvalidOption: option ``Remix``, or ``prompt`` for what /imagine's prompt refuses too.
    """
    prompt = _prompt("prompt", text, required=True)
    runs = flag_runs(prompt)
    if runs:
        reason = f"changes the prompt's words only, not '{shown(runs[0].flag)}'; ✏️ Edit changes the settings too"
        raise InvalidOption("Remix", reason)
    if LORA_TAG.search(prompt):
        raise InvalidOption("Remix", "keeps the image's LoRAs; a <lora:…> tag is for /imagine and ✏️ Edit")
    return prompt


_INT = re.compile(r"[+-]?[0-9]{1,30}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,10}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,3})?")


def _int(option: str, value: object, allowed: Range[int]) -> int:
    low, high = allowed.low, allowed.high
    _require_value(option, value, f"a whole number from {low} to {high}")
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INT.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        reason = f"must be a whole number from {low} to {high}, not '{shown(value)}'"
        raise InvalidOption(_label(option), reason)
    if number not in allowed:
        raise InvalidOption(_label(option), f"must be from {low} to {high}, not {shown(number)}")
    return number


def _float(option: str, value: object, allowed: Range[float]) -> float:
    low, high = allowed.low, allowed.high
    _require_value(option, value, f"a number from {low:g} to {high:g}")
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        # An int past float's range (10**400) has no float; it is out of range like any other.
        with contextlib.suppress(OverflowError):
            number = float(value)
    elif isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        number = float(value.strip())
    if number is not None and not math.isfinite(number):
        number = None
    if number is None:
        reason = f"must be a number from {low:g} to {high:g}, not '{shown(value)}'"
        raise InvalidOption(_label(option), reason)
    if number not in allowed:
        raise InvalidOption(_label(option), f"must be from {low:g} to {high:g}, not {number:g}")
    return number


_ON = {"", "on", "true", "yes", "1"}
_OFF = {"off", "false", "no", "0"}


def _switch(option: str, value: object) -> bool:
    """Return a flag's on or off: typed alone (``--tile``) it is on; a typed bool is itself."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in _ON | _OFF:
        raise InvalidOption(_label(option), f"takes no value, or off, not '{shown(value)}'")
    return text in _ON


def _format(value: object) -> Literal["png", "jpg", "webp"]:
    text = _text("format", value).lower().lstrip(".")
    if text not in _FORMATS:
        raise InvalidOption("format", f"must be png, jpg or webp, not '{shown(value)}'")
    return _FORMATS[text]


def _styled(style: CatalogEntry, prompt: str, negative: str | None) -> tuple[str, str | None]:
    """Return the prompt and negative prompt with a style's words, as A1111 applies its styles.

    The style's ``{prompt}`` is the user's prompt (without one, its words follow the prompt); its
    negative words follow the user's. What is stored and run is the result, so a reroll needs no style.
    """
    if style.prompt is not None:
        words = style.prompt
        prompt = words.replace("{prompt}", prompt) if "{prompt}" in words else f"{prompt}, {words}"
    if style.negative is not None:
        negative = f"{negative}, {style.negative}" if negative else style.negative
    for label, text in (("prompt", prompt), ("negative prompt", negative)):
        if text is not None and len(text) > PROMPT_LENGTH.high:
            reason = f"{style.name} makes the {label} {len(text)} characters long; the most is {PROMPT_LENGTH.high}"
            raise InvalidOption("style", reason)
    return prompt, negative


def _catalog_name(option: str, value: object) -> str:
    """Return a name to look up; refuse anything that looks like a path or URL."""
    name = _text(option, value)
    _refuse_path(option, name)
    return name


def _refuse_path(option: str, name: str) -> None:
    if any(marker in name for marker in ("/", "\\", "://", "..")):
        raise InvalidOption(_label(option), f"only accepts names from the catalog, not paths or URLs ('{shown(name)}')")


def _vae(value: object, catalog: Catalog) -> str | None:
    name = _catalog_name("vae", value)
    if catalog.find("vae", name) is None and name.lower() in _VAE_OWN:
        return None
    return catalog.get("vae", name, "VAE").name


def _weighted(
    option: str, kind: Kind, value: object, catalog: Catalog, label: str | None = None
) -> tuple[WeightedName, ...]:
    """Parse ``name:weight, other`` (weight 1.0 when left out) into catalog names; errors name `label`."""
    label = label or _label(option)
    text = _text(option, value)
    items = [item.strip() for item in text.split(",")]
    if len(items) > MAX_ADDONS:
        raise InvalidOption(label, f"takes at most {MAX_ADDONS} names, not {len(items)}")
    found: list[WeightedName] = []
    for item in items:
        if not item:
            raise InvalidOption(label, f"has an empty name in '{shown(text)}'")
        _refuse_path(option, item)
        if item.count(":") > 1:
            reason = f"'{shown(item)}' should be a name or name:weight, like pixel-art:0.8"
            raise InvalidOption(label, reason)
        name, _, weight_text = item.partition(":")
        name = name.strip()
        if not name:
            raise InvalidOption(label, f"has an empty name in '{shown(item)}'")
        weight = _weight(label, name, weight_text.strip()) if ":" in item else 1.0
        entry = catalog.get(kind, name, label)
        if any(previous.name == entry.name for previous in found):
            raise InvalidOption(label, f"names '{entry.name}' twice")
        found.append(WeightedName(name=entry.name, weight=weight))
    return tuple(found)


_EMPTY_ITEMS = re.compile(r"\s*,(?:\s*,)+")


def _lora_tags(prompt: str, catalog: Catalog) -> tuple[str, tuple[WeightedName, ...]]:
    """Take A1111's ``<lora:name:weight>`` tags out of a prompt: the prompt without them, and their LoRAs.

    CLIP would read a tag as words; A1111 applies it as a LoRA, and so do we. What the tag leaves
    behind (a doubled comma, a comma at an end) is tidied; a prompt that was only tags is too short.
    """
    tagged: list[WeightedName] = []
    for match in LORA_TAG.finditer(prompt):
        label = shown(match.group(0).strip())
        if not match.group(1).strip():
            raise InvalidOption(label, "names no LoRA; write <lora:name:weight>, like <lora:pixel-art:0.8>")
        tagged += _weighted("lora", "lora", match.group(1), catalog, label=label)
    if not tagged:
        return prompt, ()
    rest = _EMPTY_ITEMS.sub(",", LORA_TAG.sub("", prompt)).strip(" ,\t\n")
    return _prompt("prompt", rest, required=True), tuple(tagged)


def _with_tags(loras: tuple[WeightedName, ...], tagged: tuple[WeightedName, ...]) -> tuple[WeightedName, ...]:
    """Return the --lora LoRAs and the prompt's tagged ones together: each once, at most `MAX_ADDONS`."""
    for entry in tagged:
        if any(other.name == entry.name for other in loras):
            raise InvalidOption("lora", f"names '{entry.name}' twice (as a flag or option and as a <lora:…> tag)")
        loras += (entry,)
    if len(loras) > MAX_ADDONS:
        raise InvalidOption(
            "lora", f"takes at most {MAX_ADDONS} LoRAs, with the prompt's <lora:…> tags; not {len(loras)}"
        )
    return loras


def _weight(label: str, name: str, text: str) -> float:
    number = float(text) if _FLOAT.fullmatch(text) else None
    if number is None or not math.isfinite(number) or number not in WEIGHT:
        reason = (
            f"weight of '{shown(name)}' must be a number from {WEIGHT.low:g} to {WEIGHT.high:g}, not '{shown(text)}'"
        )
        raise InvalidOption(label, reason)
    return number


# ---------------------------------------------------------------------------
# Size and aspect ratio

_RATIO = re.compile(r"([0-9]{1,4}(?:\.[0-9]{1,4})?)\s*:\s*([0-9]{1,4}(?:\.[0-9]{1,4})?)")
_SIDE_STEP = SIDE.step or 1  # SIDE has one: 64
# Every size in multiples of 64 within 128–2048, with its log ratio and log area (for the search).
_ALL_SIZES: tuple[tuple[int, int, float, float], ...] = tuple(
    (w, h, math.log(w / h), math.log(w * h))
    for w in range(SIDE.low, SIDE.high + 1, _SIDE_STEP)
    for h in range(SIDE.low, SIDE.high + 1, _SIDE_STEP)
)


def size_for_ratio(native: tuple[int, int], ratio: float) -> tuple[int, int]:
    """Return the (width, height) for an aspect ratio on a model of that native size.

    SDXL-size models (native area within 10 % of 1024²) get the nearest of
    `SDXL_BUCKETS`; others get the size, in multiples of 64 within 128–2048,
    that best balances the ratio (first) and the native area (second).
    """
    area = native[0] * native[1]
    target = math.log(ratio)
    if abs(area / 1024**2 - 1) <= 0.1:
        return min(SDXL_BUCKETS, key=lambda size: abs(math.log(size[0] / size[1]) - target))

    log_area = math.log(area)
    best = min(_ALL_SIZES, key=lambda size: abs(size[2] - target) + 0.5 * abs(size[3] - log_area))
    return best[0], best[1]


def _size(
    raw: Mapping[str, object],
    model: CatalogEntry,
    arch: Architecture,
    defaults: Defaults | None,
    warnings: list[str],
) -> tuple[int, int]:
    native = (model.width, model.height) if model.width and model.height else arch.native_size
    if "size" in raw and "ar" in raw:
        raise InvalidOption("size", "cannot be combined with an aspect ratio; give one of them")
    if "size" in raw:
        return _parse_size(raw["size"])
    if "ar" in raw:
        ratio_text, ratio = _parse_ratio(raw["ar"])
        width, height = size_for_ratio(native, ratio)
        if abs(math.log(width / height / ratio)) > math.log(_RATIO_TOLERANCE):
            warnings.append(
                f"Aspect ratio {ratio_text} became {width}×{height} ({_ratio_text(width, height)}), "
                f"the nearest size for {model.name}."
            )
        return width, height
    if defaults is not None and defaults.width is not None and defaults.height is not None:
        return _parse_size(f"{defaults.width}x{defaults.height}")
    return native


def _parse_size(value: object) -> tuple[int, int]:
    width, height = parse_size(_text("size", value))
    if width in SIDE and height in SIDE:
        return width, height
    near = f"{_nearest_side(width)}x{_nearest_side(height)}"
    raise InvalidOption(
        "size",
        f"sides must be multiples of {_SIDE_STEP} from {SIDE.low} to {SIDE.high}, not {width}x{height}",
        [near],
    )


def _nearest_side(side: int) -> int:
    return min(max(_SIDE_STEP * round(side / _SIDE_STEP), SIDE.low), SIDE.high)


def _parse_ratio(value: object) -> tuple[str, float]:
    text = _text("ar", value)
    match = _RATIO.fullmatch(text)
    ratio = float(match[1]) / float(match[2]) if match and float(match[2]) > 0 else 0.0
    if not 1 / _MAX_RATIO <= ratio <= _MAX_RATIO:
        raise InvalidOption("aspect ratio", f"must be WIDTH:HEIGHT between 1:4 and 4:1, like 16:9, not '{shown(text)}'")
    return f"{match[1]}:{match[2]}" if match else text, ratio


def _ratio_text(width: int, height: int) -> str:
    def short(number: float) -> str:
        return f"{number:.2f}".rstrip("0").rstrip(".")

    return f"{short(width / height)}:1" if width >= height else f"1:{short(height / width)}"


# ---------------------------------------------------------------------------
# Refiner


def _refiner(
    raw: Mapping[str, object],
    model: CatalogEntry,
    arch: Architecture,
    defaults: Defaults,
    steps: int,
    warnings: list[str],
) -> RefinerSpec | None:
    if "refiner" in raw:
        percent = _refiner_percent(raw["refiner"])
        if percent is None:
            return None
        require_refiner_support(model)
        if model.refiner is None:
            reason = f"is not available for '{model.name}': the catalog names no refiner for it"
            raise InvalidOption("refiner", reason)
        return RefinerSpec(model=model.refiner, start_percent=percent)
    if not defaults.refiner_percent or model.refiner is None or not arch.accepts_refiner:
        return None
    percent = _refiner_percent(defaults.refiner_percent)  # not None: the default is not 0
    spec = RefinerSpec(model=model.refiner, start_percent=percent)
    base, refiner = refiner_split(steps, spec)
    if base < 1 or refiner < 1:
        starved = "the refiner" if refiner < 1 else "the base model"
        warnings.append(f"Your default refiner was skipped: at {percent} % of {steps} steps {starved} gets no steps.")
        return None
    return spec


def _refiner_percent(value: object) -> int | None:
    """Return the percent at which the refiner takes over, or None for no refiner."""
    _require_value("refiner", value, _EXAMPLES["refiner"])
    number: int | None = None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _REFINER_OFF:
            return None
        text = text.removesuffix("%").strip()
        number = int(text) if _INT.fullmatch(text) else None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    if number is None or (number != 0 and number not in REFINER_PERCENT):
        raise InvalidOption("refiner", refiner_percent_reason(value, off=True))
    return number or None


# ---------------------------------------------------------------------------
# Helpers


def _close(word: str, choices: list[str]) -> list[str]:
    return difflib.get_close_matches(word, choices, n=3, cutoff=0.6)

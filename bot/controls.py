"""ControlNet options as typed: which ControlNets, their guides, weights and exact steps.

Two forms, one meaning:

* long, for one ControlNet: ``--cn canny-sdxl --guide #3 --cn-weight 0.8 --cn-start 1
  --cn-end 10 --cn-mode prompt --preprocess none``;
* compact, for up to three: ``--cn canny-sdxl=#3:0.8@1-10, depth-sdxl=#4@0%-50%``
  (``NAME=GUIDE[:WEIGHT][@START-END]``; ``--cn-mode`` and ``--preprocess`` apply to each).

Start and end are 1-based steps, inclusive, counted among the steps that run, or
percentages of them as diffusers and A1111 read a guidance start and end: a step ``i``
(1-based) of ``n`` is on when ``start% · n < i`` and ``i ≤ end% · n`` — 0 % to 33 % of 30
steps is steps 1–9. The guide is preprocessed for the ControlNet's catalog `preprocess`
(canny) unless ``--preprocess`` says otherwise (``none``: the guide is a map already).

An IP-Adapter (a catalog ControlNet with ``ip_adapter``) is named and stepped the same way, but its
guide is an image prompt: never preprocessed, always in the balanced mode, and it may be named once
per image to blend several (``ip-adapter-sdxl=#3:0.5, ip-adapter-sdxl=#4:0.5``). The name ``blend``
stands for the model's own IP-Adapter (its catalog `blend`): ``blend=#3:0.5, blend=#4:0.5``.

A style reference (Midjourney's ``--sref #3 #4``, each ``IMAGE[:WEIGHT]``, ``--sw`` the weight in
percent of those without one) is that IP-Adapter on the style layers only, on every step: the
result takes the images' look, not what they show. Style references and ControlNets are
``MAX_CONTROLNETS`` in all, the ControlNets first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from bot.catalog import Catalog, CatalogEntry
from bot.errors import InvalidOption, shown
from bot.request import (
    CONTROL_MODES,
    CONTROL_WEIGHT,
    MAX_CONTROLNETS,
    PREPROCESSORS,
    ControlMode,
    ControlNetSpec,
    Preprocess,
)

__all__ = [
    "BLEND",
    "BLEND_PROMPT",
    "BLEND_SHAPES",
    "CONTROL_OPTIONS",
    "PROBE",
    "PROBE_SHA",
    "ControlText",
    "Guide",
    "blend_options",
    "build_controls",
    "control_texts",
    "guide_refs",
]

# The ControlNet name that stands for the model's catalog IP-Adapter (its `blend`), as `/blend` writes it.
BLEND = "blend"
# What a blend asks for when the user gives no prompt (diffusers' IP-Adapter guide asks image variations so):
# the images say what to draw.
BLEND_PROMPT = "best quality, high quality"
# Midjourney's /blend dimensions: how each chat offers the shape of a blend, as a name and an --ar.
BLEND_SHAPES = (("portrait (2:3)", "2:3"), ("square (1:1)", "1:1"), ("landscape (3:2)", "3:2"))
# The raw options this module reads (see `bot.options`).
_NET_OPTIONS = ("cn", "guide", "preprocess", "cn_weight", "cn_start", "cn_end", "cn_mode")
CONTROL_OPTIONS = (*_NET_OPTIONS, "sref", "sw")
# --sw, Midjourney's style weight in percent: 100 is the IP-Adapter's weight 1 (its range here is the weights').
STYLE_WEIGHT = range(0, round(CONTROL_WEIGHT.high * 100) + 1)
_COMPACT = re.compile(
    r"(?P<name>[^=\s]+)\s*=\s*(?P<guide>[^:@\s]+)(?::(?P<weight>[^@\s]+))?(?:@(?P<start>[^-\s]+)-(?P<end>\S+))?"
)
_STEP = re.compile(r"([0-9]{1,3})(%?)")
_GUIDE = re.compile(r"[^,=:@\s]+")  # a guide the compact form can carry
_STYLE = re.compile(r"(?P<guide>[^,=:@\s]+)(?::(?P<weight>[^,:@\s]+))?")  # one --sref image: IMAGE[:WEIGHT]


@dataclass(frozen=True, slots=True)
class ControlText:
    """One ControlNet as the user typed it, before the catalog and the steps are known."""

    name: str
    guide: str
    weight: str | None = None
    start: str | None = None
    end: str | None = None
    compact: bool = False  # typed as NAME=GUIDE…, so a mistake in it is one of --cn
    style: bool = False  # a style reference (--sref): the model's IP-Adapter on the style layers


@dataclass(frozen=True, slots=True)
class Guide:
    """A guide image once stored: what the ControlNet sees, and what it was made from (when preprocessed)."""

    guide: str
    source: str | None = None


# A stand-in for an image not read yet (a sha256 no image has): a request is checked with it in the image's place.
PROBE_SHA = "0" * 64
PROBE = Guide(PROBE_SHA, PROBE_SHA)


def control_texts(raw: Mapping[str, object]) -> list[ControlText]:
    """Return the ControlNets the raw options name, in order, then the style references (``--sref``)."""
    texts = _net_texts(raw) + _style_texts(raw)
    if len(texts) > MAX_CONTROLNETS:
        reason = f"and --cn take at most {MAX_CONTROLNETS} images in all, not {len(texts)}"
        raise InvalidOption("sref", reason)
    return texts


def _style_texts(raw: Mapping[str, object]) -> list[ControlText]:
    """Return the style references of ``--sref #3 #4:0.5`` (commas or spaces between), weighted by ``--sw``."""
    if "sref" not in raw:
        if "sw" in raw:
            raise InvalidOption("sw", "needs --sref: it weighs the style references")
        return []
    weight = _style_weight(raw["sw"]) if "sw" in raw else None
    items = [item for item in re.split(r"[,\s]+", _text("sref", raw["sref"])) if item]
    if not items:
        raise InvalidOption("sref", "needs an image, like #3 or #3:0.6")
    if len(items) > MAX_CONTROLNETS:
        raise InvalidOption("sref", f"takes at most {MAX_CONTROLNETS} images, not {len(items)}")
    found = []
    for item in items:
        match = _STYLE.fullmatch(item)
        if match is None:
            reason = f"'{shown(item)}' should be an image with a weight if you like, like #3 or #3:0.6"
            raise InvalidOption("sref", reason)
        found.append(ControlText(BLEND, match["guide"], match["weight"] or weight, compact=True, style=True))
    return found


def _style_weight(value: object) -> str:
    """Return ``--sw`` (a whole percent) as an IP-Adapter weight: 100 is 1."""
    text = _weight_text(value, "sw")
    if not re.fullmatch(r"[0-9]{1,4}", text) or int(text) not in STYLE_WEIGHT:
        most = STYLE_WEIGHT.stop - 1
        reason = f"must be a whole percent from 0 to {most} (100: the IP-Adapter's own weight), not '{shown(text)}'"
        raise InvalidOption("sw", reason)
    return f"{int(text) / 100:g}"


def _net_texts(raw: Mapping[str, object]) -> list[ControlText]:
    """Return the ControlNets ``--cn`` names, in order; none without it."""
    if "cn" not in raw:
        for option in _NET_OPTIONS[1:]:
            if option in raw:
                raise InvalidOption(option.replace("_", "-"), "needs --cn: name the ControlNet it is for")
        return []
    text = _text("cn", raw["cn"])
    if "guide" in raw:
        if "," in text or "=" in text:
            raise InvalidOption("guide", "goes with one ControlNet; for several write --cn NAME=GUIDE, NAME=GUIDE")
        return [
            ControlText(
                name=text,
                guide=_text("guide", raw["guide"]),
                weight=_weight_text(raw["cn_weight"], "cn_weight") if "cn_weight" in raw else None,
                start=_text("cn_start", raw["cn_start"]) if "cn_start" in raw else None,
                end=_text("cn_end", raw["cn_end"]) if "cn_end" in raw else None,
            )
        ]
    for option in ("cn_weight", "cn_start", "cn_end"):
        if option in raw:
            reason = "goes with --guide; in the compact form write --cn NAME=GUIDE:WEIGHT@START-END"
            raise InvalidOption(option.replace("_", "-"), reason)
    items = [item.strip() for item in text.split(",")]
    if len(items) > MAX_CONTROLNETS:
        raise InvalidOption("cn", f"takes at most {MAX_CONTROLNETS} ControlNets, not {len(items)}")
    found = []
    for item in items:
        match = _COMPACT.fullmatch(item)
        if match is None:
            reason = f"'{shown(item)}' should be NAME=GUIDE[:WEIGHT][@START-END], like canny-sdxl=#3:0.8@1-10"
            raise InvalidOption("cn", reason)
        found.append(ControlText(match["name"], match["guide"], match["weight"], match["start"], match["end"], True))
    return found


def blend_options(images: Sequence[str], prompt: str = "") -> dict[str, object]:
    """Return the `/imagine` options of a blend (Midjourney's ``/blend``): the model's IP-Adapter on each image.

    Each of the 2–3 images gets an equal share of a weight of 1. `prompt` may hold flags (``--ar 2:3``);
    without words of its own, `BLEND_PROMPT` leads them.

    Raises:
        InvalidOption: fewer than 2 or more than 3 images, or a reference the ``--cn`` list cannot carry.
    """
    if not 2 <= len(images) <= MAX_CONTROLNETS:
        raise InvalidOption("blend", f"takes 2 or {MAX_CONTROLNETS} images, not {len(images)}", typed=True)
    for image in images:
        if not _GUIDE.fullmatch(image):
            reason = f"cannot take the image '{shown(image, 60)}' (a ',', '=', ':', '@' or space in it)"
            raise InvalidOption("blend", reason, typed=True)
    share = f"{1 / len(images):.2f}".rstrip("0")
    prompt = prompt.strip()
    if not prompt or prompt.startswith(("-", "—")):
        prompt = f"{BLEND_PROMPT} {prompt}".strip()
    return {"prompt": prompt, "cn": ", ".join(f"{BLEND}={image}:{share}" for image in images)}


def guide_refs(raw: Mapping[str, object]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return the guide images the options name (``#12``, an attachment, a console file), then the style references'."""
    texts = control_texts(raw)
    return tuple(t.guide for t in texts if not t.style), tuple(t.guide for t in texts if t.style)


def build_controls(
    raw: Mapping[str, object],
    catalog: Catalog,
    model: CatalogEntry,
    run_steps: int,
    guides: Sequence[Guide] | None,
) -> tuple[ControlNetSpec, ...]:
    """Return the request's ControlNets with their steps resolved among the `run_steps` that run.

    Raises:
        InvalidOption: an unknown or mismatched ControlNet, a weight or step out of range, start after
            end, or guides that cannot be read here (`guides` None).
    """
    texts = control_texts(raw)
    if not texts:
        return ()
    if guides is None:
        raise InvalidOption("guide", "cannot be read in this chat")
    mode = _choice("cn_mode", raw.get("cn_mode", "balanced"), CONTROL_MODES)
    chosen = _choice("preprocess", raw["preprocess"], PREPROCESSORS) if "preprocess" in raw else None
    entries = [_entry(text.name, catalog, model, "sref" if text.style else "cn") for text in texts]
    for entry in entries:
        if entry.architecture != model.architecture.removesuffix("-distilled"):
            reason = f"'{entry.name}' is for {entry.architecture} models, not {model.name} ({model.architecture})"
            raise InvalidOption("cn", reason)
    if all(entry.ip_adapter for entry in entries):
        # --preprocess and --cn-mode apply to every ControlNet that reads a map; an IP-Adapter reads
        # the image itself, as trained, so asked of IP-Adapters alone they would change nothing.
        for option, value, neutral in (("preprocess", chosen, "none"), ("cn-mode", mode, "balanced")):
            if value not in (None, neutral):
                reason = (
                    f"is for ControlNets that read a map; the IP-Adapter '{entries[0].name}' reads the image itself"
                )
                raise InvalidOption(option, reason)
    specs = []
    for text, guide, entry in zip(texts, guides, entries, strict=True):
        preprocess = "none" if entry.ip_adapter else chosen or entry.preprocess or "none"
        label = "sref" if text.style else "cn"
        weight_label, start_label, end_label = (label,) * 3 if text.compact else ("cn-weight", "cn-start", "cn-end")
        start = _step(start_label, text.start, run_steps, end=False) if text.start else 1
        end = _step(end_label, text.end, run_steps, end=True) if text.end else run_steps
        if start > end:
            reason = f"{entry.name} would start at step {start}, after its end at step {end} (of {run_steps} that run)"
            raise InvalidOption(start_label, reason)
        specs.append(
            ControlNetSpec(
                model=entry.name,
                guide=guide.guide,
                source=guide.source if preprocess != "none" else None,
                preprocess=cast(Preprocess, preprocess),
                weight=_weight(weight_label, text.weight) if text.weight else 1.0,
                start_step=start,
                end_step=end,
                mode="balanced" if entry.ip_adapter else cast(ControlMode, mode),
                style=text.style,
            )
        )
    # An IP-Adapter may be named once per image (each its own weight and steps: a blend of images).
    maps = [spec.model for spec, entry in zip(specs, entries, strict=True) if not entry.ip_adapter]
    if len(set(maps)) < len(maps):
        raise InvalidOption("cn", "names one ControlNet twice; give each once")
    return tuple(specs)


def _entry(name: str, catalog: Catalog, model: CatalogEntry, option: str) -> CatalogEntry:
    """Return the catalog ControlNet `name` names; ``blend`` is the model's own IP-Adapter (`/blend`, ``--sref``)."""
    if option == "sref" or (name.strip().lower() == BLEND and catalog.find("controlnet", BLEND) is None):
        found = catalog.find("controlnet", model.blend or "")
        if found is None:
            if option == "sref":
                reason = f"needs an IP-Adapter, and the model '{model.name}' names none to take a style with"
            else:
                reason = f"'{BLEND}' needs an IP-Adapter, and the model '{model.name}' names none to blend with"
            raise InvalidOption(option, reason)
        return found
    return catalog.get("controlnet", name, "cn")


def _text(option: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidOption(option.replace("_", "-"), f"needs a value, not '{shown(value)}'")
    return value.strip()


def _weight_text(value: object, option: str) -> str:
    """Return a weight as text: typed in chat, or a number from a chat's number option (Discord's)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return _text(option, value)


def _choice(option: str, value: object, choices: Sequence[str]) -> str:
    text = _text(option, value).lower()
    if text not in choices:
        reason = f"must be one of {', '.join(choices)}, not '{shown(value)}'"
        raise InvalidOption(option.replace("_", "-"), reason)
    return text


def _weight(label: str, text: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not CONTROL_WEIGHT.low <= weight <= CONTROL_WEIGHT.high:
        low, high = CONTROL_WEIGHT.low, CONTROL_WEIGHT.high
        reason = f"weight must be a number from {low:g} to {high:g}, not '{shown(text)}'"
        raise InvalidOption(label, reason if label in ("cn", "sref") else reason.removeprefix("weight "))
    return weight


def _step(label: str, text: str, run_steps: int, *, end: bool) -> int:
    """Return a 1-based step from ``10`` or ``33%`` (diffusers' reading of a guidance start or end)."""
    match = _STEP.fullmatch(text.strip())
    if match is None:
        raise InvalidOption(label, f"must be a step like 10 or a percentage like 50%, not '{shown(text)}'")
    number, percent = int(match[1]), bool(match[2])
    if percent:
        if number > 100:
            raise InvalidOption(label, f"must be a percentage from 0% to 100%, not {number}%")
        # Integer arithmetic: 33% of 30 steps is 9.9, and floats would make 9.899… or 9.900…01.
        return number * run_steps // 100 if end else -(-number * run_steps // 100) + 1
    if not 1 <= number <= run_steps:
        raise InvalidOption(label, f"must be a step from 1 to {run_steps} (the steps that run), not {number}")
    return number

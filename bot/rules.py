"""What any request may be, for everyone alike (ranges, architectures, schedulers); a server's own rules: `bot.policy`.

`check` raises `InvalidOption` for anything that cannot run and returns
warnings (one short sentence each, shown under the image) for what runs but is
probably not what the user wanted. `SCHEDULERS` is the one list of sampler
names: the backends' tables translate these names and add none.

Where a request is checked, in the order it meets the checks; each rule has one
home, and the later steps build on the earlier ones rather than repeat them:

1. `bot.options` reads chat text or typed options: the form of each value
   (whole numbers, ``WxH`` through `bot.request.parse_size`, ``name:weight``),
   catalog names with "did you mean" (`bot.catalog.Catalog.get`), no paths or
   URLs, and each value against its range, so the refusal names the option.
2. `bot.request`: the one declaration of every field's range (`STEPS`, `SIDE`,
   `CFG`…), which the pydantic model checks whenever a request is built or
   loaded from storage; the parser reads the same constants.
3. `check`, here: what depends on the catalog and the model's architecture
   (the list below) and the pixel budget. `bot.options` runs it on every new
   request; `bot.service` runs it again on rerolls and refines, whose requests
   come from storage and may meet a changed catalog or budget.
4. `bot.policy.Policy.check`, through `bot.admin.ServerAdmin.check` when a job
   is submitted: the server's channels, banned words, adult content, allowed
   and blocked models and LoRAs, and its own lower limits.
5. `Backend.check` (`inference.capabilities.Capabilities.check`), when a job
   is submitted: what the backend the model runs on can make (sizes, steps,
   cfg, schedulers, features, catalog ids). The hosted backends run it again
   when they build the API call, for jobs resumed after a restart.
6. `bot.admin.ServerAdmin.check_quota` and the queue's ``check_room``: not the
   request but its author's share of the server and of the queue.

The local worker's job builder (`inference.local`) still refuses, when the job
runs, what only it knows: architectures other than SDXL and more than 50 steps
with LCM.

Errors: an unknown model, LoRA, embedding, VAE, refiner or scheduler name (with
"did you mean"); a refiner on a non-SDXL model or a refiner entry that is not a
refiner; a LoRA, embedding or VAE made for another architecture; more steps
than the architecture allows; width × height × count over the pixel budget; a
refiner split that leaves the base or the refiner with no steps; a seed whose
last image seed (seed + count − 1) would overflow.

Warnings: the refiner starting before 80 %; fewer than 3 refiner steps; steps
outside the architecture's recommended range; a negative prompt, VAE or clip
skip that the model ignores (the negative prompt is also ignored when CFG is
off, cfg ≤ 1); a LoRA without any of its trigger words in the prompt.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from bot.catalog import Catalog, CatalogEntry, Kind
from bot.errors import InvalidOption, shown
from bot.request import FEW_RUN_STEPS, MAX_SEED, STEPS, GenerationRequest

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_REFINE_PERCENT",
    "SCHEDULERS",
    "Architecture",
    "Limits",
    "architecture_of",
    "check",
    "match_scheduler",
    "require_refiner_support",
]

SCHEDULERS: tuple[str, ...] = (
    "DPM++ 2M Karras",
    "DPM++ 2M",
    "DPM++ 2M SDE Karras",
    "DPM++ 3M SDE",
    "Euler",
    "Euler a",
    "UniPC",
    "DDIM",
    "Heun",
    "LCM",
)

# The docs' best range for the SDXL refiner is 85–90 %; `refine` without a number uses the low end.
DEFAULT_REFINE_PERCENT = 85

# Below this the refiner (trained on the low-noise end only) starts on too noisy a latent.
_REFINER_EARLIEST_GOOD_PERCENT = 80
_MIN_GOOD_REFINER_STEPS = 3


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may cost, from the server or workspace policy."""

    pixel_budget: int
    """The largest width × height × count of one request."""


@dataclass(frozen=True, slots=True)
class Architecture:
    """What a model architecture accepts and what works best with it."""

    name: str
    label: str
    family: str
    recommended_steps: tuple[int, int]
    default_steps: int
    default_cfg: float
    default_scheduler: str
    max_steps: int = STEPS.high  # at most the request's own most
    native_size: tuple[int, int] = (1024, 1024)
    uses_negative_prompt: bool = True
    uses_clip_skip: bool = True
    uses_custom_vae: bool = True
    accepts_refiner: bool = False


# `family` decides which LoRAs, embeddings and VAEs fit: distilled SDXL models take SDXL add-ons.
ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            name="sdxl",
            label="SDXL",
            family="sdxl",
            recommended_steps=(20, 35),
            default_steps=30,
            default_cfg=7.0,
            default_scheduler="DPM++ 2M Karras",
            accepts_refiner=True,
        ),
        Architecture(
            name="sdxl-distilled",
            label="distilled SDXL",
            family="sdxl",
            recommended_steps=(4, 8),
            default_steps=4,
            default_cfg=0.0,
            default_scheduler="Euler a",
        ),
        Architecture(
            name="sdxl-refiner",
            label="SDXL refiner",
            family="sdxl",
            recommended_steps=(20, 35),
            default_steps=30,
            default_cfg=7.0,
            default_scheduler="DPM++ 2M Karras",
            uses_clip_skip=False,
        ),
        Architecture(
            name="flux",
            label="FLUX",
            family="flux",
            recommended_steps=(20, 50),
            default_steps=28,
            default_cfg=3.5,
            default_scheduler="Euler",
            uses_negative_prompt=False,
            uses_clip_skip=False,
            uses_custom_vae=False,
        ),
        Architecture(
            name="sd15",
            label="SD 1.5",
            family="sd15",
            recommended_steps=(20, 30),
            default_steps=25,
            default_cfg=7.0,
            default_scheduler="DPM++ 2M Karras",
            native_size=(512, 512),
        ),
    )
}


def architecture_of(name: str) -> Architecture:
    """Return the architecture of that name; an unknown one gets permissive SDXL-like values.

    A catalog may name an architecture this table does not know (a new model
    family); such a model gets no step tips, no refiner, and its add-ons must
    name the same architecture.
    """
    known = ARCHITECTURES.get(name)
    if known is not None:
        return known
    base = ARCHITECTURES["sdxl"]
    return Architecture(
        name=name,
        label=name,
        family=name,
        recommended_steps=(1, base.max_steps),
        default_steps=base.default_steps,
        default_cfg=base.default_cfg,
        default_scheduler=base.default_scheduler,
    )


# ---------------------------------------------------------------------------
# Schedulers

_SCHEDULER_ALIASES = {
    "eulerancestral": "Euler a",
    "eulerancestraldiscrete": "Euler a",
    "keulera": "Euler a",
    "keuler": "Euler",
    "eulerdiscrete": "Euler",
    "dpmsolvermultistep": "DPM++ 2M",
    "dpmpp2mk": "DPM++ 2M Karras",
    "unipcmultistep": "UniPC",
    "lcmscheduler": "LCM",
    "heundiscrete": "Heun",
}


def _scheduler_key(name: str) -> str:
    # "DPM++ 2M Karras", "dpm++2m karras", "dpmpp_2m_karras" all become "dpmpp2mkarras".
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("++", "pp").replace("+", "p"))


_SCHEDULER_KEYS: dict[str, str] = {_scheduler_key(name): name for name in SCHEDULERS} | _SCHEDULER_ALIASES


def match_scheduler(name: str) -> str:
    """Return the canonical scheduler name for a forgiving spelling of it.

    Case, spacing, ``_``/``-``, and ``++``/``pp`` do not matter
    (``"dpm++ 2m karras"``, ``"DPM++2M Karras"``, ``"euler_a"``, ``"Euler a"``).

    Raises:
        InvalidOption: the name matches no scheduler; names close ones or lists them all.
    """
    key = _scheduler_key(name)
    found = _SCHEDULER_KEYS.get(key)
    if found is not None:
        return found
    close = difflib.get_close_matches(key, list(_SCHEDULER_KEYS), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(_SCHEDULER_KEYS[k] for k in close))
    reason = f"'{shown(name)}' is not a known scheduler"
    if not suggestions:
        reason += " (known: " + ", ".join(SCHEDULERS) + ")"
    raise InvalidOption("scheduler", reason, suggestions)


# ---------------------------------------------------------------------------
# The checks


def check(request: GenerationRequest, catalog: Catalog, limits: Limits) -> tuple[str, ...]:
    """Check a resolved request against the catalog, the architecture and the limits.

    Args:
        request: the request as it will be queued (or as stored, for a reroll or refine).
        catalog: the catalog its names refer to.
        limits: the policy it must fit.

    Returns:
        The warnings to show under the image, one sentence each, in a stable order.

    Raises:
        InvalidOption: the request cannot run as asked; the message says why.
    """
    model = catalog.get("model", request.model)
    arch = architecture_of(model.architecture)
    _check_scheduler(request.scheduler)
    _check_budget(request, limits)
    _check_seed(request)
    _check_addons(request, catalog, model, arch)
    warnings: list[str] = []
    warnings += _check_steps(request, arch)
    warnings += _check_strength(request)
    warnings += _check_refiner(request, catalog, model, arch)
    warnings += _check_ignored(request, arch)
    warnings += _check_triggers(request, catalog)
    return tuple(warnings)


def require_refiner_support(model: CatalogEntry) -> None:
    """Raise `InvalidOption` unless the model's architecture takes the SDXL refiner."""
    arch = architecture_of(model.architecture)
    if not arch.accepts_refiner:
        raise InvalidOption("refiner", f"only works with SDXL base models, not with '{model.name}' ({arch.label})")


def _check_scheduler(name: str) -> None:
    if name in SCHEDULERS:
        return
    canonical = match_scheduler(name)
    # Known under another spelling: stored requests and backends use the canonical name only.
    raise InvalidOption("scheduler", f"'{shown(name)}' is not written as the backends expect", [canonical])


def _megapixels(pixels: int, other: int) -> tuple[str, str]:
    # Enough decimals that two different numbers never print the same.
    for digits in (1, 2, 3, 4, 6):
        a, b = f"{pixels / 1e6:.{digits}f}", f"{other / 1e6:.{digits}f}"
        if a != b:
            return a, b
    return str(pixels), str(other)


def _check_budget(request: GenerationRequest, limits: Limits) -> None:
    pixels = request.width * request.height * request.count
    if pixels <= limits.pixel_budget:
        return
    asked, budget = _megapixels(pixels, limits.pixel_budget)
    what = f"{request.width}×{request.height}"
    if request.count > 1:
        what += f" × {request.count} images"
    raise InvalidOption("size", f"{what} is {asked} megapixels, over the budget of {budget} megapixels")


def _check_seed(request: GenerationRequest) -> None:
    highest = MAX_SEED - request.count + 1
    # In a variation every image keeps the seed, and image i takes variation seed + i instead.
    seed, option = (request.variation_seed, "variation seed") if request.variation_strength else (request.seed, "seed")
    if seed is not None and seed > highest:
        reason = f"must be at most {highest} for {request.count} images, since image i uses {option} + i"
        raise InvalidOption(option, reason)


def _check_addons(request: GenerationRequest, catalog: Catalog, model: CatalogEntry, arch: Architecture) -> None:
    named: list[tuple[Kind, str, str]] = [("lora", "lora", lora.name) for lora in request.loras]
    named += [("embedding", "embedding", embedding.name) for embedding in request.embeddings]
    if request.vae is not None:
        named.append(("vae", "VAE", request.vae))
    for kind, option, name in named:
        entry = catalog.get(kind, name, option)
        entry_arch = architecture_of(entry.architecture)
        if entry_arch.family != arch.family:
            reason = (
                f"'{entry.name}' is made for {entry_arch.label} models and does not fit '{model.name}' ({arch.label})"
            )
            raise InvalidOption(option, reason)


def _check_steps(request: GenerationRequest, arch: Architecture) -> list[str]:
    if request.steps > arch.max_steps:
        raise InvalidOption("steps", f"must be at most {arch.max_steps} for {arch.label} models, not {request.steps}")
    low, high = arch.recommended_steps
    if low <= request.steps <= high:
        return []
    return [_sentence(f"{arch.label} models work best with {low}–{high} steps, not {request.steps}.")]


def _check_refiner(request: GenerationRequest, catalog: Catalog, model: CatalogEntry, arch: Architecture) -> list[str]:
    spec = request.refiner
    if spec is None:
        return []
    require_refiner_support(model)
    entry = catalog.find("refiner", spec.model)
    if entry is None:
        other = next((kind for kind in ("model", "vae", "lora") if catalog.find(kind, spec.model)), None)
        if other is not None:
            raise InvalidOption("refiner", f"'{shown(spec.model)}' is a {other}, not a refiner")
        entry = catalog.get("refiner", spec.model, "refiner")
    if entry.architecture != "sdxl-refiner":
        raise InvalidOption("refiner", f"'{entry.name}' is not a refiner (its architecture is {entry.architecture})")
    base, refiner = request.split
    if spec.start_percent is not None:
        start = f"at {spec.start_percent} %"
        percent = float(spec.start_percent)
    else:
        start = f"from step {spec.start_step}"
        percent = 100 * (spec.start_step or 0) / request.run_steps
    if base < 1 or refiner < 1:
        starved, way = ("the base model", "higher") if base < 1 else ("the refiner", "lower")
        reason = f"{start} of {request.run_steps} steps leaves {starved} no steps; use a {way} percent or more steps"
        raise InvalidOption("refiner", reason)
    warnings = []
    if percent < _REFINER_EARLIEST_GOOD_PERCENT:
        warnings.append(f"The refiner starts at {percent:.0f} %; it works best from 85–90 %.")
    if refiner < _MIN_GOOD_REFINER_STEPS:
        noun = "step" if refiner == 1 else "steps"
        warnings.append(f"A refiner {start} on {request.run_steps} steps only gets {refiner} refiner {noun}.")
    return warnings


def _check_strength(request: GenerationRequest) -> list[str]:
    """Warn when image-to-image runs so few steps that the image barely changes (the steps doc's advice)."""
    if request.strength is None or request.run_steps >= FEW_RUN_STEPS:
        return []
    return [
        f"{request.steps} steps at strength {request.strength:g} run only {request.run_steps}; "
        "raise --steps at low strength for more detail."
    ]


def _check_triggers(request: GenerationRequest, catalog: Catalog) -> list[str]:
    """Warn of a LoRA whose trigger words are nowhere in the prompt: most do little without them."""
    prompt = _words(request.prompt)
    warnings = []
    for lora in request.loras:
        entry = catalog.find("lora", lora.name)
        if entry is not None and entry.trigger_words and not any(_words(w) in prompt for w in entry.trigger_words):
            words = " or ".join(f"'{word}'" for word in entry.trigger_words)
            warnings.append(f"LoRA {entry.name} works best with {words} in the prompt.")
    return warnings


def _words(text: str) -> str:
    # Trigger words are written with spaces or underscores (toy_face), in any case.
    return " ".join(text.lower().replace("_", " ").split())


def _check_ignored(request: GenerationRequest, arch: Architecture) -> list[str]:
    warnings = []
    if request.negative_prompt:
        if not arch.uses_negative_prompt:
            warnings.append(_sentence(f"{arch.label} models ignore the negative prompt."))
        elif request.cfg_scale <= 1:
            warnings.append("The negative prompt is ignored when cfg is 1 or less.")
    if request.vae is not None and not arch.uses_custom_vae:
        warnings.append(_sentence(f"{arch.label} models ignore the VAE option; they use their own."))
    if request.clip_skip and not arch.uses_clip_skip:
        warnings.append(_sentence(f"{arch.label} models ignore clip skip."))
    return warnings


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]

"""The shared request model: what to generate, independent of chat and backend.

A `GenerationRequest` is fully resolved before it is queued (model defaults,
scheduler, size and seed filled in), so that the stored JSON alone reproduces
the image. Backends map its snake_case fields to their own API names.

The ranges of its fields are declared once, here (`STEPS`, `SIDE`, `CFG`…):
pydantic checks them whenever a request is built or loaded, and the option
parser, a server's policy and the backends' capability tables read the same
constants rather than restating the numbers. `parse_size` is the one reader of
``WxH`` text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Self, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.errors import InvalidOption, shown
from bot.weighting import weights_reason

__all__ = [
    "CFG",
    "CLIP_SKIP",
    "CONTROL_MODES",
    "CONTROL_WEIGHT",
    "COUNT",
    "DEFAULT_STRENGTH",
    "FEW_RUN_STEPS",
    "MAX_ADDONS",
    "MAX_CONTROLNETS",
    "MAX_SEED",
    "OUTPAINT_BLUR",
    "PREPROCESSORS",
    "PROMPT_LENGTH",
    "REFINER_PERCENT",
    "SEED",
    "SIDE",
    "STEPS",
    "STRENGTH",
    "VARIATION",
    "WEIGHT",
    "ZOOM",
    "ControlMode",
    "ControlNetSpec",
    "GeneratedImage",
    "GenerationRequest",
    "Outpaint",
    "Preprocess",
    "Progress",
    "Range",
    "RefinerSpec",
    "WeightedName",
    "parse_size",
    "refiner_percent_reason",
    "refiner_split",
    "run_steps",
]

MAX_SEED = 2**63 - 1

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Range(Generic[N]):
    """The values a field takes: from `low` to `high`, in multiples of `step` when there is one."""

    low: N
    high: N
    step: N | None = None

    def __contains__(self, value: float) -> bool:
        """Tell whether a value is one the field takes."""
        return self.low <= value <= self.high and (self.step is None or value % self.step == 0)


# The ranges of a request's fields, each declared once: the models below check them.
PROMPT_LENGTH = Range(2, 3000)  # characters; a negative prompt may be as long
SIDE = Range(128, 2048, 64)  # width and height, in pixels
STEPS = Range(1, 100)
CFG = Range(0.0, 50.0)
SEED = Range(1, MAX_SEED)
COUNT = Range(1, 4)  # images; image i uses seed + i
REPEAT = Range(1, 40)  # jobs of one prompt (--repeat), Midjourney's most; no request field: each job is one request
CLIP_SKIP = Range(0, 2)
WEIGHT = Range(-4.0, 4.0)  # of a LoRA or an embedding
MAX_ADDONS = 5  # LoRAs, and embeddings, per request
REFINER_PERCENT = Range(1, 99)  # of the steps, where the SDXL refiner takes over
STRENGTH = Range(0.0, 1.0)  # how much of an input image is denoised again (Runware's `strength`)
VARIATION = Range(0.0, 1.0)  # how far the starting noise moves toward the variation seed's (A1111's)
DEFAULT_STRENGTH = 0.8  # Runware's documented default for image-to-image
OUTPAINT_BLUR = Range(0, 32)  # pixels of the seam's soft edge (Runware's outpaint `blur`)
ZOOM = Range(1.0, 2.0)  # --zoom: the image's sides times this, extended evenly (more than 1)
CONTROL_WEIGHT = Range(0.0, 2.0)  # A1111's range; Runware takes 0–1
MAX_CONTROLNETS = 3
# How a guide becomes a ControlNet's map (none: it is one already), and which matters more in a ControlNet run:
# balanced: both; prompt: your prompt; controlnet: the ControlNet.
Preprocess = Literal["none", "canny", "depth", "openpose", "lineart", "softedge", "scribble"]
ControlMode = Literal["balanced", "prompt", "controlnet"]
PREPROCESSORS: tuple[Preprocess, ...] = get_args(Preprocess)
CONTROL_MODES: tuple[ControlMode, ...] = get_args(ControlMode)
FEW_RUN_STEPS = 10  # fewer steps than this actually running is worth a warning (the steps doc's advice)
_SHA256 = r"^[0-9a-f]{64}$"


def refiner_percent_reason(value: object, *, off: bool = False) -> str:
    """Return the one wording of a refiner percent out of range, for ``--refiner 500`` and ``refine 150`` alike.

    `off` adds that 0 or off asks for no refiner, where the option takes that.
    """
    takes = f"a percent from {REFINER_PERCENT.low} to {REFINER_PERCENT.high}" + (", or 0 or off for none" * off)
    return f"must be {takes}, not '{shown(value)}'"


_SIZE = re.compile(r"([0-9]{1,5})\s*[xX×*]\s*([0-9]{1,5})")


def parse_size(
    text: str, option: str = "size", example: str = "like 1216x832", *, typed: bool = False
) -> tuple[int, int]:
    """Return the (width, height) of ``WxH`` text: ``1216x832``, ``640X1536``, ``832×1216``, ``1024 * 768``.

    Only the form is read here; which sides are allowed is the caller's rule (a
    request's sides are `SIDE`; a server's largest size is any area within it).

    Args:
        text: whole numbers of 1 to 5 digits joined by ``x``, ``X``, ``×`` or ``*``, spaces allowed around.
        option: the option the refusal names.
        example: how the refusal shows the form (``"like 1216x832"``).
        typed: `option` is the user's own word (see `InvalidOption`).

    Raises:
        InvalidOption: the text is not in that form; one sentence naming `option`.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise InvalidOption(option, f"must be WIDTHxHEIGHT {example}, not '{shown(text)}'", typed=typed)
    return int(match[1]), int(match[2])


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WeightedName(_Frozen):
    """A catalog LoRA or embedding with its weight."""

    name: str = Field(min_length=1, max_length=100)
    weight: float = Field(default=1.0, ge=WEIGHT.low, le=WEIGHT.high)


class RefinerSpec(_Frozen):
    """Where the SDXL refiner takes over: a percent of the steps or a step number."""

    model: str = Field(min_length=1, max_length=100)
    start_percent: int | None = Field(default=None, ge=REFINER_PERCENT.low, le=REFINER_PERCENT.high)
    start_step: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _one_start(self) -> Self:
        if (self.start_percent is None) == (self.start_step is None):
            raise ValueError("give exactly one of start_percent and start_step")
        return self


class Outpaint(_Frozen):
    """How far an init image is extended on each side, in pixels (Runware's `outpaint`), and the seam's softness."""

    top: int = Field(default=0, ge=0, le=SIDE.high, multiple_of=SIDE.step)
    right: int = Field(default=0, ge=0, le=SIDE.high, multiple_of=SIDE.step)
    bottom: int = Field(default=0, ge=0, le=SIDE.high, multiple_of=SIDE.step)
    left: int = Field(default=0, ge=0, le=SIDE.high, multiple_of=SIDE.step)
    blur: int = Field(default=0, ge=OUTPAINT_BLUR.low, le=OUTPAINT_BLUR.high)

    @model_validator(mode="after")
    def _extends(self) -> Self:
        if not any(self.sides):
            raise ValueError("an outpaint extends at least one side")
        return self

    @property
    def sides(self) -> tuple[int, int, int, int]:
        """Return (top, right, bottom, left)."""
        return self.top, self.right, self.bottom, self.left


class ControlNetSpec(_Frozen):
    """One ControlNet: its catalog name, its guide, and the steps it acts on, exactly.

    `guide` is the stored image the ControlNet sees (already preprocessed); `source` the stored
    image it was made from when `preprocess` is not ``none``. `start_step` and `end_step` are
    1-based and inclusive, counted among the steps that run (the last ``steps × strength`` from
    an image): the same step set on every backend and scheduler.

    `style` is for an IP-Adapter only (the catalog knows which, `build_controls` checks): it acts
    on the UNet's style layers alone (InstantStyle), so the result takes the guide's look — its
    colours, strokes and light — and not what it shows: Midjourney's style reference, ``--sref``.
    """

    model: str = Field(min_length=1, max_length=100)
    guide: str = Field(pattern=_SHA256)
    source: str | None = Field(default=None, pattern=_SHA256)
    preprocess: Preprocess = "none"
    weight: float = Field(default=1.0, ge=CONTROL_WEIGHT.low, le=CONTROL_WEIGHT.high)
    start_step: int = Field(default=1, ge=1, le=STEPS.high)
    end_step: int = Field(ge=1, le=STEPS.high)
    mode: ControlMode = "balanced"
    style: bool = False

    @model_validator(mode="after")
    def _steps(self) -> Self:
        if self.start_step > self.end_step:
            raise ValueError("a ControlNet's start step comes after its end step")
        if (self.source is None) != (self.preprocess == "none"):
            raise ValueError("a preprocessed guide names its source, and only then")
        if self.style and (self.preprocess != "none" or self.mode != "balanced"):
            raise ValueError("a style reference reads the image itself, in the balanced mode")
        return self


class GenerationRequest(_Frozen):
    """One text-to-image request, as every backend receives it."""

    prompt: str = Field(min_length=PROMPT_LENGTH.low, max_length=PROMPT_LENGTH.high)
    negative_prompt: str | None = Field(default=None, max_length=PROMPT_LENGTH.high)
    model: str = Field(min_length=1, max_length=100)
    width: int = Field(default=1024, ge=SIDE.low, le=SIDE.high, multiple_of=SIDE.step)
    height: int = Field(default=1024, ge=SIDE.low, le=SIDE.high, multiple_of=SIDE.step)
    steps: int = Field(default=30, ge=STEPS.low, le=STEPS.high)
    cfg_scale: float = Field(default=7.0, ge=CFG.low, le=CFG.high)
    scheduler: str = Field(default="DPM++ 2M Karras", min_length=1, max_length=50)
    seed: int | None = Field(default=None, ge=SEED.low, le=SEED.high)
    count: int = Field(default=1, ge=COUNT.low, le=COUNT.high)
    clip_skip: int = Field(default=0, ge=CLIP_SKIP.low, le=CLIP_SKIP.high)
    vae: str | None = None
    refiner: RefinerSpec | None = None
    loras: tuple[WeightedName, ...] = Field(default=(), max_length=MAX_ADDONS)
    embeddings: tuple[WeightedName, ...] = Field(default=(), max_length=MAX_ADDONS)
    output_format: Literal["png", "jpg", "webp"] = "png"
    # Image-to-image: the sha256 of a stored input image (see `ImageStore.save_input`), how much of
    # it is denoised again, and an optional mask of the same store (white = repaint, black = keep).
    init_image: str | None = Field(default=None, pattern=_SHA256)
    strength: float | None = Field(default=None, ge=STRENGTH.low, le=STRENGTH.high)
    mask_image: str | None = Field(default=None, pattern=_SHA256)
    # An upscale: the init image made this many times larger. With a `strength`, A1111's hires fix
    # (resized, then image-to-image at that strength with the same prompt and seed); without one,
    # an upscaler enlarges the image alone and no model redraws it: the catalog `upscaler` named
    # here (a local ESRGAN-family network), or, when None, the API's own (Runware's imageUpscale).
    upscale: Literal[2, 4] | None = None
    upscaler: str | None = Field(default=None, min_length=1, max_length=100)
    # An outpaint: the output is the init image (width − left − right by height − top − bottom)
    # with the extension around it made new.
    outpaint: Outpaint | None = None
    # The catalog inpainter (the model's inpainting UNet) that repaints the mask or the outpaint in the
    # model's place; None: the model itself, as on every generation stored before inpainters came.
    # Chosen when the request is queued (`bot.service.ImageService.submit`), kept by rerolls and refines.
    inpainter: str | None = Field(default=None, min_length=1, max_length=100)
    controlnets: tuple[ControlNetSpec, ...] = Field(default=(), max_length=MAX_CONTROLNETS)
    # Seamless (A1111's Tiling, Midjourney's --tile): every convolution pads around the image's
    # opposite edge, so the image repeats edge to edge as a texture.
    tiling: bool = False
    # A1111's variation seed: the starting noise of every image is the seed's, moved this far (0–1,
    # spherically) toward the noise of variation_seed + i, so image i is a close variant of the
    # seed's image. With a variation every image keeps the seed itself (A1111's rule).
    variation_seed: int | None = Field(default=None, ge=SEED.low, le=SEED.high)
    variation_strength: float = Field(default=0.0, ge=VARIATION.low, le=VARIATION.high)
    # The prompts are read as A1111 reads them (`bot.weighting`): `(words:1.3)` weighs words, and
    # a prompt runs past CLIP's 77 tokens in chunks. False only on generations stored before
    # weighting came (migration 14): their prompts reach the model as written, so a reroll or a
    # refine of one makes what it made then.
    prompt_weighting: bool = True

    @model_validator(mode="after")
    def _weights(self) -> Self:
        if self.prompt_weighting:
            for text in (self.prompt, self.negative_prompt):
                if text is not None and (reason := weights_reason(text)) is not None:
                    raise ValueError(f"the prompt {reason}")
        return self

    @model_validator(mode="after")
    def _image_inputs(self) -> Self:
        if self.strength is not None and self.init_image is None:
            raise ValueError("strength goes with an init image, and only with one")
        if self.init_image is not None and self.strength is None and self.upscale is None:
            raise ValueError("an init image needs a strength, unless an upscaler enlarges it alone")
        if self.upscaler is not None and (self.upscale is None or self.strength is not None):
            raise ValueError("an upscaler goes with an upscale that no model redraws")
        if self.upscales_alone and self.refiner is not None:
            raise ValueError("no refiner runs in an upscale that no model redraws")
        if self.mask_image is not None and self.init_image is None:
            raise ValueError("a mask needs an init image")
        if self.upscale is not None and (self.init_image is None or self.mask_image is not None):
            raise ValueError("an upscale needs an init image and no mask")
        if self.outpaint is not None and (self.init_image is None or self.mask_image or self.upscale):
            raise ValueError("an outpaint needs an init image, and no mask or upscale")
        if self.outpaint is not None and (
            self.width - self.outpaint.left - self.outpaint.right < SIDE.low
            or self.height - self.outpaint.top - self.outpaint.bottom < SIDE.low
        ):
            raise ValueError("an outpaint leaves no room for the image")
        if self.run_steps < 1 and not self.upscales_alone:
            raise ValueError("no step would run")
        if any(control.end_step > self.run_steps for control in self.controlnets):
            raise ValueError("a ControlNet ends after the last step that runs")
        if self.inpainter is not None and ((self.mask_image is None and self.outpaint is None) or self.loras):
            raise ValueError("an inpainter repaints a mask or an outpaint, with no LoRA (theirs is the model's UNet)")
        if self.variation_seed is not None and not self.variation_strength:
            raise ValueError("a variation seed goes with a variation strength")
        if self.variation_strength and self.init_image is not None:
            raise ValueError("a variation starts from text, not from an init image")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """Rebuild a request from its stored JSON form."""
        return cls.model_validate(data)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form stored with the generation."""
        return self.model_dump(mode="json", exclude_defaults=False)

    def with_seed(self, seed: int) -> GenerationRequest:
        """Return the same request with another seed (a reroll)."""
        return self.model_copy(update={"seed": seed})

    def refined(self, refiner_model: str, start_percent: int) -> GenerationRequest:
        """Return the same request (same seed) with the refiner taking over at a percent."""
        if start_percent not in REFINER_PERCENT:
            raise InvalidOption("refine", refiner_percent_reason(start_percent), typed=True)
        spec = RefinerSpec(model=refiner_model, start_percent=start_percent)
        return self.model_copy(update={"refiner": spec})

    def image_seeds(self) -> list[int]:
        """Return the seed of each image: image i uses seed + i, or the seed itself in a variation."""
        if self.seed is None:
            raise ValueError("the request has no seed yet")
        return [self.seed + (0 if self.variation_strength else i) for i in range(self.count)]

    def variation_seeds(self) -> list[int]:
        """Return the variation seed of each image (variation_seed + i); none without a variation."""
        if not self.variation_strength:
            return []
        if self.variation_seed is None:
            raise ValueError("the request has no variation seed yet")
        return [self.variation_seed + i for i in range(self.count)]

    @property
    def upscales_alone(self) -> bool:
        """Tell whether this is an upscale that no model redraws (an upscaler enlarges the image alone)."""
        return self.upscale is not None and self.strength is None

    @property
    def run_steps(self) -> int:
        """Return the steps that actually run: all of them, the last ``steps × strength`` from an image, or none.

        None run in an upscale that an upscaler makes alone (`upscales_alone`).
        """
        if self.upscales_alone:
            return 0
        return self.steps if self.strength is None else run_steps(self.steps, self.strength)

    @property
    def split(self) -> tuple[int, int]:
        """Return (base steps, refiner steps) of the steps that run; (run steps, 0) without a refiner."""
        return refiner_split(self.run_steps, self.refiner)


def run_steps(steps: int, strength: float) -> int:
    """Return how many of `steps` run on an input image at `strength`: ``steps × strength``, halves up.

    The Runware steps doc: 40 steps at strength 0.5 run the last 20. Every backend runs this count.
    """
    return math.floor(steps * strength + 0.5)


def refiner_split(steps: int, refiner: RefinerSpec | None) -> tuple[int, int]:
    """Split `steps` between base and refiner, in steps, as the docs define it.

    The base runs ``round(steps × percent / 100)`` steps (halves round up) or
    ``start_step`` steps; the refiner runs the rest.
    """
    if refiner is None:
        return steps, 0
    if refiner.start_step is not None:
        base = refiner.start_step
    else:
        assert refiner.start_percent is not None
        base = (steps * refiner.start_percent * 2 + 100) // 200
    return base, steps - base


@dataclass(frozen=True, slots=True)
class Progress:
    """One denoising step done, reported by a backend while it works."""

    stage: Literal["base", "refiner"]
    step: int
    total: int
    preview: bytes | None = None


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One finished image, encoded in the request's output format.

    `nsfw` is the backend's safety check verdict (True: flagged), None when nothing checked it.
    """

    index: int
    seed: int
    data: bytes
    width: int
    height: int
    meta: dict[str, Any] = field(default_factory=dict)
    nsfw: bool | None = None

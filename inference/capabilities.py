"""What each backend can make: one table per backend, used to refuse a request before it is queued.

A remote API has its own limits (ModelsLab: 1024 px, 4 images, 50 steps) and
lacks some features (a refiner that starts at a chosen step). A request that
does not fit is refused with one sentence that says which backend can do it,
rather than silently changed. `imagebot backends` prints these tables.

Scheduler names are the core's (`bot.rules.SCHEDULERS`); each hosted API's
table below translates them to the API's own names and adds none. A name an
API lacks is left out of its table, and `Capabilities.check` refuses it with a
sentence naming the backends that have it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from bot.actions import PAN_ACTIONS, ButtonAction
from bot.catalog import Catalog, CatalogEntry, Kind
from bot.errors import InvalidOption
from bot.request import CFG, CONTROL_WEIGHT, COUNT, SIDE, STEPS, GenerationRequest
from bot.rules import SCHEDULERS

__all__ = ["CAPABILITIES", "BackendName", "Capabilities"]

BackendName = Literal["local", "ray", "runware", "modelslab"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The limits and features of one backend.

    Args:
        name: the backend's name in settings (``IMAGEBOT_BACKEND``) and in the catalog's id fields.
        title: how users read it.
        ids: the catalog id field it reads, when that is not `name`.
        max_width, max_height, max_count, max_steps: the largest request it takes.
        cfg: the guidance scales it takes.
        refiner_split: whether the SDXL refiner can take over at a chosen step.
        min_base_steps: the fewest steps the base model must run before the refiner.
        loras, embeddings, vae, clip_skip: whether it takes them.
        schedulers: the schedulers it has, of `bot.rules.SCHEDULERS` and in its order.
        image_to_image, inpaint: whether it starts from an input image (``--image``, Vary), and from a mask.
        outpaint: whether it extends an input image (``--outpaint``, ``--zoom``).
        upscale: whether it makes a result 2× or 4× larger (locally: resize, then image-to-image, or
            a catalog upscaler).
        upscale_redraws: whether its upscale runs the request's model on the enlarged image (the
            local hires fix) or is an upscaler of the image alone (Runware's ``imageUpscale``),
            for which the prompt, model and steps do not matter and are not checked.
        upscale_side: the longest side such an upscale of the image alone may make, when it is not
            `max_width` × `max_height` (ModelsLab's super resolution is not bound by its text-to-image size).
        refiner_with_image: whether the refiner hand-off may follow an input image.
        tiling: whether it makes seamless images (``--tile``): the local worker pads its convolutions
            around the image; neither API documents such a setting.
        variation: whether it takes A1111's variation seed (``--variation``): the local worker blends
            the starting noise; neither API takes a starting noise or a second seed.
        style_reference: whether an IP-Adapter may act on the style layers alone (``--sref``): the
            local worker sets its scale per layer (InstantStyle); Runware's ``ipAdapters`` take one
            weight for every layer.
        describe: whether it puts an image into words (``/describe``, `bot.ports.DescribingBackend`):
            the local worker's catalog captioner, Runware's ``imageCaption`` task; none of the ModelsLab
            endpoints this bot uses (v4 image generation, super resolution) captions an image.
    """

    name: BackendName
    title: str
    ids: str | None = None  # the catalog id field it reads, when not its name (Ray runs the local weights)
    # What a request may be at all (`bot.request`), unless the backend takes less.
    max_width: int = SIDE.high
    max_height: int = SIDE.high
    max_count: int = COUNT.high
    max_steps: int = STEPS.high
    cfg: tuple[float, float] = (CFG.low, CFG.high)
    refiner_split: bool = True
    min_base_steps: int = 1
    loras: bool = True
    embeddings: bool = True
    vae: bool = True
    clip_skip: bool = True
    schedulers: tuple[str, ...] = SCHEDULERS
    image_to_image: bool = False
    inpaint: bool = False
    upscale: bool = False
    upscale_redraws: bool = True
    upscale_side: int | None = None
    outpaint: bool = False
    controlnet: bool = False
    max_control_weight: float = CONTROL_WEIGHT.high
    ip_adapter: bool = False  # IP-Adapters among the ControlNets (catalog `ip_adapter`)
    ip_adapter_steps: bool = False  # ... acting on some of the steps only (--cn-start, --cn-end)
    style_reference: bool = False  # ... on the style layers only (--sref)
    refiner_with_image: bool = True
    tiling: bool = False
    variation: bool = False
    describe: bool = False

    def identifier(self, entry: CatalogEntry) -> str | None:
        """Return the id this backend knows a catalog entry by, or None when it has none."""
        value = getattr(entry, self.ids or self.name)
        return str(value) if value else None

    def withheld_actions(self, request: GenerationRequest) -> frozenset[ButtonAction]:
        """Return the buttons under a result of `request` whose requests `check` would refuse for a missing feature.

        Refine adds the refiner to the same request (an input image included); Vary starts from
        the image; Zoom Out, Make Square and Pan extend it; Vary (Region) inpaints it; Upscale enlarges it.
        """
        can: dict[ButtonAction, bool] = {
            "refine": self.refiner_split and (request.init_image is None or self.refiner_with_image),
            "vary-subtle": self.image_to_image,
            "vary-strong": self.image_to_image,
            "upscale-2": self.upscale,
            "upscale-4": self.upscale,
            "zoom-out": self.outpaint,
            "zoom-out-2": self.outpaint,
            "square": self.outpaint,
            "region": self.inpaint,
            **dict.fromkeys(PAN_ACTIONS, self.outpaint),
        }
        return frozenset(action for action, able in can.items() if not able)

    def check(self, request: GenerationRequest, catalog: Catalog) -> None:
        """Raise `InvalidOption` (saying which backend can) when the request does not fit this backend.

        Missing features are named before missing catalog ids: "no refiner hand-off here"
        tells more than "this refiner has no id here".
        """
        if request.upscale is not None and self.upscale and not self.upscale_redraws:
            # An upscaler of the image alone: the parent's model, refiner, LoRAs and steps play no
            # part, so a backend that could not have made the parent may still enlarge it.
            self._check_size(request, self.upscale_side)
            if request.upscaler is not None:
                self._refuse(
                    "upscaler", f"'{request.upscaler}' is not available on {self.title}", lambda c: c.upscale_redraws
                )
            return
        if request.upscales_alone and request.upscaler is None and self.upscale:
            self._refuse(
                "upscale",
                f"needs a strength (the hires fix) or a catalog upscaler on {self.title}",
                lambda c: c.upscale and not c.upscale_redraws,
            )
        self._check_size(request)
        if request.count > self.max_count:
            self._refuse(
                "count",
                f"is at most {self.max_count} on {self.title}, not {request.count}",
                lambda c: request.count <= c.max_count,
            )
        if request.steps > self.max_steps:
            self._refuse(
                "steps",
                f"are at most {self.max_steps} on {self.title}, not {request.steps}",
                lambda c: request.steps <= c.max_steps,
            )
        low, high = self.cfg
        if not low <= request.cfg_scale <= high:
            self._refuse(
                "cfg",
                f"must be from {low:g} to {high:g} on {self.title}, not {request.cfg_scale:g}",
                lambda c: c.cfg[0] <= request.cfg_scale <= c.cfg[1],
            )
        if request.refiner is not None:
            base = request.split[0]
            if not self.refiner_split:
                self._refuse("refiner", f"cannot take over at a chosen step on {self.title}", lambda c: c.refiner_split)
            if request.init_image is not None and not self.refiner_with_image:
                self._refuse(
                    "refiner",
                    f"cannot follow an input image on {self.title}",
                    lambda c: c.refiner_split and c.image_to_image and c.refiner_with_image,
                )
            if base < self.min_base_steps:
                self._refuse(
                    "refiner",
                    f"must leave the base model at least {self.min_base_steps} steps on {self.title}, not {base}",
                    lambda c: c.refiner_split and base >= c.min_base_steps,
                )
        adapters = [control for control in request.controlnets if catalog.is_ip_adapter(control.model)]
        features: tuple[tuple[str, bool, Callable[[Capabilities], bool]], ...] = (
            ("lora", bool(request.loras), lambda c: c.loras),
            ("embedding", bool(request.embeddings), lambda c: c.embeddings),
            ("VAE", request.vae is not None, lambda c: c.vae),
            ("clip skip", request.clip_skip > 0, lambda c: c.clip_skip),
            ("tile", request.tiling, lambda c: c.tiling),
            ("variation", request.variation_strength > 0, lambda c: c.variation),
            # What the user asked for is named first: an upscale or outpaint has an init image too.
            ("upscale", request.upscale is not None, lambda c: c.upscale),
            ("outpaint", request.outpaint is not None, lambda c: c.outpaint),
            ("ControlNet", len(request.controlnets) > len(adapters), lambda c: c.controlnet),
            ("Style reference (--sref)", any(c.style for c in adapters), lambda c: c.style_reference),
            ("IP-Adapter", bool(adapters), lambda c: c.ip_adapter),
            ("image", request.init_image is not None, lambda c: c.image_to_image),
            ("mask", request.mask_image is not None, lambda c: c.inpaint),
        )
        for label, asked, has in features:
            if asked and not has(self):
                self._refuse(label, f"is not available on {self.title}", has)
        if any(a.start_step != 1 or a.end_step != request.run_steps for a in adapters) and not self.ip_adapter_steps:
            self._refuse(
                "IP-Adapter",
                f"acts on every step that runs on {self.title}: it takes no --cn-start or --cn-end there",
                lambda c: c.ip_adapter and c.ip_adapter_steps,
            )
        strongest = max(request.controlnets, key=lambda control: control.weight, default=None)
        heaviest = strongest.weight if strongest is not None else 0.0
        if heaviest > self.max_control_weight:
            self._refuse(
                "IP-Adapter weight" if strongest in adapters else "ControlNet weight",
                f"is at most {self.max_control_weight:g} on {self.title}, not {heaviest:g}",
                lambda c: c.controlnet and heaviest <= c.max_control_weight,
            )
        if request.scheduler not in self.schedulers:
            self._refuse(
                "scheduler",
                f"'{request.scheduler}' is not available on {self.title} (it has {', '.join(self.schedulers)})",
                lambda c: request.scheduler in c.schedulers,
            )
        self._check_names(request, catalog)

    def check_describe(self) -> None:
        """Raise `InvalidOption` (option ``describe``, saying which backends can) when this backend has no captioner.

        Called before the image is read: a backend that cannot describe refuses before anything is sent.
        """
        if not self.describe:
            self._refuse("describe", f"is not available on {self.title}", lambda c: c.describe)

    def _check_size(self, request: GenerationRequest, side: int | None = None) -> None:
        width, height = (side, side) if side is not None else (self.max_width, self.max_height)
        if request.width > width or request.height > height:
            self._refuse(
                "size",
                f"is at most {width}×{height} on {self.title}, not {request.width}×{request.height}",
                lambda c: request.width <= c.max_width and request.height <= c.max_height,
            )

    def _check_names(self, request: GenerationRequest, catalog: Catalog) -> None:
        named: list[tuple[Kind, str, str]] = [("model", request.model, "model")]
        if request.refiner is not None:
            named.append(("refiner", request.refiner.model, "refiner"))
        if request.inpainter is not None:
            named.append(("inpainter", request.inpainter, "inpainter"))
        if request.vae is not None:
            named.append(("vae", request.vae, "VAE"))
        named += [("lora", lora.name, "lora") for lora in request.loras]
        named += [("embedding", embedding.name, "embedding") for embedding in request.embeddings]
        named += [
            ("controlnet", control.model, "IP-Adapter" if catalog.is_ip_adapter(control.model) else "ControlNet")
            for control in request.controlnets
        ]
        if request.upscaler is not None:
            named.append(("upscaler", request.upscaler, "upscaler"))
        for kind, name, label in named:
            entry = catalog.get(kind, name)
            if self.identifier(entry) is None:

                def has_id(c: Capabilities, entry: CatalogEntry = entry) -> bool:
                    return bool(c.identifier(entry))

                self._refuse(label, f"'{name}' is not available on {self.title}", has_id)

    def _refuse(self, option: str, reason: str, can: Callable[[Capabilities], bool]) -> None:
        # The Ray cluster is named for itself only: it can what the local backend can.
        others = [c.title for c in CAPABILITIES.values() if c is not self and c.ids is None and can(c)]
        where = f"; {' and '.join(others)} can" if others else ""
        raise InvalidOption(option, reason + where)

    def rows(self) -> list[tuple[str, str]]:
        """Return (feature, what this backend does) pairs, for ``imagebot backends``."""
        yes = {True: "yes", False: "no"}
        return [
            ("largest size", f"{self.max_width}×{self.max_height}"),
            ("images per request", str(self.max_count)),
            ("steps", f"1-{self.max_steps}"),
            ("cfg", f"{self.cfg[0]:g}-{self.cfg[1]:g}"),
            (
                "refiner from a chosen step",
                yes[self.refiner_split]
                + (f" (base ≥ {self.min_base_steps} steps)" if self.refiner_split and self.min_base_steps > 1 else ""),
            ),
            ("LoRAs", yes[self.loras]),
            ("embeddings", yes[self.embeddings]),
            ("VAE", yes[self.vae]),
            ("clip skip", yes[self.clip_skip]),
            ("seamless tiling", yes[self.tiling]),
            ("variation seeds", yes[self.variation]),
            ("schedulers", _schedulers_text(self.schedulers)),
            (
                "image-to-image",
                yes[self.image_to_image]
                + (" (no refiner after it)" if self.image_to_image and not self.refiner_with_image else ""),
            ),
            ("inpainting", yes[self.inpaint]),
            ("upscale", self._upscale_text()),
            ("outpaint", yes[self.outpaint]),
            (
                "ControlNet",
                yes[self.controlnet]
                + (
                    f" (weight ≤ {self.max_control_weight:g})"
                    if self.controlnet and self.max_control_weight < CONTROL_WEIGHT.high
                    else ""
                ),
            ),
            (
                "IP-Adapter",
                yes[self.ip_adapter] + (" (every step)" if self.ip_adapter and not self.ip_adapter_steps else ""),
            ),
            ("style reference", yes[self.style_reference]),
            ("describe", yes[self.describe]),
        ]

    def _upscale_text(self) -> str:
        if not self.upscale:
            return "no"
        if self.upscale_redraws:
            return "yes (hires fix or ESRGAN)"
        up_to = f", up to {self.upscale_side}×{self.upscale_side}" if self.upscale_side else ""
        return f"yes (the image alone, no redraw{up_to})"


def _schedulers_text(schedulers: tuple[str, ...]) -> str:
    missing = [name for name in SCHEDULERS if name not in schedulers]
    return "all" if not missing else "all but " + ", ".join(missing)


# Runware's scheduler names for ours: its A1111-style names where it lists them, else diffusers class names.
# It lists no third-order DPM++ solver, so "DPM++ 3M SDE" is refused there.
RUNWARE_SCHEDULERS: dict[str, str] = {
    "DPM++ 2M Karras": "DPM++ 2M Karras",
    "DPM++ 2M": "DPMSolverMultistepScheduler",
    "DPM++ 2M SDE Karras": "DPM++ 2M SDE Karras",
    "Euler": "Euler",
    "Euler a": "Euler a",
    "UniPC": "UniPC",
    "DDIM": "DDIMScheduler",
    "Heun": "Heun",
    "LCM": "LCMScheduler",
}
# ModelsLab's (scheduler class, use_karras_sigmas) for ours; it has no SDE variant of DPM++, so
# "DPM++ 2M SDE Karras" and "DPM++ 3M SDE" are refused there.
MODELSLAB_SCHEDULERS: dict[str, tuple[str, bool]] = {
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", True),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", False),
    "Euler": ("EulerDiscreteScheduler", False),
    "Euler a": ("EulerAncestralDiscreteScheduler", False),
    "UniPC": ("UniPCMultistepScheduler", False),
    "DDIM": ("DDIMScheduler", False),
    "Heun": ("HeunDiscreteScheduler", False),
    "LCM": ("LCMScheduler", False),
}


def _offered(table: Mapping[str, object]) -> tuple[str, ...]:
    """Return the core's scheduler names a backend's table translates, in the core's order."""
    return tuple(name for name in SCHEDULERS if name in table)


# The limits are the APIs' documented ones (Runware image-inference reference; ModelsLab v4 text2img).
#
# Input images, and why each backend has them or not:
# - Ray: the replicas run the local worker's code; the job's stored inputs (image, mask, guides)
#   travel with it as bytes and are written, content-addressed, under the replica's data dir, so a
#   GPU node need not share the bot's disk (`inference.ray_serve.input_files`, `localize`).
# - Runware: seedImage, strength, maskImage and outpaint of its imageInference task; upscale is its
#   imageUpscale task, the image alone with no redraw; ControlNet is its controlNet array
#   (inference/runware.py, docs/operations.md). Its refiner startStep is counted in the steps of a
#   text-to-image run; how it counts after an input image is not documented, so that pair is
#   refused rather than guessed.
# - ModelsLab: its v4 img2img and inpaint endpoints take the input as a link, and do not run the
#   steps asked for: the img2img doc's own example sends num_inference_steps "30" with strength
#   0.7 and its answer reports "steps": 20 (30 × 0.7 is 21), the inpaint example sends steps "30"
#   and reports 50. Every backend runs exactly `request.run_steps`, so ModelsLab refuses them.
#   Upscale is its super-resolution endpoint, the image alone with no redraw (inference/modelslab.py);
#   its result may be larger than its text-to-image limit: up to the request's largest side.
#   ControlNet stays refused: its list names no SDXL ControlNet, its steps are not assured, and
#   several ControlNets share one guide and one weight (docs/operations.md, "ControlNet on Runware
#   and ModelsLab").
_LOCAL = Capabilities(
    "local",
    "the local backend",
    image_to_image=True,
    inpaint=True,
    upscale=True,
    outpaint=True,
    controlnet=True,
    ip_adapter=True,
    ip_adapter_steps=True,
    style_reference=True,
    tiling=True,
    variation=True,
    # A catalog ``captioner`` (BLIP); whether one's files are in place here is the local backend's own check.
    describe=True,
)
CAPABILITIES: dict[BackendName, Capabilities] = {
    "local": _LOCAL,
    # A Ray replica runs the local worker's code on the local weights: the same features.
    "ray": replace(_LOCAL, name="ray", title="the Ray cluster", ids="local"),
    "runware": Capabilities(
        "runware",
        "Runware",
        min_base_steps=2,
        schedulers=_offered(RUNWARE_SCHEDULERS),
        image_to_image=True,
        inpaint=True,
        upscale=True,
        upscale_redraws=False,
        outpaint=True,
        refiner_with_image=False,
        # The imageInference controlNet array (inference/runware.py); its weight is 0–1 in the
        # SDK's text_to_image.md ("Weight of this ControlNet model (0-1)"), A1111's goes to 2.
        controlnet=True,
        max_control_weight=1.0,
        # Its ipAdapters array: a model, a guideImage and a weight (0–1, the ControlNets' limit), no steps.
        ip_adapter=True,
        # Its imageCaption task (/docs/en/utilities/image-to-text): an image in, a caption's text out.
        describe=True,
    ),
    "modelslab": Capabilities(
        "modelslab",
        "ModelsLab",
        max_width=1024,
        max_height=1024,
        max_count=4,
        max_steps=50,
        cfg=(1.0, 20.0),
        refiner_split=False,
        embeddings=False,
        schedulers=_offered(MODELSLAB_SCHEDULERS),
        upscale=True,
        upscale_redraws=False,
        upscale_side=SIDE.high,
    ),
}

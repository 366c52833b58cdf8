"""What the bot sends the worker: a request with every catalog name resolved to a local id.

The worker is given only `WorkerJob`s, which `build_job` makes from a validated
`GenerationRequest` and the catalog on the bot side, so nothing a user typed
is ever loaded: a user names catalog entries; their ``local`` ids (a Hugging
Face repo id, ``tiny:<part>`` or a path) come from models.toml.
"""

from __future__ import annotations

import difflib
import os
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bot.catalog import Catalog, CatalogEntry
from bot.errors import InvalidOption
from bot.images import input_path
from bot.request import MAX_SEED, ControlMode, GenerationRequest, run_steps
from inference.local._schedulers import MAX_STEPS, SCHEDULERS

__all__ = [
    "Asset",
    "Control",
    "WorkerJob",
    "asset_of",
    "batch_key",
    "build_job",
    "check_installed",
    "hub_cached",
    "hub_offline",
    "installed",
]

# Architectures the SDXL pipelines can run.
_LOCAL_ARCHITECTURES = frozenset({"sdxl", "sdxl-distilled"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Asset(_Frozen):
    """One catalog entry as the worker loads it."""

    name: str
    local: str
    weight_name: str | None = None
    weight: float = 1.0
    token: str | None = None
    image_encoder: str | None = None  # an IP-Adapter's: the folder of its CLIP image encoder inside `local`


class Control(_Frozen):
    """One ControlNet of a job: the weights, the guide file (preprocessed already) and its exact steps.

    An IP-Adapter (`ip_adapter`) is one too: its guide is the image prompt, its mode balanced; with
    `style`, it acts on the UNet's style layers only (``--sref``).
    """

    asset: Asset
    guide: str  # absolute path of the stored guide PNG
    weight: float
    start_step: int  # 1-based, inclusive, among the steps that run
    end_step: int
    mode: ControlMode
    ip_adapter: bool = False
    style: bool = False


class WorkerJob(_Frozen):
    """One generation for the worker, fully resolved."""

    prompt: str
    negative_prompt: str | None
    model: Asset
    refiner: Asset | None
    vae: Asset | None
    loras: tuple[Asset, ...]
    embeddings: tuple[Asset, ...]
    width: int
    height: int
    steps: int
    base_steps: int
    refiner_steps: int
    cfg_scale: float
    scheduler: str
    seeds: tuple[int, ...]
    clip_skip: int
    output_format: Literal["png", "jpg", "webp"]
    # Image-to-image: stored input files (absolute paths under the data dir) and the strength.
    init_image: str | None = None
    mask_image: str | None = None
    strength: float | None = None
    # (top, right, bottom, left) pixels added around the init image, and the seam's blur.
    outpaint: tuple[int, int, int, int] | None = None
    outpaint_blur: int = 0
    # The inpainting UNet that runs a masked or outpainted job in the model's UNet's place (its text
    # encoders and VAE are the model's); None: the model's own (`GenerationRequest.inpainter`).
    inpainter: Asset | None = None
    controlnets: tuple[Control, ...] = ()
    # An upscale that an ESRGAN-family network makes alone (no strength: no SDXL step runs); the
    # init image is enlarged to width × height.
    upscaler: Asset | None = None
    # The prompts read as A1111 reads them (weights, past 77 tokens); False: given to diffusers as
    # written (generations stored before weighting came, `GenerationRequest.prompt_weighting`).
    prompt_weighting: bool = True
    # Seamless: every convolution of the models pads around the image (`GenerationRequest.tiling`).
    tiling: bool = False
    # A1111's variation seed: image i starts from its seed's noise moved `variation_strength`
    # toward the noise of variation_seeds[i] (`GenerationRequest.variation_seed`); none: the seed's.
    variation_seeds: tuple[int, ...] = ()
    variation_strength: float = 0.0

    @property
    def ip_adapters(self) -> tuple[Control, ...]:
        """Return the job's IP-Adapters (its image prompts), in order; the other ControlNets read maps."""
        return tuple(control for control in self.controlnets if control.ip_adapter)

    @property
    def run_steps(self) -> int:
        """Return the steps that actually run: all, or the last ``steps × strength`` from an image."""
        return self.steps if self.strength is None else run_steps(self.steps, self.strength)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form sent to a worker (a Ray replica), without the fields at their defaults.

        A replica still on the previous version forbids fields it does not know; left out, they let
        it take every job that uses none of the newer settings (``--tile``, ``--variation``), so a
        cluster upgraded replica by replica keeps making those jobs. A job that needs a newer
        setting is refused by an older replica rather than made without it.
        """
        return self.model_dump(mode="json", exclude_defaults=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerJob:
        """Rebuild a job from its JSON form."""
        return cls.model_validate(data)


def batch_key(job: WorkerJob) -> tuple[Any, ...]:
    """Return what jobs must share to run in one pipeline call: everything but prompts, seeds, format and inputs."""
    return (
        job.model,
        job.refiner,
        job.vae,
        job.loras,
        job.embeddings,
        job.width,
        job.height,
        job.steps,
        job.base_steps,
        job.refiner_steps,
        job.cfg_scale,
        job.scheduler,
        job.clip_skip,
        job.tiling,
        job.variation_strength,
        # The mode (text, image, inpaint, outpaint) and its strength, not the files: jobs from
        # different input images share a call, each image given with its own prompts.
        job.init_image is not None,
        job.mask_image is not None,
        job.strength,
        job.outpaint,
        job.outpaint_blur,
        job.inpainter,
        job.controlnets,
        job.upscaler,
        # None (zeroed negative embeddings in SDXL) and "" (an encoded empty prompt) are different images.
        job.negative_prompt is None,
        # Prompts as written, or weighed by our encoding (whose chunk counts the worker then matches).
        job.prompt_weighting,
    )


def build_job(request: GenerationRequest, catalog: Catalog, data_dir: Path) -> WorkerJob:
    """Resolve every catalog name of `request` to what the local worker loads.

    Args:
        request: a validated request; a missing seed is drawn here.
        catalog: where names are looked up.
        data_dir: the base of ``./`` paths in the catalog.

    Raises:
        InvalidOption: a name is not in the catalog, has no local id, or the
            combination cannot run locally (a non-SDXL model, too many LCM steps).
    """
    model = catalog.get("model", request.model)
    if model.architecture not in _LOCAL_ARCHITECTURES:
        raise InvalidOption("model", f"'{model.name}' ({model.architecture}) cannot run on the local backend")
    if request.scheduler not in SCHEDULERS:
        close = difflib.get_close_matches(request.scheduler, list(SCHEDULERS), n=3, cutoff=0.5)
        raise InvalidOption("scheduler", f"'{request.scheduler}' is not a known sampler", close)
    limit = MAX_STEPS.get(request.scheduler)
    if limit is not None and request.steps > limit:
        raise InvalidOption("steps", f"must be at most {limit} with {request.scheduler}, not {request.steps}")
    refiner = None
    if request.refiner is not None:
        refiner = asset_of(catalog.get("refiner", request.refiner.model), data_dir)
    base_steps, refiner_steps = request.split
    # Drawn here only for a request not yet queued (a check): the service draws both before a job is made.
    updates: dict[str, int] = {"seed": request.seed or random.randint(1, MAX_SEED - request.count)}
    if request.variation_strength:
        updates["variation_seed"] = request.variation_seed or random.randint(1, MAX_SEED - request.count)
    drawn = request.model_copy(update=updates)
    return WorkerJob(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        model=asset_of(model, data_dir),
        refiner=refiner,
        vae=asset_of(catalog.get("vae", request.vae), data_dir) if request.vae else None,
        loras=tuple(asset_of(catalog.get("lora", lora.name), data_dir, weight=lora.weight) for lora in request.loras),
        embeddings=tuple(
            _embedding(catalog.get("embedding", emb.name), data_dir, emb.weight) for emb in request.embeddings
        ),
        width=request.width,
        height=request.height,
        steps=request.steps,
        base_steps=base_steps,
        refiner_steps=refiner_steps,
        cfg_scale=request.cfg_scale,
        scheduler=request.scheduler,
        seeds=tuple(drawn.image_seeds()),
        clip_skip=request.clip_skip,
        tiling=request.tiling,
        variation_seeds=tuple(drawn.variation_seeds()),
        variation_strength=request.variation_strength,
        output_format=request.output_format,
        init_image=str(Path(data_dir) / input_path(request.init_image)) if request.init_image else None,
        mask_image=str(Path(data_dir) / input_path(request.mask_image)) if request.mask_image else None,
        strength=request.strength,
        outpaint=request.outpaint.sides if request.outpaint else None,
        outpaint_blur=request.outpaint.blur if request.outpaint else 0,
        inpainter=_inpainter(request, catalog, data_dir),
        controlnets=_controls(request, catalog, data_dir),
        upscaler=asset_of(catalog.get("upscaler", request.upscaler), data_dir) if request.upscaler else None,
        prompt_weighting=request.prompt_weighting,
    )


def _inpainter(request: GenerationRequest, catalog: Catalog, data_dir: Path) -> Asset | None:
    """Return the job's inpainter, if any; IP-Adapters load into the model's own UNet, so none goes with one."""
    if request.inpainter is None:
        return None
    entry = catalog.get("inpainter", request.inpainter)
    if entry.architecture != "sdxl-inpainting":
        raise InvalidOption("inpainter", f"'{entry.name}' ({entry.architecture}) cannot run on the local backend")
    if any(catalog.is_ip_adapter(control.model) for control in request.controlnets):
        raise InvalidOption("inpainter", f"'{entry.name}' cannot take an IP-Adapter (theirs is the model's UNet)")
    return asset_of(entry, data_dir)


def _controls(request: GenerationRequest, catalog: Catalog, data_dir: Path) -> tuple[Control, ...]:
    """Return the job's ControlNets and IP-Adapters; the IP-Adapters of one run must share an image encoder."""
    controls = []
    for control in request.controlnets:
        entry = catalog.get("controlnet", control.model)
        controls.append(
            Control(
                asset=asset_of(entry, data_dir),
                guide=str(Path(data_dir) / input_path(control.guide)),
                weight=control.weight,
                start_step=control.start_step,
                end_step=control.end_step,
                mode=control.mode,
                ip_adapter=entry.ip_adapter,
                style=control.style,
            )
        )
    adapters = [control.asset for control in controls if control.ip_adapter]
    if len({(asset.local, asset.image_encoder) for asset in adapters}) > 1:
        # diffusers gives a pipeline one image encoder, which every loaded IP-Adapter reads.
        names = " and ".join(f"'{asset.name}'" for asset in adapters)
        raise InvalidOption("IP-Adapters", f"{names} read images with different encoders; use one of them at a time")
    return tuple(controls)


def _embedding(entry: CatalogEntry, data_dir: Path, weight: float) -> Asset:
    if not entry.token:
        raise InvalidOption("embedding", f"'{entry.name}' has no token in the catalog")
    return asset_of(entry, data_dir, weight=weight)


def asset_of(entry: CatalogEntry, data_dir: Path, weight: float = 1.0) -> Asset:
    """Return a catalog entry as the worker loads it (``./`` under the data dir); refuse one with no local id."""
    if not entry.local:
        raise InvalidOption(entry.kind, f"'{entry.name}' is not available on the local backend")
    local = entry.local
    if local.startswith("./"):
        local = str((Path(data_dir) / local[2:]).resolve())
    return Asset(
        name=entry.name,
        local=local,
        weight_name=entry.weight_name,
        weight=weight,
        token=entry.token,
        image_encoder=entry.image_encoder,
    )


def hub_offline() -> bool:
    """Return whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE``): only its cache is read."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cached(repo: str) -> bool:
    """Return whether a hub repository has a downloaded snapshot in the Hugging Face cache.

    The cache's folder is read from the environment at call time, as the hub reads it
    (``HF_HUB_CACHE``, else ``HF_HOME/hub``), without importing the hub's library.
    """
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    cache = Path(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub"))
    snapshots = cache / ("models--" + repo.replace("/", "--")) / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def installed(asset: Asset) -> bool:
    """Return whether an asset's weights are here, or can be fetched when the worker first loads them.

    A file or folder must exist; a hub repository must be in the cache while the hub is off
    (otherwise the worker downloads it); a ``tiny:`` part is built on this machine when used.
    """
    if asset.local.startswith("tiny:"):
        return True
    local = Path(asset.local)
    if local.is_absolute():
        return local.exists()
    return not hub_offline() or hub_cached(asset.local)


def check_installed(job: WorkerJob) -> None:
    """Refuse a job whose weights are not `installed`, before it is queued rather than when the worker loads it.

    Raises:
        InvalidOption: naming the entry; the path and repository stay out of the user's sentence.
    """
    assets: list[tuple[str, Asset | None]] = [("model", job.model), ("refiner", job.refiner), ("vae", job.vae)]
    assets.append(("inpainter", job.inpainter))
    assets += [("lora", lora) for lora in job.loras] + [("embedding", emb) for emb in job.embeddings]
    assets += [("IP-Adapter" if control.ip_adapter else "controlnet", control.asset) for control in job.controlnets]
    assets.append(("upscaler", job.upscaler))
    for kind, asset in assets:
        if asset is not None and not installed(asset):
            raise InvalidOption(kind, f"'{asset.name}' is not installed on this bot; ask its operator to download it")

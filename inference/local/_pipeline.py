"""Run one `WorkerJob` on SDXL with diffusers: base, optional refiner, LoRAs, embeddings, VAE, sampler, ControlNets.

An upscale with a catalog upscaler runs no SDXL step: the ESRGAN-family network
(`inference.local._esrgan`) enlarges the image alone, loaded once and kept like the rest.

`SDXLRunner.run` reads top to bottom in numbered steps, like ``__call__`` of
diffusers' `StableDiffusionXLPipeline`. The runner keeps what it loaded: one
base pipeline, its refiner (sharing text_encoder_2, tokenizer_2 and the VAE
with the base), the VAEs, LoRAs (as named peft adapters), textual-inversion
embeddings and ControlNets, each loaded once and switched per job. `loads` counts every load,
so tests can prove that switching does not reload.

This module imports torch; only the worker process (and tests) import it.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.utils import deprecation_utils
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageChops, ImageFilter
from safetensors.torch import load_file

from bot.request import GeneratedImage
from inference import tiny
from inference.local import _esrgan as esrgan
from inference.local._controlnet import GatedControlNets, GatedImagePrompts, StepGate
from inference.local._job import Asset, Control, WorkerJob, batch_key
from inference.local._prompts import chunk_counts, encode
from inference.local._protocol import Stage
from inference.local._safety import SafetyCheck, SafetyChecker, is_custom_checker, load_checker
from inference.local._schedulers import SCHEDULERS
from inference.local._speed import Levers, apply, compile_cache, set_fused
from inference.local._split import SplitPlan, plan_split

__all__ = ["JobFailed", "PreviewDecoder", "RunCancelled", "SDXLRunner", "pick_device", "pick_dtype"]

log = logging.getLogger(__name__)

# (stage, steps done, stage total, preview: a small WebP of the latents every few steps, else None)
ProgressFn = Callable[[Stage, int, int, bytes | None], None]
CancelFn = Callable[[], bool]

# diffusers 0.36 renamed from_pretrained's torch_dtype to dtype; older versions only know the old name.
_DTYPE_KW = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_PIL_FORMATS = {"png": ("PNG", {}), "jpg": ("JPEG", {"quality": 95}), "webp": ("WEBP", {"quality": 95})}


# Linear map from SDXL's four latent channels to RGB (the approximation ComfyUI and A1111 use for
# live previews): a preview costs one small matrix product instead of a VAE decode.
_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)
PREVIEWS_PER_STAGE = 4
# How far (pixels) an inpainting's new part fades into the kept one, inward of the mask's edge (A1111's mask blur).
OVERLAY_BLUR = 4


# Previews from a tiny autoencoder are full-size images; chats show them small.
PREVIEW_MAX_SIDE = 512


def latent_preview(latents: torch.Tensor) -> bytes:
    """Return a WebP of the first image's latents (1/8 of the image's size) through the linear RGB map."""
    factors = torch.tensor(_LATENT_RGB, dtype=torch.float32, device=latents.device)
    bias = torch.tensor(_LATENT_RGB_BIAS, dtype=torch.float32, device=latents.device)
    return _webp(torch.einsum("chw,cr->hwr", latents[0].float(), factors) + bias)


def _webp(rgb: torch.Tensor) -> bytes:
    """Encode an H×W×3 tensor of values in [-1, 1] as a small WebP."""
    pixels = ((rgb.float().clamp(-1, 1) + 1) * 127.5).to(torch.uint8).cpu().numpy()
    image = Image.fromarray(pixels, "RGB")
    image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=70)
    return buffer.getvalue()


class PreviewDecoder:
    """Turns the latents of a step into a preview: the linear map, or a tiny autoencoder (TAESD) when configured.

    A tiny autoencoder (``madebyollin/taesdxl`` for SDXL, ``tiny`` for the tiny model's) decodes the
    latents to a full-size picture in one small decoder pass, much closer to the final image than
    the linear map's 1/8-size sketch. It is loaded on first use; if it cannot be, previews
    fall back to the linear map: a preview never fails a job.

    Args:
        setting: ``linear``, ``tiny``, or an `AutoencoderTiny`'s Hugging Face id or folder.
        resolve: maps ``tiny:`` ids to folders.
        device, dtype: where the decoder runs.
        hub_kwargs: ``from_pretrained`` options.
    """

    def __init__(
        self, setting: str, resolve: Callable[[str], str], device: torch.device, dtype: torch.dtype, hub_kwargs: Any
    ) -> None:
        self._source = {"linear": None, "tiny": "tiny:taesd"}.get(setting, setting)
        self._resolve = resolve
        self._device = device
        self._dtype = dtype
        self._hub_kwargs = hub_kwargs
        self._decoder: Any = None

    def __call__(self, latents: torch.Tensor) -> bytes:
        """Return a WebP preview of the first image of `latents`."""
        decoder = self._load()
        if decoder is None:
            return latent_preview(latents)
        # The pipelines' latents are already scaled; TAESD's scaling factor is 1.
        with torch.inference_mode():
            rgb = decoder.decode(latents[:1].to(self._device, decoder.dtype)).sample[0]
        return _webp(rgb.permute(1, 2, 0))

    def _load(self) -> Any:
        if self._source is None or self._decoder is not None:
            return self._decoder
        from diffusers import AutoencoderTiny

        try:
            decoder = AutoencoderTiny.from_pretrained(
                self._resolve(self._source), **{_DTYPE_KW: self._dtype}, **self._hub_kwargs
            )
        except Exception:
            log.warning("the preview decoder %r could not be loaded; previews use the linear map", self._source)
            self._source = None
            return None
        self._decoder = decoder.to(self._device).eval()
        return self._decoder


# What `SDXLRunner.stats` counts the loads of.
_LOADED = ("pipeline", "refiner", "inpainter", "vae", "lora", "embedding", "controlnet", "ip-adapter", "upscaler")


class RunCancelled(Exception):
    """The job's cancel flag was seen between two steps."""


class JobFailed(Exception):
    """A job could not run; `kind` is ``invalid`` (the user's choice) or ``failed`` (ours).

    Args:
        kind: ``invalid`` or ``failed``.
        message: one short sentence for the user.
        option: for ``invalid``, the option to blame.
    """

    def __init__(self, kind: str, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.option = option


def pick_device(device: str) -> torch.device:
    """Return the torch device for a setting: ``auto`` is CUDA when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Return the weights dtype for a setting: ``auto`` is bfloat16 on CUDA, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


# A loaded textual inversion: per text encoder, the encoder, the token ids and their original vectors.
_Embedding = list[tuple[Any, list[int], torch.Tensor]]


@dataclass
class _Stage:
    """Progress and cancel bookkeeping of one pipeline call, as its `callback_on_step_end`."""

    name: Stage
    calls: int
    total: int
    order: int
    on_progress: ProgressFn
    should_cancel: CancelFn
    preview: Callable[[torch.Tensor], bytes] = latent_preview
    stop_after: int | None = None
    reported: int = 0
    cancelled: bool = False

    def __call__(self, pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if self.should_cancel():
            self.cancelled = True
            # diffusers' documented way to stop early: the remaining steps are skipped.
            pipe._interrupt = True
            return {}
        # A second-order step is two UNet calls; the last step of a schedule is one.
        done = self.total if i + 1 >= self.calls else (i + 1) // self.order
        if done > self.reported:
            self.reported = done
            every = max(1, self.total // PREVIEWS_PER_STAGE)
            latents = tensors.get("latents")
            # No preview of the last step: the image itself follows.
            wanted = latents is not None and done < self.total and done % every == 0
            self.on_progress(self.name, done, self.total, self.preview(latents) if wanted else None)
        if self.stop_after is not None and i + 1 >= self.stop_after:
            pipe._interrupt = True
        return {}


class SDXLRunner:
    """Keeps SDXL pipelines loaded and runs jobs on them.

    Args:
        data_dir: where ``tiny:`` parts are built and ``./`` paths point.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``…
        dtype: ``auto``, ``float16``, ``bfloat16`` or ``float32``.
        hf_token: token for gated Hugging Face models.
        safety_checker: the image check (`inference.local._safety.checker_source`): ``auto``, ``off``,
            ``tiny``, a checker's Hugging Face id or folder, ``module:callable`` naming a factory of a
            custom checker (imported now, `load_checker`), or such a checker itself.
        preview_decoder: how step previews are made (`PreviewDecoder`): ``linear``, ``tiny``, or a
            tiny autoencoder's Hugging Face id or folder.
        levers: how loaded pipelines are set up for speed or memory (`inference.local._speed`).
    """

    def __init__(
        self,
        data_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        hf_token: str | None = None,
        *,
        safety_checker: str | SafetyChecker = "auto",
        preview_decoder: str = "linear",
        levers: Levers | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.levers = levers or Levers()
        if self.levers.compile != "off":
            compile_cache(self.data_dir)
        self.hf_token = hf_token
        self._safety: SafetyChecker
        if not isinstance(safety_checker, str):
            self._safety = safety_checker
        elif is_custom_checker(safety_checker):
            self._safety = load_checker(safety_checker)
        else:
            self._safety = SafetyCheck(safety_checker, self._folder, self.device, self.dtype, self._hub_kwargs())
        self._preview = PreviewDecoder(preview_decoder, self._folder, self.device, self.dtype, self._hub_kwargs())
        self.loads: Counter[str] = Counter()
        self.base: StableDiffusionXLPipeline | None = None
        self.refiner: StableDiffusionXLImg2ImgPipeline | None = None
        self.inpainter: StableDiffusionXLInpaintPipeline | None = None
        self._base_id: str | None = None
        self._refiner_id: str | None = None
        self._inpainter_id: str | None = None
        self._own_vae: AutoencoderKL | None = None
        self._scheduler_config: Any = None
        self._vaes: dict[str, AutoencoderKL] = {}
        self._loras: dict[str, str] = {}
        self._embeddings: dict[str, _Embedding] = {}
        # Kept across base switches: a ControlNet holds its own weights, not the base's.
        self._controlnets: dict[str, ControlNetModel] = {}
        # IP-Adapters: their weights and image encoders kept in memory across base switches; the
        # ones loaded into the base now (by file, in order) and its attention processors before.
        self._ip_weights: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        self._encoders: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._ip_loaded: tuple[str, ...] = ()
        self._attention: dict[str, Any] = {}
        self._upscalers: dict[str, tuple[torch.nn.Module, esrgan.Architecture]] = {}

    def run(
        self, job: WorkerJob, on_progress: ProgressFn | None = None, should_cancel: CancelFn | None = None
    ) -> list[GeneratedImage]:
        """Make the images of `job`, one per seed, encoded in its output format.

        Args:
            job: the resolved job.
            on_progress: called with (stage, steps done, stage total) after each step.
            should_cancel: polled after each step; when it returns True the run stops.

        Raises:
            RunCancelled: `should_cancel` returned True.
            JobFailed: something could not be loaded or the job cannot run.
        """
        return self.run_batch([job], on_progress, should_cancel)[0]

    def run_batch(
        self, jobs: list[WorkerJob], on_progress: ProgressFn | None = None, should_cancel: CancelFn | None = None
    ) -> list[list[GeneratedImage]]:
        """Make the images of compatible jobs (same `batch_key`) in one pipeline call per stage.

        Each image keeps its own CPU generator (its seed), so it is the image it would be
        alone, up to the last bits of batched arithmetic. One job runs exactly as before.

        Returns:
            The images of each job, in the order of `jobs`.
        """
        job = jobs[0]
        if any(batch_key(other) != batch_key(job) for other in jobs):
            raise ValueError("jobs of one batch must have the same batch_key")
        started = time.perf_counter()
        on_progress = on_progress or (lambda stage, step, total, preview: None)
        should_cancel = should_cancel or (lambda: False)
        if job.upscaler is not None:
            # An upscaler enlarges each image alone: no SDXL pipeline runs.
            return [self._upscaled(one, on_progress, should_cancel) for one in jobs]
        meta: dict[str, Any] = {}

        # 1. Load (or reuse) the base pipeline.
        base = self._base_pipeline(job.model)

        # 2. Load (or reuse) the refiner, sharing text_encoder_2, tokenizer_2 and the VAE with the base.
        refiner = None
        if job.refiner is not None and job.refiner_steps > 0:
            refiner = self._refiner_pipeline(job.refiner)
        elif job.refiner is not None:
            meta["refiner_note"] = "the refiner had no steps left and did not run"
        # 2b. Load (or reuse) the inpainter, sharing the text encoders, tokenizers and VAE with the base.
        inpainter = None
        if job.inpainter is not None:
            inpainter = self._inpainter_pipeline(job.inpainter)
            meta["inpainter"] = job.inpainter.name

        # 3. Put the job's VAE (or the model's own) on every pipeline.
        self._use_vae(job.vae)

        # 4. Load the job's IP-Adapters into the base (unloading others), then activate its LoRAs as
        # named adapters; none: LoRAs off.
        self._use_ip_adapters(job.ip_adapters, job.model.name)
        self._use_loras(job.loras)

        # 5. Load and weight the embeddings; their tokens must be in a prompt to act.
        prompts = [self._use_embeddings(one, meta) for one in jobs]
        if job.prompt_weighting and len(jobs) > 1:
            # Prompts of different lengths (in 75-token chunks) cannot share a call: each group runs alone.
            groups: dict[tuple[int, int], list[int]] = {}
            for index, (one, prompt) in enumerate(zip(jobs, prompts, strict=True)):
                counts = [chunk_counts(pipe, prompt, one.negative_prompt) for pipe in (base, refiner) if pipe]
                groups.setdefault((counts[0], counts[-1]), []).append(index)
            if len(groups) > 1:
                results: dict[int, list[GeneratedImage]] = {}
                for indexes in groups.values():
                    made = self.run_batch([jobs[i] for i in indexes], on_progress, should_cancel)
                    results.update(zip(indexes, made, strict=True))
                return [results[index] for index in range(len(jobs))]

        # 6. Install the sampler on every pipeline that runs, from the base's own scheduler config.
        scheduler_cls, overrides = self._scheduler(job.scheduler)
        for pipe in (base, refiner, inpainter):
            if pipe is not None:
                pipe.scheduler = scheduler_cls.from_config(self._scheduler_config, **overrides)

        # 7. Split the steps between base and refiner (in steps, whatever the schedule). From an
        # image only the last run_steps of the schedule run (diffusers' img2img slices the same way).
        timesteps, order = self._timesteps(scheduler_cls, overrides, job.steps)
        timesteps = timesteps[(job.steps - job.run_steps) * order :]
        plan = self._plan(job, timesteps, order, meta) if refiner is not None else None
        if plan is None:
            refiner = None

        # 8. One CPU generator per image (seed + i), so a seed gives the same image on any device.
        seeds = [seed for one in jobs for seed in one.seeds]
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        common: dict[str, Any] = {
            "num_inference_steps": job.steps,
            "guidance_scale": job.cfg_scale,
            "generator": generators,
            "clip_skip": job.clip_skip or None,
        }
        if len(jobs) == 1:
            common["num_images_per_prompt"] = len(seeds)

        # 9. Run the base (or the inpainter in its place): the whole schedule, or up to the split, handing
        # over latents. With ControlNets it is the ControlNet pipeline of the same kind, on the same modules.
        first, inputs, controls = self._first_stage(inpainter or base, jobs, order)
        image_prompts = _image_prompts(job, inputs, order)
        if job.variation_strength:
            # A1111's variation seed: the starting noise, drawn from each image's generator as the
            # pipeline would draw it (so its later draws, an ancestral sampler's, stay the same),
            # moved toward the variation seed's noise. Only from text, and the base's alone: the
            # refiner continues from the base's latents.
            variations = [seed for one in jobs for seed in one.variation_seeds]
            inputs["latents"] = variation_noise(base, job, generators, variations, job.variation_strength)
        # Seamless (--tile): every convolution the image passes through wraps around its edges.
        models = [
            first.unet,
            base.vae,
            *([refiner.unet] if refiner is not None else []),
            *([controls] if controls is not None else []),
        ]
        with (
            seamless(models) if job.tiling else contextlib.nullcontext(),
            image_prompts.attach(base.unet.encoder_hid_proj) if image_prompts else contextlib.nullcontext(),
        ):
            stop_after = plan.base_stop_after if plan else None
            if plan is not None:
                if "denoising_end" in inspect.signature(first.__call__).parameters:
                    inputs["denoising_end"] = plan.fraction
                else:
                    # diffusers' SDXL ControlNet image-to-image pipeline has no denoising_end: the base
                    # stops itself after its share of UNet calls, the same latents the cut would give.
                    stop_after = plan.base_calls
            base_stage = _Stage(
                name="base",
                calls=plan.base_calls if plan else len(timesteps),
                total=plan.base_steps if plan else job.run_steps,
                order=order,
                on_progress=on_progress,
                should_cancel=should_cancel,
                preview=self._preview,
                stop_after=stop_after,
            )
            with torch.inference_mode():
                output = first(
                    **common,
                    **_texts(base, jobs, prompts),
                    **inputs,
                    output_type="latent" if plan else "pil",
                    callback_on_step_end=base_stage,
                )
            if base_stage.cancelled:
                raise RunCancelled
            if job.controlnets:
                meta.update(_control_meta(job, controls, image_prompts, plan.base_steps if plan else job.run_steps))

            # 10. Run the refiner on the base's latents for the remaining steps.
            if refiner is not None and plan is not None:
                if should_cancel():
                    raise RunCancelled
                refiner_stage = _Stage(
                    name="refiner",
                    calls=plan.refiner_calls,
                    total=plan.refiner_steps,
                    order=order,
                    on_progress=on_progress,
                    should_cancel=should_cancel,
                    preview=self._preview,
                )
                with torch.inference_mode():
                    output = refiner(
                        **common,
                        **_texts(refiner, jobs, prompts),
                        image=output.images,
                        denoising_start=plan.fraction,
                        output_type="pil",
                        callback_on_step_end=refiner_stage,
                    )
                if refiner_stage.cancelled:
                    raise RunCancelled

        # 11. Where the job inpaints (a mask, an outpaint's border), the pixels it keeps are the input's
        # own, not their round trip through the VAE (A1111's overlay), and encode each image; the
        # service adds the parameters text later.
        finished = list(output.images)
        if "mask_image" in inputs:
            pairs = zip(inputs["image"], inputs["mask_image"], finished, strict=True)
            finished = [_overlaid(first.image_processor, image, mask, new) for image, mask, new in pairs]
        meta.update(
            base_steps=plan.base_steps if plan else job.run_steps,
            refiner_steps=plan.refiner_steps if plan else 0,
            scheduler=job.scheduler,
            seconds=round(time.perf_counter() - started, 3),
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
        )
        if len(jobs) > 1:
            meta["batch"] = len(seeds)

        # 12. Check each decoded image; the verdict travels with it and the server's policy decides.
        verdicts = self._verdicts(job, finished)
        images = iter(zip(finished, verdicts, strict=True))
        return [
            [
                GeneratedImage(
                    index=index,
                    seed=seed,
                    data=_encode(image, one.output_format),
                    width=image.width,
                    height=image.height,
                    meta=dict(meta),
                    nsfw=nsfw,
                )
                for index, (seed, (image, nsfw)) in enumerate(zip(one.seeds, images, strict=False))
            ]
            for one in jobs
        ]

    def _verdicts(self, job: WorkerJob, images: list[Image.Image]) -> list[bool | None]:
        """Return the safety check's verdict on each image (True: flagged)."""
        try:
            return list(self._safety(job.model.local, images))
        except Exception as error:
            reason = "the safety checker could not be loaded (are its files downloaded? see IMAGEBOT_SAFETY_CHECKER)"
            raise JobFailed("failed", reason) from error

    def _upscaled(self, job: WorkerJob, on_progress: ProgressFn, should_cancel: CancelFn) -> list[GeneratedImage]:
        """Enlarge a job's init image to its size with its catalog upscaler: no model redraws it.

        Progress counts the network's tiles (of each pass); cancel is checked after each tile.
        """
        assert job.upscaler is not None and job.init_image is not None
        started = time.perf_counter()
        net, found = self._upscaler(job.upscaler)
        with Image.open(job.init_image) as opened:
            image = opened.convert("RGB")

        def tile_done(done: int, total: int) -> None:
            on_progress("base", done, total, None)
            if should_cancel():
                raise RunCancelled

        if should_cancel():
            raise RunCancelled
        output = esrgan.upscale(
            net, found, image, (job.width, job.height), device=self.device, dtype=self.dtype, on_tile=tile_done
        )
        (nsfw,) = self._verdicts(job, [output])
        meta: dict[str, Any] = {
            "base_steps": 0,
            "refiner_steps": 0,
            "upscaler": job.upscaler.name,
            "upscaler_network": found.title,
            "seconds": round(time.perf_counter() - started, 3),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        data = _encode(output, job.output_format)
        return [
            GeneratedImage(index, seed, data, output.width, output.height, dict(meta), nsfw)
            for index, seed in enumerate(job.seeds)
        ]

    def _first_stage(
        self, base: StableDiffusionXLPipeline, jobs: list[WorkerJob], order: int
    ) -> tuple[Any, dict[str, Any], GatedControlNets | None]:
        """Return the pipeline that starts the jobs, their image arguments, and their ControlNets if any.

        Text, image or inpainting, each plain or with ControlNets. The image and ControlNet
        pipelines are built from `base` (`from_pipe`: the loaded base, or the inpainter, whose
        UNet reads the mask too), sharing its weights; the ControlNets are the loaded ones, behind a
        `GatedControlNets` that runs each on its steps.
        diffusers runs ``int(steps × strength)`` steps of an image; the strength passed is the one
        that makes that count `run_steps` exactly (halves up, as every backend counts).

        The image (and mask) is given once per seed, so diffusers VAE-encodes each with that
        seed's own generator: each image then depends on its seed alone, the same in a batch of
        jobs from different images (the batch key holds the mode, not the files) as alone, and
        the second image of an inpainting is the one its seed makes by itself (given once, the
        inpainting pipeline would encode it with the first seed's generator only).
        """
        job = jobs[0]
        inputs: dict[str, Any]
        if job.init_image is None:
            inputs = {"width": job.width, "height": job.height}
            plain, controlled, guide_key = None, StableDiffusionXLControlNetPipeline, "image"
        else:
            pairs = [pair for one in jobs for pair in [_image_inputs(one)] * len(one.seeds)]
            inputs = {
                "strength": min(1.0, (job.run_steps + 0.5) / job.steps),
                "image": [image for image, _ in pairs],
            }
            masks = [mask for _, mask in pairs if mask is not None]
            guide_key = "control_image"
            if not masks:  # the batch key makes the masks all given or all absent
                plain, controlled = StableDiffusionXLImg2ImgPipeline, StableDiffusionXLControlNetImg2ImgPipeline
            else:
                inputs |= {"mask_image": masks, "width": job.width, "height": job.height}
                plain, controlled = StableDiffusionXLInpaintPipeline, StableDiffusionXLControlNetInpaintPipeline
        nets = [control for control in job.controlnets if not control.ip_adapter]
        if not nets:
            return (base if plain is None else _derived(plain, base)), inputs, None
        # The batch key makes every job of the batch share the ControlNets and their guides.
        controls = GatedControlNets(
            [self._controlnet(control.asset) for control in nets],
            [StepGate(control.start_step, control.end_step, control.mode) for control in nets],
            order=order,
            cfg=job.cfg_scale > 1 and base.unet.config.time_cond_proj_dim is None,
        )
        inputs[guide_key] = [_guide(control, job.width, job.height) for control in nets]
        inputs["controlnet_conditioning_scale"] = [control.weight for control in nets]
        return _derived(controlled, base, controlnet=controls), inputs, controls

    def preload(self, job: WorkerJob) -> None:
        """Load what `job` needs (base, refiner, VAE, LoRAs, embeddings) without making an image.

        Raises:
            JobFailed: something could not be loaded.
        """
        if job.upscaler is not None:
            self._upscaler(job.upscaler)
            return
        self._base_pipeline(job.model)
        if job.refiner is not None:
            self._refiner_pipeline(job.refiner)
        if job.inpainter is not None:
            self._inpainter_pipeline(job.inpainter)
        if job.vae is not None:
            self._vae(job.vae)
        for lora in job.loras:
            self._lora(lora)
        for embedding in job.embeddings:
            self._embedding(embedding)
        for control in job.controlnets:
            if control.ip_adapter:
                self._ip_adapter(control.asset)
                self._image_encoder(control.asset)
            else:
                self._controlnet(control.asset)

    def flags(self, model_local: str, images: list[bytes]) -> list[bool]:
        """Run the safety check of `model_local` on images a user gave (checked PNGs); True where it flags one."""
        opened = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
        return [bool(verdict) for verdict in self._safety(model_local, opened)]

    def stats(self) -> dict[str, int]:
        """Return how many times each kind of thing was loaded."""
        return {kind: self.loads[kind] for kind in _LOADED}

    # Loading

    def _source(self, asset: Asset) -> tuple[str, str | None]:
        """Return what from_pretrained and the loaders take: a folder, file or repo id, and a file name."""
        if asset.local.startswith("tiny:"):
            folder, weight_name = tiny.resolve(asset.local, self.data_dir)
            return str(folder), weight_name or asset.weight_name
        return asset.local, asset.weight_name

    def _folder(self, local: str) -> str:
        """Return what from_pretrained takes for a ``tiny:`` id, folder or repo id (the safety checker, TAESD)."""
        return self._source(Asset(name=local, local=local))[0]

    def _weight_file(self, asset: Asset) -> Path:
        """Return the file of a one-file asset (an embedding, an upscaler): in its folder, else from its hub repo."""
        source, weight_name = self._source(asset)
        path = Path(source) / weight_name if weight_name and Path(source).is_dir() else Path(source)
        if not path.is_file() and weight_name:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, weight_name, **self._hub_kwargs()))
        return path

    def _hub_kwargs(self) -> dict[str, Any]:
        # Weights not in the cache are downloaded on first use (within IMAGEBOT_LOAD_TIMEOUT) unless
        # HF_HUB_OFFLINE is set, as in the tests, where only the cache and local folders are read.
        return {"token": self.hf_token}

    def _prepare(self, pipe: Any) -> None:
        # SDPA attention is diffusers' default with torch 2; the other levers are settings.
        apply(pipe, self.levers, self.device)

    def _load(self, cls: Any, source: str) -> Any:
        """Load `cls` from a single-file ``.safetensors`` checkpoint, or a folder or hub repo, in our dtype."""
        load = cls.from_single_file if source.endswith(".safetensors") else cls.from_pretrained
        return load(source, **{_DTYPE_KW: self.dtype}, **self._hub_kwargs())

    def _base_pipeline(self, asset: Asset) -> StableDiffusionXLPipeline:
        if self.base is not None and self._base_id == asset.local:
            return self.base
        self._drop_base()
        source, _ = self._source(asset)
        try:
            pipe = self._load(StableDiffusionXLPipeline, source)
        except Exception as error:
            raise _load_failed("model", asset.name) from error
        self._prepare(pipe)
        self.loads["pipeline"] += 1
        self.base, self._base_id = pipe, asset.local
        self._own_vae = pipe.vae
        self._scheduler_config = pipe.scheduler.config
        return pipe

    def _drop_base(self) -> None:
        """Forget the base and everything loaded into it (LoRAs, embeddings, the refiner and inpainter sharing it)."""
        if self.base is None:
            return
        self.base = self.refiner = self.inpainter = None
        self._base_id = self._refiner_id = self._inpainter_id = None
        self._own_vae = None
        self._loras.clear()
        self._embeddings.clear()
        self._ip_loaded, self._attention = (), {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _refiner_pipeline(self, asset: Asset) -> StableDiffusionXLImg2ImgPipeline:
        if self.refiner is not None and self._refiner_id == asset.local:
            return self.refiner
        self.refiner = None
        pipe = self._sharing(
            StableDiffusionXLImg2ImgPipeline, asset, "refiner", ("text_encoder_2", "tokenizer_2", "vae")
        )
        self._prepare(pipe)
        self.loads["refiner"] += 1
        self.refiner, self._refiner_id = pipe, asset.local
        return pipe

    def _inpainter_pipeline(self, asset: Asset) -> StableDiffusionXLInpaintPipeline:
        """Load the inpainter as a pipeline whose UNet alone is its own: the rest is the base's, shared."""
        if self.inpainter is not None and self._inpainter_id == asset.local:
            return self.inpainter
        self.inpainter = None
        names = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae")
        pipe = self._sharing(StableDiffusionXLInpaintPipeline, asset, "inpainter", names)
        if pipe.unet.config.in_channels != 9:
            raise JobFailed("failed", f"inpainter {asset.name!r} is not an inpainting UNet (9 input channels)")
        self._prepare(pipe)
        self.loads["inpainter"] += 1
        self.inpainter, self._inpainter_id = pipe, asset.local
        return pipe

    def _sharing(self, cls: Any, asset: Asset, kind: str, names: tuple[str, ...]) -> Any:
        """Load a pipeline of `cls` from `asset` with the base's modules of those `names` in it, shared, not read."""
        assert self.base is not None
        source, _ = self._source(asset)
        shared = {name: getattr(self.base, name) for name in names}
        try:
            return cls.from_pretrained(source, **shared, **{_DTYPE_KW: self.dtype}, **self._hub_kwargs())
        except Exception as error:
            raise _load_failed(kind, asset.name) from error

    def _use_vae(self, asset: Asset | None) -> None:
        assert self.base is not None and self._own_vae is not None
        vae = self._own_vae if asset is None else self._vae(asset)
        for pipe in (self.base, self.refiner, self.inpainter):
            if pipe is not None and pipe.vae is not vae:
                pipe.vae = vae

    def _vae(self, asset: Asset) -> AutoencoderKL:
        if asset.local in self._vaes:
            return self._vaes[asset.local]
        source, _ = self._source(asset)
        # A whole pipeline folder keeps its VAE in vae/.
        subfolder = "vae" if (Path(source) / "vae" / "config.json").is_file() else None
        try:
            vae = AutoencoderKL.from_pretrained(
                source, subfolder=subfolder, **{_DTYPE_KW: self.dtype}, **self._hub_kwargs()
            )
        except Exception as error:
            raise _load_failed("VAE", asset.name) from error
        vae.to(self.device)
        self.loads["vae"] += 1
        self._vaes[asset.local] = vae
        return vae

    def _controlnet(self, asset: Asset) -> ControlNetModel:
        """Load a ControlNet once, kept by its local id; jobs switch between loaded ones without reloading."""
        if asset.local in self._controlnets:
            return self._controlnets[asset.local]
        source, _ = self._source(asset)
        try:
            net = self._load(ControlNetModel, source)
        except Exception as error:
            raise _load_failed("ControlNet", asset.name) from error
        net.to(self.device).eval()
        if self.device.type == "cuda" and self.levers.channels_last:
            net.to(memory_format=torch.channels_last)  # as the UNet: faster convolutions on tensor cores
        self.loads["controlnet"] += 1
        self._controlnets[asset.local] = net
        return net

    def _use_ip_adapters(self, adapters: tuple[Control, ...], model: str) -> None:
        """Have exactly `adapters` loaded into the base (none: the base as it was), at their weights.

        Loading puts IP-Adapter attention processors in the base UNet's cross-attentions (every
        pipeline derived from the base shares them) and the image encoder on the base; unloading
        puts back the processors that were there. Kept loaded while the next job names the same ones.
        """
        assert self.base is not None
        wanted = tuple(_file_key(control.asset) for control in adapters)
        if wanted != self._ip_loaded and self._ip_loaded:
            self._unload_ip_adapters()
        if not adapters:
            return
        if wanted != self._ip_loaded:
            if self.levers.fuse_qkv:
                set_fused(self.base, False)  # the IP-Adapter's processors compute their own projections
            encoder, processor = self._image_encoder(adapters[0].asset)
            weights = [self._ip_adapter(control.asset) for control in adapters]
            self._attention = dict(self.base.unet.attn_processors)
            self.base.register_modules(image_encoder=encoder, feature_extractor=processor)
            try:
                self.base.load_ip_adapter(
                    weights,
                    subfolder=[None] * len(weights),
                    weight_name=[None] * len(weights),
                    image_encoder_folder=None,
                )
            except Exception as error:
                # Weights that do not fit this base (another architecture's): leave the base as it was.
                self._unload_ip_adapters()
                names = " and ".join(f"'{control.asset.name}'" for control in adapters)
                raise JobFailed("failed", f"the IP-Adapter {names} does not fit the model '{model}'") from error
            self._ip_loaded = wanted
        self.base.set_ip_adapter_scale([self._ip_scale(control) for control in adapters])

    def _ip_scale(self, control: Control) -> float | dict[str, dict[str, list[float]]]:
        """Return an IP-Adapter's scale: its weight on every cross-attention, or on the style layers alone.

        InstantStyle (Wang et al. 2024; diffusers' IP-Adapter guide) found the style in the second
        attention of the UNet's first up block: there alone, the image gives its look and not its
        subject. diffusers takes one scale per attention of the block, and the block has as many
        as the UNet's layers per block plus one (SDXL: three, the tiny model: two).
        """
        if not control.style:
            return control.weight
        assert self.base is not None
        count = len(getattr(self.base.unet.up_blocks[0], "attentions", ()))
        if count < 2:
            raise JobFailed("failed", f"the model has no style layer for the style reference '{control.asset.name}'")
        return {"up": {"block_0": [control.weight if index == 1 else 0.0 for index in range(count)]}}

    def _unload_ip_adapters(self) -> None:
        """Take the loaded IP-Adapters and image encoder out of the base, its attention processors put back."""
        assert self.base is not None
        self.base.unload_ip_adapter()
        self.base.unet.set_attn_processor(self._attention)
        self._ip_loaded, self._attention = (), {}

    def _ip_adapter(self, asset: Asset) -> dict[str, dict[str, torch.Tensor]]:
        """Read an IP-Adapter's weights once (``image_proj``, ``ip_adapter``), kept in memory by their file."""
        key = _file_key(asset)
        if key not in self._ip_weights:
            try:
                flat = load_file(self._weight_file(asset))
            except Exception as error:
                raise _load_failed("IP-Adapter", asset.name) from error
            weights: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
            for flat_name, tensor in flat.items():
                part, _, name = flat_name.partition(".")
                if part in weights:
                    weights[part][name] = tensor
            self._ip_weights[key] = weights
            self.loads["ip-adapter"] += 1
        return self._ip_weights[key]

    def _image_encoder(self, asset: Asset) -> tuple[Any, Any]:
        """Return an IP-Adapter's CLIP image encoder (loaded once) and its image processor.

        The encoder's folder is `image_encoder` inside the adapter's folder or hub repo. Its processor
        is the one saved there, else CLIP's at the encoder's input size (what diffusers makes).
        """
        assert asset.image_encoder is not None
        source, _ = self._source(asset)
        key = (source, asset.image_encoder)
        if key not in self._encoders:
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

            try:
                encoder = CLIPVisionModelWithProjection.from_pretrained(
                    source, subfolder=asset.image_encoder, **self._hub_kwargs()
                )
            except Exception as error:
                raise _load_failed("IP-Adapter", asset.name) from error
            try:
                processor = CLIPImageProcessor.from_pretrained(source, subfolder=asset.image_encoder)
            except OSError:
                size = encoder.config.image_size
                processor = CLIPImageProcessor(size=size, crop_size=size)
            self._encoders[key] = (encoder.to(self.device, self.dtype).eval(), processor)
        return self._encoders[key]

    def _upscaler(self, asset: Asset) -> tuple[torch.nn.Module, esrgan.Architecture]:
        """Return a catalog upscaler's network (loaded once) and what it is.

        Its ``local`` is a weight file (``.safetensors``, or ``.pth`` read with ``weights_only``), a
        ``tiny:`` part, or a Hugging Face repo with the file in ``weight_name``.

        Raises:
            JobFailed: the file cannot be read, or is not a network `esrgan.detect` knows (one sentence).
        """
        key = _file_key(asset)
        if key not in self._upscalers:
            try:
                net, found = esrgan.load_upscaler(self._weight_file(asset))
            except esrgan.UnknownUpscaler as error:
                raise JobFailed("failed", f"the upscaler '{asset.name}' {error}") from None
            except Exception as error:
                raise _load_failed("upscaler", asset.name) from error
            self._upscalers[key] = (net.to(self.device, self.dtype), found)
            self.loads["upscaler"] += 1
        return self._upscalers[key]

    def _use_loras(self, loras: tuple[Asset, ...]) -> None:
        assert self.base is not None
        if self.levers.fuse_qkv:
            # A fused projection would compute attention without the LoRA's layers, or the IP-Adapter's.
            set_fused(self.base, not loras and not self._ip_loaded)
        weights: dict[str, float] = {}
        for lora in loras:
            adapter = self._lora(lora)
            weights[adapter] = weights.get(adapter, 0.0) + lora.weight
        if weights:
            self.base.enable_lora()
            self.base.set_adapters(list(weights), adapter_weights=list(weights.values()))
        elif self._loras:
            self.base.disable_lora()

    def _lora(self, asset: Asset) -> str:
        """Load a LoRA once as a peft adapter named after its catalog entry; return the adapter name."""
        assert self.base is not None
        if asset.local in self._loras:
            return self._loras[asset.local]
        # peft keeps adapters in ModuleDicts, whose keys may not contain dots.
        adapter = asset.name.replace(".", "_")
        source, weight_name = self._source(asset)
        try:
            self.base.load_lora_weights(source, weight_name=weight_name, adapter_name=adapter, **self._hub_kwargs())
        except Exception as error:
            raise _load_failed("LoRA", asset.name) from error
        self.loads["lora"] += 1
        self._loras[asset.local] = adapter
        return adapter

    def _use_embeddings(self, job: WorkerJob, meta: dict[str, Any]) -> str:
        """Load the job's embeddings, scale their vectors by weight, and return the prompt to use."""
        weights = {emb.local: emb.weight for emb in job.embeddings}
        for emb in job.embeddings:
            self._embedding(emb)
        with torch.no_grad():
            for local, loaded in self._embeddings.items():
                # Unrequested embeddings go back to their own vectors.
                weight = weights.get(local, 1.0)
                for encoder, ids, vectors in loaded:
                    # Looked up each time: loading another embedding resizes, replacing the table.
                    table = encoder.get_input_embeddings().weight
                    table[ids] = (vectors * weight).to(table.device, table.dtype)
        prompt = job.prompt
        added = []
        for emb in job.embeddings:
            assert emb.token is not None
            if emb.token not in prompt and emb.token not in (job.negative_prompt or ""):
                prompt = f"{prompt}, {emb.token}"
                added.append(emb.token)
        if added:
            meta["added_tokens"] = added
        return prompt

    def _embedding(self, asset: Asset) -> None:
        """Load an SDXL textual inversion (``clip_l`` and ``clip_g`` vectors) into both text encoders once."""
        assert self.base is not None and asset.token is not None
        if asset.local in self._embeddings:
            return
        try:
            vectors: dict[str, torch.Tensor] = load_file(self._weight_file(asset))
        except Exception as error:
            raise _load_failed("embedding", asset.name) from error
        if set(vectors) != {"clip_l", "clip_g"}:
            raise JobFailed("invalid", f"'{asset.name}' is not an SDXL embedding", option="embedding")
        loaded: _Embedding = []
        pairs = (
            (vectors["clip_l"], self.base.text_encoder, self.base.tokenizer),
            (vectors["clip_g"], self.base.text_encoder_2, self.base.tokenizer_2),
        )
        for tensor, encoder, tokenizer in pairs:
            tensor = tensor.reshape(-1, tensor.shape[-1])
            self.base.load_textual_inversion(tensor, token=asset.token, text_encoder=encoder, tokenizer=tokenizer)
            # diffusers names the vectors of a multi-vector embedding token, token_1, token_2…
            names = [asset.token] + [f"{asset.token}_{i}" for i in range(1, tensor.shape[0])]
            ids = tokenizer.convert_tokens_to_ids(names)
            loaded.append((encoder, ids, tensor.to(torch.float32)))
        self.loads["embedding"] += 1
        self._embeddings[asset.local] = loaded

    # Sampling

    @staticmethod
    def _scheduler(name: str) -> tuple[Any, dict[str, Any]]:
        try:
            class_name, overrides = SCHEDULERS[name]
        except KeyError:
            raise JobFailed("invalid", f"'{name}' is not a known sampler", option="scheduler") from None
        return getattr(diffusers, class_name), overrides

    def _timesteps(self, scheduler_cls: Any, overrides: dict[str, Any], steps: int) -> tuple[list[float], int]:
        """Return the timesteps the pipelines will use, from a fresh scheduler of the same config."""
        scheduler = scheduler_cls.from_config(self._scheduler_config, **overrides)
        scheduler.set_timesteps(steps, device="cpu")
        return [float(t) for t in scheduler.timesteps], int(scheduler.order)

    def _plan(self, job: WorkerJob, timesteps: list[float], order: int, meta: dict[str, Any]) -> SplitPlan | None:
        """Plan the base/refiner split; say so in `meta` when it cannot be the one asked for."""
        try:
            plan = plan_split(timesteps, job.base_steps, order, int(self._scheduler_config.num_train_timesteps))
        except ValueError:
            meta["refiner_note"] = f"{job.steps} step(s) cannot be split; the refiner did not run"
            return None
        if not plan.exact:
            meta["requested_split"] = list(plan.requested)
            meta["split_note"] = (
                f"{job.scheduler} at {job.steps} steps cannot hand over after step {job.base_steps}; "
                f"used {plan.base_steps} + {plan.refiner_steps}"
            )
        return plan


def variation_noise(
    pipe: Any, job: WorkerJob, generators: list[torch.Generator], variations: list[int], strength: float
) -> torch.Tensor:
    """Return the starting noise of each image: its generator's, moved `strength` toward its variation seed's.

    Drawn as diffusers' text-to-image pipelines draw theirs (`randn_tensor`, one CPU generator an
    image, the text encoders' dtype), so a strength of 0 would give the pipeline's own noise and
    1 the variation seed's: the image ``--seed`` that seed makes.
    """
    shape = (
        len(generators),
        pipe.unet.config.in_channels,
        job.height // pipe.vae_scale_factor,
        job.width // pipe.vae_scale_factor,
    )
    dtype = pipe.text_encoder_2.dtype
    noise = randn_tensor(shape, generator=generators, device=torch.device("cpu"), dtype=dtype)
    other = [torch.Generator("cpu").manual_seed(seed) for seed in variations]
    toward = randn_tensor(shape, generator=other, device=torch.device("cpu"), dtype=dtype)
    return slerp(strength, noise, toward)


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Return each image's noise `t` of the way from `low` to `high` along the sphere (A1111's blend).

    A spherical blend keeps the noise's scale, where a straight one would shrink it midway
    (two independent noises at t = 0.5 would have 0.71 of it). Computed in float32.
    """
    a, b = low.flatten(1).float(), high.flatten(1).float()
    cosine = (a / a.norm(dim=1, keepdim=True) * (b / b.norm(dim=1, keepdim=True))).sum(1).clamp(-1.0, 1.0)
    omega = torch.acos(cosine)
    sine = torch.sin(omega)
    straight = sine.abs() < 1e-6  # the same noise twice: no arc to follow
    safe = torch.where(straight, torch.ones_like(sine), sine)
    from_low = torch.where(straight, torch.full_like(sine, 1.0 - t), torch.sin((1.0 - t) * omega) / safe)
    from_high = torch.where(straight, torch.full_like(sine, t), torch.sin(t * omega) / safe)
    return (from_low[:, None] * a + from_high[:, None] * b).reshape(low.shape).to(low.dtype)


@contextlib.contextmanager
def seamless(models: Iterable[torch.nn.Module]) -> Iterator[None]:
    """Pad every convolution of `models` around the image while inside (A1111's Tiling).

    A convolution at the left edge then reads the right edge's pixels where it read zeros, and so
    on for every side and every layer, UNet and VAE alike: the image continues across its edges
    and repeats as a texture. The modes are put back after, whatever happens.
    """
    convolutions = [layer for model in models for layer in model.modules() if isinstance(layer, torch.nn.Conv2d)]
    modes = [layer.padding_mode for layer in convolutions]
    for layer in convolutions:
        layer.padding_mode = "circular"
    try:
        yield
    finally:
        for layer, mode in zip(convolutions, modes, strict=True):
            layer.padding_mode = mode


def _texts(pipe: Any, jobs: list[WorkerJob], prompts: list[str]) -> dict[str, Any]:
    """Return a pipeline's prompt arguments for the jobs' images: as text, or encoded with their weights.

    A batch of several jobs gives one prompt per image; its batch key makes the negative prompts
    all given or all absent, and the weighting all on or all off.
    """
    if not jobs[0].prompt_weighting:
        # As written: diffusers tokenizes the text (stored generations from before weighting).
        if len(jobs) == 1:
            return {"prompt": prompts[0], "negative_prompt": jobs[0].negative_prompt}
        texts: dict[str, Any] = {
            "prompt": [prompt for one, prompt in zip(jobs, prompts, strict=True) for _ in one.seeds]
        }
        if jobs[0].negative_prompt is not None:
            texts["negative_prompt"] = [one.negative_prompt for one in jobs for _ in one.seeds]
        return texts
    encoded = [
        encode(pipe, prompt, one.negative_prompt, one.clip_skip) for one, prompt in zip(jobs, prompts, strict=True)
    ]
    if len(jobs) == 1:
        return encoded[0].kwargs()
    # One row per image, each its job's: the pipeline repeats nothing (one image per prompt).
    per_image = [conditioning.kwargs() for conditioning, one in zip(encoded, jobs, strict=True) for _ in one.seeds]
    return {key: torch.cat([row[key] for row in per_image]) for key in per_image[0]}


def _image_inputs(job: WorkerJob) -> tuple[Image.Image, Image.Image | None]:
    """Return a job's input image at its output size, and its inpainting mask (None for image-to-image)."""
    assert job.init_image is not None
    size = (job.width, job.height)
    with Image.open(job.init_image) as opened:
        image = opened.convert("RGB")
    if job.outpaint is not None:
        return _outpaint_canvas(image, size, job.outpaint, job.outpaint_blur)
    image = image.resize(size, Image.Resampling.LANCZOS)
    if job.mask_image is None:
        return image, None
    with Image.open(job.mask_image) as opened:
        return image, opened.convert("L").resize(size, Image.Resampling.LANCZOS)


def _outpaint_canvas(
    image: Image.Image, size: tuple[int, int], sides: tuple[int, int, int, int], blur: int
) -> tuple[Image.Image, Image.Image]:
    """Return the extended canvas and its inpainting mask (white: the new border) for an outpaint.

    The image goes in the middle at its size in the request; the border starts as its edge pixels
    stretched outwards, so at a strength below 1 the new parts start from the image's colours, not
    from black. `blur` softens the mask's edge by that many pixels, into the image, so the seam blends.
    """
    top, right, bottom, left = sides
    width, height = size
    inner = image.resize((width - left - right, height - top - bottom), Image.Resampling.LANCZOS)
    pixels = np.pad(np.asarray(inner), ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = Image.new("L", size, 255)
    keep = (left + blur, top + blur, width - right - blur, height - bottom - blur)
    if keep[0] < keep[2] and keep[1] < keep[3]:
        mask.paste(0, keep)
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur / 2))
        # Never touch the border's own pixels less than fully: they have nothing to keep.
        mask.paste(255, (0, 0, width, top))
        mask.paste(255, (0, height - bottom, width, height))
        mask.paste(255, (0, 0, left, height))
        mask.paste(255, (width - right, 0, width, height))
    return Image.fromarray(pixels), mask


def _overlaid(processor: Any, image: Image.Image, mask: Image.Image, made: Image.Image) -> Image.Image:
    """Return an inpainted image with the input's pixels wherever the mask keeps them (black).

    diffusers' `apply_overlay` blends by the mask; the mask is first softened inward by
    `OVERLAY_BLUR` pixels (the darker of it and its blur), so the new part fades into the kept
    one instead of meeting it at a seam, and a kept pixel is the input's exactly.
    """
    soft = ImageChops.darker(mask, mask.filter(ImageFilter.GaussianBlur(OVERLAY_BLUR)))
    return processor.apply_overlay(soft, image, made)  # type: ignore[no-any-return]


def _guide(control: Control, width: int, height: int) -> Image.Image:
    """Return a ControlNet's guide (stored, already preprocessed) at the job's size."""
    with Image.open(control.guide) as opened:
        return opened.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


def _image_prompts(job: WorkerJob, inputs: dict[str, Any], order: int) -> GatedImagePrompts | None:
    """Give the pipeline the job's IP-Adapter images (as stored: the encoder sizes them) and return their gate."""
    adapters = job.ip_adapters
    if not adapters:
        return None
    images = []
    for control in adapters:
        with Image.open(control.guide) as opened:
            images.append(opened.convert("RGB"))
    inputs["ip_adapter_image"] = images
    gates = [StepGate(control.start_step, control.end_step, "balanced") for control in adapters]
    return GatedImagePrompts(gates, [control.weight for control in adapters], order)


def _control_meta(
    job: WorkerJob, controls: GatedControlNets | None, prompts: GatedImagePrompts | None, base_steps: int
) -> dict[str, Any]:
    """Say on which steps each ControlNet or IP-Adapter acted, and why not on all it asked when the base ended first.

    With a refiner the ControlNets act in the base only (the refiner has its own UNet, which a
    ControlNet made for the base does not fit), so a range reaching past the base's last step
    ends with the base: steps 1–30 with the refiner taking the last 6 act on steps 1–24.
    """
    meta: dict[str, Any] = {}
    acted: list[list[int] | None] = []
    notes = []
    # Each gate counts its own; mapped back to the job's order, where the two kinds interleave.
    nets = [index for index, control in enumerate(job.controlnets) if not control.ip_adapter]
    adapters = [index for index, control in enumerate(job.controlnets) if control.ip_adapter]
    applied = [(step, nets[i]) for step, i in (controls.applied if controls else [])]
    applied += [(step, adapters[i]) for step, i in (prompts.applied if prompts else [])]
    for index, control in enumerate(job.controlnets):
        steps = sorted({step for step, net in applied if net == index})
        acted.append([steps[0], steps[-1]] if steps else None)
        if control.end_step > base_steps and control.weight > 0:
            where = f"on steps {control.start_step}–{base_steps}" if control.start_step <= base_steps else "on no step"
            kind = "IP-Adapter" if control.ip_adapter else "ControlNet"
            notes.append(
                f"{kind} '{control.asset.name}' ends with the base at step {base_steps} "
                f"(asked: steps {control.start_step}–{control.end_step}); it acted {where}"
            )
    meta["controlnet_steps"] = acted
    if notes:
        meta["controlnet_note"] = "; ".join(notes)
    return meta


def _derived(cls: Any, base: StableDiffusionXLPipeline, **components: Any) -> Any:
    """Return a pipeline of `cls` on the base's modules as they are now (scheduler, VAE, LoRAs): no weights copied.

    `components` adds what the base lacks (the ControlNets), also shared, not copied. The dtype is
    the base's own: from_pipe casts every module to the dtype it is given, float32 when none, and
    the modules are the base's, so a bfloat16 base would be cast to float32 in place.
    """
    pipe = cls.from_pipe(base, **components, **{_DTYPE_KW: base.dtype})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _file_key(asset: Asset) -> str:
    """Return what tells a one-file asset's weights apart: its place and file (one hub repo holds several)."""
    return f"{asset.local}|{asset.weight_name}"


def _load_failed(kind: str, name: str) -> JobFailed:
    return JobFailed("failed", f"the {kind} '{name}' could not be loaded (are its files downloaded?)")


def _encode(image: Any, output_format: str) -> bytes:
    """Encode a PIL image without metadata: the service writes the parameters chunk itself."""
    pil_format, options = _PIL_FORMATS[output_format]
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=pil_format, **options)
    return buffer.getvalue()

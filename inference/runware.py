"""The Runware backend: one ``imageInference`` task per request over Runware's REST API.

Runware's docs: https://runware.ai/docs/image-inference/api-reference (the
task), /docs/platform/task-polling (``getResponse``), /docs/platform/errors.

Money is the design constraint. A task is identified by the taskUUID we
generate, and every retry of a request resends the same UUID: if the first try
was accepted (its answer was lost to a timeout or a cut connection), Runware
answers ``conflictTaskUUID`` instead of running and charging it again, and
the images are collected with ``getResponse``. Only transient failures are
retried (408, 429, 5xx, connection errors, an unreadable answer); 400, 401,
402 and 403 are final and become one sentence.

Input images (``--image``, ``--mask``, Vary) travel inside the task as data URIs in
``seedImage`` and ``maskImage`` (the SDK sends local files the same way), not through an
``imageUpload`` task first: nothing is stored at Runware to outlive the job, there is no
second request to retry or lose, and a retry resends the same task under the same taskUUID
(``conflictTaskUUID`` above). The price is that a retry resends the image's bytes (a few MB at
most). An outpaint (``--outpaint``, ``--zoom``) sends the image at the size it keeps in
``seedImage`` and the sides in the ``outpaint`` object; ``width`` and ``height`` are the whole,
as on the local worker.

ControlNet guides (``--cn NAME --guide …``) are different: a guide is reused (by every reroll,
refine and Vary of a generation, and by several ControlNets), so each distinct guide is sent once
with Runware's ``imageUpload`` task (/docs/utilities/image-upload) and each ``controlNet`` entry's
``guideImage`` names its ``imageUUID`` (the SDK's text_to_image.md lists "UUID, data URI, base64, or
URL" for it). The UUIDs are kept by the sha256 of the bytes sent, for the life of the client; the
docs say Runware deletes an upload 30 days after its last use, so one unused for longer than
`UPLOAD_KEPT` is uploaded again rather than trusted. An upload is not charged, and each try has a
fresh taskUUID (a lost answer leaves no UUID to collect, so the upload is simply made again).

Guide maps the bot does not make itself (depth, openpose, lineart, softedge, scribble) come from
Runware's ``imageControlNetPreProcess`` task (/docs/en/image-editing/controlnet-tools, the SDK's
controlnets.md): the source is uploaded, the task names it by UUID in ``inputImage`` with our
preprocessor in ``preProcessorType`` (`PREPROCESSOR_TYPES`) at the output size, and the map comes back
as base64. The service stores it like any input (`bot.ports.GuideBackend`), so it is shown with the
result and rerolls reuse it without preprocessing again. That task is charged (the SDK doc's example
answers ``cost``), but its docs say nothing of ``conflictTaskUUID`` or ``getResponse`` for it, so a
retry has a fresh taskUUID too: an answer lost after Runware ran it costs one more preprocessing.

Describe (``/describe``, `bot.ports.DescribingBackend`) is Runware's ``imageCaption`` task
(/docs/en/utilities/image-to-text; the SDK's ``IImageCaption`` request and ``IImageToText`` answer):
``inputImage`` and ``includeCost`` in, ``text`` and ``cost`` out. The image travels as a data URI, as
an input image does (the doc lists data URIs among ``inputImage``'s forms): the SDK uploads it first,
but a described image is read once, so nothing need be kept at Runware and there is no second request
to lose. The caption is passed on as Runware wrote it, text from outside that the core makes a prompt
of (`bot.describe.as_prompt`); an answer without one is one sentence. As for preprocessing, the docs
say nothing of ``conflictTaskUUID`` or ``getResponse`` for the task, so a retry has a fresh taskUUID:
an answer lost after Runware ran it costs one more caption.

Upscale (``upscale #3 2``) is Runware's ``imageUpscale`` task, with the stored input as a data URI
in ``inputImage`` for the same reasons, and ``upscaleFactor`` (its docs allow 2, 3 and 4). It
enlarges the image alone: unlike the local hires fix, no model redraws it, so the prompt and steps
of the request play no part (the service stores it with no strength), and the user is told so in a note.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bot.catalog import Catalog
from bot.config import RunwareSettings
from bot.describe import DESCRIBING, Description
from bot.errors import BackendUnavailable
from bot.guides import GuideMap
from bot.images import input_path
from bot.ports import ProgressCallback
from bot.request import STEPS, ControlNetSpec, GeneratedImage, GenerationRequest, Preprocess
from bot.weighting import is_plain
from inference._remote import (
    TRANSIENT_STATUS,
    HostedBackend,
    ImageLost,
    Retrying,
    decode_inline,
    download,
    number_or_none,
    object_or_none,
    retry_after,
    sleep_or_cancel,
)
from inference.capabilities import CAPABILITIES, RUNWARE_SCHEDULERS

__all__ = [
    "PREPROCESSOR_TYPES",
    "UPLOAD_KEPT",
    "RunwareBackend",
    "build_task",
    "controlnet_steps",
    "steps_and_strength",
]

TITLE = "Runware"
_CAPABILITIES = CAPABILITIES["runware"]
# Runware's parameter names, as users know them, for its error sentences.
_LABELS = {
    "positivePrompt": "prompt",
    "negativePrompt": "negative prompt",
    "CFGScale": "cfg",
    "numberResults": "count",
    "seedImage": "input image",
    "maskImage": "mask",
    "inputImage": "input image",
    "upscaleFactor": "upscale factor",
    "controlNet": "ControlNets",
    "image": "image upload",
    "preProcessorType": "guide preprocessing",
    "clipSkip": "clip skip",
    "lora": "LoRAs",
    "apiKey": "API key",
}
# Runware's preProcessorType for each preprocessor it runs for us. The ControlNet tools doc lists
# canny, depth, mlsd, normalbae, openpose, tile, seg, lineart, lineart_anime, shuffle, scribble and
# softedge; ours are among them under the same names. canny is not asked for: it runs in the bot
# with the operator's thresholds, so every backend gets the same edge map.
PREPROCESSOR_TYPES: dict[Preprocess, str] = {
    "depth": "depth",
    "openpose": "openpose",
    "lineart": "lineart",
    "softedge": "softedge",
    "scribble": "scribble",
}
# Runware deletes an upload "30 days after last use" (image-upload doc); a day's margin.
UPLOAD_KEPT = 29 * 24 * 3600.0
_FINAL_STATUS = {
    401: "it refused the server's API key (the bot's operator must check IMAGEBOT_RUNWARE_API_KEY)",
    402: "the Runware account has no credit left",
    403: "the API key may not use this model or feature",
}


def work(request: GenerationRequest) -> float:
    """Return a request's size in megapixel-steps: what decides between waiting and polling."""
    return request.width * request.height / 1024**2 * request.run_steps * request.count


def steps_and_strength(steps: int, run: int) -> tuple[int, float]:
    """Return the ``steps`` and ``strength`` that make Runware run exactly `run` steps of about `steps`.

    Runware runs the last ``steps × strength`` steps (its steps doc: 40 at 0.5 run the last
    20) and documents no rounding for other products; diffusers, for one, truncates. So the
    pair sent multiplies to exactly `run` in floating point, where truncating, rounding and
    rounding up all agree: ``run / steps``, or the float next to it. For about 5 % of pairs no
    such float exists (100 × fl(0.07) is 7.000000000000001), and the nearest step count that
    has one is sent instead, at most 2 away; the same `run` steps run, over a schedule a
    step or two finer or coarser.

    Raises:
        ValueError: no step count up to `STEPS.high` has such a strength (none for 1 ≤ run ≤ steps ≤ 100).
    """
    for total in sorted(range(run, STEPS.high + 1), key=lambda n: (abs(n - steps), n)):
        exact = run / total
        for strength in (exact, math.nextafter(exact, 1.0), math.nextafter(exact, 0.0)):
            if 0.0 < strength <= 1.0 and strength * total == run:
                return total, strength
    raise ValueError(f"no steps and strength run exactly {run} of {steps} steps")


def controlnet_steps(start: int, end: int, sent_steps: int, run: int) -> tuple[int, int]:
    """Return Runware's ``startStep``/``endStep`` for a ControlNet on steps `start`–`end` of the `run` that run.

    `start` and `end` are 1-based and inclusive among the steps that run (`ControlNetSpec`).
    Runware's are 1-based and inclusive too: the docs' example puts a ControlNet on "steps 1–10
    of a 30-step generation", and the SDK's README example sends ``startStep=1, endStep=30``
    (text_to_image.md: "Step to start applying ControlNet", "Step to stop applying"). They
    number the ``steps`` sent, the whole schedule: from an input image Runware runs its last
    ``steps × strength`` (the steps doc: 40 at 0.5 run the last 20, i.e. steps 21–40), so
    step 1 of those that run is Runware's step ``sent_steps - run + 1``. Without an input
    image `sent_steps` is `run` and nothing moves.
    """
    skipped = sent_steps - run
    return skipped + start, skipped + end


def _controlnet(
    control: ControlNetSpec, identifier: str, guide: str, sent_steps: int, run: int, base: int
) -> dict[str, Any] | None:
    """Return one entry of the ``controlNet`` array, or None when it would act on no step.

    With a refiner the ControlNet acts in the base only, as on the local worker (the refiner's
    UNet does not fit a ControlNet made for the base): its range ends with the base's last
    step, and a range that starts after it acts on nothing and is not sent.
    """
    end = min(control.end_step, base)
    if control.start_step > end:
        return None
    start_step, end_step = controlnet_steps(control.start_step, end, sent_steps, run)
    return {
        "model": identifier,  # its AIR id (text_to_image.md: "AIR identifier of the ControlNet model")
        "guideImage": guide,  # the imageUUID of its upload
        "weight": control.weight,  # 0–1 there; heavier ones were refused by the capabilities
        "startStep": start_step,
        "endStep": end_step,
        # The SDK's EControlMode: "balanced", "prompt", "controlnet", the names we use.
        "controlMode": control.mode,
    }


def _input_size(request: GenerationRequest) -> tuple[int, int]:
    """Return the size the input image is sent at: the output's, or for an outpaint the part it keeps."""
    sides = request.outpaint
    if sides is None:
        return request.width, request.height
    return request.width - sides.left - sides.right, request.height - sides.top - sides.bottom


def data_uri(png: bytes) -> str:
    """Return a stored input (always a PNG) as the data URI Runware takes in ``seedImage``/``maskImage``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def build_task(
    request: GenerationRequest,
    catalog: Catalog,
    task_uuid: str,
    *,
    output_type: str = "URL",
    delivery: str = "sync",
    check_content: bool = True,
    inputs: dict[str, bytes] | None = None,
    guides: dict[str, str] | None = None,
    image_prompts: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return the ``imageInference`` task of a request (checked against Runware's capabilities first).

    The refiner hand-off is sent as ``startStep``, the base step count itself, so the
    split is exactly the one shown to the user on every backend. With `check_content`,
    Runware's content check runs on each image (``safety.checkContent``) and answers
    ``NSFWContent``. `inputs` holds the PNG bytes of the request's ``init_image`` and
    ``mask_image`` by their sha256, sent as ``seedImage`` and ``maskImage`` with the
    ``steps``/``strength`` pair that runs exactly ``request.run_steps`` (`steps_and_strength`).
    `guides` holds the Runware imageUUID of each ControlNet's uploaded guide by the guide's sha256,
    named in the ``controlNet`` array on the same steps as on the local worker (`controlnet_steps`);
    `image_prompts` the imageUUID of each IP-Adapter's image (uploaded as it is stored), named in the
    ``ipAdapters`` array (each a model, a guideImage and a weight; it acts on every step).
    """
    _CAPABILITIES.check(request, catalog)

    def air(kind: Any, name: str) -> str:
        identifier = _CAPABILITIES.identifier(catalog.get(kind, name))
        assert identifier is not None  # check() refused names without one
        return identifier

    task: dict[str, Any] = {
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "positivePrompt": request.prompt,
        # The inpainter repaints in the model's place: its own weights, under its own id.
        "model": air("inpainter", request.inpainter) if request.inpainter else air("model", request.model),
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "CFGScale": request.cfg_scale,
        "scheduler": RUNWARE_SCHEDULERS[request.scheduler],
        "seed": request.seed,
        "numberResults": request.count,
        "outputType": output_type,
        "outputFormat": request.output_format.upper(),
        "includeCost": True,
        "deliveryMethod": delivery,
    }
    if check_content:
        task["safety"] = {"checkContent": True}
    if request.init_image is not None:
        given = inputs or {}
        task["seedImage"] = data_uri(given[request.init_image])
        task["steps"], task["strength"] = steps_and_strength(request.steps, request.run_steps)
        if request.mask_image is not None:
            task["maskImage"] = data_uri(given[request.mask_image])
        if request.outpaint is not None:
            # The seedImage is the inner image (`_inputs` sizes it); width and height are the whole.
            sides = request.outpaint
            task["outpaint"] = {"top": sides.top, "right": sides.right, "bottom": sides.bottom, "left": sides.left}
            if sides.blur:
                task["outpaint"]["blur"] = sides.blur
    if request.negative_prompt:
        task["negativePrompt"] = request.negative_prompt
    if request.clip_skip:
        task["clipSkip"] = request.clip_skip
    if request.prompt_weighting and not all(
        is_plain(text) for text in (request.prompt, request.negative_prompt) if text
    ):
        # A1111's syntax, `(words:1.3)`: Runware's sdEmbeds weighting reads it (compel's is another).
        task["promptWeighting"] = "sdEmbeds"
    if request.vae:
        task["vae"] = air("vae", request.vae)
    if request.refiner is not None:
        task["refiner"] = {"model": air("refiner", request.refiner.model), "startStep": request.split[0]}
    if request.loras:
        task["lora"] = [{"model": air("lora", lora.name), "weight": lora.weight} for lora in request.loras]
    if request.embeddings:
        task["embeddings"] = [{"model": air("embedding", e.name), "weight": e.weight} for e in request.embeddings]
    adapters = [control for control in request.controlnets if catalog.is_ip_adapter(control.model)]
    if nets := [control for control in request.controlnets if control not in adapters]:
        uploaded = guides or {}
        entries = [
            _controlnet(
                control,
                air("controlnet", control.model),
                uploaded[control.guide],
                task["steps"],
                request.run_steps,
                request.split[0],
            )
            for control in nets
        ]
        if sent := [entry for entry in entries if entry is not None]:
            task["controlNet"] = sent
    if adapters:
        images = image_prompts or {}
        task["ipAdapters"] = [
            {"model": air("controlnet", a.model), "guideImage": images[a.guide], "weight": a.weight} for a in adapters
        ]
    return task


# Shown under an upscaled image: Runware's upscaler ignores what the hires fix would use.
UPSCALE_NOTE = "Upscaled by Runware's upscaler: the image alone was enlarged, without the prompt, steps or strength."


def build_upscale_task(
    request: GenerationRequest,
    catalog: Catalog,
    task_uuid: str,
    image: bytes,
    *,
    output_type: str = "URL",
    check_content: bool = True,
) -> dict[str, Any]:
    """Return the ``imageUpscale`` task that enlarges `image` (the stored init image, a PNG) ``request.upscale`` times.

    Sent at its own size, not the request's: Runware multiplies the input's sides by
    ``upscaleFactor``, which makes the request's size. Always ``sync``: an upscale is no
    diffusion, and Runware answers it in seconds.
    """
    _CAPABILITIES.check(request, catalog)
    assert request.upscale is not None
    task: dict[str, Any] = {
        "taskType": "imageUpscale",
        "taskUUID": task_uuid,
        "inputImage": data_uri(image),
        "upscaleFactor": request.upscale,
        "outputType": output_type,
        "outputFormat": request.output_format.upper(),
        "includeCost": True,
        "deliveryMethod": "sync",
    }
    if check_content:
        # The parent was checked, but an upscale is a new image and is judged again.
        task["safety"] = {"checkContent": True}
    return task


def _refusal(error: dict[str, Any]) -> BackendUnavailable:
    parameter = str(error.get("parameter") or "")
    label = _LABELS.get(parameter, parameter)
    message = str(error.get("message") or error.get("code") or "no reason given").rstrip(".")
    return BackendUnavailable(TITLE, f"it refused the {label or 'request'} ({message})")


def _retried(response: httpx.Response, body: dict[str, Any] | None, errors: list[dict[str, Any]]) -> str:
    """Raise the refusal in a final answer that is not a 200; return why a transient or unreadable one is retried."""
    status = response.status_code
    if status not in TRANSIENT_STATUS and body is not None:
        if status in _FINAL_STATUS:
            raise BackendUnavailable(TITLE, _FINAL_STATUS[status])
        raise _refusal(errors[0] if errors else {"message": f"HTTP {status}"})
    return f"HTTP {status}" + (" with an unreadable body" if body is None else "")


class RunwareBackend(HostedBackend):
    """Makes images on Runware.

    Args:
        catalog: maps the request's names to Runware AIR ids.
        settings: key, URL, timeouts, retry budget.
        data_dir: where the bot keeps input images (``bot.images.input_path`` below it).
        client: an httpx client to use instead of the backend's own.
        poll_interval: the first wait between ``getResponse`` polls (it grows to 5 s).
        clock: seconds that only go forward, for how long ago a guide was uploaded (tests pass their own).
    """

    name = "runware"
    guide_preprocessors: frozenset[Preprocess] = frozenset(PREPROCESSOR_TYPES)

    def __init__(
        self,
        catalog: Catalog,
        settings: RunwareSettings,
        data_dir: Path,
        *,
        client: httpx.AsyncClient | None = None,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(catalog, settings, client)
        self._data_dir = Path(data_dir)
        self._settings = settings
        self._headers = {"Authorization": f"Bearer {self._key}"}
        self._poll_interval = poll_interval
        # sha256 of the bytes uploaded -> (imageUUID, when last sent): one upload per distinct guide.
        self._uploads: dict[str, tuple[str, float]] = {}
        self._upload_locks: dict[str, asyncio.Lock] = {}
        self._clock = clock

    async def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: asyncio.Event | None = None,
    ) -> list[GeneratedImage]:
        """Run the request as one task and return its images, downloaded, in seed order."""
        task_uuid = str(uuid.uuid4())
        if request.upscale is not None:
            return await self._upscale(request, task_uuid, cancel)
        delivery = "async" if work(request) > self._settings.async_above else "sync"
        guides, image_prompts = await self._guides(request, cancel)
        task = build_task(
            request,
            self._catalog,
            task_uuid,
            output_type=self._settings.output_type,
            delivery=delivery,
            check_content=self._settings.check_content,
            inputs=await self._inputs(request),
            guides=guides,
            image_prompts=image_prompts,
        )
        retrying = Retrying(self._settings.retry_budget, self.name)
        results = await self._submit(task, retrying, cancel)
        if len(results) < request.count:
            results = await self._poll(task_uuid, request.count, results, cancel)
        return await self._images(request, list(results.values()), retrying, cancel)

    async def _upscale(
        self, request: GenerationRequest, task_uuid: str, cancel: asyncio.Event | None
    ) -> list[GeneratedImage]:
        """Run the request's ``imageUpscale`` task: the stored input as it is, enlarged by Runware."""
        assert request.init_image is not None
        image = await self._stored(request.init_image, "input image")
        task = build_upscale_task(
            request,
            self._catalog,
            task_uuid,
            image,
            output_type=self._settings.output_type,
            check_content=self._settings.check_content,
        )
        retrying = Retrying(self._settings.retry_budget, self.name)
        results = await self._submit(task, retrying, cancel)
        if not results:
            results = await self._poll(task_uuid, 1, results, cancel)
        images = await self._images(request, list(results.values()), retrying, cancel)
        for upscaled in images:
            upscaled.meta["note"] = UPSCALE_NOTE
        return images

    async def _stored(self, sha: str, what: str) -> bytes:
        try:
            return await asyncio.to_thread((self._data_dir / input_path(sha)).read_bytes)
        except FileNotFoundError:
            # Forget or retention removed it while the job waited; nothing was sent or charged.
            raise BackendUnavailable(
                TITLE, f"its {what} is no longer stored here (it was forgotten or expired), so nothing was sent"
            ) from None

    async def _inputs(self, request: GenerationRequest) -> dict[str, bytes]:
        """Read the request's stored inputs at its size, once: every retry sends the same task."""
        inputs: dict[str, bytes] = {}
        given = (
            ("input image", request.init_image, "RGB", _input_size(request)),
            ("mask", request.mask_image, "L", (request.width, request.height)),
        )
        for what, sha, mode, size in given:
            if sha is not None:
                data = await self._stored(sha, what)
                inputs[sha] = await asyncio.to_thread(_sized, data, size, mode)
        return inputs

    async def _guides(
        self, request: GenerationRequest, cancel: asyncio.Event | None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Return `build_task`'s `guides` and `image_prompts`: the imageUUID of each guide, by its sha256.

        A ControlNet's guide is sent at the output size (as the local worker resizes it); an
        IP-Adapter's image as it is stored (the image encoder crops it, and a stretched image is
        another prompt). Each distinct upload happens once for the life of the client: a reroll sends
        no image.
        """
        guides: dict[str, str] = {}
        image_prompts: dict[str, str] = {}
        for control in request.controlnets:
            adapter = self._catalog.is_ip_adapter(control.model)
            uploads = image_prompts if adapter else guides
            if control.guide not in uploads:
                data = await self._stored(control.guide, "IP-Adapter image" if adapter else "ControlNet guide")
                if not adapter:
                    data = await asyncio.to_thread(_sized, data, (request.width, request.height), "RGB")
                uploads[control.guide] = await self._upload(data, cancel)
        return guides, image_prompts

    async def _upload(self, png: bytes, cancel: asyncio.Event | None) -> str:
        """Return the imageUUID Runware keeps `png` under, uploading it only when it is not known (or too old)."""
        key = hashlib.sha256(png).hexdigest()
        async with self._upload_locks.setdefault(key, asyncio.Lock()):  # two jobs of one guide upload it once
            known = self._uploads.get(key)
            now = self._clock()
            if known is not None and now - known[1] < UPLOAD_KEPT:
                self._uploads[key] = (known[0], now)
                return known[0]
            item = await self._utility({"taskType": "imageUpload", "image": data_uri(png)}, cancel)
            image_uuid = item.get("imageUUID")
            if not isinstance(image_uuid, str) or not image_uuid:
                raise BackendUnavailable(TITLE, "its answer to an image upload named no imageUUID")
            self._uploads[key] = (image_uuid, now)
            return image_uuid

    async def make_guide(self, image: bytes, preprocess: Preprocess, width: int, height: int) -> GuideMap:
        """Return Runware's `preprocess` map of `image` at `width`×`height` (a URL answer is downloaded)."""
        source = await self._upload(image, None)
        task = {
            "taskType": "imageControlNetPreProcess",
            "inputImage": source,
            "preProcessorType": PREPROCESSOR_TYPES[preprocess],
            "width": width,
            "height": height,
            "outputType": "base64Data",
            "outputFormat": "PNG",
            "includeCost": True,
        }
        item = await self._utility(task, None)
        inline = item.get("guideImageBase64Data") or item.get("guideImageDataURI")
        try:
            if item.get("guideImageURL") and not inline:
                retrying = Retrying(self._settings.retry_budget, self.name)
                data = await download(self._http, str(item["guideImageURL"]), retrying, None)
            else:
                data = decode_inline(str(inline or ""))
        except (ImageLost, ValueError):
            raise BackendUnavailable(TITLE, f"its {preprocess} map of the guide could not be read") from None
        # Charged once for the map, which rerolls reuse: counted in the generation that asked for it.
        return GuideMap(data, number_or_none(item, "cost"))

    async def describe(self, image: bytes) -> Description:
        """Return Runware's caption of `image` (a checked PNG), as it wrote it, and what it cost.

        Raises:
            bot.errors.BackendUnavailable: Runware refused or failed, or answered without a caption; one sentence.
        """
        task = {
            "taskType": "imageCaption",
            "inputImage": data_uri(image),
            "includeCost": True,  # the SDK's IImageCaption: the answer then names its cost
        }
        try:
            item = await self._utility(task, None)
        except BackendUnavailable as failed:
            # The shared task runner's sentences say "could not make the image": this was a description.
            raise BackendUnavailable(TITLE, failed.reason, cost=failed.cost, doing=DESCRIBING) from None
        cost = number_or_none(item, "cost")
        text = item.get("text")
        if not isinstance(text, str):
            raise BackendUnavailable(TITLE, "it answered without a caption", cost=cost, doing=DESCRIBING)
        return Description(text, cost)

    async def _utility(self, fields: dict[str, Any], cancel: asyncio.Event | None) -> dict[str, Any]:
        """Run one upload, preprocessing or caption task and return its answer's item; transient failures are retried.

        Each try has a fresh taskUUID: none of these tasks' docs say a repeated UUID is answered with
        the first try's result, and an upload costs nothing to make again.
        """
        retrying = Retrying(self._settings.retry_budget, self.name)
        while True:
            task = {"taskUUID": str(uuid.uuid4()), **fields}
            wait: float | None = None
            try:
                response = await self._post([task])
            except httpx.TransportError as error:
                why = type(error).__name__
            else:
                body = object_or_none(response)
                errors = _items(body, "errors")
                if response.status_code == 200 and body is not None:
                    for item in _items(body, "data"):
                        if item.get("taskUUID") == task["taskUUID"]:
                            return item
                    raise _refusal(errors[0] if errors else {"message": "no answer for the task"})
                why, wait = _retried(response, body, errors), retry_after(response)
            if not await retrying.again(why, cancel, wait):
                raise retrying.exhausted(TITLE)

    async def _post(self, tasks: list[dict[str, Any]]) -> httpx.Response:
        return await self._http.post(self._settings.url, json=tasks, headers=self._headers)

    async def _submit(
        self, task: dict[str, Any], retrying: Retrying, cancel: asyncio.Event | None
    ) -> dict[str, dict[str, Any]]:
        """Send the task until Runware takes it; return the finished images it answered with, by imageUUID."""
        task_uuid = task["taskUUID"]
        while True:
            wait: float | None = None
            try:
                response = await self._post([task])
            except httpx.TransportError as error:
                why = (
                    f"{type(error).__name__} after {self._settings.timeout:g} s"
                    if isinstance(error, httpx.TimeoutException)
                    else type(error).__name__
                )
            else:
                body = object_or_none(response)
                errors = [e for e in _items(body, "errors") if e.get("taskUUID") in (task_uuid, None)]
                if response.status_code == 200 and body is not None:
                    # Runware's errors can come in a 200 too; with nothing of our task in data, it was refused.
                    if errors and not any(item.get("taskUUID") == task_uuid for item in _items(body, "data")):
                        raise _refusal(errors[0])
                    return _results(body, task_uuid)
                if retrying.tries > 1 and any(e.get("code") == "conflictTaskUUID" for e in errors):
                    # An earlier try was accepted after all; its images are fetched, not paid for again.
                    return {}
                why, wait = _retried(response, body, errors), retry_after(response)
            if not await retrying.again(why, cancel, wait):
                raise retrying.exhausted(TITLE)

    async def _poll(
        self,
        task_uuid: str,
        count: int,
        results: dict[str, dict[str, Any]],
        cancel: asyncio.Event | None,
    ) -> dict[str, dict[str, Any]]:
        """Ask ``getResponse`` until every image is done or failed, or the poll timeout passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.poll_timeout
        delay = self._poll_interval
        failed: list[dict[str, Any]] = []
        retrying = Retrying(self._settings.retry_budget, self.name)
        while len(results) + len(failed) < count and loop.time() + delay <= deadline:
            await sleep_or_cancel(delay, cancel)
            delay = min(delay * 1.5, 5.0)
            try:
                response = await self._post([{"taskType": "getResponse", "taskUUID": task_uuid}])
            except httpx.TransportError as error:
                if not await retrying.again(type(error).__name__, cancel):
                    break
                continue
            body = object_or_none(response)
            if response.status_code != 200 or body is None:
                transient = response.status_code in TRANSIENT_STATUS or body is None
                if transient and await retrying.again(f"HTTP {response.status_code}", cancel, retry_after(response)):
                    continue
                break
            results.update(_results(body, task_uuid))
            failed = [e for e in _items(body, "errors") if e.get("taskUUID") == task_uuid]
        if not results:
            if failed:
                raise _refusal(failed[0])
            raise BackendUnavailable(
                TITLE, f"the images were not ready after {self._settings.poll_timeout:g} s (task {task_uuid})"
            )
        return results

    async def _images(
        self,
        request: GenerationRequest,
        results: list[dict[str, Any]],
        retrying: Retrying,
        cancel: asyncio.Event | None,
    ) -> list[GeneratedImage]:
        """Download or decode each result; an image that cannot be had is dropped, its cost kept."""
        assert request.seed is not None
        results.sort(key=lambda item: int(item.get("seed") or 0))

        async def fetch(item: dict[str, Any]) -> bytes | None:
            try:
                if item.get("imageURL"):
                    return await download(self._http, str(item["imageURL"]), retrying, cancel)
                return decode_inline(str(item.get("imageBase64Data") or item.get("imageDataURI") or ""))
            except (ImageLost, ValueError):
                return None

        datas = await asyncio.gather(*(fetch(item) for item in results))
        charged = sum(float(item.get("cost") or 0.0) for item in results)
        images: list[GeneratedImage] = []
        for item, data in zip(results, datas, strict=True):
            if data is None:
                continue
            seed = int(item.get("seed") or request.seed)
            index = seed - request.seed if 0 <= seed - request.seed < request.count else len(images)
            cost = float(item.get("cost") or 0.0)
            verdict = item.get("NSFWContent")
            images.append(
                GeneratedImage(
                    index,
                    seed,
                    data,
                    request.width,
                    request.height,
                    {"cost": cost, "uuid": item.get("imageUUID")},
                    nsfw=verdict if isinstance(verdict, bool) else None,
                )
            )
        if not images:
            raise BackendUnavailable(
                TITLE, "the finished images could not be downloaded (their links failed)", cost=charged or None
            )
        lost = charged - sum(float(image.meta["cost"]) for image in images)
        if lost:
            # What was paid for lost images stays on the record with the images that arrived.
            images[0].meta["cost"] = float(images[0].meta["cost"]) + lost
        return sorted(images, key=lambda image: image.index)


def _sized(png: bytes, size: tuple[int, int], mode: str) -> bytes:
    """Return a stored input at the output size, resized as the local worker resizes it (as is when it fits).

    A mask may be any size and an input is kept at its own (the request's size is the nearest
    one in multiples of 64): sending what the local worker diffuses leaves nothing to Runware's
    own resizing, which its docs do not describe.
    """
    with Image.open(io.BytesIO(png)) as opened:
        if opened.size == size:
            return png
        resized = opened.convert(mode).resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, format="PNG")
    return buffer.getvalue()


def _items(body: Any, key: str) -> list[dict[str, Any]]:
    items = body.get(key) if isinstance(body, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _results(body: Any, task_uuid: str) -> dict[str, dict[str, Any]]:
    """Return the finished images of our task in an answer, by imageUUID (answers repeat them).

    A result without an image, or with a seed or cost that is not a number, is left out
    as unreadable: the task is then polled, and ``getResponse`` answers it again.
    """
    return {
        str(item["imageUUID"]): item
        for item in _items(body, "data")
        if item.get("taskUUID") == task_uuid
        and item.get("imageUUID")
        and item.get("status", "success") == "success"
        and _readable(item)
    }


def _readable(item: dict[str, Any]) -> bool:
    image = item.get("imageURL") or item.get("imageBase64Data") or item.get("imageDataURI")
    numbers = [item[key] for key in ("seed", "cost") if item.get(key) is not None]
    return isinstance(image, str) and all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in numbers
    )

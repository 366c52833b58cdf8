"""The ModelsLab backend: the v4 dreambooth text-to-image endpoint, polled through ``fetch_result``.

ModelsLab's docs: stablediffusionapi.com/docs/community-models-api-v4/dreamboothtext2img
(the request: numbers as strings, flags as "yes"/"no", the key in the body) and its
fetch page. Every answer is HTTP 200 with a ``status`` of success, processing or error
(the error text is ``message`` or, on older endpoints, ``messege``).

ModelsLab has no idempotency key, and each accepted submit is a new job and a new
charge. So a submit is retried only when it surely did not start a job: the
connection was never made, or ModelsLab refused it (429, its spam filter). A
timeout, a 5xx or an unreadable answer may follow an accepted job, and is
reported instead of resent. Fetches change nothing and are retried freely.

Upscale (``upscale #3 2``) is ModelsLab's super-resolution endpoint (v6
``image_editing/super_resolution``, RealESRGAN_x2plus for 2×, RealESRGAN_x4plus for 4×).
Its ``init_image`` is a URL only, so the stored input is first sent to ModelsLab's
"Base64 to URL" endpoint (v6 ``base64_to_url``), whose docs say the link lasts 24 hours
and uploads are at most 5 MB: a larger input is refused before anything is sent
(`UPLOAD_LIMIT`; re-encoding a PNG losslessly rarely saves enough, and a lossy one would
change the image). Both requests follow the submit's rule: resent only when surely not
started. The upscaler enlarges the image alone (no prompt, steps or strength), and the user
is told so in a note (`UPSCALE_NOTE`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bot.catalog import Catalog
from bot.config import ModelsLabSettings
from bot.errors import BackendUnavailable
from bot.images import input_path
from bot.ports import ProgressCallback
from bot.request import GeneratedImage, GenerationRequest
from inference._remote import (
    HostedBackend,
    ImageLost,
    Retrying,
    download,
    number_or_none,
    object_or_none,
    retry_after,
    sleep_or_cancel,
)
from inference.capabilities import CAPABILITIES, MODELSLAB_SCHEDULERS

__all__ = ["UPLOAD_LIMIT", "UPSCALE_NOTE", "ModelsLabBackend", "build_body"]

TITLE = "ModelsLab"
_CAPABILITIES = CAPABILITIES["modelslab"]
_NOT_RESENT = "so it was not sent again (ModelsLab may have started it, and a second request is paid again)"
# A connection that was never made cannot have started a job.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
# The Base64-to-URL docs: "max 5 MB"; counted on the data URI sent, which is what ModelsLab receives.
UPLOAD_LIMIT = 5_000_000
# The super-resolution model for each factor the bot offers.
UPSCALE_MODELS = {2: "RealESRGAN_x2plus", 4: "RealESRGAN_x4plus"}
# Shown under an upscaled image: ModelsLab's upscaler ignores what the hires fix would use.
UPSCALE_NOTE = (
    "Upscaled by ModelsLab's super resolution: the image alone was enlarged, without the prompt, steps or strength."
)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def build_body(
    request: GenerationRequest, catalog: Catalog, key: str, track_id: str, *, safety_checker: bool = True
) -> dict[str, Any]:
    """Return the JSON of a request (checked against ModelsLab's capabilities first), as its API expects it.

    With `safety_checker`, ModelsLab checks each image, answers ``nsfw_content_detected`` and
    blanks what it flags.
    """
    _CAPABILITIES.check(request, catalog)

    def model_id(kind: Any, name: str) -> str:
        identifier = _CAPABILITIES.identifier(catalog.get(kind, name))
        assert identifier is not None  # check() refused names without one
        return identifier

    scheduler, karras = MODELSLAB_SCHEDULERS[request.scheduler]
    body: dict[str, Any] = {
        "key": key,
        "model_id": model_id("model", request.model),
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "width": str(request.width),
        "height": str(request.height),
        "samples": str(request.count),
        "num_inference_steps": str(request.steps),
        "guidance_scale": f"{request.cfg_scale:g}",
        "seed": str(request.seed) if request.seed is not None else None,
        "scheduler": scheduler,
        "use_karras_sigmas": _yes(karras),
        # Our prompts are sent as written; the server's policy decides how a flagged image is shown.
        "enhance_prompt": "no",
        "safety_checker": _yes(safety_checker),
        "webhook": None,
        "track_id": track_id,
    }
    if request.clip_skip:
        # ModelsLab counts like A1111 (1 = the last layer, no skip); ours counts the layers skipped.
        body["clip_skip"] = str(request.clip_skip + 1)
    if request.vae:
        body["vae"] = model_id("vae", request.vae)
    if request.loras:
        body["lora_model"] = ",".join(model_id("lora", lora.name) for lora in request.loras)
        body["lora_strength"] = ",".join(f"{lora.weight:g}" for lora in request.loras)
    return body


def build_upscale_body(request: GenerationRequest, catalog: Catalog, key: str, image_url: str) -> dict[str, Any]:
    """Return the super-resolution JSON that enlarges the uploaded image at `image_url` ``request.upscale`` times."""
    _CAPABILITIES.check(request, catalog)
    assert request.upscale is not None
    return {
        "key": key,
        "init_image": image_url,
        "model_id": UPSCALE_MODELS[request.upscale],
        "scale": request.upscale,
        "face_enhance": False,
        "webhook": None,
        "track_id": None,
    }


def _message(body: dict[str, Any], subject: str = "the request") -> str:
    """Return ModelsLab's error text (``message`` or ``messege``; a string or {field: [reasons]}) after a subject."""
    message = body.get("message", body.get("messege"))
    if isinstance(message, dict) and message:
        field, reasons = next(iter(message.items()))
        reason = reasons[0] if isinstance(reasons, list) and reasons else reasons
        return f"the {field} ({str(reason).rstrip('.')})"
    return f"{subject} ({str(message or 'no reason given').rstrip('.')})"


class ModelsLabBackend(HostedBackend):
    """Makes images on ModelsLab.

    Args:
        catalog: maps the request's names to ModelsLab model and LoRA ids.
        settings: key, URLs, timeouts, retry budget.
        data_dir: where the bot keeps input images (``bot.images.input_path`` below it).
        client: an httpx client to use instead of the backend's own.
        eta_cap: the longest wait before a fetch, whatever ETA ModelsLab gives.
    """

    name = "modelslab"

    def __init__(
        self,
        catalog: Catalog,
        settings: ModelsLabSettings,
        data_dir: Path,
        *,
        client: httpx.AsyncClient | None = None,
        eta_cap: float = 10.0,
    ) -> None:
        super().__init__(catalog, settings, client)
        self._settings = settings
        self._data_dir = Path(data_dir)
        self._eta_cap = eta_cap

    @property
    def public_upscale(self) -> str:
        """Return why a private image is not upscaled here (`bot.ports.PublicUpscaleBackend`)."""
        return "ModelsLab's upscaler reads the image from a public link that works for 24 hours"

    async def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: asyncio.Event | None = None,
    ) -> list[GeneratedImage]:
        """Submit once, wait for the job through its fetch URL, and return the downloaded images."""
        if request.upscale is not None:
            return await self._upscale(request, cancel)
        body = build_body(
            request, self._catalog, self._key, uuid.uuid4().hex, safety_checker=self._settings.safety_checker
        )
        retrying = Retrying(self._settings.retry_budget, self.name)
        answer = await self._submit(body, retrying, cancel)
        if answer.get("status") == "processing":
            answer = await self._wait(answer, retrying, cancel)
        return await self._images(request, answer, retrying, cancel)

    async def _upscale(self, request: GenerationRequest, cancel: asyncio.Event | None) -> list[GeneratedImage]:
        """Upload the stored input for a link, have super resolution enlarge it, and download the result."""
        assert request.init_image is not None and request.seed is not None
        _CAPABILITIES.check(request, self._catalog)
        image = await self._stored(request.init_image)
        uri = "data:image/png;base64," + base64.b64encode(image).decode("ascii")
        if len(uri) > UPLOAD_LIMIT:
            raise BackendUnavailable(
                TITLE,
                f"the image is {len(uri) / 1e6:.1f} MB as sent, more than the {UPLOAD_LIMIT / 1e6:g} MB "
                "its upload takes, so nothing was sent",
            )
        retrying = Retrying(self._settings.retry_budget, self.name)
        uploaded = await self._submit(
            {"key": self._key, "base64_string": uri},
            retrying,
            cancel,
            url=self._settings.upload_url,
            subject="the image upload",
        )
        link = _first_url(uploaded)
        if uploaded.get("status") != "success" or link is None:
            raise BackendUnavailable(TITLE, "its answer to the image upload named no link")
        body = build_upscale_body(request, self._catalog, self._key, link)
        answer = await self._submit(body, retrying, cancel, url=self._settings.upscale_url, subject="the upscale")
        if answer.get("status") == "processing":
            fallback = self._settings.upscale_url.rsplit("/", 1)[0] + "/fetch"
            answer = await self._wait(answer, retrying, cancel, fallback=fallback)
        result = _first_url(answer)
        if result is None:
            raise BackendUnavailable(TITLE, "it reported the upscale done without its image")
        try:
            data = await download(self._http, result, retrying, cancel)
        except ImageLost:
            raise BackendUnavailable(TITLE, "the upscaled image could not be downloaded (its link failed)") from None
        size = await asyncio.to_thread(_size, data)
        if size != (request.width, request.height):
            got = "not an image" if size is None else f"{size[0]}×{size[1]}"
            raise BackendUnavailable(TITLE, f"its upscaled image was {got}, not {request.width}×{request.height}")
        return [GeneratedImage(0, request.seed, data, request.width, request.height, {"note": UPSCALE_NOTE})]

    async def _stored(self, sha: str) -> bytes:
        try:
            return await asyncio.to_thread((self._data_dir / input_path(sha)).read_bytes)
        except FileNotFoundError:
            # Forget or retention removed it while the job waited; nothing was sent or charged.
            raise BackendUnavailable(
                TITLE, "its input image is no longer stored here (it was forgotten or expired), so nothing was sent"
            ) from None

    async def _submit(
        self,
        body: dict[str, Any],
        retrying: Retrying,
        cancel: asyncio.Event | None,
        *,
        url: str | None = None,
        subject: str = "the request",
    ) -> dict[str, Any]:
        """POST a request that may start a charged job: resent only when it surely did not start one."""
        while True:
            wait: float | None = None
            try:
                response = await self._http.post(url or self._settings.url, json=body)
            except _NEVER_SENT as error:
                why = type(error).__name__
            except httpx.TransportError as error:
                raise BackendUnavailable(TITLE, f"the request failed ({type(error).__name__}), {_NOT_RESENT}") from None
            else:
                answer = object_or_none(response)
                if response.status_code == 429:
                    # Refused before it started: its queue is full. Safe to send again.
                    why = "HTTP 429"
                    wait = retry_after(response) or number_or_none(answer, "retry_after")
                elif response.status_code != 200 or answer is None:
                    what = f"HTTP {response.status_code}" + (" with an unreadable body" if answer is None else "")
                    raise BackendUnavailable(TITLE, f"it answered {what}, {_NOT_RESENT}")
                elif answer.get("status") in ("success", "processing"):
                    return answer
                elif "rate limit" in str(answer.get("message", answer.get("messege"))).lower():
                    # Its spam filter refused a repeat before it started anything.
                    why, wait = "rate limited", number_or_none(answer, "retry_after") or 30.0
                else:
                    raise BackendUnavailable(TITLE, f"it refused {_message(answer, subject)}")
            if not await retrying.again(why, cancel, wait):
                raise retrying.exhausted(TITLE)

    async def _wait(
        self,
        answer: dict[str, Any],
        retrying: Retrying,
        cancel: asyncio.Event | None,
        *,
        fallback: str | None = None,
    ) -> dict[str, Any]:
        """Fetch a queued job until it succeeds or fails, waiting its ETA first (bounded).

        `fallback` is the fetch endpoint when the answer names no ``fetch_result``.
        """
        job_id = answer.get("id")
        url = str(answer.get("fetch_result") or fallback or f"{self._settings.url.rstrip('/')}/fetch")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.poll_timeout
        delay = min(max(number_or_none(answer, "eta") or 1.0, 0.0), self._eta_cap)
        while loop.time() + delay <= deadline:
            await sleep_or_cancel(delay, cancel)
            delay = min(max(delay, 1.0) * 1.5, self._eta_cap)
            try:
                response = await self._http.post(url, json={"key": self._key, "request_id": job_id})
            except httpx.TransportError as error:
                why, wait = type(error).__name__, None
            else:
                fetched = object_or_none(response)
                if response.status_code == 200 and fetched is not None:
                    status = fetched.get("status")
                    if status == "success":
                        return fetched
                    if status != "processing":
                        raise BackendUnavailable(TITLE, _message(fetched, f"job {job_id} failed"))
                    continue
                why, wait = f"fetch HTTP {response.status_code}", retry_after(response)
            if not await retrying.again(why, cancel, wait):
                raise retrying.exhausted(TITLE)
        raise BackendUnavailable(TITLE, f"job {job_id} was not ready after {self._settings.poll_timeout:g} s")

    async def _images(
        self, request: GenerationRequest, answer: dict[str, Any], retrying: Retrying, cancel: asyncio.Event | None
    ) -> list[GeneratedImage]:
        assert request.seed is not None
        output = answer.get("output")
        if not isinstance(output, list):
            raise BackendUnavailable(TITLE, "it reported success without a list of images")
        urls = [str(url) for url in output if url]

        async def fetch(url: str) -> bytes | None:
            try:
                return await download(self._http, url, retrying, cancel)
            except ImageLost:
                return None

        datas = await asyncio.gather(*(fetch(url) for url in urls[: request.count]))
        verdicts = _verdicts(answer.get("nsfw_content_detected"), len(datas))
        # Image i of a job has seed + i, as on every backend.
        images = [
            GeneratedImage(index, request.seed + index, data, request.width, request.height, nsfw=verdicts[index])
            for index, data in enumerate(datas)
            if data is not None
        ]
        if not images:
            raise BackendUnavailable(TITLE, "the finished images could not be downloaded (their links failed)")
        return images


def _first_url(answer: dict[str, Any]) -> str | None:
    """Return the first link in an answer's ``output`` list, or None."""
    output = answer.get("output")
    if isinstance(output, list) and output and isinstance(output[0], str) and output[0]:
        return output[0]
    return None


def _size(data: bytes) -> tuple[int, int] | None:
    """Return an image's size, or None when the bytes are no image."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _verdicts(detected: Any, count: int) -> list[bool | None]:
    """Return the safety checker's verdict per image: ModelsLab answers one boolean per image or one for all."""
    if isinstance(detected, list) and len(detected) >= count:
        return [value if isinstance(value, bool) else None for value in detected[:count]]
    return [detected if isinstance(detected, bool) else None] * count

"""A loopback fake of ModelsLab's v4 dreambooth text-to-image API, for testing a client against it.

What it fakes
-------------
``FakeModelsLab`` is a real aiohttp server on 127.0.0.1 (random free port) that answers the way
ModelsLab's ``/api/v4/dreambooth`` (community models text2img) and its fetch endpoint do, as far as
the documentation and observed answers go. The real service cannot be called from a test (it costs
money per image and needs a key), and its awkward habits are exactly what a client gets wrong, so
the fake keeps them:

* ``POST fake.url`` (``http://127.0.0.1:PORT/api/v4/dreambooth``) with a JSON body carrying the key
  as ``"key"``. Every answer is HTTP 200 with a JSON ``status`` (``success`` / ``processing`` /
  ``error`` / ``failed``), except the HTTP faults injected below. A wrong or missing key answers
  ``{"status": "error", "message": "Invalid Api Key", ...}``; a body that is not
  ``application/json`` or not a JSON object answers an error status too.
* Validation answers the FIRST problem found, as ModelsLab's (Laravel) validation does:
  ``{"status": "error", "message": {"<field>": ["The <field> ..."]}}`` (a dict message, not a
  string). Fields are checked in this order: unknown fields, ``model_id``, ``prompt``,
  ``negative_prompt``, ``width``, ``height``, ``samples``, ``num_inference_steps``,
  ``guidance_scale``, ``seed``, ``scheduler``, the yes/no flags (``YES_NO_FIELDS``),
  ``lora_model``, ``lora_strength``, ``clip_skip``, ``webhook``, ``track_id``,
  ``embeddings_model``, ``vae``; then a ``model_id`` not in ``fake.models`` answers the string
  message ``"Model id not found"``. ModelsLab documents numbers as STRINGS (``"width": "512"``);
  the fake accepts a JSON number for them too but records ``(field, value)`` in
  ``fake.type_violations`` (``guidance_scale`` and ``track_id`` may be numbers). The yes/no flags
  take ``"yes"`` / ``"no"`` only: a JSON boolean is a validation error. Defaults of absent fields:
  512×512, 1 sample, 30 steps, guidance 7.5, a random seed, ``UniPCMultistepScheduler``.
* An accepted submit is charged, as ModelsLab bills at acceptance: its id (increasing from 1000)
  is appended to ``fake.charges`` and a ``ModelsLabJob`` is kept in ``fake.jobs[id]``. ModelsLab
  has no idempotency key, so an identical body is a NEW job and a new charge; that is what lets a
  test prove that a client never resubmits after a timeout or a 5xx.
* Success (after sleeping ``service_time``) answers ``{"status": "success", "generationTime",
  "id", "output": [urls], "meta": {...}}``. Image i has seed ``seed + i`` and is a PNG of
  width×height filled with ``colour_for_seed(seed + i)``, served at
  ``GET /generations/{uuid}-{i}.png`` (served URLs are recorded in ``fake.downloads``).
* Fetch: ``POST /api/v4/dreambooth/fetch`` with ``{"key", "request_id"}``, or
  ``POST /api/v3/dreambooth/fetch/{id}`` / ``POST /api/v4/dreambooth/fetch/{id}`` with
  ``{"key"}``. Answers the job's current state: ``processing`` (with ModelsLab's ``"messege"``
  spelling), ``success`` with the output URLs, or ``failed``; an unknown id answers
  ``{"status": "error", "messege": "Request not found"}``.

Upscale: upload, then super resolution
--------------------------------------
* ``POST fake.upload_url`` (``/api/v6/base64_to_url``, "Base64 to URL") with ``{"key", "base64_string"}``:
  the string must be a ``data:image/...;base64,`` URI of a readable image, at most
  ``UPLOAD_LIMIT`` (5 MB, the docs' maximum) long. Answers ``{"status": "success", "id", "output":
  [link]}``; the link (``GET /uploads/{id}.png``) serves the bytes as uploaded (``fake.uploads[id]``).
* ``POST fake.upscale_url`` (``/api/v6/image_editing/super_resolution``) with ``{"key",
  "init_image", "model_id", "scale", "face_enhance", "webhook", "track_id"}``: ``init_image`` must be
  one of the fake's upload links (the real API downloads it), ``model_id`` one of
  ``UPSCALE_MODELS``, ``scale`` an integer from 2 to 4. Accepted jobs are charged (``fake.charges``,
  ``fake.upscales[id]``); the result (``GET /upscaled/{id}.png``) is the uploaded image enlarged
  ``scale`` times with Lanczos. ``fake.inject_upscale(Fault(...))`` queues ``processing`` (then
  fetched at ``/api/v6/image_editing/fetch/{id}``, the answer's ``fetch_result``), ``error``
  (not charged) or ``http`` (429 not charged, 5xx charged) for the next super-resolution POST.
  ``fake.upscale_requests`` lists the super-resolution bodies (key redacted).

Faults
------
``fake.inject(Fault(...))`` (or ``fake.inject(kind=..., ...)``) queues a fault; each submit POST
takes the next one (FIFO), fetches never do. ``error`` and ``http`` 429 answer before the key and
the body are looked at and are not charged; every other kind is applied only after the key and
validation passed (a rejected request still spends the fault). Kinds (``Fault`` fields in
brackets):

* ``processing`` (``polls``, ``eta``): accepted, charged, answered ``processing`` with
  ``fetch_result`` and ``future_links``; the first ``polls`` fetches answer processing, then success.
* ``failed_after`` (``polls``): like ``processing``, but after ``polls`` fetches the job is failed.
* ``error`` (``message``, ``misspelled``): ``{"status": "error", "messege"|"message": message}``.
* ``http`` (``status``, ``retry_after``): 429 answers ModelsLab's queue-limit body (not charged,
  ``Retry-After`` header when given); 5xx ACCEPTS and charges first (the job exists and completes,
  the gateway failed), so a client that resubmits is charged twice.
* ``hang`` (``seconds``): accepted and charged, answers success only after ``seconds`` (the job is
  processing meanwhile); ``close()`` cuts the wait short.
* ``malformed``: accepted and charged, answers 200 with the invalid JSON ``{"status": "succ``.
* ``wrong_shape`` (``mangle``): accepted and charged, answers 200 with ``mangle(answer)``, valid
  JSON of another shape than the success answer ModelsLab would give.
* ``trickle`` (``pieces``, ``gap``): accepted and charged, sends the success answer in ``pieces``
  writes ``gap`` seconds apart (see ``tests.fakes._loopback.trickle``).
* ``url_404``: success, but its output URLs answer 404.

With ``safety_checker: "yes"`` a success also answers ``nsfw_content_detected`` (one boolean per
output image); an image whose seed is in ``fake.nsfw_seeds`` is flagged there and served blank
(black), as ModelsLab replaces what its checker flags.
* ``partial`` (``returned``): success with only ``returned`` URLs although more samples were asked.

``fake.inject_fetch(Fault(kind="http", status=503))`` or ``kind="malformed"`` queues a transient
failure of the next fetch POST only; the job's state (and its poll count) is left alone.

Driving it
----------
::

    async with FakeModelsLab() as fake:
        fake.inject(Fault("processing", polls=2))
        async with httpx.AsyncClient() as http:
            answer = (await http.post(fake.url, json={"key": fake.api_key, "model_id": "sdxl",
                                                      "prompt": "a cat", "samples": "2"})).json()
            ...  # poll answer["fetch_result"] with {"key": ...} until "success"
        assert fake.charges == [1000]

Every request is recorded in ``fake.requests`` as a ``ModelsLabRequest`` (the key replaced by
``"<redacted>"``, so it never lands in a repr or an assertion message); ``fake.submits`` lists the
submit bodies. ``await fake.wait_for(predicate)`` re-checks after every request and job change and
raises ``TimeoutError`` listing the last requests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import itertools
import json
import math
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from PIL import Image

from tests.fakes._loopback import LoopbackServer, trickle

FaultKind = Literal[
    "processing", "error", "http", "hang", "malformed", "wrong_shape", "trickle", "url_404", "partial", "failed_after"
]
JobState = Literal["processing", "success", "failed"]
RequestKind = Literal["submit", "fetch", "download", "upload", "upscale", "other"]

FAULT_KINDS: frozenset[str] = frozenset(
    ("processing", "error", "http", "hang", "malformed", "wrong_shape", "trickle", "url_404", "partial", "failed_after")
)
FETCH_FAULT_KINDS: frozenset[str] = frozenset(("http", "malformed"))

SCHEDULERS: frozenset[str] = frozenset(
    (
        "DDPMScheduler",
        "DDIMScheduler",
        "PNDMScheduler",
        "LMSDiscreteScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "HeunDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "DPMSolverSinglestepScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "UniPCMultistepScheduler",
        "DEISMultistepScheduler",
        "LCMScheduler",
    )
)
YES_NO_FIELDS: tuple[str, ...] = (
    "use_karras_sigmas",
    "safety_checker",
    "enhance_prompt",
    "multi_lingual",
    "panorama",
    "self_attention",
    "tomesd",
    "base64",
    "temp",
)
KNOWN_FIELDS: frozenset[str] = frozenset(
    (
        "key",
        "model_id",
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "samples",
        "num_inference_steps",
        "guidance_scale",
        "seed",
        "scheduler",
        *YES_NO_FIELDS,
        "lora_model",
        "lora_strength",
        "clip_skip",
        "webhook",
        "track_id",
        "embeddings_model",
        "vae",
    )
)
DEFAULT_SCHEDULER = "UniPCMultistepScheduler"
REDACTED = "<redacted>"
MALFORMED_BODY = '{"status": "succ'
INVALID_KEY_TIP = "Get your API key from https://modelslab.com/dashboard/api-keys"
PROCESSING_TIP = "Your image is processing in background, you can get this image using fetch API"
RATE_LIMIT_MESSAGE = "Rate limit exceeded. Maximum 5 queued requests allowed."
_INT_RE = re.compile(r"-?[0-9]+")
UPLOAD_LIMIT = 5_000_000
UPSCALE_MODELS: frozenset[str] = frozenset(("RealESRGAN_x4plus", "RealESRGAN_x2plus", "RealESRGAN_x4plus_anime_6B"))
UPSCALE_FIELDS: frozenset[str] = frozenset(
    ("key", "init_image", "model_id", "scale", "face_enhance", "webhook", "track_id")
)
UPSCALE_FAULT_KINDS: frozenset[str] = frozenset(("processing", "error", "http"))
_DATA_URI_RE = re.compile(r"data:image/[a-z]+;base64,(?P<data>.*)", re.DOTALL)


def _blank_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (0, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _enlarged(data: bytes, scale: int) -> bytes:
    """Return an image enlarged `scale` times with Lanczos, as a PNG (what the fake's super resolution makes)."""
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    enlarged = image.resize((image.width * scale, image.height * scale), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    enlarged.save(buffer, format="PNG")
    return buffer.getvalue()


def colour_for_seed(seed: int) -> tuple[int, int, int]:
    """Return the fill colour of the fake's image for ``seed``, so a test can tell which seed made it."""
    digest = hashlib.sha256(f"{seed}".encode()).digest()
    return digest[0], digest[1], digest[2]


def png_for_seed(seed: int, width: int, height: int) -> bytes:
    """Return the PNG the fake serves for ``seed`` at ``width``×``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour_for_seed(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def redact(body: Any) -> Any:
    """Return ``body`` with its ``key`` value replaced, so the API key never lands in a record."""
    if isinstance(body, dict) and "key" in body:
        return {**body, "key": REDACTED}
    return body


@dataclass
class Fault:
    """One injected misbehaviour; which fields matter depends on ``kind`` (see the module docstring)."""

    kind: FaultKind
    polls: int = 1  # processing / failed_after: fetches that answer "processing" first
    eta: float = 5.0  # processing: the "eta" ModelsLab estimates
    message: str = "Server is overloaded, please try again later"  # error
    misspelled: bool = False  # error: "messege" (ModelsLab's legacy spelling) instead of "message"
    status: int = 503  # http: 429, 500, 502, 503 (any 5xx)
    retry_after: float | None = None  # http 429: Retry-After header, when given
    seconds: float = 30.0  # hang: how long the answer is held back
    returned: int = 1  # partial: how many URLs the output holds
    mangle: Callable[[Any], Any] | None = None  # wrong_shape: the success answer -> what is sent instead
    pieces: int = 20  # trickle: writes of the answer
    gap: float = 0.1  # trickle: seconds between them

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.kind == "http" and not (self.status == 429 or 500 <= self.status <= 599):
            raise ValueError(f"http fault status must be 429 or 5xx, not {self.status}")
        if self.polls < 0 or self.returned < 0 or self.seconds < 0:
            raise ValueError("polls, returned and seconds must not be negative")


@dataclass
class ModelsLabRequest:
    """One HTTP request the fake received; ``http_status`` and ``status`` are None until it is answered."""

    kind: RequestKind
    method: str
    path: str
    body: Any  # the JSON body with "key" redacted, the raw text if it was not JSON, None for a GET
    at: float  # time.monotonic() on arrival
    http_status: int | None = None
    status: str | None = None  # the answer's JSON "status", None when it had none (or was not JSON)
    job_id: int | None = None


@dataclass
class Text2ImgRequest:
    """A submit body as ModelsLab would read it (numbers parsed, defaults filled in)."""

    model_id: str
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    samples: int
    num_inference_steps: int
    guidance_scale: float
    seed: int | None  # as sent; None means ModelsLab picked one (see ModelsLabJob.seeds)
    scheduler: str
    flags: dict[str, str]  # the yes/no fields that were sent
    loras: list[tuple[str, float]]
    clip_skip: int | None
    webhook: str | None
    track_id: str | int | None
    embeddings_model: str | None
    vae: str | None
    raw: dict[str, Any] = field(repr=False)  # the body as sent, key redacted

    def flag(self, name: str) -> bool:
        """Whether yes/no field ``name`` was sent as ``"yes"`` (absent counts as no)."""
        return self.flags.get(name) == "yes"

    @property
    def lora_model(self) -> str | None:
        """The ``lora_model`` string as ModelsLab echoes it in ``meta``."""
        return ",".join(name for name, _ in self.loras) or None


@dataclass
class ModelsLabJob:
    """An accepted (and charged) generation."""

    id: int
    request: Text2ImgRequest
    seeds: list[int]
    uuid: str
    urls: list[str]  # one per sample, whether or not the output lists it
    output: list[str]  # what success answers list (fewer than urls for a "partial" fault)
    state: JobState = "processing"
    fault: Fault | None = None
    polls_left: int = 0  # fetches still answered "processing" before the job settles
    fetches: int = 0
    created_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None


@dataclass
class UpscaleJob:
    """An accepted (and charged) super resolution of an upload."""

    id: int
    upload: int
    model_id: str
    scale: int
    state: JobState = "success"
    polls_left: int = 0
    fetches: int = 0


class _Rejected(Exception):
    """Raised by validation with the answer for the first problem found."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer)
        self.answer = answer


def _invalid(name: str, message: str) -> _Rejected:
    return _Rejected({"status": "error", "message": {name: [message]}})


class FakeModelsLab(LoopbackServer):
    def __init__(self, api_key: str = "ml-test-key", service_time: float = 0.0) -> None:
        self.api_key = api_key
        self.service_time = service_time
        self.models: set[str] = {"sdxl"}
        self.loras: set[str] = {"pixel-art-xl"}
        self.requests: list[ModelsLabRequest] = []
        self.jobs: dict[int, ModelsLabJob] = {}
        self.charges: list[int] = []
        self.downloads: list[str] = []
        self.type_violations: list[tuple[str, Any]] = []
        self.faults: deque[Fault] = deque()
        self.fetch_faults: deque[Fault] = deque()
        self.nsfw_seeds: set[int] = set()  # with safety_checker "yes", these images are flagged and blanked
        self.uploads: dict[int, bytes] = {}
        self.upscales: dict[int, UpscaleJob] = {}
        self.upscale_faults: deque[Fault] = deque()
        self.upload_url = ""
        self.upscale_url = ""
        self.base = ""
        self.url = ""
        self.fetch_url = ""
        self._ids = itertools.count(1000)
        self._rng = random.Random()
        self._cond = asyncio.Condition()
        self._closing = asyncio.Event()

    def __repr__(self) -> str:
        return f"<FakeModelsLab {self.url or 'not started'} jobs={len(self.jobs)} charges={len(self.charges)}>"

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v4/dreambooth", self._submit)
        app.router.add_post("/api/v4/dreambooth/fetch", self._fetch)
        app.router.add_post("/api/v4/dreambooth/fetch/{id}", self._fetch)
        app.router.add_post("/api/v3/dreambooth/fetch/{id}", self._fetch)
        app.router.add_get("/generations/{name}", self._download)
        app.router.add_post("/api/v6/base64_to_url", self._upload)
        app.router.add_post("/api/v6/image_editing/super_resolution", self._super_resolution)
        app.router.add_post("/api/v6/image_editing/fetch/{id}", self._fetch_upscale)
        app.router.add_get("/uploads/{id}.png", self._uploaded)
        app.router.add_get("/upscaled/{id}.png", self._upscaled)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        port = await self._serve(app)
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + "/api/v4/dreambooth"
        self.fetch_url = self.url + "/fetch"
        self.upload_url = self.base + "/api/v6/base64_to_url"
        self.upscale_url = self.base + "/api/v6/image_editing/super_resolution"

    async def close(self) -> None:
        self._closing.set()  # wakes hung answers so shutdown does not wait for them
        await super().close()

    # -- driving and queries ----------------------------------------------------------------------

    def inject(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        """Queue a fault for the next submit POST: ``inject(Fault("http", status=503))`` or ``inject(kind=...)``."""
        fault = fault if fault is not None else Fault(**kwargs)
        self.faults.append(fault)
        return fault

    def inject_fetch(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        """Queue a transient failure (``http`` or ``malformed``) for the next fetch POST."""
        fault = fault if fault is not None else Fault(**kwargs)
        if fault.kind not in FETCH_FAULT_KINDS:
            raise ValueError(f"a fetch fault is one of {sorted(FETCH_FAULT_KINDS)}, not {fault.kind!r}")
        self.fetch_faults.append(fault)
        return fault

    def inject_upscale(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        """Queue a fault (``processing``, ``error`` or ``http``) for the next super-resolution POST."""
        fault = fault if fault is not None else Fault(**kwargs)
        if fault.kind not in UPSCALE_FAULT_KINDS:
            raise ValueError(f"an upscale fault is one of {sorted(UPSCALE_FAULT_KINDS)}, not {fault.kind!r}")
        self.upscale_faults.append(fault)
        return fault

    @property
    def upscale_requests(self) -> list[Any]:
        """The bodies (key redacted) of every super-resolution POST, accepted or not."""
        return [r.body for r in self.requests if r.kind == "upscale"]

    @property
    def submits(self) -> list[Any]:
        """The bodies (key redacted) of every submit POST, accepted or not."""
        return [r.body for r in self.requests if r.kind == "submit"]

    @property
    def fetches(self) -> list[ModelsLabRequest]:
        """Every fetch POST, on any of the three routes."""
        return [r for r in self.requests if r.kind == "fetch"]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(predicate), timeout)
            except TimeoutError:
                last = "\n".join(
                    f"  {r.method} {r.path} -> {r.http_status} {r.status} {r.body!r}"[:300] for r in self.requests[-10:]
                )
                raise TimeoutError(f"condition not met within {timeout}s; last requests:\n{last}") from None

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but return at once when the fake is closing (a hung answer must not hold up shutdown)."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    # -- recording --------------------------------------------------------------------------------

    async def _arrive(self, request: web.Request, kind: RequestKind) -> tuple[ModelsLabRequest, Any, str | None]:
        """Record a request on arrival; return the record, the parsed JSON body and a problem with it."""
        body: Any = None
        problem: str | None = None
        if request.method != "GET":
            text = (await request.read()).decode("utf-8", errors="replace")
            body = text
            if request.content_type != "application/json":
                problem = f"Content-Type must be application/json, not {request.content_type!r}"
            else:
                try:
                    body = json.loads(text) if text else None
                except ValueError:
                    problem = "The request body is not valid JSON"
                else:
                    if not isinstance(body, dict):
                        problem = "The request body must be a JSON object"
        record = ModelsLabRequest(kind, request.method, request.path, redact(body), time.monotonic())
        self.requests.append(record)
        await self._notify()
        return record, body, problem

    async def _answer(
        self,
        record: ModelsLabRequest,
        payload: dict[str, Any] | None = None,
        *,
        http_status: int = 200,
        text: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        record.http_status = http_status
        record.status = payload.get("status") if payload is not None else None
        await self._notify()
        if payload is not None:
            return web.json_response(payload, status=http_status, headers=headers)
        return web.Response(text=text or "", status=http_status, content_type="application/json", headers=headers)

    # -- submit -----------------------------------------------------------------------------------

    async def _refused(
        self, record: ModelsLabRequest, body: Any, problem: str | None, fault: Fault | None
    ) -> web.StreamResponse | None:
        """Answer what refuses a charged request before it starts (a fault, a bad body, a wrong key), or None."""
        if fault is not None and fault.kind == "error":
            return await self._answer(record, {"status": "error", self._message_key(fault): fault.message})
        if fault is not None and fault.kind == "http" and fault.status == 429:
            return await self._http_fault(record, fault)
        if problem is not None:
            return await self._answer(record, {"status": "error", "message": problem})
        if body.get("key") != self.api_key:
            return await self._answer(record, self._invalid_key())
        return None

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        record, body, problem = await self._arrive(request, "submit")
        fault = self.faults.popleft() if self.faults else None
        if (refused := await self._refused(record, body, problem, fault)) is not None:
            return refused
        try:
            parsed = self._validate(body)
        except _Rejected as rejected:
            return await self._answer(record, rejected.answer)
        job = self._accept(parsed, fault)
        record.job_id = job.id
        await self._notify()
        return await self._respond_accepted(request, record, job, fault)

    @staticmethod
    def _message_key(fault: Fault) -> str:
        return "messege" if fault.misspelled else "message"

    @staticmethod
    def _invalid_key() -> dict[str, Any]:
        return {"status": "error", "message": "Invalid Api Key", "tip": INVALID_KEY_TIP}

    async def _http_fault(self, record: ModelsLabRequest, fault: Fault) -> web.Response:
        if fault.status == 429:
            retry = fault.retry_after
            payload = {"status": "error", "message": RATE_LIMIT_MESSAGE, "retry_after": 30 if retry is None else retry}
            headers = None if retry is None else {"Retry-After": f"{retry:g}"}
            return await self._answer(record, payload, http_status=429, headers=headers)
        return await self._answer(record, {"status": "error", "message": "Server Error"}, http_status=fault.status)

    def _accept(self, parsed: Text2ImgRequest, fault: Fault | None) -> ModelsLabJob:
        """Create and charge a job: from here on ModelsLab has billed the request."""
        job_id = next(self._ids)
        first = parsed.seed if parsed.seed is not None else self._rng.getrandbits(32)
        name = str(uuid.uuid4())
        urls = [f"{self.base}/generations/{name}-{i}.png" for i in range(parsed.samples)]
        returned = fault.returned if fault is not None and fault.kind == "partial" else parsed.samples
        job = ModelsLabJob(
            id=job_id,
            request=parsed,
            seeds=[first + i for i in range(parsed.samples)],
            uuid=name,
            urls=urls,
            output=urls[:returned],
            fault=fault,
        )
        if fault is not None and fault.kind in ("processing", "failed_after"):
            job.polls_left = fault.polls
        self.jobs[job_id] = job
        self.charges.append(job_id)
        return job

    def _finish(self, job: ModelsLabJob, state: JobState) -> None:
        job.state = state
        job.finished_at = time.monotonic()

    async def _respond_accepted(
        self, request: web.Request, record: ModelsLabRequest, job: ModelsLabJob, fault: Fault | None
    ) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        if kind in ("processing", "failed_after"):
            assert fault is not None
            return await self._answer(record, self._processing_submit(job, fault.eta))
        if kind == "http":
            assert fault is not None
            self._finish(job, "success")  # the job went through; only the gateway's answer failed
            return await self._http_fault(record, fault)
        if kind == "malformed":
            self._finish(job, "success")
            return await self._answer(record, None, text=MALFORMED_BODY)
        if kind == "wrong_shape":
            assert fault is not None and fault.mangle is not None, "a wrong_shape fault needs mangle"
            self._finish(job, "success")
            record.http_status = 200
            await self._notify()
            return web.json_response(fault.mangle(self._success_submit(job)))
        if kind == "trickle":
            assert fault is not None
            self._finish(job, "success")
            record.http_status, record.status = 200, "success"
            await self._notify()
            body = json.dumps(self._success_submit(job)).encode()
            return await trickle(request, body, pieces=fault.pieces, gap=fault.gap)
        await self._sleep(fault.seconds if fault is not None and kind == "hang" else self.service_time)
        self._finish(job, "success")
        return await self._answer(record, self._success_submit(job))

    def _meta(self, job: ModelsLabJob) -> dict[str, Any]:
        req = job.request
        return {
            "prompt": req.prompt,
            "model_id": req.model_id,
            "negative_prompt": req.negative_prompt,
            "W": req.width,
            "H": req.height,
            "seed": job.seeds[0],
            "steps": req.num_inference_steps,
            "n_samples": req.samples,
            "guidance_scale": req.guidance_scale,
            "scheduler": req.scheduler,
            "lora": req.lora_model,
            "lora_strength": ",".join(f"{s:g}" for _, s in req.loras) or None,
            "clip_skip": req.clip_skip,
            "vae": req.vae,
            "safetychecker": req.flags.get("safety_checker", "no"),
        }

    def _flagged(self, job: ModelsLabJob) -> list[bool] | None:
        """Return the safety checker's verdict per image when the job asked for it (`fake.nsfw_seeds`)."""
        if job.request.flags.get("safety_checker") != "yes":
            return None
        return [seed in self.nsfw_seeds for seed in job.seeds[: len(job.output)]]

    def _success(self, job: ModelsLabJob, **extra: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {"status": "success", **extra, "id": job.id, "output": list(job.output)}
        flagged = self._flagged(job)
        if flagged is not None:
            payload["nsfw_content_detected"] = flagged
        return payload

    def _success_submit(self, job: ModelsLabJob) -> dict[str, Any]:
        finished = job.finished_at if job.finished_at is not None else time.monotonic()
        return {**self._success(job, generationTime=round(finished - job.created_at, 4)), "meta": self._meta(job)}

    def _processing_submit(self, job: ModelsLabJob, eta: float) -> dict[str, Any]:
        return {
            "status": "processing",
            "tip": PROCESSING_TIP,
            "eta": eta,
            "messege": "Try to fetch request after seconds estimated",
            "webhook_status": "",
            "fetch_result": f"{self.base}/api/v3/dreambooth/fetch/{job.id}",
            "id": job.id,
            "output": [],
            "meta": self._meta(job),
            "future_links": list(job.output),
        }

    # -- validation -------------------------------------------------------------------------------

    def _validate(self, body: dict[str, Any]) -> Text2ImgRequest:
        """Parse a submit body, raising ``_Rejected`` with the answer to its first problem."""
        for name in body:
            if name not in KNOWN_FIELDS:
                raise _invalid(name, f"The {name} field is not allowed.")
        model_id = self._required_str(body, "model_id")
        prompt = self._required_str(body, "prompt")
        negative_prompt = self._optional_str(body, "negative_prompt")
        width = self._int(body, "width", 128, 1024, multiple_of=8, default=512)
        height = self._int(body, "height", 128, 1024, multiple_of=8, default=512)
        samples = self._int(body, "samples", 1, 4, default=1)
        steps = self._int(body, "num_inference_steps", 1, 50, default=30)
        guidance = self._guidance(body)
        seed = self._seed(body)
        scheduler = body.get("scheduler")
        if scheduler is None:
            scheduler = DEFAULT_SCHEDULER
        elif scheduler not in SCHEDULERS:
            raise _invalid("scheduler", "The scheduler must be one of " + ", ".join(sorted(SCHEDULERS)) + ".")
        flags: dict[str, str] = {}
        for name in YES_NO_FIELDS:
            if name in body and body[name] is not None:
                if body[name] not in ("yes", "no"):
                    raise _invalid(name, f"The {name} must be yes or no.")
                flags[name] = body[name]
        loras = self._loras(body)
        clip_skip = self._optional_int(body, "clip_skip", 1, 8)
        webhook = self._optional_str(body, "webhook")
        track_id = body.get("track_id")
        if track_id is not None and (isinstance(track_id, bool) or not isinstance(track_id, str | int)):
            raise _invalid("track_id", "The track_id must be a string or an integer.")
        embeddings_model = self._optional_str(body, "embeddings_model")
        vae = self._optional_str(body, "vae")
        if model_id not in self.models:
            raise _Rejected({"status": "error", "message": "Model id not found"})
        return Text2ImgRequest(
            model_id=model_id,
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            samples=samples,
            num_inference_steps=steps,
            guidance_scale=guidance,
            seed=seed,
            scheduler=scheduler,
            flags=flags,
            loras=loras,
            clip_skip=clip_skip,
            webhook=webhook,
            track_id=track_id,
            embeddings_model=embeddings_model,
            vae=vae,
            raw=redact(body),
        )

    @staticmethod
    def _required_str(body: dict[str, Any], name: str) -> str:
        value = body.get(name)
        if value is None or value == "":
            raise _invalid(name, f"The {name} field is required.")
        if not isinstance(value, str):
            raise _invalid(name, f"The {name} must be a string.")
        return value

    @staticmethod
    def _optional_str(body: dict[str, Any], name: str) -> str | None:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise _invalid(name, f"The {name} must be a string.")
        return value

    def _as_int(self, name: str, value: Any) -> int:
        """Read a documented string-of-integer field; a JSON number is accepted but recorded."""
        if isinstance(value, str) and _INT_RE.fullmatch(value):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            self.type_violations.append((name, value))
            return value
        if isinstance(value, float) and value.is_integer():
            self.type_violations.append((name, value))
            return int(value)
        raise _invalid(name, f"The {name} must be an integer.")

    def _int(self, body: dict[str, Any], name: str, low: int, high: int, *, multiple_of: int = 1, default: int) -> int:
        number = self._optional_int(body, name, low, high, multiple_of=multiple_of)
        return default if number is None else number

    def _optional_int(
        self, body: dict[str, Any], name: str, low: int, high: int, *, multiple_of: int = 1
    ) -> int | None:
        value = body.get(name)
        if value is None:
            return None
        number = self._as_int(name, value)
        if not low <= number <= high:
            raise _invalid(name, f"The {name} must be between {low} and {high}.")
        if number % multiple_of:
            raise _invalid(name, f"The {name} must be divisible by {multiple_of}.")
        return number

    @staticmethod
    def _number(name: str, value: Any) -> float:
        if isinstance(value, bool):
            raise _invalid(name, f"The {name} must be a number.")
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise _invalid(name, f"The {name} must be a number.") from None
        else:
            raise _invalid(name, f"The {name} must be a number.")
        if not math.isfinite(number):
            raise _invalid(name, f"The {name} must be a number.")
        return number

    def _guidance(self, body: dict[str, Any]) -> float:
        value = body.get("guidance_scale")
        if value is None:
            return 7.5
        number = self._number("guidance_scale", value)
        if not 1 <= number <= 20:
            raise _invalid("guidance_scale", "The guidance_scale must be between 1 and 20.")
        return number

    def _seed(self, body: dict[str, Any]) -> int | None:
        value = body.get("seed")
        if value is None:
            return None
        return self._as_int("seed", value)

    def _loras(self, body: dict[str, Any]) -> list[tuple[str, float]]:
        model = body.get("lora_model")
        strength = body.get("lora_strength")
        if model is not None and not isinstance(model, str):
            raise _invalid("lora_model", "The lora_model must be a string.")
        names = [n.strip() for n in model.split(",")] if model else []
        for name in names:
            if name not in self.loras:
                raise _invalid("lora_model", f"The lora_model {name or '(empty)'} was not found.")
        if strength is None:
            if names:
                raise _invalid("lora_strength", "The lora_strength field is required when lora_model is present.")
            return []
        if isinstance(strength, str):
            parts = [p.strip() for p in strength.split(",")]
        else:
            if isinstance(strength, int | float) and not isinstance(strength, bool):
                self.type_violations.append(("lora_strength", strength))
            parts = [strength]
        values = [self._number("lora_strength", p) for p in parts]
        if any(not 0.1 <= v <= 1 for v in values):
            raise _invalid("lora_strength", "The lora_strength must be between 0.1 and 1.")
        if len(values) != len(names):
            raise _invalid("lora_strength", "The lora_strength must have one value per lora_model.")
        return list(zip(names, values, strict=True))

    # -- fetch ------------------------------------------------------------------------------------

    async def _fetch(self, request: web.Request) -> web.Response:
        record, body, problem = await self._arrive(request, "fetch")
        fault = self.fetch_faults.popleft() if self.fetch_faults else None
        if fault is not None and fault.kind == "http":
            return await self._http_fault(record, fault)
        if fault is not None and fault.kind == "malformed":
            return await self._answer(record, None, text=MALFORMED_BODY)
        if problem is not None:
            return await self._answer(record, {"status": "error", "message": problem})
        if body.get("key") != self.api_key:
            return await self._answer(record, self._invalid_key())
        raw_id = request.match_info.get("id", body.get("request_id"))
        if raw_id is None or raw_id == "":
            return await self._answer(
                record, {"status": "error", "message": {"request_id": ["The request_id field is required."]}}
            )
        job = None
        if isinstance(raw_id, int | str) and not isinstance(raw_id, bool) and _INT_RE.fullmatch(str(raw_id)):
            job = self.jobs.get(int(raw_id))
        if job is None:
            return await self._answer(record, {"status": "error", "messege": "Request not found"})
        record.job_id = job.id
        job.fetches += 1
        if job.state == "processing" and job.fault is not None and job.fault.kind in ("processing", "failed_after"):
            if job.polls_left > 0:
                job.polls_left -= 1
            else:
                self._finish(job, "failed" if job.fault.kind == "failed_after" else "success")
        if job.state == "processing":
            payload: dict[str, Any] = {
                "status": "processing",
                "messege": "try again later.",
                "output": "",
                "tip": PROCESSING_TIP,
                "id": job.id,
            }
        elif job.state == "failed":
            payload = {"status": "failed", "id": job.id, "message": "Failed, Try Again", "output": ""}
        else:
            payload = self._success(job)
        return await self._answer(record, payload)

    # -- images and the rest ----------------------------------------------------------------------

    async def _download(self, request: web.Request) -> web.Response:
        record, _, _ = await self._arrive(request, "download")
        match = re.fullmatch(r"(?P<uuid>.+)-(?P<index>[0-9]+)\.png", request.match_info["name"])
        job = None
        index = -1
        if match is not None:
            index = int(match["index"])
            job = next((j for j in self.jobs.values() if j.uuid == match["uuid"]), None)
        url = self.base + request.path
        if (
            job is None
            or job.state != "success"
            or url not in job.output
            or (job.fault is not None and job.fault.kind == "url_404")
        ):
            record.http_status = 404
            await self._notify()
            return web.Response(status=404, text="Not Found")
        seed = job.seeds[index]
        if job.request.flags.get("safety_checker") == "yes" and seed in self.nsfw_seeds:
            # ModelsLab's documented behaviour: a flagged image is replaced by a blank one.
            data = _blank_png(job.request.width, job.request.height)
        else:
            data = png_for_seed(seed, job.request.width, job.request.height)
        record.job_id = job.id
        record.http_status = 200
        self.downloads.append(url)
        await self._notify()
        return web.Response(body=data, content_type="image/png")

    # -- upscale: base64_to_url, super_resolution, their fetch and links -------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        record, body, problem = await self._arrive(request, "upload")
        if problem is not None:
            return await self._answer(record, {"status": "error", "message": problem})
        if body.get("key") != self.api_key:
            return await self._answer(record, self._invalid_key())
        unknown = sorted(set(body) - {"key", "base64_string"})
        text = body.get("base64_string")
        if unknown:
            return await self._answer(record, _invalid(unknown[0], f"The {unknown[0]} field is not allowed.").answer)
        if not isinstance(text, str) or not text:
            return await self._answer(record, _invalid("base64_string", "The base64_string field is required.").answer)
        if len(text) > UPLOAD_LIMIT:
            return await self._answer(record, {"status": "error", "message": "The image may not be more than 5 MB."})
        match = _DATA_URI_RE.fullmatch(text)
        try:
            data = base64.b64decode(match["data"], validate=True) if match else b""
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()
        except (ValueError, OSError):
            return await self._answer(record, {"status": "error", "message": "Invalid base64 image."})
        upload_id = next(self._ids)
        self.uploads[upload_id] = data
        return await self._answer(
            record, {"status": "success", "id": upload_id, "output": [f"{self.base}/uploads/{upload_id}.png"]}
        )

    async def _super_resolution(self, request: web.Request) -> web.Response:
        record, body, problem = await self._arrive(request, "upscale")
        fault = self.upscale_faults.popleft() if self.upscale_faults else None
        if (refused := await self._refused(record, body, problem, fault)) is not None:
            return refused
        try:
            upload, model_id, scale = self._validate_upscale(body)
        except _Rejected as rejected:
            return await self._answer(record, rejected.answer)
        job = UpscaleJob(next(self._ids), upload, model_id, scale)
        self.upscales[job.id] = job
        self.charges.append(job.id)
        record.job_id = job.id
        if fault is not None and fault.kind == "http":
            return await self._http_fault(record, fault)
        if fault is not None and fault.kind == "processing":
            job.state, job.polls_left = "processing", fault.polls
            payload: dict[str, Any] = {
                "status": "processing",
                "id": job.id,
                "eta": fault.eta,
                "messege": "Try to fetch request after seconds estimated",
                "fetch_result": f"{self.base}/api/v6/image_editing/fetch/{job.id}",
                "output": [],
                "future_links": [self._upscaled_url(job)],
            }
            return await self._answer(record, payload)
        await self._sleep(self.service_time)
        return await self._answer(record, self._upscale_success(job))

    def _validate_upscale(self, body: dict[str, Any]) -> tuple[int, str, int]:
        for name in body:
            if name not in UPSCALE_FIELDS:
                raise _invalid(name, f"The {name} field is not allowed.")
        init_image = self._required_str(body, "init_image")
        model_id = self._required_str(body, "model_id")
        scale = body.get("scale")
        if isinstance(scale, bool) or not isinstance(scale, int) or not 2 <= scale <= 4:
            raise _invalid("scale", "The scale must be an integer between 2 and 4.")
        if not isinstance(body.get("face_enhance", False), bool):
            raise _invalid("face_enhance", "The face_enhance field must be true or false.")
        for name in ("webhook", "track_id"):
            self._optional_str(body, name)
        if model_id not in UPSCALE_MODELS:
            raise _Rejected({"status": "error", "message": "Model id not found"})
        match = re.fullmatch(re.escape(self.base) + r"/uploads/(?P<id>[0-9]+)\.png", init_image)
        if match is None or int(match["id"]) not in self.uploads:
            raise _Rejected({"status": "error", "message": "Could not download the init_image."})
        return int(match["id"]), model_id, scale

    def _upscaled_url(self, job: UpscaleJob) -> str:
        return f"{self.base}/upscaled/{job.id}.png"

    def _upscale_success(self, job: UpscaleJob) -> dict[str, Any]:
        return {"status": "success", "generationTime": 0.5, "id": job.id, "output": [self._upscaled_url(job)]}

    async def _fetch_upscale(self, request: web.Request) -> web.Response:
        record, body, problem = await self._arrive(request, "fetch")
        if problem is not None:
            return await self._answer(record, {"status": "error", "message": problem})
        if body.get("key") != self.api_key:
            return await self._answer(record, self._invalid_key())
        raw_id = request.match_info["id"]
        job = self.upscales.get(int(raw_id)) if _INT_RE.fullmatch(raw_id) else None
        if job is None:
            return await self._answer(record, {"status": "error", "messege": "Request not found"})
        record.job_id = job.id
        job.fetches += 1
        if job.state == "processing":
            if job.polls_left > 0:
                job.polls_left -= 1
                return await self._answer(record, {"status": "processing", "id": job.id, "output": []})
            job.state = "success"
        return await self._answer(record, self._upscale_success(job))

    async def _uploaded(self, request: web.Request) -> web.Response:
        record, _, _ = await self._arrive(request, "download")
        raw_id = request.match_info["id"]
        data = self.uploads.get(int(raw_id)) if _INT_RE.fullmatch(raw_id) else None
        record.http_status = 200 if data is not None else 404
        await self._notify()
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="image/png")

    async def _upscaled(self, request: web.Request) -> web.Response:
        record, _, _ = await self._arrive(request, "download")
        raw_id = request.match_info["id"]
        job = self.upscales.get(int(raw_id)) if _INT_RE.fullmatch(raw_id) else None
        if job is None or job.state != "success":
            record.http_status = 404
            await self._notify()
            return web.Response(status=404, text="Not Found")
        data = await asyncio.to_thread(_enlarged, self.uploads[job.upload], job.scale)
        record.job_id, record.http_status = job.id, 200
        self.downloads.append(self.base + request.path)
        await self._notify()
        return web.Response(body=data, content_type="image/png")

    async def _unknown(self, request: web.Request) -> web.Response:
        record, _, _ = await self._arrive(request, "other")
        return await self._answer(record, {"status": "error", "message": "Not Found"}, http_status=404)

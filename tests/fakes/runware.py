"""A loopback fake of Runware's REST image-inference API, for client tests and benchmarks.

What it fakes
-------------
``FakeRunware`` is a real aiohttp server on 127.0.0.1 (random free port) that speaks the subset of
https://runware.ai/docs/image-inference/api-reference, /docs/platform/task-polling and
/docs/platform/errors that an image client needs:

* ``POST /v1`` (``fake.url``) takes ``Authorization: Bearer <key>`` and a JSON array of tasks. A wrong
  or missing key answers 401 ``invalidApiKey``; a body that is not a non-empty array of objects
  answers 400 ``invalidPayload``. Every problem answers ``{"errors": [item]}`` with the item shaped
  like Runware's (``code``, ``message``, ``parameter``, ``taskType``, ``taskUUID``).
* ``imageInference`` tasks are validated the way the docs describe (see ``INFERENCE_FIELDS`` and
  ``_inference_problem``); the first problem in the POST answers 400 ``invalidParameter`` (or
  ``unsupportedParameter`` for an unknown field) and nothing in that POST is accepted. JSON ``null``
  and booleans never pass for a typed field, so a sloppy client is caught here, not in production.
  An accepted task is charged once (``fake.charges``: ``(taskUUID, 0.0013 × numberResults)``) and
  recorded in ``fake.tasks``; a later POST with the same taskUUID answers 400 ``conflictTaskUUID``
  and is not charged, which is what makes a retry with the same UUID safe.
* Images are real: one solid-colour ``width``×``height`` picture per result, its colour taken from
  sha256 of its seed (``seed + i`` for result ``i``), encoded as PNG/JPEG/WEBP. They come back as a
  URL on this server (``GET /image/{imageUUID}.{ext}``, recorded in ``fake.downloads``), base64 or
  a data URI, per ``outputType``.
* ``deliveryMethod: "sync"`` (default) answers after ``fake.service_time`` seconds with the results;
  ``"async"`` acknowledges at once and the results are ready ``service_time`` after acceptance.
  ``getResponse`` tasks (alone or in the same POST, never charged) report each generation as
  ``status: "processing"`` / ``"success"``, or in ``errors`` as ``timeoutProvider`` when the fake
  lost it; an unknown UUID answers ``taskNotFound``.
* Image-to-image and inpainting: ``seedImage`` and ``maskImage`` take what Runware's docs list for
  an input image (a data URI ``data:image/<png|jpeg|webp>;base64,...``, bare base64, a UUID v4 of a
  stored image, or a URL); data that does not decode to an image answers ``invalidParameter``, and
  ``maskImage`` needs ``seedImage``. ``strength`` is a number from 0 to 1 (default 0.8 with a
  ``seedImage``). The decoded bytes land on the task (``RunwareTask.seed_image``/``mask_image``), and
  ``RunwareTask.steps_run`` is what the fake runs: ``int(steps × strength)``, as diffusers truncates;
  Runware documents the product for 40 × 0.5 only, so a client that relies on any rounding is caught.
* ``promptWeighting`` is ``compel`` or ``sdEmbeds`` (A1111's ``(words:1.3)``), as the API reference lists.
* Outpainting: ``outpaint`` is an object of ``top``, ``right``, ``bottom`` and ``left`` (pixels,
  multiples of 64, default 0) and ``blur`` (0–32), on a ``seedImage`` and without a ``maskImage``;
  ``width``×``height`` must be the seedImage's size extended by the sides.
* ControlNet: ``controlNet`` is an array of objects as the SDK's text_to_image.md lists them (and
  its ``IControlNetGeneral``): ``model`` (an AIR id, required), ``guideImage`` (required, the same
  input forms as ``seedImage``; a UUID must name an image the fake keeps), ``weight`` (a number from
  0 to 1), ``startStep``/``endStep``
  (integers from 1 to ``steps``, start not after end) or ``startStepPercentage``/``endStepPercentage``
  (integers from 0 to 100; never a step and a percentage for the same end, as the SDK refuses),
  ``controlMode`` (``balanced``, ``prompt`` or ``controlnet``); any other key is refused. The decoded
  guides land on the task (``RunwareTask.guide_images``), and ``RunwareTask.controlnet_steps`` says on
  which of the steps that run each one acts: steps are numbered over the whole ``steps`` sent, 1-based
  and inclusive, and from a seedImage the last ``steps_run`` of them run.
* IP-Adapters: ``ipAdapters`` is an array of objects as the SDK's ``IIpAdapter`` has them, of the
  fields sent here: ``model`` (an AIR id) and ``guideImage`` (required, as a controlNet's), ``weight``
  (0 to 1); any other key is refused.
* ``imageUpscale`` tasks (https://runware.ai/docs/image-editing/upscaling; the SDK's ``IImageUpscale``):
  ``inputImage`` (required, the same input forms as ``seedImage``; a UUID must name an image this fake
  made, and a URL is refused, since the fake fetches nothing) and ``upscaleFactor`` (required, the
  integer 2, 3 or 4), plus ``outputType``, ``outputFormat``, ``outputQuality``, ``includeCost``,
  ``deliveryMethod`` and ``safety``; anything else is ``unsupportedParameter`` (see ``UPSCALE_FIELDS``).
  The result is the input itself, Lanczos-resized by the factor, charged ``COST_PER_UPSCALE`` once,
  shaped like the docs' answer (``imageUUID``, ``inputImageUUID``, the image, ``cost``; no ``seed``).
  The decoded input lands on the task (``RunwareTask.input_image``). Faults, retries,
  ``conflictTaskUUID`` and ``getResponse`` work as for ``imageInference``.
* ``imageUpload`` tasks (https://runware.ai/docs/utilities/image-upload; the SDK's
  utilities_image_upload.md): ``image`` (required, a data URI or bare base64 of an image; a URL is
  refused, since the fake fetches nothing). Never charged. The answer is ``imageUUID`` only (the
  current docs' answer; the SDK's older one adds an ``imageURL`` a client must not need). The bytes
  land in ``fake.uploads`` by that UUID, and any task may name the image by it (``guideImage``,
  ``inputImage``); a UUID the fake never gave is refused with ``invalidParameter``.
* ``imageControlNetPreProcess`` tasks (https://runware.ai/docs/en/image-editing/controlnet-tools;
  the SDK's controlnets.md): ``inputImage`` (required: the UUID of an uploaded image, or data),
  ``preProcessorType`` (required, one of ``PREPROCESSOR_TYPES``), ``width``/``height`` (optional
  positive integers: the map's size), ``lowThresholdCanny``/``highThresholdCanny``,
  ``includeHandsAndFaceOpenPose``, ``outputType``, ``outputFormat``, ``includeCost``; anything else
  is ``unsupportedParameter``. The map is made of the input's pixels (greyscale, its edges, or its
  inverse for ``depth``) at the size asked, stored under a fresh ``guideImageUUID`` that later
  tasks may name, charged ``COST_PER_PREPROCESS`` and recorded in ``fake.preprocessed``; the answer
  has ``guideImageUUID``, ``inputImageUUID``, the map per ``outputType`` (``guideImageURL``,
  ``guideImageBase64Data`` or ``guideImageDataURI``) and ``cost``.
* ``imageCaption`` tasks (https://runware.ai/docs/en/utilities/image-to-text; the SDK's
  ``IImageCaption`` and ``IImageToText``), in a POST of their own: ``inputImage`` (required, the same
  input forms as an upscale's: data, or the UUID of an image the fake keeps; no URL) and
  ``includeCost``; anything else is ``unsupportedParameter`` (see ``CAPTION_FIELDS``; newer docs add
  ``model``, ``prompt`` and more, which this client does not send). The caption is computed from the
  pixels received (`caption_image`: "a 64×64 picture, mostly red"), so a test can tell which image
  travelled. Each is charged ``COST_PER_CAPTION`` and recorded in ``fake.captions`` by taskUUID; the
  answer has ``taskType``, ``taskUUID``, ``text`` and, with ``includeCost``, ``cost``. A taskUUID
  used before answers ``conflictTaskUUID``.
* With ``safety: {"checkContent": true}`` (or the older ``checkNSFW``) each result carries
  ``NSFWContent``: true for the seeds in ``fake.nsfw_seeds`` (an upscale: for an input whose
  sha256 is in ``fake.nsfw_inputs``), else false.
* Every request lands in ``fake.requests`` (``RunwareRequest``: the API key is reduced to an
  ``authorized`` flag so it never appears in a repr). ``fake.max_concurrent`` is the most inference
  POSTs in flight at once and ``fake.connections`` the number of distinct client TCP connections,
  so a benchmark can show both fan-out and connection reuse.

Faults
------
``fake.inject(Fault(kind=...))`` queues faults in FIFO order; the head of the queue is taken by the
next POST that carries an ``imageInference``, ``imageUpscale`` or ``imageCaption`` task (``getResponse``-only,
upload and preprocessing POSTs never take one).
Faults that refuse the POST (``status``, ``hang_before``, ``error400``, ``error200``) are taken by the
next such POST whatever it holds; faults that act on an accepted task (``hang_after``, ``malformed``,
``wrong_shape``, ``trickle``, ``partial``, ``url_404``, ``processing``) wait at the head of the queue
until a POST is accepted, so a rejected or conflicting retry does not use them up. A caption POST
leaves the faults that only images have (``partial``, ``url_404``, ``processing``) at the head for the
next inference POST. See ``Fault`` for each kind.

Driving it
----------
::

    async with FakeRunware() as fake:
        fake.inject(Fault("status", status=429, retry_after=1))
        async with httpx.AsyncClient() as http:
            resp = await http.post(fake.url, json=[task], headers={"Authorization": f"Bearer {fake.api_key}"})
        await fake.wait_for(lambda: len(fake.charges) == 1)

``wait_for(predicate)`` re-checks after every request that arrives or is answered and raises
``TimeoutError`` listing the last requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from aiohttp import web
from PIL import Image

from tests.fakes._loopback import LoopbackServer, trickle

DOCS_URL = "https://runware.ai/docs/image-inference/api-reference"
COST_PER_IMAGE = 0.0013  # USD, what the fake charges per generated image
COST_PER_UPSCALE = 0.002  # USD, what the fake charges per upscale
COST_PER_PREPROCESS = 0.0006  # USD, what the fake charges per ControlNet preprocessing (the SDK doc's example)
# USD per caption: the docs' example answers 0, but a cost that is not 0 shows that a client passes it on.
COST_PER_CAPTION = 0.0003
# Tasks that work on images the fake stores: uploads (free) and ControlNet preprocessing.
UTILITY_TASKS = ("imageUpload", "imageControlNetPreProcess")
# The ControlNet tools doc's preProcessorType list.
PREPROCESSOR_TYPES = (
    "canny",
    "depth",
    "mlsd",
    "normalbae",
    "openpose",
    "tile",
    "seg",
    "lineart",
    "lineart_anime",
    "shuffle",
    "scribble",
    "softedge",
)
# The task types that run and are charged; every other type but getResponse is refused.
CHARGED_TASKS = ("imageInference", "imageUpscale")
MAX_SEED = 9223372036854775807
AIR_RE = re.compile(r"^[a-z0-9]+:[0-9]+@[0-9]+$")
SCHEDULERS = frozenset(
    {
        "DPM++ 2M Karras",
        "DPMSolverMultistepScheduler",
        "DPM++ 2M SDE Karras",
        "Euler",
        "Euler a",
        "UniPC",
        "DDIMScheduler",
        "Heun",
        "LCMScheduler",
        "Default",
    }
)
OUTPUT_TYPES = ("URL", "base64Data", "dataURI")
# outputFormat -> (PIL format, file extension, content type)
OUTPUT_FORMATS = {
    "PNG": ("PNG", "png", "image/png"),
    "JPG": ("JPEG", "jpg", "image/jpeg"),
    "WEBP": ("WEBP", "webp", "image/webp"),
}
INFERENCE_FIELDS = frozenset(
    {
        "taskType",
        "taskUUID",
        "positivePrompt",
        "negativePrompt",
        "model",
        "width",
        "height",
        "steps",
        "CFGScale",
        "scheduler",
        "seed",
        "numberResults",
        "outputType",
        "outputFormat",
        "outputQuality",
        "clipSkip",
        "vae",
        "refiner",
        "lora",
        "embeddings",
        "includeCost",
        "deliveryMethod",
        "checkNSFW",
        "safety",
        "seedImage",
        "maskImage",
        "strength",
        "controlNet",
        "ipAdapters",
        "outpaint",
        "promptWeighting",
    }
)
# The prompt-weighting syntaxes of the API reference: compel's, or A1111's (sdEmbeds).
PROMPT_WEIGHTINGS = ("compel", "sdEmbeds")
OUTPAINT_KEYS = ("top", "right", "bottom", "left", "blur")
CONTROL_MODES = ("balanced", "prompt", "controlnet")
UPSCALE_FIELDS = frozenset(
    {
        "taskType",
        "taskUUID",
        "inputImage",
        "upscaleFactor",
        "outputType",
        "outputFormat",
        "outputQuality",
        "includeCost",
        "deliveryMethod",
        "safety",
    }
)
DATA_URI_RE = re.compile(r"^data:image/(png|jpeg|webp);base64,(.*)$", re.DOTALL)
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE)

FaultKind = Literal[
    "status",
    "hang_before",
    "hang_after",
    "malformed",
    "wrong_shape",
    "trickle",
    "partial",
    "url_404",
    "processing",
    "error400",
    "error200",
]
REFUSING_FAULTS = frozenset({"status", "hang_before", "error400", "error200"})
# Faults that act on a task's images or its polls: a caption has neither, so a caption POST leaves them queued.
IMAGE_FAULTS = frozenset({"partial", "url_404", "processing"})
STATUS_CODES = {
    429: ("rateLimitExceeded", "Too many requests. Please slow down."),
    402: ("insufficientCredits", "Insufficient credits to process the request."),
    403: ("forbidden", "Access to this resource is forbidden."),
    408: ("requestTimeout", "The request timed out."),
}
UNAVAILABLE = ("serviceUnavailable", "The service is temporarily unavailable. Please try again later.")


@dataclass
class Fault:
    """One misbehaviour for the next inference or caption POST; which fields matter depends on ``kind``.

    * ``status``: answer HTTP ``status`` without accepting the task (codes: 429 ``rateLimitExceeded``,
      5xx ``serviceUnavailable``, 402 ``insufficientCredits``, 403 ``forbidden``, 408
      ``requestTimeout``; ``code``/``message`` override), with ``Retry-After: retry_after`` if given.
    * ``hang_before``: sleep ``seconds``, then answer 503 ``serviceUnavailable``; nothing accepted.
    * ``hang_after``: accept and charge, then sleep ``seconds`` before the normal answer, so a
      client with a shorter timeout gives up on a task that exists.
    * ``malformed``: accept and charge, then answer 200 with the invalid JSON ``{"data": [``.
    * ``wrong_shape``: accept and charge, then answer 200 with ``mangle(answer)``: valid JSON of
      another shape than the answer Runware would give (``answer`` is that answer's payload).
    * ``trickle``: accept and charge, then send the normal answer in ``pieces`` writes ``seconds``
      apart (see ``tests.fakes._loopback.trickle``).
    * ``partial``: accept and charge every result, but the sync answer holds only the first
      ``returned``; getResponse has the rest, or reports them as ``timeoutProvider`` when ``lost``.
    * ``url_404``: accept normally, but the task's image URLs answer 404.
    * ``processing``: the first ``polls`` getResponse polls of the task answer ``processing``.
    * ``error400``: answer 400 ``invalidParameter`` (or ``code``) naming ``parameter`` with ``message``.
    * ``error200``: the same error item, but in a 200 answer: ``{"errors": [item]}``, nothing accepted.
    """

    kind: FaultKind
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0
    returned: int = 0
    lost: bool = False
    polls: int = 0
    parameter: str = "positivePrompt"
    message: str | None = None
    code: str | None = None
    pieces: int = 20
    mangle: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {self.kind!r}")

    def refuses(self) -> bool:
        """Whether the fault answers without accepting the task (so any inference or caption POST takes it)."""
        return self.kind in REFUSING_FAULTS


@dataclass
class RunwareRequest:
    """One HTTP request the fake received; ``authorized`` stands in for the Authorization header."""

    method: str
    path: str
    headers: dict[str, str]
    authorized: bool
    body: Any
    at: float
    status: int | None = None  # None while the fake has not answered yet
    answered_at: float | None = None

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """The task objects of a ``POST /v1`` body (empty for anything else)."""
        if not isinstance(self.body, list):
            return []
        return [t for t in self.body if isinstance(t, dict)]


@dataclass
class RunwareImage:
    """One generated result: its bytes stay here so URL downloads and base64 answers agree."""

    image_uuid: str
    index: int
    seed: int | None  # None for an upscale: Runware's answer has no seed
    data: bytes
    ext: str
    content_type: str
    lost: bool = False  # a generation the fake decided to fail (a lost ``partial``)


@dataclass
class RunwareTask:
    """An accepted imageInference or imageUpscale task; ``posts`` counts every POST that carried its UUID."""

    task_uuid: str
    request: dict[str, Any]
    cost: float
    accepted_at: float
    ready_at: float
    posts: int = 1
    polls: int = 0
    images: list[RunwareImage] = field(default_factory=list)
    generated: bool = False
    returned: int | None = None  # how many results the sync answer holds (None: all)
    processing_left: int = 0
    url_404: bool = False
    fault: Fault | None = None
    seed_image: bytes | None = None  # the decoded seedImage, when it was sent as data
    mask_image: bytes | None = None  # the decoded maskImage, likewise
    input_image: bytes | None = None  # the decoded inputImage of an upscale (or the UUID's image)
    guide_images: list[bytes | None] = field(default_factory=list)  # each guideImage: sent as data, or the UUID's

    @property
    def task_type(self) -> str:
        return str(self.request["taskType"])

    @property
    def delivery(self) -> str:
        return self.request.get("deliveryMethod", "sync")

    @property
    def steps_run(self) -> int:
        """The denoising steps the fake runs: all of them, or ``int(steps × strength)`` from a seedImage."""
        steps = int(self.request.get("steps", 20))
        if "seedImage" not in self.request:
            return steps
        return int(steps * float(self.request.get("strength", 0.8)))

    @property
    def controlnet_steps(self) -> list[list[int]]:
        """Each ControlNet's steps, 1-based among the steps that run (Runware numbers them over all ``steps``)."""
        steps = int(self.request.get("steps", 20))
        skipped = steps - self.steps_run
        acted = []
        for entry in self.request.get("controlNet", []):
            start = entry.get("startStep", 1)
            end = entry.get("endStep", steps)
            acted.append([step - skipped for step in range(start, end + 1) if step > skipped])
        return acted


def error_item(
    code: str,
    message: str,
    parameter: str | None = None,
    task_type: str | None = None,
    task_uuid: str | None = None,
    *,
    documentation: bool = False,
) -> dict[str, Any]:
    """Build one entry of Runware's ``errors`` array."""
    item: dict[str, Any] = {
        "code": code,
        "message": message,
        "parameter": parameter,
        "taskType": task_type,
        "taskUUID": task_uuid,
    }
    if documentation:
        item["documentation"] = DOCS_URL
    return item


def upscale_image(data: bytes, factor: int, output_format: str) -> bytes:
    """Return an input image `factor` times larger (Lanczos), encoded in the output format."""
    with Image.open(io.BytesIO(data)) as opened:
        larger = opened.convert("RGB").resize((opened.width * factor, opened.height * factor), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    larger.save(buffer, format=OUTPUT_FORMATS[output_format][0])
    return buffer.getvalue()


def render_image(seed: int, width: int, height: int, output_format: str) -> bytes:
    """Encode a solid-colour picture whose colour depends only on the seed, so seeds are checkable."""
    colour = tuple(hashlib.sha256(f"{seed}".encode()).digest()[:3])
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=OUTPUT_FORMATS[output_format][0])
    return buffer.getvalue()


# -- validation -------------------------------------------------------------------------------------


def _int_range(lo: int, hi: int, multiple: int = 1) -> Callable[[str, object], str | None]:
    def check(name: str, value: object) -> str | None:
        # JSON booleans arrive as Python bools, which are ints: refuse them explicitly.
        if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi and value % multiple == 0:
            return None
        extra = f" and divisible by {multiple}" if multiple > 1 else ""
        return f"Invalid value for {name} parameter. It must be an integer between {lo} and {hi}{extra}."

    return check


def _number_range(lo: float, hi: float) -> Callable[[str, object], str | None]:
    def check(name: str, value: object) -> str | None:
        if isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi:
            return None
        return f"Invalid value for {name} parameter. It must be a number between {lo} and {hi}."

    return check


def _choice_int(options: Iterable[int]) -> Callable[[str, object], str | None]:
    allowed = sorted(options)

    def check(name: str, value: object) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and value in allowed:
            return None
        return f"Invalid value for {name} parameter. It must be one of: {', '.join(map(str, allowed))}."

    return check


def _text(name: str, value: object) -> str | None:
    if isinstance(value, str) and 2 <= len(value) <= 3000:
        return None
    return f"Invalid value for {name} parameter. It must be a string between 2 and 3000 characters."


def _air(name: str, value: object) -> str | None:
    if isinstance(value, str) and AIR_RE.match(value):
        return None
    return f"Invalid value for {name} parameter. It must be an AIR identifier like 'civitai:101055@128078'."


def _choice(options: Iterable[str]) -> Callable[[str, object], str | None]:
    allowed = sorted(options)

    def check(name: str, value: object) -> str | None:
        if isinstance(value, str) and value in allowed:
            return None
        return f"Invalid value for {name} parameter. It must be one of: {', '.join(allowed)}."

    return check


def decode_image(value: str) -> bytes | None:
    """Return the bytes of an image given as a data URI or bare base64, None for a UUID or a URL."""
    if UUID4_RE.match(value) or value.startswith(("https://", "http://")):
        return None
    match = DATA_URI_RE.match(value)
    return base64.b64decode(match[2] if match else value, validate=True)


def _image_input(name: str, value: object) -> str | None:
    message = (
        f"Invalid value for {name} parameter. It must be a UUID v4 of an uploaded or generated image,"
        " a data URI, a base64 image or a URL of a PNG, JPG or WEBP image."
    )
    if not isinstance(value, str):
        return message
    try:
        data = decode_image(value)
        if data is not None:
            with Image.open(io.BytesIO(data)) as opened:
                opened.verify()
    except Exception:
        return message
    return None


def _bool(name: str, value: object) -> str | None:
    return None if isinstance(value, bool) else f"Invalid value for {name} parameter. It must be a boolean."


# (field, check, required) in the order the fake reports the first problem.
SCALAR_CHECKS: list[tuple[str, Callable[[str, object], str | None], bool]] = [
    ("positivePrompt", _text, True),
    ("negativePrompt", _text, False),
    ("model", _air, True),
    ("width", _int_range(128, 2048, 64), True),
    ("height", _int_range(128, 2048, 64), True),
    ("steps", _int_range(1, 100), False),
    ("CFGScale", _number_range(0, 50), False),
    ("scheduler", _choice(SCHEDULERS), False),
    ("seed", _int_range(1, MAX_SEED), False),
    ("numberResults", _int_range(1, 20), False),
    ("outputType", _choice(OUTPUT_TYPES), False),
    ("outputFormat", _choice(OUTPUT_FORMATS), False),
    ("outputQuality", _int_range(20, 99), False),
    ("clipSkip", _int_range(0, 2), False),
    ("promptWeighting", _choice(PROMPT_WEIGHTINGS), False),
    ("vae", _air, False),
    ("includeCost", _bool, False),
    ("checkNSFW", _bool, False),
    ("deliveryMethod", _choice(("sync", "async")), False),
    ("seedImage", _image_input, False),
    ("maskImage", _image_input, False),
    ("strength", _number_range(0, 1), False),
]


def _refiner_problem(refiner: object, steps: int) -> tuple[str, str] | None:
    if not isinstance(refiner, dict):
        return "refiner", "Invalid value for refiner parameter. It must be an object."
    for key in refiner:
        if key not in ("model", "startStep", "startStepPercentage"):
            return f"refiner.{key}", f"Unsupported parameter: refiner.{key}."
    if "model" not in refiner:
        return "refiner.model", "Missing required parameter: refiner.model."
    if message := _air("refiner.model", refiner["model"]):
        return "refiner.model", message
    if ("startStep" in refiner) == ("startStepPercentage" in refiner):
        return "refiner.startStep", "Exactly one of refiner.startStep and refiner.startStepPercentage is required."
    if "startStep" in refiner and (message := _int_range(2, steps)("refiner.startStep", refiner["startStep"])):
        return "refiner.startStep", message
    if "startStepPercentage" in refiner:
        name = "refiner.startStepPercentage"
        if message := _int_range(1, 99)(name, refiner["startStepPercentage"]):
            return name, message
    return None


def _adapters_problem(name: str, value: object) -> tuple[str, str] | None:
    """Check a ``lora`` / ``embeddings`` list: objects with an AIR ``model`` and a ``weight`` in −4..4."""
    if not isinstance(value, list):
        return name, f"Invalid value for {name} parameter. It must be an array of objects."
    for i, entry in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(entry, dict):
            return where, f"Invalid value for {where} parameter. It must be an object."
        for key in entry:
            if key not in ("model", "weight"):
                return f"{where}.{key}", f"Unsupported parameter: {where}.{key}."
        if "model" not in entry:
            return f"{where}.model", f"Missing required parameter: {where}.model."
        if message := _air(f"{where}.model", entry["model"]):
            return f"{where}.model", message
        if "weight" in entry and (message := _number_range(-4, 4)(f"{where}.weight", entry["weight"])):
            return f"{where}.weight", message
    return None


def _objects_problem(
    name: str, value: object, checks: tuple[tuple[str, Any], ...], required: tuple[str, ...]
) -> tuple[str, str] | None:
    """Check an array of objects: only the keys `checks` names, the `required` ones present, each value checked."""
    if not isinstance(value, list) or not value:
        return name, f"Invalid value for {name} parameter. It must be a non-empty array of objects."
    keys = {key for key, _ in checks}
    for i, entry in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(entry, dict):
            return where, f"Invalid value for {where} parameter. It must be an object."
        for key in entry:
            if key not in keys:
                return f"{where}.{key}", f"Unsupported parameter: {where}.{key}."
        for key, check in checks:
            if key not in entry:
                if key in required:
                    return f"{where}.{key}", f"Missing required parameter: {where}.{key}."
                continue
            if message := check(f"{where}.{key}", entry[key]):
                return f"{where}.{key}", message
    return None


def _controlnet_problem(value: object, steps: int) -> tuple[str, str] | None:
    """Check a ``controlNet`` array the way the SDK's text_to_image.md and ``IControlNetGeneral`` describe it."""
    checks = (
        ("model", _air),
        ("guideImage", _image_input),
        ("weight", _number_range(0, 1)),
        ("startStep", _int_range(1, steps)),
        ("endStep", _int_range(1, steps)),
        ("startStepPercentage", _int_range(0, 100)),
        ("endStepPercentage", _int_range(0, 100)),
        ("controlMode", _choice(CONTROL_MODES)),
    )
    if problem := _objects_problem("controlNet", value, checks, ("model", "guideImage")):
        return problem
    assert isinstance(value, list)
    for i, entry in enumerate(value):
        where = f"controlNet[{i}]"
        for step, percentage in (("startStep", "startStepPercentage"), ("endStep", "endStepPercentage")):
            if step in entry and percentage in entry:
                return f"{where}.{step}", f"Only one of {where}.{step} and {where}.{percentage} may be given."
        if entry.get("startStep", 1) > entry.get("endStep", steps):
            return f"{where}.startStep", f"Invalid value for {where}.startStep parameter. It must not exceed endStep."
        if entry.get("startStepPercentage", 0) > entry.get("endStepPercentage", 100):
            name = f"{where}.startStepPercentage"
            return name, f"Invalid value for {name} parameter. It must not exceed endStepPercentage."
    return None


def _ip_adapters_problem(value: object) -> tuple[str, str] | None:
    """Check an ``ipAdapters`` array as the SDK's ``IIpAdapter`` has it: a model and a guideImage, a weight 0–1."""
    checks = (("model", _air), ("guideImage", _image_input), ("weight", _number_range(0, 1)))
    return _objects_problem("ipAdapters", value, checks, ("model", "guideImage"))


def _safety_problem(value: object) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        return "safety", "Invalid value for safety parameter. It must be an object."
    for key, item in value.items():
        if key == "checkContent" and (message := _bool("safety.checkContent", item)):
            return "safety.checkContent", message
        if key == "mode" and (message := _choice(("none", "fast", "full"))("safety.mode", item)):
            return "safety.mode", message
        if key not in ("checkContent", "mode"):
            return f"safety.{key}", f"Unsupported parameter: safety.{key}."
    return None


Bad = Callable[..., dict[str, Any]]


def _task_problem(
    task: dict[str, Any],
    task_type: str,
    fields: Collection[str],
    checks: list[tuple[str, Callable[[str, object], str | None], bool]],
) -> tuple[Bad, dict[str, Any] | None]:
    """Check what every task has; return the task's error-item maker and its first problem, if any.

    In the order the fake reports the first problem: a UUID v4 taskUUID, only known fields, then
    each field's own check.
    """
    raw_uuid = task.get("taskUUID")
    task_uuid = raw_uuid if isinstance(raw_uuid, str) else None

    def bad(parameter: str, message: str, code: str = "invalidParameter") -> dict[str, Any]:
        return error_item(code, message, parameter, task_type, task_uuid, documentation=True)

    if not isinstance(raw_uuid, str) or not UUID4_RE.match(raw_uuid):
        return bad, bad("taskUUID", "Invalid value for taskUUID parameter. It must be a UUID v4 string.")
    for key in task:
        if key not in fields:
            return bad, bad(key, f"Unsupported parameter: {key}.", "unsupportedParameter")
    for name, check, required in checks:
        if name not in task:
            if required:
                return bad, bad(name, f"Missing required parameter: {name}.")
            continue
        if message := check(name, task[name]):
            return bad, bad(name, message)
    return bad, None


def _outpaint_problem(task: dict[str, Any]) -> tuple[str, str] | None:
    """Check an ``outpaint`` object: sides (multiples of 64 pixels) and a blur, extending a seedImage to the size."""
    outpaint = task["outpaint"]
    if not isinstance(outpaint, dict):
        return "outpaint", "Invalid value for outpaint parameter. It must be an object."
    for key in outpaint:
        if key not in OUTPAINT_KEYS:
            return f"outpaint.{key}", f"Unsupported parameter: outpaint.{key}."
    for key in OUTPAINT_KEYS[:4]:
        if message := _int_range(0, 2048, 64)(f"outpaint.{key}", outpaint.get(key, 0)):
            return f"outpaint.{key}", message
    if "blur" in outpaint and (message := _int_range(0, 32)("outpaint.blur", outpaint["blur"])):
        return "outpaint.blur", message
    if "seedImage" not in task:
        return "seedImage", "Missing required parameter: seedImage (outpaint needs it)."
    if "maskImage" in task:
        return "maskImage", "Unsupported parameter: maskImage (outpaint makes its own)."
    data = decode_image(str(task["seedImage"]))
    if data is None:
        return None  # a stored image or a URL: the fake does not look it up for its size
    with Image.open(io.BytesIO(data)) as seed:
        width, height = seed.size
    wide = width + outpaint.get("left", 0) + outpaint.get("right", 0)
    high = height + outpaint.get("top", 0) + outpaint.get("bottom", 0)
    if (wide, high) != (task["width"], task["height"]):
        return "width", f"width and height must be the seedImage extended by outpaint ({wide}x{high})."
    return None


def _inference_problem(task: dict[str, Any]) -> dict[str, Any] | None:
    """Return the error item for the first problem of an imageInference task, or None when it is valid."""
    bad, problem = _task_problem(task, "imageInference", INFERENCE_FIELDS, SCALAR_CHECKS)
    if problem is not None:
        return problem
    if "maskImage" in task and "seedImage" not in task:
        return bad("seedImage", "Missing required parameter: seedImage (maskImage needs it).")
    if "outpaint" in task and (problem := _outpaint_problem(task)) is not None:
        return bad(*problem)
    steps = task.get("steps", 20)
    problem = None
    if "refiner" in task:
        problem = _refiner_problem(task["refiner"], steps)
    for name in ("lora", "embeddings"):
        if problem is None and name in task:
            problem = _adapters_problem(name, task[name])
    if problem is None and "controlNet" in task:
        problem = _controlnet_problem(task["controlNet"], steps)
    if problem is None and "ipAdapters" in task:
        problem = _ip_adapters_problem(task["ipAdapters"])
    if problem is None and "safety" in task:
        problem = _safety_problem(task["safety"])
    return bad(*problem) if problem else None


# (field, check, required) of an imageUpscale task, in the order the fake reports the first problem.
UPSCALE_CHECKS: list[tuple[str, Callable[[str, object], str | None], bool]] = [
    ("inputImage", _image_input, True),
    ("upscaleFactor", _choice_int((2, 3, 4)), True),
    ("outputType", _choice(OUTPUT_TYPES), False),
    ("outputFormat", _choice(OUTPUT_FORMATS), False),
    ("outputQuality", _int_range(20, 99), False),
    ("includeCost", _bool, False),
    ("deliveryMethod", _choice(("sync", "async")), False),
]


UPLOAD_FIELDS = frozenset({"taskType", "taskUUID", "image"})
UPLOAD_CHECKS: list[tuple[str, Callable[[str, object], str | None], bool]] = [("image", _image_input, True)]
PREPROCESS_FIELDS = frozenset(
    {
        "taskType",
        "taskUUID",
        "inputImage",
        "preProcessorType",
        "width",
        "height",
        "lowThresholdCanny",
        "highThresholdCanny",
        "includeHandsAndFaceOpenPose",
        "outputType",
        "outputFormat",
        "includeCost",
    }
)
PREPROCESS_CHECKS: list[tuple[str, Callable[[str, object], str | None], bool]] = [
    ("inputImage", _image_input, True),
    ("preProcessorType", _choice(PREPROCESSOR_TYPES), True),
    # The docs give no range for the size: "Will resize the image to this width".
    ("width", _int_range(1, 8192), False),
    ("height", _int_range(1, 8192), False),
    ("lowThresholdCanny", _int_range(0, 255), False),
    ("highThresholdCanny", _int_range(0, 255), False),
    ("includeHandsAndFaceOpenPose", _bool, False),
    ("outputType", _choice(OUTPUT_TYPES), False),
    ("outputFormat", _choice(OUTPUT_FORMATS), False),
    ("includeCost", _bool, False),
]


def _utility_problem(task: dict[str, Any]) -> dict[str, Any] | None:
    """Return the error item for the first problem of an imageUpload or imageControlNetPreProcess task."""
    task_type = str(task["taskType"])
    upload = task_type == "imageUpload"
    fields, checks = (UPLOAD_FIELDS, UPLOAD_CHECKS) if upload else (PREPROCESS_FIELDS, PREPROCESS_CHECKS)
    bad, problem = _task_problem(task, task_type, fields, checks)
    if problem is not None:
        return problem
    name = "image" if upload else "inputImage"
    if str(task[name]).startswith(("https://", "http://")):
        return bad(name, "This fake fetches no URLs: send the image as data or by UUID.")
    return None


def preprocess_image(data: bytes, kind: str, size: tuple[int, int] | None, output_format: str) -> bytes:
    """Return the fake's map of an image: made of its pixels, so a test can tell which image it came from."""
    from PIL import ImageFilter, ImageOps

    with Image.open(io.BytesIO(data)) as opened:
        grey = opened.convert("L")
    if size is not None:
        grey = grey.resize(size, Image.Resampling.LANCZOS)
    made = ImageOps.invert(grey) if kind == "depth" else grey.filter(ImageFilter.FIND_EDGES)
    buffer = io.BytesIO()
    made.convert("RGB").save(buffer, format=OUTPUT_FORMATS[output_format][0])
    return buffer.getvalue()


@dataclass
class Preprocessed:
    """One imageControlNetPreProcess task the fake ran: what it was asked, given and made."""

    request: dict[str, Any]
    input_image: bytes
    guide_uuid: str
    guide: bytes


def _upscale_problem(task: dict[str, Any]) -> dict[str, Any] | None:
    """Return the error item for the first problem of an imageUpscale task, or None when it is valid."""
    bad, problem = _task_problem(task, "imageUpscale", UPSCALE_FIELDS, UPSCALE_CHECKS)
    if problem is not None:
        return problem
    if str(task["inputImage"]).startswith(("https://", "http://")):
        return bad("inputImage", "This fake fetches no URLs: send the image as data or by UUID.")
    if "safety" in task and (problem := _safety_problem(task["safety"])):
        return bad(*problem)
    return None


# The SDK's IImageCaption (inputImage, includeCost) with the fields every task has.
CAPTION_FIELDS = frozenset({"taskType", "taskUUID", "inputImage", "includeCost"})
CAPTION_CHECKS: list[tuple[str, Callable[[str, object], str | None], bool]] = [
    ("inputImage", _image_input, True),
    ("includeCost", _bool, False),
]
# Colours a caption names, each pixel counted for the nearest (RGB distance).
COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}


def _caption_problem(task: dict[str, Any]) -> dict[str, Any] | None:
    """Return the error item for the first problem of an imageCaption task, or None when it is valid."""
    bad, problem = _task_problem(task, "imageCaption", CAPTION_FIELDS, CAPTION_CHECKS)
    if problem is not None:
        return problem
    if str(task["inputImage"]).startswith(("https://", "http://")):
        return bad("inputImage", "This fake fetches no URLs: send the image as data or by UUID.")
    return None


def colour_name(colour: tuple[int, ...]) -> str:
    """Return the name in `COLOUR_NAMES` nearest to an RGB colour."""
    return min(
        COLOUR_NAMES, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOUR_NAMES[name], colour, strict=True))
    )


def caption_image(data: bytes) -> str:
    """Return the fake's caption of an image: its size and the colour most of its pixels are nearest to."""
    with Image.open(io.BytesIO(data)) as opened:
        width, height = opened.size
        small = opened.convert("RGB")
    small.thumbnail((64, 64), Image.Resampling.NEAREST)  # at most 4096 pixels, each one of the image's own
    counts: dict[str, int] = {}
    for count, colour in small.getcolors(64 * 64) or []:
        assert isinstance(colour, tuple)  # an RGB image's colours are (r, g, b), never one band's number
        name = colour_name(colour)
        counts[name] = counts.get(name, 0) + count
    mostly = max(counts, key=lambda name: (counts[name], name))
    return f"a {width}×{height} picture, mostly {mostly}"


@dataclass
class Captioned:
    """One imageCaption task the fake ran: what it was asked, the image it read and the caption it wrote."""

    request: dict[str, Any]
    input_image: bytes
    text: str


# -- the fake ----------------------------------------------------------------------------------------


class FakeRunware(LoopbackServer):
    """Runware's ``POST /v1`` plus an image host, with charges, records and queued faults (see the module doc)."""

    def __init__(self, api_key: str = "rw-test-key", service_time: float = 0.0) -> None:
        self.api_key = api_key
        self.service_time = service_time  # seconds a generation takes; may be changed between calls
        self.requests: list[RunwareRequest] = []
        self.tasks: dict[str, RunwareTask] = {}
        self.charges: list[tuple[str, float]] = []
        self.downloads: list[str] = []
        self.faults: deque[Fault] = deque()
        self.nsfw_seeds: set[int] = set()  # images with these seeds answer NSFWContent: true when checked
        self.nsfw_inputs: set[str] = set()  # upscales of inputs with these sha256s answer NSFWContent: true
        self.max_concurrent = 0
        self.in_flight = 0
        self.base = ""
        self.url = ""
        self._peers: set[object] = set()
        self._images: dict[str, tuple[RunwareTask, RunwareImage]] = {}
        self.uploads: dict[str, bytes] = {}  # imageUUID -> the bytes of each imageUpload
        self.preprocessed: list[Preprocessed] = []
        self.captions: dict[str, Captioned] = {}  # taskUUID -> each imageCaption task run
        self._guides: dict[str, bytes] = {}  # guideImageUUID -> each preprocessing's map (PNG/JPG/WEBP bytes)
        self._cond = asyncio.Condition()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1", self._v1)
        app.router.add_get("/image/{name}", self._image)
        app.router.add_get("/guide/{name}", self._guide)
        port = await self._serve(app, backlog=1024)
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + "/v1"

    async def close(self) -> None:
        await super().close()

    # -- driving and queries ----------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Queue faults (FIFO) for the next POSTs that carry an imageInference, imageUpscale or imageCaption task."""
        self.faults.extend(faults)

    @property
    def connections(self) -> int:
        """How many distinct client TCP connections have sent a request."""
        return len(self._peers)

    @property
    def total_cost(self) -> float:
        return round(sum(cost for _, cost in self.charges), 6)

    def calls(self, task_type: str) -> list[dict[str, Any]]:
        """Every task object of ``task_type`` that any ``POST /v1`` carried, authorized or not, in order."""
        return [t for r in self.requests if r.path == "/v1" for t in r.tasks if t.get("taskType") == task_type]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(predicate), timeout)
            except TimeoutError:
                last = "\n".join(f"  {r.method} {r.path} {r.status} {r.body!r}"[:300] for r in self.requests[-10:])
                raise TimeoutError(f"condition not met within {timeout}s; last requests:\n{last}") from None

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    # -- recording --------------------------------------------------------------------------------

    async def _record(self, request: web.Request, body: Any) -> RunwareRequest:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        self._peers.add(tuple(peer) if peer else id(request.protocol))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        authorized = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        record = RunwareRequest(request.method, request.path, headers, authorized, body, time.monotonic())
        self.requests.append(record)
        await self._notify()
        return record

    async def _answer(
        self, record: RunwareRequest, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> web.Response:
        await self._finish(record, status)
        return web.json_response(payload, status=status, headers=headers)

    async def _finish(self, record: RunwareRequest, status: int) -> None:
        record.status = status
        record.answered_at = time.monotonic()
        await self._notify()

    # -- POST /v1 ---------------------------------------------------------------------------------

    async def _v1(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = await self._record(request, body)
        if not record.authorized:
            item = error_item("invalidApiKey", "Invalid API key.", "apiKey")
            return await self._answer(record, 401, {"errors": [item]})
        if not isinstance(body, list) or not body or not all(isinstance(t, dict) for t in body):
            message = "The request body must be a non-empty JSON array of task objects."
            return await self._answer(record, 400, {"errors": [error_item("invalidPayload", message)]})
        if all(t.get("taskType") in UTILITY_TASKS for t in body):
            return await self._utilities(record, body)
        if all(t.get("taskType") == "imageCaption" for t in body):
            return await self._captions(request, record, body)
        inference = [t for t in body if t.get("taskType") in CHARGED_TASKS]
        if not inference:
            if problem := self._problem(body):
                return await self._answer(record, 400, {"errors": [problem]})
            return await self._answer(record, *self._results(body))
        self.in_flight += 1
        self.max_concurrent = max(self.max_concurrent, self.in_flight)
        try:
            return await self._inference(request, record, body, inference)
        finally:
            self.in_flight -= 1

    def _problem(self, body: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Return the first reason to refuse the whole POST, checking task types, fields and UUIDs."""
        seen: set[str] = set()
        for task in body:
            task_type = task.get("taskType")
            raw_uuid = task.get("taskUUID")
            task_uuid = raw_uuid if isinstance(raw_uuid, str) else None
            if task_type == "getResponse":
                if task_uuid is None:
                    message = "Invalid value for taskUUID parameter. It must be a string."
                    return error_item("invalidParameter", message, "taskUUID", "getResponse", None)
                continue
            if task_type not in CHARGED_TASKS:
                message = f"Unsupported task type: {task_type!r}."
                return error_item("unsupportedTaskType", message, "taskType", None, task_uuid)
            if problem := (_inference_problem if task_type == "imageInference" else self._upscale_task_problem)(task):
                return problem
            if problem := self._unknown_guide(task):
                return problem
            assert task_uuid is not None  # the task's check covered it
            if task_uuid in self.tasks or task_uuid in seen:
                message = "A task with this taskUUID already exists."
                return error_item("conflictTaskUUID", message, "taskUUID", task_type, task_uuid)
            seen.add(task_uuid)
        return None

    def stored(self, image_uuid: str) -> bytes | None:
        """Return the bytes of an image this fake keeps under a UUID (uploaded, preprocessed or made), or None."""
        if image_uuid in self.uploads:
            return self.uploads[image_uuid]
        if image_uuid in self._guides:
            return self._guides[image_uuid]
        found = self._images.get(image_uuid)
        return found[1].data if found is not None else None

    def _unknown_guide(self, task: dict[str, Any]) -> dict[str, Any] | None:
        """Refuse a controlNet or ipAdapters guideImage that names by UUID an image the fake does not keep."""
        for array in ("controlNet", "ipAdapters"):
            for i, entry in enumerate(task.get(array, [])):
                value = str(entry["guideImage"])
                if UUID4_RE.match(value) and self.stored(value) is None:
                    message = "Invalid value for guideImage parameter. No image with this UUID was found."
                    return error_item(
                        "invalidParameter", message, f"{array}[{i}].guideImage", "imageInference", task["taskUUID"]
                    )
        return None

    async def _utilities(self, record: RunwareRequest, body: list[dict[str, Any]]) -> web.Response:
        """Answer a POST of uploads and preprocessing tasks: every task checked first, then each run in order."""
        seen: set[str] = set()
        for task in body:
            if problem := _utility_problem(task):
                return await self._answer(record, 400, {"errors": [problem]})
            name = "image" if task["taskType"] == "imageUpload" else "inputImage"
            value = str(task[name])
            if UUID4_RE.match(value) and self.stored(value) is None:
                message = f"Invalid value for {name} parameter. No image with this UUID was found."
                item = error_item("invalidParameter", message, name, task["taskType"], task["taskUUID"])
                return await self._answer(record, 400, {"errors": [item]})
            if task["taskUUID"] in seen or task["taskUUID"] in self.tasks:
                message = "A task with this taskUUID already exists."
                item = error_item("conflictTaskUUID", message, "taskUUID", task["taskType"], task["taskUUID"])
                return await self._answer(record, 400, {"errors": [item]})
            seen.add(task["taskUUID"])
        data = [await self._utility(task) for task in body]
        return await self._answer(record, 200, {"data": data})

    async def _utility(self, task: dict[str, Any]) -> dict[str, Any]:
        given = str(task["image" if task["taskType"] == "imageUpload" else "inputImage"])
        data = self.stored(given) if UUID4_RE.match(given) else decode_image(given)
        assert data is not None  # checked by _utilities
        item: dict[str, Any] = {"taskType": task["taskType"], "taskUUID": task["taskUUID"]}
        if task["taskType"] == "imageUpload":
            image_uuid = str(uuid.uuid4())
            self.uploads[image_uuid] = data
            return {**item, "imageUUID": image_uuid}
        size = (task["width"], task["height"]) if "width" in task and "height" in task else None
        output_format = task.get("outputFormat", "JPG")
        guide = await asyncio.to_thread(preprocess_image, data, task["preProcessorType"], size, output_format)
        guide_uuid = str(uuid.uuid4())
        self._guides[guide_uuid] = guide
        self.preprocessed.append(Preprocessed(task, data, guide_uuid, guide))
        self.charges.append((task["taskUUID"], COST_PER_PREPROCESS))
        input_uuid = given if UUID4_RE.match(given) else str(uuid.uuid5(uuid.NAMESPACE_OID, task["taskUUID"]))
        item.update(guideImageUUID=guide_uuid, inputImageUUID=input_uuid)
        output_type = task.get("outputType", "URL")
        _, ext, content_type = OUTPUT_FORMATS[output_format]
        if output_type == "URL":
            item["guideImageURL"] = f"{self.base}/guide/{guide_uuid}.{ext}"
        elif output_type == "base64Data":
            item["guideImageBase64Data"] = base64.b64encode(guide).decode()
        else:
            item["guideImageDataURI"] = f"data:{content_type};base64,{base64.b64encode(guide).decode()}"
        if task.get("includeCost"):
            item["cost"] = COST_PER_PREPROCESS
        return item

    async def _guide(self, request: web.Request) -> web.Response:
        record = await self._record(request, None)
        stem = request.match_info["name"].partition(".")[0]
        if stem not in self._guides:
            await self._finish(record, 404)
            return web.Response(status=404, text="Not Found")
        await self._finish(record, 200)
        return web.Response(body=self._guides[stem], content_type="application/octet-stream")

    async def _captions(
        self, request: web.Request, record: RunwareRequest, body: list[dict[str, Any]]
    ) -> web.StreamResponse:
        """Answer a POST of imageCaption tasks: a refusing fault first, every task checked, then each captioned."""
        first_uuid = body[0].get("taskUUID")
        if self.faults and self.faults[0].refuses():
            refusing = self.faults.popleft()
            return await self._refuse(
                record, refusing, first_uuid if isinstance(first_uuid, str) else None, "imageCaption"
            )
        seen: set[str] = set()
        for task in body:
            if problem := _caption_problem(task):
                return await self._answer(record, 400, {"errors": [problem]})
            value, task_uuid = str(task["inputImage"]), str(task["taskUUID"])
            if UUID4_RE.match(value) and self.stored(value) is None:
                message = "Invalid value for inputImage parameter. No image with this UUID was found."
                item = error_item("invalidParameter", message, "inputImage", "imageCaption", task_uuid)
                return await self._answer(record, 400, {"errors": [item]})
            if task_uuid in seen or task_uuid in self.captions or task_uuid in self.tasks:
                message = "A task with this taskUUID already exists."
                item = error_item("conflictTaskUUID", message, "taskUUID", "imageCaption", task_uuid)
                return await self._answer(record, 400, {"errors": [item]})
            seen.add(task_uuid)
        fault = self.faults.popleft() if self.faults and self.faults[0].kind not in IMAGE_FAULTS else None
        data = [await self._caption(task) for task in body]
        delay = self.service_time + (fault.seconds if fault is not None and fault.kind == "hang_after" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        return await self._deliver(request, record, fault, lambda: (200, {"data": data}))

    async def _caption(self, task: dict[str, Any]) -> dict[str, Any]:
        """Caption and charge one checked task; return its answer's item."""
        given = str(task["inputImage"])
        data = self.stored(given) if UUID4_RE.match(given) else decode_image(given)
        assert data is not None  # checked by _captions
        text = await asyncio.to_thread(caption_image, data)
        self.captions[task["taskUUID"]] = Captioned(task, data, text)
        self.charges.append((task["taskUUID"], COST_PER_CAPTION))
        item: dict[str, Any] = {"taskType": "imageCaption", "taskUUID": task["taskUUID"], "text": text}
        if task.get("includeCost"):
            item["cost"] = COST_PER_CAPTION
        return item

    def _upscale_task_problem(self, task: dict[str, Any]) -> dict[str, Any] | None:
        if problem := _upscale_problem(task):
            return problem
        value = str(task["inputImage"])
        if UUID4_RE.match(value) and value not in self._images:
            message = "Invalid value for inputImage parameter. No image with this UUID was found."
            return error_item("invalidParameter", message, "inputImage", "imageUpscale", task["taskUUID"])
        return None

    async def _inference(
        self, request: web.Request, record: RunwareRequest, body: list[dict[str, Any]], inference: list[dict[str, Any]]
    ) -> web.StreamResponse:
        for task in inference:  # a retry carrying a known UUID is counted before anything refuses it
            known = task.get("taskUUID")
            if isinstance(known, str) and known in self.tasks:
                self.tasks[known].posts += 1
        first_uuid = inference[0].get("taskUUID")
        first_uuid = first_uuid if isinstance(first_uuid, str) else None
        if self.faults and self.faults[0].refuses():
            return await self._refuse(record, self.faults.popleft(), first_uuid, str(inference[0]["taskType"]))
        if problem := self._problem(body):
            return await self._answer(record, 400, {"errors": [problem]})
        fault = self.faults.popleft() if self.faults else None
        tasks = [self._accept(task, fault) for task in inference]
        await asyncio.gather(*(self._generate(task) for task in tasks))
        delay = fault.seconds if fault is not None and fault.kind == "hang_after" else 0.0
        if any(task.delivery == "sync" for task in tasks):
            delay += self.service_time
        if delay > 0:
            await asyncio.sleep(delay)
        return await self._deliver(request, record, fault, lambda: self._results(body))

    async def _deliver(
        self,
        request: web.Request,
        record: RunwareRequest,
        fault: Fault | None,
        answer: Callable[[], tuple[int, dict[str, Any]]],
    ) -> web.StreamResponse:
        """Send an accepted POST's answer (made now: polls in it count), spoilt as the fault it took says."""
        if fault is not None and fault.kind == "malformed":
            await self._finish(record, 200)
            return web.Response(status=200, text='{"data": [', content_type="application/json")
        status, payload = answer()
        if fault is not None and fault.kind == "wrong_shape":
            assert fault.mangle is not None, "a wrong_shape fault needs mangle"
            return await self._answer(record, 200, fault.mangle(payload))
        if fault is not None and fault.kind == "trickle":
            await self._finish(record, status)
            return await trickle(request, json.dumps(payload).encode(), pieces=fault.pieces, gap=fault.seconds)
        return await self._answer(record, status, payload)

    async def _refuse(
        self, record: RunwareRequest, fault: Fault, task_uuid: str | None, task_type: str
    ) -> web.Response:
        """Answer a refusing fault: nothing is accepted or charged."""
        if fault.kind in ("error400", "error200"):
            message = fault.message or f"Invalid value for {fault.parameter} parameter."
            code = fault.code or "invalidParameter"
            item = error_item(code, message, fault.parameter, task_type, task_uuid, documentation=True)
            return await self._answer(record, 400 if fault.kind == "error400" else 200, {"errors": [item]})
        if fault.kind == "hang_before":
            await asyncio.sleep(fault.seconds)
            status, (code, message) = 503, UNAVAILABLE
        else:
            status = fault.status
            code, message = STATUS_CODES.get(status, UNAVAILABLE)
        item = error_item(fault.code or code, fault.message or message, None, task_type, task_uuid)
        headers = None
        if fault.kind == "status" and fault.retry_after is not None:
            value = fault.retry_after
            headers = {"Retry-After": str(int(value)) if float(value).is_integer() else str(value)}
        return await self._answer(record, status, {"errors": [item]}, headers)

    def _accept(self, request: dict[str, Any], fault: Fault | None) -> RunwareTask:
        """Charge and register a validated task; synchronous, so two racing POSTs cannot both win."""
        task_uuid: str = request["taskUUID"]
        upscale = request["taskType"] == "imageUpscale"
        count = 1 if upscale else request.get("numberResults", 1)
        cost = COST_PER_UPSCALE if upscale else round(COST_PER_IMAGE * count, 6)
        now = time.monotonic()
        task = RunwareTask(task_uuid, request, cost, accepted_at=now, ready_at=now + self.service_time, fault=fault)
        if fault is not None and fault.kind == "partial":
            task.returned = max(0, min(fault.returned, count))
        elif fault is not None and fault.kind == "processing":
            task.processing_left = fault.polls
            task.ready_at = now  # readiness is counted in polls instead
        elif fault is not None and fault.kind == "url_404":
            task.url_404 = True
        for name in ("seedImage", "maskImage"):
            if isinstance(request.get(name), str):
                setattr(task, "seed_image" if name == "seedImage" else "mask_image", decode_image(request[name]))
        guides = [str(entry["guideImage"]) for entry in request.get("controlNet", [])]
        task.guide_images = [self.stored(g) if UUID4_RE.match(g) else decode_image(g) for g in guides]
        if upscale:
            given = request["inputImage"]
            task.input_image = decode_image(given) if not UUID4_RE.match(given) else self._images[given][1].data
        self.tasks[task_uuid] = task
        self.charges.append((task_uuid, cost))
        return task

    async def _generate(self, task: RunwareTask) -> None:
        """Render the task's images off the event loop, so big pictures do not stall other requests."""
        request = task.request
        output_format = request.get("outputFormat", "JPG")
        _, ext, content_type = OUTPUT_FORMATS[output_format]
        if task.input_image is not None:
            factor, given = request["upscaleFactor"], task.input_image
            data = await asyncio.to_thread(upscale_image, given, factor, output_format)
            image = RunwareImage(str(uuid.uuid4()), 0, None, data, ext, content_type)
            task.images.append(image)
            self._images[image.image_uuid] = (task, image)
            task.generated = True
            return
        count = request.get("numberResults", 1)
        seed = request.get("seed") or random.randint(1, 2**32 - 1)
        width, height = request["width"], request["height"]
        datas = await asyncio.to_thread(
            lambda: [render_image(seed + i, width, height, output_format) for i in range(count)]
        )
        lost = task.fault is not None and task.fault.kind == "partial" and task.fault.lost
        for i, data in enumerate(datas):
            image = RunwareImage(str(uuid.uuid4()), i, seed + i, data, ext, content_type)
            image.lost = lost and task.returned is not None and i >= task.returned
            task.images.append(image)
            self._images[image.image_uuid] = (task, image)
        task.generated = True

    def _item(self, task: RunwareTask, image: RunwareImage) -> dict[str, Any]:
        """Build one result item the way Runware shapes it for the task's outputType."""
        request = task.request
        item: dict[str, Any] = {"taskType": task.task_type, "taskUUID": task.task_uuid, "imageUUID": image.image_uuid}
        if image.seed is not None:
            item["seed"] = image.seed
        if task.input_image is not None:
            # Runware answers the UUID it keeps the input under; the fake keeps none, so it names a fresh one.
            item["inputImageUUID"] = str(uuid.uuid5(uuid.NAMESPACE_OID, task.task_uuid))
        output_type = request.get("outputType", "URL")
        if output_type == "URL":
            item["imageURL"] = f"{self.base}/image/{image.image_uuid}.{image.ext}"
        elif output_type == "base64Data":
            item["imageBase64Data"] = base64.b64encode(image.data).decode()
        else:
            item["imageDataURI"] = f"data:{image.content_type};base64,{base64.b64encode(image.data).decode()}"
        safety = request.get("safety")
        if request.get("checkNSFW") or (isinstance(safety, dict) and safety.get("checkContent")):
            if task.input_image is not None:
                item["NSFWContent"] = hashlib.sha256(task.input_image).hexdigest() in self.nsfw_inputs
            else:
                item["NSFWContent"] = image.seed in self.nsfw_seeds
        if request.get("includeCost"):
            item["cost"] = task.cost if task.input_image is not None else COST_PER_IMAGE
        return item

    def _results(self, body: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """Answer every task of an accepted POST in order: results, acknowledgements and polls."""
        data: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for request in body:
            task_uuid = request["taskUUID"]
            if request["taskType"] == "getResponse":
                self._poll(task_uuid, data, errors)
                continue
            task = self.tasks[task_uuid]
            if task.delivery == "async":
                data.append({"taskType": task.task_type, "taskUUID": task_uuid})
            else:
                shown = task.images if task.returned is None else task.images[: task.returned]
                data.extend(self._item(task, image) for image in shown)
        payload: dict[str, Any] = {"data": data}
        if errors:
            payload["errors"] = errors
        return (200 if data or not errors else 400), payload

    def _poll(self, task_uuid: str, data: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        task = self.tasks.get(task_uuid)
        if task is None:
            message = "No task with this taskUUID was found."
            errors.append(error_item("taskNotFound", message, "taskUUID", "getResponse", task_uuid))
            return
        task.polls += 1
        if task.processing_left > 0:
            task.processing_left -= 1
            ready = False
        else:
            ready = task.generated and time.monotonic() >= task.ready_at
        if not ready:
            data.append({"taskType": task.task_type, "taskUUID": task_uuid, "status": "processing"})
            return
        for image in task.images:
            if image.lost:
                errors.append(
                    {
                        "code": "timeoutProvider",
                        "message": "The provider timed out.",
                        "status": "error",
                        "taskUUID": task_uuid,
                        "taskType": task.task_type,
                    }
                )
            else:
                data.append({**self._item(task, image), "status": "success"})

    # -- GET /image/{name} ------------------------------------------------------------------------

    async def _image(self, request: web.Request) -> web.Response:
        record = await self._record(request, None)
        name = request.match_info["name"]
        stem, _, ext = name.partition(".")
        found = self._images.get(stem)
        if found is None or found[1].ext != ext or found[0].url_404 or found[1].lost:
            await self._finish(record, 404)
            return web.Response(status=404, text="Not Found")
        image = found[1]
        self.downloads.append(name)
        await self._finish(record, 200)
        return web.Response(body=image.data, content_type=image.content_type)

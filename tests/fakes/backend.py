"""A recording backend for fast service and adapter tests; the real ones are tested on their own.

It makes a real PNG whose colour comes from the seed and reports one progress
event per step, per stage, as the local backend does.
"""

from __future__ import annotations

import asyncio
import hashlib
import io

from PIL import Image

from bot.describe import DESCRIBING, Description
from bot.errors import BackendUnavailable, InvalidOption, JobCancelled
from bot.request import GeneratedImage, GenerationRequest, Progress


class FakeBackend:
    name = "fake"

    def __init__(
        self, *, step_delay: float = 0.0, fail_with: str | None = None, preview_every: int = 0, name: str = "fake"
    ) -> None:
        self.name = name
        self.requests: list[GenerationRequest] = []
        self.step_delay = step_delay
        self.fail_with = fail_with
        self.preview_every = preview_every  # every n-th step carries a small WebP preview
        self.gate: asyncio.Event | None = None  # set by a test to hold jobs until it opens
        self.nsfw_seeds: set[int] = set()  # images with these seeds come back flagged by the "safety check"
        self.nsfw_inputs: set[bytes] = set()  # input images (checked PNG bytes) its "safety check" flags
        self.checked: list[tuple[str, int]] = []  # (model, how many images) of each input check
        self.describes = True  # False: its check_describe refuses, as a backend without a captioner does
        self.caption: str | None = None  # what describe answers, else the image's size and colour in words
        self.more_captions: tuple[str, ...] = ()  # and other ways to say it
        self.described: list[bytes] = []  # the images describe was asked about
        self.closed = False

    @property
    def upscales_alone(self):
        """Upscale like Runware (the image alone) when named ``runware``, else like the local worker."""
        return self.name == "runware"

    def check(self, request):
        """Take everything the request model allows."""

    async def flags(self, model, images):
        """The local worker's input check: flag the images listed in `nsfw_inputs`."""
        self.checked.append((model, len(images)))
        return [image in self.nsfw_inputs for image in images]

    def check_describe(self):
        if not self.describes:
            raise InvalidOption("describe", f"needs a captioner, and the {self.name} backend has none")

    async def describe(self, image):
        """Say the image's size and its first pixel's colour, so a test sees which image travelled."""
        self.described.append(image)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with:
            raise BackendUnavailable(self.name, self.fail_with, doing=DESCRIBING)
        if self.caption is not None:
            return Description(self.caption, cost=0.001, more=self.more_captions)
        with Image.open(io.BytesIO(image)) as decoded:
            r, g, b = decoded.convert("RGB").getpixel((0, 0))
            return Description(f"a {decoded.width}x{decoded.height} picture of #{r:02x}{g:02x}{b:02x}", cost=0.001)

    async def generate(self, request, on_progress=None, cancel=None):
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with:
            raise BackendUnavailable(self.name, self.fail_with)
        base, refiner = request.split
        for stage, total in (("base", base), ("refiner", refiner)):
            for step in range(1, total + 1):
                if cancel is not None and cancel.is_set():
                    raise JobCancelled()
                await asyncio.sleep(self.step_delay)
                if on_progress:
                    preview = None
                    if self.preview_every and step % self.preview_every == 0:
                        buffer = io.BytesIO()
                        Image.new("RGB", (8, 8), (step, 0, 0)).save(buffer, format="WEBP")
                        preview = buffer.getvalue()
                    on_progress(Progress(stage, step, total, preview))
        images = []
        for index, seed in enumerate(request.image_seeds()):
            colour = hashlib.sha256(f"{seed}:{request.refiner}".encode()).digest()[:3]
            buffer = io.BytesIO()
            # Encoded as asked, as every backend encodes: the service adds the parameters to each format.
            kind = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[request.output_format]
            Image.new("RGB", (request.width, request.height), tuple(colour)).save(buffer, format=kind)
            images.append(
                GeneratedImage(
                    index,
                    seed,
                    buffer.getvalue(),
                    request.width,
                    request.height,
                    {"base_steps": base, "refiner_steps": refiner},
                    nsfw=seed in self.nsfw_seeds,
                )
            )
        return images

    async def aclose(self):
        self.closed = True

"""The ModelsLab backend through the image service, against the loopback fake of ModelsLab's API.

Each fault asserts what the user is told, what history keeps, and that ModelsLab
charged exactly once: a submit is never resent once ModelsLab may have started it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
from PIL import Image, ImageChops, ImageStat

from bot.config import ModelsLabSettings
from bot.errors import BackendUnavailable, InvalidOption
from bot.images import input_path
from bot.request import GenerationRequest
from bot.service import ImageService
from inference.modelslab import UPSCALE_NOTE, ModelsLabBackend
from storage import SqliteDatabase
from tests.fakes.modelslab import FakeModelsLab, Fault, colour_for_seed
from tests.fakes.service import assert_nothing_half_written, started_service
from tests.inference.remote import CATALOG, WHO, assert_aftermath, only, outcome, upscaled


@pytest.fixture
async def fake() -> AsyncIterator[FakeModelsLab]:
    async with FakeModelsLab() as fake:
        yield fake


def settings(fake: FakeModelsLab, **changes: object) -> ModelsLabSettings:
    values: dict[str, object] = {
        "api_key": fake.api_key,
        "url": fake.url,
        "upload_url": fake.upload_url,
        "upscale_url": fake.upscale_url,
        "retry_budget": 2.0,
        "timeout": 5.0,
    }
    return ModelsLabSettings(**(values | changes))  # type: ignore[arg-type]


@pytest.fixture
async def service(fake: FakeModelsLab, tmp_path: Path) -> AsyncIterator[tuple[ImageService, SqliteDatabase]]:
    backend = ModelsLabBackend(CATALOG, settings(fake), tmp_path, eta_cap=0.05)
    try:
        async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as started:
            yield started
    finally:
        await backend.aclose()


async def test_two_images_arrive_with_their_seeds_in_the_png(service, fake: FakeModelsLab, tmp_path: Path) -> None:
    svc, _ = service
    generation, error = await outcome(svc, "a red fox --seed 42 --n 2 --ar 1:1 --steps 30 --lora pixel-art-remote:0.8")
    assert error is None and generation is not None
    assert [image.seed for image in generation.images] == [42, 43]
    for image in generation.images:
        png = Image.open(io.BytesIO((tmp_path / image.path).read_bytes()))
        assert png.size == (1024, 1024)
        assert png.getpixel((0, 0)) == colour_for_seed(image.seed)
        assert "Seed: " + str(image.seed) in png.text["parameters"]
    (job,) = fake.jobs.values()
    assert job.request.loras == [("pixel-art-xl", 0.8)] and job.request.num_inference_steps == 30
    assert fake.type_violations == [] and len(fake.charges) == 1
    assert generation.backend == "modelslab"


async def test_a_queued_job_is_fetched_until_it_is_done(service, fake: FakeModelsLab) -> None:
    fake.inject(Fault("processing", polls=2, eta=0.01))
    fake.inject_fetch(Fault("http", status=503))
    generation, error = await outcome(service[0], "a red fox --seed 5")
    assert error is None and generation is not None and generation.images[0].seed == 5
    assert len(fake.fetches) == 4  # the 503 is retried; two processing answers; then success
    assert len(fake.charges) == 1


@pytest.mark.parametrize(
    ("fault", "sentence"),
    [
        (
            Fault("error", message="Server is overloaded, please try again later", misspelled=True),
            "The ModelsLab backend could not make the image: it refused the request "
            "(Server is overloaded, please try again later).",
        ),
        (
            Fault("failed_after", polls=1, eta=0.01),
            "The ModelsLab backend could not make the image: job 1000 failed (Failed, Try Again).",
        ),
    ],
)
async def test_its_refusals_become_one_sentence(
    service, fake: FakeModelsLab, tmp_path: Path, fault: Fault, sentence: str
) -> None:
    """ModelsLab's error shape comes in an HTTP 200: the user reads its message, and nothing is resent."""
    fake.inject(fault)
    generation, error = await outcome(service[0], "a red fox")
    assert generation is None and error == sentence
    failed = await only(service[1])
    assert failed.status == "failed" and failed.error == sentence
    assert len(fake.submits) == 1
    await assert_aftermath(*service, tmp_path)


@pytest.mark.parametrize(
    ("fault", "told"),
    [
        (Fault("http", status=503), "it answered HTTP 503, so it was not sent again"),
        (Fault("malformed"), "it answered HTTP 200 with an unreadable body, so it was not sent again"),
        (
            Fault("wrong_shape", mangle=lambda answer: [answer]),
            "it answered HTTP 200 with an unreadable body, so it was not sent again",
        ),
        (
            Fault("wrong_shape", mangle=lambda answer: {**answer, "output": answer["output"][0]}),
            "it reported success without a list of images",
        ),
        (Fault("hang", seconds=5.0), "the request failed (ReadTimeout), so it was not sent again"),
        # Every write comes well within the read timeout; the whole answer takes 2 s, past the 0.3 s allowed.
        (Fault("trickle", pieces=40, gap=0.05), "the request failed (ReadTimeout), so it was not sent again"),
    ],
    ids=["503", "not-json", "json-array", "output-not-a-list", "hang", "trickle"],
)
async def test_an_answer_lost_after_modelslab_may_have_started_is_not_paid_twice(
    fake: FakeModelsLab, tmp_path: Path, fault: Fault, told: str
) -> None:
    fake.inject(fault)
    backend = ModelsLabBackend(CATALOG, settings(fake, timeout=0.3), tmp_path, eta_cap=0.05)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (svc, history):
        generation, error = await outcome(svc, "a red fox")
        assert generation is None and error is not None
        assert error.startswith("The ModelsLab backend could not make the image: ") and told in error
        assert (await only(history)).status == "failed"
        assert len(fake.submits) == 1 and len(fake.charges) == 1
        await assert_aftermath(svc, history, tmp_path)
    await backend.aclose()


async def test_a_full_queue_429_is_waited_out_and_sent_again(service, fake: FakeModelsLab) -> None:
    fake.inject(Fault("http", status=429, retry_after=0.05))
    generation, error = await outcome(service[0], "a red fox")
    assert error is None and generation is not None
    assert len(fake.submits) == 2 and len(fake.charges) == 1
    first, second = [r for r in fake.requests if r.kind == "submit"]
    assert second.at - first.at >= 0.05  # Retry-After honoured


async def test_lost_and_missing_images(service, fake: FakeModelsLab) -> None:
    svc, _ = service
    fake.inject(Fault("partial", returned=1))
    generation, error = await outcome(svc, "a red fox --n 2 --seed 9")
    assert error is None and generation is not None
    assert [image.seed for image in generation.images] == [9]
    assert generation.warnings[-1] == "Only 1 of 2 images came back."

    fake.inject(Fault("url_404"))
    generation, error = await outcome(svc, "a blue fox")
    assert generation is None
    assert error == (
        "The ModelsLab backend could not make the image:"
        " the finished images could not be downloaded (their links failed)."
    )
    assert len(fake.charges) == 2  # one per generation, nothing resent


async def test_what_modelslab_cannot_do_is_refused_before_anything_is_queued_or_sent(service, fake) -> None:
    svc, history = service
    with pytest.raises(InvalidOption, match="on ModelsLab; the local backend and Runware can"):
        await svc.imagine("a red fox --refiner 85", WHO)
    with pytest.raises(InvalidOption, match="Steps are at most 50 on ModelsLab"):
        await svc.imagine("a red fox --steps 80", WHO)
    assert fake.requests == [] and await history.generations.recent("console", "alice") == []


async def test_an_unreachable_api_is_retried_within_the_budget(tmp_path: Path) -> None:
    async with FakeModelsLab() as gone:
        url, key = gone.url, gone.api_key
    backend = ModelsLabBackend(CATALOG, ModelsLabSettings(api_key=key, url=url, retry_budget=0.5), tmp_path)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (svc, _):
        generation, error = await outcome(svc, "a red fox")
    await backend.aclose()
    assert generation is None and error is not None
    assert error.startswith("The ModelsLab backend could not make the image: it was unavailable for ")
    assert "(last: ConnectError)" in error


async def test_the_key_never_reaches_a_log_line(service, fake: FakeModelsLab, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    fake.inject(Fault("processing", polls=1, eta=0.01))
    await outcome(service[0], "a red fox")
    assert fake.api_key not in caplog.text
    # The requests were logged, without it (by the records' names: Ray, tested before in the same process,
    # may have changed how the captured text is formatted).
    assert any(record.name.startswith("httpx") for record in caplog.records)


async def test_modelslabs_safety_checker_verdict_is_stored_per_image(service, fake: FakeModelsLab) -> None:
    """safety_checker "yes" is sent; nsfw_content_detected marks the flagged image (which ModelsLab blanks)."""
    running, history = service
    fake.nsfw_seeds = {8}
    generation, error = await outcome(running, "a red fox --seed 7 --n 2 --steps 20")
    assert error is None and generation is not None
    stored = await history.generations.get(generation.id)
    assert [(image.seed, image.nsfw) for image in stored.images] == [(7, False), (8, True)]
    assert all(job.request.flag("safety_checker") for job in fake.jobs.values())


async def test_an_input_image_is_refused_before_anything_is_queued_or_sent(service, fake: FakeModelsLab) -> None:
    """ModelsLab's img2img and inpaint do not run the steps asked for (see inference/capabilities.py): refused."""
    svc, history = service
    await outcome(svc, "a red fox --seed 42 --ar 1:1")
    for line in ("a fox at dusk --image #1 --strength 0.5", "a fox in a hat --image #1 --mask #1"):
        with pytest.raises(InvalidOption) as refused:
            await svc.imagine(line, WHO)
        assert str(refused.value) == "Image is not available on ModelsLab; the local backend and Runware can."
    assert len(fake.submits) == 1 and len(await history.generations.recent("console", "alice")) == 1


async def test_its_results_show_only_the_buttons_it_can_do(service, fake: FakeModelsLab) -> None:
    """No Refine (no refiner hand-off), Vary, Zoom Out or Pan (no image input) under a ModelsLab image: Reroll,
    Edit, the upscales, Details and Delete, which it does; the text command still says why Vary is refused."""
    svc, _ = service
    generation, error = await outcome(svc, "a red fox --seed 42 --size 512x512")
    assert error is None and generation is not None
    offered = ("reroll", "edit", "upscale-2", "upscale-4", "details", "delete")
    assert svc.result_actions(generation.request) == offered
    with pytest.raises(InvalidOption, match=r"^Image is not available on ModelsLab"):
        await svc.vary(WHO, generation.id, "subtle")


# -- upscale: base64_to_url, then super resolution ----------------------------------------------------


def stored_input(data_dir: Path, png: bytes) -> str:
    """Store `png` where the bot keeps input images; return its sha256."""
    sha = hashlib.sha256(png).hexdigest()
    path = data_dir / input_path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return sha


def textured(width: int, height: int) -> bytes:
    """A PNG with detail in it (gradients and blocks), so that an enlargement can be compared with it."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [((x * 7) % 256, (y * 5) % 256, ((x // 16 + y // 16) % 2) * 200) for y in range(height) for x in range(width)]
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upscale_request(sha: str, width: int, height: int, factor: Literal[2, 4]) -> GenerationRequest:
    parent = {"prompt": "a red fox", "model": "sdxl", "seed": 42, "init_image": sha}
    return GenerationRequest(**parent, width=width * factor, height=height * factor, upscale=factor)


@pytest.mark.parametrize("factor", [2, 4])
async def test_an_upscale_uploads_the_image_and_enlarges_it_with_the_factors_model(
    fake: FakeModelsLab, tmp_path: Path, factor: Literal[2, 4]
) -> None:
    parent = textured(256, 192)
    sha = stored_input(tmp_path, parent)
    backend = ModelsLabBackend(CATALOG, settings(fake), tmp_path, eta_cap=0.05)
    try:
        (image,) = await backend.generate(upscale_request(sha, 256, 192, factor))
    finally:
        await backend.aclose()
    assert (image.width, image.height, image.seed) == (256 * factor, 192 * factor, 42)
    assert image.meta["note"] == UPSCALE_NOTE
    enlarged = Image.open(io.BytesIO(image.data))
    assert enlarged.format == "PNG" and enlarged.size == (256 * factor, 192 * factor)
    # its pixels follow the parent: brought back to the parent's size, it is the parent, nearly
    back = enlarged.convert("RGB").resize((256, 192), Image.Resampling.LANCZOS)
    difference = ImageChops.difference(back, Image.open(io.BytesIO(parent)).convert("RGB"))
    assert max(ImageStat.Stat(difference).mean) < 8
    # the stored PNG, as it is, was uploaded; the super resolution was given the link the upload answered
    (upload_id, uploaded), (upscale_id, job) = *fake.uploads.items(), *fake.upscales.items()
    assert uploaded == parent
    (upload,) = [r.body for r in fake.requests if r.kind == "upload"]
    assert upload == {
        "key": "<redacted>",
        "base64_string": "data:image/png;base64," + base64.b64encode(parent).decode(),
    }
    (sent,) = fake.upscale_requests
    assert sent == {
        "key": "<redacted>",
        "init_image": f"{fake.base}/uploads/{upload_id}.png",
        "model_id": {2: "RealESRGAN_x2plus", 4: "RealESRGAN_x4plus"}[factor],
        "scale": factor,
        "face_enhance": False,
        "webhook": None,
        "track_id": None,
    }
    assert (job.scale, fake.charges) == (factor, [upscale_id])
    assert fake.submits == []  # no text-to-image job: no model redraws it
    # the key went in the bodies only: never in a URL the backend asked for
    assert all(fake.api_key not in r.path for r in fake.requests)


async def test_an_upscale_answered_processing_is_fetched_until_done(fake: FakeModelsLab, tmp_path: Path) -> None:
    sha = stored_input(tmp_path, textured(128, 128))
    fake.inject_upscale(Fault("processing", polls=2, eta=0.01))
    fake.inject_fetch(Fault("http", status=503))  # a failed fetch is simply fetched again
    backend = ModelsLabBackend(CATALOG, settings(fake), tmp_path, eta_cap=0.05)
    try:
        (image,) = await backend.generate(upscale_request(sha, 128, 128, 2))
    finally:
        await backend.aclose()
    assert Image.open(io.BytesIO(image.data)).size == (256, 256)
    (job,) = fake.upscales.values()
    assert job.fetches == 3 and len(fake.upscale_requests) == 1 and len(fake.charges) == 1
    assert [r.body for r in fake.fetches][-1] == {"key": "<redacted>", "request_id": job.id}


async def test_an_upscale_refused_by_modelslab_is_one_sentence_and_nothing_is_stored(
    service, fake: FakeModelsLab, tmp_path: Path
) -> None:
    svc, history = service
    first, _ = await outcome(svc, "a red fox --seed 42 --size 512x512")
    assert first is not None
    fake.inject_upscale(Fault("error", message="Image could not be processed."))
    generation, error = await upscaled(svc, "#1", 2)
    assert generation is None
    assert error == (
        "The ModelsLab backend could not make the image: it refused the upscale (Image could not be processed)."
    )
    assert fake.api_key not in error and len(fake.upscale_requests) == 1 and fake.upscales == {}
    stored = await history.generations.recent("console", "alice")
    assert [g.id for g in stored if g.status == "done"] == [first.id]
    await assert_nothing_half_written(history, tmp_path)


async def test_an_upscale_answer_lost_after_modelslab_may_have_started_is_not_sent_again(
    fake: FakeModelsLab, tmp_path: Path
) -> None:
    sha = stored_input(tmp_path, textured(128, 128))
    fake.inject_upscale(Fault("http", status=503))  # accepted and charged; only the answer failed
    backend = ModelsLabBackend(CATALOG, settings(fake), tmp_path, eta_cap=0.05)
    try:
        with pytest.raises(BackendUnavailable, match="it answered HTTP 503, so it was not sent again"):
            await backend.generate(upscale_request(sha, 128, 128, 2))
    finally:
        await backend.aclose()
    assert len(fake.upscale_requests) == 1 and len(fake.charges) == 1


async def test_an_upscale_refused_for_its_queue_is_sent_again(fake: FakeModelsLab, tmp_path: Path) -> None:
    sha = stored_input(tmp_path, textured(128, 128))
    fake.inject_upscale(Fault("http", status=429, retry_after=0.05))  # refused before it started
    backend = ModelsLabBackend(CATALOG, settings(fake), tmp_path, eta_cap=0.05)
    try:
        (image,) = await backend.generate(upscale_request(sha, 128, 128, 2))
    finally:
        await backend.aclose()
    assert (image.width, image.height) == (256, 256)
    assert len(fake.upscale_requests) == 2 and len(fake.charges) == 1


async def test_an_input_over_the_upload_limit_is_refused_before_anything_is_sent(
    fake: FakeModelsLab, tmp_path: Path
) -> None:
    noise = Image.frombytes("RGBA", (1024, 1024), random.Random(1).randbytes(1024 * 1024 * 4))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    sha = stored_input(tmp_path, buffer.getvalue())
    backend = ModelsLabBackend(CATALOG, settings(fake), tmp_path, eta_cap=0.05)
    try:
        with pytest.raises(BackendUnavailable) as refused:
            await backend.generate(upscale_request(sha, 1024, 1024, 2))
    finally:
        await backend.aclose()
    assert str(refused.value).startswith("The ModelsLab backend could not make the image: the image is ")
    assert str(refused.value).endswith("MB as sent, more than the 5 MB its upload takes, so nothing was sent.")
    assert fake.requests == []


async def test_an_upscale_through_the_service_stores_the_generation_with_its_parent(
    service, fake: FakeModelsLab, tmp_path: Path
) -> None:
    svc, history = service
    first, _ = await outcome(svc, "a red fox --seed 42 --size 512x384")
    assert first is not None
    generation, error = await upscaled(svc, "#1", 4)
    assert error is None and generation is not None
    request = generation.request
    assert request.init_image is not None and request.upscale == 4
    # what is stored is what ran: ModelsLab's upscaler redraws nothing, so no strength
    assert (request.strength, request.upscaler, request.run_steps) == (None, None, 0)
    (image,) = generation.images
    stored = Image.open(tmp_path / image.path)
    assert stored.size == (image.width, image.height) == (2048, 1536)
    assert stored.convert("RGB").getpixel((1000, 700)) == colour_for_seed(42)
    assert (generation.action, generation.parent_id, image.seed) == ("upscale", first.id, 42)
    assert (await history.generations.get(generation.id)).action == "upscale"
    assert UPSCALE_NOTE in generation.warnings
    (upload_id,) = fake.uploads
    assert fake.uploads[upload_id] == (tmp_path / input_path(request.init_image)).read_bytes()
    assert len(fake.submits) == 1 and len(fake.upscale_requests) == 1  # the first image, then the upscale


async def test_a_private_image_is_not_upscaled_through_a_public_link(service, fake: FakeModelsLab) -> None:
    """ModelsLab's upscaler reads the image from a public link: a private image is refused, nothing is sent."""
    svc, history = service
    await svc.user_settings.update(WHO, {"private": True})
    first, _ = await outcome(svc, "a red fox --seed 42 --size 512x384")
    assert first is not None and first.private
    with pytest.raises(InvalidOption) as refused:
        await svc.upscale(WHO, 1, 2)
    assert str(refused.value) == (
        "Upscale of a private image is refused here: ModelsLab's upscaler reads the image from a public link"
        " that works for 24 hours."
    )
    assert fake.uploads == {} and fake.upscale_requests == []
    assert len(await history.generations.recent(WHO.platform, WHO.user_id)) == 1


async def test_an_upscale_of_a_flagged_image_is_flagged_too(service, fake: FakeModelsLab) -> None:
    """ModelsLab's upscaler checks nothing: the result of a flagged parent keeps its flag (shown as a spoiler)."""
    svc, history = service
    fake.nsfw_seeds = {42}
    first, _ = await outcome(svc, "a red fox --seed 42 --size 512x384")
    assert first is not None and first.images[0].nsfw is True
    generation, error = await upscaled(svc, "#1", 2)
    assert error is None and generation is not None
    assert [image.nsfw for image in (await history.generations.get(generation.id)).images] == [True]
    fake.nsfw_seeds = set()
    second, _ = await outcome(svc, "a blue fox --seed 43 --size 512x384")
    assert second is not None
    clean, _ = await upscaled(svc, f"#{second.id}", 2)
    assert clean is not None and [image.nsfw for image in clean.images] == [None]


async def test_modelslab_refuses_describe_naming_the_backends_that_can(fake: FakeModelsLab, tmp_path: Path) -> None:
    """None of its endpoints the bot uses captions an image: the capability sentence, and nothing sent."""
    from bot.ports import DescribingBackend

    backend = ModelsLabBackend(CATALOG, settings(fake), tmp_path)
    sentence = "Describe is not available on ModelsLab; the local backend and Runware can."
    try:
        assert isinstance(backend, DescribingBackend)
        with pytest.raises(InvalidOption, match=f"^{sentence}$") as refused:
            backend.check_describe()
        assert refused.value.option == "describe"
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
        with pytest.raises(InvalidOption, match=f"^{sentence}$"):
            await backend.describe(buffer.getvalue())
    finally:
        await backend.aclose()
    assert fake.requests == [] and fake.charges == []

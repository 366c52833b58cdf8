"""The ModelsLab backend through the image service, against the loopback fake of ModelsLab's API.

Each fault asserts what the user is told, what history keeps, and that ModelsLab
charged exactly once: a submit is never resent once ModelsLab may have started it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.config import ModelsLabSettings
from bot.errors import InvalidOption
from bot.service import ImageService
from inference.modelslab import ModelsLabBackend
from storage import SqliteDatabase
from tests.fakes.modelslab import FakeModelsLab, Fault, colour_for_seed
from tests.fakes.service import started_service
from tests.inference.remote import CATALOG, WHO, assert_aftermath, only, outcome


@pytest.fixture
async def fake() -> AsyncIterator[FakeModelsLab]:
    async with FakeModelsLab() as fake:
        yield fake


def settings(fake: FakeModelsLab, **changes: object) -> ModelsLabSettings:
    values: dict[str, object] = {"api_key": fake.api_key, "url": fake.url, "retry_budget": 2.0, "timeout": 5.0}
    return ModelsLabSettings(**(values | changes))  # type: ignore[arg-type]


@pytest.fixture
async def service(fake: FakeModelsLab, tmp_path: Path) -> AsyncIterator[tuple[ImageService, SqliteDatabase]]:
    backend = ModelsLabBackend(CATALOG, settings(fake), eta_cap=0.05)
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
    backend = ModelsLabBackend(CATALOG, settings(fake, timeout=0.3), eta_cap=0.05)
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
    backend = ModelsLabBackend(CATALOG, ModelsLabSettings(api_key=key, url=url, retry_budget=0.5))
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
    assert "httpx" in caplog.text  # the requests were logged, without it


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


async def test_an_upscale_is_refused_naming_the_backends_that_can(service, fake: FakeModelsLab) -> None:
    """Super-resolution takes a URL only, and the bot serves none (see inference/capabilities.py): refused."""
    svc, history = service
    await outcome(svc, "a red fox --seed 42 --size 256x256")
    with pytest.raises(InvalidOption) as refused:
        await svc.upscale(WHO, "#1", 2)
    assert str(refused.value) == "Upscale is not available on ModelsLab; the local backend and Runware can."
    assert len(fake.submits) == 1 and len(await history.generations.recent("console", "alice")) == 1

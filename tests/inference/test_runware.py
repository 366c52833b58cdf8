"""The Runware backend through the image service, against the loopback fake of Runware's REST API.

Each fault asserts what the user is told, what history keeps (the cost too),
and that Runware charged each task once: retries resend the same taskUUID.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
from PIL import Image

from bot.actions import result_actions
from bot.catalog import KINDS, Catalog
from bot.config import RunwareSettings
from bot.errors import BackendUnavailable, InvalidOption
from bot.images import check_image, input_path
from bot.pngmeta import parse_parameters, read_text
from bot.request import GenerationRequest
from bot.service import ImageService
from inference.runware import UPSCALE_NOTE, RunwareBackend, build_task
from storage import SqliteDatabase
from tests.fakes.runware import COST_PER_IMAGE, COST_PER_UPSCALE, FakeRunware, Fault
from tests.fakes.service import started_service
from tests.inference.remote import CATALOG, WHO, assert_aftermath, only, outcome, request, upscaled


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunware]:
    async with FakeRunware() as fake:
        yield fake


def settings(fake: FakeRunware, **changes: object) -> RunwareSettings:
    # Three retries with full jitter may wait up to 0.5 + 1 + 2 s: the budget must cover the worst draw.
    values: dict[str, object] = {"api_key": fake.api_key, "url": fake.url, "retry_budget": 10.0, "timeout": 5.0}
    return RunwareSettings(**(values | changes))  # type: ignore[arg-type]


@pytest.fixture
async def running(fake: FakeRunware, tmp_path: Path) -> AsyncIterator[tuple[ImageService, SqliteDatabase]]:
    backend = RunwareBackend(CATALOG, settings(fake), tmp_path, poll_interval=0.01)
    try:
        async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as started:
            yield started
    finally:
        await backend.aclose()


def colour(seed: int) -> tuple[int, int, int]:
    import hashlib

    r, g, b = hashlib.sha256(f"{seed}".encode()).digest()[:3]
    return r, g, b


async def test_images_arrive_with_seeds_refiner_split_and_cost(running, fake: FakeRunware, tmp_path: Path) -> None:
    service, history = running
    generation, error = await outcome(
        service, "a red fox --seed 42 --n 2 --steps 30 --refiner 80 --lora pixel-art-remote:0.8 --ar 1:1"
    )
    assert error is None and generation is not None
    assert [image.seed for image in generation.images] == [42, 43]
    for image in generation.images:
        png = Image.open(io.BytesIO((tmp_path / image.path).read_bytes()))
        assert png.format == "PNG" and png.size == (1024, 1024)
        assert png.getpixel((0, 0)) == colour(image.seed)
    (task,) = fake.tasks.values()
    assert task.request["refiner"] == {"model": "civitai:101055@128080", "startStep": 24}
    assert task.request["lora"] == [{"model": "civitai:120096@135931", "weight": 0.8}]
    assert (await only(history)).cost == pytest.approx(2 * COST_PER_IMAGE)
    assert len(fake.charges) == 1 and len(fake.downloads) == 2


async def test_base64_output_needs_no_download(fake: FakeRunware, tmp_path: Path) -> None:
    backend = RunwareBackend(CATALOG, settings(fake, output_type="base64Data"), tmp_path)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, _):
        generation, error = await outcome(service, "a red fox --seed 3")
    await backend.aclose()
    assert error is None and generation is not None and generation.images[0].seed == 3
    assert fake.downloads == []


@pytest.mark.parametrize(
    ("fault", "sentence"),
    [
        (
            Fault("error400", parameter="steps", message="Value must be between 1 and 100."),
            "The Runware backend could not make the image: it refused the steps (Value must be between 1 and 100).",
        ),
        (
            Fault("status", status=402),
            "The Runware backend could not make the image: the Runware account has no credit left.",
        ),
        (
            Fault("status", status=403),
            "The Runware backend could not make the image: the API key may not use this model or feature.",
        ),
    ],
)
async def test_final_refusals_are_one_sentence_and_not_retried(running, fake, fault: Fault, sentence: str) -> None:
    service, history = running
    fake.inject(fault)
    generation, error = await outcome(service, "a red fox")
    assert generation is None and error == sentence
    assert (await only(history)).error == sentence
    assert len(fake.calls("imageInference")) == 1 and fake.charges == []


async def test_a_wrong_key_is_final_and_never_logged(fake: FakeRunware, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    backend = RunwareBackend(CATALOG, settings(fake, api_key="rw-wrong-key"), tmp_path)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, _):
        _, error = await outcome(service, "a red fox")
    await backend.aclose()
    assert error == (
        "The Runware backend could not make the image: it refused the server's API key"
        " (the bot's operator must check IMAGEBOT_RUNWARE_API_KEY)."
    )
    # Which logger wrote it, should one ever do: the failure then names it (one full run saw the key, once).
    leaks = [f"{r.name} {r.pathname}:{r.lineno}" for r in caplog.records if "rw-wrong-key" in r.getMessage()]
    assert not leaks and "rw-wrong-key" not in caplog.text, leaks
    # httpx did log the requests (by the records' names: a test before this one in the same process, Ray's,
    # may have changed how the captured text is formatted).
    assert any(record.name.startswith("httpx") for record in caplog.records)
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "faults",
    [
        [Fault("status", status=429, retry_after=0.05)],
        [Fault("status", status=503), Fault("status", status=502), Fault("status", status=504)],
        [Fault("status", status=500), Fault("status", status=408)],
        [Fault("hang_before", seconds=0.5)],
    ],
    ids=["429-retry-after", "503-502-504", "500-408", "timeout-before-accepting"],
)
async def test_transient_failures_are_retried_with_the_same_task_uuid(running, fake, faults) -> None:
    service, history = running
    fake.inject(*faults)
    generation, error = await outcome(service, "a red fox")
    assert error is None and generation is not None
    sent = fake.calls("imageInference")
    assert len(sent) == len(faults) + 1
    assert len({task["taskUUID"] for task in sent}) == 1
    assert len(fake.charges) == 1 and (await only(history)).cost == pytest.approx(COST_PER_IMAGE)


async def test_retry_after_is_honoured(running, fake: FakeRunware) -> None:
    fake.inject(Fault("status", status=429, retry_after=0.3))
    await outcome(running[0], "a red fox")
    first, second = [r for r in fake.requests if r.method == "POST" and r.tasks][:2]
    assert second.at - first.at >= 0.3


@pytest.mark.parametrize(
    "fault", [Fault("hang_after", seconds=3.0), Fault("malformed")], ids=["answer-lost-to-timeout", "unreadable-answer"]
)
async def test_an_accepted_task_whose_answer_was_lost_is_collected_not_paid_again(
    fake: FakeRunware, tmp_path: Path, fault: Fault
) -> None:
    fake.inject(fault)
    backend = RunwareBackend(CATALOG, settings(fake, timeout=0.5), tmp_path, poll_interval=0.01)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, history):
        generation, error = await outcome(service, "a red fox --n 2 --seed 11")
        assert error is None and generation is not None
        assert [image.seed for image in generation.images] == [11, 12]
        assert (await only(history)).cost == pytest.approx(2 * COST_PER_IMAGE)
    await backend.aclose()
    (task,) = fake.tasks.values()
    assert task.posts == 2  # the retry met conflictTaskUUID...
    assert task.polls >= 1  # ...and the images came from getResponse
    assert len(fake.charges) == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda answer: answer["data"],
        lambda answer: {
            "data": [{**item, "seed": "eleven", "cost": "cheap", "imageURL": 7} for item in answer["data"]]
        },
        lambda answer: {"data": {"images": answer["data"]}},
    ],
    ids=["array-not-object", "mistyped-results", "data-not-a-list"],
)
async def test_an_answer_of_the_wrong_shape_is_collected_not_paid_again(
    running, fake: FakeRunware, tmp_path: Path, mangle
) -> None:
    """Valid JSON that is not Runware's answer is an unreadable answer: same taskUUID again, images collected."""
    service, history = running
    fake.inject(Fault("wrong_shape", mangle=mangle))
    generation, error = await outcome(service, "a red fox --n 2 --seed 11")
    assert error is None and generation is not None
    assert [image.seed for image in generation.images] == [11, 12]
    assert (await only(history)).cost == pytest.approx(2 * COST_PER_IMAGE)
    assert len(fake.charges) == 1
    await assert_aftermath(service, history, tmp_path)


@pytest.mark.parametrize("async_above", [120.0, 0.0], ids=["sync", "async"])
async def test_runwares_error_body_in_a_200_answer_is_one_sentence(
    fake: FakeRunware, tmp_path: Path, async_above: float
) -> None:
    fault = Fault("error200", parameter="positivePrompt", message="Invalid value for positivePrompt parameter.")
    fake.inject(fault)
    backend = RunwareBackend(CATALOG, settings(fake, async_above=async_above), tmp_path, poll_interval=0.01)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, history):
        generation, error = await outcome(service, "a red fox")
        sentence = (
            "The Runware backend could not make the image: it refused the prompt"
            " (Invalid value for positivePrompt parameter)."
        )
        assert generation is None and error == sentence
        assert (await only(history)).status == "failed"
        assert len(fake.calls("imageInference")) == 1 and fake.charges == []  # final: not sent again
        await assert_aftermath(service, history, tmp_path)
    await backend.aclose()


async def test_an_answer_trickling_past_the_timeout_is_given_up_and_collected(
    fake: FakeRunware, tmp_path: Path
) -> None:
    """Each write comes well within the read timeout, but the whole answer would take 2 s, past the 0.5 s allowed."""
    fake.inject(Fault("trickle", seconds=0.05, pieces=40))
    backend = RunwareBackend(CATALOG, settings(fake, timeout=0.5), tmp_path, poll_interval=0.01)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, history):
        generation, error = await outcome(service, "a red fox --seed 11")
        assert error is None and generation is not None and generation.images[0].seed == 11
        (task,) = fake.tasks.values()
        assert task.posts == 2 and len(fake.charges) == 1  # given up, then met conflictTaskUUID: paid once
        await assert_aftermath(service, history, tmp_path)
    await backend.aclose()


async def test_a_partial_answer_is_completed_by_polling(running, fake: FakeRunware) -> None:
    fake.inject(Fault("partial", returned=1))
    generation, error = await outcome(running[0], "a red fox --n 3 --seed 20")
    assert error is None and generation is not None
    assert [image.seed for image in generation.images] == [20, 21, 22]
    assert len(fake.charges) == 1


async def test_images_lost_at_runware_leave_the_rest_with_a_note(running, fake: FakeRunware) -> None:
    service, history = running
    fake.inject(Fault("partial", returned=1, lost=True))
    generation, error = await outcome(service, "a red fox --n 3 --seed 20")
    assert error is None and generation is not None
    assert [image.seed for image in generation.images] == [20]
    stored = await only(history)
    assert stored.warnings[-1] == "Only 1 of 3 images came back."
    # The cost kept is what Runware reported: its answers give a cost for delivered images only.
    assert stored.cost == pytest.approx(COST_PER_IMAGE)
    assert len(fake.charges) == 1


async def test_an_expired_image_url_fails_the_generation_but_keeps_its_cost(running, fake: FakeRunware) -> None:
    service, history = running
    fake.inject(Fault("url_404"))
    generation, error = await outcome(service, "a red fox")
    assert generation is None
    assert error == (
        "The Runware backend could not make the image: the finished images could not be downloaded"
        " (their links failed)."
    )
    stored = await only(history)
    assert stored.status == "failed" and stored.cost == pytest.approx(COST_PER_IMAGE)
    assert len(fake.charges) == 1


async def test_a_long_job_is_queued_at_runware_and_polled(fake: FakeRunware, tmp_path: Path) -> None:
    fake.inject(Fault("processing", polls=3))
    backend = RunwareBackend(CATALOG, settings(fake, async_above=10), tmp_path, poll_interval=0.01)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, _):
        generation, error = await outcome(service, "a red fox --steps 30 --n 2 --seed 5")  # 60 MP·steps > 10
    await backend.aclose()
    assert error is None and generation is not None and len(generation.images) == 2
    (task,) = fake.tasks.values()
    assert task.delivery == "async" and task.polls == 4


async def test_an_unavailable_api_gives_up_within_the_budget(fake: FakeRunware, tmp_path: Path) -> None:
    fake.inject(*[Fault("status", status=503) for _ in range(50)])
    backend = RunwareBackend(CATALOG, settings(fake, retry_budget=0.5), tmp_path)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, history):
        generation, error = await outcome(service, "a red fox")
        assert generation is None and error is not None
        assert error.startswith("The Runware backend could not make the image: it was unavailable for ")
        assert error.endswith(" over 0.5 s (last: HTTP 503).")
        assert (await only(history)).status == "failed"
    await backend.aclose()
    assert fake.charges == []


async def test_what_runware_cannot_do_is_refused_before_anything_is_queued_or_sent(running, fake) -> None:
    service, history = running
    with pytest.raises(InvalidOption, match="Lora 'pixel-art' is not available on Runware; the local backend can"):
        await service.imagine("a red fox --lora pixel-art", WHO)
    with pytest.raises(InvalidOption, match="'DPM\\+\\+ 3M SDE' is not available on Runware"):
        await service.imagine("a red fox --sampler 'DPM++ 3M SDE'", WHO)
    assert fake.requests == [] and await history.generations.recent("console", "alice") == []


async def test_runwares_content_check_verdict_is_stored_per_image(running, fake: FakeRunware) -> None:
    """The task asks for safety.checkContent; each image's NSFWContent answer is kept with it."""
    service, history = running
    fake.nsfw_seeds = {43}
    generation, error = await outcome(service, "a red fox --seed 42 --n 2 --steps 20")
    assert error is None and generation is not None
    (task,) = fake.calls("imageInference")
    assert task["safety"] == {"checkContent": True}
    stored = await history.generations.get(generation.id)
    assert [(image.seed, image.nsfw) for image in stored.images] == [(42, False), (43, True)]


# -- input images: seedImage, maskImage, strength ------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "strength", "runs", "sent_steps"),
    [(40, 0.5, 20, 40), (30, 0.25, 8, 30), (100, 0.07, 7, 99)],
    ids=["the-docs-example", "a-half-rounds-up", "no-float-fits-100-steps"],
)
async def test_image_to_image_sends_the_stored_input_and_runs_exactly_the_steps_shown(
    running, fake: FakeRunware, tmp_path: Path, steps: int, strength: float, runs: int, sent_steps: int
) -> None:
    """The stored PNG travels as a data URI; the steps Runware runs are the ones the user was told."""
    service, history = running
    first, _ = await outcome(service, "a red fox --seed 42 --ar 1:1")
    assert first is not None
    generation, error = await outcome(service, f"a fox at dusk --image #1 --strength {strength} --steps {steps}")
    assert error is None and generation is not None
    request = generation.request
    assert request.init_image is not None and request.run_steps == runs
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    assert task.seed_image == (tmp_path / input_path(request.init_image)).read_bytes()
    assert task.request["seedImage"].startswith("data:image/png;base64,")
    assert task.steps_run == runs and task.request["steps"] == sent_steps
    assert "maskImage" not in task.request and fake.calls("imageUpload") == []
    assert (await history.generations.get(generation.id)).cost == pytest.approx(COST_PER_IMAGE)


async def test_inpainting_sends_the_mask_with_the_image(running, fake: FakeRunware, tmp_path: Path) -> None:
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    await outcome(service, "a white circle --seed 43 --ar 1:1")
    generation, error = await outcome(service, "a fox in a hat --image #1 --mask #2 --strength 1 --steps 20")
    assert error is None and generation is not None
    request = generation.request
    assert request.init_image is not None and request.mask_image is not None
    (task,) = [task for task in fake.tasks.values() if "maskImage" in task.request]
    assert task.seed_image == (tmp_path / input_path(request.init_image)).read_bytes()
    assert task.mask_image == (tmp_path / input_path(request.mask_image)).read_bytes()
    assert Image.open(io.BytesIO(task.mask_image)).mode == "L"
    assert task.request["strength"] == 1.0 and task.steps_run == 20
    # The shipped catalog gives SDXL's inpainter no Runware id: the model itself repaints, and the row says so.
    assert request.inpainter is None and task.request["model"] == CATALOG.get("model", "sdxl").runware


async def test_an_inpainter_with_a_runware_id_is_the_model_of_the_inpainting_task(
    fake: FakeRunware, tmp_path: Path
) -> None:
    """An operator who gives the inpainter an AIR id has Runware repaint with it: its id is the task's model, the
    row names it, a reroll keeps it, and a text-to-image task still runs the model."""
    inpainter = CATALOG.get("inpainter", "sdxl-inpainting").model_copy(update={"runware": "civitai:1@2"})
    catalog = Catalog([*(e for kind in KINDS for e in CATALOG.entries(kind) if e.name != inpainter.name), inpainter])
    backend = RunwareBackend(catalog, settings(fake), tmp_path, poll_interval=0.01)
    try:
        async with started_service(backend, tmp_path, catalog=catalog, default_model="sdxl") as (service, _):
            await outcome(service, "a red fox --seed 42 --ar 1:1")
            await outcome(service, "a white circle --seed 43 --ar 1:1")
            generation, error = await outcome(service, "a fox in a hat --image #1 --mask #2 --strength 1")
            assert error is None and generation is not None and generation.request.inpainter == "sdxl-inpainting"
            rerolled = await (await service.reroll(WHO, generation.id)).result()
    finally:
        await backend.aclose()
    models = [fake.tasks[call["taskUUID"]].request["model"] for call in fake.calls("imageInference")]
    sdxl = CATALOG.get("model", "sdxl").runware
    assert models == [sdxl, sdxl, "civitai:1@2", "civitai:1@2"]
    assert rerolled.request.inpainter == "sdxl-inpainting"


async def test_an_input_of_another_size_is_sent_at_the_output_size(running, fake: FakeRunware) -> None:
    """A 1344×768 result as input of a 1:1 request would leave the resizing to Runware: it is resized first."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 16:9")
    generation, error = await outcome(service, "a fox --image #1 --strength 0.6")
    assert error is None and generation is not None
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    assert task.seed_image is not None
    sent = Image.open(io.BytesIO(task.seed_image))
    assert sent.size == (generation.request.width, generation.request.height)


async def test_a_retry_after_a_lost_answer_resends_the_image_in_the_same_task_and_pays_once(
    fake: FakeRunware, tmp_path: Path
) -> None:
    backend = RunwareBackend(CATALOG, settings(fake, timeout=0.5), tmp_path, poll_interval=0.01)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, history):
        await outcome(service, "a red fox --seed 42 --ar 1:1")
        fake.inject(Fault("hang_after", seconds=3.0))  # accepted and charged, its answer lost to the timeout
        generation, error = await outcome(service, "a fox at dusk --image #1 --strength 0.5")
        assert error is None and generation is not None
        sent = [task for task in fake.calls("imageInference") if "seedImage" in task]
        assert len(sent) == 2 and len({task["taskUUID"] for task in sent}) == 1
        assert sent[0]["seedImage"] == sent[1]["seedImage"]
        assert fake.calls("imageUpload") == []
        assert len(fake.charges) == 2  # the first image, then the image-to-image task once
        assert (await history.generations.get(generation.id)).cost == pytest.approx(COST_PER_IMAGE)
    await backend.aclose()


async def test_an_input_gone_from_disk_is_one_sentence_and_nothing_is_sent(fake: FakeRunware, tmp_path: Path) -> None:
    backend = RunwareBackend(CATALOG, settings(fake), tmp_path)
    gone = GenerationRequest.from_dict({**request("a fox").to_dict(), "init_image": "ab" * 32, "strength": 0.5})
    with pytest.raises(BackendUnavailable) as failed:
        await backend.generate(gone)
    await backend.aclose()
    assert str(failed.value) == (
        "The Runware backend could not make the image: its input image is no longer stored here"
        " (it was forgotten or expired), so nothing was sent."
    )
    assert fake.requests == []


async def test_a_refiner_after_an_input_image_is_refused_before_anything_is_sent(running, fake: FakeRunware) -> None:
    service, history = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    with pytest.raises(InvalidOption) as refused:
        await service.imagine("a fox --image #1 --refiner 80", WHO)
    assert str(refused.value) == "Refiner cannot follow an input image on Runware; the local backend can."
    assert len(fake.calls("imageInference")) == 1 and len(await history.generations.recent("console", "alice")) == 1


async def test_vary_zoom_and_pan_of_a_refined_image_run_without_the_refiner_and_say_so(
    running, fake: FakeRunware
) -> None:
    """Runware takes no refiner after an input image, and a user who asks for a variation of a refined image asks
    for the image: the seedImage task runs on the base model alone, with a note, instead of being refused."""
    service, _ = running
    first, error = await outcome(service, "a red fox --seed 42 --size 512x512 --steps 30 --refiner 80")
    assert error is None and first is not None and first.request.refiner is not None
    for job in [await service.vary(WHO, first.id, "strong"), await service.pan(WHO, first.id, "left")]:
        generation = await job.result()
        assert generation.status == "done" and generation.request.refiner is None
        assert "The refiner is left out: it cannot follow an input image on Runware; the local backend can." in (
            generation.warnings
        )
        task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
        assert "refiner" not in task.request and task.seed_image is not None


async def test_no_button_under_a_runware_image_is_one_it_would_refuse(running, fake: FakeRunware) -> None:
    """Every button under a plain image; no Refine under a variation (no refiner after an input image), no
    Reroll or Refine under an upscale its upscaler made alone (no model step to redo)."""
    service, _ = running

    def withheld(request: GenerationRequest) -> list[str]:
        # Vary (Region) is the gallery's, and this service serves none.
        return [a for a in result_actions(request) if a not in service.result_actions(request) and a != "region"]

    first, _ = await outcome(service, "a red fox --seed 42 --size 512x512")
    assert first is not None
    assert withheld(first.request) == []
    varied = await (await service.vary(WHO, first.id, "subtle")).result()
    assert withheld(varied.request) == ["refine"]
    larger = await (await service.upscale(WHO, first.id, 2)).result()
    assert larger.status == "done" and larger.request.upscales_alone
    assert withheld(larger.request) == ["reroll", "refine", "edit"]  # no /imagine text makes an upscale


async def test_forms_and_autocomplete_offer_only_what_has_a_runware_id(running) -> None:
    """The catalog's tiny parts and local-only LoRAs have no Runware id: not offered; every refiner still is."""
    service, _ = running
    offered = service.offered
    assert offered.names("model") == ["sdxl"]
    assert offered.names("lora") == ["pixel-art-remote", "runware-only"]
    assert offered.names("controlnet") == ["canny-remote", "depth-remote", "ip-adapter-remote"]
    assert offered.names("refiner") == service.catalog.names("refiner")


# -- upscale: the imageUpscale task -------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4])
async def test_an_upscale_sends_the_stored_image_and_the_factor_and_comes_back_that_much_larger(
    running, fake: FakeRunware, tmp_path: Path, factor: Literal[2, 4]
) -> None:
    service, history = running
    await outcome(service, "a red fox --seed 42 --size 512x384 --format png")
    generation, error = await upscaled(service, "#1", factor)
    assert error is None and generation is not None
    request = generation.request
    assert request.init_image is not None and request.upscale == factor
    # what is stored is what ran: Runware's upscaler redraws nothing, so no strength (nor a catalog upscaler)
    assert (request.strength, request.upscaler, request.run_steps) == (None, None, 0)
    fields = parse_parameters(read_text((tmp_path / generation.images[0].path).read_bytes())["parameters"])["fields"]
    assert "Denoising strength" not in fields and fields["Postprocess upscaler"] == "the backend's own"
    (sent,) = fake.calls("imageUpscale")
    assert sent["upscaleFactor"] == factor and sent["inputImage"].startswith("data:image/png;base64,")
    task = fake.tasks[sent["taskUUID"]]
    # the stored input as it is (not resized to the output size first: Runware multiplies its sides)
    assert task.input_image == (tmp_path / input_path(request.init_image)).read_bytes()
    (image,) = generation.images
    stored = Image.open(tmp_path / image.path)
    assert stored.size == (image.width, image.height) == (512 * factor, 384 * factor)
    assert (generation.action, generation.parent_id, image.seed) == ("upscale", 1, 42)
    assert len(fake.calls("imageInference")) == 1  # the first image only: no model redraws the upscale
    assert (await history.generations.get(generation.id)).cost == pytest.approx(COST_PER_UPSCALE)
    assert UPSCALE_NOTE in generation.warnings


async def test_an_upscale_retried_after_a_lost_answer_keeps_its_task_uuid_and_pays_once(
    fake: FakeRunware, tmp_path: Path
) -> None:
    backend = RunwareBackend(CATALOG, settings(fake, timeout=0.5), tmp_path, poll_interval=0.01)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, history):
        await outcome(service, "a red fox --seed 42 --size 512x512")
        fake.inject(Fault("hang_after", seconds=3.0))  # accepted and charged, its answer lost to the timeout
        generation, error = await upscaled(service, "#1", 2)
        assert error is None and generation is not None
        sent = fake.calls("imageUpscale")
        assert len(sent) == 2 and sent[0] == sent[1]
        (task,) = [task for task in fake.tasks.values() if task.task_type == "imageUpscale"]
        assert task.posts == 2 and task.polls >= 1
        assert [cost for _, cost in fake.charges] == [COST_PER_IMAGE, COST_PER_UPSCALE]
        assert (await history.generations.get(generation.id)).cost == pytest.approx(COST_PER_UPSCALE)
        assert (generation.images[0].width, generation.images[0].height) == (1024, 1024)
    await backend.aclose()


async def test_an_upscale_is_judged_by_runwares_content_check_again(running, fake: FakeRunware, tmp_path: Path) -> None:
    service, history = running
    first, _ = await outcome(service, "a red fox --seed 42 --size 512x512")
    assert first is not None
    # the input Runware gets: the result as the bot stores inputs (an upright PNG without metadata)
    stored = check_image(
        (tmp_path / first.images[0].path).read_bytes(), option="upscale", max_bytes=2**30, pixel_budget=2**30
    )
    fake.nsfw_inputs = {stored.sha256}
    generation, error = await upscaled(service, "#1", 2)
    assert error is None and generation is not None
    assert fake.calls("imageUpscale")[0]["safety"] == {"checkContent": True}
    assert [image.nsfw for image in (await history.generations.get(generation.id)).images] == [True]


async def test_an_upscale_of_a_refined_image_is_not_refused_for_the_refiner(running, fake: FakeRunware) -> None:
    """Runware refuses a refiner after an input image, but its upscaler runs no model: nothing to refuse."""
    service, _ = running
    first, error = await outcome(service, "a red fox --seed 42 --size 512x512 --refiner 80")
    assert error is None and first is not None and first.request.refiner is not None
    generation, error = await upscaled(service, "#1", 2)
    assert error is None and generation is not None
    assert len(fake.calls("imageUpscale")) == 1


async def test_an_outpaint_sends_the_kept_image_and_the_sides_and_comes_back_the_whole_size(
    running, fake: FakeRunware, tmp_path: Path
) -> None:
    """`--outpaint 64,128,0,128`: the seedImage is the image at the size it keeps, the sides go in `outpaint`."""
    service, _ = running
    first, _ = await outcome(service, "a red fox --seed 42 --size 768x768")
    assert first is not None
    generation, error = await outcome(service, "a fox in a wide meadow --image #1 --outpaint 64,128,0,128,8 --steps 20")
    assert error is None and generation is not None
    request = generation.request
    assert (request.width, request.height) == (1024, 832)
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    assert task.request["outpaint"] == {"top": 64, "right": 128, "bottom": 0, "left": 128, "blur": 8}
    assert (task.request["width"], task.request["height"]) == (1024, 832)
    assert task.seed_image is not None and Image.open(io.BytesIO(task.seed_image)).size == (768, 768)
    assert "maskImage" not in task.request and task.steps_run == request.run_steps
    (image,) = generation.images
    assert Image.open(tmp_path / image.path).size == (1024, 832)


async def test_the_zoom_out_button_keeps_the_size_and_sends_the_image_shrunk(
    running, fake: FakeRunware, tmp_path: Path
) -> None:
    """Zoom Out of a 1024² result: a 1024² task whose seedImage is the result at 640² and whose outpaint is
    192 on every side, and a 1024² image back."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --size 1024x1024")
    job = await service.zoom(WHO, 1)
    generation = await job.result()
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    assert task.request["outpaint"] == {"top": 192, "right": 192, "bottom": 192, "left": 192}
    assert (task.request["width"], task.request["height"]) == (1024, 1024)
    assert task.seed_image is not None and Image.open(io.BytesIO(task.seed_image)).size == (640, 640)
    (image,) = generation.images
    assert Image.open(tmp_path / image.path).size == (1024, 1024)


async def test_a_pan_button_grows_one_side_and_sends_the_image_at_its_own_size(
    running, fake: FakeRunware, tmp_path: Path
) -> None:
    """Pan left of a 1024² result: a 1536×1024 task whose seedImage is the result at 1024² and whose outpaint
    is 512 on the left alone, and a 1536×1024 image back."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --size 1024x1024")
    job = await service.pan(WHO, 1, "left")
    generation = await job.result()
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    assert task.request["outpaint"] == {"top": 0, "right": 0, "bottom": 0, "left": 512}
    assert (task.request["width"], task.request["height"]) == (1536, 1024)
    assert task.seed_image is not None and Image.open(io.BytesIO(task.seed_image)).size == (1024, 1024)
    (image,) = generation.images
    assert Image.open(tmp_path / image.path).size == (1536, 1024)


async def test_zoom_out_extends_every_side_evenly_on_runware(running, fake: FakeRunware) -> None:
    """`--zoom 2` on a 512² image: 256 on each side, a 1024² result, sent as Runware's outpaint object."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --size 512x512")
    generation, error = await outcome(service, "a fox far away --image #1 --zoom 2")
    assert error is None and generation is not None
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    assert task.request["outpaint"] == {"top": 256, "right": 256, "bottom": 256, "left": 256}
    assert (task.request["width"], task.request["height"]) == (1024, 1024)


async def test_a_weighted_prompt_asks_for_a1111s_weighting_and_a_plain_one_does_not(running, fake: FakeRunware) -> None:
    """`(words:1.3)` in the prompt or the negative sends promptWeighting sdEmbeds (A1111's syntax), which
    the fake accepts as the API reference lists it; a plain prompt, or a generation stored before
    weighting, is sent as written, without it."""
    service, _ = running
    for line in ("a (red:1.3) fox --seed 1", "a red fox --seed 2 --no [blurry]", "a red fox --seed 3 --no blurry"):
        generation, error = await outcome(service, line)
        assert error is None and generation is not None
    weightings = [task.request.get("promptWeighting") for task in fake.tasks.values()]
    assert weightings == ["sdEmbeds", "sdEmbeds", None]
    stored = request("a (red:1.3) fox --seed 4").model_copy(update={"prompt_weighting": False})
    assert "promptWeighting" not in build_task(stored, CATALOG, "0" * 8 + "-0000-4000-8000-" + "0" * 12)

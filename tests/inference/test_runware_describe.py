"""Describe on Runware: the ``imageCaption`` task through the real backend and the HTTP fake.

The fake captions the pixels it received ("a 64×64 picture, mostly red"), so each test can tell
that the image sent is the one described; its faults stand in for Runware's errors and lost answers.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.describe import Description
from bot.errors import BackendUnavailable
from bot.ports import DescribingBackend
from inference.runware import RunwareBackend
from tests.fakes.runware import COST_PER_CAPTION, FakeRunware, Fault
from tests.inference.remote import CATALOG
from tests.inference.test_runware import settings


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunware]:
    async with FakeRunware() as fake:
        yield fake


@pytest.fixture
async def backend(fake: FakeRunware, tmp_path: Path) -> AsyncIterator[RunwareBackend]:
    backend = RunwareBackend(CATALOG, settings(fake), tmp_path)
    try:
        yield backend
    finally:
        await backend.aclose()


def png(size: tuple[int, int], colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def answer_with(**changes: Any) -> Callable[[Any], Any]:
    """A `wrong_shape` mangle: Runware's answer with its item's fields changed (``...`` drops one)."""

    def mangle(answer: Any) -> Any:
        (item,) = answer["data"]
        changed = {**item, **changes}
        return {"data": [{key: value for key, value in changed.items() if value is not ...}]}

    return mangle


async def test_runware_describes_the_image_sent_and_says_what_it_cost(
    backend: RunwareBackend, fake: FakeRunware
) -> None:
    """One imageCaption task, the PNG as a data URI in inputImage, as the SDK's IImageCaption has it."""
    assert isinstance(backend, DescribingBackend)
    backend.check_describe()
    image = png((64, 64), "red")
    said = await backend.describe(image)
    assert said == Description("a 64×64 picture, mostly red", COST_PER_CAPTION)
    (sent,) = fake.calls("imageCaption")
    assert sent == {
        "taskUUID": sent["taskUUID"],
        "taskType": "imageCaption",
        "inputImage": "data:image/png;base64," + base64.b64encode(image).decode(),
        "includeCost": True,
    }
    assert fake.captions[sent["taskUUID"]].input_image == image
    assert fake.charges == [(sent["taskUUID"], COST_PER_CAPTION)] and fake.calls("imageUpload") == []
    assert (await backend.describe(png((96, 32), "blue"))).text == "a 96×32 picture, mostly blue"


async def test_the_caption_is_passed_on_as_runware_wrote_it(backend: RunwareBackend, fake: FakeRunware) -> None:
    """Flags, braces and control characters are the core's to clean (`bot.describe.as_prompt`), not the backend's."""
    raw = "  a fox --ar 16:9 {red,blue}\n\x07 "
    fake.inject(Fault("wrong_shape", mangle=answer_with(text=raw, cost=...)))
    assert await backend.describe(png((64, 64), "red")) == Description(raw, None)


@pytest.mark.parametrize(
    "changes",
    [{"text": ...}, {"text": None}, {"text": 42}, {"text": ["a fox"]}, {"text": {"en": "a fox"}}],
    ids=["no-text", "null", "number", "list", "object"],
)
async def test_an_answer_without_a_caption_is_one_sentence_that_keeps_its_cost(
    backend: RunwareBackend, fake: FakeRunware, changes: dict[str, Any]
) -> None:
    fake.inject(Fault("wrong_shape", mangle=answer_with(**changes)))
    with pytest.raises(BackendUnavailable) as failed:
        await backend.describe(png((64, 64), "red"))
    assert str(failed.value) == "The Runware backend could not describe the image: it answered without a caption."
    assert failed.value.cost == COST_PER_CAPTION  # Runware ran it: what it charged stays on the record
    assert len(fake.calls("imageCaption")) == 1


@pytest.mark.parametrize(
    ("fault", "sentence"),
    [
        (
            Fault("error400", parameter="inputImage", message="Unsupported image format."),
            "it refused the input image (Unsupported image format).",
        ),
        (
            Fault("error200", parameter="inputImage", message="Invalid image."),
            "it refused the input image (Invalid image).",
        ),
        (Fault("status", status=402), "the Runware account has no credit left."),
        (Fault("status", status=403), "the API key may not use this model or feature."),
    ],
    ids=["error-400", "error-in-a-200", "no-credit", "forbidden"],
)
async def test_a_refusal_is_one_sentence_and_not_retried(
    backend: RunwareBackend, fake: FakeRunware, fault: Fault, sentence: str
) -> None:
    fake.inject(fault)
    with pytest.raises(BackendUnavailable) as failed:
        await backend.describe(png((64, 64), "red"))
    message = str(failed.value)
    assert message == "The Runware backend could not describe the image: " + sentence
    assert message.splitlines() == [message] and failed.value.cost is None
    assert len(fake.calls("imageCaption")) == 1 and fake.charges == []


async def test_a_wrong_key_is_final_and_never_logged(
    fake: FakeRunware, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = RunwareBackend(CATALOG, settings(fake, api_key="rw-wrong-key"), tmp_path)
    try:
        with pytest.raises(BackendUnavailable) as failed:
            await backend.describe(png((64, 64), "red"))
    finally:
        await backend.aclose()
    assert str(failed.value) == (
        "The Runware backend could not describe the image: it refused the server's API key"
        " (the bot's operator must check IMAGEBOT_RUNWARE_API_KEY)."
    )
    assert "rw-wrong-key" not in caplog.text and "rw-wrong-key" not in str(failed.value)
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "faults",
    [
        [Fault("status", status=429, retry_after=0.05)],
        [Fault("status", status=503), Fault("status", status=502)],
        [Fault("hang_before", seconds=0.2)],
    ],
    ids=["429-retry-after", "503-502", "hang-before-accepting"],
)
async def test_transient_failures_are_retried_and_paid_once(
    backend: RunwareBackend, fake: FakeRunware, faults: list[Fault]
) -> None:
    fake.inject(*faults)
    said = await backend.describe(png((64, 64), "red"))
    assert said == Description("a 64×64 picture, mostly red", COST_PER_CAPTION)
    assert len(fake.calls("imageCaption")) == len(faults) + 1 and len(fake.charges) == 1


@pytest.mark.parametrize("fault", [Fault("malformed"), Fault("hang_after", seconds=3.0)], ids=["unreadable", "late"])
async def test_a_lost_answer_is_asked_again_under_a_fresh_task_uuid(
    fake: FakeRunware, tmp_path: Path, fault: Fault
) -> None:
    """The docs promise no getResponse for a caption: it is asked again, and Runware charges each that it ran."""
    fake.inject(fault)
    backend = RunwareBackend(CATALOG, settings(fake, timeout=1.0), tmp_path)
    try:
        said = await backend.describe(png((64, 64), "red"))
    finally:
        await backend.aclose()
    assert said == Description("a 64×64 picture, mostly red", COST_PER_CAPTION)
    first, second = fake.calls("imageCaption")
    assert first["taskUUID"] != second["taskUUID"] and first["inputImage"] == second["inputImage"]
    assert len(fake.charges) == 2


async def test_an_unavailable_api_gives_up_within_the_budget_in_one_sentence(fake: FakeRunware, tmp_path: Path) -> None:
    fake.inject(*[Fault("status", status=503) for _ in range(50)])
    backend = RunwareBackend(CATALOG, settings(fake, retry_budget=0.5), tmp_path)
    try:
        with pytest.raises(BackendUnavailable) as failed:
            await backend.describe(png((64, 64), "red"))
    finally:
        await backend.aclose()
    message = str(failed.value)
    assert message.startswith("The Runware backend could not describe the image: it was unavailable for ")
    assert message.endswith(" over 0.5 s (last: HTTP 503).") and message.splitlines() == [message]
    assert fake.charges == []

"""For the hosted-API backend tests: a catalog with Runware and ModelsLab ids, requests, outcomes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from bot.catalog import Catalog
from bot.errors import BotError
from bot.history import Generation
from bot.jobs import Requester
from bot.options import Defaults, Limits, parse_text
from bot.request import GenerationRequest
from bot.service import ImageService
from storage import SqliteDatabase
from tests.fakes.service import assert_nothing_half_written

WHO = Requester("console", "alice")
OTHER = Requester("console", "bob")

CATALOG = Catalog.from_toml(
    resources.files("bot").joinpath("models.toml").read_text(encoding="utf-8")
    + "\n"
    + Path(__file__).with_name("remote_catalog.toml").read_text(encoding="utf-8")
)


def request(line: str, seed: int = 7) -> GenerationRequest:
    """Return the request `/imagine <line>` makes with the sdxl default, with a seed."""
    parsed = parse_text(line, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=Limits(pixel_budget=4 * 2048**2))
    return parsed.request if parsed.request.seed is not None else parsed.request.with_seed(seed)


async def outcome(service: ImageService, line: str, who: Requester = WHO) -> tuple[Generation | None, str | None]:
    """Run `/imagine <line>` to its end: (the generation, None) or (None, the sentence the user sees)."""
    job = await service.imagine(line, who)
    try:
        return await job.result(), None
    except BotError as error:
        return None, str(error)


async def upscaled(service: ImageService, ref: str, factor: Literal[2, 4]) -> tuple[Generation | None, str | None]:
    """Run ``upscale <ref> <factor>`` to its end: (the generation, None) or (None, the sentence the user sees)."""
    job = await service.upscale(WHO, ref, factor)
    try:
        return await job.result(), None
    except BotError as error:
        return None, str(error)


async def only(history: SqliteDatabase) -> Generation:
    """Return the one generation in history."""
    (generation,) = await history.generations.recent(WHO.platform, WHO.user_id)
    return generation


async def assert_aftermath(service: ImageService, history: SqliteDatabase, data_dir: Path) -> None:
    """After a fault: the next user still gets an image, and nothing half-written stays behind."""
    generation, error = await outcome(service, "a blue fox", OTHER)
    assert error is None and generation is not None and generation.images
    await assert_nothing_half_written(history, data_dir)

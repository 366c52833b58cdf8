"""A running imagebot Discord bot, driven through the fake Discord by the real discord.py client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.discord import setup
from bot.config import DiscordSettings
from bot.jobs import Requester
from bot.ports import Backend
from bot.service import ImageService
from storage import SqliteDatabase
from tests.fakes.backend import FakeBackend
from tests.fakes.discord import FakeDiscord
from tests.fakes.service import started_service


@dataclass
class Running:
    """A bot connected to the fake, and what it stands on."""

    fake: FakeDiscord
    service: ImageService
    backend: Backend
    history: SqliteDatabase
    data_dir: Path
    bot: object
    task: asyncio.Task[None]

    def who(self, user: dict) -> Requester:
        """Return the requester the service knows a fake user as."""
        return Requester("discord", str(user["id"]))


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeDiscord, backend: Backend, data_dir: Path, prepare: Callable | None = None, **service_options
):
    """Start service and bot on `data_dir` (`prepare` gets the bot first); stop both (not the backend) on exit.

    The fake's endpoints reach discord.py through the settings alone, as in production.
    """
    settings = DiscordSettings(
        token="fake-token", api_base=fake.api_base, gateway_url=fake.gateway_url, progress_interval=0
    )
    async with started_service(backend, data_dir, **service_options) as (service, history):
        bot = setup(service, settings, data_dir=data_dir, guild_ready_timeout=0.1)
        if prepare is not None:
            prepare(bot)
        connections = fake.connections
        task = asyncio.create_task(bot.start("fake-token"))
        try:
            await fake.wait_ready(connections + 1)
            yield Running(fake, service, backend, history, data_dir, bot, task)
        finally:
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)


@pytest.fixture
async def fake():
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
async def running(fake, backend, tmp_path):
    async with running_bot(fake, backend, tmp_path, seeds=itertools.count(100).__next__) as running:
        yield running

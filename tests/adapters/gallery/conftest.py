"""A gallery on the real SQLite stores and service, with the recording backend, behind aiohttp's test client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.gallery import Links, create_app
from bot.history import Generation
from bot.jobs import Requester
from bot.service import ImageService
from storage import SqliteDatabase, SqliteGallery
from tests.fakes.backend import FakeBackend
from tests.fakes.service import started_service

ALICE = Requester("discord", "111", workspace="guild-1", channel="chan-1")
BOB = Requester("discord", "222", workspace="guild-1", channel="chan-1")


@dataclass
class Clock:
    """A wall clock a test moves forward."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class Gallery:
    client: TestClient
    service: ImageService
    history: SqliteDatabase
    store: SqliteGallery
    links: Links
    clock: Clock
    backend: FakeBackend
    data_dir: Path

    async def path(self, who: Requester) -> str:
        """Return the path of a new link of the user's (what /gallery gives, without the host)."""
        return urlsplit(await self.links.link(who.platform, who.user_id)).path

    async def make(self, who: Requester, prompt: str, flags: str = "") -> Generation:
        """Make an image as the user would with /imagine, and wait for it."""
        job = await self.service.imagine(f"{prompt} {flags}".strip(), who)
        return await job.result()


@pytest.fixture
async def gallery(tmp_path: Path) -> AsyncIterator[Gallery]:
    async for yield_ in _gallery(tmp_path, rate_limit=10_000):
        yield yield_


async def _gallery(tmp_path: Path, *, rate_limit: int) -> AsyncIterator[Gallery]:
    backend = FakeBackend()
    clock = Clock()
    history_path = tmp_path / "imagebot.sqlite3"
    await (await SqliteDatabase.open(history_path)).close()
    store = await SqliteGallery.open(history_path)
    links = Links(secret=b"test-secret", store=store, base_url="http://gallery.test", data_dir=tmp_path, clock=clock)
    try:
        async with started_service(backend, tmp_path, gallery=links) as (service, history):
            app = create_app(service=service, store=store, links=links, rate_limit=rate_limit)
            async with TestClient(TestServer(app)) as client:
                yield Gallery(client, service, history, store, links, clock, backend, tmp_path)
    finally:
        await store.close()


@pytest.fixture
async def slow_gallery(tmp_path: Path) -> AsyncIterator[Gallery]:
    """A gallery whose links may make five requests a minute."""
    async for yield_ in _gallery(tmp_path, rate_limit=5):
        yield yield_

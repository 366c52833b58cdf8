"""A small world for one example: a service on real in-memory stores, and generations to point at.

Its generations are the ids a user may type or a button may carry: the user's own, another
user's (public and private), one deleted, and one of the user's still queued. The service is
not started, so a queued job waits and no image is made; `stored` tells whether a refusal
changed anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from bot.catalog import load_catalog
from bot.chat import ChatFlow
from bot.history import NewGeneration
from bot.jobs import Requester
from bot.options import Limits
from bot.request import GenerationRequest
from bot.service import ImageService
from imagebot.bootstrap import stores_of
from storage import SqliteDatabase
from tests.fakes.backend import FakeBackend
from tests.fakes.stores import InMemoryDatabase
from tests.properties.sentences import assert_sentence

T = TypeVar("T")

CATALOG = load_catalog()
ALICE = Requester("discord", "1", workspace="g1", channel="c1")
BOB = Requester("discord", "2", workspace="g1", channel="c1")
STRANGER = Requester("discord", "3", workspace="g2", channel="c9")  # another server
DIRECT = Requester("discord", "1", channel="d1", direct=True)  # Alice in a direct message
PEOPLE = (ALICE, BOB, STRANGER, DIRECT)
# The operator's wildcard files, as read: `__animal__` draws a line; `__nosuch__` is a name the bot lacks.
WILDCARDS = {"animal": ("fox", "owl {in snow|at dusk}", "__animal__ cub")}
_TINY = GenerationRequest(prompt="a red fox", model="tiny", width=128, height=128, steps=2, seed=7)


@dataclasses.dataclass
class World:
    """The service, its chat flow and its stores, with the ids worth pointing at."""

    service: ImageService
    flow: ChatFlow
    db: InMemoryDatabase | SqliteDatabase
    ids: dict[str, int]

    async def stored(self) -> tuple[Any, ...]:
        """Return everything the stores hold that a refusal must leave as it was (the audit log may grow)."""
        generations = [await self.db.generations.get(i) for i in range(1, max(self.ids.values()) + 8)]
        settings = [await self.db.settings.get(*who.key) for who in PEOPLE]
        policies = [await self.db.policies.get("discord", server) for server in ("g1", "g2")]
        return generations, settings, policies

    async def attempt(self, call: Callable[[], Awaitable[T]], typed: Mapping[str, str] | None = None) -> T | None:
        """Return what an entry point gives, or None for a refusal that is one sentence and stored nothing."""
        before = await self.stored()
        try:
            return await call()
        except Exception as error:
            assert_sentence(error, typed)
            assert await self.stored() == before, f"stored something, then refused: {error}"
            return None


async def world(
    data_dir: Path,
    policy: dict[str, object] | None = None,
    db: InMemoryDatabase | SqliteDatabase | None = None,
    *,
    filled: Mapping[str, int] | None = None,
    started: bool = False,
) -> World:
    """Build a world on the in-memory stores, or on `db` (the SQLite ones); `policy` is server g1's.

    `filled`: the ids of the generations `fill` stored in `db` already (a copy of a filled file).
    A `started` world runs its jobs on a backend that fails each at once, so a job ends without an image.
    """
    if db is None:
        # Each example gets a copy of stores filled once: filling them costs more than most examples.
        db = _FILLED.copy()
        filled = _FILLED_IDS
    ids = dict(filled) if filled is not None else await fill(db)
    service = ImageService(
        backend=FakeBackend(fail_with="it is offline") if started else FakeBackend(),
        stores=stores_of(db, data_dir),
        catalog=CATALOG,
        default_model="tiny",
        limits=Limits(pixel_budget=4 * 1024 * 1024),
        seeds=itertools.count(100).__next__,
        clock=lambda: 1_700_000_000.0,
        wildcards=WILDCARDS,
    )
    if policy:
        await db.policies.put("discord", "g1", policy)
    if started:
        await service.start()
    job = await service.imagine("a queued fox", ALICE)
    ids["queued"] = job.id
    if started:
        async for _ in job.events():  # its end, before anything compares the stores
            pass
    return World(service, ChatFlow(service, command="/imagine "), db, ids)


async def fill(db: InMemoryDatabase | SqliteDatabase) -> dict[str, int]:
    """Store the generations worth pointing at, and return their ids by what they are."""

    async def made(who: Requester, *, private: bool = False) -> int:
        new = NewGeneration(
            who.platform, who.user_id, _TINY, "generate", "fake", who.workspace, who.channel, private=private
        )
        generation = await db.generations.add(new)
        await db.generations.mark_done(generation.id, [])
        await db.generations.set_message_ref(generation.id, f"m{generation.id}")
        return generation.id

    ids = {
        "own": await made(ALICE),
        "own_private": await made(ALICE, private=True),
        "others": await made(BOB),
        "others_private": await made(BOB, private=True),
        "deleted": await made(ALICE),
    }
    await db.generations.delete(ids["deleted"])
    return ids


_FILLED = InMemoryDatabase.create(clock=lambda: 1_700_000_000.0)
_FILLED_IDS = asyncio.run(fill(_FILLED))

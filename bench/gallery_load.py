"""The web gallery under load: page times with 100,000 generations, and the chat's acks while it is read.

1. Gallery pages, served by the real aiohttp app on the real SQLite stores: the grid's first
   page, a page deep in the history (keyset cursor), a word search (FTS5), a model filter and
   the server's showcase (one in ten images starred; its first page and a deep one), each
   requested 50 times in a row; p50 and p95 with 100 generations of one user (the
   baseline, the same process) and after cloning them to `--rows` (default 100,000).
2. Discord acks (the fake Discord and discord.py, as `bench/ack_latency.py`): 200 /imagine in one
   second with the worker busy, once with the gallery idle and once while four clients read
   gallery pages as fast as it answers, in the same process and event loop as the bot (the
   gallery runs inside `imagebot run`). Target: ack p99 unchanged (< 100 ms) under that load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from adapters.discord import setup
from adapters.gallery import Links, create_app, serving
from bench.ack_latency import _busy_backend, _quantile, _run
from bot.config import DiscordSettings
from bot.jobs import Requester
from bot.policy import rule_changes
from storage import SqliteDatabase, SqliteGallery
from tests.fakes.backend import FakeBackend
from tests.fakes.discord import FakeDiscord, patch_discord
from tests.fakes.service import started_service

ALICE = Requester("discord", "111", workspace="guild-1", channel="chan-1")
WORDS = [
    "fox",
    "castle",
    "river",
    "forest",
    "lantern",
    "dragon",
    "harbour",
    "meadow",
    "comet",
    "tower",
    "garden",
    "glacier",
]
REQUESTS = 50


def _clone(database: Path, rows: int) -> None:
    """Copy the user's generations (and their image rows) until there are `rows`, prompts varied."""
    with sqlite3.connect(database) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(generations)") if row[1] != "id"]
        names = ", ".join(columns)
        picks = ", ".join("json_set(request, '$.prompt', ?)" if column == "request" else column for column in columns)
        templates = [row[0] for row in db.execute("SELECT id FROM generations ORDER BY id")]
        have = len(templates)
        for n in range(rows - have):
            template = templates[n % len(templates)]
            prompt = f"a {WORDS[n % len(WORDS)]} by the {WORDS[(n // 7) % len(WORDS)]}, take {n}"
            cursor = db.execute(
                f"INSERT INTO generations ({names}) SELECT {picks} FROM generations WHERE id = ?", (prompt, template)
            )
            db.execute(
                "INSERT INTO images SELECT ?, idx, seed, path, sha256, width, height, nsfw FROM images"
                " WHERE generation_id = ?",
                (cursor.lastrowid, template),
            )
        db.commit()


async def _pages(session: aiohttp.ClientSession, base: str, shared: str, deep: int) -> dict[str, list[float]]:
    """Time each page kind REQUESTS times; return milliseconds per request."""
    urls = {
        "grid, first page": base,
        "grid, deep page": f"{base}?after={deep}",
        "search 'fox'": f"{base}?q=fox",
        "filter model=tiny": f"{base}?model=tiny",
        "showcase, first page": shared,
        "showcase, deep page": f"{shared}?after={deep}",
    }
    times: dict[str, list[float]] = {}
    for name, url in urls.items():
        for _ in range(3):  # warm the page cache and the templates
            async with session.get(url) as response:
                await response.read()
        samples = []
        for _ in range(REQUESTS):
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                assert response.status == 200, (url, response.status)
            samples.append((time.perf_counter() - started) * 1000)
        times[name] = samples
    return times


async def _hammer(
    session: aiohttp.ClientSession, base: str, stop: asyncio.Event, served: list[int], interval: float
) -> None:
    """Read gallery pages (searches and deep pages in turn), one per `interval` seconds, until `stop` is set."""
    n = 0
    while not stop.is_set():
        n += 1
        url = f"{base}?q={WORDS[n % len(WORDS)]}" if n % 2 else f"{base}?after={1000 + n * 37}"
        async with session.get(url) as response:
            await response.read()
        served[0] += 1
        if interval:
            await asyncio.sleep(interval)


async def main(rows: int, count: int, seconds: float) -> None:
    logging.basicConfig(level=logging.ERROR)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        database = data_dir / "imagebot.sqlite3"
        await (await SqliteDatabase.open(database)).close()
        store = await SqliteGallery.open(database)
        links = Links(secret=b"bench-secret", store=store, base_url="http://gallery.test", data_dir=data_dir)
        backend = FakeBackend()
        try:
            async with started_service(backend, data_dir, gallery=links, max_per_user=10**6) as (service, _):
                for n in range(100):
                    job = await service.imagine(f"a {WORDS[n % len(WORDS)]} number {n} --steps 2", ALICE)
                    made = await job.result()
                    if n % 10 == 0:  # starred rows are cloned with their star: one in ten of the history
                        await service.star(ALICE, made.id)
                changes = rule_changes(await service.admin.policy(ALICE), service.catalog, showcase=True)
                await service.admin.update_policy(ALICE, changes, may_manage=True)
                app = create_app(service=service, store=store, links=links, rate_limit=10**9)
                async with serving(app, "127.0.0.1", 0) as runner, aiohttp.ClientSession() as session:
                    host, port = runner.addresses[0][:2]
                    base = f"http://{host}:{port}" + urlsplit(await links.link(ALICE.platform, ALICE.user_id)).path
                    shared = f"http://{host}:{port}" + urlsplit(await service.showcase.link(ALICE)).path
                    small = await _pages(session, base, shared, deep=50)
                    started = time.perf_counter()
                    await asyncio.to_thread(_clone, database, rows)
                    print(f"history filled to {rows} generations in {time.perf_counter() - started:.1f} s")
                    large = await _pages(session, base, shared, deep=rows // 2)
                    print(f"gallery pages, {REQUESTS} requests each (ms):")
                    print(f"  {'page':<20} {'100 rows p50':>12} {'p95':>7}   {rows} rows p50 {'p95':>7}   ratio p95")
                    for name in small:
                        a, b = small[name], large[name]
                        pa, pb = _quantile(a, 0.95), _quantile(b, 0.95)
                        print(
                            f"  {name:<20} {statistics.median(a):12.1f} {pa:7.1f}   "
                            f"{statistics.median(b):13.1f} {pb:7.1f}   {pb / pa:9.2f}"
                        )
                    idle, loaded = await _acks(session, base, count, seconds)
        finally:
            await store.close()
    p99_idle = _quantile(idle, 0.99)
    print(f"Discord acks, {count} /imagine in {seconds:g} s, worker busy, same process as the gallery:")
    print(f"  {'gallery idle':<30} p50 {statistics.median(idle):6.1f} ms   p99 {p99_idle:6.1f} ms")
    for name, (acks, served) in loaded.items():
        p99 = _quantile(acks, 0.99)
        verdict = "OK" if p99 < 100 else "MISSED"
        print(
            f"  {name:<30} p50 {statistics.median(acks):6.1f} ms   p99 {p99:6.1f} ms   ratio p99 {p99 / p99_idle:5.2f}"
            f"   ({served} pages meanwhile; target p99 < 100 ms: {verdict})"
        )


# (readers, seconds between one reader's pages): every link at the gallery's default rate limit
# (120 pages a minute), then four readers as fast as the gallery answers (no rate limit).
LOADS = {"20 readers at the rate limit": (20, 0.5), "4 readers, no limit": (4, 0.0)}


async def _acks(
    session: aiohttp.ClientSession, base: str, count: int, seconds: float
) -> tuple[list[float], dict[str, tuple[list[float], int]]]:
    """Ack latencies of a bot on a fresh service (worker busy): the gallery idle, then under each load."""
    async with FakeDiscord() as fake:
        with patch_discord(fake):
            settings = DiscordSettings(token="fake-token", api_base=fake.api_base, gateway_url=fake.gateway_url)

            async def run() -> list[float]:
                with tempfile.TemporaryDirectory() as tmp:
                    async with started_service(_busy_backend(), Path(tmp)) as (service, _):
                        bot = setup(service, settings, guild_ready_timeout=0.1)
                        return await _run(bot, fake, count, seconds, settle=True)

            idle = await run()
            loaded: dict[str, tuple[list[float], int]] = {}
            for name, (readers, interval) in LOADS.items():
                stop, served = asyncio.Event(), [0]
                tasks = [asyncio.create_task(_hammer(session, base, stop, served, interval)) for _ in range(readers)]
                try:
                    await asyncio.sleep(0.5)  # the readers are in full swing
                    loaded[name] = (await run(), served[0])
                finally:
                    stop.set()
                    for task in tasks:
                        with contextlib.suppress(Exception):
                            await task
    return idle, loaded


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.count, args.seconds))

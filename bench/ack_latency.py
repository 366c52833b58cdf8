"""Time from a Discord interaction to its defer, with the worker busy and 200 /imagine in one second.

Both the bot and the loopback fake Discord (tests/fakes/discord.py) run in this
process, driven by the real discord.py client. The backend is held busy for
the whole run (its one running job never ends), so every /imagine queues or is
refused by the queue limits, as on a busy server. Latency is the fake's
monotonic clock from sending INTERACTION_CREATE to receiving the callback.
Baseline: a bare discord.py client whose /imagine only defers, same fake, same
load, measured in the same run. Target: p99 < 100 ms (Discord allows 3000 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import discord
from discord import app_commands

from adapters.discord import setup
from bot.catalog import load_catalog
from bot.config import DiscordSettings
from bot.options import Limits
from bot.service import ImageService
from storage.files import ImageFiles
from storage.history import SqliteHistory
from tests.fakes.backend import FakeBackend
from tests.fakes.discord import FakeDiscord, patch_discord


class BareClient(discord.Client):
    """The least a bot can do: defer and nothing else."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)

        @self.tree.command(name="imagine", description="defer only")
        async def imagine(interaction: discord.Interaction, prompt: str) -> None:
            await interaction.response.defer(thinking=True)

    async def setup_hook(self) -> None:
        await self.tree.sync()


async def _load(fake: FakeDiscord, count: int, seconds: float, settle: bool) -> list[float]:
    """Send `count` /imagine spread over `seconds`, from as many users; return each defer's latency in ms."""
    interactions = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(count):
        await asyncio.sleep(max(0.0, start + n * seconds / count - loop.time()))
        user = fake.user(10**17 + n, f"user{n}")
        interactions.append(await fake.slash("imagine", {"prompt": f"a red fox number {n}"}, user=user))
    await fake.wait_for(lambda: all(i.callbacks for i in interactions), timeout=60)
    if settle:
        # Let every queued line and refusal be posted before the bot is closed.
        await fake.wait_for(
            lambda: all(i.followups or (i.original and len(i.original.edits) > 1) for i in interactions), timeout=60
        )
    late = [i for i in interactions if i.callbacks[0].status not in (200, 204)]
    if late:
        raise SystemExit(f"{len(late)} interactions were not acknowledged in time")
    return [1000 * (i.callbacks[0].at - i.dispatched_at) for i in interactions]


async def _run(client: discord.Client, fake: FakeDiscord, count: int, seconds: float, settle: bool) -> list[float]:
    connections = fake.connections
    task = asyncio.create_task(client.start("fake-token"))
    try:
        await fake.wait_ready(connections + 1)
        return await _load(fake, count, seconds, settle)
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await task


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


async def main(count: int, seconds: float) -> None:
    logging.basicConfig(level=logging.ERROR)
    async with FakeDiscord() as fake:
        with patch_discord(fake), tempfile.TemporaryDirectory() as tmp:
            baseline = await _run(BareClient(), fake, count, seconds, settle=False)

            backend = FakeBackend()
            backend.gate = asyncio.Event()  # the worker is busy for the whole run
            history = await SqliteHistory.open(Path(tmp) / "imagebot.sqlite3")
            service = ImageService(
                backend=backend,
                history=history,
                files=ImageFiles(Path(tmp)),
                catalog=load_catalog(),
                default_model="tiny",
                limits=Limits(pixel_budget=4 * 1024 * 1024),
            )
            await service.start()
            settings = DiscordSettings(token="fake-token", api_base=fake.api_base, gateway_url=fake.gateway_url)
            ours = await _run(setup(service, settings, guild_ready_timeout=0.1), fake, count, seconds, settle=True)
            queued = len(await history.unfinished())
            await service.aclose()
            await history.close()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"{count} /imagine in {seconds:g} s from {count} users, worker busy; {queued} queued, the rest refused")
    for name, values in (("bare defer-only client", baseline), ("imagebot", ours)):
        p50, p99 = statistics.median(values), _quantile(values, 0.99)
        print(f"{name:<24} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {max(values):6.1f} ms")
    p99 = _quantile(ours, 0.99)
    print(f"imagebot p99 / 3000 ms  {p99 / 3000:.4f}   (target p99 < 100 ms: {'OK' if p99 < 100 else 'MISSED'})")
    print(
        f"ratio imagebot/bare      p50 {statistics.median(ours) / statistics.median(baseline):.2f}"
        f"   p99 {p99 / _quantile(baseline, 0.99):.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.seconds))

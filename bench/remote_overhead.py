"""What the Runware client adds to a hosted generation: 200 concurrent jobs, a 50 ms service time.

The loopback fake Runware (tests/fakes/runware.py) runs in a child process, so
that its own work does not count as the client's, and answers every task after
exactly 50 ms; each job is one POST and one image download, as in production
(outputType URL). Baseline, measured in the same run against the same fake:
bare httpx sending the same task JSON and downloading the image, nothing else.

* Client overhead per request: the CPU time this process spends per job during
  the 200 concurrent jobs (target: < 5 ms); also the latency above 50 ms of jobs
  sent one at a time on a warm connection, which is mostly the fake's side.
* Throughput under the configured connection limit (IMAGEBOT_RUNWARE_MAX_CONNECTIONS,
  16 by default): total wall time in units of 50 ms, against what the limit
  allows (ceil(200 / 16) = 13 waves), and how many connections the fake saw.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bot.catalog import load_catalog
from bot.config import RunwareSettings
from bot.options import Defaults, Limits, parse_text
from inference.runware import RunwareBackend, build_task
from tests.fakes.runware import FakeRunware

SERVICE = 0.05
SEQUENTIAL = 50
CATALOG = load_catalog()
REQUEST = parse_text(
    "a red fox --steps 20 --seed 7 --size 128x128",
    catalog=CATALOG,
    defaults=Defaults(model="sdxl"),
    limits=Limits(pixel_budget=4 * 1024 * 1024),
).request

Job = Callable[[], Awaitable[None]]


def _serve(pipe: Connection) -> None:
    """Run the fake in this (child) process until the parent asks for its connection count."""

    async def run() -> None:
        async with FakeRunware(service_time=SERVICE) as fake:
            pipe.send((fake.url, fake.api_key))
            while not pipe.poll():
                await asyncio.sleep(0.05)
            pipe.recv()
            pipe.send(fake.connections)

    asyncio.run(run())


class Fake:
    """A fake Runware in a child process."""

    def __enter__(self) -> Fake:
        self._pipe, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        self.url, self.api_key = self._pipe.recv()
        return self

    def connections(self) -> int:
        self._pipe.send("stop")
        count: int = self._pipe.recv()
        self._process.join(10)
        return count

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.kill()


async def _measure(job: Job, count: int) -> tuple[float, float, float]:
    """Return (median latency above the service time one at a time, CPU per job, wall) of `count` at once."""
    await job()  # warm: the first connection
    sequential = []
    for _ in range(SEQUENTIAL):
        started = time.perf_counter()
        await job()
        sequential.append(time.perf_counter() - started - SERVICE)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(job() for _ in range(count)))
    return statistics.median(sequential), (time.process_time() - cpu) / count, time.perf_counter() - wall


async def _ours(fake: Fake, count: int, limit: int) -> tuple[float, float, float]:
    backend = RunwareBackend(
        CATALOG, RunwareSettings(api_key=fake.api_key, url=fake.url, max_connections=limit), Path()
    )

    async def job() -> None:
        (image,) = await backend.generate(REQUEST)
        assert image.data.startswith(b"\x89PNG")

    try:
        return await _measure(job, count)
    finally:
        await backend.aclose()


async def _bare(fake: Fake, count: int, limit: int) -> tuple[float, float, float]:
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def job() -> None:
            task = build_task(REQUEST, CATALOG, str(uuid.uuid4()))
            answer = (await client.post(fake.url, json=[task], headers=headers)).json()
            (await client.get(answer["data"][0]["imageURL"])).raise_for_status()

        return await _measure(job, count)


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:5.2f} ms"


async def main(count: int, limit: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        f"{count} concurrent generations through {limit} connections, fake service time {SERVICE * 1000:.0f} ms,"
        " one POST + one download each"
    )
    results = {}
    for name, run in (("bare httpx POST+GET", _bare), ("imagebot RunwareBackend", _ours)):
        with Fake() as fake:
            latency, cpu, wall = await run(fake, count, limit)
            results[name] = (latency, cpu, wall, fake.connections())
    waves = math.ceil(count / limit)
    for name, (latency, cpu, wall, connections) in results.items():
        print(
            f"  {name:<24} latency above 50 ms {_ms(latency)}   client CPU per job {_ms(cpu)}"
            f"   total {wall / SERVICE:4.1f} × 50 ms ({wall / (waves * SERVICE):.2f} × the {waves} the limit allows)"
            f"   connections {connections}"
        )
    ours, bare = results["imagebot RunwareBackend"], results["bare httpx POST+GET"]
    # The latency above 50 ms is mostly the fake's side and the loopback (bare httpx sees the same);
    # what the client itself costs is its CPU time per job.
    overhead = ours[1]
    print(
        f"  client overhead per request (CPU) {_ms(overhead)} (target < 5 ms: {'OK' if overhead < 0.005 else 'MISSED'})"
    )
    ratios = f"latency {ours[0] / bare[0]:.2f}, CPU {ours[1] / bare[1]:.2f}, total {ours[2] / bare[2]:.2f}"
    print(f"  ratio imagebot/bare: {ratios}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--limit", type=int, default=RunwareSettings.model_fields["max_connections"].default)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.limit))

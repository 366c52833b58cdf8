"""How long user B waits behind user A: A submits 20 jobs, B submits 1 right after.

The real service and its fair queue, on the recording backend (each job a few
milliseconds), one job at a time as on one GPU. B's wait is counted in jobs:
how many of A's jobs start after B submitted and before B's job starts.
Baseline, measured in the same run on the same backend: a first-come
first-served queue (an asyncio.Queue), where B waits for all of A's jobs.
Target: B waits for at most 1 job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.catalog import load_catalog
from bot.jobs import Requester
from bot.options import Defaults, Limits, parse_text
from tests.fakes.backend import FakeBackend
from tests.fakes.service import started_service

A, B = Requester("bench", "A"), Requester("bench", "B")
LINE = "a red fox --steps 4"


def _wait_of_b(started: list[str], submitted_before_b: int) -> int:
    """Return how many of A's jobs started between B's submit and B's start."""
    return started.index("B") - submitted_before_b


async def _fair(data_dir: Path) -> int:
    backend = FakeBackend(step_delay=0.002)
    backend.gate = asyncio.Event()
    async with started_service(backend, data_dir, max_per_user=25, max_queue=100) as (service, _):
        jobs = [await service.imagine(f"A{n} {LINE}", A) for n in range(20)]
        await asyncio.sleep(0.05)  # A's first job has started (and waits at the gate)
        started_before_b = len(backend.requests)
        jobs.append(await service.imagine(f"B {LINE}", B))
        backend.gate.set()
        for job in jobs:
            await job.result()
    order = ["B" if request.prompt.startswith("B") else "A" for request in backend.requests]
    return _wait_of_b(order, started_before_b)


async def _first_come_first_served() -> int:
    backend = FakeBackend(step_delay=0.002)
    queue: asyncio.Queue[str] = asyncio.Queue()
    started: list[str] = []

    async def worker() -> None:
        catalog = load_catalog()
        while True:
            who = await queue.get()
            request = parse_text(LINE, catalog=catalog, defaults=Defaults(model="tiny"), limits=Limits(4 << 20))
            started.append(who)
            await backend.generate(request.request.with_seed(1))
            queue.task_done()

    for _ in range(20):
        queue.put_nowait("A")
    task = asyncio.create_task(worker())
    await asyncio.sleep(0)  # A's first job has started
    started_before_b = len(started)
    queue.put_nowait("B")
    await queue.join()
    task.cancel()
    return _wait_of_b(started, started_before_b)


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        fair = await _fair(Path(tmp))
    fifo = await _first_come_first_served()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print("user A submits 20 jobs, then user B submits 1; one job runs at a time")
    verdict = "OK" if fair <= 1 else "MISSED"
    print(f"  imagebot fair queue        B waits for {fair:2d} of A's jobs (target ≤ 1: {verdict})")
    print(f"  first come, first served   B waits for {fifo:2d} of A's jobs")


if __name__ == "__main__":
    asyncio.run(main())

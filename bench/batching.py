"""Throughput of 8 compatible jobs made in one pipeline call against one at a time.

The local worker process on this machine's CPU with the tiny SDXL (128×128,
20 steps, DPM++ 2M Karras), through the real service and queue: 8 jobs from 8
users queued behind one running job, with `IMAGEBOT_MAX_BATCH=8` (they run as
one call) and with 1 (one call each), measured in the same run, alternating.
On a GPU, the same script with full-size SDXL is the figure that matters; none
was available for this version.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.catalog import load_catalog
from bot.jobs import Requester
from bot.request import GenerationRequest
from inference import tiny
from inference.local import LocalBackend
from tests.fakes.service import started_service

JOBS = 8
ROUNDS = 3
LINE = "a red fox number {n} --steps 20 --seed {seed}"


async def _throughput(backend: LocalBackend, data_dir: Path, max_batch: int) -> float:
    """Return images per minute for JOBS jobs queued together."""
    backend.max_batch = max_batch
    async with started_service(backend, data_dir, max_per_user=JOBS + 1) as (service, _):
        lead = await service.imagine(LINE.format(n="lead", seed=1), Requester("bench", "lead"))
        await asyncio.sleep(0)
        started = time.perf_counter()
        jobs = [await service.imagine(LINE.format(n=n, seed=n + 2), Requester("bench", f"u{n}")) for n in range(JOBS)]
        await lead.result()
        for job in jobs:
            await job.result()
        return JOBS / (time.perf_counter() - started) * 60


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        tiny.ensure(data_dir)
        backend = LocalBackend(load_catalog(), data_dir, device="cpu")
        try:
            # The worker starts and loads the tiny model before anything is timed.
            await backend.generate(GenerationRequest(prompt="warm up", model="tiny", width=128, height=128, seed=1))
            batched, single = [], []
            for round_ in range(ROUNDS):
                batched.append(await _throughput(backend, data_dir / f"b{round_}", JOBS))
                single.append(await _throughput(backend, data_dir / f"s{round_}", 1))
            sizes = backend.batch_sizes
        finally:
            await backend.aclose()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"tiny SDXL on CPU, 128×128, 20 steps; {JOBS} compatible jobs queued behind a running one; {ROUNDS} rounds")
    print(f"  one call for all ({JOBS} a batch)       median {statistics.median(batched):7.1f} images/min")
    print(f"  one call per job                   median {statistics.median(single):7.1f} images/min")
    print(f"  ratio batched/single                      {statistics.median(batched) / statistics.median(single):.2f}")
    print(f"  worker calls by size: {dict(sorted((size, sizes.count(size)) for size in set(sizes)))}")


if __name__ == "__main__":
    asyncio.run(main())

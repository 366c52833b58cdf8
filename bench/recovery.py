"""Seconds from kill -9 of the local worker mid-job to that job finishing on a fresh worker.

The tiny SDXL on this machine's CPU, 128×128, 30 steps; the worker is killed at
the job's first step. Baseline, measured in the same run: the same job on a
cold backend (start the worker, then run the job), which is the least a
recovery can cost since it has to start a worker too. Detection itself is the
worker's stdout closing, so the ratio shows what supervision adds on top.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.catalog import load_catalog
from bot.request import GenerationRequest, Progress
from inference import tiny
from inference.local import LocalBackend

ROUNDS = 3
REQUEST = GenerationRequest(prompt="a red fox", model="tiny", width=128, height=128, steps=30, seed=7)


async def _cold(data_dir: Path) -> float:
    backend = LocalBackend(load_catalog(), data_dir, device="cpu")
    started = time.perf_counter()
    try:
        await backend.generate(REQUEST)
        return time.perf_counter() - started
    finally:
        await backend.aclose()


async def _recovery(data_dir: Path) -> tuple[float, float]:
    """Return (seconds from the kill to the images, seconds from the kill to the new worker's first step)."""
    backend = LocalBackend(load_catalog(), data_dir, device="cpu")
    await backend.start()
    killed_at: float | None = None
    first_step_after: float | None = None

    def on_progress(event: Progress) -> None:
        nonlocal killed_at, first_step_after
        if killed_at is None and event.step == 1:
            pid = backend.worker_pid
            assert pid is not None
            killed_at = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
        elif killed_at is not None and first_step_after is None:
            first_step_after = time.perf_counter() - killed_at

    try:
        images = await backend.generate(REQUEST, on_progress=on_progress)
        done = time.perf_counter()
    finally:
        await backend.aclose()
    assert killed_at is not None and first_step_after is not None and "note" in images[0].meta
    return done - killed_at, first_step_after


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        tiny.ensure(data_dir)
        await _cold(data_dir)  # warm the file cache
        cold, recovered, first_steps = [], [], []
        for _ in range(ROUNDS):
            cold.append(await _cold(data_dir))
            total, first = await _recovery(data_dir)
            recovered.append(total)
            first_steps.append(first)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"tiny SDXL, 128×128, 30 steps on CPU, worker killed (SIGKILL) at step 1; {ROUNDS} rounds, medians")
    print(f"  kill -9 → job done on a new worker   {statistics.median(recovered):6.2f} s")
    print(f"  kill -9 → the new worker's first step {statistics.median(first_steps):6.2f} s")
    print(f"  cold start + the same job (baseline) {statistics.median(cold):6.2f} s")
    print(f"  ratio recovery/cold start            {statistics.median(recovered) / statistics.median(cold):6.2f}")


if __name__ == "__main__":
    asyncio.run(main())

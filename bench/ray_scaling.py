"""Throughput on Ray Serve replicas against the local worker process, on this machine's CPU.

A local Ray instance with the tiny SDXL (128×128, 20 steps, DPM++ 2M Karras):
3 rounds of 16 compatible jobs sent at once through `RayBackend` to 1 replica without
batching, 2 replicas without batching, and 2 replicas batching up to 4, against
the local worker process making them one at a time, all in the same run. Every
process gets one CPU thread (Ray's default for a 1-CPU replica), so the ratios
show what replicas and batching add, not what threads do. On GPU nodes each
replica is a GPU; none was available for this version.
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

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray
from ray import serve

from bot.catalog import load_catalog
from bot.ports import Backend
from bot.request import GenerationRequest
from inference import tiny
from inference.local import LocalBackend
from inference.ray_serve import RayBackend, app_builder

JOBS = 16
ROUNDS = 3


def _request(seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=f"a red fox number {seed}", model="tiny", width=128, height=128, steps=20, seed=seed
    )


async def _throughput(backend: Backend, *, at_once: bool) -> float:
    """Return the median images per minute of ROUNDS rounds of JOBS jobs, sent together or one after another."""
    await asyncio.gather(*(backend.generate(_request(seed)) for seed in (1, 2)))  # loads every replica's model
    rates = []
    for round_ in range(ROUNDS):
        seeds = [100 + JOBS * round_ + n for n in range(JOBS)]
        started = time.perf_counter()
        if at_once:
            await asyncio.gather(*(backend.generate(_request(seed)) for seed in seeds))
        else:
            for seed in seeds:
                await backend.generate(_request(seed))
        rates.append(JOBS / (time.perf_counter() - started) * 60)
    return statistics.median(rates)


async def _on_ray(data_dir: Path, replicas: int, max_batch: int) -> float:
    name = f"bench-{replicas}-{max_batch}"
    args = {"data_dir": str(data_dir), "device": "cpu", "num_gpus": 0, "num_replicas": replicas, "max_batch": max_batch}
    await asyncio.to_thread(serve.run, app_builder(args), name=name, route_prefix=None)
    backend = RayBackend(load_catalog(), data_dir, address=None, app_name=name)
    try:
        return await _throughput(backend, at_once=True)
    finally:
        await backend.aclose()
        await asyncio.to_thread(serve.delete, name)


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        tiny.ensure(data_dir)
        local = LocalBackend(load_catalog(), data_dir, device="cpu", max_batch=1)
        try:
            baseline = await _throughput(local, at_once=False)
        finally:
            await local.aclose()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        try:
            serve.start(proxy_location="Disabled")
            rows = [
                ("Ray, 1 replica, no batching", await _on_ray(data_dir, 1, 1)),
                ("Ray, 2 replicas, no batching", await _on_ray(data_dir, 2, 1)),
                ("Ray, 2 replicas, batches of 4", await _on_ray(data_dir, 2, 4)),
            ]
        finally:
            serve.shutdown()
            ray.shutdown()
    machine = f"{platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    print(f"machine: {machine}, ray {ray.__version__}")
    print(f"tiny SDXL on CPU, 128×128, 20 steps, one thread a process; {JOBS} compatible jobs, median of {ROUNDS}")
    print(f"  local worker, one at a time         {baseline:7.1f} images/min   (baseline)")
    for label, rate in rows:
        print(f"  {label:<35} {rate:7.1f} images/min   ratio {rate / baseline:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

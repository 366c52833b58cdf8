"""End-to-end overhead of the service on the local backend, against the bare diffusers call.

Ours: `ImageService.imagine` → SQLite row → fair queue → worker process (IPC) →
PNG with parameters → file → SQLite, awaited to the end. Baseline: the same
tiny SDXL pipeline called directly in this process (`pipe(...)` to a PIL image)
with the same prompt, size, steps, scheduler and seed. Runs alternate so drift
hits both equally; the ratio of medians is the figure (target ≤ 1.10).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread in both processes: the comparison is of our overhead, not of thread scheduling.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import CoreSettings
from bot.jobs import Requester
from imagebot.bootstrap import bootstrap

PROMPT = "a red fox in the snow"
STEPS = 20


def bare_pipeline(data_dir: Path):
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

    from inference import tiny

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny.ensure(data_dir) / "base", local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)

    def call(seed: int) -> float:
        started = time.perf_counter()
        pipe(
            PROMPT,
            num_inference_steps=STEPS,
            width=128,
            height=128,
            guidance_scale=7.0,
            generator=torch.Generator("cpu").manual_seed(seed),
        )
        return time.perf_counter() - started

    return call


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        app = await bootstrap(CoreSettings(data_dir=data_dir, default_model="tiny"), announce=lambda _: None)
        who = Requester("bench", "bench")
        bare = bare_pipeline(data_dir)

        async def ours(seed: int) -> float:
            started = time.perf_counter()
            job = await app.service.imagine(f"{PROMPT} --seed {seed} --steps {STEPS}", who)
            await job.result()
            return time.perf_counter() - started

        for seed in (1, 2):  # warm-up: worker start, model load, first-call allocations
            await ours(seed)
            bare(seed)
        ours_times, bare_times = [], []
        for seed in range(10, 10 + runs):
            ours_times.append(await ours(seed))
            bare_times.append(bare(seed))
        await app.aclose()
    ours_median, bare_median = statistics.median(ours_times), statistics.median(bare_times)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"tiny SDXL, 128x128, {STEPS} steps, DPM++ 2M Karras, {runs} runs each (alternating)")
    print(f"bare diffusers call    median {bare_median * 1000:8.1f} ms")
    print(f"service end to end     median {ours_median * 1000:8.1f} ms")
    print(f"ratio service/bare     {ours_median / bare_median:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    asyncio.run(main(parser.parse_args().runs))

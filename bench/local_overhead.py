"""End-to-end overhead of the service on the local backend, against the bare diffusers call.

Ours: `ImageService.imagine` → SQLite row → fair queue → worker process (IPC) →
PNG with parameters → file → SQLite, awaited to the end. Baseline: the same
tiny SDXL pipeline called directly in this process (`pipe(...)` to a PIL image)
with the same prompt, size, steps, scheduler and seed. Runs alternate so drift
hits both equally; the ratio of medians is the figure (target ≤ 1.10).

``--img2img``: the same from an image (the service's first result, ``--image #1
--strength 0.5`` of 40 steps, so 20 run), against diffusers' image-to-image
pipeline called on that image's PIL copy with the same strength and steps.

``--controlnet``: text-to-image with the tiny ControlNet on all 20 steps, guided by the
first result as a ready-made map (``--preprocess none``), against diffusers' SDXL ControlNet
pipeline called with the same guide, scale and steps.
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
IMAGE_STEPS, STRENGTH = 40, 0.5  # 20 steps run, as many as from text


def bare_pipeline(data_dir: Path, init: Path | None, guide: Path | None = None):
    import torch
    from diffusers import (
        ControlNetModel,
        DPMSolverMultistepScheduler,
        StableDiffusionXLControlNetPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )
    from PIL import Image

    from inference import tiny

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny.ensure(data_dir) / "base", local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    size: dict[str, object] = {"width": 128, "height": 128}
    if init is not None:
        pipe = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe)
        pipe.set_progress_bar_config(disable=True)
        size = {"image": Image.open(init).convert("RGB"), "strength": STRENGTH}
    if guide is not None:
        controlnet = ControlNetModel.from_pretrained(tiny.ensure(data_dir) / "controlnet", local_files_only=True)
        pipe = StableDiffusionXLControlNetPipeline.from_pipe(pipe, controlnet=controlnet)
        pipe.set_progress_bar_config(disable=True)
        size |= {"image": Image.open(guide).convert("RGB"), "controlnet_conditioning_scale": 1.0}

    def call(seed: int) -> float:
        started = time.perf_counter()
        pipe(
            PROMPT,
            num_inference_steps=IMAGE_STEPS if init is not None else STEPS,
            guidance_scale=7.0,
            generator=torch.Generator("cpu").manual_seed(seed),
            **size,
        )
        return time.perf_counter() - started

    return call


async def main(runs: int, img2img: bool, controlnet: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        app = await bootstrap(CoreSettings(data_dir=data_dir, default_model="tiny"), announce=lambda _: None)
        who = Requester("bench", "bench")
        flags = f"--steps {STEPS}"
        init = guide = None
        if img2img or controlnet:
            first = await (await app.service.imagine(f"{PROMPT} --seed 1", who)).result()
            init = data_dir / first.images[0].path
            flags = f"--image #{first.id} --strength {STRENGTH} --steps {IMAGE_STEPS}"
        if controlnet:
            guide, init = init, None
            flags = f"--steps {STEPS} --cn tiny-controlnet=#{first.id} --preprocess none"
        bare = bare_pipeline(data_dir, init, guide)

        async def ours(seed: int) -> float:
            started = time.perf_counter()
            job = await app.service.imagine(f"{PROMPT} --seed {seed} {flags}", who)
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
    what = f"from an image, {IMAGE_STEPS} steps at strength {STRENGTH}" if img2img else f"{STEPS} steps"
    what += ", the tiny ControlNet on every step" if controlnet else ""
    print(f"tiny SDXL, 128x128, {what}, DPM++ 2M Karras, {runs} runs each (alternating)")
    print(f"bare diffusers call    median {bare_median * 1000:8.1f} ms")
    print(f"service end to end     median {ours_median * 1000:8.1f} ms")
    print(f"ratio service/bare     {ours_median / bare_median:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--img2img", action="store_true", help="image-to-image instead of text-to-image")
    parser.add_argument("--controlnet", action="store_true", help="text-to-image with the tiny ControlNet")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.img2img, arguments.controlnet))

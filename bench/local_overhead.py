"""End-to-end overhead of the service on the local backend, against the bare diffusers call.

Ours: `ImageService.imagine` → SQLite row → fair queue → worker process (IPC) →
PNG with parameters → file → SQLite, awaited to the end. Baseline: the same
tiny SDXL pipeline called directly (`pipe(...)` to a PIL image) with the same
prompt, size, steps, scheduler and seed, in a child process of its own started
like the worker (``--baseline here`` calls it in this process instead, as this
script did before).

Both compute processes run one thread and are pinned to the same core (``--no-pin``
leaves them to the scheduler), so both arms differ only by the service. The runs
come in pairs whose order alternates (service first, then bare first); each pair
gives a ratio service/bare, and a block's figure is the median of its pairs'
ratios (target ≤ 1.10). ``--repeat N`` (5 by default) runs N blocks on the same processes and
ends with the median of all pairs and a bootstrap 95 % interval of it.

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
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread in every process: the comparison is of our overhead, not of thread scheduling.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "a red fox in the snow"
STEPS = 20
IMAGE_STEPS, STRENGTH = 40, 0.5  # 20 steps run, as many as from text


def bare_pipeline(data_dir: Path, init: Path | None, guide: Path | None = None) -> Callable[[int], float]:
    """Load the tiny pipeline as a user of diffusers would; return a call that times one image."""
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


def bare_child(config: str) -> None:
    """Run as the baseline's own process: load the pipeline, then time one image per seed read on stdin."""
    options = json.loads(config)
    call = bare_pipeline(
        Path(options["data_dir"]),
        None if options["init"] is None else Path(options["init"]),
        None if options["guide"] is None else Path(options["guide"]),
    )
    print("ready", flush=True)
    for line in sys.stdin:
        print(call(int(line)), flush=True)


class BareProcess:
    """The bare diffusers call in a child process, started as the worker is (same interpreter, same env)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid

    @classmethod
    async def start(cls, data_dir: Path, init: Path | None, guide: Path | None) -> BareProcess:
        config = json.dumps({"data_dir": str(data_dir), "init": init and str(init), "guide": guide and str(guide)})
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--bare-child",
            config,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        if (await process.stdout.readline()).strip() != b"ready":
            raise SystemExit("the bare diffusers process did not start")
        return cls(process)

    async def __call__(self, seed: int) -> float:
        """Return the seconds one `pipe(...)` call took in the child."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(f"{seed}\n".encode())
        await self._process.stdin.drain()
        return float(await self._process.stdout.readline())

    async def close(self) -> None:
        """End the child by closing its stdin."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        await self._process.wait()


def pin(pid: int, cores: set[int]) -> None:
    """Pin a process (0: this one) to `cores`, where the platform allows it."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cores)


def bootstrap_interval(ratios: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Return a 95 % bootstrap interval of the median of `ratios` (pairs resampled with replacement)."""
    draw = random.Random(seed)
    medians = sorted(statistics.median(draw.choices(ratios, k=len(ratios))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


async def run_block(
    ours: Callable[[int], Awaitable[float]], bare: Callable[[int], Awaitable[float]], pairs: int, first_seed: int
) -> tuple[list[float], list[float]]:
    """Run `pairs` pairs, alternating which arm goes first; return the service's and the bare times."""
    ours_times, bare_times = [], []
    for n in range(pairs):
        seed = first_seed + n
        if n % 2 == 0:
            ours_times.append(await ours(seed))
            bare_times.append(await bare(seed))
        else:
            bare_times.append(await bare(seed))
            ours_times.append(await ours(seed))
    return ours_times, bare_times


async def main(options: argparse.Namespace) -> None:
    from bot.config import CoreSettings
    from bot.jobs import Requester
    from imagebot.bootstrap import bootstrap

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinning = options.pin and len(cores) >= 2
    if pinning:
        # The bot's event loop on one core; the two compute processes share the last one.
        compute = {cores[-1]}
        pin(0, set(cores[:-1]))
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        app = await bootstrap(CoreSettings(data_dir=data_dir, default_model="tiny"), announce=lambda _: None)
        who = Requester("bench", "bench")
        flags = f"--steps {STEPS}"
        init = guide = None
        if options.img2img or options.controlnet:
            first = await (await app.service.imagine(f"{PROMPT} --seed 1", who)).result()
            init = data_dir / first.images[0].path
            flags = f"--image #{first.id} --strength {STRENGTH} --steps {IMAGE_STEPS}"
        if options.controlnet:
            guide, init = init, None
            flags = f"--steps {STEPS} --cn tiny-controlnet=#{first.id} --preprocess none"

        async def ours(seed: int) -> float:
            started = time.perf_counter()
            job = await app.service.imagine(f"{PROMPT} --seed {seed} {flags}", who)
            await job.result()
            return time.perf_counter() - started

        child: BareProcess | None = None
        if options.baseline == "child":
            child = await BareProcess.start(data_dir, init, guide)
            bare: Callable[[int], Awaitable[float]] = child
        else:
            here = bare_pipeline(data_dir, init, guide)

            async def bare(seed: int) -> float:
                return here(seed)

        await ours(1)  # worker start and model load
        worker_pid = getattr(app.backend, "worker_pid", None)
        if pinning and worker_pid is not None:
            pin(worker_pid, compute)
            if child is not None:
                pin(child.pid, compute)
        await run_block(ours, bare, 2, 2)  # warm-up: first-call allocations, on the pinned core
        blocks = []
        for block in range(options.repeat):
            blocks.append(await run_block(ours, bare, options.pairs, 100 + block * options.pairs))
        if child is not None:
            await child.close()
        await app.aclose()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    what = f"from an image, {IMAGE_STEPS} steps at strength {STRENGTH}" if options.img2img else f"{STEPS} steps"
    what += ", the tiny ControlNet on every step" if options.controlnet else ""
    where = "its own process" if child is not None else "this process"
    pinned = f"worker and bare process pinned to core {cores[-1]}" if pinning else "not pinned"
    print(f"tiny SDXL, 128x128, {what}, DPM++ 2M Karras, one thread; bare call in {where}, {pinned}")
    print(f"{options.repeat} block(s) of {options.pairs} pairs, order alternating; ratio = median of pair ratios")
    every: list[float] = []
    for n, (ours_times, bare_times) in enumerate(blocks, 1):
        ratios = [o / b for o, b in zip(ours_times, bare_times, strict=True)]
        every += ratios
        bare_median, ours_median = statistics.median(bare_times), statistics.median(ours_times)
        print(
            f"  block {n}  bare median {bare_median * 1000:7.1f} ms  service median {ours_median * 1000:7.1f} ms"
            f"  ratio {statistics.median(ratios):.3f}  (ratio of medians {ours_median / bare_median:.3f})"
        )
    low, high = bootstrap_interval(every)
    figure = statistics.median(every)
    verdict = "OK" if high <= 1.10 else ("MISSED" if low > 1.10 else "UNDECIDED")
    print(
        f"ratio service/bare     {figure:.3f}  95 % interval {low:.3f}-{high:.3f} over {len(every)} pairs"
        f"  (target <= 1.10: {verdict})"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare-child"]:
        bare_child(sys.argv[2])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10, help="pairs of runs per block")
    parser.add_argument("--repeat", type=int, default=5, help="blocks, each printing its own figure")
    parser.add_argument("--img2img", action="store_true", help="image-to-image instead of text-to-image")
    parser.add_argument("--controlnet", action="store_true", help="text-to-image with the tiny ControlNet")
    parser.add_argument(
        "--baseline", choices=["child", "here"], default="child", help="where the bare call runs (default: child)"
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="leave the processes to the scheduler")
    asyncio.run(main(parser.parse_args()))

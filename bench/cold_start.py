"""Cold start: `imagebot run` to its first image, and a fresh local worker to ready and to its first image.

`imagebot run` is started as a user starts it (``python -m imagebot run``), in a
fresh data directory and without chat credentials, so it opens the console chat;
one ``/imagine`` is typed on its stdin at once, and the time is taken when the
reply naming the saved PNG arrives on its stdout. Twice: with the tiny model
already built into the data directory (a linked folder, as a returning user has
it), and with a data directory that has none, so the first start builds it
(`inference.tiny`) as a first-time user's does. Typed at once, the ``/imagine`` waits
behind the worker's warm-up image (``IMAGEBOT_WARMUP``, on by default); a third arm types it
only once the bot logs that its worker is warm, which is what the first user after a restart meets.

The worker: a `LocalBackend` whose worker was killed (SIGKILL) is started again;
the time from the new worker's spawn to its Ready frame, and to the first image.

Baseline, measured in the same run: a bare ``python -c`` that imports torch and
diffusers, loads the same tiny pipeline from the same folder, makes one image of
the same size, steps and scheduler and saves it as PNG; the floor any cold start
pays. The arms take turns within each round, their order rotating from round to
round; medians of the rounds, ratios against the baseline's median.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.catalog import load_catalog
from bot.request import GenerationRequest
from inference import tiny
from inference.local import LocalBackend

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red fox in the snow"
REQUEST = GenerationRequest(prompt=PROMPT, model="tiny", width=128, height=128, steps=20, seed=7)
BARE = """
import sys, time
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline
pipe = StableDiffusionXLPipeline.from_pretrained(sys.argv[1], local_files_only=True)
pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
pipe.set_progress_bar_config(disable=True)
image = pipe(sys.argv[3], num_inference_steps=20, guidance_scale=7.0, width=128, height=128,
             generator=torch.Generator("cpu").manual_seed(7)).images[0]
image.save(sys.argv[2])
print("saved", sys.argv[2], flush=True)
"""


def _env(data_dir: Path) -> dict[str, str]:
    """Return the environment of a user's shell: no IMAGEBOT_ settings but the data directory, offline."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    env |= {"IMAGEBOT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "IMAGEBOT_LOG_LEVEL": "WARNING"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


async def _until_png(command: list[str], env: dict[str, str], stdin: bytes | None) -> float:
    """Start `command`, type `stdin`; return the seconds until a stdout line names a saved PNG, then end it."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None
    if stdin:
        process.stdin.write(stdin)
        await process.stdin.drain()
    try:
        async with asyncio.timeout(600):
            while line := await process.stdout.readline():
                if line.rstrip().endswith(b".png"):
                    return time.perf_counter() - started
    finally:
        await _end(process)
    raise SystemExit(f"{command[2:4]} ended without naming a saved image")


async def _end(process: asyncio.subprocess.Process) -> None:
    """Close the process's input, so the console chat quits; kill it if it has not within a minute."""
    assert process.stdin is not None
    process.stdin.close()
    try:
        async with asyncio.timeout(60):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def bare(prebuilt: Path, scratch: Path) -> float:
    """Return the seconds of the floor: a new interpreter, torch + diffusers, the tiny pipeline, one PNG."""
    base = tiny.resolve("tiny:base", prebuilt)[0]
    command = [sys.executable, "-c", BARE, str(base), str(scratch / "bare.png"), PROMPT]
    return await _until_png(command, _env(scratch / "unused"), None)


async def imagebot_run(prebuilt: Path | None, scratch: Path) -> float:
    """Return the seconds from starting `imagebot run` in a fresh data directory to its first image."""
    data_dir = Path(tempfile.mkdtemp(dir=scratch))
    if prebuilt is not None:
        (data_dir / "models").mkdir()
        (data_dir / "models" / "tiny").symlink_to(prebuilt / "models" / "tiny")
    command = [sys.executable, "-m", "imagebot", "run"]
    return await _until_png(command, _env(data_dir), f"/imagine {PROMPT} --seed 7\n".encode())


async def ready_run(prebuilt: Path, scratch: Path) -> float:
    """Return the seconds from an `/imagine` typed once `imagebot run` says its worker is warm to the image."""
    data_dir = Path(tempfile.mkdtemp(dir=scratch))
    (data_dir / "models").mkdir()
    (data_dir / "models" / "tiny").symlink_to(prebuilt / "models" / "tiny")
    env = _env(data_dir) | {"IMAGEBOT_LOG_LEVEL": "INFO"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagebot",
        "run",
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stderr = process.stderr
    try:
        async with asyncio.timeout(600):
            while b"local worker ready for" not in (line := await stderr.readline()):
                if not line:
                    raise SystemExit("imagebot run ended before its worker was warm")
            # The log goes on; a full pipe would stop the bot.
            draining = asyncio.create_task(stderr.read())
            started = time.perf_counter()
            process.stdin.write(f"/imagine {PROMPT} --seed 7\n".encode())
            await process.stdin.drain()
            while line := await process.stdout.readline():
                if line.rstrip().endswith(b".png"):
                    return time.perf_counter() - started
    finally:
        await _end(process)
    draining.cancel()
    raise SystemExit("imagebot run ended without naming a saved image")


async def worker_restart(prebuilt: Path) -> tuple[float, float]:
    """Return the seconds from a killed worker's successor's spawn to Ready, and to its first image."""
    backend = LocalBackend(load_catalog(), prebuilt, device="cpu")
    try:
        await backend.generate(REQUEST)
        pid = backend.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while backend.worker_pid is not None:  # until the backend has seen it go
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        await backend.start()
        ready = time.perf_counter() - started
        await backend.generate(REQUEST)
        return ready, time.perf_counter() - started
    finally:
        await backend.aclose()


async def main(rounds: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        prebuilt = scratch / "prebuilt"
        # A first build pays the lazy imports (transformers' CLIP and the rest) that a worker pays
        # anyway when it loads the model; the second one is the build's own time.
        tiny.ensure(scratch / "imports")
        built = time.perf_counter()
        tiny.ensure(prebuilt)
        build_seconds = time.perf_counter() - built
        await bare(prebuilt, scratch)  # fill the file cache with torch, diffusers and the model
        times: dict[str, list[float]] = {name: [] for name in ("bare", "prebuilt", "fresh", "warm", "ready", "first")}

        async def restart() -> None:
            ready, first = await worker_restart(prebuilt)
            times["ready"].append(ready)
            times["first"].append(first)

        async def timed(name: str, arm: Callable[[], Awaitable[float]]) -> None:
            times[name].append(await arm())

        arms: list[Callable[[], Awaitable[None]]] = [
            lambda: timed("bare", lambda: bare(prebuilt, scratch)),
            lambda: timed("prebuilt", lambda: imagebot_run(prebuilt, scratch)),
            lambda: timed("fresh", lambda: imagebot_run(None, scratch)),
            lambda: timed("warm", lambda: ready_run(prebuilt, scratch)),
            restart,
        ]
        for n in range(rounds):
            for arm in arms[n % len(arms) :] + arms[: n % len(arms)]:
                await arm()

    floor = statistics.median(times["bare"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    print(
        f"tiny SDXL, 128x128, 20 steps, DPM++ 2M Karras, CPU, threads: {threads}; {rounds} rounds, medians;"
        f" building the tiny model alone (its imports done) takes {build_seconds:.1f} s"
    )
    rows = [
        ("bare python -c: torch, diffusers, load, 1 PNG (baseline)", "bare"),
        ("imagebot run → first image, tiny model prebuilt", "prebuilt"),
        ("imagebot run → first image, tiny model built on start", "fresh"),
        ("imagebot run, warmed up: /imagine typed → image", "warm"),
        ("killed worker's successor: spawn → Ready", "ready"),
        ("killed worker's successor: spawn → first image", "first"),
    ]
    for label, name in rows:
        median = statistics.median(times[name])
        each = " ".join(f"{t:.1f}" for t in times[name])
        print(f"  {label:<58} {median:6.2f} s   ratio {median / floor:5.2f}   ({each})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))

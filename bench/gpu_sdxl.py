"""SDXL base + refiner at 1024², 30 steps (27 + 3), through the worker's own code, on one GPU.

Speed does not depend on weight values, and a GPU machine here has no network, so
the model is **full-size SDXL 1.0 base + refiner + both text encoders + VAE with
random weights** drawn from the shapes in ``bench/sdxl/full.json`` (fixed seed),
saved as diffusers folders and loaded by `SDXLRunner`: the same loading, lever
setup (`inference.local._speed`), refiner split, batching, progress callbacks and
PNG encoding as a user's job in the worker.

It prints one table (and writes it as JSON): for each set of levers and batch size,
seconds per image (median of the timed runs), base and refiner iterations per second,
the share of the chip's measured bf16 peak (a matrix product timed first; the job's
FLOPs counted with torch's FLOP counter on one eager run), peak GPU memory, the first
run's time (compilation included) and the model's load time; then the warm start of
a new process with the compile cache filled (``--warm-start``), as a restarted worker.

Runs, in this order, each skipped with a note once ``--budget`` seconds have passed:
eager bf16 (batch 1, 4, 8), channels-last, fused QKV, all exact levers with the UNets
compiled (batch 1, 4, 8), the warm start, float32, compile alone, model CPU offload.

``--smoke``: the same path on the CPU with tiny shapes (``bench/sdxl/smoke.json``),
10 steps, no compilation or offload, in seconds; the test suite runs it so this
script cannot rot. See bench/README.md for running it on a GPU machine without network.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from bot.catalog import Catalog
from bot.request import GenerationRequest, RefinerSpec
from inference import tiny
from inference.local._job import WorkerJob, build_job
from inference.local._speed import Levers
from inference.local._worker import make_runner, quiet_libraries

if TYPE_CHECKING:
    from inference.local._pipeline import SDXLRunner

CONFIGS = Path(__file__).resolve().parent / "sdxl"
PROMPT = "a red fox in fresh snow at dawn, detailed fur, soft light"
NEGATIVE = "blurry, low quality"
STEPS, REFINER_PERCENT = 30, 90  # 27 base + 3 refiner steps
SCHEDULER = "DPM++ 2M Karras"  # the sdxl catalog entry's default sampler
MODEL_SEED = 0


@dataclass(frozen=True)
class Plan:
    """One set of levers, measured at each of its batch sizes."""

    name: str
    levers: Levers
    dtype: str
    batches: tuple[int, ...]


@dataclass
class Row:
    plan: str
    levers: str
    dtype: str
    batch: int
    seconds_per_image: float | None = None
    images_per_second: float | None = None
    base_it_s: float | None = None
    refiner_it_s: float | None = None
    share_of_peak: float | None = None
    peak_memory_gib: float | None = None
    first_run_s: float | None = None
    load_s: float | None = None
    runs: list[float] = field(default_factory=list)
    note: str = ""


def plans(smoke: bool, compile_mode: str) -> list[Plan]:
    """The measurements in the order they run (the most telling first, in case the budget runs out)."""
    half = "float32" if smoke else "bfloat16"
    eager = Levers(channels_last=False)
    exact = Levers(channels_last=True, fuse_qkv=True)
    compiled = Levers(channels_last=True, fuse_qkv=True, compile="unet", compile_mode=compile_mode)
    if smoke:
        return [Plan("eager", eager, half, (1, 2)), Plan("all-exact", exact, half, (1, 2))]
    return [
        Plan("eager", eager, half, (1, 4, 8)),
        Plan("channels-last", Levers(channels_last=True), half, (1,)),
        Plan("fused-qkv", Levers(channels_last=False, fuse_qkv=True), half, (1,)),
        Plan("all", compiled, half, (1, 4, 8)),
        Plan("float32", eager, "float32", (1,)),
        Plan("compile", Levers(channels_last=False, compile="unet", compile_mode=compile_mode), half, (1,)),
        Plan("offload-model", Levers(channels_last=True, offload="model"), half, (1,)),
    ]


# The model


def build_model(config_path: Path, folder: Path, device: torch.device) -> tuple[Path, Path]:
    """Write random-weight SDXL base and refiner folders of `config_path`'s shapes, unless already there."""
    from diffusers import (
        AutoencoderKL,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text = config_path.read_text(encoding="utf-8")
    marker = folder / ".complete"
    digest = hashlib.sha256(text.encode()).hexdigest()
    base_dir, refiner_dir = folder / "base", folder / "refiner"
    if marker.is_file() and marker.read_text(encoding="utf-8") == digest:
        return base_dir, refiner_dir
    shutil.rmtree(folder, ignore_errors=True)
    config = json.loads(text)
    tokens = folder / ".tokenizer"
    tiny.write_tokenizer(tokens)
    tokenizer = tiny.load_tokenizer(tokens)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    ids["pad_token_id"] = tokenizer.eos_token_id
    torch.manual_seed(MODEL_SEED)
    # Drawn on the GPU (seconds, not minutes for 6.6 billion weights), kept in bf16 on disk.
    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig(**config["text_encoder"], **ids))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config["text_encoder_2"], **ids))
        unet = UNet2DConditionModel(**config["unet"])
        refiner_unet = UNet2DConditionModel(**config["refiner_unet"])
        vae = AutoencoderKL(**config["vae"])
    stored = torch.bfloat16 if device.type == "cuda" else torch.float32
    parts = [text_encoder, text_encoder_2, unet, refiner_unet, vae]
    for part in parts:
        part.to(stored).eval()
    tiny.save_sdxl(folder, tokens, text_encoder, text_encoder_2, unet, refiner_unet, vae)
    shutil.rmtree(tokens)
    del parts, text_encoder, text_encoder_2, unet, refiner_unet, vae
    _free()
    marker.write_text(digest, encoding="utf-8")
    return base_dir, refiner_dir


def catalog(base: Path, refiner: Path) -> Catalog:
    """A catalog naming the random model the way models.toml names SDXL."""
    return Catalog.from_toml(
        f"""
[model.sdxl-random]
architecture = "sdxl"
local = "{base}"
refiner = "sdxl-random-refiner"

[refiner.sdxl-random-refiner]
architecture = "sdxl-refiner"
local = "{refiner}"
"""
    )


def jobs(names: Catalog, args: argparse.Namespace, batch: int) -> list[WorkerJob]:
    """`batch` compatible jobs (other seeds), as the worker batches queued /imagine of several users."""
    return [
        build_job(
            GenerationRequest(
                prompt=f"{PROMPT}, take {n}",
                negative_prompt=NEGATIVE,
                model="sdxl-random",
                width=args.size,
                height=args.size,
                steps=args.steps,
                scheduler=SCHEDULER,
                cfg_scale=7.0,
                seed=1000 + n,
                refiner=RefinerSpec(model="sdxl-random-refiner", start_percent=args.refiner_percent),
            ),
            names,
            args.data_dir,
        )
        for n in range(batch)
    ]


# Measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def matmul_peak(device: torch.device, smoke: bool) -> float:
    """Return the FLOP/s of a large bf16 (CPU: float32) matrix product, the chip's practical peak."""
    n, dtype = (512, torch.float32) if smoke else (8192, torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    rounds = 5 if smoke else 50
    started = time.perf_counter()
    for _ in range(rounds):
        a @ b
    _sync(device)
    return 2 * n**3 * rounds / (time.perf_counter() - started)


def count_flops(runner: SDXLRunner, batch: list[WorkerJob]) -> float:
    """Return the FLOPs of one image of `batch` (text encoders, both UNets with CFG, the VAE decode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        runner.run_batch(batch)
    return counter.get_total_flops() / len(batch)


class StageClock:
    """Progress callback that times each stage's steps, the GPU synchronised at each step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[tuple[str, int, float]] = []
        self.started = time.perf_counter()

    def __call__(self, stage: str, step: int, total: int, preview: bytes | None) -> None:
        _sync(self.device)
        self.marks.append((stage, step, time.perf_counter()))

    def rate(self, stage: str) -> float | None:
        """Steps per second of `stage`, from its first step's end to its last."""
        marks = [(step, at) for name, step, at in self.marks if name == stage]
        if len(marks) < 2:
            return None
        (first, start), (last, end) = marks[0], marks[-1]
        return (last - first) / (end - start) if end > start else None


def measure(
    plan: Plan, names: Catalog, args: argparse.Namespace, device: torch.device, flops: float | None, peak: float
) -> tuple[list[Row], SDXLRunner | None]:
    """Run one plan at each of its batch sizes; return its rows (and the runner, for the FLOP count)."""
    rows: list[Row] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    runner = make_runner(
        args.data_dir, str(device), plan.dtype, safety_checker="off", preview_decoder="linear", speed=plan.levers
    )
    first = jobs(names, args, 1)
    runner.preload(first[0])
    load_s = time.perf_counter() - started
    for batch in plan.batches:
        row = Row(plan.name, plan.levers.describe(), plan.dtype, batch, load_s=round(load_s, 2))
        rows.append(row)
        if time.perf_counter() - args.started > args.budget:
            row.note = "skipped: over the time budget"
            continue
        batch_jobs = jobs(names, args, batch)
        # The first run compiles (when compiling), autotunes and warms the allocator.
        at = time.perf_counter()
        runner.run_batch(batch_jobs)
        _sync(device)
        row.first_run_s = round(time.perf_counter() - at, 2)
        for _ in range(args.runs):
            at = time.perf_counter()
            runner.run_batch(batch_jobs)
            _sync(device)
            row.runs.append(round(time.perf_counter() - at, 4))
        clock = StageClock(device)
        runner.run_batch(batch_jobs, on_progress=clock)
        median = statistics.median(row.runs)
        row.seconds_per_image = round(median / batch, 4)
        row.images_per_second = round(batch / median, 3)
        row.base_it_s = _rounded(clock.rate("base"))
        row.refiner_it_s = _rounded(clock.rate("refiner"))
        if flops is not None:
            row.share_of_peak = round(flops / (median / batch) / peak, 3)
        if device.type == "cuda":
            row.peak_memory_gib = round(torch.cuda.max_memory_allocated(device) / 1024**3, 2)
        print(_line(row), flush=True)
    return rows, runner


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def warm_start(args: argparse.Namespace) -> dict[str, Any]:
    """Time a new process from start to its first image, the compile cache filled: a restarted worker."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--warm-start-probe",
        "--data-dir",
        str(args.data_dir),
        "--compile-mode",
        args.compile_mode,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=max(60, args.budget), check=False)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"wall_s": round(wall, 2), "error": done.stderr.strip().splitlines()[-1:]}
    return {"wall_s": round(wall, 2), **json.loads(lines[-1])}


def probe(args: argparse.Namespace) -> None:
    """The warm-start child: load, make one image with every exact lever and the UNets compiled."""
    device = torch.device("cuda")
    started = time.perf_counter()
    base, refiner = build_model(CONFIGS / "full.json", args.data_dir / "models" / "sdxl-random", device)
    names = catalog(base, refiner)
    levers = Levers(channels_last=True, fuse_qkv=True, compile="unet", compile_mode=args.compile_mode)
    runner = make_runner(
        args.data_dir, "cuda", "bfloat16", safety_checker="off", preview_decoder="linear", speed=levers
    )
    one = jobs(names, args, 1)
    runner.preload(one[0])
    loaded = time.perf_counter() - started
    runner.run_batch(one)
    torch.cuda.synchronize()
    print(json.dumps({"load_s": round(loaded, 2), "first_image_s": round(time.perf_counter() - started, 2)}))


# Output


_HEAD = (
    f"{'plan':<14} {'batch':>5} {'s/image':>8} {'img/s':>7} {'base it/s':>9} {'ref it/s':>8} "
    f"{'peak %':>6} {'mem GiB':>7} {'1st run':>8} {'load':>6}  levers"
)


def _line(row: Row) -> str:
    def cell(value: float | None, width: int, fmt: str) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"

    share = None if row.share_of_peak is None else row.share_of_peak * 100
    text = (
        f"{row.plan:<14} {row.batch:>5} {cell(row.seconds_per_image, 8, '.3f')} "
        f"{cell(row.images_per_second, 7, '.2f')} "
        f"{cell(row.base_it_s, 9, '.2f')} {cell(row.refiner_it_s, 8, '.2f')} {cell(share, 6, '.1f')} "
        f"{cell(row.peak_memory_gib, 7, '.1f')} {cell(row.first_run_s, 8, '.1f')} {cell(row.load_s, 6, '.1f')}  "
        f"{row.levers} ({row.dtype})"
    )
    return f"{text}  [{row.note}]" if row.note else text


def _flops(value: float) -> str:
    """Return a FLOP count in TFLOP, or GFLOP below one (the smoke test's tiny model)."""
    return f"{value / 1e12:.1f} TFLOP" if value >= 1e12 else f"{value / 1e9:.2f} GFLOP"


def _environment(device: torch.device) -> dict[str, Any]:
    import diffusers

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": gpu or f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} threads)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, in seconds (the test suite)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/imagebot-gpu-bench"))
    parser.add_argument("--runs", type=int, default=3, help="timed runs per batch size (the median counts)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which remaining runs are skipped")
    parser.add_argument("--plans", default=None, help="comma-separated plan names to run (default: all)")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--keep-cache", action="store_true", help="keep the compile cache of an earlier run")
    parser.add_argument("--warm-start-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = 128 if args.smoke else 1024
    args.steps = 10 if args.smoke else STEPS
    # Two refiner steps in the smoke test too, so its iterations per second are measured.
    args.refiner_percent = 80 if args.smoke else REFINER_PERCENT
    if args.smoke:
        args.runs = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    args.started = time.perf_counter()
    # Before diffusers' pipelines are imported (transformers warns at import), as the worker does.
    quiet_libraries(verbose=False)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    if args.warm_start_probe:
        probe(args)
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU: run with --smoke on a CPU, or on a GPU machine (bench/README.md)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    cache = args.data_dir / "cache" / "compile"
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)  # the first compile is measured cold
    environment = _environment(device)
    print(f"# {environment['device']} · torch {environment['torch']} · diffusers {environment['diffusers']}")
    peak = matmul_peak(device, args.smoke)
    print(f"# matrix-product peak: {_flops(peak)}/s ({'float32' if args.smoke else 'bf16'})", flush=True)

    at = time.perf_counter()
    config = CONFIGS / ("smoke.json" if args.smoke else "full.json")
    base, refiner = build_model(config, args.data_dir / "models" / "sdxl-random", device)
    names = catalog(base, refiner)
    print(f"# random SDXL ({config.name}) ready in {time.perf_counter() - at:.1f} s", flush=True)

    chosen = plans(args.smoke, args.compile_mode)
    if args.plans:
        wanted = set(args.plans.split(","))
        chosen = [plan for plan in chosen if plan.name in wanted]
    rows: list[Row] = []
    flops: float | None = None
    warm: dict[str, Any] | None = None
    print(_HEAD, flush=True)
    for plan in chosen:
        if time.perf_counter() - args.started > args.budget:
            rows.append(Row(plan.name, plan.levers.describe(), plan.dtype, 0, note="skipped: over the time budget"))
            print(_line(rows[-1]), flush=True)
            continue
        try:
            plan_rows, runner = measure(plan, names, args, device, flops, peak)
        except Exception as error:  # one lever failing must not cost the rest of a short GPU lease
            note = "out of GPU memory" if isinstance(error, torch.cuda.OutOfMemoryError) else repr(error)[:200]
            rows.append(Row(plan.name, plan.levers.describe(), plan.dtype, 0, note=f"failed: {note}"))
            print(_line(rows[-1]), flush=True)
            _free()
            continue
        if flops is None and runner is not None:
            # Counted once on the eager runner; the shares of its rows follow from it.
            flops = count_flops(runner, jobs(names, args, 1))
            print(f"# per image: {_flops(flops)} (torch's FLOP counter)", flush=True)
            for row in plan_rows:
                if row.seconds_per_image:
                    row.share_of_peak = round(flops / row.seconds_per_image / peak, 3)
        rows.extend(plan_rows)
        del runner
        _free()
        if plan.name == "all" and not args.smoke:
            warm = warm_start(args)
            print(f"# warm start (new process, compile cache filled): {warm}", flush=True)

    print("\n" + _HEAD)
    for row in rows:
        print(_line(row))
    summary = _summary(rows)
    for line in summary:
        print(f"# {line}")
    result = {
        "environment": environment,
        "job": {
            "size": args.size,
            "steps": args.steps,
            "refiner_percent": args.refiner_percent,
            "scheduler": SCHEDULER,
        },
        "matmul_peak_flops": peak,
        "flops_per_image": flops,
        "rows": [row.__dict__ for row in rows],
        "warm_start": warm,
        "summary": summary,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _summary(rows: list[Row]) -> list[str]:
    """The figures the issue asks for: the best batch-1 time, and batching's gain at 8 (or the largest batch)."""
    lines = []
    timed = [row for row in rows if row.seconds_per_image]
    ones = [row for row in timed if row.batch == 1]
    if ones:
        best = min(ones, key=lambda row: row.seconds_per_image or 0.0)
        eager = next((row for row in ones if row.plan == "eager"), None)
        gain = (
            f", {eager.seconds_per_image / best.seconds_per_image:.2f}× eager"
            if eager and best.seconds_per_image
            else ""
        )
        lines.append(f"batch 1: best {best.seconds_per_image:.3f} s/image ({best.plan}{gain})")
    for plan in {row.plan for row in timed}:
        mine = sorted((row for row in timed if row.plan == plan), key=lambda row: row.batch)
        if len(mine) > 1 and mine[0].batch == 1 and mine[0].images_per_second:
            top = mine[-1]
            ratio = (top.images_per_second or 0.0) / mine[0].images_per_second
            lines.append(f"{plan}: batch {top.batch} gives {ratio:.2f}× the throughput of batch 1")
    return sorted(lines)


if __name__ == "__main__":
    sys.exit(main())

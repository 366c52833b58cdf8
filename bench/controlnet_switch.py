"""Switching between two ControlNets costs no reload: jobs alternating A, B against jobs all using A.

The local worker's runner in this process (`SDXLRunner`, the code the worker process runs),
tiny SDXL with the two tiny ControlNets, 128×128, 20 steps, DPM++ 2M Karras, each ControlNet
on every step. Blocks of alternating jobs and blocks of same-ControlNet jobs interleave, so
drift hits both; the figure is the ratio of the medians per job (target ≈ 1.0: a switch is a
dictionary lookup, not a load) and the number of ControlNet loads (2, whatever the job count).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from importlib import resources

from bot.catalog import Catalog
from bot.request import ControlNetSpec, GenerationRequest
from inference import tiny
from inference.local._job import build_job
from inference.local._worker import make_runner, quiet_libraries

# The second tiny ControlNet is built with the tiny model but not in the shipped catalog.
SECOND = """
[controlnet.tiny-controlnet-2]
architecture = "sdxl"
local = "tiny:controlnet-2"
"""


def main(blocks: int, per_block: int) -> None:
    quiet_libraries(verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        tiny.ensure(data_dir)
        catalog = Catalog.from_toml(resources.files("bot").joinpath("models.toml").read_text(encoding="utf-8") + SECOND)
        guide = _guide(data_dir)
        runner = make_runner(data_dir, "cpu", "float32", safety_checker="off", preview_decoder="linear")

        def job(name: str, seed: int):
            control = ControlNetSpec(model=name, guide=guide, end_step=20)
            request = GenerationRequest(
                prompt="a castle on a hill",
                model="tiny",
                width=128,
                height=128,
                steps=20,
                seed=seed,
                controlnets=(control,),
            )
            return build_job(request, catalog, data_dir)

        def timed(name: str, seed: int) -> float:
            started = time.perf_counter()
            runner.run(job(name, seed))
            return time.perf_counter() - started

        for name in ("tiny-controlnet", "tiny-controlnet-2"):  # loaded once each, before timing
            timed(name, 1)
        same, switching = [], []
        seed = 10
        for _ in range(blocks):
            for _ in range(per_block):
                same.append(timed("tiny-controlnet", seed := seed + 1))
            for n in range(per_block):
                switching.append(timed("tiny-controlnet" if n % 2 else "tiny-controlnet-2", seed := seed + 1))
        loads = runner.stats()["controlnet"]
    same_median, switch_median = statistics.median(same), statistics.median(switching)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"tiny SDXL, 128x128, 20 steps, one ControlNet on every step; {len(same)} jobs each, interleaved blocks")
    print(f"same ControlNet        median {same_median * 1000:8.1f} ms")
    print(f"alternating A, B       median {switch_median * 1000:8.1f} ms")
    print(f"ratio switching/same   {switch_median / same_median:.3f}  (target ≈ 1.0: no reload)")
    print(f"ControlNet loads       {loads} for {len(same) + len(switching) + 2} jobs (target: 2)")


def _guide(data_dir: Path) -> str:
    """Store a drawn square outline as an input image, as the service does, and return its sha256."""
    from PIL import Image, ImageDraw

    from tests.inference.test_local_image_inputs import store_input

    image = Image.new("RGB", (128, 128), "white")
    ImageDraw.Draw(image).rectangle((32, 32, 95, 95), outline="black", width=3)
    return store_input(data_dir, image)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--per-block", type=int, default=6)
    arguments = parser.parse_args()
    main(arguments.blocks, arguments.per_block)

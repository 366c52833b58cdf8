"""The worker's speed levers (`inference.local._speed`) on the tiny model: same image, LoRAs still act.

The speed itself is measured by `bench/gpu_sdxl.py` on a GPU; here, on the CPU, what a
user would notice if a lever were wrong: a different picture, or a LoRA that stops acting.
"""

from __future__ import annotations

import asyncio
import io
import os

import numpy as np
import pytest
from PIL import Image

from bot.catalog import load_catalog
from bot.config import LocalWorkerSettings
from bot.request import RefinerSpec, WeightedName
from inference.local._job import build_job
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from inference.local._pipeline import SDXLRunner
from inference.local._speed import Levers, compile_cache
from inference.local._worker import levers

# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()
# The batching tolerance: what float rounding may move a channel by, out of 255.
TOLERANCE = 1


def pixels(runner: SDXLRunner, **fields: object) -> np.ndarray:
    job = build_job(tiny_request(**fields), CATALOG, runner.data_dir)
    image = runner.run(job)[0]
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def eager(tiny_data_dir):
    return SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def fused(tiny_data_dir):
    return SDXLRunner(tiny_data_dir, device="cpu", dtype="float32", levers=Levers(fuse_qkv=True))


def test_fused_attention_draws_the_same_image(eager, fused):
    """Fused query/key/value projections: the same picture, base and refiner."""
    refiner = RefinerSpec(model="tiny-refiner", start_step=3)
    assert np.abs(pixels(fused) - pixels(eager)).max() <= TOLERANCE
    assert np.abs(pixels(fused, refiner=refiner) - pixels(eager, refiner=refiner)).max() <= TOLERANCE
    assert getattr(fused.base.unet, "imagebot_fused", False)


def test_a_lora_still_acts_with_fused_attention(eager, fused):
    """LoRA on, off, on again: each image is the unfused runner's, so the LoRA is never bypassed."""
    lora = (WeightedName(name="tiny-lora", weight=1.0),)
    with_lora = pixels(fused, loras=lora)
    assert np.abs(with_lora - pixels(eager, loras=lora)).max() <= TOLERANCE
    assert np.abs(with_lora - pixels(fused)).max() > 10  # the LoRA moves the picture
    assert getattr(fused.base.unet, "imagebot_fused", False)  # fused again without LoRAs
    assert np.abs(pixels(fused, loras=lora) - with_lora).max() <= TOLERANCE


def test_settings_name_the_levers(monkeypatch):
    """IMAGEBOT_* settings reach the worker's levers; the defaults are the exact, eager ones."""
    for name in ("COMPILE", "FUSE_QKV", "OFFLOAD", "VAE_TILING", "CHANNELS_LAST", "COMPILE_MODE"):
        monkeypatch.delenv(f"IMAGEBOT_{name}", raising=False)
    default = levers(LocalWorkerSettings(_env_file=None))
    assert default == Levers()
    assert default.describe() == "channels-last"
    monkeypatch.setenv("IMAGEBOT_COMPILE", "all")
    monkeypatch.setenv("IMAGEBOT_FUSE_QKV", "true")
    monkeypatch.setenv("IMAGEBOT_OFFLOAD", "model")
    chosen = levers(LocalWorkerSettings(_env_file=None))
    assert (chosen.compile, chosen.fuse_qkv, chosen.offload) == ("all", True, "model")
    assert chosen.describe() == ("channels-last, fused-qkv, compile=all(default), offload=model")


def test_compiled_unet_draws_the_same_image_and_caches_under_the_data_dir(tiny_data_dir, eager, monkeypatch):
    """torch.compile of the UNets and the VAE decoder (inductor, CPU): the same picture; the
    compiled code lands under the data dir, where a restarted worker finds it."""
    # What importing diffusers leaves in the environment: inductor's default folder under /tmp.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    compiled = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32", levers=Levers(compile="all"))
    cache = tiny_data_dir / "cache" / "compile" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache)
    assert np.abs(pixels(compiled) - pixels(eager)).max() <= TOLERANCE
    assert any(cache.rglob("*")), "nothing was compiled into the data dir's cache"


def test_a_compile_cache_the_operator_chose_is_kept(tmp_path, monkeypatch):
    """IMAGEBOT_COMPILE with TORCHINDUCTOR_CACHE_DIR set by the operator: their folder, not the data dir's."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    compile_cache(tmp_path / "data")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "data" / "cache" / "compile" / "triton")


async def test_warm_up_loads_the_default_model_before_the_first_job(tiny_data_dir):
    """With warm-up on, the worker loads (and would compile) the model and its refiner at start,
    so the first user's job loads nothing; with it off (the default), warm_up does nothing."""
    from inference.local import LocalBackend

    cold = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    cold.warm_up("tiny")
    assert cold.worker_pid is None  # nothing started
    await cold.aclose()

    backend = LocalBackend(load_catalog(), tiny_data_dir, device="cpu", warmup=True)
    try:
        backend.warm_up("tiny")
        backend.warm_up("tiny")  # once only
        images = await backend.generate(tiny_request(refiner=RefinerSpec(model="tiny-refiner", start_step=3)))
        assert images[0].data.startswith(b"\x89PNG")
        # The warm-up ran first (the job waited behind it) and loaded both; the job loaded nothing more.
        assert backend.batch_sizes == [1, 1]
        assert (await backend.stats())["pipeline"] == 1 and (await backend.stats())["refiner"] == 1
    finally:
        await backend.aclose()


def _workers_of(data_dir) -> list[int]:
    """Return the pids of worker processes serving `data_dir` (their command line names it)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    words = cmdline.read().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            if b"inference.local._worker" in words and str(data_dir).encode() in words:
                pids.append(int(entry.name))
    return pids


async def test_a_bot_closed_while_its_worker_starts_leaves_no_worker_behind(tiny_data_dir, tmp_path):
    """Closing during the warm-up (a console fed a few commands) stops the starting worker, GPU memory and all."""
    from inference.local import LocalBackend

    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny").symlink_to(tiny_data_dir / "models" / "tiny")
    backend = LocalBackend(load_catalog(), data_dir, device="cpu", warmup=True)
    backend.warm_up("tiny")
    for _ in range(500):  # it is spawned, and still importing torch
        if _workers_of(data_dir):
            break
        await asyncio.sleep(0.01)
    assert _workers_of(data_dir) and backend.worker_pid is None
    await backend.aclose()
    for _ in range(300):
        if not _workers_of(data_dir):
            break
        await asyncio.sleep(0.01)
    assert _workers_of(data_dir) == []


def test_the_warm_up_job_is_the_models_own_shape():
    """The warm-up compiles what a first job needs: the model's size, CFG and refiner (4 steps)."""
    from inference.local._backend import warmup_request

    request = warmup_request(CATALOG.get("model", "sdxl"))
    assert (request.width, request.height, request.steps, request.cfg_scale) == (1024, 1024, 4, 7.0)
    assert request.refiner is not None and request.refiner.model == "sdxl-refiner"
    turbo = warmup_request(CATALOG.get("model", "sdxl-turbo"))
    assert (turbo.width, turbo.cfg_scale, turbo.refiner) == (512, 0.0, None)

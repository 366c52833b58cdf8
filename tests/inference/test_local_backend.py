"""LocalBackend end to end: the real worker process running the tiny model."""

from __future__ import annotations

import asyncio

import pytest

from bot.catalog import load_catalog
from bot.errors import BackendUnavailable, InvalidOption, JobCancelled
from bot.ports import Backend
from bot.request import Progress, RefinerSpec, WeightedName
from inference.local import LocalBackend
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

# The conftest's backend (one worker per module) lives on the module's event loop.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


def request(**fields):
    return tiny_request(**{"seed": 99, **fields})


async def test_is_a_backend(tiny_data_dir):
    """LocalBackend satisfies the Backend protocol."""
    backend = LocalBackend(load_catalog(), tiny_data_dir)
    assert isinstance(backend, Backend)
    assert backend.name == "local"


async def test_generate_reports_base_then_refiner_progress(backend):
    """A refined job returns PNGs and reports every base step, then every refiner step."""
    events: list[Progress] = []
    images = await backend.generate(
        request(steps=10, count=2, refiner=RefinerSpec(model="tiny-refiner", start_percent=80)),
        on_progress=events.append,
    )
    assert [image.seed for image in images] == [99, 100]
    assert all(image.data.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert (images[0].meta["base_steps"], images[0].meta["refiner_steps"]) == (8, 2)
    assert [(e.stage, e.step, e.total) for e in events] == [("base", i, 8) for i in range(1, 9)] + [
        ("refiner", i, 2) for i in range(1, 3)
    ]
    # previews cross the process boundary: every quarter of each stage, never at a stage's last step
    assert [(e.stage, e.step) for e in events if e.preview is not None] == [
        ("base", 2),
        ("base", 4),
        ("base", 6),
        ("refiner", 1),
    ]
    assert all(e.preview.startswith(b"RIFF") for e in events if e.preview is not None)


async def test_same_request_same_bytes_across_the_process_boundary(backend, tiny_data_dir):
    """The worker's PNG equals the in-process runner's, byte for byte."""
    from inference.local._job import build_job
    from inference.local._pipeline import SDXLRunner

    req = request(loras=(WeightedName(name="tiny-lora"),))
    remote = await backend.generate(req)
    local = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32").run(build_job(req, load_catalog(), tiny_data_dir))
    assert remote[0].data == local[0].data


async def test_switching_loras_in_the_worker_does_not_reload(backend):
    """The worker keeps its pipeline while LoRAs come and go."""
    await backend.generate(request())
    before = await backend.stats()
    for loras in ((WeightedName(name="tiny-lora"),), (WeightedName(name="tiny-lora-2"),), ()):
        await backend.generate(request(loras=loras))
    after = await backend.stats()
    assert after["pipeline"] == before["pipeline"] == 1
    assert after["lora"] == 2


async def test_cancel_mid_run_then_the_next_job_works(backend):
    """Setting cancel during a job raises JobCancelled at the next step; the worker takes the next job."""
    cancel = asyncio.Event()
    events: list[Progress] = []

    def progress(event: Progress) -> None:
        events.append(event)
        if event.step == 2:
            cancel.set()

    pid = backend.worker_pid
    with pytest.raises(JobCancelled):
        await backend.generate(request(steps=100), on_progress=progress, cancel=cancel)
    assert 2 <= len(events) < 100
    images = await backend.generate(request())
    assert images[0].data.startswith(b"\x89PNG")
    assert backend.worker_pid == pid


async def test_cancel_set_before_start(backend):
    """A job cancelled before it starts raises JobCancelled without running."""
    cancel = asyncio.Event()
    cancel.set()
    with pytest.raises(JobCancelled):
        await backend.generate(request(), cancel=cancel)


async def test_caller_giving_up_does_not_wedge_the_worker(backend):
    """A generate task cancelled by its caller leaves the worker ready for the next job."""
    started = asyncio.Event()
    task = asyncio.create_task(backend.generate(request(steps=100), on_progress=lambda _: started.set()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    images = await backend.generate(request())
    assert images[0].data.startswith(b"\x89PNG")


async def test_unknown_names_fail_before_any_worker(tiny_data_dir):
    """Catalog errors come from the bot side; no worker is started for them."""
    backend = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    with pytest.raises(InvalidOption, match="did you mean"):
        await backend.generate(request(loras=(WeightedName(name="tiny-lorra"),)))
    assert backend.worker_pid is None
    await backend.aclose()


async def test_worker_that_cannot_start_is_unavailable(tmp_path):
    """A worker that dies before it is ready surfaces as BackendUnavailable."""
    backend = LocalBackend(load_catalog(), tmp_path, device="cpu", dtype="float8", start_timeout=600)
    with pytest.raises(BackendUnavailable):
        await backend.generate(request())
    await backend.aclose()


async def test_the_worker_uses_the_configured_preview_decoder(tiny_data_dir):
    """preview_decoder reaches the worker process: previews arrive as full-size pictures."""
    import io

    from PIL import Image

    decoded = LocalBackend(load_catalog(), tiny_data_dir, device="cpu", preview_decoder="tiny")
    events: list[Progress] = []
    try:
        await decoded.generate(request(steps=8), on_progress=events.append)
    finally:
        await decoded.aclose()
    sizes = [Image.open(io.BytesIO(event.preview)).size for event in events if event.preview is not None]
    assert sizes == [(128, 128)] * 3

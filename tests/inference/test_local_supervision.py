"""Worker supervision: a killed, crashed or stalled worker is replaced and its job tried once more.

In a file of its own: each test starts several workers (importing torch each time),
so that xdist runs these beside the other local-backend tests.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from bot.catalog import load_catalog
from bot.errors import BackendUnavailable
from bot.request import Progress
from inference.local import LocalBackend
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


def request(**fields):
    return tiny_request(**{"seed": 99, **fields})


async def test_a_killed_worker_is_replaced_and_the_job_retried_once(backend):
    """kill -9 mid-job: a fresh worker makes the same image (same bytes), with a note; a second kill fails it."""
    expected = await backend.generate(request(steps=30))
    killed: list[int] = []

    def kill_on_first_step(event: Progress) -> None:
        pid = backend.worker_pid
        if event.step == 1 and pid is not None and pid not in killed and len(killed) < kill_count:
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    kill_count = 1
    restarts = backend.restarts
    images = await backend.generate(request(steps=30), on_progress=kill_on_first_step)
    assert [image.data for image in images] == [image.data for image in expected]
    assert images[0].meta["note"] == "The worker stopped unexpectedly; it was restarted and this is the second try."
    assert backend.restarts == restarts + 1 and backend.worker_pid not in (None, *killed)

    kill_count = 3
    with pytest.raises(BackendUnavailable) as failed:
        await backend.generate(request(steps=30), on_progress=kill_on_first_step)
    assert str(failed.value) == (
        "The local backend could not make the image: stopped unexpectedly, and again on a fresh worker"
        " (stopped unexpectedly the first time)."
    )


async def test_a_stalled_worker_is_killed_by_the_watchdog_and_the_job_retried(tiny_data_dir):
    """A worker that stops making steps (SIGSTOP: a hung kernel) is killed after stall_timeout; the retry works."""
    backend = LocalBackend(load_catalog(), tiny_data_dir, device="cpu", stall_timeout=1.0)
    stopped: list[int] = []

    def stop_on_first_step(event: Progress) -> None:
        pid = backend.worker_pid
        if event.step == 1 and pid is not None and not stopped:
            stopped.append(pid)
            os.kill(pid, signal.SIGSTOP)

    try:
        images = await backend.generate(request(steps=10), on_progress=stop_on_first_step)
    finally:
        await backend.aclose()
    assert images[0].meta["note"] == "The worker made no progress for 1 s; it was restarted and this is the second try."
    with pytest.raises(ProcessLookupError):
        os.kill(stopped[0], 0)  # the stalled worker is gone, not left stopped


# Loaded by the worker process at start (it is on the worker's PYTHONPATH): the UNet runs out of
# "GPU memory" whenever it is given more than one image (two rows with classifier-free guidance).
_OUT_OF_MEMORY_ABOVE_ONE_IMAGE = """
import torch
from diffusers import UNet2DConditionModel

_forward = UNet2DConditionModel.forward


def forward(self, sample, *args, **kwargs):
    if sample.shape[0] > 2:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return _forward(self, sample, *args, **kwargs)


UNet2DConditionModel.forward = forward
"""


async def test_out_of_gpu_memory_is_retried_on_a_fresh_worker_one_image_a_call(tiny_data_dir, tmp_path, monkeypatch):
    """A batch that runs out of GPU memory: a fresh worker makes each image alone; the same images, with a note."""
    (tmp_path / "sitecustomize.py").write_text(_OUT_OF_MEMORY_ABOVE_ONE_IMAGE)
    alone = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    try:
        # Each image made alone: what the second try makes, to the byte.
        expected = [
            [(await alone.generate(request(seed=seed)))[0] for seed in (first, first + 1)] for first in (10, 20)
        ]
    finally:
        await alone.aclose()
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    backend = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    cancels = [asyncio.Event(), asyncio.Event()]
    try:
        results = await backend.generate_batch(
            [request(seed=10, count=2), request(seed=20, count=2)], [None, None], cancels
        )
    finally:
        await backend.aclose()
    assert backend.batch_sizes == [2, 1, 1, 1, 1] and backend.restarts == 1
    assert [[(image.index, image.seed) for image in images] for images in results] == [
        [(0, 10), (1, 11)],
        [(0, 20), (1, 21)],
    ]
    for images, solo in zip(results, expected, strict=True):
        assert [image.data for image in images] == [image.data for image in solo]
    assert (
        results[1][1].meta["note"] == "The worker ran out of GPU memory; it was restarted and this is the second try."
    )

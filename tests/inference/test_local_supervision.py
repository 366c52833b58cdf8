"""Worker supervision: a killed, crashed or stalled worker is replaced and its job tried once more.

In a file of its own: each test starts several workers (importing torch each time),
so that xdist runs these beside the other local-backend tests.
"""

from __future__ import annotations

import os
import signal

import pytest

from bot.catalog import load_catalog
from bot.errors import BackendUnavailable
from bot.request import Progress
from inference.local import LocalBackend
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

pytestmark = pytest.mark.asyncio(loop_scope="module")


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

"""A worker killed where the kernel's out-of-memory killer strikes: starting, loading the model, mid-batch.

Each test's workers load a ``sitecustomize`` (it is on their PYTHONPATH) that SIGKILLs the worker
the first `kills` times it reaches one point, counted in a file, so the kill lands there every run.
In a file of its own: each test starts several workers (importing torch each time).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.catalog import load_catalog
from bot.errors import BackendUnavailable
from bot.jobs import Requester
from inference.local import LocalBackend
from tests.fakes.service import assert_no_half_writes, started_service
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

_KILLER = """
import os
import signal
from pathlib import Path

_AT = os.environ["KILL_AT"]
_batched_steps = 0


def _die_if_due() -> None:
    tally = Path(os.environ["KILL_TALLY"])
    killed = len(tally.read_text()) if tally.exists() else 0
    if killed < int(os.environ["KILL_TIMES"]):
        tally.write_text("x" * (killed + 1))
        os.kill(os.getpid(), signal.SIGKILL)


if _AT == "start":  # before the worker is ready: importing torch, building the checkers
    _die_if_due()
else:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    _from_pretrained = StableDiffusionXLPipeline.from_pretrained.__func__
    _forward = UNet2DConditionModel.forward

    def from_pretrained(cls, *args, **kwargs):
        if _AT == "load":
            _die_if_due()
        return _from_pretrained(cls, *args, **kwargs)

    def forward(self, sample, *args, **kwargs):
        global _batched_steps
        # A batch is more than one image: more than two rows, with classifier-free guidance. Killed at its
        # second step, the first step's progress has reached the bot: the worker died mid-job, not loading.
        if _AT == "batch" and sample.shape[0] > 2:
            _batched_steps += 1
            if _batched_steps == 2:
                _die_if_due()
        return _forward(self, sample, *args, **kwargs)

    StableDiffusionXLPipeline.from_pretrained = classmethod(from_pretrained)
    UNet2DConditionModel.forward = forward
"""


@pytest.fixture
def kill_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Return a function that arranges for the next workers to be killed `times` times at `where`."""

    def arrange(where: str, times: int) -> None:
        folder = tmp_path / "killer"
        folder.mkdir()
        (folder / "sitecustomize.py").write_text(_KILLER)
        monkeypatch.setenv("PYTHONPATH", str(folder))
        monkeypatch.setenv("KILL_AT", where)
        monkeypatch.setenv("KILL_TIMES", str(times))
        monkeypatch.setenv("KILL_TALLY", str(folder / "tally"))

    return arrange


@pytest.mark.parametrize("where", ["start", "load"])
async def test_a_worker_killed_while_loading_is_replaced_and_the_job_retried(tiny_data_dir, kill_worker, where):
    """kill -9 before the first step (starting, or loading the model): a fresh worker makes the image, with a note."""
    kill_worker(where, times=1)
    backend = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    try:
        images = await backend.generate(tiny_request())
    finally:
        await backend.aclose()
    assert len(images) == 1 and backend.restarts == 1
    assert images[0].meta["note"] == (
        "The worker stopped unexpectedly while loading the model; it was restarted and this is the second try."
    )


@pytest.mark.parametrize("where", ["start", "load"])
async def test_a_worker_killed_while_loading_twice_cannot_load_the_model(tiny_data_dir, kill_worker, where):
    """Killed while loading on the fresh worker too: one sentence pointing at memory; the next job gets a worker."""
    kill_worker(where, times=2)
    backend = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    try:
        with pytest.raises(BackendUnavailable) as failed:
            await backend.generate(tiny_request())
        served = await backend.generate(tiny_request())
    finally:
        await backend.aclose()
    assert str(failed.value) == (
        "The local backend could not make the image: the worker cannot load the model; it stopped while loading it"
        " on a fresh worker too, which is what running out of memory looks like (imagebot doctor checks the memory)."
    )
    assert len(served) == 1 and "note" not in served[0].meta


ALICE, BOB, CAROL = Requester("console", "alice"), Requester("console", "bob"), Requester("console", "carol")


@pytest.mark.parametrize("kills", [1, 2])
async def test_a_worker_killed_mid_batch_retries_every_job_of_it_once(tiny_data_dir, tmp_path, kill_worker, kills):
    """Four users' jobs in one batch, the worker killed at its second step: each gets the image or a sentence."""
    kill_worker("batch", times=kills)
    backend = LocalBackend(load_catalog(), tiny_data_dir, device="cpu", max_batch=4)
    try:
        async with started_service(backend, tmp_path / "data") as (service, _):
            first = await service.imagine("a lone fox --steps 4 --seed 1", CAROL)
            # Queued while the first job starts the worker: they wait together, so they run as one batch.
            batched = [
                await service.imagine(f"a fox number {n} --steps 4 --seed {n + 10}", who)
                for n, who in enumerate((ALICE, BOB, ALICE, BOB))
            ]
            outcomes = [[event async for event in job.events()][-1] for job in [first, *batched]]
            after = await (await service.imagine("a fox after it all --steps 4 --seed 99", CAROL)).result()
            generations = [await service.details(job.requester, job.id) for job in batched]
    finally:
        await backend.aclose()
    assert backend.batch_sizes[:3] == [1, 4, 4] and backend.restarts == 1  # a second loss fails, not restarts
    assert outcomes[0].kind == "done" and after.status == "done"
    if kills == 1:
        assert [event.kind for event in outcomes[1:]] == ["done"] * 4
        for generation in generations:
            assert len(generation.images) == 1
            assert "The worker stopped unexpectedly; it was restarted and this is the second try." in (
                generation.warnings
            )
    else:
        assert {event.message for event in outcomes[1:]} == {
            "The local backend could not make the image: stopped unexpectedly, and again on a fresh worker"
            " (stopped unexpectedly the first time)."
        }
        assert [(generation.status, generation.images) for generation in generations] == [("failed", ())] * 4
    assert_no_half_writes(tmp_path / "data")

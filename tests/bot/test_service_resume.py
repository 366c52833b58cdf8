"""A restart resumes what was queued or running: the jobs are SQLite rows before anyone is answered."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.jobs import Requester
from bot.runner import INTERRUPTED_TWICE
from tests.fakes.backend import FakeBackend
from tests.fakes.service import started_service

ALICE, BOB = Requester("slack", "U_ALICE", "T1", "C1"), Requester("discord", "42", "G1", "7")


async def _leave_three_unfinished(data_dir: Path, *, resume: bool = False) -> list[int]:
    """Run a service whose backend never finishes, queue three jobs, and stop it mid-job (a crash)."""
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    async with started_service(backend, data_dir, max_per_user=5) as (service, _):
        ids = [job.id for job, _ in service.resumed("slack") + service.resumed("discord")] if resume else []
        if not resume:
            for who, line in ((ALICE, "a red fox --seed 7"), (BOB, "a blue fox --seed 8"), (ALICE, "a cat --seed 9")):
                ids.append((await service.imagine(line + " --steps 2", who)).id)
        await asyncio.sleep(0.05)
        assert len(backend.requests) == 1  # the first is running, the others wait
    return sorted(ids)


async def test_queued_and_running_jobs_run_after_a_restart(tmp_path: Path) -> None:
    ids = await _leave_three_unfinished(tmp_path)
    backend = FakeBackend()
    async with started_service(backend, tmp_path) as (service, history):
        resumed = service.resumed("slack") + service.resumed("discord")
        assert sorted(job.id for job, _ in resumed) == ids
        for job, _ in resumed:
            await job.result()
        generations = [await history.generations.get(generation_id) for generation_id in ids]
    assert [g.status for g in generations if g] == ["done", "done", "done"]
    assert [g.interruptions for g in generations if g] == [1, 0, 0]
    assert sorted(request.seed for request in backend.requests) == [7, 8, 9]
    assert {job.requester for job, _ in resumed} == {ALICE, BOB}


async def test_a_job_interrupted_twice_fails_with_a_sentence(tmp_path: Path) -> None:
    first, *others = await _leave_three_unfinished(tmp_path)
    await _leave_three_unfinished(tmp_path, resume=True)  # #1 runs again and is interrupted again
    async with started_service(FakeBackend(), tmp_path) as (service, history):
        outcomes = {job.id: job for job, _ in service.resumed("slack") + service.resumed("discord")}
        assert [event.message async for event in outcomes[first].events() if event.final] == [INTERRUPTED_TWICE]
        for generation_id in others:
            await outcomes[generation_id].result()
        failed = await history.generations.get(first)
    assert failed is not None and failed.status == "failed" and failed.error == INTERRUPTED_TWICE

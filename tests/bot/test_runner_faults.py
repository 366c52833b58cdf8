"""Storage faults while jobs run: every user hears how their job ended, nothing half-written stays, the bot goes on.

The service runs on the real SQLite stores and image files (`started_service`) with the
recording backend; the faults are made at the operating system's boundary.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from bot.chat import GENERIC_ERROR, refusal
from bot.jobs import Job, JobEvent, Requester
from bot.runner import NOT_SAVED
from storage import SqliteDatabase
from storage._schema import connect
from tests.fakes.backend import FakeBackend
from tests.fakes.service import assert_no_half_writes, image_files, recorded, started_service

ALICE, BOB, CAROL = Requester("console", "alice"), Requester("console", "bob"), Requester("console", "carol")


async def started(job: Job) -> None:
    """Return once the job is running on the backend."""
    async for event in job.events():
        if event.kind == "started":
            return
    raise AssertionError(f"{job.id} ended before it started")


async def last_event(job: Job) -> JobEvent:
    return [event async for event in job.events()][-1]


async def reopen(database: SqliteDatabase, path: Path, *, read_only: bool) -> None:
    """Swap the stores' connection for one that can only read (or a writable one again).

    This is what the bot meets when its disk is remounted read-only under it (ext4's errors=remount-ro):
    every write fails with "attempt to write a readonly database". chmod cannot make that fault: the
    connection's open file stays writable, and the tests may run as root.
    """
    async with database.db.lock:
        await database.db.conn.close()
        if read_only:
            database.db.conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            database.db.conn = await connect(path)


async def test_a_database_turned_read_only_fails_running_and_waiting_jobs_with_a_sentence(tmp_path: Path) -> None:
    """Alice's image is made but cannot be recorded, Bob's job cannot start: both hear it, no file stays."""
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    async with started_service(backend, tmp_path) as (service, database):
        running = await service.imagine("a red fox --steps 2 --count 2", ALICE)
        waiting = await service.imagine("a blue fox --steps 2", BOB)
        await started(running)
        await reopen(database, tmp_path / "imagebot.sqlite3", read_only=True)
        backend.gate.set()
        assert (await last_event(running)).message == NOT_SAVED
        assert (await last_event(waiting)).message == NOT_SAVED
        assert image_files(tmp_path) == set()
        with pytest.raises(sqlite3.OperationalError) as refused:
            await service.imagine("a grey fox --steps 2", CAROL)
        assert refusal(refused.value) == f"✖ {GENERIC_ERROR}"  # what the chat posts: a new job cannot be recorded

        await reopen(database, tmp_path / "imagebot.sqlite3", read_only=False)
        served = await (await service.imagine("a green fox --steps 2", CAROL)).result()
    assert served.status == "done"
    assert_no_half_writes(tmp_path)
    # Neither outcome could be written: both rows are as the fault left them, so the next start makes them again.
    assert {generation_id: status for generation_id, (status, _) in recorded(tmp_path).items()} == {
        running.id: "running",
        waiting.id: "queued",
        served.id: "done",
    }
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        again = [await job.result() for job, _ in service.resumed("console")]
    assert [(generation.id, generation.status) for generation in again] == [(running.id, "done"), (waiting.id, "done")]
    assert_no_half_writes(tmp_path)


async def test_a_full_disk_while_writing_a_png_fails_the_job_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second of two images meets a full disk: the job fails with a sentence, the first file goes too."""
    full = True
    fsync = os.fsync
    written: list[int] = []

    def fsync_on_a_full_disk(fd: int) -> None:
        # A full disk shows at write() or, with delayed allocation (ext4, XFS), at fsync(): then the
        # temporary file already holds part of the image. One image fits; the disk is full from the second.
        if full and written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)
        written.append(fd)

    monkeypatch.setattr(os, "fsync", fsync_on_a_full_disk)
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        job = await service.imagine("a red fox --steps 2 --count 2", ALICE)
        assert (await last_event(job)).message == NOT_SAVED
        assert image_files(tmp_path) == set()
        assert recorded(tmp_path)[job.id] == ("failed", [])

        full = False
        served = await (await service.imagine("a blue fox --steps 2 --count 2", BOB)).result()
    assert served.status == "done" and len(served.images) == 2
    assert_no_half_writes(tmp_path)

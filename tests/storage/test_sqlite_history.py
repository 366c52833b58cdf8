"""What only the SQLite store has to prove: concurrency, durability, transactions, exact round trips."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.history import NewGeneration, StoredImage
from bot.request import MAX_SEED, GenerationRequest, RefinerSpec, WeightedName
from storage import SqliteDatabase
from tests.fakes.stores import InMemoryDatabase


def images_for(generation_id: int, count: int, seed: int) -> list[StoredImage]:
    return [
        StoredImage(i, seed + i, f"images/0/{generation_id}-{i}.png", f"{i:064x}", 1024, 1024) for i in range(count)
    ]


async def test_concurrent_writes_lose_nothing(tmp_path, make_new):
    """1,000 concurrent add + mark_running + mark_done/failed from 50 users keep every row and image."""
    store = await SqliteDatabase.open(tmp_path / "h.db")
    users = [f"user{n}" for n in range(50)]

    async def one_job(n: int) -> tuple[int, str, int]:
        user = users[n % len(users)]
        count = n % 4 + 1
        generation = await store.generations.add(make_new(user, seed=n + 1))
        await asyncio.sleep(0)  # let other jobs interleave between every step
        assert await store.generations.mark_running(generation.id)
        await asyncio.sleep(0)
        if n % 10 == 0:
            assert await store.generations.mark_failed(generation.id, f"job {n} failed")
            return generation.id, user, 0
        assert await store.generations.mark_done(generation.id, images_for(generation.id, count, n + 1), cost=n / 1000)
        return generation.id, user, count

    try:
        results = await asyncio.gather(*(one_job(n) for n in range(1000)))
        assert len({generation_id for generation_id, _, _ in results}) == 1000
        for user in users:
            mine = [r for r in results if r[1] == user]
            stored = await store.generations.recent("discord", user, limit=1000)
            assert sorted(g.id for g in stored) == sorted(r[0] for r in mine)
            expected_images = {generation_id: count for generation_id, _, count in mine}
            for generation in stored:
                count = expected_images[generation.id]
                assert generation.status == ("done" if count else "failed")
                assert len(generation.images) == count
                assert generation.images == tuple(images_for(generation.id, count, generation.seed))
        assert await store.generations.unfinished() == []
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "h.db") as conn:
        assert conn.execute("SELECT count(*) FROM generations").fetchone()[0] == 1000
        assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == sum(r[2] for r in results)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_readers_never_see_half_a_mark_done(make_new):
    """A generation read while others are being finished is done with all its images, or not done."""
    store = await SqliteDatabase.open(":memory:")
    try:
        ids = [(await store.generations.add(make_new(seed=n + 1))).id for n in range(100)]
        stop = asyncio.Event()
        rng = random.Random(3)
        seen: list[tuple[str, int]] = []

        async def reader() -> None:
            while not stop.is_set():
                for generation in await store.generations.recent("discord", "u1", limit=10):
                    seen.append((generation.status, len(generation.images)))
                generation = await store.generations.get(rng.choice(ids))
                seen.append((generation.status, len(generation.images)))

        async def writer() -> None:
            for generation_id in ids:
                await store.generations.mark_done(generation_id, images_for(generation_id, 3, 1))
            stop.set()

        await asyncio.gather(reader(), reader(), writer())
    finally:
        await store.close()
    assert seen
    assert all(count == (3 if status == "done" else 0) for status, count in seen)


async def test_failed_mark_done_rolls_back_and_store_stays_usable(make_new):
    """An insert error halfway through mark_done leaves the generation as it was."""
    store = await SqliteDatabase.open(":memory:")
    try:
        generation = await store.generations.add(make_new())
        await store.generations.mark_running(generation.id)
        # STRICT tables refuse text in an INTEGER column: the UPDATE has run, the image INSERT fails.
        good, second = images_for(generation.id, 2, 42)
        bad = [good, dataclasses.replace(second, width="wide")]
        with pytest.raises(sqlite3.IntegrityError):
            await store.generations.mark_done(generation.id, bad)
        kept = await store.generations.get(generation.id)
        assert (kept.status, kept.images, kept.finished_at) == ("running", (), None)
        assert await store.generations.mark_done(generation.id, images_for(generation.id, 1, 42))
        assert len((await store.generations.get(generation.id)).images) == 1
    finally:
        await store.close()


async def test_unfinished_survives_close_and_reopen(tmp_path, make_new):
    """Queued and running jobs are still there, unchanged, after a restart."""
    path = tmp_path / "h.db"
    store = await SqliteDatabase.open(path)
    queued = await store.generations.add(make_new("a"))
    running = await store.generations.add(make_new("b", seed=2))
    done = await store.generations.add(make_new("c", seed=3))
    await store.generations.mark_running(running.id)
    await store.generations.mark_done(done.id, images_for(done.id, 1, 3))
    before = await store.generations.unfinished()
    await store.close()

    reopened = await SqliteDatabase.open(path)
    try:
        after = await reopened.generations.unfinished()
        assert [g.id for g in after] == [queued.id, running.id]
        assert after == before
        assert (await reopened.generations.get(done.id)).images == tuple(images_for(done.id, 1, 3))
    finally:
        await reopened.close()


async def test_latest_among_many_users(make_new):
    """latest finds each user's own newest generation among thousands, interleaved at random."""
    store = await SqliteDatabase.open(":memory:")
    rng = random.Random(7)
    newest: dict[tuple[str, str], int] = {}
    try:
        for n in range(2000):
            platform = rng.choice(["discord", "slack"])
            user = f"user{rng.randrange(60)}"
            generation = await store.generations.add(make_new(user, platform=platform, seed=n + 1))
            newest[(platform, user)] = generation.id
        for (platform, user), generation_id in newest.items():
            found = await store.generations.latest(platform, user)
            assert (found.id, found.platform, found.user_id) == (generation_id, platform, user)
    finally:
        await store.close()


async def test_close_waits_for_queued_operations(tmp_path, make_new):
    """close() called while writes wait for the lock lets them all finish first."""
    path = tmp_path / "h.db"
    store = await SqliteDatabase.open(path)
    writes = [asyncio.create_task(store.generations.add(make_new(seed=n + 1))) for n in range(20)]
    await asyncio.sleep(0)  # every write is now holding or waiting for the lock
    await store.close()
    assert len({(await task).id for task in writes}) == 20
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM generations").fetchone()[0] == 20


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
weighted = st.builds(WeightedName, name=names, weight=st.floats(-4, 4, allow_nan=False))
refiners = st.one_of(
    st.none(),
    st.builds(RefinerSpec, model=names, start_percent=st.integers(1, 99)),
    st.builds(RefinerSpec, model=names, start_step=st.integers(2, 100)),
)
requests = st.builds(
    GenerationRequest,
    prompt=st.text(min_size=2, max_size=300).filter(lambda s: len(s) >= 2),
    negative_prompt=st.none() | st.text(max_size=100),
    model=names,
    width=st.integers(2, 32).map(lambda n: n * 64),
    height=st.integers(2, 32).map(lambda n: n * 64),
    steps=st.integers(1, 100),
    cfg_scale=st.floats(0, 50, allow_nan=False),
    scheduler=names,
    seed=st.integers(1, MAX_SEED),
    count=st.integers(1, 4),
    clip_skip=st.integers(0, 2),
    vae=st.none() | names,
    refiner=refiners,
    loras=st.lists(weighted, max_size=5).map(tuple),
    embeddings=st.lists(weighted, max_size=5).map(tuple),
    output_format=st.sampled_from(["png", "jpg", "webp"]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


@contextlib.contextmanager
def both_stores_on_one_loop() -> Iterator[tuple[asyncio.Runner, list[Any]]]:
    """Open both stores once on a private loop, so each hypothesis example only runs queries."""
    with asyncio.Runner() as runner:
        sqlite = runner.run(SqliteDatabase.open(":memory:"))
        try:
            yield runner, [InMemoryDatabase.create(), sqlite]
        finally:
            runner.run(sqlite.close())


def test_any_request_round_trips_unchanged():
    """Whatever valid request is stored comes back equal, from both stores."""
    with both_stores_on_one_loop() as (runner, stores):

        async def round_trip(new: NewGeneration) -> None:
            for store in stores:
                added = await store.generations.add(new)
                stored = await store.generations.get(added.id)
                assert stored == added
                assert stored.request == new.request
                assert stored.request.to_dict() == new.request.to_dict()
                assert stored.seed == new.request.seed
                assert (stored.private, stored.warnings) == (new.private, new.warnings)

        @settings(max_examples=50, deadline=None)
        @given(request=requests, private=st.booleans(), warnings=st.lists(st.text(max_size=50), max_size=3))
        def check(request, private, warnings):
            new = NewGeneration("discord", "u1", request, "generate", "runware", private=private, warnings=warnings)
            runner.run(round_trip(new))

        check()


def test_any_json_settings_round_trip():
    """Any JSON-ready settings come back equal from both stores."""
    with both_stores_on_one_loop() as (runner, stores):

        async def round_trip(settings_dict: dict) -> None:
            for store in stores:
                await store.settings.put("slack", "U1", settings_dict)
                assert await store.settings.get("slack", "U1") == json.loads(json.dumps(settings_dict))

        @settings(max_examples=50, deadline=None)
        @given(settings_dict=st.dictionaries(st.text(max_size=20), json_values, max_size=6))
        def check(settings_dict):
            runner.run(round_trip(settings_dict))

        check()


@pytest.mark.parametrize("steps_before_cancel", range(8))
async def test_cancelled_mark_done_leaves_store_consistent(make_new, steps_before_cancel):
    """Cancelling mark_done at any await leaves it all done or not at all, and the store usable."""
    store = await SqliteDatabase.open(":memory:")
    try:
        generation = await store.generations.add(make_new())
        await store.generations.mark_running(generation.id)
        task = asyncio.create_task(store.generations.mark_done(generation.id, images_for(generation.id, 3, 42)))
        for _ in range(steps_before_cancel):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        found = await store.generations.get(generation.id)
        assert (found.status, len(found.images)) in {("running", 0), ("done", 3)}
        # A new write transaction can start: nothing was left open.
        other = await store.generations.add(make_new(seed=7))
        assert await store.generations.mark_done(other.id, images_for(other.id, 1, 7))
        assert len((await store.generations.get(other.id)).images) == 1
    finally:
        await store.close()


async def test_inputs_are_read_from_the_stored_request_json(make_new):
    """inputs_of and unreferenced_inputs read $.init_image and $.mask_image of the stored request."""
    init, mask, other = "a" * 64, "b" * 64, "c" * 64
    store = await SqliteDatabase.open(":memory:")
    try:
        ids = [(await store.generations.add(make_new())).id for _ in range(3)]
        # Written into the JSON directly, so this holds whatever fields GenerationRequest has today.
        written: list[dict[str, str]] = [{"init_image": init}, {"init_image": init, "mask_image": mask}, {}]
        for generation_id, inputs in zip(ids, written, strict=True):
            for key, sha in inputs.items():
                await store.db.conn.execute(
                    "UPDATE generations SET request = json_set(request, ?, ?) WHERE id = ?",
                    (f"$.{key}", sha, generation_id),
                )
        assert await store.generations.inputs_of(ids) == {init, mask}
        assert await store.generations.inputs_of(ids[2:]) == set()
        assert await store.generations.unreferenced_inputs([init, mask, other]) == {other}
        await store.generations.delete(ids[1])
        assert await store.generations.unreferenced_inputs([init, mask]) == {mask}
        await store.generations.delete(ids[0])
        assert await store.generations.unreferenced_inputs([init, mask]) == {init, mask}
    finally:
        await store.close()

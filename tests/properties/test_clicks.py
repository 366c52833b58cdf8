"""Buttons and reactions: custom ids as Discord and Slack hand them back, forged or not, on the real SQLite store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapters.discord._cog import REACTIONS as DISCORD_REACTIONS
from adapters.slack._app import REACTIONS as SLACK_REACTIONS
from bot.actions import decode_action, encode_action
from bot.chat import Deleted, Started
from bot.jobs import Requester
from storage import SqliteDatabase
from tests.properties.conftest import Run
from tests.properties.sentences import FUZZ
from tests.properties.strategies import texts
from tests.properties.world import PEOPLE, fill, world

ACTIONS = ["reroll", "refine", "details", "delete", "cancel", "show", "star", "unstar"]
# Buttons that act on one image of several, naming which: ``ib:vary-strong:3.2``.
ONE_IMAGE = ["pick", "vary-strong", "upscale-2", "pan-left", "zoom-out", "region"]
ids = st.one_of(st.integers(-2, 9), st.sampled_from([2**63 - 1, 2**63, 10**18 - 1, 10**18, 10**19 - 1]), st.integers())
custom_ids = st.one_of(
    # Ours, for every generation: own, others', private, deleted, queued, never made.
    st.tuples(st.sampled_from(ACTIONS), st.integers(1, 9)).map(lambda a: encode_action(*a)),
    st.tuples(st.sampled_from(ONE_IMAGE), st.integers(1, 9), st.integers(0, 3)).map(lambda a: encode_action(*a)),
    # Image numbers on any button, out of range or malformed.
    st.tuples(
        st.sampled_from([*ACTIONS, *ONE_IMAGE]), st.integers(1, 9), st.sampled_from(["0", "1", "5", "2.2", ""])
    ).map(lambda a: f"ib:{a[0]}:{a[1]}.{a[2]}"),
    # Forged and truncated: other actions, any number, cut anywhere, padded.
    st.tuples(st.sampled_from([*ACTIONS, "nuke", "REROLL", ""]), ids).map(lambda a: f"ib:{a[0]}:{a[1]}"),
    st.tuples(st.sampled_from(ACTIONS), st.integers(1, 9), st.integers(0, 14)).map(
        lambda a: encode_action(a[0], a[1])[: a[2]]
    ),
    st.tuples(st.sampled_from(ACTIONS), st.integers(1, 9), st.sampled_from(["\n", " ", "0", ":1", "x"])).map(
        lambda a: encode_action(a[0], a[1]) + a[2]
    ),
    texts,
)


@pytest.fixture(scope="module")
def filled(run: Run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A SQLite file with every migration applied and a world's generations (`fill`) in it, and their ids."""
    path = tmp_path_factory.mktemp("sqlite") / "filled.sqlite3"

    async def create() -> dict[str, int]:
        db = await SqliteDatabase.open(path, clock=lambda: 1_700_000_000.0)
        try:
            return await fill(db)
        finally:
            await db.close()

    return path, run(create())


@FUZZ
@given(custom_id=custom_ids, who=st.sampled_from(PEOPLE))
@example(custom_id="ib:reroll:9999999999999999999", who=PEOPLE[0])  # past SQLite's largest id: OverflowError
def test_button(run: Run, data_dir: Path, filled: tuple[Path, dict[str, int]], custom_id: str, who: Requester) -> None:
    """A click answers, or refuses in one sentence and changes nothing; an id that is not ours is ignored."""
    decoded = decode_action(custom_id)
    if decoded is None:
        return
    action, generation_id, index = decoded
    assert encode_action(action, generation_id, index) == custom_id

    async def body() -> None:
        # A copy of a filled file: each example gets a fresh database without migrating and filling it again.
        path = data_dir / "clicks.sqlite3"
        shutil.copyfile(filled[0], path)
        db = await SqliteDatabase.open(path, clock=lambda: 1_700_000_000.0)
        try:
            w = await world(data_dir, db=db, filled=filled[1])
            before = await db.generations.get(generation_id) if generation_id < 2**63 else None
            reply = await w.attempt(lambda: w.flow.action(who, action, generation_id, index))
            after = await db.generations.get(generation_id) if before is not None else None
            if before is not None and after is not None and after.starred != before.starred:
                # Only an image's author stars or unstars it, and only a finished one gets a star.
                assert (after.platform, after.user_id) == who.key
                assert not after.starred or after.status == "done"
            if isinstance(reply, Started):
                assert await db.generations.get(reply.job.id) is not None
            if isinstance(reply, Deleted):
                assert await db.generations.get(generation_id) is None
            await w.service.aclose()
        finally:
            await db.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    run(body())


@FUZZ
@given(
    emoji=st.sampled_from([*DISCORD_REACTIONS, *SLACK_REACTIONS, "👍", "thumbsup", ""]),
    message=st.one_of(st.integers(0, 9).map(lambda n: f"m{n}"), texts),
    who=st.sampled_from(PEOPLE),
)
def test_reaction(run: Run, data_dir: Path, emoji: str, message: str, who: Requester) -> None:
    """A reaction on a message (ours or not, its image deleted or not) does what its button does, or refuses."""
    action = DISCORD_REACTIONS.get(emoji) or SLACK_REACTIONS.get(emoji)
    if action is None:
        return

    async def body() -> None:
        w = await world(data_dir)
        generation = await w.service.by_message("discord", message)
        if generation is None:
            return
        await w.attempt(lambda: w.flow.action(who, action, generation.id))

    run(body())

"""Behaviour every store shares: each test runs on the in-memory fakes and on SQLite (the contract suite)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from bot.history import AuditEntry, Generation, StoredImage
from bot.ports import GenerationStore, PolicyStore, SettingsStore

INIT, MASK, OTHER = "a" * 64, "b" * 64, "c" * 64


def image(index: int, seed: int = 42, generation_id: int = 1) -> StoredImage:
    return StoredImage(
        index=index,
        seed=seed + index,
        path=f"images/0/{generation_id}-{index}.png",
        sha256=f"{index:064x}",
        width=1024,
        height=1024,
    )


async def test_stores_satisfy_their_protocols(store):
    """Both implementations are a GenerationStore, a PolicyStore and a SettingsStore."""
    assert isinstance(store.generations, GenerationStore)
    assert isinstance(store.policies, PolicyStore)
    assert isinstance(store.settings, SettingsStore)


async def test_add_returns_queued_generation(store, make_new, clock):
    """add stores a queued generation created now and returns it with a new id."""
    new = make_new(workspace="guild", channel="chan", warnings=["refiner starts early"], private=True)
    generation = await store.generations.add(new)
    assert generation.id >= 1
    assert generation.status == "queued"
    assert generation.created_at == 1000.0
    assert (generation.started_at, generation.finished_at, generation.seconds) == (None, None, None)
    assert generation.request == new.request
    assert generation.seed == 42
    assert generation.model == "sdxl"
    assert generation.backend == "local"
    assert (generation.workspace, generation.channel) == ("guild", "chan")
    assert generation.warnings == ("refiner starts early",)
    assert generation.private is True
    assert generation.images == ()
    assert generation.message_ref is None and generation.cost is None and generation.error is None


async def test_get_returns_what_add_returned(store, make_new):
    """get gives back an equal Generation."""
    added = await store.generations.add(make_new())
    assert await store.generations.get(added.id) == added


async def test_get_unknown_is_none(store):
    """get of an id that was never stored is None."""
    assert await store.generations.get(12345) is None


def test_new_generation_needs_a_seed(make_new, make_request):
    """A request without a seed cannot be stored."""
    with pytest.raises(ValueError, match="seed"):
        make_new(request=make_request().model_copy(update={"seed": None}))


def test_new_generation_checks_action(make_new):
    """An unknown action is refused before it reaches a store."""
    with pytest.raises(ValueError, match="action"):
        make_new(action="inpaint")


async def test_add_with_unknown_parent_raises_key_error(store, make_new):
    """A reroll of a generation that does not exist is refused."""
    with pytest.raises(KeyError):
        await store.generations.add(make_new(action="reroll", parent_id=999))


async def test_add_reroll_keeps_parent(store, make_new):
    """A reroll records the generation it came from."""
    parent = await store.generations.add(make_new())
    child = await store.generations.add(make_new(action="reroll", parent_id=parent.id, seed=7))
    assert (await store.generations.get(child.id)).parent_id == parent.id


async def test_ids_are_never_reused(store, make_new):
    """Deleting the newest generation does not hand its id to the next one (buttons carry ids)."""
    first = await store.generations.add(make_new())
    await store.generations.delete(first.id)
    second = await store.generations.add(make_new())
    assert second.id > first.id


async def test_latest_is_highest_id_of_that_user(store, make_new):
    """latest picks the user's newest generation, per platform."""
    await store.generations.add(make_new("alice"))
    bob = await store.generations.add(make_new("bob"))
    newest_alice = await store.generations.add(make_new("alice"))
    await store.generations.add(make_new("alice", platform="slack"))
    assert (await store.generations.latest("discord", "alice")).id == newest_alice.id
    assert (await store.generations.latest("discord", "bob")).id == bob.id
    assert await store.generations.latest("discord", "carol") is None


async def test_latest_filters_by_status(store, make_new):
    """latest(status="done") skips newer generations that have not finished."""
    done = await store.generations.add(make_new())
    await store.generations.mark_done(done.id, [image(0)])
    await store.generations.add(make_new())
    found = await store.generations.latest("discord", "u1", status="done")
    assert found.id == done.id
    assert found.images == (image(0),)
    assert await store.generations.latest("discord", "u1", status="failed") is None


async def test_latest_rejects_unknown_status(store):
    """A misspelled status is an error, not an empty answer."""
    with pytest.raises(ValueError, match="status"):
        await store.generations.latest("discord", "u1", status="finished")


async def test_recent_is_newest_first_and_pages(store, make_new):
    """recent returns newest first, honours limit, and pages with before_id."""
    ids = [(await store.generations.add(make_new())).id for _ in range(5)]
    await store.generations.add(make_new("someone-else"))
    first_page = await store.generations.recent("discord", "u1", limit=2)
    assert [g.id for g in first_page] == ids[::-1][:2]
    second_page = await store.generations.recent("discord", "u1", limit=2, before_id=first_page[-1].id)
    assert [g.id for g in second_page] == ids[::-1][2:4]
    assert [g.id for g in await store.generations.recent("discord", "u1")] == ids[::-1]
    assert await store.generations.recent("discord", "nobody") == []


async def test_recent_brings_images_of_each_generation(store, make_new):
    """Every generation from recent carries its own images."""
    one = await store.generations.add(make_new())
    two = await store.generations.add(make_new())
    await store.generations.mark_done(one.id, [image(0, generation_id=one.id)])
    await store.generations.mark_done(two.id, [image(1, generation_id=two.id), image(0, generation_id=two.id)])
    found = {g.id: g.images for g in await store.generations.recent("discord", "u1")}
    assert found == {
        one.id: (image(0, generation_id=one.id),),
        two.id: (image(0, generation_id=two.id), image(1, generation_id=two.id)),
    }


async def test_recent_rejects_limit_below_one(store):
    """limit=0 is a caller bug, not an empty page."""
    with pytest.raises(ValueError, match="limit"):
        await store.generations.recent("discord", "u1", limit=0)


async def test_lifecycle_sets_status_and_timestamps(store, make_new):
    """queued → running → done sets started_at, finished_at, images, cost and seconds."""
    generation = await store.generations.add(make_new())  # created at 1000
    assert await store.generations.mark_running(generation.id)  # started at 1001
    running = await store.generations.get(generation.id)
    assert (running.status, running.started_at, running.finished_at) == ("running", 1001.0, None)
    assert await store.generations.mark_done(generation.id, [image(1), image(0)], cost=0.0042)  # finished at 1002
    done = await store.generations.get(generation.id)
    assert done.status == "done"
    assert (done.started_at, done.finished_at, done.seconds) == (1001.0, 1002.0, 1.0)
    assert done.images == (image(0), image(1))
    assert math.isclose(done.cost, 0.0042)


async def test_mark_running_again_restarts_the_clock(store, make_new):
    """A job resumed after a restart is marked running again with a new start time."""
    generation = await store.generations.add(make_new())
    assert await store.generations.mark_running(generation.id)
    assert await store.generations.mark_running(generation.id)
    assert (await store.generations.get(generation.id)).started_at == 1002.0


async def test_mark_failed_records_error(store, make_new):
    """mark_failed stores the reason and the finish time."""
    generation = await store.generations.add(make_new())
    await store.generations.mark_running(generation.id)
    assert await store.generations.mark_failed(generation.id, "backend timed out")
    failed = await store.generations.get(generation.id)
    assert (failed.status, failed.error, failed.finished_at) == ("failed", "backend timed out", 1002.0)
    assert failed.images == ()


async def test_mark_cancelled_from_queued(store, make_new):
    """A queued job can be cancelled before it ever runs."""
    generation = await store.generations.add(make_new())
    assert await store.generations.mark_cancelled(generation.id)
    cancelled = await store.generations.get(generation.id)
    assert (cancelled.status, cancelled.started_at, cancelled.seconds) == ("cancelled", None, None)


@pytest.mark.parametrize("final", ["done", "failed", "cancelled"])
async def test_finished_status_is_final(store, make_new, final):
    """Every mark_* on a finished generation returns False and changes nothing."""
    generation = await store.generations.add(make_new())
    finishers = {
        "done": lambda: store.generations.mark_done(generation.id, [image(0)]),
        "failed": lambda: store.generations.mark_failed(generation.id, "boom"),
        "cancelled": lambda: store.generations.mark_cancelled(generation.id),
    }
    assert await finishers[final]()
    before = await store.generations.get(generation.id)
    assert await store.generations.mark_running(generation.id) is False
    assert await store.generations.mark_done(generation.id, [image(0), image(1)], cost=1.0) is False
    assert await store.generations.mark_failed(generation.id, "late") is False
    assert await store.generations.mark_cancelled(generation.id) is False
    assert await store.generations.get(generation.id) == before


@pytest.mark.parametrize("method", ["mark_running", "mark_done", "mark_failed", "mark_cancelled"])
async def test_mark_unknown_raises_key_error(store, method):
    """Marking a generation that does not exist is a KeyError."""
    arguments = {"mark_done": ([],), "mark_failed": ("x",)}.get(method, ())
    with pytest.raises(KeyError):
        await getattr(store.generations, method)(777, *arguments)


@pytest.mark.parametrize(
    "images",
    [[image(0), image(0)], [image(-1)], [dataclasses.replace(image(0), seed=2**63)]],
    ids=["duplicate-index", "negative-index", "seed-over-int64"],
)
async def test_mark_done_rejects_bad_images(store, make_new, images):
    """Images the table cannot hold are refused before anything changes."""
    generation = await store.generations.add(make_new())
    with pytest.raises(ValueError):
        await store.generations.mark_done(generation.id, images)
    assert (await store.generations.get(generation.id)).status == "queued"


async def test_message_ref_round_trip(store, make_new):
    """by_message_ref finds the generation whose message was recorded, per platform."""
    generation = await store.generations.add(make_new())
    await store.generations.add(make_new())
    await store.generations.set_message_ref(generation.id, "C1/1700000000.0001")
    found = await store.generations.by_message_ref("discord", "C1/1700000000.0001")
    assert found.id == generation.id
    assert found.message_ref == "C1/1700000000.0001"
    assert await store.generations.by_message_ref("slack", "C1/1700000000.0001") is None
    assert await store.generations.by_message_ref("discord", "other") is None


async def test_message_ref_shared_gives_newest(store, make_new):
    """When two generations name the same message (edited in place), the newest wins."""
    older = await store.generations.add(make_new())
    newer = await store.generations.add(make_new())
    await store.generations.set_message_ref(newer.id, "m")
    await store.generations.set_message_ref(older.id, "m")
    assert (await store.generations.by_message_ref("discord", "m")).id == newer.id


async def test_message_ref_can_be_cleared(store, make_new):
    """set_message_ref(None) forgets the message."""
    generation = await store.generations.add(make_new())
    await store.generations.set_message_ref(generation.id, "m")
    await store.generations.set_message_ref(generation.id, None)
    assert await store.generations.by_message_ref("discord", "m") is None


async def test_set_message_ref_unknown_raises_key_error(store):
    """Recording a message for a missing generation is a KeyError."""
    with pytest.raises(KeyError):
        await store.generations.set_message_ref(5, "m")


async def test_unfinished_lists_queued_and_running_oldest_first(store, make_new):
    """unfinished returns queued and running jobs in id order, nothing finished."""
    ids = [(await store.generations.add(make_new(str(n)))).id for n in range(5)]
    await store.generations.mark_running(ids[3])
    await store.generations.mark_done(ids[0], [])
    await store.generations.mark_failed(ids[1], "x")
    await store.generations.mark_running(ids[4])
    assert [g.id for g in await store.generations.unfinished()] == [ids[2], ids[3], ids[4]]
    assert [g.status for g in await store.generations.unfinished()] == ["queued", "running", "running"]


async def test_settings_default_empty(store):
    """A user who saved nothing has empty settings."""
    assert await store.settings.get("discord", "u1") == {}


async def test_settings_replace_and_isolate(store):
    """put_settings replaces the user's settings; other users and platforms are untouched."""
    await store.settings.put("discord", "u1", {"model": "sdxl", "steps": 25, "loras": [["detail", 0.8]]})
    await store.settings.put("discord", "u2", {"model": "tiny"})
    await store.settings.put("discord", "u1", {"steps": 40})
    assert await store.settings.get("discord", "u1") == {"steps": 40}
    assert await store.settings.get("discord", "u2") == {"model": "tiny"}
    assert await store.settings.get("slack", "u1") == {}


async def test_policy_replace_and_isolate(store):
    """A guild's policy starts empty, is replaced whole, and belongs to that guild and platform only."""
    assert await store.policies.get("discord", "g1") == {}
    await store.policies.put("discord", "g1", {"open_reroll": True})
    await store.policies.put("discord", "g2", {"open_reroll": False})
    assert await store.policies.get("discord", "g1") == {"open_reroll": True}
    assert await store.policies.get("discord", "g2") == {"open_reroll": False}
    assert await store.policies.get("slack", "g1") == {}
    await store.policies.put("discord", "g1", {})
    assert await store.policies.get("discord", "g1") == {}


async def test_settings_are_copies(store):
    """Mutating the dict given or returned does not change what is stored."""
    mine = {"steps": 20}
    await store.settings.put("discord", "u1", mine)
    mine["steps"] = 99
    got = await store.settings.get("discord", "u1")
    got["steps"] = 50
    assert await store.settings.get("discord", "u1") == {"steps": 20}


@pytest.mark.parametrize(("settings", "error"), [({"x": {1, 2}}, TypeError), ({"x": math.nan}, ValueError)])
async def test_settings_must_be_json(store, settings, error):
    """Settings that JSON cannot hold are refused the same way by both stores."""
    with pytest.raises(error):
        await store.settings.put("discord", "u1", settings)


async def test_delete_returns_images_and_removes_rows(store, make_new):
    """delete removes the generation and returns its images for the caller to unlink."""
    generation = await store.generations.add(make_new())
    await store.generations.mark_done(generation.id, [image(0), image(1)])
    assert await store.generations.delete(generation.id) == (image(0), image(1))
    assert await store.generations.get(generation.id) is None
    assert await store.generations.latest("discord", "u1") is None
    assert await store.generations.delete(generation.id) == ()


async def test_delete_parent_keeps_children(store, make_new):
    """Deleting an image that was rerolled keeps the reroll, without its parent."""
    parent = await store.generations.add(make_new())
    child = await store.generations.add(make_new(action="reroll", parent_id=parent.id))
    await store.generations.delete(parent.id)
    kept = await store.generations.get(child.id)
    assert kept is not None and kept.parent_id is None


async def test_generations_without_inputs_use_none(store, make_new):
    """A text-to-image generation uses no input image, so every kept input is unreferenced."""
    generation = await store.generations.add(make_new())
    assert await store.generations.inputs_of([generation.id, 999]) == set()
    assert await store.generations.inputs_of([]) == set()
    assert await store.generations.unreferenced_inputs([INIT, MASK, INIT]) == {INIT, MASK}
    assert await store.generations.unreferenced_inputs([]) == set()


async def test_an_input_is_unreferenced_once_every_generation_using_it_is_deleted(store, make_new, make_request):
    """inputs_of before deleting, unreferenced_inputs after: the files only deleted rows used."""
    uses_init = await store.generations.add(make_new(request=make_request(init_image=INIT, strength=0.5)))
    uses_both = await store.generations.add(
        make_new(request=make_request(init_image=INIT, strength=0.5, mask_image=MASK))
    )
    plain = await store.generations.add(make_new())
    assert await store.generations.inputs_of([uses_init.id]) == {INIT}
    assert await store.generations.inputs_of([uses_both.id, plain.id, 999]) == {INIT, MASK}
    assert await store.generations.unreferenced_inputs([INIT, MASK, OTHER]) == {OTHER}

    inputs = await store.generations.inputs_of([uses_both.id])
    await store.generations.delete(uses_both.id)
    assert await store.generations.unreferenced_inputs(inputs) == {MASK}  # the init image is still used
    await store.generations.delete(uses_init.id)
    assert await store.generations.unreferenced_inputs(inputs) == {INIT, MASK}


async def test_a_mask_of_one_generation_is_the_init_image_of_another(store, make_new, make_request):
    """An input is referenced whichever of the two fields names it."""
    await store.generations.add(make_new(request=make_request(init_image=OTHER, strength=0.5, mask_image=INIT)))
    assert await store.generations.unreferenced_inputs([INIT, OTHER, MASK]) == {MASK}


async def test_generation_is_frozen(store, make_new):
    """A Generation is a value: it cannot be changed behind the store's back."""
    generation = await store.generations.add(make_new())
    assert isinstance(generation, Generation)
    with pytest.raises(dataclasses.FrozenInstanceError):
        generation.status = "done"


async def test_images_since_counts_a_workspaces_images_but_not_failed_or_cancelled(store, make_new, make_request):
    """The daily quota's count: images asked for in one workspace since a time; failures give theirs back."""
    four = make_request(count=4)
    first = await store.generations.add(make_new(workspace="G1", request=four))  # created at 1000
    await store.generations.add(make_new(workspace="G1"))  # 1001
    failed = await store.generations.add(make_new(workspace="G1", request=four))  # 1002
    cancelled = await store.generations.add(make_new(workspace="G1"))  # 1003
    await store.generations.add(make_new(workspace="G2", request=four))  # another workspace
    await store.generations.add(make_new(workspace="G1", platform="slack"))  # same id on another platform
    await store.generations.mark_failed(failed.id, "the GPU is on fire")
    await store.generations.mark_cancelled(cancelled.id)
    assert await store.generations.images_since("discord", "G1", since=0) == 5
    assert await store.generations.images_since("discord", "G1", since=first.created_at + 1) == 1
    assert await store.generations.images_since("discord", "nowhere", since=0) == 0


async def test_a_running_generation_interrupted_by_a_restart_is_queued_again_and_counted(store, make_new):
    generation = await store.generations.add(make_new())
    assert not await store.generations.mark_interrupted(generation.id)  # only a running one
    await store.generations.mark_running(generation.id)
    assert await store.generations.mark_interrupted(generation.id)
    again = await store.generations.get(generation.id)
    assert (again.status, again.started_at, again.interruptions) == ("queued", None, 1)
    assert [g.id for g in await store.generations.unfinished()] == [generation.id]


async def test_the_audit_log_keeps_a_servers_entries_newest_first(store) -> None:
    await store.policies.audit(AuditEntry("discord", "G1", "u1", "generate", 1))
    await store.policies.audit(AuditEntry("discord", "G2", "u2", "generate", 2))
    await store.policies.audit(AuditEntry("discord", "G1", "u3", "blocked", None, "banned word rule 1"))
    entries = await store.policies.recent_audit("discord", "G1")
    assert [(e.user_id, e.action, e.generation_id, e.detail) for e in entries] == [
        ("u3", "blocked", None, "banned word rule 1"),
        ("u1", "generate", 1, ""),
    ]
    assert entries[0].at > entries[1].at
    assert len(await store.policies.recent_audit("discord", "G1", limit=1)) == 1


async def test_an_input_source_is_noted_for_a_generation_that_exists(store, make_new):
    """An input made from a generation's image is noted, again without harm; an unknown generation is a KeyError."""
    generation = await store.generations.add(make_new())
    await store.generations.mark_done(generation.id, [image(0), image(1)])
    await store.generations.note_input_source(INIT, generation.id, 1)
    await store.generations.note_input_source(INIT, generation.id, 1)
    with pytest.raises(KeyError):
        await store.generations.note_input_source(INIT, 999, 0)


async def test_input_images_are_found_as_the_owners_images_they_were_made_from(store, make_new):
    """A noted input names its generation's image for its owner only, the oldest first, and goes when it is deleted."""
    sha, other = "a" * 64, "b" * 64
    first = await store.generations.add(make_new())
    second = await store.generations.add(make_new())
    theirs = await store.generations.add(make_new("u2"))
    await store.generations.note_input_source(sha, second.id, 1)
    await store.generations.note_input_source(sha, first.id, 0)
    await store.generations.note_input_source(other, theirs.id, 0)
    assert await store.generations.find_images("discord", "u1", [sha, other, "c" * 64]) == {sha: (first.id, 0)}
    assert await store.generations.find_images("discord", "u2", [sha, other]) == {other: (theirs.id, 0)}
    assert await store.generations.find_images("slack", "u1", [sha]) == {}
    await store.generations.delete(first.id)
    assert await store.generations.find_images("discord", "u1", [sha]) == {sha: (second.id, 1)}
    assert await store.generations.find_images("discord", "u1", []) == {}


async def test_an_input_is_flagged_when_the_image_it_was_made_from_was(store, make_new):
    """`input_flagged` follows the noted sources to the image's verdict: flagged, clean, unchecked or unknown."""
    generation = await store.generations.add(make_new())
    verdicts = (True, False, None)
    images = [dataclasses.replace(image(n), nsfw=verdict) for n, verdict in enumerate(verdicts)]
    await store.generations.mark_done(generation.id, images)
    for n in range(3):
        await store.generations.note_input_source(f"{n:064x}", generation.id, n)
    assert [await store.generations.input_flagged(f"{n:064x}") for n in range(3)] == [True, False, False]
    assert not await store.generations.input_flagged(OTHER)
    await store.generations.delete(generation.id)
    assert not await store.generations.input_flagged(f"{0:064x}")


async def test_a_cost_paid_before_the_job_is_added_to_the_jobs_cost(store, make_new):
    """Stored with what its guide map cost: the job's cost adds to it, done or failed; None adds nothing."""
    done = await store.generations.add(dataclasses.replace(make_new(), cost=0.25))
    assert done.cost == 0.25
    await store.generations.mark_done(done.id, [image(0)], cost=1.0)
    assert (await store.generations.get(done.id)).cost == pytest.approx(1.25)
    failed = await store.generations.add(dataclasses.replace(make_new(), cost=0.25))
    await store.generations.mark_failed(failed.id, "it broke")
    assert (await store.generations.get(failed.id)).cost == pytest.approx(0.25)
    plain = await store.generations.add(make_new())
    await store.generations.mark_done(plain.id, [image(0)])
    assert (await store.generations.get(plain.id)).cost is None

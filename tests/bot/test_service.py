import asyncio
import io
import itertools
import time

import pytest
from PIL import Image

from bot.actions import result_actions
from bot.catalog import load_catalog
from bot.errors import (
    ContentBlocked,
    InvalidOption,
    JobCancelled,
    NotAllowed,
    NotFound,
    QueueFull,
    QuotaReached,
    RateLimited,
)
from bot.jobs import Requester
from bot.options import Limits
from bot.pngmeta import parse_parameters, read_parameters, read_text
from bot.policy import Policy
from bot.service import ImageService
from imagebot.bootstrap import stores_of
from tests.fakes.stores import InMemoryDatabase

ALICE = Requester("console", "alice", workspace="w1")
BOB = Requester("console", "bob", workspace="w1")


@pytest.fixture
async def service(backend, tmp_path):
    service = ImageService(
        backend=backend,
        stores=stores_of(InMemoryDatabase.create(), tmp_path),
        catalog=load_catalog(),
        default_model="tiny",
        limits=Limits(pixel_budget=4 * 1024 * 1024),
        max_queue=5,
        max_per_user=3,
        seeds=itertools.count(100).__next__,
    )
    await service.start()
    yield service
    await service.aclose()


async def test_generate_stores_png_with_parameters(service, tmp_path):
    """A generation ends done, with its image on disk carrying the A1111 parameters."""
    job = await service.imagine("a red fox --seed 7 --steps 10", ALICE)
    generation = await job.result()
    assert generation.status == "done"
    assert generation.seed == 7
    assert [image.seed for image in generation.images] == [7]
    png = (tmp_path / generation.images[0].path).read_bytes()
    parsed = parse_parameters(read_text(png)["parameters"])
    assert parsed["prompt"] == "a red fox"
    assert parsed["fields"]["Seed"] == "7"
    assert parsed["fields"]["Steps"] == "10"
    assert parsed["fields"]["Generation"] == f"#{generation.id}"


@pytest.mark.parametrize(("fmt", "kind"), [("jpg", "JPEG"), ("webp", "WEBP")])
async def test_a_jpeg_or_webp_carries_its_parameters_in_exif_as_a1111_writes_them(service, tmp_path, fmt, kind):
    """--format jpg or webp: the file carries the same parameters text as a PNG, in its EXIF UserComment
    (UTF-16 big-endian, as A1111's piexif writes it), so A1111, Civitai and PNG info read it back."""
    job = await service.imagine(f"a (red:1.2) fox --seed 7 --steps 10 --format {fmt}", ALICE)
    generation = await job.result()
    data = (tmp_path / generation.images[0].path).read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == kind and opened.size == (generation.images[0].width, generation.images[0].height)
        comment = opened.getexif().get_ifd(0x8769)[0x9286]
    assert comment.startswith(b"UNICODE\0")
    parsed = parse_parameters(comment[8:].decode("utf-16-be"))
    assert parsed["prompt"] == "a (red:1.2) fox"
    assert (parsed["fields"]["Seed"], parsed["fields"]["Generation"]) == ("7", f"#{generation.id}")
    assert read_parameters(data) == comment[8:].decode("utf-16-be")


async def test_seed_is_chosen_and_shown_when_absent(service):
    job = await service.imagine("a red fox", ALICE)
    assert job.request.seed == 100
    assert (await job.result()).seed == 100


async def test_events_in_order(service):
    """queued, started, base steps, refiner steps, done."""
    job = await service.imagine("a red fox --steps 10 --refiner 80", ALICE)
    kinds = []
    async for event in job.events():
        kinds.append(event.kind if event.kind != "progress" else f"{event.progress.stage}{event.progress.step}")
    assert kinds == ["queued", "started", *[f"base{i}" for i in range(1, 9)], "refiner1", "refiner2", "done"]


async def test_reroll_latest_keeps_settings_with_new_seed(service, backend):
    first = await (await service.imagine("a red fox --seed 7 --steps 12 --cfg 5", ALICE)).result()
    rerolled = await (await service.reroll(ALICE, None)).result()
    assert rerolled.seed != first.seed
    assert rerolled.request == first.request.with_seed(rerolled.seed)
    assert (rerolled.action, rerolled.parent_id) == ("reroll", first.id)
    assert backend.requests[1].seed == rerolled.seed


async def test_refine_keeps_seed_and_hands_over_at_percent(service):
    first = await (await service.imagine("a red fox --seed 7 --steps 20", ALICE)).result()
    refined = await (await service.refine(ALICE, first.id, 90)).result()
    assert refined.seed == 7
    assert refined.request.refiner.model == "tiny-refiner"
    assert refined.request.split == (18, 2)
    assert refined.action == "refine"
    assert any("refiner" in warning for warning in refined.warnings)


async def test_refine_without_percent_uses_the_default(service):
    await (await service.imagine("a red fox --seed 7 --steps 20", ALICE)).result()
    refined = await (await service.refine(ALICE, None)).result()
    assert refined.request.refiner.start_percent == 85


async def test_refine_of_a_model_without_refiner_says_so(service):
    await (await service.imagine("a red fox --model sdxl-turbo --seed 3", ALICE)).result()
    with pytest.raises(InvalidOption) as caught:
        await service.refine(ALICE, None, 90)
    assert str(caught.value) == "Refine is not possible: model 'sdxl-turbo' has no refiner."


async def test_reroll_with_nothing_yet(service):
    with pytest.raises(NotFound) as caught:
        await service.reroll(ALICE, None)
    assert str(caught.value) == "There is no earlier image of yours to reroll; make one with /imagine first."


async def test_only_the_author_rerolls_by_default(service):
    mine = await (await service.imagine("a red fox", ALICE)).result()
    with pytest.raises(NotAllowed) as caught:
        await service.reroll(BOB, mine.id)
    assert str(caught.value) == "Only the author of this image can reroll it."
    with pytest.raises(NotAllowed) as caught:
        await service.admin.update_policy(BOB, {"open_reroll": True}, may_manage=False)
    assert str(caught.value) == "Only server managers can change the server's settings."
    assert (await service.admin.update_policy(BOB, {"open_reroll": True}, may_manage=True)).open_reroll
    opened = await (await service.reroll(BOB, mine.id)).result()
    assert opened.user_id == "bob"
    assert opened.parent_id == mine.id
    with pytest.raises(NotAllowed):
        await service.refine(BOB, mine.id)


async def test_private_generations_are_invisible_to_others(service):
    await service.user_settings.update(ALICE, {"private": True})
    mine = await (await service.imagine("a secret fox", ALICE)).result()
    assert mine.private
    await service.admin.update_policy(BOB, {"open_reroll": True}, may_manage=True)
    for call in (service.reroll(BOB, mine.id), service.details(BOB, mine.id)):
        with pytest.raises(NotFound):
            await call
    assert (await service.details(ALICE, mine.id)).id == mine.id


async def test_bad_input_queues_nothing(service, backend):
    """An invalid option gives one sentence and leaves no row and no job."""
    with pytest.raises(InvalidOption):
        await service.imagine("a red fox --steps 500", ALICE)
    assert backend.requests == []
    assert await service.history(ALICE) == []


async def test_backend_failure_becomes_a_sentence(service, backend):
    backend.fail_with = "out of memory"
    job = await service.imagine("a red fox", ALICE)
    events = [event async for event in job.events()]
    assert events[-1].kind == "failed"
    assert events[-1].message == "The fake backend could not make the image: out of memory."
    (row,) = await service.history(ALICE)
    assert (row.status, row.error) == ("failed", events[-1].message)


async def test_round_robin_between_users(service, backend):
    """Alice's three jobs do not make Bob wait for all of them."""
    backend.gate = asyncio.Event()
    jobs = [await service.imagine(f"alice fox {n}", ALICE) for n in range(3)]
    bob = await service.imagine("bob fox", BOB)
    await asyncio.sleep(0)
    assert [job.position for job in jobs] == [0, 2, 3]
    assert bob.position == 1
    backend.gate.set()
    for job in [*jobs, bob]:
        await job.result()
    assert [request.prompt for request in backend.requests] == ["alice fox 0", "bob fox", "alice fox 1", "alice fox 2"]


async def test_per_user_and_global_limits(service, backend):
    backend.gate = asyncio.Event()
    for n in range(3):
        await service.imagine(f"fox {n}", ALICE)
    await asyncio.sleep(0.01)  # the first job starts running: two wait
    with pytest.raises(RateLimited) as caught:
        await service.imagine("one more", ALICE)
    assert str(caught.value) == "You already have 3 image jobs waiting."
    for n in range(3):
        await service.imagine(f"fox {n}", Requester("console", f"user{n}"))
    with pytest.raises(QueueFull) as full:
        await service.imagine("fox", BOB)
    assert str(full.value).startswith("The queue is full; try again in ")
    backend.gate.set()


async def test_cancel_waiting_and_running(service, backend):
    backend.gate = asyncio.Event()
    running = await service.imagine("fox a", ALICE)
    waiting = await service.imagine("fox b", ALICE)
    await asyncio.sleep(0)
    await service.cancel(ALICE, waiting.id)
    with pytest.raises(NotAllowed):
        await service.cancel(BOB, running.id)
    await service.cancel(ALICE, running.id)
    backend.gate.set()
    assert [event.kind async for event in waiting.events()][-1] == "cancelled"
    assert [event.kind async for event in running.events()][-1] == "cancelled"
    statuses = {row.id: row.status for row in await service.history(ALICE)}
    assert statuses == {running.id: "cancelled", waiting.id: "cancelled"}
    assert len(backend.requests) == 1


async def test_settings_apply_to_new_requests(service):
    saved = await service.user_settings.update(ALICE, {"steps": 12, "refiner_percent": 80})
    assert saved == {"steps": 12, "refiner_percent": 80}
    job = await service.imagine("a red fox", ALICE)
    assert job.request.steps == 12
    assert job.request.refiner.start_percent == 80
    with pytest.raises(InvalidOption):
        await service.user_settings.update(ALICE, {"steps": 1000})
    with pytest.raises(InvalidOption):
        await service.user_settings.update(ALICE, {"colour": "red"})


async def test_refine_percent_out_of_range_is_one_sentence(service):
    await (await service.imagine("a red fox --seed 7", ALICE)).result()
    with pytest.raises(InvalidOption) as caught:
        await service.refine(ALICE, None, 100)
    assert str(caught.value) == "refine must be a percent from 1 to 99, not '100'."


async def test_cancel_without_id_cancels_your_newest_waiting_job(service, backend):
    """`/cancel` with no id takes the user's newest unfinished job, not someone else's."""
    backend.gate = asyncio.Event()
    first = await service.imagine("a red fox", ALICE)
    second = await service.imagine("a grey wolf", ALICE)
    others = await service.imagine("a brown bear", BOB)
    assert await service.cancel(ALICE) == second.id
    backend.gate.set()
    assert (await first.result()).status == "done"
    assert (await others.result()).status == "done"
    with pytest.raises(Exception, match="cancelled"):
        await second.result()
    with pytest.raises(NotFound) as caught:
        await service.cancel(ALICE)
    assert str(caught.value) == "There is no queued or running generation of yours."


async def test_queue_lists_your_jobs_with_positions(service, backend):
    backend.gate = asyncio.Event()
    running = await service.imagine("a red fox", ALICE)
    await asyncio.sleep(0.01)
    waiting = await service.imagine("a grey wolf", ALICE)
    await service.imagine("a brown bear", BOB)
    total, mine = service.queue(ALICE)
    assert total == 2
    assert [(job.id, job.position) for job in mine] == [(running.id, 0), (waiting.id, 1)]
    backend.gate.set()
    await waiting.result()
    assert service.queue(ALICE) == (0, [])


async def test_delete_removes_the_row_and_the_files_for_the_author_only(service, tmp_path):
    mine = await (await service.imagine("a red fox", ALICE)).result()
    path = tmp_path / mine.images[0].path
    assert path.exists()
    with pytest.raises(NotAllowed) as caught:
        await service.delete(BOB, mine.id)
    assert str(caught.value) == "Only the author of this image can delete it."
    await service.delete(ALICE, mine.id)
    assert not path.exists()
    with pytest.raises(NotFound):
        await service.details(ALICE, mine.id)


async def test_message_ref_finds_the_generation(service):
    mine = await (await service.imagine("a red fox", ALICE)).result()
    await service.attach_message(mine.id, "m-123")
    assert (await service.by_message("console", "m-123")).id == mine.id
    assert await service.by_message("console", "m-999") is None
    assert await service.by_message("slack", "m-123") is None


async def test_policy_needs_a_server_and_known_keys(service):
    with pytest.raises(InvalidOption) as caught:
        await service.admin.update_policy(Requester("discord", "dm-user"), {"open_reroll": True}, may_manage=True)
    assert str(caught.value) == "Server settings only exist in a server, not in direct messages."
    with pytest.raises(InvalidOption) as caught:
        await service.admin.update_policy(ALICE, {"free_gpus": True}, may_manage=True)
    assert str(caught.value) == (
        "Server setting 'free_gpus' does not exist"
        " (settings: open_reroll, banned, models, blocked_models, loras, blocked_loras, max_steps, max_count,"
        " max_pixels, user_daily_quota, channels, adult_channels, flagged, showcase_since, default_model)."
    )
    assert await service.admin.policy(Requester("discord", "dm-user")) == Policy()


async def test_the_queued_line_shows_an_eta_once_jobs_have_been_timed(service, backend):
    from bot.jobs import JobEvent
    from bot.summary import progress_line

    backend.step_delay = 0.01  # 20 steps ≈ 0.2 s a job
    await (await service.imagine("a red fox", ALICE)).result()
    backend.gate = asyncio.Event()
    await service.imagine("a grey wolf", ALICE)
    await asyncio.sleep(0.01)
    second = await service.imagine("a brown bear", BOB)
    third = await service.imagine("a white owl", BOB)
    assert second.eta is not None and third.eta is not None
    # positions 1 and 2 behind a running job: half a job's time, then one and a half
    assert second.eta == pytest.approx(third.eta / 3)
    assert 0.1 < third.eta / 1.5 < 5  # one job's measured time
    line = progress_line(third, JobEvent("queued"))
    assert line.startswith(f"⏳ #{third.id} · seed ") and line.endswith(
        f" · position 2 in the queue · about {max(1, round(third.eta))} s"
    )
    backend.gate.set()
    await third.result()
    assert third.eta is None


async def test_a_workspace_daily_quota_refuses_with_the_reset_time(backend, tmp_path):
    from storage import SqliteDatabase
    from tests.fakes.service import started_service

    now = 86400 * 20000 + 3600 * 18 + 60 * 48  # 18:48 UTC
    alice = Requester("slack", "U1", workspace="T1", channel="C1")
    bob = Requester("slack", "U2", workspace="T1", channel="C1")
    elsewhere = Requester("slack", "U3", workspace="T2", channel="C9")
    async with started_service(backend, tmp_path, daily_quota=5, clock=lambda: now) as (service, history):
        assert isinstance(history, SqliteDatabase)
        await (await service.imagine("a red fox --n 4", alice)).result()
        with pytest.raises(QuotaReached) as refused:
            await service.imagine("a grey wolf --n 2", bob)
        assert str(refused.value) == (
            "This workspace has 1 of its 5 images for today left, and this asks for 2;"
            " the quota resets in 5 h 12 min (UTC midnight)."
        )
        await (await service.imagine("a grey wolf", bob)).result()  # the fifth fits
        with pytest.raises(QuotaReached) as refused:
            await service.imagine("a grey wolf", alice)
        assert str(refused.value) == (
            "This workspace has made its 5 images for today; the quota resets in 5 h 12 min (UTC midnight)."
        )
        await (await service.imagine("a white owl --n 4", elsewhere)).result()  # another workspace
        assert len(await history.generations.recent("slack", "U2")) == 1  # the refusal left no row


async def test_prompts_with_choices_are_counted_together_against_the_quota(backend, tmp_path):
    """Three prompts of two images each, with five left today: refused whole, no row, nothing made."""
    from tests.fakes.service import started_service

    alice = Requester("slack", "U1", workspace="T1", channel="C1")
    async with started_service(backend, tmp_path, daily_quota=5, max_per_user=10) as (service, history):
        with pytest.raises(QuotaReached):
            await service.imagine_each("a {red, blue, green} fox --n 2", alice)
        assert await history.generations.recent("slack", "U1") == []
        jobs = await service.imagine_each("a {red, blue} fox --n 2", alice)  # four fit
        assert [len((await job.result()).images) for job in jobs] == [2, 2]


async def test_requests_sent_together_cannot_pass_the_quota_between_them(backend, tmp_path):
    """Eight requests at once against a quota of 5: five are queued and three refused, never more than the quota
    (each counted the images made before it, with the rows of the others not yet added)."""
    from tests.fakes.service import started_service

    alice = Requester("slack", "U1", workspace="T1", channel="C1")
    async with started_service(backend, tmp_path, daily_quota=5, max_per_user=10) as (service, history):
        outcomes = await asyncio.gather(
            *(service.imagine(f"fox number {n}", alice) for n in range(8)), return_exceptions=True
        )
        queued = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, QuotaReached)]
        assert (len(queued), len(refused)) == (5, 3)
        await asyncio.gather(*(job.result() for job in queued))
        assert len(await history.generations.recent("slack", "U1")) == 5


async def test_a_server_policy_blocks_banned_words_however_spelt_and_its_limits(service, backend):
    """A banned prompt gets the rule's number (never the word list) and queues nothing; limits name themselves."""
    guild = Requester("discord", "alice", workspace="G1", channel="C1")
    await service.admin.update_policy(guild, {"banned": ("gore", "re:blood ?bath"), "max_steps": 30}, may_manage=True)
    for prompt in ("a GÖRE scene", "g0r3 everywhere", "a bl00d-bath", "Gore."):
        with pytest.raises(ContentBlocked) as blocked:
            await service.imagine(prompt, guild)
        assert str(blocked.value).startswith("This request is not allowed here (banned word rule ")
        assert "gore" not in str(blocked.value).lower() and "blood" not in str(blocked.value)
    with pytest.raises(InvalidOption) as limited:
        await service.imagine("a red fox --steps 40", guild)
    assert str(limited.value) == "Steps are at most 30 here, not 40."
    # whole words only, and other servers and direct messages are not bound by it
    await (await service.imagine("a gorgeous red fox --steps 30", guild)).result()
    await (await service.imagine("gore", Requester("discord", "alice", workspace="G2"))).result()
    await (await service.imagine("gore", ALICE)).result()
    assert [request.prompt for request in backend.requests] == ["a gorgeous red fox", "gore", "gore"]
    with pytest.raises(InvalidOption, match="not a valid regular expression"):
        await service.admin.update_policy(guild, {"banned": ("re:(",)}, may_manage=True)


async def test_forget_deletes_a_users_rows_files_and_settings_and_nothing_of_others(backend, tmp_path):
    from tests.fakes.service import started_service

    async with started_service(backend, tmp_path, max_per_user=5) as (service, history):
        await service.user_settings.update(ALICE, {"steps": 12})
        mine = [await (await service.imagine(f"a fox {n} --steps 2", ALICE)).result() for n in range(3)]
        theirs = await (await service.imagine("a wolf --steps 2", BOB)).result()
        backend.gate = asyncio.Event()
        queued = await service.imagine("a slow fox --steps 2", ALICE)
        assert await service.forget(ALICE) == 3
        # the running one is cancelled, not deleted under the worker's feet
        assert [g.id for g in await history.generations.recent("console", "alice")] == [queued.id]
        assert not any((tmp_path / image.path).exists() for g in mine for image in g.images)
        assert (tmp_path / theirs.images[0].path).exists()
        assert await service.user_settings.get(ALICE) == {}
        backend.gate.set()
        with pytest.raises(JobCancelled):
            await queued.result()


async def test_retention_purges_old_finished_generations_with_their_files(backend, tmp_path):
    from tests.fakes.service import started_service

    now = [time.time()]
    async with started_service(backend, tmp_path, clock=lambda: now[0]) as (service, history):
        old = await (await service.imagine("an old fox --steps 2", ALICE)).result()
        now[0] += 10 * 86400
        assert await service.purge(days=30) == 0
        assert await service.purge(days=7) == 1
        assert await history.generations.get(old.id) is None
        assert not (tmp_path / old.images[0].path).exists()


async def test_result_buttons_leave_out_what_could_only_be_refused(service):
    """No Refine under a model without a refiner, no Reroll or Refine under an upscaler's image, no Vary (Region)
    without a gallery (its selection is made there); the Refine of an old message still answers with the sentence."""
    plain = await (await service.imagine("a red fox --size 256x256", ALICE)).result()
    assert service.result_actions(plain.request) == tuple(a for a in result_actions(plain.request) if a != "region")
    assert "refine" in service.result_actions(plain.request)
    turbo = await (await service.imagine("a red fox --model sdxl-turbo", ALICE)).result()
    actions = service.result_actions(turbo.request)
    assert "refine" not in actions and {"reroll", "vary-subtle", "pan-left", "delete"} <= set(actions)
    with pytest.raises(InvalidOption, match="model 'sdxl-turbo' has no refiner"):
        await service.refine(ALICE, turbo.id)
    alone = plain.request.model_copy(update={"upscale": 2, "init_image": "0" * 64, "strength": None})
    assert alone.upscales_alone
    # No Edit either: no /imagine text makes an upscale.
    withheld = [a for a in result_actions(alone) if a not in service.result_actions(alone)]
    assert withheld == ["reroll", "refine", "edit", "region"]


async def test_a_prompt_with_choices_queues_a_generation_for_each(service, backend):
    """``a {red, {pale, dark} blue} fox``: a job per prompt, in reading order, each with its own seed unless given."""
    jobs = await service.imagine_each("a {red, {pale, dark} blue} fox", ALICE)
    made = [await job.result() for job in jobs]
    assert [g.request.prompt for g in made] == ["a red fox", "a pale blue fox", "a dark blue fox"]
    assert [g.status for g in made] == ["done"] * 3
    assert len({g.seed for g in made}) == 3
    seeded = await service.imagine_each("a fox --seed 7 --steps {10, 12}", ALICE)
    assert [((g := await job.result()).seed, g.request.steps) for job in seeded] == [(7, 10), (7, 12)]


async def test_a_refusal_of_one_prompt_queues_none(service, backend):
    """One prompt out of range, or more prompts than the user's room in the queue: one sentence, nothing queued."""
    with pytest.raises(InvalidOption) as caught:
        await service.imagine_each("a fox --steps {20, 500}", ALICE)
    assert str(caught.value) == "--steps must be from 1 to 100, not 500."
    with pytest.raises(RateLimited) as limited:
        await service.imagine_each("a {red, blue, green, grey} fox", ALICE)
    assert str(limited.value) == "Those 4 prompts would make 4 image jobs of yours waiting; the most is 3."
    with pytest.raises(InvalidOption) as unread:
        await service.imagine_each("a {red, blue fox", ALICE)
    assert str(unread.value) == "Prompt has a '{' without its '}' (write \\{ for a brace itself)."
    assert await service.history(ALICE) == []
    assert backend.requests == []


async def test_a_command_for_one_job_refuses_choices(service):
    with pytest.raises(InvalidOption) as caught:
        await service.imagine("a {red, blue} fox", ALICE)
    assert str(caught.value) == "Prompt makes several prompts with its {…} choices; one is taken here."
    job = await service.imagine("a \\{red\\} fox", ALICE)
    assert job.request.prompt == "a {red} fox"


async def test_repeat_queues_the_prompt_as_several_jobs_each_with_its_seed(service, backend):
    """``--repeat 3``: three jobs of one prompt, three seeds; with ``--seed 7 --n 2``, job k starts at 7 + 2k.
    With choices, each prompt that many times; past the room or on a command for one job: one sentence."""
    jobs = await service.imagine_each("a red fox --repeat 3", ALICE)
    made = [await job.result() for job in jobs]
    assert [g.request.prompt for g in made] == ["a red fox"] * 3 and len({g.seed for g in made}) == 3
    seeded = await service.imagine_each("a red fox --seed 7 --n 2 --r 2", ALICE)
    assert [[image.seed for image in (await job.result()).images] for job in seeded] == [[7, 8], [9, 10]]
    with pytest.raises(RateLimited) as limited:
        await service.imagine_each("a {red, blue} fox --repeat 2", ALICE)
    assert str(limited.value) == "Those 4 prompts would make 4 image jobs of yours waiting; the most is 3."
    with pytest.raises(InvalidOption) as one:
        await service.imagine("a red fox --repeat 2", ALICE)
    assert str(one.value) == "--repeat makes 2 jobs; one is taken here."
    with pytest.raises(InvalidOption) as room:
        await service.imagine_each(f"a red fox --seed {2**63 - 3} --n 2 --repeat 2", ALICE)
    assert str(room.value) == (
        f"--seed must be at most {2**63 - 4} for 2 jobs of 2 images, since job k uses seed + k × 2."
    )
    assert len(backend.requests) == 5


async def test_a_variation_keeps_the_seed_and_a_reroll_draws_new_variation_seeds(service, backend):
    """``--variation 0.2``: every image on the seed, image i on variation seed + i (drawn when not given); a
    reroll is more variants of the same seed; ``--repeat`` moves the variation seed; Vary starts from the image."""
    from bot.summary import result_fields

    made = await (await service.imagine("a red fox --seed 7 --variation 0.2 --n 2", ALICE)).result()
    assert (made.request.seed, made.request.variation_seed, made.request.variation_strength) == (7, 100, 0.2)
    assert [image.seed for image in made.images] == [7, 7]
    assert ("Variation", "0.2 toward seed 100…101") in result_fields(made)
    rerolled = await (await service.reroll(ALICE, made.id)).result()
    assert (rerolled.request.seed, rerolled.request.variation_seed) == (7, 101)
    repeated = await service.imagine_each("a red fox --seed 7 --variation 0.2 --subseed 40 --n 2 --r 2", ALICE)
    assert [(await job.result()).request.variation_seed for job in repeated] == [40, 42]
    varied = await (await service.vary(ALICE, f"#{made.id}.2", "subtle")).result()
    assert (varied.request.variation_strength, varied.request.variation_seed) == (0.0, None)
    assert varied.request.init_image is not None


async def test_a_servers_default_model_is_what_its_members_requests_leave_out(service, backend):
    """Server rule `default_model`: used where neither the request nor the member's settings name a model;
    another server and direct messages keep the bot's default."""
    await service.admin.update_policy(ALICE, {"default_model": "sdxl-turbo"}, may_manage=True)
    assert (await service.imagine("a red fox", ALICE)).request.model == "sdxl-turbo"
    assert (await service.imagine("a red fox --model tiny", ALICE)).request.model == "tiny"
    await service.user_settings.update(ALICE, {"model": "tiny"})
    assert (await service.imagine("a red fox", ALICE)).request.model == "tiny"
    elsewhere = Requester("slack", "U9", workspace="T9", channel="C9")
    assert (await service.imagine("a red fox", elsewhere)).request.model == "tiny"

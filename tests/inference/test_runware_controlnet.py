"""ControlNet on Runware: the ``controlNet`` array through the real backend and the HTTP fake.

The fake checks each entry as the SDK's text_to_image.md and ``IControlNetGeneral`` describe it,
and says on which of the steps that run each ControlNet acts (``RunwareTask.controlnet_steps``):
those are the steps the user is told, counted as the local worker counts them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bot.errors import BackendUnavailable, ContentBlocked, InvalidOption, QuotaReached, RateLimited
from bot.images import input_path
from bot.jobs import Requester
from bot.service import ImageService
from inference.runware import UPLOAD_KEPT, RunwareBackend, build_task, controlnet_steps
from storage import SqliteDatabase
from tests.fakes.runware import COST_PER_IMAGE, COST_PER_PREPROCESS, FakeRunware, Fault
from tests.fakes.service import started_service
from tests.inference.remote import CATALOG, WHO, outcome, request
from tests.inference.test_runware import settings


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunware]:
    async with FakeRunware() as fake:
        yield fake


@pytest.fixture
async def running(fake: FakeRunware, tmp_path: Path) -> AsyncIterator[tuple[ImageService, SqliteDatabase]]:
    backend = RunwareBackend(CATALOG, settings(fake), tmp_path, poll_interval=0.01)
    try:
        async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as started:
            yield started
    finally:
        await backend.aclose()


def guide_bytes(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    return base64.b64decode(uri[len(prefix) :])


@pytest.mark.parametrize(
    ("start", "end", "sent_steps", "run", "expected"),
    [
        (1, 10, 30, 30, (1, 10)),  # text to image: Runware's steps are ours
        (3, 5, 20, 20, (3, 5)),
        (1, 20, 40, 20, (21, 40)),  # the steps doc's 40 at 0.5: the last 20 run
        (5, 12, 40, 20, (25, 32)),
        (8, 8, 30, 8, (30, 30)),  # one step, the last
        (2, 7, 99, 7, (94, 99)),  # 100 × 0.07 is sent as 99 steps
    ],
)
def test_steps_among_those_that_run_become_runwares_step_numbers(
    start: int, end: int, sent_steps: int, run: int, expected: tuple[int, int]
) -> None:
    assert controlnet_steps(start, end, sent_steps, run) == expected
    first, last = controlnet_steps(start, end, sent_steps, run)
    # Read back as Runware runs them (the last `run` of `sent_steps`), they are the steps asked for.
    assert [step - (sent_steps - run) for step in range(first, last + 1)] == list(range(start, end + 1))


async def test_one_controlnet_from_text_sends_the_stored_guide_on_exact_steps(
    running, fake: FakeRunware, tmp_path: Path
) -> None:
    service, history = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    generation, error = await outcome(
        service,
        "a fox --ar 1:1 --steps 20 --cn canny-remote --guide #1 --preprocess none"
        " --cn-weight 0.8 --cn-start 3 --cn-end 10 --cn-mode prompt",
    )
    assert error is None and generation is not None
    (control,) = generation.request.controlnets
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    (entry,) = task.request["controlNet"]
    assert {key: value for key, value in entry.items() if key != "guideImage"} == {
        "model": "civitai:700@800",
        "weight": 0.8,
        "startStep": 3,
        "endStep": 10,
        "controlMode": "prompt",
    }
    stored = (tmp_path / input_path(control.guide)).read_bytes()
    (upload,) = fake.calls("imageUpload")
    assert fake.uploads[entry["guideImage"]] == guide_bytes(upload["image"]) == stored
    assert task.guide_images == [stored]
    assert task.controlnet_steps == [list(range(3, 11))]
    assert "seedImage" not in task.request
    assert (await history.generations.get(generation.id)).cost == pytest.approx(COST_PER_IMAGE)


@pytest.mark.parametrize(
    ("image", "ranges", "sent"),
    [
        ("", ((1, 20), (5, 12)), ((1, 20), (5, 12))),
        ("--image #1 --strength 0.5 --steps 40", ((1, 20), (5, 12)), ((21, 40), (25, 32))),
        ("--image #1 --strength 0.25 --steps 30", ((1, 1), (8, 8)), ((23, 23), (30, 30))),
        ("--image #1 --strength 0.07 --steps 100", ((2, 7), (1, 3)), ((94, 99), (93, 95))),
    ],
    ids=["text", "the-docs-40-at-0.5", "a-half-rounds-up", "no-float-fits-100-steps"],
)
async def test_two_controlnets_with_and_without_an_image_act_on_the_steps_shown(
    running,
    fake: FakeRunware,
    tmp_path: Path,
    image: str,
    ranges: tuple[tuple[int, int], ...],
    sent: tuple[tuple[int, int], ...],
) -> None:
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    await outcome(service, "a white circle --seed 43 --ar 1:1")
    (a, b), (c, d) = ranges
    generation, error = await outcome(
        service,
        f"a fox {image or '--ar 1:1 --steps 20'} --preprocess none"
        f" --cn canny-remote=#1:0.6@{a}-{b}, depth-remote=#2:1@{c}-{d}",
    )
    assert error is None and generation is not None
    request_ = generation.request
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    entries = task.request["controlNet"]
    assert [(e["model"], e["weight"], e["startStep"], e["endStep"], e["controlMode"]) for e in entries] == [
        ("civitai:700@800", 0.6, *sent[0], "balanced"),
        ("civitai:701@801", 1.0, *sent[1], "balanced"),
    ]
    assert task.steps_run == request_.run_steps
    assert task.controlnet_steps == [list(range(a, b + 1)), list(range(c, d + 1))]
    guides = [(tmp_path / input_path(control.guide)).read_bytes() for control in request_.controlnets]
    assert task.guide_images == guides and guides[0] != guides[1]
    if image:
        assert task.seed_image == (tmp_path / input_path(request_.init_image or "")).read_bytes()


async def test_a_weight_above_runwares_1_is_refused_before_anything_is_sent(running, fake: FakeRunware) -> None:
    service, history = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    with pytest.raises(InvalidOption) as refused:
        await service.imagine("a fox --cn canny-remote --guide #1 --preprocess none --cn-weight 1.5", WHO)
    assert str(refused.value) == "ControlNet weight is at most 1 on Runware, not 1.5; the local backend can."
    assert len(fake.calls("imageInference")) == 1 and len(await history.generations.recent("console", "alice")) == 1


@pytest.mark.parametrize(
    ("line", "sentence"),
    [
        ("a fox --cn canny-sdxl --guide #1 --preprocess none", "ControlNet 'canny-sdxl'"),
        # sdxl's blend is the shipped ip-adapter-sdxl, which has no Runware id either.
        ("a fox --cn blend=#1:0.5, blend=#1:0.5", "IP-Adapter 'ip-adapter-sdxl'"),
    ],
)
async def test_a_catalog_controlnet_without_a_runware_id_is_refused(
    running, fake: FakeRunware, line: str, sentence: str
) -> None:
    """Runware's docs name no AIR id for the shipped canny-sdxl or ip-adapter-sdxl, so they have none in the catalog."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    with pytest.raises(InvalidOption) as refused:
        await service.imagine(line, WHO)
    assert str(refused.value) == f"{sentence} is not available on Runware; the local backend can."
    assert len(fake.calls("imageInference")) == 1


async def test_a_retry_after_a_lost_answer_keeps_the_task_uuid_and_the_guides_and_pays_once(
    fake: FakeRunware, tmp_path: Path
) -> None:
    backend = RunwareBackend(CATALOG, settings(fake, timeout=0.5), tmp_path, poll_interval=0.01)
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, history):
        await outcome(service, "a red fox --seed 42 --ar 1:1")
        fake.inject(Fault("hang_after", seconds=3.0))  # accepted and charged, its answer lost to the timeout
        generation, error = await outcome(service, "a fox --ar 1:1 --cn canny-remote --guide #1 --preprocess none")
        assert error is None and generation is not None
        sent = [task for task in fake.calls("imageInference") if "controlNet" in task]
        assert len(sent) == 2 and len({task["taskUUID"] for task in sent}) == 1
        assert sent[0]["controlNet"] == sent[1]["controlNet"]
        assert len(fake.charges) == 2  # the first image, then the ControlNet task once
        assert (await history.generations.get(generation.id)).cost == pytest.approx(COST_PER_IMAGE)
    await backend.aclose()


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"strength": 1}, "controlNet[0].strength"),
        ({"weight": 1.5}, "controlNet[0].weight"),
        ({"weight": True}, "controlNet[0].weight"),
        ({"startStep": 0}, "controlNet[0].startStep"),
        ({"endStep": 31}, "controlNet[0].endStep"),
        ({"startStep": 9, "endStep": 8}, "controlNet[0].startStep"),
        ({"startStep": 1, "startStepPercentage": 10}, "controlNet[0].startStep"),
        ({"controlMode": "Balanced"}, "controlNet[0].controlMode"),
        ({"guideImage": "data:image/png;base64,bm90IGFuIGltYWdl"}, "controlNet[0].guideImage"),
        ({"model": "canny-sdxl"}, "controlNet[0].model"),
        ({"startStep": 1}, "ipAdapters[0].startStep"),
        ({"controlMode": "balanced"}, "ipAdapters[0].controlMode"),
        ({"weight": 1.5}, "ipAdapters[0].weight"),
        ({"guideImage": "data:image/png;base64,bm90IGFuIGltYWdl"}, "ipAdapters[0].guideImage"),
    ],
)
async def test_the_fake_refuses_a_controlnet_entry_runware_would_not_take(
    fake: FakeRunware, change: dict[str, object], parameter: str
) -> None:
    """The fake is strict, so a sloppy client is caught here rather than at Runware (an IP-Adapter's entry too)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 1024), "white").save(buffer, format="PNG")
    base = request("a fox --steps 30")
    task = build_task(base, CATALOG, "3303f1be-b3dc-41a2-94df-ead00498db57")
    entry = {
        "model": "civitai:700@800",
        "guideImage": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
    }
    task[parameter.split("[")[0]] = [entry | change]
    async with httpx.AsyncClient() as http:
        answer = await http.post(fake.url, json=[task], headers={"Authorization": f"Bearer {fake.api_key}"})
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["parameter"] == parameter
    assert fake.charges == []


async def test_with_a_refiner_a_controlnet_ends_with_the_base_as_on_the_local_worker(
    running: tuple[ImageService, SqliteDatabase], fake: FakeRunware
) -> None:
    """30 steps with the refiner from 80 %: the base runs 24, so steps 20–30 act on 20–24 and 25–30 on none."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    generation, error = await outcome(
        service,
        "a fox --ar 1:1 --steps 30 --refiner 80 --preprocess none"
        " --cn canny-remote=#1:1@20-30, depth-remote=#1:1@25-30",
    )
    assert error is None and generation is not None
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    assert task.request["refiner"]["startStep"] == 24
    assert [(e["model"], e["startStep"], e["endStep"]) for e in task.request["controlNet"]] == [
        ("civitai:700@800", 20, 24)
    ]


async def test_a_guide_is_uploaded_once_and_a_reroll_names_it_by_uuid(running, fake: FakeRunware) -> None:
    """Two ControlNets on one guide and a reroll: one imageUpload, the same imageUUID in every task."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    generation, error = await outcome(
        service, "a fox --ar 1:1 --steps 20 --preprocess none --cn canny-remote=#1:0.5@1-10, depth-remote=#1"
    )
    assert error is None and generation is not None
    await (await service.reroll(WHO, generation.id)).result()
    assert len(fake.calls("imageUpload")) == 1
    first, again = (task for task in fake.calls("imageInference") if "controlNet" in task)
    (image_uuid,) = {entry["guideImage"] for task in (first, again) for entry in task["controlNet"]}
    assert image_uuid in fake.uploads and first["seed"] != again["seed"]


async def test_distinct_guides_are_uploaded_each_once(running, fake: FakeRunware) -> None:
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    await outcome(service, "a white circle --seed 43 --ar 1:1")
    generation, error = await outcome(
        service, "a fox --ar 1:1 --steps 20 --preprocess none --cn canny-remote=#1, depth-remote=#2"
    )
    assert error is None and generation is not None
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    uuids = [entry["guideImage"] for entry in task.request["controlNet"]]
    assert len(fake.calls("imageUpload")) == 2 and len(set(uuids)) == 2 and set(uuids) == set(fake.uploads)


async def test_an_upload_unused_for_29_days_is_sent_again(fake: FakeRunware, tmp_path: Path) -> None:
    """Runware deletes an upload 30 days after its last use: an older one is not trusted."""
    now = [1000.0]
    backend = RunwareBackend(CATALOG, settings(fake), tmp_path, poll_interval=0.01, clock=lambda: now[0])
    async with started_service(backend, tmp_path, catalog=CATALOG, default_model="sdxl") as (service, _):
        await outcome(service, "a red fox --seed 42 --ar 1:1")
        generation, _error = await outcome(service, "a fox --ar 1:1 --cn canny-remote --guide #1 --preprocess none")
        assert generation is not None
        now[0] += UPLOAD_KEPT - 1  # used again within the days Runware keeps it: the same upload
        await (await service.reroll(WHO, generation.id)).result()
        assert len(fake.calls("imageUpload")) == 1
        now[0] += UPLOAD_KEPT  # unused past them: uploaded again
        await (await service.reroll(WHO, generation.id)).result()
        assert len(fake.calls("imageUpload")) == 2
        guides = [task["controlNet"][0]["guideImage"] for task in fake.calls("imageInference") if "controlNet" in task]
        assert guides[0] == guides[1] != guides[2]
    await backend.aclose()


@pytest.mark.parametrize("preprocess", ["depth", "openpose", "lineart", "softedge", "scribble"])
async def test_a_guide_runware_preprocesses_is_stored_and_reused_by_a_reroll(
    running, fake: FakeRunware, tmp_path: Path, preprocess: str
) -> None:
    """The source is uploaded, Runware's map comes back, is stored as the guide, and a reroll runs no preprocessing."""
    service, history = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    generation, error = await outcome(
        service, f"a fox --ar 1:1 --steps 20 --cn depth-remote --guide #1 --preprocess {preprocess}"
    )
    assert error is None and generation is not None
    (made,) = fake.preprocessed
    assert {key: made.request[key] for key in ("preProcessorType", "width", "height", "outputType")} == {
        "preProcessorType": preprocess,
        "width": 1024,
        "height": 1024,
        "outputType": "base64Data",
    }
    (control,) = generation.request.controlnets
    assert control.preprocess == preprocess and control.source is not None
    source = (tmp_path / input_path(control.source)).read_bytes()
    assert fake.uploads[made.request["inputImage"]] == made.input_image == source
    stored = (tmp_path / input_path(control.guide)).read_bytes()
    with Image.open(io.BytesIO(stored)) as ours, Image.open(io.BytesIO(made.guide)) as theirs:
        assert ours.tobytes() == theirs.convert("RGB").tobytes()  # Runware's map, as the bot stores inputs
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    assert task.guide_images == [stored]
    # The map is paid once, in the generation that asked for it, with its image.
    stored_cost = (await history.generations.get(generation.id)).cost  # type: ignore[union-attr]
    assert stored_cost == pytest.approx(COST_PER_IMAGE + COST_PER_PREPROCESS)
    rerolled_generation = await (await service.reroll(WHO, generation.id)).result()
    assert rerolled_generation.cost == pytest.approx(COST_PER_IMAGE)
    assert len(fake.preprocessed) == 1 and len(fake.calls("imageUpload")) == 2  # the source, then the map
    rerolled = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    assert rerolled.request["controlNet"] == task.request["controlNet"]
    assert fake.total_cost == pytest.approx(COST_PER_IMAGE * 3 + COST_PER_PREPROCESS)
    assert len(await history.generations.recent("console", "alice")) == 3


async def test_a_request_runware_refuses_runs_no_preprocessing(running, fake: FakeRunware) -> None:
    """The rest of the request is checked against Runware before its (charged) preprocessing is asked for."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    with pytest.raises(InvalidOption) as refused:
        await service.imagine("a fox --cn depth-remote --guide #1 --preprocess depth --cn-weight 1.5", WHO)
    assert str(refused.value) == "ControlNet weight is at most 1 on Runware, not 1.5; the local backend can."
    assert fake.preprocessed == [] and fake.calls("imageUpload") == []


async def test_canny_is_still_made_by_the_bot_on_runware(running, fake: FakeRunware) -> None:
    """Canny runs in the bot with the operator's thresholds: every backend gets the same edge map."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    generation, error = await outcome(service, "a fox --ar 1:1 --cn canny-remote --guide #1 --preprocess canny")
    assert error is None and generation is not None
    assert fake.preprocessed == [] and generation.request.controlnets[0].source is not None


async def test_a_preprocessing_runware_refuses_is_one_sentence_and_stores_nothing(
    running, fake: FakeRunware, tmp_path: Path
) -> None:
    service, history = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    inputs_before = sorted(p.name for p in tmp_path.rglob("*.png"))
    fake.api_key = "another-key"  # Runware now refuses the bot's key
    with pytest.raises(BackendUnavailable) as refused:
        await service.imagine("a fox --cn depth-remote --guide #1 --preprocess depth", WHO)
    assert "IMAGEBOT_RUNWARE_API_KEY" in str(refused.value)
    assert fake.preprocessed == [] and len(await history.generations.recent("console", "alice")) == 1
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == inputs_before


async def test_a_banned_prompt_is_refused_before_runware_preprocesses(running, fake: FakeRunware) -> None:
    """The server's rules are checked before the charged preprocessing, not after it."""
    service, _ = running
    member = Requester("console", "alice", workspace="W1", channel="C1")
    await outcome(service, "a red fox --seed 42 --ar 1:1", member)
    await service.admin.update_policy(member, {"banned": ("gore",)}, may_manage=True)
    with pytest.raises(ContentBlocked):
        await service.imagine("gore --cn depth-remote --guide #1 --preprocess depth", member)
    assert fake.preprocessed == [] and fake.calls("imageUpload") == []
    generation, error = await outcome(service, "a fox --cn depth-remote --guide #1 --preprocess depth", member)
    assert error is None and generation is not None and len(fake.preprocessed) == 1


async def test_a_repeated_prompt_pays_its_guide_map_once(running, fake: FakeRunware) -> None:
    """``--repeat 2`` with a guide Runware preprocesses: one preprocessing, paid by the first job alone."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    line = "a fox --ar 1:1 --steps 20 --cn depth-remote --guide #1 --preprocess depth --repeat 2"
    made = [await job.result() for job in await service.imagine_each(line, WHO)]
    assert len(fake.preprocessed) == 1
    assert [generation.cost for generation in made] == [
        pytest.approx(COST_PER_IMAGE + COST_PER_PREPROCESS),
        pytest.approx(COST_PER_IMAGE),
    ]
    assert fake.total_cost == pytest.approx(COST_PER_IMAGE * 3 + COST_PER_PREPROCESS)


async def test_more_prompts_than_the_room_in_the_queue_pay_for_no_guide_map(running, fake: FakeRunware) -> None:
    """Five choices with room for four: one sentence before Runware preprocesses any guide."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    line = "a {red, blue, grey, white, black} fox --ar 1:1 --cn depth-remote --guide #1 --preprocess depth"
    with pytest.raises(RateLimited):
        await service.imagine_each(line, WHO)
    assert fake.preprocessed == []


async def test_choices_share_a_guide_map_made_at_the_same_size(running, fake: FakeRunware) -> None:
    """``a {red, blue} fox --ar {1:1, 16:9}`` with a depth guide: four jobs, one map (paid once) per size."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    line = "a {red, blue} fox --ar {1:1, 16:9} --steps 20 --cn depth-remote --guide #1 --preprocess depth"
    made = [await job.result() for job in await service.imagine_each(line, WHO)]
    assert [(g.request.prompt, g.request.width) for g in made] == [
        ("a red fox", 1024),
        ("a red fox", 1344),
        ("a blue fox", 1024),
        ("a blue fox", 1344),
    ]
    assert len(fake.preprocessed) == 2
    assert [generation.cost for generation in made] == [
        pytest.approx(COST_PER_IMAGE + COST_PER_PREPROCESS),
        pytest.approx(COST_PER_IMAGE + COST_PER_PREPROCESS),
        pytest.approx(COST_PER_IMAGE),
        pytest.approx(COST_PER_IMAGE),
    ]
    guides = [generation.request.controlnets[0].guide for generation in made]
    assert guides[0] == guides[2] and guides[1] == guides[3] and guides[0] != guides[1]
    sent = [fake.tasks[call["taskUUID"]].guide_images for call in fake.calls("imageInference")[1:]]
    assert sent[0] == sent[2] and sent[1] == sent[3]


async def test_jobs_beyond_the_days_quota_pay_for_no_guide_map(fake: FakeRunware, tmp_path: Path) -> None:
    """Three prompts of two images with four left today: refused whole before Runware preprocesses."""
    member = Requester("console", "alice", workspace="W1", channel="C1")
    backend = RunwareBackend(CATALOG, settings(fake), tmp_path, poll_interval=0.01)
    try:
        async with started_service(
            backend, tmp_path, catalog=CATALOG, default_model="sdxl", daily_quota=5, max_per_user=10
        ) as (service, history):
            await outcome(service, "a red fox --seed 42 --ar 1:1", member)
            guided = "--ar 1:1 --cn depth-remote --guide #1 --preprocess depth --n 2"
            for line in (f"a {{red, blue, grey}} fox {guided}", f"a fox {guided} --repeat 3"):
                with pytest.raises(QuotaReached) as refused:
                    await service.imagine_each(line, member)
                assert str(refused.value).startswith(
                    "This server has 4 of its 5 images for today left, and this asks for 6;"
                )
            assert fake.preprocessed == [] and len(await history.generations.recent("console", "alice")) == 1
            jobs = await service.imagine_each(f"a {{red, blue}} fox {guided}", member)  # four fit
            assert [len((await job.result()).images) for job in jobs] == [2, 2]
            assert len(fake.preprocessed) == 1
    finally:
        await backend.aclose()


async def test_an_ip_adapter_sends_its_image_as_stored_in_the_ip_adapters_array(
    running, fake: FakeRunware, tmp_path: Path
) -> None:
    """An image prompt is not stretched to the output's shape: the encoder crops it, as on the local worker."""
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    await outcome(service, "a white circle --seed 43 --ar 1:1")
    generation, error = await outcome(
        service, "a fox --ar 16:9 --preprocess none --cn ip-adapter-remote=#1:0.6, canny-remote=#2:0.8"
    )
    assert error is None and generation is not None
    adapter, control = generation.request.controlnets
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    (sent,) = task.request["ipAdapters"]
    assert sent["model"] == "civitai:702@802" and sent["weight"] == 0.6
    assert fake.uploads[sent["guideImage"]] == (tmp_path / input_path(adapter.guide)).read_bytes()
    with Image.open(io.BytesIO(fake.uploads[sent["guideImage"]])) as image:
        assert image.size == (1024, 1024)
    # The ControlNet beside it keeps its own array and its guide at the output size.
    (entry,) = task.request["controlNet"]
    assert entry["model"] == "civitai:700@800"
    with Image.open(io.BytesIO(fake.uploads[entry["guideImage"]])) as image:
        assert image.size == (generation.request.width, generation.request.height) != (1024, 1024)
    assert control.model == "canny-remote"


async def test_one_ip_adapter_with_two_images_is_two_entries(running, fake: FakeRunware, tmp_path: Path) -> None:
    service, _ = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    await outcome(service, "a white circle --seed 43 --ar 1:1")
    generation, error = await outcome(service, "a fox --cn ip-adapter-remote=#1:0.5, ip-adapter-remote=#2:0.4")
    assert error is None and generation is not None
    task = fake.tasks[fake.calls("imageInference")[-1]["taskUUID"]]
    sent = task.request["ipAdapters"]
    assert [(entry["model"], entry["weight"]) for entry in sent] == [("civitai:702@802", 0.5), ("civitai:702@802", 0.4)]
    stored = [(tmp_path / input_path(control.guide)).read_bytes() for control in generation.request.controlnets]
    assert [fake.uploads[entry["guideImage"]] for entry in sent] == stored and stored[0] != stored[1]


async def test_an_ip_adapter_on_some_steps_only_is_refused_on_runware(running, fake: FakeRunware) -> None:
    service, history = running
    await outcome(service, "a red fox --seed 42 --ar 1:1")
    with pytest.raises(InvalidOption) as refused:
        await service.imagine("a fox --steps 20 --cn ip-adapter-remote --guide #1 --cn-end 10", WHO)
    assert str(refused.value) == (
        "IP-Adapter acts on every step that runs on Runware: it takes no --cn-start or --cn-end there;"
        " the local backend can."
    )
    assert len(fake.calls("imageInference")) == 1 and len(fake.calls("imageUpload")) == 0
    assert len(await history.generations.recent("console", "alice")) == 1

"""Image inputs through the service: `--image #id`, files a chat reads, Vary, and what forget leaves."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.actions import PAN_ACTIONS, result_actions
from bot.chat import ChatFlow, OneImage, Started
from bot.errors import ContentBlocked, InvalidOption, NotAllowed, NotFound
from bot.images import check_image, input_path
from bot.jobs import Requester
from bot.options import Limits
from bot.pngmeta import parse_parameters, read_text
from bot.summary import result_fields
from tests.fakes.backend import FakeBackend
from tests.fakes.service import memory_service

ALICE = Requester("console", "alice", workspace="w1")
BOB = Requester("console", "bob", workspace="w1")


@pytest.fixture
async def service(backend, tmp_path):
    async with memory_service(
        backend,
        tmp_path,
        limits=Limits(pixel_budget=512 * 512),
        max_input_bytes=200_000,
        max_input_pixels=1024 * 1024,
    ) as service:
        yield service


def png(width: int, height: int, colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def inputs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "inputs").rglob("*.png")) if (tmp_path / "inputs").exists() else []


async def test_a_previous_image_starts_image_to_image(service, backend, tmp_path):
    """`--image #1 --strength 0.5`: the request names the stored input, keeps its size, and says what runs."""
    first = await (await service.imagine("a red fox --steps 20 --seed 7", ALICE)).result()
    job = await service.imagine("a fox at dusk --image #1 --strength 0.5 --steps 12", ALICE)
    generation = await job.result()
    request = backend.requests[-1]
    assert request.strength == 0.5 and request.run_steps == 6
    assert (request.width, request.height) == (first.images[0].width, first.images[0].height)
    stored = (tmp_path / input_path(request.init_image)).read_bytes()
    assert Image.open(io.BytesIO(stored)).size == (128, 128)
    assert "12 steps at strength 0.5 run only 6; raise --steps at low strength for more detail." in job.warnings
    fields = parse_parameters(read_text((tmp_path / generation.images[0].path).read_bytes())["parameters"])["fields"]
    assert fields["Denoising strength"] == "0.5"
    assert fields["Init image hash"] == request.init_image


async def test_the_second_image_of_a_batch_is_hash_dot_two(service, backend):
    await (await service.imagine("two foxes --count 2", ALICE)).result()
    await (await service.imagine("a fox --image #1.2", ALICE)).result()
    await (await service.imagine("a fox --image #1", ALICE)).result()
    assert backend.requests[-2].init_image != backend.requests[-1].init_image
    assert backend.requests[-1].strength == 0.8  # Runware's default for image-to-image
    with pytest.raises(InvalidOption, match=r"^--image #1 has 2 images, not 3\.$"):
        await service.imagine("a fox --image #1.3", ALICE)


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ("a fox --image #9", NotFound, None),
        ("a fox --image photo.png", InvalidOption, "must be a previous image like #12"),
        ("a fox --image #1 --size 256x256", InvalidOption, "cannot be set with --image"),
        ("a fox --strength 0.4", InvalidOption, "needs --image"),
        ("a fox --mask #1", InvalidOption, "needs --image"),
        ("a fox --image #1 --strength 0.01 --steps 20", InvalidOption, "runs no step"),
        ("a fox --image #1 --cfg 99", InvalidOption, "from 0 to 50"),
    ],
)
async def test_refusals_are_one_sentence_and_store_nothing(service, tmp_path, line, error, message):
    await (await service.imagine("a red fox", ALICE)).result()
    before = await service.history(ALICE)
    with pytest.raises(error) as raised:
        await service.imagine(line, ALICE)
    if message:
        assert message in str(raised.value)
    assert await service.history(ALICE) == before
    assert inputs(tmp_path) == []


async def test_another_users_image_is_not_theirs_to_use(service):
    await (await service.imagine("a red fox", ALICE)).result()
    with pytest.raises(NotAllowed):
        await service.imagine("a fox --image #1", BOB)


async def test_a_chat_reads_attachments_through_its_loader_and_bad_bytes_are_refused(service, backend, tmp_path):
    """What is not #id goes to the chat's loader; its bytes are checked like any upload."""
    files = {"big.png": png(1024, 512), "fake.png": b"not an image at all", "huge.png": png(1, 1) + b"\0" * 300_000}

    async def load(ref: str, option: str) -> bytes:
        return files[ref]

    await (await service.imagine("a fox --image big.png", ALICE, load=load)).result()
    request = backend.requests[-1]
    # 1024×512 into a 512×512 budget: the ratio kept, sides in multiples of 64
    assert (request.width, request.height) == (640, 320)
    with pytest.raises(InvalidOption, match=r"^--image must be a PNG, JPEG or WebP file\.$"):
        await service.imagine("a fox --image fake.png", ALICE, load=load)
    with pytest.raises(InvalidOption, match=r"^--image is 293.1 KB; the most is 195.3 KB\.$"):
        await service.imagine("a fox --image huge.png", ALICE, load=load)
    assert len(inputs(tmp_path)) == 1
    # No /imagine text names an uploaded file: Edit says so in one sentence.
    uploaded = (await service.history(ALICE, limit=1))[0]
    with pytest.raises(
        InvalidOption,
        match=r"^Edit #\d+ cannot be written as one /imagine \(an upscale, or made from an uploaded image\)\.$",
    ):
        await ChatFlow(service).action(ALICE, "edit", uploaded.id)


async def test_vary_subtle_and_strong_keep_the_prompt_with_a_new_seed(service, backend, tmp_path):
    first = await (await service.imagine("a red fox --seed 7", ALICE)).result()
    subtle = await (await service.vary(ALICE, first.id, "subtle")).result()
    strong = await (await service.vary(ALICE, None, "strong")).result()  # None: the latest, which is the subtle one
    assert (subtle.action, subtle.parent_id, strong.parent_id) == ("vary", first.id, subtle.id)
    assert [r.strength for r in backend.requests[1:]] == [0.35, 0.7]
    assert {r.prompt for r in backend.requests} == {"a red fox"}
    assert len({r.seed for r in backend.requests}) == 3
    await service.user_settings.update(ALICE, {"vary_subtle": 0.5})
    await (await service.vary(ALICE, first.id, "subtle")).result()
    assert backend.requests[-1].strength == 0.5
    with pytest.raises(InvalidOption, match=r"^vary_subtle must be a strength over 0, at most 1, not '2.0'\.$"):
        await service.user_settings.update(ALICE, {"vary_subtle": 2.0})


async def test_vary_through_the_chat_flow_text_and_buttons(service, backend):
    flow = ChatFlow(service)
    await (await service.imagine("a red fox", ALICE)).result()
    reply = await flow.text(ALICE, "vary strong #1")
    assert isinstance(reply, Started) and reply.job.request.strength == 0.7
    await reply.job.result()
    reply = await flow.action(ALICE, "vary-subtle", 1)
    assert isinstance(reply, Started) and reply.job.request.strength == 0.35
    for bad in ("vary", "vary sideways", "vary subtle strong", "vary subtle 3"):
        with pytest.raises(InvalidOption):
            await flow.text(ALICE, bad, strict=True)


def _input_sha(path):
    """Return the name a stored result image has as an input image: the SHA-256 of its checked PNG."""
    return check_image(path.read_bytes(), option="image", max_bytes=10**7, pixel_budget=10**7).sha256


async def test_vary_text_takes_any_image_of_a_generation(service, backend, tmp_path):
    """`vary strong #1.2` varies image 2 of #1 (it took only `#1` before); a second image or a stray word is refused."""
    first = await (await service.imagine("two foxes --count 2 --seed 7", ALICE)).result()
    flow = ChatFlow(service)
    reply = await flow.text(ALICE, "vary #1.2 strong")
    assert isinstance(reply, Started)
    await reply.job.result()
    request = backend.requests[-1]
    assert request.init_image == _input_sha(tmp_path / first.images[1].path)
    assert request.strength == 0.7
    for bad in ("vary strong #1 #1.2", "vary strong please", "vary #1.2"):
        with pytest.raises(InvalidOption, match=r"^vary takes subtle or strong and an optional #id, not '"):
            await flow.text(ALICE, bad, strict=True)


async def test_image_buttons_act_on_the_image_they_picked(service, backend, tmp_path):
    """Under two images, "Image 2" answers privately with image 2's own buttons (no reroll, refine or delete:
    those act on the whole result); each names #1.2, so Vary, Pan and Upscale start from image 2 (seed 8).
    Another user, or an image the result does not have, gets one sentence and nothing is queued."""
    first = await (await service.imagine("two foxes --count 2 --seed 7 --size 256x256 --steps 4", ALICE)).result()
    flow = ChatFlow(service)
    assert result_actions(first.request)[-1] == "pick"
    picked = await flow.action(ALICE, "pick", first.id, 1)
    assert picked == OneImage(
        first.id,
        1,
        "Image 2 of #1 (#1.2, seed 8): these buttons act on it alone.",
        ("vary-subtle", "vary-strong", "upscale-2", "upscale-4", "zoom-out", "zoom-out-2", *PAN_ACTIONS),
    )
    image_2 = _input_sha(tmp_path / first.images[1].path)
    for action in ("vary-strong", "pan-right", "upscale-2"):
        reply = await flow.action(ALICE, action, first.id, 1)
        assert isinstance(reply, Started)
        await reply.job.result()
        assert backend.requests[-1].init_image == image_2
    assert backend.requests[-1].seed == 8  # an upscale keeps the image's own seed
    made = len(backend.requests)
    with pytest.raises(NotAllowed, match=r"^Only the author of this image can vary, upscale, zoom or pan it\.$"):
        await flow.action(BOB, "pick", first.id, 1)
    with pytest.raises(InvalidOption, match=r"#1 has 2 images, not 3"):
        await flow.action(ALICE, "pick", first.id, 2)
    with pytest.raises(InvalidOption, match=r"#1 has 2 images, not 4"):
        await flow.action(ALICE, "vary-subtle", first.id, 3)
    assert len(backend.requests) == made


async def test_zoom_out_keeps_the_size_and_paints_a_border_around_the_image(service, backend, tmp_path):
    """Zoom Out of image 2 of #1 (256×256): the same size, the image at 128×128 in the middle, a 64 border
    painted at the typed --zoom's strength with the prompt and settings, a new seed, one image, from #1."""
    first = await (await service.imagine("two foxes --count 2 --seed 7 --size 256x256 --steps 10", ALICE)).result()
    flow = ChatFlow(service)
    reply = await flow.text(ALICE, "zoom #1.2")
    assert isinstance(reply, Started)
    zoomed = await reply.job.result()
    request = backend.requests[-1]
    assert (request.width, request.height, request.count, request.strength) == (256, 256, 1, 0.8)
    assert request.outpaint is not None and request.outpaint.sides == (64, 64, 64, 64)
    assert request.prompt == "two foxes" and request.steps == 10 and request.seed not in (7, 8)
    assert request.init_image == _input_sha(tmp_path / first.images[1].path)
    assert (zoomed.action, zoomed.parent_id) == ("generate", first.id)  # a generation from #1, as typed --zoom is
    fields = parse_parameters(read_text((tmp_path / zoomed.images[0].path).read_bytes())["parameters"])["fields"]
    assert fields["Outpaint"] == "64,64,64,64,0"
    # the button zooms the first image 1.5×; 2× is typed
    reply = await flow.action(ALICE, "zoom-out", first.id)
    assert isinstance(reply, Started) and reply.job.request.outpaint.sides == (64, 64, 64, 64)
    await reply.job.result()
    reply = await flow.text(ALICE, "zoom 2x #1")
    assert isinstance(reply, Started)
    await reply.job.result()


async def test_the_two_zoom_out_buttons_shrink_the_image_to_two_thirds_and_to_half(service, backend):
    """On a 512² result Zoom Out 1.5× leaves 384² of image (a 64 border), Zoom Out 2× 256² (a 128 border)."""
    first = await (await service.imagine("a fox --size 512x512 --steps 10", ALICE)).result()
    flow = ChatFlow(service)
    for action, border in [("zoom-out", 64), ("zoom-out-2", 128)]:
        reply = await flow.action(ALICE, action, first.id)
        assert isinstance(reply, Started) and reply.job.request.outpaint.sides == (border,) * 4
        assert (reply.job.request.width, reply.job.request.height) == (512, 512)
        await reply.job.result()


async def test_zoom_out_refusals_are_one_sentence_each(service, backend):
    """Too small an image, a factor out of range, words zoom does not take: a sentence, nothing queued."""
    await (await service.imagine("a fox --steps 4", ALICE)).result()  # 128×128
    flow = ChatFlow(service)
    made = len(backend.requests)
    with pytest.raises(InvalidOption, match=r"^Zoom needs a larger image: #1 is 128×128, too small for a border\.$"):
        await flow.action(ALICE, "zoom-out", 1)
    with pytest.raises(InvalidOption, match=r"^Zoom must be more than 1 and at most 2, not 3\.$"):
        await flow.text(ALICE, "zoom 3")
    with pytest.raises(InvalidOption, match=r"takes an optional #id and a factor such as 1\.5 or 2, not 'out'"):
        await flow.text(ALICE, "zoom out", strict=True)
    assert await flow.text(ALICE, "zoom into a fox's eye") is None  # a prompt, on a chat that takes prompts
    assert len(backend.requests) == made


def test_zoom_out_is_offered_only_where_there_is_room():
    """Under a 256-pixel side there is no room for a 64-pixel border on both ends and a 128-pixel image between:
    no button to fail, and the command says so in one sentence."""
    from bot.actions import result_actions
    from bot.options import zoom_out
    from bot.request import GenerationRequest

    wide = GenerationRequest(prompt="a fox", model="tiny", width=384, height=256)
    assert "zoom-out" in result_actions(wide) and zoom_out(384, 256, 1.5) is not None
    assert "zoom-out" not in result_actions(wide.model_copy(update={"height": 192}))
    assert zoom_out(384, 192, 1.5) is None and zoom_out(384, 192, 2) is None


async def test_pan_grows_the_canvas_one_way_and_paints_the_new_strip(service, backend, tmp_path):
    """Pan right of image 2 of #1 (256×256): a 384×256 canvas, the image kept on the left at its size, a
    128 strip on the right painted with the prompt and settings, a new seed, one image, from #1."""
    first = await (await service.imagine("two foxes --count 2 --seed 7 --size 256x256 --steps 10", ALICE)).result()
    flow = ChatFlow(service)
    reply = await flow.text(ALICE, "pan right #1.2")
    assert isinstance(reply, Started)
    panned = await reply.job.result()
    request = backend.requests[-1]
    assert (request.width, request.height, request.count, request.strength) == (384, 256, 1, 0.8)
    assert request.outpaint is not None and request.outpaint.sides == (0, 128, 0, 0)
    assert request.prompt == "two foxes" and request.steps == 10 and request.seed not in (7, 8)
    assert request.init_image == _input_sha(tmp_path / first.images[1].path)
    assert (panned.action, panned.parent_id) == ("generate", first.id)
    fields = parse_parameters(read_text((tmp_path / panned.images[0].path).read_bytes())["parameters"])["fields"]
    assert fields["Outpaint"] == "0,128,0,0,0"
    # each button pans the first image its way; a pan of the pan grows the other axis
    for action, sides, size in [("pan-up", (128, 0, 0, 0), (256, 384)), ("pan-left", (0, 0, 0, 128), (384, 256))]:
        reply = await flow.action(ALICE, action, first.id)
        assert isinstance(reply, Started) and reply.job.request.outpaint.sides == sides
        assert (reply.job.request.width, reply.job.request.height) == size
        await reply.job.result()
    reply = await flow.text(ALICE, f"pan down #{panned.id}")
    assert isinstance(reply, Started)
    assert (reply.job.request.width, reply.job.request.height) == (384, 384)
    await reply.job.result()


async def test_make_square_grows_the_short_side_and_is_offered_under_non_square_images_only(service, backend, tmp_path):
    """Make Square of image 2 of #1 (256×128): 256×256, the image kept in the middle, 64 painted above and below,
    the prompt and settings, a new seed, one image; the button is under #1 and not under the square result;
    `square #2` of the square one is one sentence."""
    from bot.request import GenerationRequest

    first = await (await service.imagine("two foxes --count 2 --seed 7 --size 256x128 --steps 10", ALICE)).result()
    assert "square" in service.result_actions(first.request)
    flow = ChatFlow(service)
    reply = await flow.action(ALICE, "square", first.id, 1)
    assert isinstance(reply, Started)
    squared = await reply.job.result()
    request = backend.requests[-1]
    assert (request.width, request.height, request.count, request.strength) == (256, 256, 1, 0.8)
    assert request.outpaint is not None and request.outpaint.sides == (64, 0, 64, 0)
    assert request.prompt == "two foxes" and request.seed not in (7, 8)
    assert request.init_image == _input_sha(tmp_path / first.images[1].path)
    assert (squared.action, squared.parent_id) == ("generate", first.id)
    assert "square" not in service.result_actions(squared.request)
    made = len(backend.requests)
    with pytest.raises(
        InvalidOption, match=rf"^Square has no room: #{squared.id} is 256×256, and it is square already\.$"
    ):
        await flow.text(ALICE, f"square #{squared.id}")
    with pytest.raises(InvalidOption, match=r"^square takes an optional #id, not 'tiles'\.$"):
        await flow.text(ALICE, "square tiles", strict=True)
    assert await flow.text(ALICE, "square tiles on a floor") is None  # a prompt, on a chat that takes prompts
    tall = GenerationRequest(prompt="a fox", model="tiny", width=512, height=1024)
    assert "square" not in service.result_actions(tall)  # 1024² passes this service's pixel budget
    assert len(backend.requests) == made


async def test_pan_refusals_are_one_sentence_each(service, backend):
    """No room left under the pixel budget, a direction pan does not take: a sentence, nothing queued."""
    await (await service.imagine("a fox --steps 4 --size 512x512", ALICE)).result()  # the whole 512² budget
    flow = ChatFlow(service)
    made = len(backend.requests)
    with pytest.raises(
        InvalidOption,
        match=r"^Pan left has no room: #1 is 512×512, and an image is at most 2048 on a side and 0\.3 megapixels\.$",
    ):
        await flow.action(ALICE, "pan-left", 1)
    with pytest.raises(
        InvalidOption, match=r"^pan takes left, right, up or down and an optional #id, not 'sideways'\.$"
    ):
        await flow.text(ALICE, "pan sideways", strict=True)
    with pytest.raises(InvalidOption, match=r"^pan takes left, right, up or down and an optional #id\.$"):
        await flow.text(ALICE, "pan", strict=True)  # no direction: the sentence names none of the words
    assert await flow.text(ALICE, "pan of paella on a table") is None  # a prompt, on a chat that takes prompts
    with pytest.raises(NotFound, match="earlier image of yours to pan up"):
        await flow.text(BOB, "pan up")
    assert len(backend.requests) == made


async def test_pan_is_offered_only_where_there_is_room_and_the_buttons_come_in_rows(service):
    """Under this server's 512² budget a 512² result has no pan at all and a 512×256 one has all four (the budget,
    not only the longest side, decides); the result buttons keep their rows on every platform, a fifth row picking
    one image of several."""
    from bot.actions import PAN_ACTIONS, button_rows
    from bot.request import GenerationRequest

    square = GenerationRequest(prompt="a fox", model="tiny", width=512, height=512)
    assert not set(PAN_ACTIONS) & set(service.result_actions(square))
    await (await service.imagine("a fox --size 512x512 --steps 4", ALICE)).result()
    with pytest.raises(InvalidOption, match=r"^Pan up has no room"):  # the button the text command would be
        await service.pan(ALICE, None, "up")
    wide = square.model_copy(update={"height": 256})
    actions = service.result_actions(wide)
    rows = [
        ["reroll", "refine", "vary-subtle", "vary-strong", "edit"],
        ["upscale-2", "upscale-4", "zoom-out", "zoom-out-2", "square"],
        ["pan-left", "pan-right", "pan-up", "pan-down"],
        ["details", "delete"],
    ]
    assert button_rows(actions) == [[(action, 0) for action in row] for row in rows]
    assert button_rows([*actions, "show"])[-1] == [("show", 0)]
    three = service.result_actions(wide.model_copy(update={"count": 3}))
    assert button_rows(three, picks=range(3)) == [*button_rows(actions), [("pick", 0), ("pick", 1), ("pick", 2)]]


async def test_forget_deletes_the_inputs_only_its_generations_used(service, tmp_path):
    await (await service.imagine("a red fox", ALICE)).result()
    await (await service.imagine("a fox --image #1", ALICE)).result()
    await (await service.imagine("a blue fox", BOB)).result()
    await (await service.vary(BOB, 3, "subtle")).result()
    assert len(inputs(tmp_path)) == 2
    await service.forget(ALICE)
    assert len(inputs(tmp_path)) == 1  # Bob's vary still uses his
    await service.forget(BOB)
    assert inputs(tmp_path) == []


async def test_upscale_is_the_same_prompt_and_seed_at_twice_the_size(service, backend, tmp_path):
    """`upscale #1.2 2`: image 2 of #1 (seed + 1) at 2× its sides, redrawn at strength 0.3, parent #1."""
    first = await (await service.imagine("two foxes --count 2 --seed 7", ALICE)).result()
    flow = ChatFlow(service)
    reply = await flow.text(ALICE, "upscale #1.2 2")
    assert isinstance(reply, Started)
    upscaled = await reply.job.result()
    request = backend.requests[-1]
    assert (upscaled.action, upscaled.parent_id, upscaled.seed) == ("upscale", first.id, 8)
    assert (request.width, request.height, request.upscale, request.strength, request.count) == (256, 256, 2, 0.3, 1)
    fields = parse_parameters(read_text((tmp_path / upscaled.images[0].path).read_bytes())["parameters"])["fields"]
    assert fields["Hires upscale"] == "2" and fields["Hires upscaler"] == "Lanczos"
    assert ("Upscale", "2× hires fix: Lanczos, then redrawn at strength 0.3") in result_fields(upscaled)
    # a button upscales the first image; 4× of 128² still fits the 512² budget
    reply = await flow.action(ALICE, "upscale-4", first.id)
    assert isinstance(reply, Started) and (reply.job.request.width, reply.job.request.upscale) == (512, 4)


async def test_an_upscale_whose_few_steps_leave_the_refiner_none_runs_without_it(service, backend):
    """Hires fix of a refined image: 4 steps at 0.3 run 1, which the parent's 50 % split cannot share, so the
    upscale runs on the base alone and says so (it used to be refused with a refiner sentence); with enough
    steps the refiner stays."""
    await (await service.imagine("a fox --steps 4 --refiner 50 --seed 3", ALICE)).result()
    job = await service.upscale(ALICE, None, 2)
    await job.result()
    assert backend.requests[-1].refiner is None and backend.requests[-1].run_steps == 1
    assert "The refiner is left out: 1 step leaves it none at strength 0.3." in job.warnings
    await (await service.imagine("a fox --steps 30 --refiner 50 --seed 3", ALICE)).result()
    job = await service.upscale(ALICE, None, 2)
    await job.result()
    assert backend.requests[-1].refiner is not None and backend.requests[-1].split == (5, 4)
    assert not any("left out" in warning for warning in job.warnings)


async def test_a_configured_upscaler_enlarges_the_image_alone_and_that_is_what_is_stored(backend, tmp_path):
    """With IMAGEBOT_UPSCALER set, an upscale names the upscaler and stores no strength and no refiner."""
    async with memory_service(backend, tmp_path, upscaler="tiny-upscaler") as service:
        first = await (await service.imagine("a red fox --seed 7 --refiner 80", ALICE)).result()
        await service.user_settings.update(ALICE, {"upscale_strength": 0.5})  # no redraw: not used
        upscaled = await (await service.upscale(ALICE, 1, 4)).result()
    request = backend.requests[-1]
    assert (upscaled.action, upscaled.parent_id, upscaled.seed) == ("upscale", first.id, 7)
    assert (request.upscale, request.upscaler, request.strength, request.refiner) == (4, "tiny-upscaler", None, None)
    assert (request.width, request.height, request.run_steps, upscaled.warnings) == (512, 512, 0, ())
    fields = parse_parameters(read_text((tmp_path / upscaled.images[0].path).read_bytes())["parameters"])["fields"]
    assert fields["Postprocess upscale by"] == "4" and fields["Postprocess upscaler"] == "tiny-upscaler"
    assert "Denoising strength" not in fields and "Hires upscale" not in fields
    assert ("Upscale", "4× by the tiny-upscaler upscaler, no redraw") in result_fields(upscaled)
    assert ("Steps", "none: an upscaler enlarged the image alone") in result_fields(upscaled)


async def test_an_upscale_made_alone_is_not_rerolled_or_refined(backend, tmp_path):
    """A new seed or a refiner changes nothing an upscaler made: one sentence each, pointing at the parent."""
    async with memory_service(backend, tmp_path, upscaler="tiny-upscaler") as service:
        await (await service.imagine("a red fox --seed 7", ALICE)).result()
        await (await service.upscale(ALICE, 1, 2)).result()
        sent = len(backend.requests)
        with pytest.raises(InvalidOption) as refused:
            await service.reroll(ALICE, 2)
        assert str(refused.value) == (
            "Reroll is not possible: #2 was enlarged by an upscaler alone,"
            " which a new seed does not change (reroll #1, then upscale)."
        )
        with pytest.raises(InvalidOption, match=r"^Refine is not possible: #2 was enlarged by an upscaler alone"):
            await service.refine(ALICE, 2)
        assert len(backend.requests) == sent
        # Vary redraws it, and upscaling it again runs the upscaler on it
        await (await service.vary(ALICE, 2, "subtle")).result()
        assert backend.requests[-1].strength == 0.35 and backend.requests[-1].upscale is None


async def test_an_upscale_on_a_backend_that_upscales_alone_stores_no_strength(tmp_path):
    """Runware's upscaler does not redraw: the stored request has no strength, and says whose upscaler it was."""
    backend = FakeBackend(name="runware")
    async with memory_service(backend, tmp_path, upscaler="tiny-upscaler") as service:
        await (await service.imagine("a red fox --seed 7", ALICE)).result()
        upscaled = await (await service.upscale(ALICE, 1, 2)).result()
    request = backend.requests[-1]
    assert (request.upscale, request.upscaler, request.strength) == (2, None, None)
    assert ("Upscale", "2× by the backend's upscaler, no redraw") in result_fields(upscaled)


async def test_an_unknown_configured_upscaler_is_refused_at_start(backend, tmp_path):
    with pytest.raises(InvalidOption, match="not in the catalog"):
        async with memory_service(backend, tmp_path, upscaler="no-such-upscaler"):
            pass


async def test_an_upscale_over_the_pixel_budget_is_one_sentence(service):
    await (await service.imagine("a fox --size 384x384", ALICE)).result()
    with pytest.raises(InvalidOption, match=r"^Upscale 2× of #1 would be 768×768; the most is about 512×512\.$"):
        await service.upscale(ALICE, None, 2)
    for bad in ("upscale 3", "upscale #1 2 4", "upscale banana"):
        with pytest.raises(InvalidOption):
            await ChatFlow(service).text(ALICE, bad, strict=True)


async def test_zoom_and_outpaint_extend_the_image(service, backend, tmp_path):
    """`--zoom 2` on a 128² image makes 256² with 64 px on every side; `--outpaint 0,128,0,0` widens it."""
    await (await service.imagine("a red fox", ALICE)).result()
    zoomed = await (await service.imagine("a fox in a field --image #1 --zoom 2", ALICE)).result()
    request = backend.requests[-1]
    assert (request.width, request.height, request.outpaint.sides) == (256, 256, (64, 64, 64, 64))
    fields = parse_parameters(read_text((tmp_path / zoomed.images[0].path).read_bytes())["parameters"])["fields"]
    assert fields["Outpaint"] == "64,64,64,64,0"
    await (await service.imagine("a fox --image #1 --outpaint 0,128,0,0,8", ALICE)).result()
    assert (backend.requests[-1].width, backend.requests[-1].outpaint.blur) == (256, 8)
    with pytest.raises(InvalidOption, match=r"^--outpaint must be pixels to add as TOP,RIGHT,BOTTOM,LEFT"):
        await service.imagine("a fox --image #1 --outpaint 10", ALICE)


async def test_a_slight_zoom_is_judged_on_the_image_not_on_the_stand_in_the_checks_use_first(service, backend):
    """`--zoom 1.25` of a 384×256 image adds 128 px to its width (64 a side) and none to its height; of a 128×128
    one it adds nothing and says so. (The checks before an image is read use a 128×128 stand-in: they refused
    every zoom under 1.5 whatever the image.)"""
    await (await service.imagine("a red fox --size 384x256", ALICE)).result()
    await (await service.imagine("a red fox --size 128x128", ALICE)).result()
    await (await service.imagine("a fox --image #1 --zoom 1.25", ALICE)).result()
    request = backend.requests[-1]
    assert (request.width, request.height, request.outpaint.sides) == (512, 256, (0, 64, 0, 64))
    with pytest.raises(InvalidOption, match=r"^--zoom 1\.25 adds nothing to 128×128; zoom out further\.$"):
        await service.imagine("a fox --image #2 --zoom 1.25", ALICE)


# -- the safety verdict of an input image ---------------------------------------------------------------


async def withholding(service) -> None:
    await service.admin.update_policy(ALICE, {"flagged": "withhold"}, may_manage=True)


async def test_a_flagged_image_is_refused_as_an_input_where_the_server_withholds_flagged_images(
    service, backend, tmp_path
):
    """`--image #1.2`, Vary and Upscale of a flagged image: one sentence, nothing queued, audited as blocked."""
    backend.nsfw_seeds = {8}
    await (await service.imagine("two foxes --count 2 --seed 7", ALICE)).result()
    await withholding(service)
    sent = len(backend.requests)
    refusal = (
        "This request is not allowed here"
        " (#1.2 was flagged by the safety check, and this server withholds flagged images)."
    )
    with pytest.raises(ContentBlocked) as refused:
        await service.imagine("a fox --image #1.2 --strength 0.5", ALICE)
    assert str(refused.value) == refusal
    with pytest.raises(ContentBlocked) as refused:
        await service.upscale(ALICE, "#1.2", 2)
    assert str(refused.value) == refusal
    with pytest.raises(ContentBlocked, match=r"\(#1.2 was flagged"):
        await service.imagine("a fox --image #1 --mask #1.2 --strength 0.5", ALICE)
    assert len(backend.requests) == sent and inputs(tmp_path) == []
    entries = await service.admin.audit_log(ALICE, may_manage=True)
    assert [entry.action for entry in entries].count("blocked") == 3
    # the image that passed the check is an input as before
    await (await service.imagine("a fox --image #1 --strength 0.5", ALICE)).result()
    assert len(backend.requests) == sent + 1


async def test_an_upload_the_safety_check_flags_is_refused_where_the_server_withholds_flagged_images(
    service, backend, tmp_path
):
    """A fresh file (no verdict yet) goes through the backend's safety check when the server withholds
    flagged images: flagged, one sentence and nothing queued or kept; elsewhere no check is run."""
    green, red = png(64, 64, (10, 200, 10)), png(64, 64, (200, 10, 10))

    async def load(ref: str, option: str) -> bytes:
        return {"green.png": green, "red.png": red}[ref]

    await (await service.imagine("a fox --image green.png --strength 0.5", ALICE, load=load)).result()
    assert backend.checked == []  # the server shows flagged images (spoilered): nothing to check for
    await withholding(service)
    stored_red = check_image(red, option="image", max_bytes=10**7, pixel_budget=10**7).data
    backend.nsfw_inputs = {stored_red}
    sent, kept = len(backend.requests), inputs(tmp_path)
    with pytest.raises(ContentBlocked) as refused:
        await service.imagine("a fox --image red.png --strength 0.5", ALICE, load=load)
    assert str(refused.value) == (
        "This request is not allowed here"
        " (the uploaded image was flagged by the safety check, and this server withholds flagged images)."
    )
    with pytest.raises(ContentBlocked, match=r"\(the uploaded guide was flagged"):
        await service.imagine("a fox --cn tiny-controlnet --guide red.png", ALICE, load=load)
    assert len(backend.requests) == sent and inputs(tmp_path) == kept
    assert backend.checked == [("tiny", 1), ("tiny", 1)]
    await (await service.imagine("a fox --image green.png --strength 0.5", ALICE, load=load)).result()
    assert len(backend.requests) == sent + 1


async def test_vary_of_a_flagged_result_is_refused_where_flagged_images_are_withheld(service, backend):
    backend.nsfw_seeds = {7}
    await (await service.imagine("a fox --seed 7", ALICE)).result()
    await withholding(service)
    with pytest.raises(ContentBlocked, match=r"^This request is not allowed here \(#1 was flagged"):
        await service.vary(ALICE, 1, "subtle")


async def test_a_flagged_input_is_judged_by_the_result_where_flagged_images_are_spoilered(service, backend):
    """Under the default policy (spoiler) a flagged input runs; its result gets its own verdict."""
    backend.nsfw_seeds = {7}
    await (await service.imagine("a fox --seed 7", ALICE)).result()
    upscaled = await (await service.upscale(ALICE, 1, 2)).result()
    assert upscaled.images[0].nsfw is True  # the same seed: the fake backend flags it again
    varied = await (await service.vary(ALICE, 1, "strong")).result()
    assert varied.images[0].nsfw is False


async def test_prompts_with_choices_share_one_read_of_an_attachment(service, backend, tmp_path):
    """``{…}`` choices with an attachment: the chat's file is read once, and every job starts from it."""
    reads: list[tuple[str, str]] = []

    async def load(ref: str, option: str) -> bytes:
        reads.append((ref, option))
        return png(512, 512)

    jobs = await service.imagine_each("a {red, blue} fox --image up.png --strength {0.5, 0.3}", ALICE, load=load)
    made = [await job.result() for job in jobs]
    assert reads == [("up.png", "image")]
    assert [(g.request.prompt, g.request.strength) for g in made] == [
        ("a red fox", 0.5),
        ("a red fox", 0.3),
        ("a blue fox", 0.5),
        ("a blue fox", 0.3),
    ]
    assert len({g.request.init_image for g in made}) == 1 and len(inputs(tmp_path)) == 1


# -- the inpainter: the model's inpainting UNet repaints masks and outpaints ------------------------------------


async def test_masks_and_outpaints_are_repainted_by_the_models_inpainter_and_nothing_else_is(service, backend):
    """The tiny model names its inpainter: a mask, Vary (Region), Zoom Out, Pan, Make Square and --outpaint run on
    it; text, image-to-image and Vary do not; with a LoRA or an IP-Adapter (weights for the model's own UNet) the
    model repaints itself."""
    await (await service.imagine("a red fox --size 384x256", ALICE)).result()
    made: dict[str, str | None] = {}

    async def run(name: str, job) -> None:
        await job.result()
        made[name] = backend.requests[-1].inpainter

    await run("text", await service.imagine("a red fox", ALICE))
    await run("mask", await service.imagine("a fox in a hat --image #1 --mask #2", ALICE))
    await run("region", await service.vary_region(ALICE, 1, "0,0 192,0 192,256 0,256", "a hat"))
    await run("zoom", await service.zoom(ALICE, 1))
    await run("pan", await service.pan(ALICE, 1, "up"))
    await run("square", await service.square(ALICE, 1))
    await run("outpaint", await service.imagine("a fox --image #1 --outpaint 64", ALICE))
    await run("image", await service.imagine("a fox --image #1 --strength 0.5", ALICE))
    await run("vary", await service.vary(ALICE, 4, "subtle"))
    await run("lora", await service.imagine("a fox --image #1 --zoom 1.5 --lora tiny-lora", ALICE))
    await run("ip-adapter", await service.imagine("a fox --image #1 --mask #2 --cn tiny-ip-adapter --guide #1", ALICE))
    repainted = {name for name, inpainter in made.items() if inpainter == "tiny-inpainter"}
    assert repainted == {"mask", "region", "zoom", "pan", "square", "outpaint"}
    assert {made[name] for name in made.keys() - repainted} == {None}


async def test_a_reroll_or_refine_keeps_its_parents_choice_and_a_backend_without_the_inpainter_repaints_itself(
    service, backend, monkeypatch
):
    """A backend that refuses the inpainter gets the model (nothing refused); that row, like one stored before
    inpainters came, keeps the model in its rerolls and refines, so they make what its settings made."""

    def no_inpainter(request) -> None:
        if request.inpainter is not None:
            raise InvalidOption("inpainter", f"'{request.inpainter}' is not available on the fake backend")

    await (await service.imagine("a red fox --size 256x256", ALICE)).result()
    monkeypatch.setattr(backend, "check", no_inpainter)
    zoomed = await (await service.zoom(ALICE, 1)).result()
    assert zoomed.request.inpainter is None and backend.requests[-1].outpaint is not None
    monkeypatch.undo()
    assert (await (await service.reroll(ALICE, zoomed.id)).result()).request.inpainter is None
    assert (await (await service.refine(ALICE, zoomed.id, 50)).result()).request.inpainter is None
    again = await (await service.zoom(ALICE, 1)).result()
    assert again.request.inpainter == "tiny-inpainter"
    assert (await (await service.reroll(ALICE, again.id)).result()).request.inpainter == "tiny-inpainter"
    assert (await (await service.refine(ALICE, again.id, 50)).result()).request.inpainter == "tiny-inpainter"
    assert ("Model", "tiny (inpainted by tiny-inpainter)") in result_fields(again)
    assert ("Model", "tiny") in result_fields(zoomed)

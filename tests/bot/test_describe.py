"""Describe (Midjourney's /describe): an image put into words that /imagine takes as a prompt."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot import metrics
from bot.catalog import Catalog, load_catalog
from bot.chat import ChatFlow, Text
from bot.describe import MAX_DESCRIPTION, answer_text, as_prompt, aspect_flag, prompt_of, words_in
from bot.errors import (
    MAX_MESSAGE,
    BackendUnavailable,
    ContentBlocked,
    InvalidOption,
    NotAllowed,
    NotEnabledHere,
    NotFound,
)
from bot.images import check_image
from bot.jobs import Requester
from bot.options import Defaults, Limits, flag_runs, parse_options
from bot.ports import DescribingBackend
from tests.fakes.backend import FakeBackend
from tests.fakes.service import memory_service

ALICE = Requester("slack", "U1", workspace="T1", channel="C1")
LIMITS = Limits(pixel_budget=4 * 1024 * 1024)
BOB = Requester("slack", "U2", workspace="T1", channel="C1")


@pytest.fixture
async def service(backend, tmp_path):
    async with memory_service(backend, tmp_path, max_input_bytes=200_000, max_input_pixels=512 * 512) as service:
        yield service


@pytest.fixture
def flow(service) -> ChatFlow:
    return ChatFlow(service, command="/imagine ", quote=lambda text: text.replace("&", "&amp;").replace("<", "&lt;"))


def png(width: int, height: int, colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def made(service, who: Requester = ALICE, prompt: str = "a red fox --seed 7 --steps 4 --n 2") -> int:
    return (await (await service.imagine(prompt, who)).result()).id


def words(reply: Text) -> str:
    """The words a describe reply holds, from its code block."""
    return reply.text.split("```\n", 1)[1].rsplit("\n```", 1)[0]


# -- the words ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "prompt"),
    [
        ("a red fox sitting in the snow", "a red fox sitting in the snow"),
        ("  a fox\n\tin   snow \x1b[31m ", "a fox in snow [31m"),
        ("a poster reading --ar 9:1 --mine —seed 3", "a poster reading ar 9:1 mine seed 3"),
        ("a {red, blue} fox with `code`", "a red, blue fox with code"),
        ("well-known t-shirt", "well-known t-shirt"),  # a dash inside a word stays
        ("", ""),
        ("--- {} ``", ""),
    ],
)
def test_a_caption_becomes_one_line_of_words_imagine_reads_as_a_prompt_alone(caption, prompt):
    assert as_prompt(caption) == prompt


def test_a_long_caption_is_cut_at_a_word():
    cut = as_prompt("fox " * 400)
    assert len(cut) <= MAX_DESCRIPTION and cut.endswith("fox") and set(cut.split()) == {"fox"}
    assert as_prompt("x" * 2000) == "x" * MAX_DESCRIPTION  # one long word: cut where it must be


@given(st.text(max_size=2000))
def test_any_caption_is_printable_words_that_imagine_takes_with_no_flag_or_choice(caption):
    """Whatever an API answers, the words shown are one printable line that /imagine reads as a prompt only."""
    text = as_prompt(caption)
    assert len(text) <= MAX_DESCRIPTION and text == text.strip() and "  " not in text
    assert all(c.isprintable() for c in text) and not set("{}<>`") & set(text)
    assert flag_runs(text) == [] and as_prompt(text) == text
    if len(text) >= 2:
        request = parse_options(text, catalog=load_catalog(), defaults=Defaults(model="tiny"), limits=LIMITS).request
        assert request.count == 1 and request.controlnets == () and request.init_image is None


@given(
    st.text(max_size=800),
    st.integers(min_value=64, max_value=8192),
    st.integers(min_value=64, max_value=8192),
    st.sampled_from(["#12", "#12.2", "Your image"]),
)
def test_an_answers_words_are_read_back_as_they_were_shown(caption, width, height, what):
    """What "Imagine these words" reads back from an answer is the words it shows and their shape, a prompt again."""
    words = as_prompt(caption)
    shown = f"{words} {aspect_flag(width, height)}"
    assert words_in(answer_text(what, [shown])) == (shown if words else None)
    assert words_in(answer_text(what, [shown]), 2) is None
    assert prompt_of(shown) == (shown if words else None)


@given(st.lists(st.text(max_size=300), min_size=2, max_size=4), st.sampled_from(["--ar 1:1", "--ar 2:3"]))
def test_each_of_several_descriptions_is_read_back_by_its_number(captions, shape):
    """Under several descriptions, button N reads back the N-th as it was shown; a number past them, nothing."""
    shown = [f"{as_prompt(caption) or 'a fox'} {shape}" for caption in captions]
    answer = answer_text("#3", shown)
    assert answer.startswith(f"📝 #3 in words, {len(shown)} ways; send one with /imagine for one like it:\n```\n1️⃣ ")
    assert [words_in(answer, number) for number in range(1, len(shown) + 1)] == shown
    assert words_in(answer, len(shown) + 1) is None and words_in(answer, 0) is None


@given(st.text(max_size=800))
def test_anything_read_back_is_words_and_at_most_one_shape_imagine_takes(text):
    """A forged value (Slack's button) reads back as words and a usual shape, or nothing: no other flag."""
    read = prompt_of(text)
    if read is not None:
        words, _, shape = read.partition(" --ar ")
        assert words == as_prompt(words) and flag_runs(words) == []
        assert shape == "" or re.fullmatch(r"[0-9]{1,2}:[0-9]{1,2}", shape)
        if len(words) < 2:  # /imagine says a prompt is too short; nothing else
            return
        request = parse_options(read, catalog=load_catalog(), defaults=Defaults(model="tiny"), limits=LIMITS).request
        assert request.count == 1 and request.controlnets == ()


@pytest.mark.parametrize(
    ("width", "height", "flag"),
    [(1024, 1024, "--ar 1:1"), (1216, 832, "--ar 3:2"), (832, 1216, "--ar 2:3"), (1920, 1080, "--ar 16:9"),
     (100, 1000, "--ar 1:4"), (2000, 100, "--ar 4:1"), (1000, 800, "--ar 5:4")],
)  # fmt: skip
def test_the_shape_is_the_nearest_usual_one(width, height, flag):
    assert aspect_flag(width, height) == flag


@pytest.mark.parametrize("text", ["", "📝 #1 in words:\n```\n\n```", "something else", "```\n--- {}\n```"])
def test_a_message_without_an_answers_words_has_none(text):
    assert words_in(text) is None


# -- the use case ---------------------------------------------------------------------------------


async def test_describe_puts_a_result_into_words_and_answers_in_a_code_block(flow, service, backend):
    generation = await made(service)
    reply = await flow.text(ALICE, f"describe #{generation}.2")
    assert isinstance(reply, Text)
    stored = (await service.details(ALICE, generation)).images[1]
    data = await service.read_image(stored.path)
    # The second image, checked as any input: its pixels without the PNG's parameters.
    assert [Image.open(io.BytesIO(sent)).tobytes() for sent in backend.described] == [
        Image.open(io.BytesIO(data)).tobytes()
    ]
    assert b"parameters" in data and b"parameters" not in backend.described[0]
    r, g, b = Image.open(io.BytesIO(data)).getpixel((0, 0))
    shape = aspect_flag(stored.width, stored.height)
    assert words(reply) == f"a {stored.width}x{stored.height} picture of #{r:02x}{g:02x}{b:02x} {shape}"
    assert reply.text.startswith(f"📝 #{generation}.2 in words, to send with /imagine for one like it:\n```\n")
    assert reply.words == (words(reply),)  # a chat may offer a button that imagines them


async def test_describe_alone_reads_the_users_latest_image(flow, service, backend):
    await made(service)
    latest = await made(service, prompt="a blue fox --seed 9 --steps 4")
    reply = await flow.text(ALICE, "describe")
    assert isinstance(reply, Text) and reply.text.startswith(f"📝 #{latest} in words")
    with pytest.raises(NotFound):
        await flow.text(BOB, "describe")  # none of Bob's


async def test_describe_reads_a_chats_file_checked_as_any_input(flow, service, backend):
    files = {"photo.png": png(96, 64, (10, 20, 30)), "huge.png": png(900, 900), "notes.txt": b"hello there"}

    async def load(ref: str, option: str) -> bytes:
        return files[ref]

    reply = await flow.describe(ALICE, file="photo.png", load=load)
    assert words(reply) == "a 96x64 picture of #0a141e --ar 3:2" and reply.text.startswith("📝 Your image in words")
    with pytest.raises(InvalidOption, match=r"^Image must be a PNG, JPEG or WebP file\.$"):
        await flow.describe(ALICE, file="notes.txt", load=load)
    with pytest.raises(InvalidOption, match=r"^Image is .* the most is"):
        await flow.describe(ALICE, file="huge.png", load=load)
    assert len(backend.described) == 1  # neither refused file was described


async def test_describe_text_takes_one_optional_image_and_leaves_other_words_a_prompt(flow, service):
    """On Slack "describe a cat" is a prompt; the console (strict) says what describe takes."""
    assert await flow.text(ALICE, "describe a cat") is None
    assert await flow.text(ALICE, "describe photo.png") is None  # no chat that reads files
    with pytest.raises(InvalidOption, match=r"^describe takes an optional image \(#12, #12\.2\), not 'a cat'\.$"):
        await flow.text(ALICE, "describe a cat", strict=True)

    async def load(ref: str, option: str) -> bytes:
        return png(64, 64)

    reply = await flow.text(ALICE, "describe photo.png", strict=True, load=load)
    assert isinstance(reply, Text) and words(reply) == "a 64x64 picture of #c82828 --ar 1:1"
    with pytest.raises(InvalidOption, match=r"^describe takes an optional image \(#12, #12\.2 or a file\), not"):
        await flow.text(ALICE, "describe two.png three.png", strict=True, load=load)


async def test_someone_elses_image_is_not_described(flow, service, backend):
    generation = await made(service, BOB)
    with pytest.raises(NotAllowed):
        await flow.text(ALICE, f"describe #{generation}")
    assert backend.described == []


async def test_a_backend_that_cannot_describe_says_so_before_reading_the_image(flow, service, backend):
    generation = await made(service)
    backend.describes = False
    with pytest.raises(InvalidOption, match=r"^Describe needs a captioner, and the fake backend has none\.$"):
        await flow.text(ALICE, f"describe #{generation}")
    assert backend.described == []


async def test_a_backend_without_describe_at_all_is_named(tmp_path):
    class Painter(FakeBackend):  # a plugin backend that only paints
        check_describe = describe = None  # type: ignore[assignment]

    painter = Painter(name="painter")
    assert not isinstance(painter, DescribingBackend)
    async with memory_service(painter, tmp_path) as service:
        generation = await made(service)
        with pytest.raises(InvalidOption, match=r"^Describe is not available on the painter backend\.$"):
            await service.describe(ALICE, generation)


def described(outcome: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("imagebot_descriptions_total", {"backend": "fake", "outcome": outcome}) or 0
    )


async def test_a_failing_or_wordless_backend_gives_one_sentence_about_describing(flow, service, backend):
    generation = await made(service)
    done, refused = described("done"), described("failed")
    backend.fail_with = "the API timed out"
    with pytest.raises(BackendUnavailable) as failed:
        await flow.text(ALICE, f"describe #{generation}")
    assert str(failed.value) == "The fake backend could not describe the image: the API timed out."
    backend.fail_with, backend.caption = None, " --- {} \x00 "
    with pytest.raises(BackendUnavailable) as wordless:
        await flow.text(ALICE, f"describe #{generation}")
    assert str(wordless.value) == "The fake backend could not describe the image: its answer held no words."
    backend.caption = None
    assert isinstance(await flow.text(ALICE, f"describe #{generation}"), Text)
    assert (described("done") - done, described("failed") - refused) == (1, 2)  # what an operator's /metrics counts


async def test_a_users_second_describe_waits_for_the_first(flow, service, backend):
    """A paid API is not asked again while the user's first answer is on its way; others are not held."""
    generation, bobs = await made(service), await made(service, BOB)
    backend.gate = asyncio.Event()
    first = asyncio.create_task(flow.text(ALICE, f"describe #{generation}"))
    while not backend.described:
        await asyncio.sleep(0.01)
    with pytest.raises(InvalidOption, match=r"^Describe is still reading your last image; wait for its answer\.$"):
        await flow.text(ALICE, f"describe #{generation}")
    bob = asyncio.create_task(flow.text(BOB, f"describe #{bobs}"))
    backend.gate.set()
    assert isinstance(await first, Text) and isinstance(await bob, Text)
    assert isinstance(await flow.text(ALICE, f"describe #{generation}"), Text)  # the turn is free again
    backend.gate, backend.fail_with = None, "down"
    with pytest.raises(BackendUnavailable):
        await flow.text(ALICE, f"describe #{generation}")
    backend.fail_with = None
    assert isinstance(await flow.text(ALICE, f"describe #{generation}"), Text)  # a failure frees it too


async def test_a_server_that_withholds_flagged_images_describes_none(flow, service, backend):
    backend.nsfw_seeds = {8}  # the second image's
    generation = await made(service)
    await service.admin.update_policy(ALICE, {"flagged": "withhold"}, may_manage=True)
    with pytest.raises(ContentBlocked, match=rf"#{generation}\.2 was flagged by the safety check"):
        await flow.text(ALICE, f"describe #{generation}.2")
    assert isinstance(await flow.text(ALICE, f"describe #{generation}"), Text)  # its first image was not flagged
    flagged, clean = png(64, 64, (1, 2, 3)), png(64, 64)
    files = {"a.png": flagged, "b.png": clean}

    async def load(ref: str, option: str) -> bytes:
        return files[ref]

    # The upload is checked (its bytes re-encoded) before the safety check sees it.
    backend.nsfw_inputs = {check_image(flagged, option="image", max_bytes=10**6, pixel_budget=10**6).data}
    with pytest.raises(ContentBlocked, match=r"the uploaded image was flagged by the safety check"):
        await flow.describe(ALICE, file="a.png", load=load)
    assert isinstance(await flow.describe(ALICE, file="b.png", load=load), Text)
    assert backend.checked == [("tiny", 1), ("tiny", 1)]  # each upload once, with the user's model's check


async def test_a_server_that_spoilers_flagged_images_describes_them_without_checking_uploads(flow, service, backend):
    backend.nsfw_seeds = {7}
    generation = await made(service)
    assert isinstance(await flow.text(ALICE, f"describe #{generation}"), Text)

    async def load(ref: str, option: str) -> bytes:
        return png(64, 64)

    assert isinstance(await flow.describe(ALICE, file="a.png", load=load), Text)
    assert backend.checked == []


async def test_a_server_with_a_channel_list_describes_only_there_and_reads_no_file_elsewhere(flow, service, backend):
    generation = await made(service)
    await service.admin.update_policy(ALICE, {"channels": ["C9"]}, may_manage=True)
    with pytest.raises(NotEnabledHere):
        await flow.text(ALICE, f"describe #{generation}")
    loaded: list[str] = []

    async def load(ref: str, option: str) -> bytes:
        loaded.append(ref)
        return png(64, 64)

    with pytest.raises(NotEnabledHere):
        await flow.describe(ALICE, file="a.png", load=load)
    assert backend.described == [] and loaded == []
    there = Requester("slack", "U1", workspace="T1", channel="C9")
    assert isinstance(await flow.describe(there, file="a.png", load=load), Text) and loaded == ["a.png"]


async def test_the_reply_fits_any_chat_and_quotes_the_words_for_its_markup(flow, service, backend):
    generation = await made(service)
    backend.caption = "a <b> & c " + "word " * 300
    reply = await flow.text(ALICE, f"describe #{generation}")
    assert isinstance(reply, Text)
    assert "a b &amp; c word" in reply.text and len(reply.text) < 2000
    assert len(words(reply)) <= MAX_DESCRIPTION + 20 and MAX_MESSAGE < 2000


async def test_several_descriptions_are_numbered_each_said_once_at_most_four(flow, service, backend):
    """A backend that says it several ways (the local captioner: the beam's, then sampled ones): each made a prompt
    with the shape, none twice once made one (nor empty), at most four, numbered in the answer, a button each."""
    generation = await made(service, prompt="a red fox --seed 7 --steps 4 --size 128x192")
    backend.caption = "a fox in snow"
    backend.more_captions = ("a red fox", "a  fox in snow", "--- {}", "a fox --seed 5", "a den", "one more")
    reply = await flow.text(ALICE, f"describe #{generation}")
    assert isinstance(reply, Text)
    assert reply.words == ("a fox in snow --ar 2:3", "a red fox --ar 2:3", "a fox seed 5 --ar 2:3", "a den --ar 2:3")
    assert reply.text == (
        f"📝 #{generation} in words, 4 ways; send one with /imagine for one like it:\n```\n"
        "1️⃣ a fox in snow --ar 2:3\n2️⃣ a red fox --ar 2:3\n3️⃣ a fox seed 5 --ar 2:3\n4️⃣ a den --ar 2:3\n```"
    )
    assert [words_in(reply.text, number) for number in (1, 2, 3, 4)] == list(reply.words)
    # Long ones: as many as an answer holds (a Discord message's room), the first always.
    backend.caption, backend.more_captions = "word " * 200, ("fox " * 140, "den " * 140, "sky " * 140)
    long = await flow.text(ALICE, f"describe #{generation}")
    assert isinstance(long, Text) and 1 < len(long.words) < 4 and len(long.text) < 2000


def test_the_shipped_catalog_has_a_captioner_and_a_tiny_one_that_are_never_downloaded(tmp_path: Path):
    catalog = load_catalog()
    assert {entry.name: entry.local for entry in catalog.entries("captioner")} == {
        "blip-large": "./captioners/blip-image-captioning-large",
        "tiny-captioner": "tiny:captioner",
    }
    with pytest.raises(ValueError, match="captioners are never downloaded while a request waits"):
        Catalog.from_toml('[captioner.hub]\narchitecture = "blip"\nlocal = "Salesforce/blip-image-captioning-large"\n')

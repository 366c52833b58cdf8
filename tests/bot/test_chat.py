"""The platform-neutral chat flow: text commands, clicks and job updates, as every chat sees them."""

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.catalog import Catalog, load_catalog
from bot.chat import (
    GENERIC_ERROR,
    ChatFlow,
    Deleted,
    EditForm,
    Flagged,
    Listing,
    RemixForm,
    Started,
    Text,
    failure_line,
    queue_text,
    refusal,
    updates,
)
from bot.controls import BLEND_PROMPT
from bot.errors import MAX_MESSAGE, InvalidOption, NotAllowed, NotFound
from bot.jobs import Job, JobEvent, Requester
from bot.options import Limits
from bot.request import GenerationRequest, Progress
from bot.service import ImageService
from imagebot.bootstrap import stores_of
from tests.fakes.backend import FakeBackend
from tests.fakes.service import memory_service
from tests.fakes.stores import InMemoryDatabase

ALICE = Requester("slack", "U1", workspace="T1", channel="C1")
BOB = Requester("slack", "U2", workspace="T1", channel="C1")


@pytest.fixture
async def service(tmp_path):
    service = ImageService(
        backend=FakeBackend(),
        stores=stores_of(InMemoryDatabase.create(), tmp_path),
        catalog=load_catalog(),
        default_model="tiny",
        limits=Limits(pixel_budget=4 * 1024 * 1024),
        seeds=itertools.count(100).__next__,
    )
    await service.start()
    yield service
    await service.aclose()


@pytest.fixture
def flow(service):
    return ChatFlow(service, command="/imagine ")


async def made(flow: ChatFlow, who: Requester = ALICE) -> int:
    job = await flow.service.imagine("a red fox --seed 7 --steps 4", who)
    return (await job.result()).id


async def test_blend_text_blends_two_images_with_the_models_ip_adapter(flow):
    """Slack's `/imagine blend #1 #2`: no files there, ids only; no words of the user's: the images alone lead."""
    first, second = await made(flow), await made(flow)
    reply = await flow.text(ALICE, f"blend #{first} #{second}.1")
    assert isinstance(reply, Started)
    request = (await reply.job.result()).request
    assert request.prompt == BLEND_PROMPT
    assert [(c.model, c.weight, c.preprocess) for c in request.controlnets] == [("tiny-ip-adapter", 0.5, "none")] * 2
    assert await flow.text(ALICE, "blend #1 photo.png") is None  # a file is no image without a chat that reads files


async def test_reroll_text_queues_the_same_settings_with_a_new_seed(flow):
    """`reroll #id` starts a job with the parent's settings and the next seed."""
    first = await made(flow)
    reply = await flow.text(ALICE, f"reroll #{first}")
    assert isinstance(reply, Started)
    generation = await reply.job.result()
    assert (generation.parent_id, generation.action, generation.seed) == (first, "reroll", 100)
    assert generation.request.steps == 4


@pytest.mark.parametrize(
    "text",
    [
        "history of rome",
        "refine a castle",
        "settings of a story",
        "queue of people",
        "blend of colours",
        "blend #1 in",
        "loras of the forest",
    ],
)
async def test_words_a_command_cannot_take_are_no_command(flow, text):
    """On a chat that takes the rest as a prompt, a command word with other words is not a command."""
    assert await flow.text(ALICE, text) is None


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("history abc", "takes a count of images, not 'abc'"),
        ("settings steps", "takes key=value pairs, not 'steps'"),
        ("forget everything", "takes nothing or 'confirm', not 'everything'"),
        ("refine 150", "refine must be a percent from 1 to 99, not '150'."),
        ("loras of the forest", "loras takes one word to search for, not 'of the forest'."),
    ],
)
async def test_strict_text_refuses_arguments_with_a_sentence(flow, text, sentence):
    """The console's strict mode names what the command takes instead of guessing a prompt."""
    with pytest.raises(InvalidOption) as refused:
        await flow.text(ALICE, text, strict=True)
    assert sentence in str(refused.value)


async def test_loras_text_lists_the_loras_a_search_finds_on_every_chat(flow):
    """`loras pixel`: each LoRA here whose name, description or trigger words hold it, with its trigger words."""
    assert await flow.text(ALICE, "loras pixel") == Text("`pixel-art` — Pixel art style (trigger: pixel art)")
    listed = await flow.text(ALICE, "loras")
    assert isinstance(listed, Text) and "`toy-face`" in listed.text and "`pixel-art`" in listed.text
    assert await flow.text(ALICE, "loras zebra") == Text("No LoRA here matches 'zebra'.")


async def test_a_long_list_of_loras_fits_a_chat_message(tmp_path):
    """Thirty LoRAs of the longest names, descriptions and trigger words: eleven lines, then how many more."""
    loras = "".join(
        f'[lora.{"n" * 61}{k:03d}]\narchitecture = "sdxl"\nlocal = "tiny:lora"\ndescription = "{"d" * 500}"\n'
        f'trigger_words = ["{"t" * 300}", "{"u" * 300}"]\n'
        for k in range(30)
    )
    catalog = Catalog.from_toml(
        '[model.tiny]\narchitecture = "sdxl"\nlocal = "tiny:base"\nwidth = 128\nheight = 128\n' + loras
    )
    async with memory_service(FakeBackend(), tmp_path, catalog=catalog) as service:
        listed = ChatFlow(service).loras()
    lines = listed.text.splitlines()
    assert len(listed.text) <= 2000 and len(lines) == 12
    assert lines[-1] == "…and 19 more: search for part of a name to narrow the list."


async def test_a_refused_setting_is_the_answer_not_a_prompt(flow, service):
    """`settings steps=500` is refused with its range even where other words become prompts; nothing is stored."""
    with pytest.raises(InvalidOption, match="100"):
        await flow.text(ALICE, "settings steps=500")
    assert await service.user_settings.get(ALICE) == {}


async def test_settings_text_saves_and_shows_the_defaults(flow):
    """`settings steps=20` saves the default and answers with the saved line."""
    reply = await flow.text(ALICE, "settings steps=20")
    assert reply == Text("Your defaults: steps=20")


async def test_settings_take_the_imagine_flags_names_and_size(flow, service):
    """`settings size=320x256 sampler=Euler refiner=80` saves those defaults; `size=none` clears both sides."""
    reply = await flow.text(ALICE, "settings size=320x256 sampler=Euler refiner=80")
    assert reply == Text("Your defaults: height=256, refiner_percent=80, scheduler=Euler, width=320")
    job = await service.imagine("a red fox", ALICE)
    assert (job.request.width, job.request.height, job.request.scheduler) == (320, 256, "Euler")
    await job.result()
    assert await flow.text(ALICE, "settings size=none") == Text("Your defaults: refiner_percent=80, scheduler=Euler")


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("settings size=1024", "size must be WIDTHxHEIGHT like size=1024x768, not '1024'."),
        ("settings size=100x100", "Size sides must be multiples of 64 from 128 to 2048, not 100x100; did you mean"),
        ("settings colour=red", "Setting 'colour' does not exist (settings: model, steps, refiner_percent, size (or"),
    ],
)
async def test_a_bad_size_setting_is_one_sentence_and_saves_nothing(flow, service, text, sentence):
    """A malformed or out-of-range size, or an unknown key, is refused whole: the other pairs are not saved either."""
    with pytest.raises(InvalidOption) as caught:
        await flow.text(ALICE, text + " steps=12")
    assert str(caught.value).startswith(sentence)
    assert await service.user_settings.get(ALICE) == {}


# ---------------------------------------------------------------------------
# Remix mode (Midjourney's): Vary, Zoom Out, Make Square and Pan first offer the prompt to re-word


async def test_in_remix_mode_vary_zoom_and_pan_offer_the_prompt_then_run_with_the_new_words(flow, service):
    first = (await (await service.imagine("a red fox --seed 7 --steps 4 --size 256x256", ALICE)).result()).id
    plain = await flow.action(ALICE, "vary-strong", first)  # remix off: the button runs at once
    assert isinstance(plain, Started)
    await plain.job.result()
    await flow.text(ALICE, "settings remix=true")
    for action, title in (
        ("vary-strong", f"Remix: 🌪️ Vary (Strong) #{first}"),
        ("zoom-out-2", f"Remix: 🔭 Zoom Out 2× #{first}"),
        ("pan-left", f"Remix: ⬅️ #{first}"),
    ):
        form = await flow.action(ALICE, action, first)
        assert form == RemixForm(first, 0, action, "a red fox") and form.title == title
        started = await flow.remix(ALICE, form.action, form.generation_id, form.index, "  a grey wolf at dusk ")
        made_now = await started.job.result()
        request, parent = made_now.request, (await service.details(ALICE, first)).request
        assert (request.prompt, request.init_image is not None, made_now.parent_id) == (
            "a grey wolf at dusk",
            True,
            first,
        )
        assert (request.negative_prompt, request.scheduler, request.loras) == (
            parent.negative_prompt,
            parent.scheduler,
            parent.loras,
        )
        assert (request.outpaint is not None) == (action != "vary-strong")
    # A reaction has no form to show: it runs the action as it is.
    reacted = await flow.action(ALICE, "vary-subtle", first, form=False)
    assert isinstance(reacted, Started) and reacted.job.request.prompt == "a red fox"
    await reacted.job.result()
    # Upscale is no remix; nor is another's image a form of yours.
    assert isinstance(await flow.action(ALICE, "upscale-2", first), Started)
    await service.user_settings.update(BOB, {"remix": True})
    with pytest.raises(NotAllowed):
        await flow.action(BOB, "vary-strong", first)


@pytest.mark.parametrize(
    ("words", "sentence"),
    [
        ("a wolf --ar 16:9", "Remix changes the prompt's words only, not '--ar'; ✏️ Edit changes the settings too."),
        ("a wolf <lora:pixel-art:0.8>", "Remix keeps the image's LoRAs; a <lora:…> tag is for /imagine and ✏️ Edit."),
        ("  ", "Prompt is empty; describe the image you want."),
        ("a wolf\x07", "Prompt contains a control character (U+0007); remove it."),
        ("(a wolf:9)", "Prompt gives 'a wolf' a weight of 9; weights run from 0 to 3"),
    ],
)
async def test_remix_words_are_checked_as_a_prompt_and_nothing_is_queued(flow, service, words, sentence):
    first = await made(flow)
    with pytest.raises(InvalidOption) as refused:
        await flow.remix(ALICE, "vary-subtle", first, 0, words)
    assert str(refused.value).startswith(sentence), str(refused.value)
    with pytest.raises(InvalidOption, match=r"^Remix is for Vary, Zoom Out, Make Square and Pan, not 'upscale-2'"):
        await flow.remix(ALICE, "upscale-2", first, 0, "a wolf")  # as a forged form would send
    assert len(await service.history(ALICE)) == 1


async def test_prefer_saves_an_option_set_that_prompts_then_use(flow, service):
    """``prefer mine --flags`` saves a set; ``--mine`` in a prompt stands for them, the prompt's own flags winning."""
    none_yet = "You have no option sets; `/imagine prefer NAME --flags…` makes one, typed as --NAME in a prompt."
    assert await flow.text(ALICE, "prefer") == Text(none_yet)
    reply = await flow.text(ALICE, "prefer --Mine  --ar 2:3 --steps 4 --no blurry")
    assert reply == Text("--mine is now --ar 2:3 --steps 4 --no blurry; type --mine in a prompt to use it.")
    await flow.text(ALICE, "prefer fast --steps 2")
    assert await flow.text(ALICE, "prefer") == Text(
        "Your option sets:\n--fast  --steps 2\n--mine  --ar 2:3 --steps 4 --no blurry"
    )
    assert await flow.text(ALICE, "prefer mine") == Text("--mine  --ar 2:3 --steps 4 --no blurry")
    assert await flow.text(ALICE, "settings") == Text(
        "Your defaults: none (the model's own); option sets: --fast, --mine"
    )

    started = await flow.imagine(ALICE, "a red fox --mine --steps 6")
    made = await started.job.result()
    request = made.request
    assert (request.prompt, request.negative_prompt, request.steps) == ("a red fox", "blurry", 6)
    assert request.height > request.width
    # Discord's typed options are the prompt's own too.
    typed = await flow.imagine(ALICE, {"prompt": "a grey wolf --mine", "negative": "fog"})
    assert (typed.job.request.negative_prompt, typed.job.request.steps) == ("fog", 4)
    await typed.job.result()

    # A set changes no image made before: the stored request is what ran.
    assert await flow.text(ALICE, "prefer mine none") == Text("--mine is removed.")
    rerolled = await (await flow.text(ALICE, f"reroll #{made.id}")).job.result()  # type: ignore[union-attr]
    assert (rerolled.request.negative_prompt, rerolled.request.steps) == ("blurry", 6)
    with pytest.raises(InvalidOption, match=r"^--mine is not an option"):
        await flow.imagine(ALICE, "a red fox --mine")
    with pytest.raises(InvalidOption) as refused:
        await flow.text(ALICE, "prefer mine none")
    assert str(refused.value) == "Option set --mine is not one of yours (yours: --fast)."
    # Another user's sets are theirs.
    with pytest.raises(InvalidOption, match=r"^--fast is not an option"):
        await flow.imagine(BOB, "a red fox --fast")


async def test_a_suffix_set_comes_with_every_prompt_of_its_user(flow, service):
    """``prefer suffix --flags`` (Midjourney's /prefer suffix): every prompt of the user's takes them, its own
    flags winning; what is stored is the flags, so removing the suffix changes no reroll; others' prompts are theirs."""
    reply = await flow.text(ALICE, "prefer suffix --ar 2:3 --no blurry")
    assert reply == Text("--suffix is now --ar 2:3 --no blurry; every prompt of yours takes it (its own flags win).")
    made = await (await flow.imagine(ALICE, "a red fox --steps 4")).job.result()
    assert (made.request.negative_prompt, made.request.height > made.request.width) == ("blurry", True)
    square = await (await flow.imagine(ALICE, {"prompt": "a grey wolf", "ar": "1:1", "steps": 4})).job.result()
    assert (square.request.width, square.request.negative_prompt) == (square.request.height, "blurry")
    assert (await (await flow.imagine(BOB, "a red fox --steps 4")).job.result()).request.negative_prompt is None
    assert await flow.text(ALICE, "prefer suffix none") == Text("--suffix is removed.")
    rerolled = await (await flow.text(ALICE, f"reroll #{made.id}")).job.result()  # type: ignore[union-attr]
    assert rerolled.request.negative_prompt == "blurry"
    plain = await (await flow.imagine(ALICE, "a red fox --steps 4")).job.result()
    assert plain.request.negative_prompt is None


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("prefer mine --steps 500", "--steps must be from 1 to 100, not 500."),
        ("prefer mine --ar {1:1, 99:1}", "--ar must be WIDTH:HEIGHT between 1:4 and 4:1, like 16:9, not '99:1'."),
        ("prefer mine --mine2", "--mine2 is not an option"),
        ("prefer seed --ar 2:3", "Option set name 'seed' is /imagine's own --seed; choose another."),
    ],
)
async def test_a_set_that_a_request_would_refuse_is_refused_and_nothing_saved(flow, service, text, sentence):
    with pytest.raises(InvalidOption) as refused:
        await flow.text(ALICE, text)
    assert str(refused.value).startswith(sentence)
    assert await service.user_settings.option_sets(ALICE) == {}


async def test_a_set_keeps_a_look_a_style_reference_of_a_previous_image(flow, service):
    """``prefer ink --sref #1 --sw 80``: Midjourney's users keep sref codes in option sets; here, previous images."""
    first = await made(flow)
    reply = await flow.text(ALICE, f"prefer ink --sref #{first} --sw 80")
    assert reply == Text(f"--ink is now --sref #{first} --sw 80; type --ink in a prompt to use it.")
    styled = await (await flow.imagine(ALICE, "a grey wolf --ink --steps 4")).job.result()
    (style,) = styled.request.controlnets
    assert (style.model, style.style, style.weight) == ("tiny-ip-adapter", True, 0.8)
    # The prompt's own --sref (or Discord's style_image) takes the place of the set's; the set's --sw stays.
    second = await made(flow)
    own = await (await flow.imagine(ALICE, f"a grey wolf --ink --sref #{second} #{first}:0.3")).job.result()
    assert [(c.style, c.weight) for c in own.request.controlnets] == [(True, 0.8), (True, 0.3)]
    # Another user's private image is not theirs to use, set or no set.
    await service.user_settings.update(ALICE, {"private": True})
    hidden = await made(flow)
    await flow.text(BOB, f"prefer ink --sref #{hidden}")
    with pytest.raises(NotFound, match=f"^There is no generation #{hidden}"):
        await flow.imagine(BOB, "a grey wolf --ink")


@pytest.mark.parametrize("text", ["prefer sunsets over mountains", "prefer a red fox", "prefer 2 --ar 1:1"])
async def test_prefer_with_words_after_the_name_is_a_prompt(flow, text):
    assert await flow.text(ALICE, text) is None


async def test_resetting_the_defaults_keeps_the_sets_and_forget_deletes_them(flow, service):
    await flow.text(ALICE, "settings steps=20")
    await flow.text(ALICE, "prefer mine --ar 2:3")
    assert await flow.text(ALICE, "settings steps=none") == Text(
        "Your defaults: none (the model's own); option sets: --mine"
    )
    assert await service.user_settings.option_sets(ALICE) == {"mine": "--ar 2:3"}
    await flow.text(ALICE, "forget confirm")
    assert await service.user_settings.option_sets(ALICE) == {}


async def test_forget_asks_first_with_the_chats_own_command(flow):
    """Without confirm, forget only warns, naming the command as this chat types it."""
    reply = await flow.text(ALICE, "forget")
    assert isinstance(reply, Text) and reply.text.endswith("send `/imagine forget confirm` to go ahead.")


async def test_history_lists_the_users_generations_newest_first(flow):
    """`history 1` lists the newest generation only."""
    await made(flow)
    newest = await made(flow)
    reply = await flow.text(ALICE, "history 1")
    assert isinstance(reply, Listing) and [g.id for g in reply.generations] == [newest]


@pytest.mark.parametrize("text", ["history 0", "history 26", "history 999999999"])
async def test_a_history_count_out_of_range_is_refused_not_clamped(flow, text):
    """`history 0` or `history 26` says the range (on Slack too, where words a command cannot take are a prompt)."""
    await made(flow)
    with pytest.raises(InvalidOption) as refused:
        await flow.text(ALICE, text)
    assert str(refused.value) == f"history takes a count from 1 to 25, not {text.split()[1]}."


async def test_admin_is_no_command_where_the_chat_has_none(flow):
    """Without an admin handler (the console), `admin …` is not a command."""
    assert await flow.text(ALICE, "admin audit") is None


async def test_the_delete_button_deletes_for_the_author_only(flow, service):
    """Delete answers Deleted for the author; another user is refused and the image stays."""
    generation_id = await made(flow)
    with pytest.raises(NotAllowed):
        await flow.action(BOB, "delete", generation_id)
    assert await flow.action(ALICE, "delete", generation_id) == Deleted(generation_id)
    with pytest.raises(NotFound):
        await service.details(ALICE, generation_id)


async def test_edit_holds_the_imagine_text_that_makes_the_image_again(flow, service):
    """Edit answers with a form holding the /imagine text (no command word): run unchanged, it makes the same
    request, a variation's too (its image named as the earlier image it came from); an upscale has no such text, so
    no button and one sentence."""
    generation_id = await made(flow)
    reply = await flow.action(BOB, "edit", generation_id)  # anyone who sees it: the new image is theirs
    assert isinstance(reply, EditForm) and reply.generation_id == generation_id
    assert reply.text.startswith("a red fox --model tiny ") and "--seed 7" in reply.text and "--steps 4" in reply.text
    again = await (await service.imagine(reply.text, BOB)).result()
    original = await service.details(ALICE, generation_id)
    assert again.request == original.request
    assert "edit" in service.result_actions(original.request)
    varied = await (await service.vary(ALICE, generation_id, "strong")).result()
    assert "edit" in service.result_actions(varied.request)
    text = (await flow.edit(ALICE, varied.id)).text
    assert f"--image #{generation_id} --strength 0.7" in text
    assert (await (await service.imagine(text, ALICE)).result()).request == varied.request
    upscaled = await (await service.upscale(ALICE, generation_id, 2)).result()
    assert "edit" not in service.result_actions(upscaled.request)
    sentence = f"Edit #{upscaled.id} cannot be written as one /imagine (an upscale, or made from an uploaded image)."
    with pytest.raises(InvalidOption) as refused:
        await flow.action(ALICE, "edit", upscaled.id)
    assert str(refused.value) == sentence


async def test_edit_text_opens_the_form_of_the_latest_or_a_named_image_and_other_words_are_a_prompt(flow):
    first = await made(flow)
    second = await made(flow)
    latest = await flow.text(ALICE, "edit")
    named = await flow.text(ALICE, f"edit #{first}")
    assert isinstance(latest, EditForm) and isinstance(named, EditForm)
    assert (latest.generation_id, named.generation_id) == (second, first)
    assert named.line == f"Change it and send it: /imagine {named.text}"
    assert await flow.text(ALICE, "edit the photo to be blue") is None  # a prompt on Slack
    with pytest.raises(InvalidOption, match=r"^Argument 'the' is not understood; expected '#id'\.$"):
        await flow.text(ALICE, "edit the photo", strict=True)


async def test_an_edit_text_longer_than_a_form_holds_is_refused(flow, service):
    prompt = " ".join(["fox"] * 745)  # 2979 characters (a prompt may have 3000): the flags pass the form's 3000
    long = await (await service.imagine(f"{prompt} --steps 4", ALICE)).result()
    with pytest.raises(
        InvalidOption,
        match=r"^Edit is not offered: #\d+'s /imagine text is \d+ characters, more than a form holds \(3000\)\.$",
    ):
        await flow.action(ALICE, "edit", long.id)


async def test_details_and_show_replies(flow):
    """Details is a text with the parameters; Show lists the author's flagged images (none here)."""
    generation_id = await made(flow)
    details = await flow.action(ALICE, "details", generation_id)
    assert isinstance(details, Text) and "Seed: 7" in details.text
    assert await flow.action(ALICE, "show", generation_id) == Flagged(generation_id, ())


async def test_details_say_when_an_old_generation_reads_its_prompt_as_written(flow):
    """A generation from before weights were read (migration 14) is made again as then: Details says so where the
    prompt has brackets or may pass 77 tokens; a plain short one, or any made since, says nothing of it."""
    note = "made before prompt weights: its brackets are read as words and its prompt ends at CLIP's 77 tokens"
    for prompt, said in [("a (red:1.3) fox", True), ("a fox, " * 60, True), ("a red fox", False)]:
        request = GenerationRequest(prompt=prompt, model="tiny", width=128, height=128, steps=2, seed=7)
        for weighting in (False, True):
            job = await flow.service.submit(request.model_copy(update={"prompt_weighting": weighting}), ALICE)
            details = await flow.action(ALICE, "details", (await job.result()).id)
            assert isinstance(details, Text)
            assert (note in details.text.splitlines()) == (said and not weighting), (prompt, weighting)


async def test_info_text_shows_the_latest_or_a_named_generation(flow):
    """`info` is everything about the user's latest image, `info #id` about that one; never another's private one."""
    with pytest.raises(NotFound, match="earlier image of yours to show; make one with /imagine first"):
        await flow.text(ALICE, "info")
    first = await made(flow)
    job = await flow.service.imagine("a grey wolf --seed 9 --steps 4", ALICE, private=True)
    private = (await job.result()).id
    latest = await flow.text(ALICE, "info")
    assert isinstance(latest, Text) and "a grey wolf" in latest.text and "Seed: 9" in latest.text
    named = await flow.text(ALICE, f"info #{first}")
    assert isinstance(named, Text) and "a red fox" in named.text and "Seed: 7" in named.text
    with pytest.raises(NotFound, match=f"no generation #{private}"):
        await flow.text(BOB, f"info #{private}")
    # a prompt that starts with the word stays a prompt; the console's strict mode names what it takes
    assert await flow.text(ALICE, "info about foxes") is None
    with pytest.raises(InvalidOption, match="'about' is not understood; expected '#id'"):
        await flow.text(ALICE, "info about foxes", strict=True)


def test_refusal_shows_a_bot_error_as_it_is_and_logs_anything_else(caplog):
    """A BotError is its own sentence; any other exception is the generic one, with the traceback logged."""
    assert refusal(InvalidOption("steps", "must be from 1 to 100")).startswith("✖ Steps must be")
    with caplog.at_level(logging.ERROR, logger="bot.chat"):
        assert refusal(RuntimeError("secret detail")) == f"✖ {GENERIC_ERROR}"
    assert [record.exc_info is not None for record in caplog.records] == [True]


def test_queue_text_says_where_each_job_is():
    """The queue line counts waiting jobs and shows the user's own with their place."""
    assert queue_text(0, []) == "0 waiting in all.\nYou have nothing queued."
    job = Job(3, ALICE, GenerationRequest(prompt="a red fox", model="tiny", seed=1), position_of=lambda job: 2)
    assert queue_text(5, [job]) == "5 waiting in all.\n#3 · position 2 · a red fox"


async def test_updates_skip_progress_within_the_interval_and_end_with_the_failure():
    """Progress inside the interval is not an edit; previews come every other allowed edit; a failure ends it."""
    job = Job(9, ALICE, GenerationRequest(prompt="a red fox", model="tiny", seed=1))
    now = iter([0.0, 1.0, 1.2, 2.0, 2.6, 3.0, 3.2]).__next__
    job.emit(JobEvent("queued", position=1))
    for step in range(1, 7):
        job.emit(JobEvent("progress", progress=Progress("base", step, 6, preview=b"p%d" % step)))
    job.emit(JobEvent("failed", message="The GPU is busy."))
    seen = [update async for update in updates(job, interval=0.5, preview_every=2, clock=now)]
    assert [u.event.progress.step if u.event.progress else u.event.kind for u in seen] == [
        "queued",
        1,
        3,
        4,
        6,
        "failed",
    ]
    assert [u.preview for u in seen] == [None, b"p1", b"p3", None, b"p6", None]
    assert seen[-1].final and seen[-1].text == failure_line(job, "The GPU is busy.") == "✖ #9 · The GPU is busy."


@settings(max_examples=500, deadline=None)
@given(option=st.text(max_size=40), value=st.text(max_size=5000))
def test_every_refusal_is_one_printable_line_within_the_limit(option, value):
    """Whatever a user typed, the sentence echoing it is one printable line of at most 300 characters."""
    for error in (InvalidOption(option or "steps", f"must be a number, not '{value}'"), NotFound(value)):
        text = str(error)
        assert len(text) <= MAX_MESSAGE
        assert text.isprintable()
        assert refusal(error) == f"✖ {text}"


@pytest.mark.parametrize(
    ("pairs", "sentence"),
    [
        ("steps=abc", "steps must be a whole number, not 'abc'."),
        ("steps=30.7", "steps must be a whole number, not '30.7'."),
        ("cfg=banana", "cfg must be a number, not 'banana'."),
        ("refiner_percent=x", "refiner_percent must be a whole number, not 'x'."),
        ("width=abc height=512", "width must be a whole number, not 'abc'."),
        ("width=768", "Width and height are saved together, like width=1024 height=768."),
        ("private=maybe", "private must be true or false, not 'maybe'."),
        ("batching=xyz", "batching must be true or false, not 'xyz'."),
    ],
)
async def test_a_setting_of_the_wrong_kind_is_refused_and_nothing_is_stored(flow, service, pairs, sentence):
    """`settings steps=abc` and its kin are one sentence naming the setting; the saved defaults stay as they were."""
    with pytest.raises(InvalidOption) as refused:
        await flow.text(ALICE, f"settings {pairs}")
    assert str(refused.value) == sentence
    assert await service.user_settings.get(ALICE) == {}

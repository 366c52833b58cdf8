"""The Discord bot over real sockets: discord.py ↔ the fake Discord, with the recording backend."""

from __future__ import annotations

import asyncio

from bot.actions import encode_action
from tests.adapters.discord.conftest import running_bot
from tests.fakes.backend import FakeBackend
from tests.fakes.discord import FakeDiscord

EPHEMERAL = 64


def _custom_ids(message) -> list[str]:
    return [button["custom_id"] for row in message.components for button in row.get("components", [])]


async def _finished(fake: FakeDiscord, message, timeout: float = 10.0):
    """Wait until a message shows a finished image (its buttons are the result buttons)."""
    await fake.wait_for(
        lambda: any(i.startswith("ib:reroll:") for i in _custom_ids(message)) or "✖" in (message.content or ""), timeout
    )
    return message


async def _reply_of(interaction):
    """Return the message an interaction's answer created, once it has answered."""
    await interaction.response()
    assert interaction.original is not None
    return interaction.original


async def _imagine(fake: FakeDiscord, options: dict, **who):
    interaction = await fake.slash("imagine", options, **who)
    await interaction.response()
    await fake.wait_for(lambda: interaction.original is not None)
    return interaction, await _finished(fake, interaction.original)


async def test_commands_are_synced_with_their_options(running):
    """Every command is registered, with the typed /imagine options and their ranges and choices."""
    commands = {command["name"]: command for command in running.fake.commands}
    assert set(commands) == {
        "imagine",
        "blend",
        "reroll",
        "refine",
        "upscale",
        "vary",
        "zoom",
        "pan",
        "history",
        "info",
        "edit",
        "cancel",
        "queue",
        "loras",
        "wildcards",
        "settings",
        "prefer",
        "imagine-admin",
        "forget",
        "Imagine from this image",  # message context menus
        "Use as ControlNet guide",
        "Use as style reference",
        "PNG info",
        "Describe image",
        "describe",
        "gallery",
        "square",
        "region",
    }
    options = {option["name"]: option for option in commands["imagine"]["options"]}
    assert list(options)[:2] == ["prompt", "negative"]
    assert options["steps"]["min_value"] == 1 and options["steps"]["max_value"] == 100
    assert options["refiner"]["min_value"] == 0 and options["refiner"]["max_value"] == 99
    assert options["count"]["max_value"] == 4
    assert options["lora"]["autocomplete"] and options["model"]["autocomplete"] and options["style"]["autocomplete"]
    assert options["seed"]["type"] == 3  # a string: Discord integers stop at 2**53
    assert {"name": "1216×832 (19:13)", "value": "1216x832"} in options["size"]["choices"]
    assert "DPM++ 2M Karras" in [choice["value"] for choice in options["scheduler"]["choices"]]


async def test_imagine_defers_then_shows_progress_then_the_image(running):
    """/imagine is deferred at once; the reply moves from queued through progress to the image and buttons."""
    interaction, message = await _imagine(running.fake, {"prompt": "a red fox", "seed": "7", "steps": 4, "refiner": 50})
    assert (await interaction.response())["type"] == 5  # deferred, "thinking…"
    texts = [edit["content"] for edit in message.edits if edit.get("content")]
    assert any("⏳ #1 · seed 7" in text for text in texts)
    assert any("base" in text and "2/2" in text for text in texts)
    assert any("refiner" in text and "2/2" in text for text in texts)
    # the image is the stored file, parameters chunk and all
    generation = await running.service.details(running.who(running.fake.alice), 1)
    (attachment,) = message.attachments
    assert attachment.data == (running.data_dir / generation.images[0].path).read_bytes()
    (embed,) = message.embeds
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Seed"] == "7"
    assert fields["Steps"] == "4 (2 base + 2 refiner)"
    assert fields["Refiner"] == "tiny-refiner from 50 %"
    assert embed["image"]["url"] == f"attachment://{attachment.filename}"
    assert "The refiner starts at 50 %; it works best from 85–90 %." in fields["⚠ Notes"].splitlines()
    made = ["reroll", "refine", "vary-subtle", "vary-strong", "edit", "upscale-2", "upscale-4"]
    about = ["pan-left", "pan-right", "pan-up", "pan-down", "details", "delete"]
    assert _custom_ids(message) == [encode_action(a, 1) for a in made + about]
    assert running.backend.requests[0].seed == 7


async def test_bad_options_get_one_private_sentence_and_nothing_is_queued(running):
    interaction = await running.fake.slash("imagine", {"prompt": "a red fox", "lora": "pixel-arts:0.8"})
    await running.fake.wait_for(lambda: interaction.followups)
    (reply,) = interaction.followups
    assert reply.ephemeral
    assert reply.content == "✖ lora 'pixel-arts' is not in the catalog; did you mean 'pixel-art'?"
    assert interaction.original.deleted
    assert running.backend.requests == []
    assert await running.service.history(running.who(running.fake.alice)) == []


async def test_button_reroll_makes_a_new_image_with_a_new_seed(running):
    _, first = await _imagine(running.fake, {"prompt": "a red fox", "seed": "7", "steps": 2})
    click = await running.fake.click(first.id, encode_action("reroll", 1))
    assert (await click.response())["type"] == 4
    second = await _finished(running.fake, await _reply_of(click))
    fields = {field["name"]: field["value"] for field in second.embeds[0]["fields"]}
    assert fields["Seed"] == "100"
    assert [r.seed for r in running.backend.requests] == [7, 100]
    assert second.attachments[0].data != first.attachments[0].data


async def test_refine_button_keeps_the_seed_and_adds_the_refiner(running):
    _, first = await _imagine(running.fake, {"prompt": "a red fox", "seed": "7", "steps": 20})
    click = await running.fake.click(first.id, encode_action("refine", 1))
    refined = await _finished(running.fake, await _reply_of(click))
    fields = {field["name"]: field["value"] for field in refined.embeds[0]["fields"]}
    assert fields["Seed"] == "7"
    assert fields["Steps"] == "20 (17 base + 3 refiner)"


def _text_inputs(modal: dict) -> list[dict]:
    """Return a modal's text inputs, in or out of their rows and labels."""
    found = []
    for component in modal["components"]:
        inner = component.get("components") or [component.get("component") or {}]
        found += [item for item in inner if item.get("type") == 4]
    return found


async def test_edit_opens_the_imagine_text_and_makes_a_new_image_from_the_changed_text(running):
    """✏️ Edit opens a form holding the image's /imagine text; sent with another prompt, the same settings make a new
    image (the original stays). A flag the text breaks is one private sentence and nothing is queued."""
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "seed": "7", "steps": 4})
    click = await fake.click(first.id, encode_action("edit", 1))
    opened = await click.response()
    assert opened["type"] == 9 and opened["data"]["title"] == "Edit #1 and imagine"
    (field,) = _text_inputs(opened["data"])
    text = field["value"]
    assert text.startswith("a red fox --model tiny ") and "--seed 7" in text and "--steps 4" in text
    submitted = await fake.submit_modal(click, {"Prompt and flags": text.replace("a red fox", "a blue fox", 1)})
    await fake.wait_for(lambda: submitted.original is not None)
    await _finished(fake, submitted.original)
    first_request, edited = running.backend.requests
    assert edited == first_request.model_copy(update={"prompt": "a blue fox"})
    click = await fake.click(first.id, encode_action("edit", 1))
    broken = await fake.submit_modal(click, {"Prompt and flags": text.replace("--steps 4", "--steps many")})
    await fake.wait_for(lambda: broken.followups)
    assert broken.followups[0].ephemeral and broken.followups[0].content.startswith("✖ --steps must be")
    assert len(running.backend.requests) == 2
    # /edit opens the same form, of the latest image or a named one.
    for options, ref in (({}, "#2"), ({"id": 1}, "#1")):
        opened = await (await fake.slash("edit", options)).response()
        assert opened["type"] == 9 and opened["data"]["title"] == f"Edit {ref} and imagine"


async def test_in_remix_mode_vary_opens_the_prompt_and_runs_on_the_image_with_the_new_words(running):
    """/settings remix:True (Midjourney's Remix): 🌪️ Vary (Strong) first opens a form holding the prompt; sent with new
    words, the image is varied with them. A flag in the words is one private sentence; a reaction varies at once."""
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "seed": "7", "steps": 4})
    saved = await (await fake.slash("settings", {"remix": True})).response()
    assert "remix" in saved["data"]["content"]
    click = await fake.click(first.id, encode_action("vary-strong", 1))
    opened = await click.response()
    assert opened["type"] == 9 and opened["data"]["title"] == "Remix: 🌪️ Vary (Strong) #1"
    (field,) = _text_inputs(opened["data"])
    assert field["value"] == "a red fox"
    submitted = await fake.submit_modal(click, {"Prompt": "a grey wolf"})
    await fake.wait_for(lambda: submitted.original is not None)
    await _finished(fake, submitted.original)
    made, varied = running.backend.requests
    assert (varied.prompt, varied.init_image is not None, varied.steps) == ("a grey wolf", True, made.steps)
    click = await fake.click(first.id, encode_action("vary-strong", 1))
    flagged = await fake.submit_modal(click, {"Prompt": "a grey wolf --ar 16:9"})
    body = await flagged.response()
    assert body["type"] == 4 and body["data"]["flags"] & EPHEMERAL
    assert body["data"]["content"].startswith("✖ Remix changes the prompt's words only, not '--ar'")
    assert len(running.backend.requests) == 2
    before = set(fake.messages)
    await fake.react(first.id, "🌿")
    await fake.wait_for(lambda: len(running.backend.requests) == 3)
    assert running.backend.requests[-1].prompt == "a red fox" and set(fake.messages) != before


async def test_someone_else_cannot_reroll_refine_delete_or_cancel(running):
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "steps": 2})
    for action in ("reroll", "refine", "delete"):
        click = await fake.click(first.id, encode_action(action, 1), user=fake.bob)
        body = await click.response()
        assert body["type"] == 4
        assert body["data"]["flags"] & EPHEMERAL
        assert body["data"]["content"] == f"✖ Only the author of this image can {action} it."
    assert len(running.backend.requests) == 1


async def test_reaction_reroll_posts_a_new_image_under_the_result(running):
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "seed": "7", "steps": 2})
    before = set(fake.messages)
    await fake.react(first.id, "🔄")
    await fake.wait_for(lambda: set(fake.messages) - before)
    (new_id,) = set(fake.messages) - before
    reply = await _finished(fake, fake.messages[new_id])
    fields = {field["name"]: field["value"] for field in reply.embeds[0]["fields"]}
    assert fields["Seed"] == "100"
    assert [r.seed for r in running.backend.requests] == [7, 100]


async def test_someone_elses_reaction_does_nothing(running):
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "steps": 2})
    await fake.react(first.id, "🔄", user=fake.bob)
    await asyncio.sleep(0.3)
    assert len(running.backend.requests) == 1


async def test_open_reroll_lets_others_reroll_as_themselves(running):
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "steps": 2})
    refused = await fake.slash("imagine-admin", {"open_reroll": True}, user=fake.bob, permissions=0)
    assert (await refused.response())["data"]["content"] == "✖ Only server managers can change the server's settings."
    opened = await fake.slash("imagine-admin", {"open_reroll": True})
    assert (await opened.response())["data"]["content"] == "This server: rerolls: everyone."
    click = await fake.click(first.id, encode_action("reroll", 1), user=fake.bob)
    await _finished(fake, await _reply_of(click))
    generation = (await running.service.history(running.who(running.fake.bob)))[0]
    assert generation.parent_id == 1 and generation.user_id == str(fake.bob["id"])


async def test_delete_button_removes_image_and_message(running):
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "steps": 2})
    path = running.data_dir / (await running.service.history(running.who(running.fake.alice)))[0].images[0].path
    click = await fake.click(first.id, encode_action("delete", 1))
    body = await click.response()
    assert body["type"] == 7
    assert body["data"]["content"] == "🗑 #1 was deleted by its author."
    assert not path.exists()


async def test_cancel_button_stops_a_queued_job(running):
    fake = running.fake
    running.backend.gate = asyncio.Event()
    interaction = await fake.slash("imagine", {"prompt": "a red fox"})
    await fake.wait_for(lambda: interaction.original is not None and "⏳" in (interaction.original.content or ""))
    assert _custom_ids(interaction.original) == [encode_action("cancel", 1)]
    click = await fake.click(interaction.original.id, encode_action("cancel", 1))
    assert (await click.response())["data"]["content"] == "⏹ Cancelling #1."
    running.backend.gate.set()
    await fake.wait_for(lambda: interaction.original.content == "✖ #1 · The generation was cancelled.")


async def test_a_prompt_with_choices_follows_each_job_in_a_message_of_its_own(running):
    """``a {red, blue} fox``: the deferred reply follows the first job, a follow-up message the second; each
    ends as its own image and buttons. Private choices stay private."""
    fake = running.fake
    interaction, first = await _imagine(fake, {"prompt": "a {red, blue} fox", "negative": "{blur, text}", "steps": 2})
    await fake.wait_for(lambda: len(interaction.followups) == 3)
    rest = [await _finished(fake, message) for message in interaction.followups]
    assert [_custom_ids(message)[0] for message in (first, *rest)] == [encode_action("reroll", n) for n in (1, 2, 3, 4)]
    assert all(message.attachments and not message.ephemeral for message in (first, *rest))
    made = [(request.prompt, request.negative_prompt) for request in running.backend.requests]
    assert made == [("a red fox", "blur"), ("a red fox", "text"), ("a blue fox", "blur"), ("a blue fox", "text")]
    private, _ = await _imagine(fake, {"prompt": "a {grey, white} owl", "steps": 2, "private": True})
    await fake.wait_for(lambda: private.followups)
    assert all(message.ephemeral for message in private.followups)
    # A follow-up Discord refuses: that job is cancelled, not made unseen; the others are made.
    fake.followup_faults = 1
    running.backend.gate = asyncio.Event()  # nothing is made until the second job's message has failed
    interaction = await fake.slash("imagine", {"prompt": "a {black, brown} cat", "steps": 2})
    who = running.who(fake.alice)

    async def statuses() -> dict[str, str]:
        return {g.request.prompt: g.status for g in await running.service.history(who, limit=2)}

    async with asyncio.timeout(10):
        while (await statuses()).get("a brown cat") != "cancelled":
            await asyncio.sleep(0.01)
    running.backend.gate.set()
    await _finished(fake, await _reply_of(interaction))
    assert await statuses() == {"a black cat": "done", "a brown cat": "cancelled"}


async def test_the_tile_option_makes_a_seamless_image_and_the_embed_says_so(running):
    """/imagine's typed `tile` (a boolean, as Discord offers it) reaches the request; the PNG says Tiling."""
    _, message = await _imagine(running.fake, {"prompt": "a stone wall", "steps": 2, "tile": True})
    assert running.backend.requests[-1].tiling
    assert b"Tiling: True" in message.attachments[0].data
    (embed,) = message.embeds
    assert {field["name"]: field["value"] for field in embed["fields"]}["Tiling"] == "seamless: it repeats edge to edge"
    await _imagine(running.fake, {"prompt": "a stone wall", "steps": 2, "tile": False})
    assert not running.backend.requests[-1].tiling


async def test_private_imagine_is_ephemeral(running):
    interaction, message = await _imagine(running.fake, {"prompt": "a red fox", "steps": 2, "private": True})
    body = await interaction.response()
    assert body["data"]["flags"] & EPHEMERAL
    assert message.ephemeral and message.attachments


async def test_a_typed_variation_keeps_the_seed_and_draws_a_variation_seed(running):
    await _imagine(running.fake, {"prompt": "a red fox", "seed": "7", "steps": 2, "variation": 0.25})
    (request,) = running.backend.requests
    assert (request.seed, request.variation_strength) == (7, 0.25) and request.variation_seed is not None


async def test_lora_autocomplete_searches_the_whole_list(running):
    choices = await running.fake.autocomplete("imagine", {"prompt": "x", "lora": "pixel-art:0.8, toy"}, "lora")
    assert choices == [{"name": "pixel-art:0.8, toy-face — Toy figure faces", "value": "pixel-art:0.8, toy-face"}]


async def test_the_loras_and_wildcards_searches_are_autocompleted(fake, backend, tmp_path):
    """`/loras search:` offers the LoRAs here, `/wildcards search:` the operator's wildcards with their choices."""
    library = {"animal": ("fox", "owl", "hare", "lynx"), "colors/warm": ("amber",), "weather": ("rain",)}
    async with running_bot(fake, backend, tmp_path, wildcards=library):
        assert await fake.autocomplete("wildcards", {"search": "__a"}, "search") == [
            {"name": "__animal__ (4): fox, owl, hare", "value": "animal"},
            {"name": "__colors/warm__ (1): amber", "value": "colors/warm"},
            {"name": "__weather__ (1): rain", "value": "weather"},
        ]
        assert await fake.autocomplete("wildcards", {"search": "zebra"}, "search") == []
        choices = await fake.autocomplete("loras", {"search": "toy"}, "search")
        assert choices == [{"name": "toy-face — Toy figure faces", "value": "toy-face"}]


async def test_a_style_is_offered_as_typed_and_puts_its_words_around_the_prompt(running):
    choices = await running.fake.autocomplete("imagine", {"prompt": "x", "style": "cine"}, "style")
    assert choices == [{"name": "cinematic — a still from a film: shallow focus, film grain", "value": "cinematic"}]
    await _imagine(running.fake, {"prompt": "a red fox", "style": "line-art", "negative": "blurry", "steps": 2})
    (request,) = running.backend.requests
    assert request.prompt == "line art drawing of a red fox, black ink on white, clean outlines, minimal"
    assert request.negative_prompt == "blurry, colour, shading, photo, 3d render"


async def test_history_info_queue_loras_and_settings(running):
    fake = running.fake
    await _imagine(fake, {"prompt": "a red fox", "seed": "7", "steps": 2})

    async def reply(name, options=None):
        interaction = await fake.slash(name, options or {})
        body = await interaction.response()
        assert body["data"]["flags"] & EPHEMERAL
        return body["data"]["content"]

    assert reply_line_has(await reply("history"), "`#1` done · seed `7` · tiny · a red fox")
    assert "Seed: 7" in await reply("info", {"id": 1})
    assert "Seed: 7" in await reply("info")  # the latest
    assert await reply("info", {"id": 9}) == "✖ There is no generation #9."
    assert await reply("queue") == "0 waiting in all.\nYou have nothing queued."
    assert "`pixel-art` — Pixel art style (trigger: pixel art)" in await reply("loras", {"search": "pix"})
    assert await reply("wildcards") == (
        "This bot has no wildcards: its operator adds them as files of choices, one a line."
    )
    assert await reply("settings", {"steps": 12, "private": True}) == "Your defaults: private=True, steps=12"
    assert await reply("settings", {"steps": 500}) == "✖ steps must be from 1 to 100, not 500."
    strengths = {"scheduler": "Euler a", "cfg": 5.5, "vary_subtle": 0.2, "upscale_strength": 0.45}
    assert await reply("settings", strengths) == (
        "Your defaults: cfg=5.5, private=True, scheduler=Euler a, steps=12, upscale_strength=0.45, vary_subtle=0.2"
    )
    assert (
        await reply("settings", {"vary_strong": 0.0})
        == "✖ vary_strong must be a strength over 0, at most 1, not '0.0'."
    )
    assert await reply("settings", {"reset": True}) == "Your defaults: none (the model's own)"


async def test_prefer_saves_a_set_that_imagine_then_reads(running):
    """/prefer name:mine flags:… then /imagine's prompt with --mine; the typed steps win over the set's."""
    fake = running.fake

    async def reply(options):
        body = await (await fake.slash("prefer", options)).response()
        assert body["data"]["flags"] & EPHEMERAL
        return body["data"]["content"]

    saved = await reply({"name": "mine", "flags": "--ar 2:3 --steps 4 --no blurry"})
    assert saved == "--mine is now --ar 2:3 --steps 4 --no blurry; type --mine in a prompt to use it."
    assert await reply({"name": "ar", "flags": "--steps 4"}) == (
        "✖ Option set name 'ar' is /imagine's own --ar; choose another."
    )
    assert await reply({}) == "Your option sets:\n--mine  --ar 2:3 --steps 4 --no blurry"
    assert await fake.autocomplete("prefer", {"name": "mi"}, "name") == [{"name": "--mine", "value": "mine"}]
    await _imagine(fake, {"prompt": "a red fox --mine", "steps": 2})
    (request,) = running.backend.requests
    assert (request.negative_prompt, request.steps, request.height > request.width) == ("blurry", 2, True)
    assert await reply({"name": "mine", "flags": "none"}) == "--mine is removed."


def reply_line_has(text: str, line: str) -> bool:
    return line in text.splitlines()


async def test_works_in_threads_and_direct_messages(running):
    fake = running.fake
    _, in_thread = await _imagine(fake, {"prompt": "a red fox", "steps": 2}, channel_id=fake.thread_id)
    assert in_thread.channel_id == fake.thread_id and in_thread.attachments
    _, in_dm = await _imagine(fake, {"prompt": "a red fox", "steps": 2}, dm=True)
    assert in_dm.attachments


async def test_image_over_the_upload_limit_is_converted(running):
    _, message = await _imagine(
        running.fake, {"prompt": "a red fox", "steps": 2, "size": "1024x1024"}, attachment_size_limit=1500
    )
    (attachment,) = message.attachments
    assert attachment.filename.endswith(".webp")
    assert len(attachment.data) <= 1500


async def test_backend_failure_turns_the_reply_into_the_reason(running):
    running.backend.fail_with = "the GPU is on fire"
    interaction = await running.fake.slash("imagine", {"prompt": "a red fox"})
    await running.fake.wait_for(
        lambda: (
            interaction.original is not None
            and interaction.original.content == "✖ #1 · The fake backend could not make the image: the GPU is on fire."
        )
    )


async def test_previews_show_while_the_image_is_made_and_give_way_to_it(running):
    """A backend's latent previews are attached to progress edits; the result replaces them."""
    running.backend.preview_every = 1
    _, message = await _imagine(running.fake, {"prompt": "a red fox", "steps": 3})
    during = [edit for edit in message.edits if "🎨" in (edit.get("content") or "")]
    assert any("preview.webp" in edit["attachments"] for edit in during)
    assert [attachment.filename for attachment in message.attachments] == ["imagebot-1-0.png"]


async def test_cross_reaction_deletes_the_image_and_its_message(running):
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "steps": 2})
    path = running.data_dir / (await running.service.history(running.who(fake.alice)))[0].images[0].path
    await fake.react(first.id, "❌", user=fake.bob)
    await asyncio.sleep(0.3)
    assert path.exists() and not first.deleted
    await fake.react(first.id, "❌")
    await fake.wait_for(lambda: first.deleted)
    assert not path.exists()
    assert await running.service.history(running.who(fake.alice)) == []


async def test_a_job_running_at_a_restart_is_posted_in_its_channel_when_done(fake, tmp_path):
    """The old interaction expired with the old process: the resumed image comes as a new channel message."""
    busy = FakeBackend()
    busy.gate = asyncio.Event()  # still running when the bot stops
    async with running_bot(fake, busy, tmp_path):
        interaction = await fake.slash("imagine", {"prompt": "a red fox", "seed": "7", "steps": 2})
        await interaction.response()
        await fake.wait_for(lambda: busy.requests)
    before = set(fake.messages)
    async with running_bot(fake, FakeBackend(), tmp_path):
        await fake.wait_for(lambda: set(fake.messages) - before)
        (new_id,) = set(fake.messages) - before
        message = await _finished(fake, fake.messages[new_id])
    assert message.channel_id == interaction.channel_id
    assert "resumed after a restart" in message.edits[0]["content"]
    assert message.allowed_mentions[0] == {"parse": ["users"]}  # its author is pinged, no one else
    fields = {field["name"]: field["value"] for field in message.embeds[0]["fields"]}
    assert fields["Seed"] == "7"
    assert _custom_ids(message)[0] == encode_action("reroll", 1)


async def test_server_managers_ban_words_and_a_banned_prompt_queues_nothing(running):
    fake = running.fake
    refused = await fake.slash("imagine-admin", {"ban": "gore"}, user=fake.bob, permissions=0)
    assert (await refused.response())["data"]["content"] == "✖ Only server managers can change the server's settings."
    banned = await fake.slash("imagine-admin", {"ban": "gore", "max_steps": 20, "models": "tiny"})
    assert (await banned.response())["data"]["content"] == (
        "This server: rerolls: the author only; 1 banned word rule; models: tiny; at most 20 steps."
    )
    interaction = await fake.slash("imagine", {"prompt": "a G0RÉ scene"}, user=fake.bob)
    await fake.wait_for(lambda: interaction.followups)
    (reply,) = interaction.followups
    assert reply.ephemeral and reply.content == "✖ This request is not allowed here (banned word rule 1)."
    interaction = await fake.slash("imagine", {"prompt": "a red fox", "model": "sdxl"}, user=fake.bob)
    await fake.wait_for(lambda: interaction.followups)
    assert interaction.followups[0].content == "✖ Model 'sdxl' is not allowed here (allowed: tiny)."
    assert running.backend.requests == []
    unbanned = await fake.slash("imagine-admin", {"unban": "1", "max_steps": 0, "models": "all"})
    assert (await unbanned.response())["data"]["content"] == "This server: rerolls: the author only."


async def test_a_servers_default_model_is_set_with_imagine_admin_and_autocompleted(running):
    fake = running.fake
    choices = await fake.autocomplete("imagine-admin", {"default_model": "sdxl-tu"}, "default_model")
    assert [choice["value"] for choice in choices] == ["sdxl-turbo"]
    ruled = await fake.slash("imagine-admin", {"default_model": "sdxl-turbo"})
    assert (await ruled.response())["data"]["content"] == (
        "This server: rerolls: the author only; default model: sdxl-turbo."
    )
    await _imagine(fake, {"prompt": "a red fox", "steps": 4}, user=fake.bob)
    (request,) = running.backend.requests
    assert request.model == "sdxl-turbo"


async def test_member_quota_and_the_audit_log(running):
    fake = running.fake
    ruled = await fake.slash("imagine-admin", {"member_quota": 1, "ban": "gore"})
    assert (await ruled.response())["data"]["content"].endswith("; 1 image a member a day.")
    await _imagine(fake, {"prompt": "a red fox", "steps": 2}, user=fake.bob)
    second = await fake.slash("imagine", {"prompt": "a grey wolf", "steps": 2}, user=fake.bob)
    await fake.wait_for(lambda: second.followups)
    assert second.followups[0].content.startswith("✖ You have made your 1 image for today in this server;")
    blocked = await fake.slash("imagine", {"prompt": "gore"})
    await fake.wait_for(lambda: blocked.followups)
    refused = await fake.slash("imagine-admin", {"audit": True}, user=fake.bob, permissions=0)
    assert (await refused.response())["data"]["content"] == "✖ Only server managers can read the server's audit log."
    log = await fake.slash("imagine-admin", {"audit": True})
    lines = (await log.response())["data"]["content"].splitlines()
    bob, alice = f"<@{fake.bob['id']}>", f"<@{fake.alice['id']}>"
    assert [line.split(" · ", 1)[1] for line in lines] == [
        f"{alice} · blocked (banned word rule 1)",
        f"{bob} · generate #1",
        f"{alice} · rules (banned=('gore',), user_daily_quota=1)",
    ]


async def test_forget_asks_first_then_removes_rows_and_files(running):
    fake = running.fake
    await _imagine(fake, {"prompt": "a red fox", "steps": 2})
    (generation,) = await running.service.history(running.who(fake.alice))
    path = running.data_dir / generation.images[0].path
    asked = await fake.slash("forget", {})
    assert (await asked.response())["data"]["content"] == (
        "This deletes all your images, their seeds and history, and your settings, for good;"
        " run `/forget confirm:True` to go ahead."
    )
    assert path.exists()
    done = await fake.slash("forget", {"confirm": True})
    assert (await done.response())["data"]["content"] == "Forgotten: 1 generation, their images, and your settings."
    assert not path.exists() and await running.service.history(running.who(fake.alice)) == []


async def test_gallery_says_privately_when_the_operator_has_not_turned_it_on(running):
    """/gallery on a bot without IMAGEBOT_GALLERY_PORT: one private sentence naming the setting."""
    fake = running.fake
    asked = await fake.slash("gallery", {})
    answer = await asked.response()
    assert "IMAGEBOT_GALLERY_PORT" in answer["data"]["content"] and answer["data"]["flags"] & 64


async def test_a_flagged_image_is_posted_as_a_spoiler_and_kept_out_of_the_embed(running):
    """The safety check's flag makes the attachment a SPOILER_ file, which the embed does not show."""
    running.backend.nsfw_seeds = {7}
    _, message = await _imagine(running.fake, {"prompt": "a red fox", "seed": 7, "steps": 2})
    (attachment,) = message.attachments
    assert attachment.filename.startswith("SPOILER_imagebot-")
    assert "image" not in message.embeds[0]
    (generation,) = await running.service.history(running.who(running.fake.alice))
    assert [image.nsfw for image in generation.images] == [True]


async def test_a_withholding_server_replaces_a_flagged_image_by_a_sentence(running):
    """With flagged:withhold, only the sentence and the embed are posted, no attachment."""
    fake = running.fake
    ruled = await fake.slash("imagine-admin", {"flagged": "withhold"})
    assert (await ruled.response())["data"]["content"].endswith("; flagged images: withhold.")
    running.backend.nsfw_seeds = {7}
    _, message = await _imagine(fake, {"prompt": "a red fox", "seed": 7, "steps": 2})
    assert message.attachments == []
    assert message.content == (
        "🔞 The image was withheld: the safety check flagged it, and this server does not show such images."
    )
    # Of two images, the withheld one gets no "Image 2" button: what it would offer could only be refused.
    _, pair = await _imagine(fake, {"prompt": "two foxes", "seed": 6, "count": 2, "steps": 2})
    assert len(pair.attachments) == 1
    assert [button["custom_id"] for button in pair.components[-1]["components"]] == ["ib:pick:2"]


async def test_adult_prompts_are_refused_outside_age_restricted_channels(running):
    """An explicit prompt queues nothing in a normal channel, and runs in an age-restricted one."""
    fake = running.fake
    refused = await fake.slash("imagine", {"prompt": "a NÜD3 portrait"})
    await fake.wait_for(lambda: refused.followups)
    assert refused.followups[0].content == (
        "✖ This request is not allowed here (adult content is only allowed in age-restricted channels)."
    )
    assert running.backend.requests == []
    await fake.slash("imagine-admin", {"flagged": "allow"})
    running.backend.nsfw_seeds = {7}
    interaction = await fake.slash(
        "imagine", {"prompt": "a nude portrait", "seed": 7, "steps": 2}, channel_id=fake.adult_channel_id
    )
    await fake.wait_for(lambda: interaction.original is not None)
    message = await _finished(fake, interaction.original)
    # flagged:allow shows a flagged image plainly, but only in an age-restricted channel.
    (attachment,) = message.attachments
    assert not attachment.filename.startswith("SPOILER_")


async def test_a_reaction_reroll_in_an_age_restricted_channel_keeps_its_flag(running):
    """The reaction's channel is age-restricted too: with flagged:allow its flagged image is not a spoiler."""
    fake = running.fake
    await fake.slash("imagine-admin", {"flagged": "allow"})
    running.backend.nsfw_seeds = {7, 100}
    _, first = await _imagine(
        fake, {"prompt": "a nude portrait", "seed": 7, "steps": 2}, channel_id=fake.adult_channel_id
    )
    before = set(fake.messages)
    await fake.react(first.id, "🔄")
    await fake.wait_for(lambda: set(fake.messages) - before)
    (new_id,) = set(fake.messages) - before
    reply = await _finished(fake, fake.messages[new_id])
    (attachment,) = reply.attachments
    assert [r.seed for r in running.backend.requests] == [7, 100]
    assert not attachment.filename.startswith("SPOILER_")


async def test_a_blocked_lora_is_refused_with_a_sentence_and_nothing_queued(running):
    """blocked_loras is a denylist beside the allowlist; 'none' lifts it."""
    fake = running.fake
    blocked = await fake.slash("imagine-admin", {"blocked_loras": "tiny-lora"})
    assert (await blocked.response())["data"]["content"] == (
        "This server: rerolls: the author only; blocked LoRAs: tiny-lora."
    )
    refused = await fake.slash("imagine", {"prompt": "a red fox", "lora": "tiny-lora"})
    await fake.wait_for(lambda: refused.followups)
    assert refused.followups[0].content == "✖ Lora 'tiny-lora' is not allowed here."
    assert running.backend.requests == []
    await fake.slash("imagine-admin", {"blocked_loras": "none"})
    await _imagine(fake, {"prompt": "a red fox", "lora": "tiny-lora", "steps": 2})
    assert len(running.backend.requests) == 1


async def test_the_bot_answers_only_in_the_channels_the_server_enables(running):
    """With channels set, /imagine elsewhere gets one sentence and nothing is queued."""
    fake = running.fake
    refused = await fake.slash("imagine-admin", {"channels": "here"}, user=fake.bob, permissions=0)
    assert (await refused.response())["data"]["content"].startswith("✖ Only server managers can change")
    enabled = await fake.slash("imagine-admin", {"channels": "here", "max_size": "512x512", "loras": "tiny-lora"})
    assert (await enabled.response())["data"]["content"] == (
        "This server: rerolls: the author only; LoRAs: tiny-lora; at most 262144 pixels an image; answers in 1 channel."
    )
    elsewhere = await fake.slash("imagine", {"prompt": "a red fox"}, channel_id=fake.adult_channel_id)
    await fake.wait_for(lambda: elsewhere.followups)
    assert elsewhere.followups[0].content == (
        "✖ Image generation is not enabled in this channel; server managers choose where it is."
    )
    large = await fake.slash("imagine", {"prompt": "a red fox --size 1024x1024"})
    await fake.wait_for(lambda: large.followups)
    assert large.followups[0].content.startswith("✖ Size is at most 262144 pixels here")
    assert running.backend.requests == []


async def _starred(running, generation_id: int, expected: bool) -> None:
    """Wait until the generation's star is as expected (the reaction's event is handled in the bot's own time)."""
    for _ in range(100):
        generation = await running.history.generations.get(generation_id)
        if generation is not None and generation.starred == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"#{generation_id} starred is not {expected}")


async def test_a_star_reaction_of_the_author_stars_the_image_and_taking_it_back_unstars(running):
    """⭐ by someone else stars nothing; the author's ⭐ stars it for the showcase, and removing it unstars."""
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "steps": 2})
    await fake.react(first.id, "⭐", user=fake.bob)
    await asyncio.sleep(0.3)
    await _starred(running, 1, False)
    await fake.react(first.id, "⭐")
    await _starred(running, 1, True)
    await fake.react(first.id, "⭐", user=fake.bob, removed=True)
    await asyncio.sleep(0.3)
    await _starred(running, 1, True)
    await fake.react(first.id, "⭐", removed=True)
    await _starred(running, 1, False)
    assert len(running.backend.requests) == 1


async def test_the_showcase_admin_option_turns_it_on_for_managers_only(running):
    """/imagine-admin showcase:True is refused for members and shows "showcase: on" for a manager."""
    fake = running.fake
    refused = await fake.slash("imagine-admin", {"showcase": True}, user=fake.bob, permissions=0)
    assert (await refused.response())["data"]["content"] == "✖ Only server managers can change the server's settings."
    allowed = await fake.slash("imagine-admin", {"showcase": True})
    assert "showcase: on" in (await allowed.response())["data"]["content"]


async def test_result_buttons_come_in_rows_and_a_pan_arrow_widens_the_image(running):
    """Under a result the buttons stand in rows (new images, larger ones, the pan arrows alone, about it);
    ➡️ posts a new image whose canvas is half as wide again, from the same seed's settings and a new seed."""
    _, first = await _imagine(running.fake, {"prompt": "a red fox", "seed": "7", "steps": 4})
    rows = [[button for button in row["components"]] for row in first.components]
    assert [[button["custom_id"].split(":")[1] for button in row] for row in rows] == [
        ["reroll", "refine", "vary-subtle", "vary-strong", "edit"],
        ["upscale-2", "upscale-4"],  # a 128² image has no room to zoom out of
        ["pan-left", "pan-right", "pan-up", "pan-down"],
        ["details", "delete"],
    ]
    assert [(button["emoji"]["name"], button.get("label")) for button in rows[2]] == [
        ("⬅️", None),
        ("➡️", None),
        ("⬆️", None),
        ("⬇️", None),
    ]
    made = running.backend.requests[0]
    click = await running.fake.click(first.id, encode_action("pan-right", 1))
    panned = await _finished(running.fake, await _reply_of(click))
    request = running.backend.requests[-1]
    assert request.outpaint is not None and request.outpaint.right == made.width // 2
    assert (request.width, request.height) == (made.width * 3 // 2, made.height)
    assert request.seed != 7 and request.prompt == "a red fox"
    fields = {field["name"]: field["value"] for field in panned.embeds[0]["fields"]}
    assert fields["Size"] == f"{request.width}×{request.height}"


async def test_make_square_stands_under_a_wide_image_and_squares_it(running):
    """🔲 Make Square (Midjourney's) joins the second row under a non-square image only; it posts the image grown
    to a square, the strips above and below painted."""
    _, wide = await _imagine(running.fake, {"prompt": "a red fox", "seed": "7", "size": "1216x832"})
    rows = [[button["custom_id"].split(":")[1] for button in row["components"]] for row in wide.components]
    assert rows[1] == ["upscale-2", "upscale-4", "zoom-out", "zoom-out-2", "square"]
    click = await running.fake.click(wide.id, encode_action("square", 1))
    squared = await _finished(running.fake, await _reply_of(click))
    request = running.backend.requests[-1]
    assert (request.width, request.height) == (1216, 1216) and request.outpaint.sides == (192, 0, 192, 0)
    rows = [[button["custom_id"].split(":")[1] for button in row["components"]] for row in squared.components]
    assert "square" not in rows[1]
    # /square does the same to any image of yours; a square one gets the sentence.
    slash = await running.fake.slash("square", {"image": "#1"})
    await _finished(running.fake, await _reply_of(slash))
    assert running.backend.requests[-1].outpaint.sides == (192, 0, 192, 0)
    refused = await running.fake.slash("square", {"image": "#2"})
    body = await refused.response()
    assert body["data"]["content"] == "✖ Square has no room: #2 is 1216×1216, and it is square already."


async def test_a_model_without_a_refiner_gets_no_refine_button(running):
    """sdxl-turbo has no refiner: its result shows every button but Refine, which could only be refused."""
    _, message = await _imagine(running.fake, {"prompt": "a red fox", "model": "sdxl-turbo"})
    ids = [custom_id.split(":")[1] for custom_id in _custom_ids(message)]
    assert "refine" not in ids and {"reroll", "vary-subtle", "upscale-2", "pan-left", "details"} <= set(ids)


async def test_autocomplete_offers_only_what_the_local_backend_has_installed(fake, tmp_path, monkeypatch):
    """With the hub off and nothing downloaded, the local worker runs only the tiny parts: sdxl, pixel-art and
    canny-sdxl are not offered; typing one anyway gets the sentence, and nothing is queued."""
    from bot.catalog import load_catalog
    from inference.local import LocalBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    backend = LocalBackend(load_catalog(), tmp_path, device="cpu")
    try:
        async with running_bot(fake, backend, tmp_path):
            models = await fake.autocomplete("imagine", {"prompt": "x", "model": ""}, "model")
            assert [choice["value"] for choice in models] == ["tiny"]
            loras = await fake.autocomplete("imagine", {"prompt": "x", "lora": ""}, "lora")
            assert [choice["value"] for choice in loras] == ["tiny-lora", "tiny-lora-2"]
            controls = await fake.autocomplete("imagine", {"prompt": "x", "control": ""}, "control")
            assert [choice["value"] for choice in controls] == ["tiny-controlnet", "tiny-ip-adapter"]
            interaction = await fake.slash("imagine", {"prompt": "a red fox", "model": "sdxl"})
            await interaction.response()
            await fake.wait_for(lambda: interaction.followups)
            assert interaction.followups[0].content == (
                "✖ Model 'sdxl' is not installed on this bot; ask its operator to download it."
            )
    finally:
        await backend.aclose()


async def test_words_a_user_typed_ping_no_one_when_the_bot_shows_them(running):
    """A prompt or a caption holding @everyone, a role or a user is shown, and Discord is told to ping none."""
    fake = running.fake
    words = "a fox @everyone @here <@&42> <@7>"
    _, message = await _imagine(fake, {"prompt": words, "seed": "7", "steps": 2})
    answered = message.allowed_mentions[1:]  # after the deferral, which Discord shows as "thinking…"
    assert answered and all(allowed == {"parse": []} for allowed in answered)
    running.backend.caption = words
    described = await fake.slash("describe", {"image": "1"})
    await fake.wait_for(lambda: described.original is not None and described.original.content)
    assert "@everyone @here" in described.original.content
    assert described.original.allowed_mentions[-1] == {"parse": []}

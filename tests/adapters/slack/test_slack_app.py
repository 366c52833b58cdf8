"""The Slack app over real sockets: slack-bolt ↔ the fake Slack, with the recording backend."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path, PurePath

import pytest

from bot.errors import JobCancelled
from bot.jobs import Requester
from tests.adapters.slack.conftest import Running, action_ids, running_app
from tests.fakes.backend import FakeBackend
from tests.fakes.slack import FakeSlack, SlackMessage


def _fields(card: SlackMessage) -> dict[str, str]:
    section = (card.blocks or [])[0]
    return dict(field["text"].removeprefix("*").split("*\n", 1) for field in section.get("fields", []))


async def _imagine(running: Running, text: str, user_id: str = "U_ALICE") -> SlackMessage:
    before = len(running.cards())
    sent = await running.fake.send_slash(running.url, text=text, user_id=user_id)
    assert sent.status == 200 and sent.body == ""
    return await running.finished_card(before + 1)


async def _told(running: Running, user_id: str, text: str) -> None:
    await running.fake.wait_for(lambda: any(text in said for said in running.ephemeral(user_id)))


async def _click(running: Running, card: SlackMessage, action_id: str, user_id: str = "U_ALICE") -> None:
    (value,) = [
        element["value"]
        for block in card.blocks or []
        for element in block.get("elements") or []
        if element.get("action_id") == action_id
    ]
    sent = await running.fake.send_block_action(
        running.url, action_id, value, user_id=user_id, message_ts=card.ts, channel_id=card.channel
    )
    assert sent.status == 200 and sent.elapsed < 3


async def test_imagine_acks_then_updates_a_placeholder_then_uploads_the_image(running: Running) -> None:
    """/imagine is acknowledged at once; the card moves from queued through progress to the settings and buttons."""
    fake = running.fake
    sent = await fake.send_slash(running.url, text="a red fox --seed 7 --steps 4 --refiner 50")
    assert sent.status == 200 and sent.body == ""
    assert sent.elapsed < 3
    card = await running.finished_card(1)
    texts = [update["text"] for update in card.updates]
    assert texts[0].startswith("⏳ #1 · seed 7")
    assert any("base" in text and "2/2" in text for text in texts)
    assert any("refiner" in text and "2/2" in text for text in texts)
    assert action_ids(SlackMessage("C1", "0", blocks=card.updates[0]["blocks"])) == ["ib:cancel:1"]
    fields = _fields(card)
    assert fields["Seed"] == "7"
    assert fields["Steps"] == "4 (2 base + 2 refiner)"
    assert fields["Refiner"] == "tiny-refiner from 50 %"
    assert card.blocks[0]["text"]["text"] == "*a red fox*"
    assert action_ids(card) == [
        "ib:reroll:1",
        "ib:refine:1",
        "ib:vary-subtle:1",
        "ib:vary-strong:1",
        "ib:edit:1",
        "ib:upscale-2:1",
        "ib:upscale-4:1",
        "ib:pan-left:1",
        "ib:pan-right:1",
        "ib:pan-up:1",
        "ib:pan-down:1",
        "ib:details:1",
        "ib:delete:1",
    ]
    # in rows as on Discord: new images, larger ones (no Zoom Out at 128²), the pan arrows, about it
    rows = [[e["text"]["text"] for e in block["elements"]] for block in card.blocks if block["type"] == "actions"]
    assert [len(row) for row in rows] == [5, 2, 4, 2] and rows[2] == ["⬅️", "➡️", "⬆️", "⬇️"]
    # the image is the stored file (parameters chunk and all), uploaded into the same channel after the card
    generation = await running.service.details(running.who(), 1)
    stored = running.data_dir / generation.images[0].path
    (image_message,) = [m for m in fake.channel_messages() if m.files]
    assert image_message.files == [(f"imagebot-{PurePath(stored).name}", stored.read_bytes())]
    assert float(image_message.ts) > float(card.ts)
    assert generation.message_ref == f"C1:{card.ts}"


async def test_bad_input_gets_one_ephemeral_sentence_and_nothing_is_queued(running: Running) -> None:
    sent = await running.fake.send_slash(running.url, text="a red fox --steps 500")
    assert sent.status == 200
    await _told(running, "U_ALICE", "✖ --steps must be from 1 to 100, not 500.")
    await running.fake.send_slash(running.url, text="a fox --lora pixel-ar")
    await _told(running, "U_ALICE", "did you mean 'pixel-art'?")
    assert running.backend.requests == []
    assert await running.service.history(running.who()) == []
    assert running.fake.calls_to("chat.postMessage") == []
    assert all("Traceback" not in text for text in running.ephemeral())


async def test_a_prompt_with_choices_posts_a_card_for_each_job(running: Running) -> None:
    """``/imagine a {red, blue} fox``: two cards, each ending as its own image; a bad choice posts none."""
    await running.fake.send_slash(running.url, text="a fox --steps {2, 500}")
    await _told(running, "U_ALICE", "✖ --steps must be from 1 to 100, not 500.")
    sent = await running.fake.send_slash(running.url, text="a {red, blue} fox --steps 2")
    assert sent.status == 200 and sent.body == ""
    cards = [await running.finished_card(n) for n in (1, 2)]
    assert [action_ids(card)[0] for card in cards] == ["ib:reroll:1", "ib:reroll:2"]
    assert [card.blocks[0]["text"]["text"] for card in cards] == ["*a red fox*", "*a blue fox*"]
    assert [request.prompt for request in running.backend.requests] == ["a red fox", "a blue fox"]


async def test_reroll_button_makes_a_new_image_with_a_new_seed(running: Running) -> None:
    card = await _imagine(running, "a red fox --seed 7 --steps 2")
    await _click(running, card, "ib:reroll:1")
    second = await running.finished_card(2)
    assert _fields(second)["Seed"] == "100"
    first, again = running.backend.requests
    assert again == first.with_seed(100)
    assert "reroll of #1" in str(second.blocks)


async def test_a_pan_button_makes_a_taller_image_from_the_card(running: Running) -> None:
    """⬇️ on a 128² card: a 128×192 canvas, the image kept on top and a 64-pixel strip painted below."""
    card = await _imagine(running, "a red fox --seed 7 --steps 2")
    await _click(running, card, "ib:pan-down:1")
    panned = await running.finished_card(2)
    request = running.backend.requests[-1]
    assert (request.width, request.height) == (128, 192) and request.outpaint.sides == (0, 0, 64, 0)
    assert request.seed != 7 and _fields(panned)["Size"] == "128×192"
    assert "generate of #1" in str(panned.blocks)


async def test_image_buttons_under_several_images_act_on_the_image_picked(running: Running) -> None:
    """Under two images the card's last row reads "Image 1", "Image 2"; "Image 2" answers privately with image 2's
    own buttons, and its Vary (Strong) starts from image 2, as ``vary strong #1.2`` does."""
    card = await _imagine(running, "two foxes --count 2 --seed 7 --steps 2")
    picks = card.blocks[-1]["elements"]
    assert [(b["action_id"], b["text"]["text"]) for b in picks] == [
        ("ib:pick:1", "🖼️ Image 1"),
        ("ib:pick:1.2", "🖼️ Image 2"),
    ]
    await _click(running, card, "ib:pick:1.2")
    line = "Image 2 of #1 (#1.2, seed 8): these buttons act on it alone."
    await _told(running, "U_ALICE", line)
    (private,) = [m for m in running.fake.messages.values() if m.ephemeral_user == "U_ALICE" and m.text == line]
    assert action_ids(private)[:2] == ["ib:vary-subtle:1.2", "ib:vary-strong:1.2"]
    assert all(action_id.endswith(":1.2") for action_id in action_ids(private))
    await _click(running, private, "ib:vary-strong:1.2")
    await running.finished_card(2)
    from_button = running.backend.requests[-1]
    await _click(running, card, "ib:vary-strong:1")
    await running.finished_card(3)
    from_first = running.backend.requests[-1]
    await _imagine(running, "vary strong #1.2")
    assert from_button.init_image == running.backend.requests[-1].init_image != from_first.init_image


async def test_an_image_s_own_buttons_in_a_thread_make_the_new_image_in_that_thread(running: Running) -> None:
    """A card in a thread: "Image 2" answers in the thread, and its buttons (an ephemeral message, which Slack does
    not send back) make the new card there too, from the thread the click's container names."""
    card = await _imagine(running, "two foxes --count 2 --seed 7 --steps 2")
    card.thread_ts = "1700000000.000100"  # as a card posted into a thread is stored
    await _click(running, card, "ib:pick:1.2")
    line = "Image 2 of #1 (#1.2, seed 8): these buttons act on it alone."
    await _told(running, "U_ALICE", line)
    (private,) = [m for m in running.fake.messages.values() if m.ephemeral_user == "U_ALICE" and m.text == line]
    assert private.thread_ts == card.thread_ts
    await _click(running, private, "ib:vary-subtle:1.2")

    def varied() -> list[SlackMessage]:
        return [m for m in running.cards() if m.thread_ts == card.thread_ts and m is not card]

    await running.fake.wait_for(varied)
    # The card is posted when the job is queued; the backend sees it when it runs, a moment later on a busy machine.
    await running.fake.wait_for(lambda: len(running.backend.requests) == 2)
    assert len(running.backend.requests) == 2


async def test_reroll_by_message_shortcut_and_by_reaction(running: Running) -> None:
    card = await _imagine(running, "a red fox --seed 7 --steps 2")
    sent = await running.fake.send_message_shortcut(running.url, "reroll_image", message_ts=card.ts)
    assert sent.status == 200 and sent.elapsed < 3
    assert _fields(await running.finished_card(2))["Seed"] == "100"
    reaction = running.fake.reaction_event("arrows_counterclockwise", message_ts=card.ts)
    sent = await running.fake.send_event(running.url, reaction)
    assert sent.status == 200
    assert _fields(await running.finished_card(3))["Seed"] == "101"
    assert [request.seed for request in running.backend.requests] == [7, 100, 101]


async def test_shortcut_on_a_message_that_is_not_an_image_says_so(running: Running) -> None:
    await running.fake.send_message_shortcut(running.url, "reroll_image", message_ts="1.000001")
    await _told(running, "U_ALICE", "not one of my images")
    assert running.backend.requests == []


async def test_refine_keeps_the_seed_by_button_reaction_and_shortcut_modal(running: Running) -> None:
    card = await _imagine(running, "a red fox --seed 7 --steps 20")
    await _click(running, card, "ib:refine:1")
    refined = await running.finished_card(2)
    assert _fields(refined)["Seed"] == "7"
    assert _fields(refined)["Steps"] == "20 (17 base + 3 refiner)"

    await running.fake.send_event(
        running.url,
        running.fake.reaction_event("sparkles", message_ts=card.ts),
    )
    assert _fields(await running.finished_card(3))["Seed"] == "7"

    sent = await running.fake.send_message_shortcut(running.url, "refine_image", message_ts=card.ts)
    assert sent.status == 200
    await running.fake.wait_for(lambda: running.fake.calls_to("views.open"))
    view = running.fake.calls_to("views.open")[-1].args["view"]
    assert view["callback_id"] == "refine_modal"
    wrong = await running.fake.send_view_submission(
        running.url,
        "refine_modal",
        {"percent": {"value": {"type": "number_input", "value": "100"}}},
        private_metadata=view["private_metadata"],
    )
    assert wrong.json == {
        "response_action": "errors",
        "errors": {"percent": "refine must be a percent from 1 to 99, not '100'."},
    }
    good = await running.fake.send_view_submission(
        running.url,
        "refine_modal",
        {"percent": {"value": {"type": "number_input", "value": "90"}}},
        private_metadata=view["private_metadata"],
    )
    assert good.status == 200 and good.body == ""
    fields = _fields(await running.finished_card(4))
    assert fields["Seed"] == "7" and fields["Steps"] == "20 (18 base + 2 refiner)"
    assert [request.seed for request in running.backend.requests] == [7, 7, 7, 7]


async def test_in_remix_mode_vary_opens_the_prompt_and_runs_on_the_image_with_the_new_words(running: Running) -> None:
    """`/imagine settings remix=true` (Midjourney's Remix): 🌪️ Vary (Strong) first opens a form holding the prompt;
    a flag keeps it open with the sentence on the words; the new words vary the image; a reaction varies at once."""
    card = await _imagine(running, "a red fox --seed 7 --steps 4")
    await running.fake.send_slash(running.url, text="settings remix=true")
    await _told(running, "U_ALICE", "remix")
    await _click(running, card, "ib:vary-strong:1")
    await running.fake.wait_for(lambda: running.fake.calls_to("views.open"))
    view = running.fake.calls_to("views.open")[-1].args["view"]
    assert view["callback_id"] == "remix_modal" and view["title"]["text"] == "Remix"
    assert view["blocks"][0]["text"]["text"] == "Remix: 🌪️ Vary (Strong) #1"
    assert view["blocks"][1]["element"]["initial_value"] == "a red fox"

    def typed(value: str) -> dict:
        return {"prompt": {"value": {"type": "plain_text_input", "value": value}}}

    metadata = view["private_metadata"]
    wrong = await running.fake.send_view_submission(
        running.url, "remix_modal", typed("a grey wolf --ar 16:9"), private_metadata=metadata
    )
    assert wrong.json["response_action"] == "errors"
    assert wrong.json["errors"]["prompt"].startswith("Remix changes the prompt's words only, not '--ar'")
    good = await running.fake.send_view_submission(
        running.url, "remix_modal", typed("a grey wolf"), private_metadata=metadata
    )
    assert good.status == 200 and good.body == ""
    varied = await running.finished_card(2)
    first, again = running.backend.requests
    assert (again.prompt, again.init_image is not None, again.steps) == ("a grey wolf", True, first.steps)
    assert varied.channel == card.channel
    # A forged form naming another action is refused on its words; nothing runs.
    forged = metadata.replace('"vary-strong"', '"upscale-2"')
    refused = await running.fake.send_view_submission(
        running.url, "remix_modal", typed("a cat"), private_metadata=forged
    )
    assert refused.json["errors"]["prompt"] == "Remix is for Vary, Zoom Out, Make Square and Pan, not 'upscale-2'."
    await running.fake.send_event(running.url, running.fake.reaction_event("herb", message_ts=card.ts))
    await running.finished_card(3)
    assert running.backend.requests[-1].prompt == "a red fox" and len(running.backend.requests) == 3


async def test_make_square_stands_under_a_wide_image_and_squares_it(running: Running) -> None:
    """🔲 Make Square is under a non-square card only; clicked, the image grows to a square in the same place."""
    card = await _imagine(running, "a red fox --seed 7 --steps 4 --size 256x128")
    assert "ib:square:1" in action_ids(card)
    await _click(running, card, "ib:square:1")
    squared = await running.finished_card(2)
    request = running.backend.requests[-1]
    assert (request.width, request.height) == (256, 256) and request.outpaint.sides == (64, 0, 64, 0)
    assert squared.channel == card.channel and "ib:square:2" not in action_ids(squared)


async def test_edit_opens_the_imagine_text_and_makes_a_new_image_from_the_changed_text(running: Running) -> None:
    """✏️ Edit opens a form holding the card's /imagine text; a broken flag keeps the form open with the sentence on
    the text, and the changed prompt makes a new card in the same place with the same settings."""
    card = await _imagine(running, "a red fox --seed 7 --steps 4")
    await _click(running, card, "ib:edit:1")
    await running.fake.wait_for(lambda: running.fake.calls_to("views.open"))
    view = running.fake.calls_to("views.open")[-1].args["view"]
    assert view["callback_id"] == "edit_modal"
    (block,) = view["blocks"]
    text = block["element"]["initial_value"]
    assert text.startswith("a red fox --model tiny ") and "--seed 7" in text and "--steps 4" in text

    def typed(value: str) -> dict:
        return {"text": {"value": {"type": "plain_text_input", "value": value}}}

    metadata = view["private_metadata"]
    wrong = await running.fake.send_view_submission(
        running.url, "edit_modal", typed(text.replace("--steps 4", "--steps many")), private_metadata=metadata
    )
    assert wrong.json["response_action"] == "errors"
    assert wrong.json["errors"]["text"].startswith("--steps must be")
    good = await running.fake.send_view_submission(
        running.url, "edit_modal", typed(text.replace("a red fox", "a blue fox", 1)), private_metadata=metadata
    )
    assert good.status == 200 and good.body == ""
    edited = await running.finished_card(2)
    first, again = running.backend.requests
    assert again == first.model_copy(update={"prompt": "a blue fox"})
    assert edited.channel == card.channel and _fields(edited)["Seed"] == "7"
    # `/imagine edit #1` opens the same form (a slash command carries a trigger id too).
    opened = len(running.fake.calls_to("views.open"))
    await running.fake.send_slash(running.url, text="edit #1")
    await running.fake.wait_for(lambda: len(running.fake.calls_to("views.open")) > opened)
    (block,) = running.fake.calls_to("views.open")[-1].args["view"]["blocks"]
    assert block["element"]["initial_value"] == text


async def test_someone_else_is_refused_privately_and_nothing_is_queued(running: Running) -> None:
    card = await _imagine(running, "a red fox --seed 7 --steps 2")
    for action in ("ib:reroll:1", "ib:refine:1", "ib:delete:1"):
        await _click(running, card, action, user_id="U_BOB")
    await running.fake.send_message_shortcut(running.url, "reroll_image", user_id="U_BOB", message_ts=card.ts)
    await running.fake.send_event(
        running.url,
        running.fake.reaction_event("sparkles", user_id="U_BOB", message_ts=card.ts),
    )
    await running.fake.wait_for(lambda: len(running.ephemeral("U_BOB")) == 5)
    assert sorted(running.ephemeral("U_BOB")) == sorted(
        [
            "✖ Only the author of this image can reroll it.",
            "✖ Only the author of this image can refine it.",
            "✖ Only the author of this image can delete it.",
            "✖ Only the author of this image can reroll it.",
            "✖ Only the author of this image can refine it.",
        ]
    )
    assert len(running.backend.requests) == 1
    assert not running.fake.messages[("C1", card.ts)].deleted


async def test_open_reroll_policy_lets_others_reroll_as_themselves(running: Running) -> None:
    card = await _imagine(running, "a red fox --seed 7 --steps 2")
    await running.service.admin.update_policy(
        running.who().__class__("slack", "U_ALICE", workspace="T1"), {"open_reroll": True}, may_manage=True
    )
    await _click(running, card, "ib:reroll:1", user_id="U_BOB")
    second = await running.finished_card(2)
    assert "<@U_BOB>" in str(second.blocks)
    assert [g.id for g in await running.service.history(running.who("U_BOB"))] == [2]


async def test_forged_or_stale_signatures_get_401_and_nothing_is_queued(running: Running) -> None:
    forged = await running.fake.send_slash(running.url, text="a red fox", secret="not-the-secret")
    stale = await running.fake.send_slash(running.url, text="a red fox", timestamp=int(time.time()) - 6 * 60)
    assert (forged.status, stale.status) == (401, 401)
    fresh_enough = await running.fake.send_slash(running.url, text="a red fox", timestamp=int(time.time()) - 4 * 60)
    assert fresh_enough.status == 200
    await running.finished_card(1)
    assert len(running.backend.requests) == 1
    assert [g.id for g in await running.service.history(running.who())] == [1]


async def test_generate_modal_opens_and_shows_errors_on_the_right_field(running: Running) -> None:
    sent = await running.fake.send_global_shortcut(running.url, "generate_image")
    assert sent.status == 200 and sent.elapsed < 3
    await running.fake.wait_for(lambda: running.fake.calls_to("views.open"))
    view = running.fake.calls_to("views.open")[-1].args["view"]
    assert view["callback_id"] == "imagine_modal"
    blocks = {block["block_id"]: block for block in view["blocks"]}
    assert list(blocks) == [
        "prompt",
        "negative",
        "seed",
        "steps",
        "refiner",
        "model",
        "style",
        "size",
        "tile",
        "lora",
        "image",
        "strength",
        "mask",
        "style_image",
        "control_image",
        "control",
        "control_weight",
        "control_start",
        "control_end",
        "control_mode",
        "channel",
    ]
    assert "pixel-art" in [o["value"] for o in blocks["lora"]["element"]["options"]]
    assert "cinematic" in [o["value"] for o in blocks["style"]["element"]["options"]]

    def state(**values: dict) -> dict:
        base = {
            "prompt": {"type": "plain_text_input", "value": "a red fox"},
            "channel": {"type": "conversations_select", "selected_conversation": "C1"},
        }
        return {block: {"value": value} for block, value in {**base, **values}.items()}

    async def errors(**values: dict) -> dict:
        answer = await running.fake.send_view_submission(running.url, "imagine_modal", state(**values))
        assert answer.status == 200 and answer.elapsed < 3
        return answer.json["errors"]

    assert await errors(steps={"type": "number_input", "value": "500"}) == {
        "steps": "steps must be from 1 to 100, not 500."
    }
    assert list(await errors(seed={"type": "plain_text_input", "value": "seven"})) == ["seed"]
    assert list(await errors(prompt={"type": "plain_text_input", "value": "a"})) == ["prompt"]
    # a flag typed into the prompt is reported on the prompt, where it was typed
    assert list(await errors(prompt={"type": "plain_text_input", "value": "a fox --steps 500"})) == ["prompt"]
    assert list(
        await errors(
            model={"type": "static_select", "selected_option": {"value": "sdxl-turbo"}},
            refiner={"type": "number_input", "value": "80"},
        )
    ) == ["refiner"]
    assert running.backend.requests == []

    good = await running.fake.send_view_submission(
        running.url,
        "imagine_modal",
        state(
            seed={"type": "plain_text_input", "value": "7"},
            steps={"type": "number_input", "value": "4"},
            size={"type": "static_select", "selected_option": {"value": "1216x832"}},
            lora={"type": "multi_static_select", "selected_options": [{"value": "pixel-art"}]},
            style={"type": "static_select", "selected_option": {"value": "watercolor"}},
            tile={"type": "checkboxes", "selected_options": [{"value": "on"}]},
        ),
    )
    assert good.status == 200 and good.body == ""
    fields = _fields(await running.finished_card(1))
    assert fields["Seed"] == "7" and fields["Size"] == "1216×832" and fields["LoRAs"] == "pixel-art:1"
    assert fields["Tiling"] == "seamless: it repeats edge to edge"
    (request,) = running.backend.requests
    assert request.tiling
    assert request.prompt.startswith("watercolor painting of a red fox, ") and request.negative_prompt.startswith(
        "photo"
    )


async def test_the_forms_model_field_says_which_model_empty_means_for_this_user(running: Running) -> None:
    """The bot's default, then the workspace's (admin default_model), then the user's own model setting."""

    async def hint() -> str:
        before = len(running.fake.calls_to("views.open"))
        await running.fake.send_global_shortcut(running.url, "generate_image")
        await running.fake.wait_for(lambda: len(running.fake.calls_to("views.open")) > before)
        blocks = running.fake.calls_to("views.open")[-1].args["view"]["blocks"]
        return next(block for block in blocks if block["block_id"] == "model")["hint"]["text"]

    member = Requester("slack", "U_ALICE", workspace=running.fake.team_id)
    assert await hint() == "Empty: tiny."
    await running.service.admin.update_policy(member, {"default_model": "sdxl-turbo"}, may_manage=True)
    assert await hint() == "Empty: sdxl-turbo."
    await running.service.user_settings.update(member, {"model": "tiny"})
    assert await hint() == "Empty: tiny."


async def test_modal_without_a_channel_delivers_in_a_direct_message(running: Running) -> None:
    values = {"prompt": {"value": {"type": "plain_text_input", "value": "a quiet fox --steps 2"}}}
    answer = await running.fake.send_view_submission(running.url, "imagine_modal", values)
    assert answer.body == ""
    dm = running.fake.dm_channel("U_ALICE")
    card = await running.finished_card(1, channel=dm)
    assert [m.files for m in running.fake.channel_messages(dm) if m.files]
    assert running.cards("C1") == [] and card.channel == dm


async def test_private_setting_delivers_in_a_direct_message(running: Running) -> None:
    await running.fake.send_slash(running.url, text="settings private=true steps=2")
    await _told(running, "U_ALICE", "Your defaults: private=True, steps=2")
    await running.fake.send_slash(running.url, text="a secret fox")
    card = await running.finished_card(1, channel=running.fake.dm_channel("U_ALICE"))
    assert _fields(card)["Steps"] == "2"
    assert running.cards("C1") == []


async def test_prefer_saves_a_set_that_a_prompt_then_uses(running: Running) -> None:
    await running.fake.send_slash(running.url, text="prefer mine --steps 2 --no blurry")
    await _told(running, "U_ALICE", "--mine is now --steps 2 --no blurry; type --mine in a prompt to use it.")
    card = await _imagine(running, "a red fox --mine")
    assert _fields(card)["Steps"] == "2"
    (request,) = running.backend.requests
    assert request.negative_prompt == "blurry"
    await running.fake.send_slash(running.url, text="prefer sunsets over the sea")  # words: a prompt
    await running.finished_card(2)


async def test_delete_button_removes_the_card_and_the_file(running: Running) -> None:
    card = await _imagine(running, "a red fox --steps 2")
    path = running.data_dir / (await running.service.details(running.who(), 1)).images[0].path
    await _click(running, card, "ib:delete:1")
    await running.fake.wait_for(lambda: running.fake.messages[("C1", card.ts)].deleted)
    await running.fake.wait_for(lambda: not [m for m in running.fake.channel_messages() if m.files])
    assert not path.exists()
    assert await running.service.history(running.who()) == []


async def test_cross_reaction_deletes_and_details_button_tells_the_settings(running: Running) -> None:
    card = await _imagine(running, "a red fox --seed 7 --steps 2")
    await _click(running, card, "ib:details:1", user_id="U_BOB")
    await _told(running, "U_BOB", "Seed: 7")
    await running.fake.send_event(
        running.url,
        running.fake.reaction_event("x", message_ts=card.ts),
    )
    await running.fake.wait_for(lambda: running.fake.messages[("C1", card.ts)].deleted)


async def test_cancel_button_stops_a_queued_job(running: Running) -> None:
    running.backend.gate = asyncio.Event()
    await running.fake.send_slash(running.url, text="a slow fox --steps 2")
    await running.fake.wait_for(lambda: running.cards())
    (card,) = running.cards()
    await _click(running, card, "ib:cancel:1")
    await _told(running, "U_ALICE", "Cancelling #1")
    running.backend.gate.set()
    card = await running.finished_card(1)
    assert card.text.startswith("✖ #1 ·") and "cancel" in card.text.lower()


async def test_history_help_queue_and_settings_words(running: Running) -> None:
    await _imagine(running, "a red fox --seed 7 --steps 2")
    for text in ("help", "history", "info", "queue", "settings steps=12", "settings steps=none"):
        await running.fake.send_slash(running.url, text=text)
    await running.fake.wait_for(lambda: len(running.ephemeral()) == 6)
    help_text, history, info, queue, saved, cleared = running.ephemeral()
    assert "/imagine reroll" in help_text and ":sparkles:" in help_text
    assert "`#1` done · seed `7`" in history
    assert "a red fox" in info and "Seed: 7" in info
    assert queue == "0 waiting in all.\nYou have nothing queued."
    assert saved == "Your defaults: steps=12"
    assert cleared == "Your defaults: none (the model's own)"
    # a prompt that starts with a command word is still a prompt
    await _imagine(running, "history of rome --steps 2")
    assert running.backend.requests[-1].prompt == "history of rome"


async def test_reroll_and_refine_words_reuse_the_latest_image(running: Running) -> None:
    await _imagine(running, "a red fox --seed 7 --steps 10")
    await running.fake.send_slash(running.url, text="refine #1 80")
    assert _fields(await running.finished_card(2))["Steps"] == "10 (8 base + 2 refiner)"
    await running.fake.send_slash(running.url, text="reroll")
    assert _fields(await running.finished_card(3))["Seed"] == "100"


async def test_a_channel_the_bot_is_not_in_cancels_the_job_and_says_how_to_fix_it(running: Running) -> None:
    running.fake.not_member.add("C_OTHER")
    running.backend.gate = asyncio.Event()  # hold the job, as a busy GPU would
    await running.fake.send_slash(running.url, text="a red fox --steps 2", channel_id="C_OTHER")
    # Slack refuses even an ephemeral message there: the sentence comes as a direct message
    dm = running.fake.dm_channel("U_ALICE")
    await running.fake.wait_for(lambda: running.fake.channel_messages(dm))
    (told,) = running.fake.channel_messages(dm)
    assert told.text == "I cannot post in this conversation; invite me with `/invite @imagebot`, or pick another one."
    job = running.service.job(1)
    assert job is not None
    running.backend.gate.set()
    with pytest.raises(JobCancelled):
        await job.result()
    (generation,) = await running.service.history(running.who())
    assert generation.status == "cancelled"


async def test_backend_failure_turns_the_card_into_the_reason(fake: FakeSlack, tmp_path) -> None:
    async with running_app(fake, FakeBackend(fail_with="the GPU is on fire"), tmp_path) as running:
        card = await _imagine(running, "a red fox --steps 2")
        assert card.text.startswith("✖ #1 ·") and "the GPU is on fire" in card.text
        assert action_ids(card) == []


async def test_socket_mode_acks_every_envelope(fake: FakeSlack, tmp_path) -> None:
    async with running_app(fake, FakeBackend(), tmp_path, socket_mode=True) as running:
        assert running.url == "socket mode"
        started = time.monotonic()
        ack = await fake.socket_send("slash_commands", fake.slash_payload(text="a socket fox --seed 3 --steps 2"))
        assert time.monotonic() - started < 3
        assert ack["envelope_id"] == fake.sockets[-1].sent[-1]["envelope_id"]
        card = await running.finished_card(1)
        assert _fields(card)["Seed"] == "3"
        event = running.fake.reaction_event("arrows_counterclockwise", message_ts=card.ts)
        ack = await fake.socket_send("events_api", fake.event_envelope(event))
        assert ack["envelope_id"] == fake.sockets[-1].sent[-1]["envelope_id"]
        await running.finished_card(2)
        bad = fake.view_submission_payload(
            "imagine_modal", {"prompt": {"value": {"type": "plain_text_input", "value": "a"}}}
        )
        ack = await fake.socket_send("interactive", bad)
        assert ack["payload"]["response_action"] == "errors" and list(ack["payload"]["errors"]) == ["prompt"]


@pytest.mark.slow  # about 3 s on two cores
async def test_an_unexpected_failure_is_one_sentence_and_the_traceback_goes_to_the_log(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    await running.history.close()  # the database is gone: every query fails
    await running.fake.send_slash(running.url, text="history")
    await _told(running, "U_ALICE", "✖ Something went wrong; it has been logged.")
    assert running.ephemeral() == ["✖ Something went wrong; it has been logged."]
    assert any(record.exc_info for record in caplog.records if record.name == "bot.chat")


async def test_a_card_posted_before_a_restart_gets_its_image_after_it(fake: FakeSlack, tmp_path) -> None:
    busy = FakeBackend()
    busy.gate = asyncio.Event()  # the job is still running when the app stops
    async with running_app(fake, busy, tmp_path) as running:
        await fake.send_slash(running.url, text="a red fox --seed 7 --steps 2")
        await fake.wait_for(lambda: running.cards() and busy.requests)
    async with running_app(fake, FakeBackend(), tmp_path) as running:
        (card,) = running.cards()
        card = await running.finished_card(1)
        assert _fields(card)["Seed"] == "7"
        assert [m for m in fake.channel_messages() if m.files]
        assert (await running.history.generations.get(1)).interruptions == 1  # type: ignore[union-attr]


async def test_forget_asks_first_then_removes_rows_and_files(running: Running) -> None:
    await _imagine(running, "a red fox --steps 2")
    path = running.data_dir / (await running.service.details(running.who(), 1)).images[0].path
    await running.fake.send_slash(running.url, text="forget")
    await _told(running, "U_ALICE", "send `/imagine forget confirm` to go ahead.")
    assert path.exists()
    await running.fake.send_slash(running.url, text="forget confirm")
    await _told(running, "U_ALICE", "Forgotten: 1 generation, their images, and your settings.")
    assert not path.exists() and await running.service.history(running.who()) == []


async def test_workspace_admins_set_rules_and_read_the_audit_members_cannot(running: Running) -> None:
    fake, url = running.fake, running.url
    await fake.send_slash(url, text="admin ban gore", user_id="U_BOB")
    await _told(running, "U_BOB", "✖ Only workspace admins can change the workspace's settings.")
    for count, text in enumerate(
        ("admin ban gore", "admin max_steps 20", "admin open_reroll on", "admin max_steps lots")
    ):
        await fake.send_slash(url, text=text)
        # One answer at a time: commands answered concurrently may arrive in another order on a busy box.
        await fake.wait_for(lambda count=count: len(running.ephemeral()) == count + 1)
    *_, shown, bad = running.ephemeral()
    assert shown == "This workspace: rerolls: everyone; 1 banned word rule; at most 20 steps."
    assert bad == "✖ max_steps must be a number (0: no limit), not 'lots'."
    await fake.send_slash(url, text="a bl00dy G0RE scene", user_id="U_BOB")
    await _told(running, "U_BOB", "✖ This request is not allowed here (banned word rule 1).")
    assert running.backend.requests == []
    await fake.send_slash(url, text="admin audit")
    await fake.wait_for(lambda: len(running.ephemeral()) == 5)
    lines = running.ephemeral()[-1].splitlines()
    assert [line.split(" · ", 1)[1] for line in lines][:2] == [
        "<@U_BOB> · blocked (banned word rule 1)",
        "<@U_ALICE> · rules (open_reroll=True)",
    ]


async def test_a_flagged_image_is_withheld_from_the_channel_and_shown_to_its_author_only(running: Running) -> None:
    """Slack has no spoiler: the card says so, and 🔞 Show sends the image to its author privately."""
    running.backend.nsfw_seeds = {7}
    card = await _imagine(running, "a red fox --seed 7 --steps 2")
    assert [m for m in running.fake.channel_messages() if m.files] == []
    assert action_ids(card)[-1] == "ib:show:1"
    assert any("only its author can see it" in str(block) for block in card.blocks or [])
    await _click(running, card, "ib:show:1", user_id="U_BOB")
    await _told(running, "U_BOB", "✖ Only the author of this image can show its flagged images.")
    await _click(running, card, "ib:show:1")
    await running.fake.wait_for(lambda: any(m.files and m.channel != "C1" for m in running.fake.messages.values()))
    (private,) = [m for m in running.fake.messages.values() if m.files]
    assert private.channel != "C1" and private.files[0][0].startswith("imagebot-")
    # Of two, the flagged one keeps its "Image N" button (its author may Show it), until the workspace withholds it.
    pair = await _imagine(running, "two foxes --seed 6 --n 2 --steps 2")
    assert action_ids(pair, "ib:pick:") == ["ib:pick:2", "ib:pick:2.2"]
    await running.fake.send_slash(running.url, text="admin flagged withhold")
    await _told(running, "U_ALICE", "flagged images: withhold")
    pair = await _imagine(running, "two foxes --seed 6 --n 2 --steps 2")
    assert action_ids(pair, "ib:pick:") == ["ib:pick:3"]


async def test_adult_channels_and_channel_allowlist_are_workspace_rules(running: Running) -> None:
    """Slack marks age-restricted channels by policy; an explicit prompt elsewhere queues nothing."""
    fake, url = running.fake, running.url
    await fake.send_slash(url, text="a naked portrait")
    await _told(running, "U_ALICE", "adult content is only allowed in age-restricted channels")
    await fake.send_slash(url, text="admin adult_channels here")
    await fake.wait_for(lambda: any("age-restricted channel" in said for said in running.ephemeral()))
    await fake.send_slash(url, text="admin channels C9")
    await _told(running, "U_ALICE", "answers in 1 channel")
    await fake.send_slash(url, text="a red fox")
    await _told(running, "U_ALICE", "✖ Image generation is not enabled in this channel; workspace admins choose")
    assert running.backend.requests == []
    # A direct message with the app is not a channel of the workspace: the list does not apply.
    await fake.send_slash(url, text="a red fox", channel_id=running.fake.dm_channel("U_ALICE"))
    await fake.wait_for(lambda: len(running.backend.requests) == 1)


async def test_a_star_reaction_stars_the_authors_image_and_removing_it_unstars(running: Running) -> None:
    """:star: by the author stars the image (and says where it shows); Bob's :star: is only a reaction."""
    card = await _imagine(running, "a red fox --steps 2")
    await running.fake.send_event(running.url, running.fake.reaction_event("star", user_id="U_BOB", message_ts=card.ts))
    await running.fake.send_event(running.url, running.fake.reaction_event("star", message_ts=card.ts))
    await _told(running, "U_ALICE", "#1 is starred; it shows in this workspace's showcase once workspace admins")
    assert (await running.history.generations.get(1)).starred  # type: ignore[union-attr]
    assert running.ephemeral("U_BOB") == []
    removed = {**running.fake.reaction_event("star", message_ts=card.ts), "type": "reaction_removed"}
    await running.fake.send_event(running.url, removed)
    await _told(running, "U_ALICE", "#1 is no longer starred")
    assert not (await running.history.generations.get(1)).starred  # type: ignore[union-attr]


async def test_a_model_without_a_refiner_gets_no_refine_button(running: Running) -> None:
    """sdxl-turbo has no refiner: its card shows every button but Refine, which could only be refused."""
    card = await _imagine(running, "a red fox --model sdxl-turbo")
    ids = [action_id.split(":")[1] for action_id in action_ids(card)]
    assert "refine" not in ids and {"reroll", "vary-subtle", "upscale-2", "pan-left", "details"} <= set(ids)


async def test_the_generate_form_offers_only_what_the_local_backend_has_installed(
    fake: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the hub off and nothing downloaded, the form's model, LoRA and ControlNet lists hold the tiny parts."""
    from bot.catalog import load_catalog
    from inference.local import LocalBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    backend = LocalBackend(load_catalog(), tmp_path, device="cpu")
    try:
        async with running_app(fake, backend, tmp_path) as running:
            await fake.send_global_shortcut(running.url, "generate_image")
            await fake.wait_for(lambda: fake.calls_to("views.open"))
            blocks = {block["block_id"]: block for block in fake.calls_to("views.open")[-1].args["view"]["blocks"]}
            lists = ("model", "lora", "control")
            values = {key: [option["value"] for option in blocks[key]["element"]["options"]] for key in lists}
            assert values == {
                "model": ["tiny"],
                "lora": ["tiny-lora", "tiny-lora-2"],
                "control": ["tiny-controlnet", "tiny-ip-adapter"],
            }
    finally:
        await backend.aclose()

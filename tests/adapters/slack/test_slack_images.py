"""Image inputs on Slack: file inputs in the Generate modal, the "Imagine from this image" shortcut, Vary reactions.

Files are described by the fake's files.info and fetched from the fake (the configured API
base's origin, standing in for files.slack.com), which records each download and its token;
a second loopback host stands for anywhere else and records any Authorization it gets.
"""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from bot.service import VARY_STRENGTH
from tests.adapters.slack.conftest import Running, running_app
from tests.fakes.files import FileHost
from tests.fakes.slack import SlackFile


def _png(width: int = 256, height: int = 256) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def elsewhere():
    async with FileHost() as host:
        yield host


def _state(running: Running, prompt: str, **files: SlackFile | str | dict) -> dict:
    values: dict[str, dict] = {
        "prompt": {"type": "plain_text_input", "value": prompt},
        "channel": {"type": "conversations_select", "selected_conversation": "C1"},
    }
    for block, value in files.items():
        if isinstance(value, SlackFile):
            values[block] = {"type": "file_input", "files": [running.fake.file_object(value)]}
        elif isinstance(value, dict):  # a field's state as Slack sends it
            values[block] = value
        else:
            values[block] = {"type": "number_input", "value": value}
    return {block: {"value": value} for block, value in values.items()}


async def _submit(running: Running, prompt: str, metadata: str = "", **files: SlackFile | str | dict) -> None:
    answer = await running.fake.send_view_submission(
        running.url, "imagine_modal", _state(running, prompt, **files), private_metadata=metadata
    )
    assert answer.status == 200 and answer.body == "" and answer.elapsed < 3


async def _told(running: Running, text: str) -> None:
    await running.fake.wait_for(lambda: text in running.ephemeral())


async def test_the_generate_modal_offers_an_image_a_strength_and_a_mask(running: Running) -> None:
    await running.fake.send_global_shortcut(running.url, "generate_image")
    await running.fake.wait_for(lambda: running.fake.calls_to("views.open"))
    blocks = {block["block_id"]: block for block in running.fake.calls_to("views.open")[-1].args["view"]["blocks"]}
    for name in ("image", "mask", "style_image"):
        element = blocks[name]["element"]
        assert element["type"] == "file_input" and element["max_files"] == 1
        assert element["filetypes"] == ["png", "jpg", "jpeg", "webp"]
    assert blocks["strength"]["element"]["is_decimal_allowed"] is True


def _selected(value: str) -> dict:
    return {"type": "static_select", "selected_option": {"text": {"type": "plain_text", "text": value}, "value": value}}


def _typed(text: str) -> dict:
    return {"type": "plain_text_input", "value": text}


async def test_the_generate_modal_offers_a_controlnet_with_its_guide_weight_steps_and_mode(running: Running) -> None:
    await running.fake.send_global_shortcut(running.url, "generate_image")
    await running.fake.wait_for(lambda: running.fake.calls_to("views.open"))
    view = running.fake.calls_to("views.open")[-1].args["view"]
    assert len(view["blocks"]) <= 100  # Slack's most blocks in a modal
    blocks = {block.get("block_id"): block for block in view["blocks"]}
    assert blocks["control_image"]["element"]["type"] == "file_input"
    controlnets = [option["value"] for option in blocks["control"]["element"]["options"]]
    assert "tiny-controlnet" in controlnets and "canny-sdxl" in controlnets
    assert all(len(option["text"]["text"]) <= 75 for option in blocks["control"]["element"]["options"])
    weight = blocks["control_weight"]["element"]
    assert (weight["type"], weight["min_value"], weight["max_value"]) == ("number_input", "0", "2")
    assert blocks["control_start"]["element"]["type"] == blocks["control_end"]["element"]["type"] == "plain_text_input"
    modes = [option["value"] for option in blocks["control_mode"]["element"]["options"]]
    assert modes == ["balanced", "prompt", "controlnet"]


async def test_a_guide_file_and_a_controlnet_guide_the_image_on_the_steps_asked(running: Running) -> None:
    fake = running.fake
    guide = fake.share_file("edges.png", _png(128, 128))
    await _submit(
        running,
        "a red fox --steps 20",
        control_image=guide,
        control=_selected("tiny-controlnet"),
        control_weight="0.8",
        control_start=_typed("2"),
        control_end=_typed("50%"),
        control_mode=_selected("controlnet"),
    )
    await running.finished_card(1)
    (request,) = running.backend.requests
    (control,) = request.controlnets
    assert (control.model, control.weight, control.start_step, control.end_step, control.mode) == (
        "tiny-controlnet",
        0.8,
        2,
        10,  # 50% of 20 steps
        "controlnet",
    )
    assert request.init_image is None  # a guide, not an image to start from
    assert [d.file_id for d in fake.downloads] == [guide.id]  # fetched once, with the bot token
    assert all(d.token == fake.bot_token for d in fake.downloads)


async def test_a_style_reference_file_is_the_models_ip_adapter_on_the_style_layers(running: Running) -> None:
    """The modal's Style reference is Midjourney's --sref; --sw in the prompt weighs it; a bad one is one sentence."""
    fake = running.fake
    look = fake.share_file("look.png", _png(128, 128))
    await _submit(running, "a red fox --steps 20 --sw 50", style_image=look)
    await running.finished_card(1)
    (request,) = running.backend.requests
    assert [(c.model, c.style, c.weight, c.end_step) for c in request.controlnets] == [
        ("tiny-ip-adapter", True, 0.5, 20)
    ]
    assert [d.file_id for d in fake.downloads] == [look.id]
    await _submit(running, "a red fox", style_image=fake.share_file("notes.txt", b"just some notes"))
    await _told(running, "✖ style_image must be a PNG, JPEG or WebP file.")
    assert len(running.backend.requests) == 1


async def test_a_bad_controlnet_end_gets_one_sentence_and_nothing_is_queued(running: Running) -> None:
    fake = running.fake
    guide = fake.share_file("edges.png", _png(128, 128))
    await _submit(
        running, "a red fox", control_image=guide, control=_selected("tiny-controlnet"), control_end=_typed("soon")
    )
    await _told(running, "✖ control_end must be a step like 10 or a percentage like 50%, not 'soon'.")
    assert fake.downloads == []  # refused before the guide was fetched
    assert running.backend.requests == [] and running.cards() == []


async def test_an_image_file_makes_image_to_image_with_the_token_sent_to_slack_only(running: Running) -> None:
    fake = running.fake
    image = fake.share_file("fox.png", _png(320, 256))
    mask = fake.share_file("mask.png", _png(64, 64))
    await _submit(running, "a red fox --steps 4", image=image, strength="0.5", mask=mask)
    card = await running.finished_card(1)
    assert "ib:vary-subtle:1" in str(card.blocks)
    (request,) = running.backend.requests
    assert request.init_image is not None and request.mask_image is not None and request.strength == 0.5
    assert (request.width, request.height) == (320, 256)
    assert sorted(d.file_id for d in fake.downloads) == sorted([image.id, mask.id])
    assert all(d.token == fake.bot_token for d in fake.downloads)


async def test_a_too_large_file_is_refused_before_a_byte_is_fetched(fake, backend, tmp_path) -> None:
    async with running_app(fake, backend, tmp_path, max_input_bytes=1000) as running:
        big = fake.share_file("fox.png", _png() + b"\0" * 1000)
        await _submit(running, "a red fox", image=big)
        await fake.wait_for(lambda: any("the most is 1000 bytes" in said for said in running.ephemeral()))
        assert fake.calls_to("files.info") and fake.downloads == []
        assert running.backend.requests == [] and running.cards() == []


async def test_a_file_that_is_no_image_gets_one_sentence_and_nothing_is_queued(running: Running) -> None:
    fake = running.fake
    await _submit(running, "a red fox", image=fake.share_file("notes.txt", b"just some notes"))
    await _told(running, "✖ image must be a PNG, JPEG or WebP file.")
    assert fake.downloads == []  # Slack said text/plain: not fetched
    renamed = fake.share_file("notes.png", b"just some notes")  # Slack calls it image/png from its name
    await _submit(running, "a red fox", image=renamed)
    await fake.wait_for(lambda: running.ephemeral().count("✖ image must be a PNG, JPEG or WebP file.") == 2)
    assert [d.file_id for d in fake.downloads] == [renamed.id]
    assert running.backend.requests == [] and running.cards() == []


async def test_a_file_on_another_host_is_not_fetched_and_gets_no_token(running: Running, elsewhere) -> None:
    fake = running.fake
    foreign = fake.share_file("fox.png", _png(), url=elsewhere.put("fox.png", _png()))
    await _submit(running, "a red fox", image=foreign)
    await _told(running, "✖ image is not on the chat's own file host, so it was not fetched.")
    assert elsewhere.requests == []
    assert running.backend.requests == []


async def test_a_redirect_elsewhere_is_not_followed(running: Running, elsewhere) -> None:
    fake = running.fake
    moved = fake.share_file("fox.png", _png(), redirect_to=elsewhere.put("fox.png", _png()))
    await _submit(running, "a red fox", image=moved)
    await _told(running, "✖ image could not be fetched: the file host sent it elsewhere.")
    assert [d.file_id for d in fake.downloads] == [moved.id]
    assert elsewhere.requests == []  # the token never went with a redirect
    assert running.backend.requests == []


async def test_png_info_says_privately_how_a_posted_png_was_made_and_its_imagine_here(running: Running) -> None:
    """The "PNG info" shortcut on a message with an A1111 PNG: its parameters and the /imagine here, to its user."""
    from tests.bot.test_pnginfo import A1111, png

    fake = running.fake
    posted = fake.user_message([fake.share_file("castle.png", png(parameters=A1111))])
    sent = await fake.send_message_shortcut(running.url, "png_info", message_ts=posted.ts)
    assert sent.status == 200 and sent.elapsed < 3
    await fake.wait_for(lambda: any(text.startswith("PNG info of castle.png:") for text in running.ephemeral()))
    (reply,) = [text for text in running.ephemeral() if text.startswith("PNG info of castle.png:")]
    assert "--steps 25 --cfg 6.5 --scheduler DPM++ 2M Karras --seed 1234" in reply
    assert "Left out, as this bot does not take them: LoRA 'moody-light', model 'dreamshaperXL_v21'." in reply
    assert running.backend.requests == []
    plain = fake.user_message([fake.share_file("notes.txt", b"hello")])
    await fake.send_message_shortcut(running.url, "png_info", message_ts=plain.ts)
    await _told(running, "That message has no PNG, JPEG or WebP file.")


async def test_imagine_from_this_image_opens_the_modal_with_that_file(running: Running) -> None:
    fake = running.fake
    photo = fake.share_file("cat.jpg", _png(256, 384), mimetype="image/png")
    posted = fake.user_message([fake.share_file("readme.txt", b"hello"), photo], text="my cat")
    sent = await fake.send_message_shortcut(running.url, "imagine_from_image", message_ts=posted.ts)
    assert sent.status == 200 and sent.elapsed < 3
    await fake.wait_for(lambda: fake.calls_to("views.open"))
    view = fake.calls_to("views.open")[-1].args["view"]
    blocks = {block.get("block_id"): block for block in view["blocks"]}
    assert "image" not in blocks and "mask" in blocks  # the image is the message's file
    assert "*cat.jpg*" in str(view["blocks"])
    assert blocks["channel"]["element"]["initial_conversation"] == "C1"
    await _submit(running, "a cat as a lion --steps 10", view["private_metadata"], strength="0.3")
    await running.finished_card(1)
    (request,) = running.backend.requests
    assert request.init_image is not None and request.strength == 0.3
    assert (request.width, request.height) == (256, 384)
    assert [d.file_id for d in fake.downloads] == [photo.id]


async def test_use_as_controlnet_guide_opens_the_modal_with_that_file_as_the_guide(running: Running) -> None:
    """The message shortcut: the modal names the file as the guide, picks a ControlNet, and the image is
    made from the prompt alone, shaped by the guide (not started from it)."""
    fake = running.fake
    drawing = fake.share_file("outline.png", _png(128, 128))
    posted = fake.user_message([drawing], text="my sketch")
    sent = await fake.send_message_shortcut(running.url, "use_as_controlnet_guide", message_ts=posted.ts)
    assert sent.status == 200 and sent.elapsed < 3
    await fake.wait_for(lambda: fake.calls_to("views.open"))
    view = fake.calls_to("views.open")[-1].args["view"]
    blocks = {block.get("block_id"): block for block in view["blocks"]}
    assert "control_image" not in blocks and "image" in blocks  # the guide is the message's file
    assert "Guided by *outline.png*." in str(view["blocks"])
    assert blocks["control"]["element"]["initial_option"]["value"] == "canny-sdxl"  # the catalog's first
    await _submit(running, "a castle --steps 10", view["private_metadata"], control=_selected("tiny-controlnet"))
    await running.finished_card(1)
    (request,) = running.backend.requests
    assert request.init_image is None
    ((control),) = request.controlnets
    assert (control.model, control.start_step, control.end_step) == ("tiny-controlnet", 1, 10)
    assert [d.file_id for d in fake.downloads] == [drawing.id]


async def test_use_as_style_reference_opens_the_modal_with_that_file_as_the_style(running: Running) -> None:
    """The message shortcut: the modal names the file as the style reference; --sw in the prompt weighs it, and
    the image is made from the prompt alone in that look (not started from the file, nor shaped by it)."""
    fake = running.fake
    look = fake.share_file("look.png", _png(128, 128))
    posted = fake.user_message([look], text="this palette")
    sent = await fake.send_message_shortcut(running.url, "use_as_style_reference", message_ts=posted.ts)
    assert sent.status == 200 and sent.elapsed < 3
    await fake.wait_for(lambda: fake.calls_to("views.open"))
    view = fake.calls_to("views.open")[-1].args["view"]
    blocks = {block.get("block_id"): block for block in view["blocks"]}
    assert "style_image" not in blocks and "image" in blocks and "control_image" in blocks
    assert "In the style of *look.png*" in str(view["blocks"])
    await _submit(running, "a castle --steps 10 --sw 70", view["private_metadata"])
    await running.finished_card(1)
    (request,) = running.backend.requests
    assert request.init_image is None
    assert [(c.model, c.style, c.weight, c.end_step) for c in request.controlnets] == [
        ("tiny-ip-adapter", True, 0.7, 10)
    ]
    assert [d.file_id for d in fake.downloads] == [look.id]


async def test_imagine_from_this_image_on_a_message_without_one_says_so(running: Running) -> None:
    posted = running.fake.user_message([running.fake.share_file("notes.txt", b"hello")])
    await running.fake.send_message_shortcut(running.url, "imagine_from_image", message_ts=posted.ts)
    await _told(running, "That message has no PNG, JPEG or WebP file.")
    assert not running.fake.calls_to("views.open")


async def test_vary_reactions_make_subtle_and_strong_variations(running: Running) -> None:
    fake = running.fake
    await fake.send_slash(running.url, text="a red fox --seed 7 --steps 4")
    card = await running.finished_card(1)
    for number, (reaction, kind) in enumerate((("herb", "subtle"), ("tornado", "strong")), start=2):
        sent = await fake.send_event(running.url, fake.reaction_event(reaction, message_ts=card.ts))
        assert sent.status == 200
        await running.finished_card(number)
        request = running.backend.requests[-1]
        assert request.init_image is not None and request.strength == VARY_STRENGTH[kind]


async def test_show_guide_sends_the_guide_to_the_user_privately(running: Running) -> None:
    """A ControlNet card has 🧭 Show guide; a click sends the guide the ControlNet saw in a direct message."""
    from tests.adapters.slack.conftest import action_ids
    from tests.adapters.slack.test_slack_app import _click

    fake = running.fake
    guide = fake.share_file("edges.png", _png(128, 128))
    await _submit(running, "a red fox --steps 20", control_image=guide, control=_selected("tiny-controlnet"))
    card = await running.finished_card(1)
    assert action_ids(card)[-1] == "ib:guide:1"
    await _click(running, card, "ib:guide:1", user_id="U_BOB")  # a public image's guide: anyone may see it
    await fake.wait_for(lambda: any(m.files and m.channel != "C1" for m in fake.messages.values()))
    (private,) = [m for m in fake.messages.values() if m.files and m.channel != "C1"]
    assert private.channel == fake.dm_channel("U_BOB")
    assert private.files[0][0] == "guide-1-1.png"
    said = [m.text for m in fake.messages.values() if m.channel == private.channel and not m.files]
    assert "#1 guide 1: tiny-controlnet (canny, weight 1, balanced) on steps 1–20 of 20" in said


async def test_the_describe_shortcut_says_privately_what_a_messages_image_shows(running: Running) -> None:
    fake = running.fake
    photo = fake.share_file("sea.png", _png(96, 64))
    posted = fake.user_message([fake.share_file("readme.txt", b"hello"), photo])
    sent = await fake.send_message_shortcut(running.url, "describe_image", message_ts=posted.ts)
    assert sent.status == 200 and sent.elapsed < 3
    described = (
        "📝 Your image in words, to send with /imagine for one like it:\n```\na 96x64 picture of #2878c8 --ar 3:2\n```"
    )
    await _told(running, described)
    assert [download.file_id for download in fake.downloads] == [photo.id]
    assert running.backend.requests == []  # nothing is made
    plain = fake.user_message([fake.share_file("notes.txt", b"hello")])
    await fake.send_message_shortcut(running.url, "describe_image", message_ts=plain.ts)
    await _told(running, "That message has no PNG, JPEG or WebP file.")


async def test_imagine_describe_puts_your_image_into_words_and_describe_with_words_is_a_prompt(
    running: Running,
) -> None:
    fake = running.fake
    await fake.send_slash(running.url, text="a red fox --seed 7 --steps 4")
    await running.finished_card(1)
    await fake.send_slash(running.url, text="describe #1")
    await fake.wait_for(lambda: any(text.startswith("📝 #1 in words") for text in running.ephemeral()))
    (reply,) = [text for text in running.ephemeral() if text.startswith("📝 #1 in words")]
    request = running.backend.requests[0]
    pattern = (
        rf"📝 #1 in words, to send with /imagine for one like it:\n```\na {request.width}x{request.height} picture"
    )
    assert re.fullmatch(pattern + r" of #[0-9a-f]{6} --ar 1:1\n```", reply)  # the tiny model's square
    await fake.send_slash(running.url, text="describe a lighthouse at dusk")
    await running.finished_card(2)
    assert running.backend.requests[-1].prompt == "describe a lighthouse at dusk"


async def test_imagine_these_words_opens_the_imagine_form_holding_a_description(running: Running) -> None:
    """The button under a describe answer opens the form with its words (its value, read as a prompt again)."""
    fake = running.fake
    running.backend.caption = "a lighthouse at dusk & <b>"
    posted = fake.user_message([fake.share_file("sea.png", _png(96, 64))])
    await fake.send_message_shortcut(running.url, "describe_image", message_ts=posted.ts)
    await fake.wait_for(lambda: any(m.blocks for m in fake.messages.values() if m.ephemeral_user == "U_ALICE"))
    (answer,) = [m for m in fake.messages.values() if m.ephemeral_user == "U_ALICE" and m.blocks]
    assert "a lighthouse at dusk &amp; b" in answer.blocks[0]["text"]["text"]  # escaped for mrkdwn
    (button,) = answer.blocks[1]["elements"]
    assert (button["action_id"], button["value"]) == ("ib:words", "a lighthouse at dusk & b --ar 3:2")
    sent = await fake.send_block_action(running.url, "ib:words", button["value"])
    assert sent.status == 200 and sent.elapsed < 3
    await fake.wait_for(lambda: fake.calls_to("views.open"))
    view = fake.calls_to("views.open")[-1].args["view"]
    assert view["callback_id"] == "edit_modal" and view["title"]["text"] == "Imagine these words"
    (block,) = view["blocks"]
    assert block["element"]["initial_value"] == "a lighthouse at dusk & b --ar 3:2"
    sent_text = block["element"]["initial_value"].replace(" & b", "") + " --seed 5 --steps 2"
    typed = {"text": {"value": {"type": "plain_text_input", "value": sent_text}}}
    await fake.send_view_submission(running.url, "edit_modal", typed, private_metadata=view["private_metadata"])
    await running.finished_card(1)
    (request,) = running.backend.requests
    assert (request.prompt, request.seed) == ("a lighthouse at dusk", 5) and request.width > request.height
    await fake.send_block_action(running.url, "ib:words", "--- {}")  # a value with no words left
    await _told(running, "That button holds no words to imagine; describe the image again.")


async def test_several_descriptions_have_a_numbered_button_each_holding_its_words(running: Running) -> None:
    fake = running.fake
    running.backend.caption = "a lighthouse at dusk"
    running.backend.more_captions = ("a tower by the sea", "a beacon in the fog")
    posted = fake.user_message([fake.share_file("sea.png", _png(96, 64))])
    await fake.send_message_shortcut(running.url, "describe_image", message_ts=posted.ts)
    await fake.wait_for(lambda: any(m.blocks for m in fake.messages.values() if m.ephemeral_user == "U_ALICE"))
    (answer,) = [m for m in fake.messages.values() if m.ephemeral_user == "U_ALICE" and m.blocks]
    buttons = answer.blocks[1]["elements"]
    assert [(b["action_id"], b["text"]["text"], b["value"]) for b in buttons] == [
        ("ib:words", "🎨 1", "a lighthouse at dusk --ar 3:2"),
        ("ib:words:2", "🎨 2", "a tower by the sea --ar 3:2"),
        ("ib:words:3", "🎨 3", "a beacon in the fog --ar 3:2"),
    ]
    await fake.send_block_action(running.url, "ib:words:3", buttons[2]["value"])
    await fake.wait_for(lambda: fake.calls_to("views.open"))
    (block,) = fake.calls_to("views.open")[-1].args["view"]["blocks"]
    assert block["element"]["initial_value"] == "a beacon in the fog --ar 3:2"


async def test_the_blend_shortcut_asks_for_words_and_a_shape_then_blends_the_messages_images(running: Running) -> None:
    """Midjourney's /blend on Slack: the files of one message, each read by the model's IP-Adapter at an equal
    weight, with the form's words and shape; the card is posted in the message's thread. A message with one
    image gets the blend's sentence and no form."""
    fake = running.fake
    fox, sea = fake.share_file("fox.png", _png(128, 128)), fake.share_file("sea.png", _png(96, 160))
    parent = fake.user_message([], text="our pictures")
    posted = fake.user_message([fox, fake.share_file("notes.txt", b"hello"), sea], thread_ts=parent.ts)
    sent = await fake.send_message_shortcut(running.url, "blend_images", message_ts=posted.ts)
    assert sent.status == 200 and sent.elapsed < 3
    await fake.wait_for(lambda: fake.calls_to("views.open"))
    view = fake.calls_to("views.open")[-1].args["view"]
    assert view["callback_id"] == "blend_modal" and "Blend *fox.png*, *sea.png*" in str(view["blocks"])
    blocks = {block.get("block_id"): block for block in view["blocks"]}
    assert [o["value"] for o in blocks["dimensions"]["element"]["options"]] == ["2:3", "1:1", "3:2"]
    assert fake.downloads == []  # nothing fetched before the form is sent
    state = {"prompt": {"value": _typed("at dusk --seed 5")}, "dimensions": {"value": _selected("2:3")}}
    answer = await fake.send_view_submission(
        running.url, "blend_modal", state, private_metadata=view["private_metadata"]
    )
    assert answer.status == 200 and answer.body == "" and answer.elapsed < 3
    card = await running.finished_card(1)
    assert (card.channel, card.thread_ts) == ("C1", parent.ts)
    (request,) = running.backend.requests
    assert (request.prompt, request.seed) == ("at dusk", 5) and request.width < request.height
    assert [(c.model, c.weight) for c in request.controlnets] == [("tiny-ip-adapter", 0.5)] * 2
    assert sorted(d.file_id for d in fake.downloads) == sorted([fox.id, sea.id])
    # No words: the images decide; a flag given twice is one sentence, in the thread.
    await fake.send_view_submission(running.url, "blend_modal", {}, private_metadata=view["private_metadata"])
    await running.finished_card(2)
    assert running.backend.requests[-1].prompt == "best quality, high quality"
    twice = {"prompt": {"value": _typed("--ar 1:1")}, "dimensions": {"value": _selected("3:2")}}
    await fake.send_view_submission(running.url, "blend_modal", twice, private_metadata=view["private_metadata"])
    await fake.wait_for(lambda: any(said.startswith("✖ --ar is given twice") for said in running.ephemeral()))
    alone = fake.user_message([fake.share_file("cat.png", _png())])
    await fake.send_message_shortcut(running.url, "blend_images", message_ts=alone.ts)
    await _told(running, "✖ blend takes 2 or 3 images, not 1.")
    assert len(fake.calls_to("views.open")) == 1 and len(running.backend.requests) == 2


async def test_a_describe_or_png_info_answer_comes_in_the_thread_of_the_message(running: Running) -> None:
    """A shortcut on a reply in a thread is answered there, privately: the words, and a refusal too."""
    fake = running.fake
    parent = fake.user_message([], text="our sea pictures")
    posted = fake.user_message([fake.share_file("sea.png", _png(96, 64))], thread_ts=parent.ts)
    await fake.send_message_shortcut(running.url, "describe_image", message_ts=posted.ts)
    await fake.wait_for(lambda: any(m.blocks for m in fake.messages.values() if m.ephemeral_user == "U_ALICE"))
    (answer,) = [m for m in fake.messages.values() if m.ephemeral_user == "U_ALICE" and m.blocks]
    assert answer.thread_ts == parent.ts and answer.text.startswith("📝 Your image in words")
    plain = fake.user_message([fake.share_file("notes.txt", b"hello")], thread_ts=parent.ts)
    await fake.send_message_shortcut(running.url, "png_info", message_ts=plain.ts)
    await _told(running, "That message has no PNG, JPEG or WebP file.")
    (told,) = [m for m in fake.messages.values() if m.text == "That message has no PNG, JPEG or WebP file."]
    assert told.thread_ts == parent.ts

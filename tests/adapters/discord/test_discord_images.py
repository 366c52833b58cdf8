"""Image inputs on Discord: attachments on /imagine, the "Imagine from this image" menu, Vary reactions.

Attachments are fetched from the fake Discord (the configured API base's origin, standing in
for Discord's CDN), which records every download; a second loopback host stands for anywhere else.
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.service import VARY_STRENGTH
from tests.adapters.discord.conftest import running_bot
from tests.adapters.discord.test_discord_bot import _custom_ids, _finished, _imagine, _reply_of, _text_inputs
from tests.fakes.files import FileHost

FROM_IMAGE = "Imagine from this image"
GUIDE = "Use as ControlNet guide"
STYLE = "Use as style reference"
PNG_INFO = "PNG info"


def _png(width: int = 256, height: int = 256, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def elsewhere():
    async with FileHost() as host:
        yield host


async def _refusal(fake, options: dict) -> str:
    """Send /imagine and return the private sentence it got."""
    interaction = await fake.slash("imagine", options)
    await fake.wait_for(lambda: interaction.followups)
    (reply,) = interaction.followups
    assert reply.ephemeral
    return reply.content


async def test_the_new_options_and_the_context_menu_are_synced(running):
    commands = {(command["name"], command.get("type", 1)): command for command in running.fake.commands}
    menus = {name for name, kind in commands if kind == 3}  # message context menus
    assert menus == {FROM_IMAGE, GUIDE, STYLE, PNG_INFO, "Describe image"}  # Discord's most: five
    options = {option["name"]: option for option in commands[("imagine", 1)]["options"]}
    assert len(options) <= 25  # Discord's most options on a command
    assert all(options[name]["type"] == 11 for name in ("image", "mask", "control_image", "style_image"))  # files
    assert options["strength"]["type"] == 10
    assert (options["strength"]["min_value"], options["strength"]["max_value"]) == (0, 1)
    assert options["control"]["type"] == 3 and options["control"]["autocomplete"]
    assert (options["control_weight"]["min_value"], options["control_weight"]["max_value"]) == (0, 2)
    assert options["control_start"]["type"] == 3 and options["control_end"]["type"] == 3  # a step or a percentage
    assert [choice["value"] for choice in options["control_mode"]["choices"]] == ["balanced", "prompt", "controlnet"]


async def test_blend_blends_two_or_three_attachments_with_the_models_ip_adapter(running):
    """/blend (Midjourney's): two attachments and a shape, no words: each image at 0.5, the images lead."""
    fake = running.fake
    command = next(c for c in fake.commands if c["name"] == "blend")
    options = {option["name"]: option for option in command["options"]}
    assert [options[f"image{n}"]["type"] for n in (1, 2, 3)] == [11, 11, 11]  # attachments
    assert not any(option.get("required", False) for option in options.values())  # files, ids of yours, or both
    assert options["images"]["type"] == 3
    assert [choice["value"] for choice in options["dimensions"]["choices"]] == ["2:3", "1:1", "3:2"]
    first = fake.attachment("fox.png", _png(128, 128, (200, 40, 40)))
    second = fake.attachment("sea.png", _png(96, 160, (20, 40, 220)))
    interaction = await fake.slash("blend", {"image1": first, "image2": second, "dimensions": "2:3"})
    await fake.wait_for(lambda: interaction.original is not None)
    assert (await _finished(fake, interaction.original)).attachments
    (request,) = running.backend.requests
    assert request.prompt == "best quality, high quality" and request.width < request.height
    assert [(c.model, c.weight) for c in request.controlnets] == [("tiny-ip-adapter", 0.5)] * 2
    assert sorted(d.attachment_id for d in fake.downloads) == sorted([first.id, second.id])


async def test_a_style_image_is_a_style_reference_weighed_by_sw_in_the_prompt(running):
    """The style_image attachment is Midjourney's --sref: the model's IP-Adapter on the style layers, every step."""
    fake = running.fake
    look = fake.attachment("look.png", _png(96, 160, (20, 20, 220)))
    _, message = await _imagine(fake, {"prompt": "a red fox --sw 60", "steps": 20, "style_image": look})
    assert message.attachments
    fields = {field["name"]: field["value"] for field in message.embeds[0]["fields"]}
    assert fields["Style reference"] == "tiny-ip-adapter (style layers, weight 0.6) on steps 1–20 of 20"
    (request,) = running.backend.requests
    assert [(c.model, c.style, c.weight, c.end_step) for c in request.controlnets] == [
        ("tiny-ip-adapter", True, 0.6, 20)
    ]
    assert [d.attachment_id for d in fake.downloads] == [look.id]
    assert await _refusal(fake, {"prompt": "a red fox --sw 500", "style_image": look}) == (
        "✖ --sw must be a whole percent from 0 to 200 (100: the IP-Adapter's own weight), not '500'."
    )


async def test_control_autocomplete_offers_the_catalog_controlnets(running):
    choices = await running.fake.autocomplete("imagine", {"prompt": "x", "control": "tiny"}, "control")
    assert [choice["value"] for choice in choices] == ["tiny-controlnet", "tiny-ip-adapter"]


async def test_an_ip_adapter_takes_the_control_image_as_an_image_prompt(running):
    """Chosen in the typed control field, an IP-Adapter reads the attachment as it is, balanced."""
    fake = running.fake
    options = {
        "prompt": "a red fox",
        "steps": 20,
        "control_image": fake.attachment("look.png", _png(96, 160, (20, 20, 220))),
        "control": "tiny-ip-adapter",
        "control_weight": 0.6,
    }
    _, message = await _imagine(fake, options)
    assert message.attachments
    fields = {field["name"]: field["value"] for field in message.embeds[0]["fields"]}
    assert fields["IP-Adapter"] == "tiny-ip-adapter (weight 0.6) on steps 1–20 of 20"
    (request,) = running.backend.requests
    (adapter,) = request.controlnets
    assert (adapter.model, adapter.weight, adapter.preprocess, adapter.mode, adapter.source) == (
        "tiny-ip-adapter",
        0.6,
        "none",
        "balanced",
        None,
    )
    assert await _refusal(fake, options | {"control_mode": "prompt"}) == (
        "✖ control_mode is for ControlNets that read a map; the IP-Adapter 'tiny-ip-adapter' reads the image itself."
    )


async def test_a_control_image_guides_the_image_on_the_steps_asked(running):
    fake = running.fake
    guide = fake.attachment("edges.png", _png(128, 128))
    options = {
        "prompt": "a red fox",
        "steps": 20,
        "control_image": guide,
        "control": "tiny-controlnet",
        "control_weight": 0.8,
        "control_start": "2",
        "control_end": "50%",
        "control_mode": "prompt",
    }
    _, message = await _imagine(fake, options)
    assert message.attachments
    (request,) = running.backend.requests
    (control,) = request.controlnets
    assert (control.model, control.weight, control.start_step, control.end_step, control.mode) == (
        "tiny-controlnet",
        0.8,
        2,
        10,  # 50% of 20 steps
        "prompt",
    )
    assert request.init_image is None  # a guide, not an image to start from
    assert [d.attachment_id for d in fake.downloads] == [guide.id]  # fetched once


async def test_show_guide_sends_the_guide_the_controlnet_saw_privately(running):
    """A ControlNet result has a "Show guide" button; a click answers privately with the guide as a file."""
    from bot.actions import encode_action

    fake = running.fake
    guide = _png(128, 128, (10, 200, 10))
    options = {"prompt": "a red fox", "steps": 20, "control_image": fake.attachment("map.png", guide)}
    _, message = await _imagine(fake, options | {"control": "tiny-controlnet", "control_end": "5"})
    button = encode_action("guide", 1)
    assert button in message.custom_ids
    clicked = await fake.click(message.id, button)
    await fake.wait_for(lambda: clicked.original is not None)
    reply = clicked.original
    assert reply.ephemeral
    assert reply.content == "#1 guide 1: tiny-controlnet (canny, weight 1, balanced) on steps 1–5 of 20"
    (sent,) = reply.attachments
    assert sent.filename == "guide-1-1.png"
    # The canny map the ControlNet saw (a flat colour has no edges), not the upload.
    assert Image.open(io.BytesIO(sent.data)).convert("L").getextrema() == (0, 0)
    _, plain = await _imagine(fake, {"prompt": "a red fox"})
    assert not any(custom_id.startswith("ib:guide:") for custom_id in plain.custom_ids)


async def test_a_bad_control_end_gets_one_sentence_and_nothing_is_queued(running):
    fake = running.fake
    guide = fake.attachment("edges.png", _png(128, 128))
    options = {"prompt": "a red fox", "control_image": guide, "control": "tiny-controlnet", "control_end": "soon"}
    sentence = await _refusal(fake, options)
    assert sentence == "✖ control_end must be a step like 10 or a percentage like 50%, not 'soon'."
    assert fake.downloads == []  # refused before the guide was fetched
    assert running.backend.requests == []


async def test_use_as_controlnet_guide_asks_for_a_prompt_and_a_controlnet(running):
    fake = running.fake
    photo = fake.attachment("room.png", _png(256, 256))
    posted = fake.user_message([photo], content="my room")
    menu = await fake.message_command(GUIDE, posted)
    opened = await menu.response()
    assert opened["type"] == 9 and opened["data"]["title"] == GUIDE
    assert "tiny-controlnet" in str(opened["data"]["components"])  # the catalog's ControlNets, as a hint
    submitted = await fake.submit_modal(
        menu, {"Prompt": "a castle --steps 8 --cn-end 50%", "ControlNet": "tiny-controlnet"}
    )
    await fake.wait_for(lambda: submitted.original is not None)
    await _finished(fake, submitted.original)
    (request,) = running.backend.requests
    (control,) = request.controlnets
    assert (control.model, control.start_step, control.end_step) == ("tiny-controlnet", 1, 4)
    assert request.init_image is None and [d.attachment_id for d in fake.downloads] == [photo.id]


async def test_an_attached_image_and_mask_make_image_to_image(running):
    fake = running.fake
    image = fake.attachment("fox.png", _png(320, 256))
    mask = fake.attachment("mask.png", _png(64, 64, (255, 255, 255)))
    options = {"prompt": "a red fox", "steps": 4, "image": image, "strength": 0.5, "mask": mask}
    _, message = await _imagine(fake, options)
    (request,) = running.backend.requests
    assert request.init_image is not None and request.mask_image is not None
    assert request.strength == 0.5
    assert (request.width, request.height) == (320, 256)  # the image's size
    fields = {field["name"]: field["value"] for field in message.embeds[0]["fields"]}
    assert fields["Seed"] == "100"
    assert [attachment.filename for attachment in message.attachments] == ["imagebot-1-0.png"]
    # both were fetched once, from Discord's side, with no token
    assert sorted(d.attachment_id for d in fake.downloads) == sorted([image.id, mask.id])
    assert all(d.authorization is None for d in fake.downloads)


async def test_a_too_large_attachment_is_refused_before_a_byte_is_fetched(fake, backend, tmp_path):
    async with running_bot(fake, backend, tmp_path, max_input_bytes=1000) as running:
        buffer = io.BytesIO()
        Image.effect_noise((64, 64), 50).save(buffer, format="PNG")  # noise does not compress
        big = fake.attachment("fox.png", buffer.getvalue())
        assert len(big.data) > 1000
        sentence = await _refusal(fake, {"prompt": "a red fox", "image": big})
        assert sentence.startswith("✖ image is ") and sentence.endswith("; the most is 1000 bytes.")
        assert fake.downloads == []
        assert running.backend.requests == []


async def test_a_file_that_is_no_image_gets_one_sentence_and_nothing_is_queued(running):
    fake = running.fake
    text = fake.attachment("notes.txt", b"just some notes")
    assert await _refusal(fake, {"prompt": "a red fox", "image": text}) == "✖ image must be a PNG, JPEG or WebP file."
    assert fake.downloads == []  # Discord said text/plain: not fetched
    renamed = fake.attachment("notes.png", b"just some notes")  # Discord calls it image/png from its name
    assert await _refusal(fake, {"prompt": "a red fox", "image": renamed}) == (
        "✖ image must be a PNG, JPEG or WebP file."
    )
    assert [d.attachment_id for d in fake.downloads] == [renamed.id]  # fetched, then its bytes told the truth
    assert running.backend.requests == []
    assert await running.service.history(running.who(fake.alice)) == []


async def test_an_attachment_on_another_host_is_not_fetched(running, elsewhere):
    fake = running.fake
    foreign = fake.attachment("fox.png", _png(), url=elsewhere.put("fox.png", _png()))
    sentence = await _refusal(fake, {"prompt": "a red fox", "image": foreign})
    assert sentence == "✖ image is not on the chat's own file host, so it was not fetched."
    assert elsewhere.requests == []
    assert running.backend.requests == []


async def test_a_redirect_elsewhere_is_not_followed(running, elsewhere):
    fake = running.fake
    moved = fake.attachment("fox.png", _png(), redirect_to=elsewhere.put("fox.png", _png()))
    sentence = await _refusal(fake, {"prompt": "a red fox", "image": moved})
    assert sentence == "✖ image could not be fetched: the file host sent it elsewhere."
    assert [d.attachment_id for d in fake.downloads] == [moved.id]
    assert elsewhere.requests == []
    assert running.backend.requests == []


async def test_imagine_from_this_image_asks_for_a_prompt_then_makes_the_image(running):
    fake = running.fake
    photo = fake.attachment("photo.webp", _png(256, 384), content_type="image/png")
    posted = fake.user_message([fake.attachment("readme.txt", b"hello"), photo], content="my cat")
    menu = await fake.message_command(FROM_IMAGE, posted)
    opened = await menu.response()
    assert opened["type"] == 9 and opened["data"]["title"] == FROM_IMAGE
    submitted = await fake.submit_modal(menu, {"Prompt": "a cat as a lion --steps 10", "Strength (0-1)": "0.3"})
    assert (await submitted.response())["type"] == 5
    await fake.wait_for(lambda: submitted.original is not None)
    message = await _finished(fake, submitted.original)
    (request,) = running.backend.requests
    assert request.init_image is not None and request.strength == 0.3
    assert (request.width, request.height) == (256, 384)
    assert message.attachments and [d.attachment_id for d in fake.downloads] == [photo.id]


async def test_use_as_style_reference_asks_for_a_prompt_and_a_weight_then_makes_the_image(running):
    """The menu on a message's image: a style reference (--sref) at the weight given in percent (--sw)."""
    fake = running.fake
    look = fake.attachment("look.png", _png(96, 160, (20, 20, 220)))
    posted = fake.user_message([look])
    menu = await fake.message_command(STYLE, posted)
    opened = await menu.response()
    assert opened["type"] == 9 and opened["data"]["title"] == STYLE
    submitted = await fake.submit_modal(menu, {"Prompt": "a red fox --steps 10", "Style weight (0-200 %)": "50"})
    await fake.wait_for(lambda: submitted.original is not None)
    assert (await _finished(fake, submitted.original)).attachments
    (request,) = running.backend.requests
    assert [(c.model, c.style, c.weight, c.end_step) for c in request.controlnets] == [
        ("tiny-ip-adapter", True, 0.5, 10)
    ]
    assert request.init_image is None and [d.attachment_id for d in fake.downloads] == [look.id]
    menu = await fake.message_command(STYLE, posted)
    submitted = await fake.submit_modal(menu, {"Prompt": "a red fox", "Style weight (0-200 %)": "full"})
    await fake.wait_for(lambda: submitted.followups)
    assert submitted.followups[0].content.startswith("✖ sw must be a whole percent from 0 to 200")
    assert len(running.backend.requests) == 1 and len(fake.downloads) == 1


async def test_png_info_says_privately_how_a_posted_png_was_made_and_its_imagine_here(running):
    """The "PNG info" menu on a message with an A1111 PNG: its parameters and the /imagine here, to its user only."""
    from tests.bot.test_pnginfo import A1111, png

    fake = running.fake
    posted = fake.user_message([fake.attachment("castle.png", png(parameters=A1111))])
    menu = await fake.message_command(PNG_INFO, posted)
    assert (await menu.response())["type"] == 5  # deferred: the file is fetched first
    await fake.wait_for(lambda: menu.original is not None and menu.original.content)
    reply = menu.original
    assert reply.ephemeral and reply.content.startswith("PNG info of castle.png:\n```\na castle on a hill")
    assert "--steps 25 --cfg 6.5 --scheduler DPM++ 2M Karras --seed 1234" in reply.content
    assert [download.attachment_id for download in fake.downloads] == [posted.attachments[0].id]
    assert running.backend.requests == []  # nothing is made
    plain = fake.user_message([fake.attachment("plain.png", png())])
    menu = await fake.message_command(PNG_INFO, plain)
    await fake.wait_for(lambda: menu.original is not None and menu.original.content)
    assert menu.original.content == "✖ PNG info finds no generation parameters in plain.png."


async def test_imagine_from_this_image_refuses_a_bad_strength_and_a_message_without_image(running):
    fake = running.fake
    plain = fake.user_message([fake.attachment("notes.txt", b"hello")])
    menu = await fake.message_command(FROM_IMAGE, plain)
    body = await menu.response()
    assert body["type"] == 4 and body["data"]["content"] == "✖ That message has no PNG, JPEG or WebP image attached."
    posted = fake.user_message([fake.attachment("cat.png", _png())])
    menu = await fake.message_command(FROM_IMAGE, posted)
    submitted = await fake.submit_modal(menu, {"Prompt": "a lion", "Strength (0-1)": "lots"})
    await fake.wait_for(lambda: submitted.followups)
    assert submitted.followups[0].content.startswith("✖ strength must be a number from 0 to 1")
    assert fake.downloads == [] and running.backend.requests == []


async def test_vary_reactions_make_subtle_and_strong_variations(running):
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "seed": "7", "steps": 4})
    for emoji, kind, count in (("🌿", "subtle", 2), ("🌪", "strong", 3)):  # 🌪 without U+FE0F matches too
        before = set(fake.messages)
        await fake.react(first.id, emoji)
        await fake.wait_for(lambda before=before: set(fake.messages) - before)
        (new_id,) = set(fake.messages) - before
        await _finished(fake, fake.messages[new_id])
        assert len(running.backend.requests) == count
        request = running.backend.requests[-1]
        assert request.init_image is not None and request.strength == VARY_STRENGTH[kind]
    await fake.react(first.id, "🌿", user=fake.bob)
    await asyncio.sleep(0.3)
    assert len(running.backend.requests) == 3  # someone else's reaction does nothing


async def _started(fake, name: str, options: dict):
    """Send /upscale, /vary, /zoom or /pan and return the message that follows the job, once finished."""
    interaction = await fake.slash(name, options)
    await interaction.response()
    await fake.wait_for(lambda: interaction.original is not None)
    return await _finished(fake, interaction.original)


async def test_image_commands_act_on_any_image_of_a_generation(running):
    """/upscale, /vary and /pan take `#1.2` (or `1.2`): the buttons reach only a generation's first image."""
    fake, backend = running.fake, running.backend
    await _imagine(fake, {"prompt": "two foxes", "seed": "7", "count": 2, "steps": 4})
    upscaled = await _started(fake, "upscale", {"image": "1.2", "factor": 4})
    assert upscaled.attachments
    request = backend.requests[-1]
    assert (request.upscale, request.seed, request.width, request.count) == (4, 8, 512, 1)  # image 2: seed 7 + 1
    await _started(fake, "vary", {"strength": "strong", "image": "#1.2"})
    varied = backend.requests[-1]
    assert varied.strength == VARY_STRENGTH["strong"] and varied.init_image == request.init_image
    await _started(fake, "pan", {"direction": "left", "image": "#1"})
    panned = backend.requests[-1]
    assert (panned.width, panned.height, panned.outpaint.sides) == (192, 128, (0, 0, 0, 64))


async def test_image_buttons_under_several_images_act_on_the_image_picked(running):
    """Under two images a fifth row reads "Image 1", "Image 2"; "Image 2" answers privately with image 2's own
    buttons (``ib:vary-strong:1.2``…), and its Vary (Strong) starts from image 2, as `/vary image:#1.2` does.
    Another member's click on "Image 2" is one private sentence."""
    fake, backend = running.fake, running.backend
    _, message = await _imagine(fake, {"prompt": "two foxes", "seed": "7", "count": 2, "steps": 4})
    *_, picks = message.components
    assert [(b["custom_id"], b["label"]) for b in picks["components"]] == [
        ("ib:pick:1", "Image 1"),
        ("ib:pick:1.2", "Image 2"),
    ]
    reply = await _reply_of(await fake.click(message.id, "ib:pick:1.2"))
    assert reply.ephemeral
    assert reply.content == "Image 2 of #1 (#1.2, seed 8): these buttons act on it alone."
    assert _custom_ids(reply)[:2] == ["ib:vary-subtle:1.2", "ib:vary-strong:1.2"]
    assert all(custom_id.endswith(":1.2") for custom_id in _custom_ids(reply))
    assert not any(custom_id.startswith(("ib:reroll", "ib:delete", "ib:pick")) for custom_id in _custom_ids(reply))
    await _finished(fake, await _reply_of(await fake.click(reply.id, "ib:vary-strong:1.2")))
    from_button = backend.requests[-1]
    await _finished(fake, await _reply_of(await fake.click(message.id, "ib:vary-strong:1")))
    from_first = backend.requests[-1]
    await _started(fake, "vary", {"strength": "strong", "image": "#1.2"})
    assert from_button.init_image == backend.requests[-1].init_image != from_first.init_image
    made = len(backend.requests)
    refused = await _reply_of(await fake.click(message.id, "ib:pick:1.2", user=fake.bob))
    assert refused.ephemeral and refused.content == "✖ Only the author of this image can vary, upscale, zoom or pan it."
    assert len(backend.requests) == made


async def test_image_commands_refuse_what_names_no_image_and_queue_nothing(running):
    """A mistyped image is one private sentence, never the latest image instead; a refused zoom says why."""
    fake = running.fake
    await _imagine(fake, {"prompt": "a red fox", "steps": 2})
    before = len(running.backend.requests)
    for name, options, sentence in (
        ("upscale", {"image": "fox"}, "✖ image must be a previous image like #12 or #12.2, not 'fox'."),
        ("vary", {"image": "#1.9"}, "✖ Vary #1 has 1 image, not 9."),
        ("zoom", {"factor": 2.0}, "✖ Zoom needs a larger image: #1 is 128×128, too small for a border."),
    ):
        interaction = await fake.slash(name, options)
        body = await interaction.response()
        assert body["data"]["flags"] & 64, name
        assert body["data"]["content"] == sentence
    assert len(running.backend.requests) == before


DESCRIBE = "Describe image"
DESCRIBED = "📝 Your image in words, to send with /imagine for one like it:\n```\n{}\n```"


async def test_describe_puts_an_attachment_or_an_image_of_yours_into_words(running):
    """/describe (Midjourney's): an attachment, fetched from Discord's own host, or a result by id, in words."""
    fake = running.fake
    command = next(c for c in fake.commands if c["name"] == "describe")
    options = {option["name"]: option for option in command["options"]}
    assert (options["file"]["type"], options["image"]["type"], options["private"]["type"]) == (11, 3, 5)
    assert not any(option.get("required", False) for option in options.values())
    photo = fake.attachment("fox.png", _png(128, 96, (10, 20, 30)))
    interaction = await fake.slash("describe", {"file": photo})
    assert (await interaction.response())["type"] == 5  # deferred: the file is fetched and read first
    await fake.wait_for(lambda: interaction.original is not None and interaction.original.content)
    assert not interaction.original.ephemeral
    assert interaction.original.content == DESCRIBED.format("a 128x96 picture of #0a141e --ar 4:3")
    assert [download.attachment_id for download in fake.downloads] == [photo.id]
    await _imagine(fake, {"prompt": "a red fox", "seed": "7", "steps": 4, "size": "256x384"})
    interaction = await fake.slash("describe", {"private": True})  # no image: the latest of yours
    await fake.wait_for(lambda: interaction.original is not None and interaction.original.content)
    reply = interaction.original
    assert reply.ephemeral and reply.content.startswith("📝 #") and "a 256x384 picture of #" in reply.content
    assert running.backend.described[0] != running.backend.described[1] and len(running.backend.requests) == 1


async def test_describe_refuses_both_a_file_and_an_id_and_a_file_that_is_no_image(running):
    fake = running.fake
    photo = fake.attachment("fox.png", _png())
    interaction = await fake.slash("describe", {"file": photo, "image": "#1"})
    body = await interaction.response()
    assert body["type"] == 4 and body["data"]["content"] == "✖ Describe takes a file or one of your images, not both."
    notes = fake.attachment("notes.txt", b"hello")
    interaction = await fake.slash("describe", {"file": notes})
    await fake.wait_for(lambda: interaction.followups)
    (reply,) = interaction.followups
    assert reply.ephemeral and reply.content == "✖ Image must be a PNG, JPEG or WebP file."
    assert fake.downloads == [] and running.backend.described == []


async def test_the_describe_menu_says_privately_what_a_messages_image_shows(running):
    fake = running.fake
    assert (DESCRIBE, 3) in {(command["name"], command.get("type", 1)) for command in fake.commands}
    posted = fake.user_message([fake.attachment("sea.png", _png(64, 64, (20, 40, 220)))])
    menu = await fake.message_command(DESCRIBE, posted)
    assert (await menu.response())["type"] == 5
    await fake.wait_for(lambda: menu.original is not None and menu.original.content)
    assert menu.original.ephemeral and menu.original.content == DESCRIBED.format("a 64x64 picture of #1428dc --ar 1:1")
    plain = fake.user_message([fake.attachment("notes.txt", b"hello")])
    menu = await fake.message_command(DESCRIBE, plain)
    body = await menu.response()
    assert body["type"] == 4 and body["data"]["content"] == "✖ That message has no PNG, JPEG or WebP image attached."


async def test_imagine_these_words_opens_the_imagine_form_holding_the_answers_words(running):
    """The button under a /describe answer opens the form with its words; sent, they make an image."""
    fake = running.fake
    running.backend.caption = "a lighthouse at dusk"
    posted = fake.user_message([fake.attachment("sea.png", _png(64, 64, (20, 40, 220)))])
    menu = await fake.message_command(DESCRIBE, posted)
    await fake.wait_for(lambda: menu.original is not None and menu.original.content)
    assert menu.original.ephemeral and menu.original.custom_ids == ["ib:words"]
    click = await fake.click(menu.original.id, "ib:words")
    opened = await click.response()
    assert opened["type"] == 9 and opened["data"]["title"] == "Imagine these words"
    (field,) = _text_inputs(opened["data"])
    assert field["value"] == "a lighthouse at dusk --ar 1:1"  # the words and the image's shape
    submitted = await fake.submit_modal(click, {"Prompt and flags": field["value"] + " --seed 5 --steps 2"})
    await fake.wait_for(lambda: submitted.original is not None)
    await _finished(fake, submitted.original)
    (request,) = running.backend.requests
    assert (request.prompt, request.seed, request.steps) == ("a lighthouse at dusk", 5, 2)
    assert request.width == request.height


async def test_several_descriptions_have_a_numbered_button_each_that_opens_its_words(running):
    """Under four descriptions (Midjourney's), buttons 1–4; button 3 opens the form holding the third."""
    fake = running.fake
    running.backend.caption = "a lighthouse at dusk"
    running.backend.more_captions = ("a tower by the sea", "a beacon in the fog", "a coast at night")
    answer = await fake.slash("describe", {"file": fake.attachment("sea.png", _png(64, 64, (20, 40, 220)))})
    await fake.wait_for(lambda: answer.original is not None and answer.original.content)
    assert answer.original.custom_ids == ["ib:words", "ib:words:2", "ib:words:3", "ib:words:4"]
    assert "\n3️⃣ a beacon in the fog --ar 1:1\n" in answer.original.content
    click = await fake.click(answer.original.id, "ib:words:3")
    opened = await click.response()
    (field,) = _text_inputs(opened["data"])
    assert field["value"] == "a beacon in the fog --ar 1:1"


async def test_imagine_these_words_on_a_message_without_words_says_so(running):
    """The button on a message whose words are gone (edited away): one private sentence."""
    fake = running.fake
    answer = await fake.slash("describe", {"file": fake.attachment("sea.png", _png())})
    await fake.wait_for(lambda: answer.original is not None and answer.original.content)
    answer.original.content = "something else"
    click = await fake.click(answer.original.id, "ib:words")
    body = await click.response()
    assert body["type"] == 4 and body["data"]["flags"] & 64
    assert body["data"]["content"] == "✖ That message holds no words to imagine; /describe an image again."


async def test_blend_takes_images_of_yours_by_id_with_or_without_attachments(running):
    """/blend images:"#1 #2" blends earlier results, as `blend #1 #2` does in text; with an attachment, both."""
    fake = running.fake
    for prompt in ("a red fox", "a blue sea"):
        await _imagine(fake, {"prompt": prompt, "seed": "7", "steps": 2})
    interaction = await fake.slash("blend", {"images": "#1 2"})
    await fake.wait_for(lambda: interaction.original is not None)
    assert (await _finished(fake, interaction.original)).attachments
    blended = running.backend.requests[-1]
    assert [(c.model, c.weight) for c in blended.controlnets] == [("tiny-ip-adapter", 0.5)] * 2
    assert fake.downloads == []  # earlier results are read from the bot's own store
    photo = fake.attachment("fox.png", _png(128, 128))
    interaction = await fake.slash("blend", {"image1": photo, "images": "#1, #2"})
    await fake.wait_for(lambda: interaction.original is not None)
    await _finished(fake, interaction.original)
    assert [c.weight for c in running.backend.requests[-1].controlnets] == [0.33] * 3
    assert [d.attachment_id for d in fake.downloads] == [photo.id]
    for options, sentence in (
        ({}, "✖ blend takes 2 or 3 images, not 0."),
        ({"images": "#1 a cat"}, "✖ image must be a previous image like #12 or #12.2, not 'a'."),
    ):
        refused = await fake.slash("blend", options)
        body = await refused.response()
        assert body["type"] == 4 and body["data"]["content"] == sentence
    assert len(running.backend.requests) == 4

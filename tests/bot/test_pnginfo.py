"""PNG info: the parameters a posted PNG carries, and the /imagine that asks for them here, from anyone's bytes."""

from __future__ import annotations

import io
import re
import string
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.catalog import Catalog, load_catalog
from bot.controls import Guide
from bot.errors import InvalidOption
from bot.options import Defaults, Limits, parse_text
from bot.permutations import permutations
from bot.pnginfo import png_info
from bot.pngmeta import embed_text, parameters_text, read_text
from bot.request import GenerationRequest
from tests.bot.test_imagine_command import requests
from tests.bot.test_options_properties import CATALOG as EVERY_KIND
from tests.bot.test_options_properties import PROPERTY
from tests.properties.sentences import assert_sentence

CATALOG = load_catalog()
DEFAULTS = Defaults(model="sdxl")
LIMITS = Limits(pixel_budget=4 * 1024 * 1024)
A1111 = (
    "a castle on a hill <lora:pixel-art:0.7> <lora:moody-light:1>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 832x1216, "
    "Model hash: 4496b36d48, Model: dreamshaperXL_v21, Version: v1.9.4"
)


def png(**text: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buffer, format="PNG")
    data = buffer.getvalue()
    for key, value in text.items():
        data = embed_text(data, key, value)
    return data


def exif_image(kind: str, comment: bytes | None) -> bytes:
    """A JPEG or WebP whose EXIF UserComment is `comment` (None: no EXIF), as A1111 saves them."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    if comment is not None:
        exif.get_ifd(0x8769)[0x9286] = comment  # the Exif IFD's UserComment
    Image.new("RGB", (8, 8), (40, 40, 200)).save(buffer, format=kind, exif=exif.tobytes() if comment else b"")
    return buffer.getvalue()


def info(data: bytes, name: str = "castle.png") -> str:
    return png_info(data, name, CATALOG, DEFAULTS, LIMITS)


def command_of(reply: str) -> str:
    """Return the /imagine line of a reply."""
    (line,) = [line for line in reply.splitlines() if line.startswith("/imagine ")]
    return line.removeprefix("/imagine ")


def test_an_a1111_png_gives_its_text_and_the_imagine_of_what_this_bot_has():
    reply = info(png(parameters=A1111))
    assert reply.startswith("PNG info of castle.png:\n```\na castle on a hill <lora:pixel-art:0.7>")
    request = parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert request.prompt == "a castle on a hill" and request.negative_prompt == "blurry, lowres"
    assert (request.steps, request.cfg_scale, request.seed, request.width, request.height) == (25, 6.5, 1234, 832, 1216)
    assert request.scheduler == "DPM++ 2M Karras"  # A1111 1.9 writes the schedule apart
    assert [(lora.name, lora.weight) for lora in request.loras] == [("pixel-art", 0.7)]
    assert request.model == "sdxl"  # the default: the PNG's model is not in the catalog
    assert reply.endswith("Left out, as this bot does not take them: LoRA 'moody-light', model 'dreamshaperXL_v21'.")


def test_this_bot_s_own_png_gives_the_imagine_that_makes_the_same_request():
    made = GenerationRequest(prompt="a red fox", negative_prompt="snow", model="sdxl", steps=20, seed=7, cfg_scale=5)
    reply = info(png(parameters=parameters_text(made, 7)), "imagebot-12-0.png")
    again = parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert (again.prompt, again.negative_prompt, again.steps, again.seed, again.cfg_scale) == (
        "a red fox",
        "snow",
        20,
        7,
        5,
    )
    assert "Left out" not in reply


def test_this_bot_s_own_png_asks_for_its_refiner_clip_skip_vae_embeddings_and_loras_again():
    """Every setting of a text-to-image request that its parameters text names comes back, the same request."""
    line = (
        "a red fox --model tiny --steps 10 --seed 7 --refiner 80 --clip-skip 1 --vae tiny-vae"
        " --embedding tiny-embedding:0.5 --lora tiny-lora:0.8 --cfg 4 --scheduler Euler a"
    )
    made = parse_text(line, catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    text = parameters_text(made, 7)
    assert "Clip skip: 3, " in text  # as A1111 counts: its 2 is SDXL's own layer, its 3 one past it
    reply = info(png(parameters=text))
    assert "Left out" not in reply
    assert parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request == made


def test_an_a1111_sdxl_png_s_refiner_clip_skip_and_vae_are_asked_for_or_said_to_be_left_out():
    fields = "Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 1024x1024, Model: sdxl"
    here = ", Clip skip: 3, Refiner: SDXL-Refiner, Refiner switch at: 0.7, VAE: sdxl-vae-fp16-fix"
    request = parse_text(
        command_of(info(png(parameters=f"a fox\n{fields}{here}"))), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS
    ).request
    assert request.clip_skip == 1 and request.vae == "sdxl-vae-fp16-fix"
    assert request.refiner is not None and request.refiner.start_percent == 70 and request.split == (21, 9)
    # The "Clip skip: 2" Pony's images carry is the layer SDXL reads anyway: nothing skipped, nothing left out.
    pony = info(png(parameters=f"a fox\n{fields}, Clip skip: 2"))
    assert "--clip-skip" not in command_of(pony) and "Left out" not in pony
    elsewhere = (
        ", Clip skip: 12, Refiner: my_refiner_v2 [0123456789], Refiner switch at: 0.8, VAE: sdxl_vae.safetensors"
        ", Embeddings: easynegative:1, Denoising strength: 0.4, Hires upscale: 1.5, Hires upscaler: Latent"
    )
    reply = info(png(parameters=f"a fox\n{fields}{elsewhere}"))
    assert "--refiner off" in command_of(reply) and "--clip-skip" not in reply and "--vae" not in reply
    assert reply.endswith(
        "Left out, as this bot does not take them: clip skip '12', refiner 'my_refiner_v2 [0123456789]',"
        " VAE 'sdxl_vae.safetensors', embedding 'easynegative', hires fix '1.5' (Upscale does it after)."
    )
    # A switch this bot cannot run is refused by the parser and said.
    reply = info(png(parameters=f"a fox\n{fields}, Refiner: sdxl-refiner, Refiner switch at: 1"))
    assert "--refiner off" in command_of(reply) and reply.endswith("this bot does not take them: refiner '100'.")


@PROPERTY
@given(requests(), st.lists(st.text(string.ascii_letters, min_size=2, max_size=8), min_size=1, max_size=6))
def test_the_png_info_of_any_image_this_bot_makes_from_text_asks_for_the_same_request(made, words):
    """Whatever settings a text-to-image request has, its file's parameters ask for all of them again, exactly:
    refiner, clip skip, VAE, LoRAs and embeddings and their weights, variation, tiling, cfg to the last digit."""
    inputs = {"init_image": None, "strength": None, "mask_image": None, "outpaint": None, "controlnets": ()}
    made = made.model_copy(
        update=inputs | {"prompt": ", ".join(words), "negative_prompt": None, "count": 1, "output_format": "png"}
    )
    data = png(parameters=parameters_text(made, made.seed))
    reply = png_info(data, "x.png", EVERY_KIND, DEFAULTS, LIMITS, most=10_000)
    assert "Left out" not in reply
    assert parse_text(command_of(reply), catalog=EVERY_KIND, defaults=DEFAULTS, limits=LIMITS).request == made


@pytest.mark.parametrize(
    ("model", "refiner", "lora"),
    [
        # A1111's and Forge's SDXL base and refiner, as they write them, and a LoRA by its file's name.
        ("Model hash: 31e35c80fc, Model: sd_xl_base_1.0", "sd_xl_refiner_1.0 [7440042bbd]", "pixel-art-xl"),
        # A renamed file: its hash says what it is; ComfyUI's file names, in a folder, with extensions.
        ("Model hash: 31E35C80FC, Model: my_base", "[7440042bbd]", "pixel-art-xl.safetensors"),
        (r"Model: SDXL\\sd_xl_base_1.0.safetensors", "refiners/sd_xl_refiner_1.0_0.9vae.safetensors", "toy_face_sdxl"),
    ],
)
def test_the_sdxl_files_other_tools_name_are_the_catalog_s_models(model, refiner, lora):
    """The most common SDXL image there is, base and refiner from A1111, asks for all of it here, nothing left out."""
    text = (
        f"a fox <lora:{lora}:0.7>\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 1024x1024, "
        f"{model}, Refiner: {refiner}, Refiner switch at: 0.8, Version: v1.10.1"
    )
    reply = info(png(parameters=text))
    request = parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert "Left out" not in reply
    assert request.model == "sdxl" and request.refiner is not None and request.refiner.start_percent == 80
    assert [(lora.name, lora.weight) for lora in request.loras] == [("toy-face" if "toy" in lora else "pixel-art", 0.7)]


def test_a_name_too_long_for_a_file_is_no_entry_and_is_read_in_one_pass():
    """An image's text is anyone's: a model name of 60,000 spaces between two letters is looked at once, not
    matched against itself at every place (what a backtracking pattern would do, for minutes)."""
    spaced = "a" + " " * 60_000 + "b [7440042bbd]"
    assert CATALOG.find_written("refiner", spaced) is None
    assert CATALOG.find_written("refiner", "a" + " " * 200 + "b [7440042bbd]") == CATALOG.find(
        "refiner", "sdxl-refiner"
    )
    reply = info(png(parameters=f"a fox\nSteps: 20, Seed: 1, Size: 1024x1024, Model: {spaced}"))
    assert reply.endswith("Left out, as this bot does not take them: model 'a b [7440042bbd]'.")


def test_an_operator_s_entries_are_found_by_their_file_s_name_their_aliases_and_their_hash():
    toml = (
        '[model.mine]\narchitecture = "sdxl"\nlocal = "./models/myModelXL_v9.safetensors"\n'
        'aliases = ["myModelXL_v9_fp16", "0123abcdef"]\n'
        '[lora.ink]\narchitecture = "sdxl"\nlocal = "./loras/ink_sdxl.safetensors"\n'
    )
    catalog = Catalog.from_toml(toml)
    assert catalog.find_written("model", "myModelXL_v9") == catalog.find("model", "mine")
    assert catalog.find_written("model", r"XL\MYMODELXL_V9_FP16.ckpt") == catalog.find("model", "mine")
    assert catalog.find_written("model", "renamed", file_hash="0123ABCDEF") == catalog.find("model", "mine")
    assert catalog.find_written("lora", "ink_sdxl") == catalog.find("lora", "ink")
    # A LoRA tag whose file was renamed: A1111's Lora hashes say which it is.
    text = 'a fox <lora:old_ink:0.5>\nSteps: 20, Seed: 1, Model: mine, Lora hashes: "x: 99, old_ink: ABCDEF123456"'
    catalog = Catalog.from_toml(f'{toml}[lora.ink2]\narchitecture = "sdxl"\naliases = ["abcdef123456"]\n')
    assert "--lora ink2:0.5" in command_of(png_info(png(parameters=text), "x.png", catalog, DEFAULTS, LIMITS))
    # Another kind's file, or a name that only starts like one, is not the entry.
    assert catalog.find_written("model", "ink_sdxl") is None and catalog.find_written("model", "myModelXL") is None


def test_what_made_the_image_that_no_imagine_carries_is_named_in_what_is_left_out():
    """Face restoration, ADetailer, a ControlNet's guide, the image an image-to-image started from: the command
    cannot make them again, so the reply says they made the image."""
    fields = "Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 1024x1024, Model: sdxl"
    a1111 = (
        ", Denoising strength: 0.45, Face restoration: CodeFormer, ADetailer model: face_yolov8n.pt, "
        'ControlNet 0: "Module: canny, Model: diffusers_xl_canny_full [2b69fca4], Weight: 1, Guidance Start: 0"'
    )
    reply = info(png(parameters=f"a fox\n{fields}{a1111}"))
    assert reply.endswith(
        "Left out, as this bot does not take them: the image it started from (strength '0.45'), face restoration"
        " 'CodeFormer', ADetailer 'face_yolov8n.pt', ControlNet 'diffusers_xl_canny_full [2b69fca4]' (its guide"
        " is not in the file)."
    )
    assert command_of(reply).startswith("a fox --model sdxl --size 1024x1024 --steps 30 --cfg 7")
    # This bot's own: a ControlNet's guide, and the image a Vary started from, by their hashes only.
    guided = parse_text(
        "a fox --cn canny-sdxl --guide #3 --steps 20 --seed 5",
        catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS, guides=[Guide("a" * 64, "b" * 64)],
    ).request  # fmt: skip
    varied = guided.model_copy(update={"controlnets": (), "init_image": "c" * 64, "strength": 0.7})
    assert info(png(parameters=parameters_text(guided, 5))).endswith(
        "Left out, as this bot does not take them: ControlNet 'canny-sdxl' (its guide is not in the file)."
    )
    assert info(png(parameters=parameters_text(varied, 5))).endswith(
        "Left out, as this bot does not take them: the image it started from (strength '0.7')."
    )


CIVITAI = (
    "a fox in snow\nNegative prompt: blurry\n"
    "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 5, Size: 1024x1024, Clip skip: 2, "
    "Created Date: 2026-01-01T00:00:00.0000000Z, Civitai resources: "
    '[{"type":"checkpoint","modelVersionId":128078,"modelName":"SDXL","modelVersionName":"v1.0 VAE fix"},'
    '{"type":"lora","weight":0.6,"modelVersionId":62833,"modelName":"Detail Tweaker XL","modelVersionName":"v1.0"}], '
    'Civitai metadata: {"workflow":"txt2img","negativePrompt":"blurry, Steps: 99, Seed: 1"}'
)


def test_civitai_s_own_images_name_their_model_and_loras_by_version_and_the_catalog_s_air_finds_them():
    """Civitai's generator writes no Model and no LoRA tags, only its resources as bare JSON: the checkpoint whose
    version is in a catalog entry's Runware AIR (sdxl's civitai:101055@128078) is asked for, the rest said."""
    reply = info(png(parameters=CIVITAI))
    request = parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert (request.model, request.steps, request.seed, request.cfg_scale) == ("sdxl", 30, 5, 6)  # not the JSON's 99
    assert reply.endswith("Left out, as this bot does not take them: LoRA 'Detail Tweaker XL v1.0'.")
    # A second resources field, which A1111's pattern would read cut at its first comma, changes nothing.
    again = info(png(parameters=CIVITAI + ', Civitai resources: [{"type":"lora","modelVersionId":1}]'))
    assert command_of(again) == command_of(reply) and again.splitlines()[-1] == reply.splitlines()[-1]
    # An operator's LoRA of that version is taken at its weight; a model the text names itself stays the text's.
    catalog = Catalog.from_toml(
        '[model.tiny]\narchitecture = "sdxl"\nlocal = "tiny:base"\nwidth = 128\nheight = 128\n'
        '[model.sdxl]\narchitecture = "sdxl"\nrunware = "civitai:101055@128078"\n'
        '[lora.detail]\narchitecture = "sdxl"\nrunware = "civitai:58390@62833"\n'
    )
    mine = png_info(png(parameters=CIVITAI), "x.png", catalog, DEFAULTS, LIMITS)
    assert "--model sdxl" in command_of(mine) and "--lora detail:0.6" in command_of(mine) and "Left out" not in mine
    named = png_info(png(parameters=CIVITAI + ", Model: tiny"), "x.png", catalog, DEFAULTS, LIMITS)
    assert "--model tiny" in command_of(named)


def test_a_tiled_image_says_so_as_a1111_writes_it_and_its_imagine_tiles_again():
    made = GenerationRequest(prompt="a stone wall", model="sdxl", steps=20, seed=7, tiling=True)
    text = parameters_text(made, 7)
    assert "Tiling: True" in text.splitlines()[-1]
    reply = info(png(parameters=text))
    assert parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request.tiling
    assert "Tiling" not in parameters_text(made.model_copy(update={"tiling": False}), 7)


def test_a_variation_reads_as_a1111_writes_it_each_image_with_its_own_variation_seed():
    made = GenerationRequest(
        prompt="a stone wall", model="sdxl", steps=20, seed=7, count=2, variation_seed=42, variation_strength=0.25
    )
    assert "Seed: 7, " in parameters_text(made, 7, index=1)
    assert "Variation seed: 43, Variation seed strength: 0.25" in parameters_text(made, 7, index=1)
    reply = info(png(parameters=parameters_text(made, 7)))
    again = parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert (again.seed, again.variation_seed, again.variation_strength) == (7, 42, 0.25)
    assert "Variation" not in parameters_text(GenerationRequest(prompt="a stone wall", model="sdxl", seed=7), 7)
    # A1111's own words, a strength of 0 (no variation) read as none.
    a1111 = "a wall\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 1024x1024, Variation seed: 5, "
    assert "--variation 0.3" in command_of(info(png(parameters=a1111 + "Variation seed strength: 0.3")))
    assert "--variation" not in command_of(info(png(parameters=a1111 + "Variation seed strength: 0")))


def test_what_this_bot_refuses_is_left_out_and_said():
    reply = info(png(parameters="a fox\nSteps: 500, Sampler: Heun++ 9, CFG scale: 6, Seed: 9, Size: 833x1216"))
    assert command_of(reply).startswith("a fox --model sdxl --size 1024x1024 --steps 30 --cfg 6 ")
    assert reply.endswith(
        "Left out, as this bot does not take them: steps '500', scheduler 'Heun++ 9', size '833x1216'."
    )


@pytest.mark.parametrize(
    ("data", "name", "sentence"),
    [
        (b"GIF89a a gif", "cat.gif", "PNG info reads PNG, JPEG and WebP files only."),
        (b"\xff\xd8\xff\xe0 a jpeg cut short", "photo.jpg", "PNG info finds no generation parameters in photo.jpg."),
        (exif_image("JPEG", None), "photo.jpg", "PNG info finds no generation parameters in photo.jpg."),
        (exif_image("WEBP", b"ASCII\0\0\0"), "photo.webp", "PNG info finds no generation parameters in photo.webp."),
        (png(), "plain.png", "PNG info finds no generation parameters in plain.png."),
        (png(Comment="hello"), "plain.png", "PNG info finds no generation parameters in plain.png."),
    ],
)
def test_a_file_without_parameters_is_one_sentence(data, name, sentence):
    with pytest.raises(InvalidOption) as refused:
        info(data, name)
    assert str(refused.value) == sentence


def test_what_a_png_says_is_shown_printable_within_a_discord_message_and_never_closes_the_code_block():
    hostile = "a fox ``` <@&123> \x1b[31m red\x07\n" * 200 + "Steps: 20, Seed: 3"
    reply = info(png(parameters=hostile), "evil\x1b[2J.png")
    assert len(reply) <= 2000
    assert all(line == "```" for line in reply.splitlines() if "`" * 3 in line)  # the blocks' own fences only
    assert "No /imagine here makes it" in reply  # control characters are no prompt
    assert not any(ord(char) < 32 and char != "\n" for char in reply)


@pytest.mark.parametrize("most", [1700, 2000, 2800])
def test_a_long_prompt_fits_the_reply_in_the_chat_s_message_the_command_first(most):
    """A prompt of 1,200 characters: the command whole, the parameters text cut to what is left; one of
    2,900 characters: no command fits a message, and the reply says so instead of cutting it."""
    long = ", ".join(["a castle on a hill"] * 60)[:1200]
    reply = png_info(png(parameters=long + "\nSteps: 20, Seed: 3"), "castle.png", CATALOG, DEFAULTS, LIMITS, most)
    assert len(reply) <= most
    command = command_of(reply)
    assert parse_text(command, catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request.prompt == long
    assert reply.split("```\n", 1)[1].startswith("a castle on a hill, a castle")  # what room was left
    longer = ", ".join(["a castle on a hill"] * 200)[:2900]
    reply = png_info(png(parameters=longer + "\nSteps: 20"), "castle.png", CATALOG, DEFAULTS, LIMITS, most)
    assert len(reply) <= most
    (said,) = [line for line in reply.splitlines() if line.startswith("Its /imagine")]
    assert re.fullmatch(rf"Its /imagine here is 29\d\d characters, more than a reply here holds \({most}\)\.", said)
    assert "/imagine a castle" not in reply


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
@pytest.mark.parametrize(
    "comment",
    [
        b"UNICODE\0" + A1111.encode("utf-16-be"),  # piexif's UserComment, A1111's writer
        b"UNICODE\0" + A1111.encode("utf-16-le"),
        b"UNICODE\0" + A1111.encode("utf-16"),  # with a byte order mark
        b"ASCII\0\0\0" + A1111.encode(),
    ],
    ids=["utf-16-be", "utf-16-le", "bom", "ascii"],
)
def test_a_jpeg_or_webp_from_a1111_gives_the_same_reply_as_its_png(kind, comment):
    """A1111 and Forge keep a JPEG's or WebP's parameters in its EXIF UserComment: PNG info reads them
    there, and the /imagine is the one the PNG with the same text gives."""
    data = exif_image(kind, comment)
    reply = info(data, "castle.jpg")
    assert command_of(reply) == command_of(info(png(parameters=A1111)))
    assert reply.startswith("PNG info of castle.jpg:\n```\na castle on a hill <lora:pixel-art:0.7>")


def test_a_tag_without_a_weight_is_weight_one_and_an_unreadable_one_is_left_out_and_said():
    """<lora:pixel-art> is A1111's default multiplier, 1; <lora:x:.> (no number) leaves the prompt and is named."""
    reply = info(png(parameters="a castle <lora:x:.> <lora:pixel-art> at dusk\nSteps: 20"))
    request = parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert request.prompt == "a castle at dusk"
    assert [(lora.name, lora.weight) for lora in request.loras] == [("pixel-art", 1.0)]
    assert reply.endswith("Left out, as this bot does not take them: tag '<lora:x:.>'.")


def test_a_prompt_with_backticks_never_closes_the_command_block():
    """The parser takes ``` in a prompt, but shown as it is it would end the /imagine block and let the rest
    (a role mention) out of it: the command asks for quotes there, and the text shows them."""
    reply = info(png(parameters="a fox ``` <@&123> hi\nSteps: 20"))
    assert "As /imagine here:" in reply
    assert all(line == "```" for line in reply.splitlines() if "`" * 3 in line)
    assert reply.count("```") == 4


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_compressed_text_bomb_is_skipped_not_inflated():
    """10 MB of text in 10 kB of zlib: reading stops at 64 kB and leaves the chunk out."""
    bomb = zlib.compress(b"a" * 10_000_000, 9)
    data = png()
    itxt = _chunk(b"iTXt", b"parameters\0\x01\x00\0\0" + bomb)
    with_bomb = data[:33] + itxt + data[33:]
    assert read_text(with_bomb) == {}
    with pytest.raises(InvalidOption, match="finds no generation parameters"):
        info(with_bomb)


@settings(max_examples=200, deadline=None)
@given(
    cut=st.integers(0, 400),
    noise=st.binary(max_size=200),
    where=st.integers(0, 400),
    text=st.text(max_size=300),
)
def test_any_bytes_give_a_reply_or_one_sentence(cut, noise, where, text):
    """A PNG cut short, with noise spliced in, carrying any text: a reply within the limit, or one sentence."""
    data = png(parameters=text) if text.strip() else png()
    data = data[: max(cut, 8)] if cut < len(data) else data
    data = data[:where] + noise + data[where:]
    try:
        reply = info(data)
    except InvalidOption as error:
        assert_sentence(error)
        return
    assert len(reply) <= 2000 and reply.startswith("PNG info of castle.png:")


WORDS = ["a fox", "<lora:pixel-art:0.7>", "<lora:x:.>", "<lora:y:1e999>", "<lora:z:-", "Negative prompt:", "\n", "```"]
FIELDS = [
    "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model", "Xy", "Model hash", "Clip skip",
    "Refiner", "Refiner switch at", "VAE", "Embeddings", "Hires upscale", "Denoising strength", "ControlNet 0",
    "Face restoration", "Civitai resources", "Civitai metadata",
]  # fmt: skip
VALUES = [
    "25",
    "DPM++ 2M",
    "Karras",
    "6.5",
    "1234",
    "832x1216",
    "sdxl",
    '"\\q"',
    '"a\\"',
    '"\\ud800"',
    "-1",
    "9" * 30,
    "",
    "sd_xl_refiner_1.0 [7440042bbd]",
    "0.8",
    "nan",
    "1e999",
    "tiny-embedding:x, :",
    '"Module: canny, Model: x [1234abcd], Weight: 1"',
    '[{"type":"checkpoint","modelVersionId":128078}, {"type":"lora","weight":"x","modelVersionId":true}]',
    '[{"type":"LORA","modelVersionId":1}, 3, "a", {"type":"embed"}]',
    '{"workflow": "txt2img", "negativePrompt": "a, Steps: 99"}',
    "[[[[[[",
]


@settings(max_examples=300, deadline=None)
@given(
    prompt=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=8).map(" ".join),
    fields=st.lists(st.tuples(st.sampled_from(FIELDS), st.one_of(st.sampled_from(VALUES), st.text(max_size=10)))),
)
def test_any_a1111_like_text_gives_a_reply_or_one_sentence(prompt, fields):
    """Parameters as A1111 lays them out, with broken tags, quotes and numbers: a reply whose /imagine (if any) this
    bot's parser takes, or one sentence; never a traceback."""
    text = prompt + "\nSteps: 20, " + ", ".join(f"{key}: {value}" for key, value in fields)
    try:
        reply = info(png(parameters=text))
    except InvalidOption as error:
        assert_sentence(error)
        return
    assert len(reply) <= 2000
    if "As /imagine here:" in reply:
        # The whole block: a prompt of several lines makes a command of several lines.
        command = reply.split("As /imagine here:\n```\n", 1)[1].split("\n```", 1)[0]
        (one,) = permutations(command.removeprefix("/imagine "))  # braces of the prompt are its own
        parse_text(one, catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS)


# Pillow warns of the broken EXIF it skips (Python's warnings, once per place in production).
@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["JPEG", "WEBP"]),
    cut=st.integers(0, 600),
    noise=st.binary(max_size=200),
    where=st.integers(2, 600),
    text=st.text(max_size=300),
)
def test_any_jpeg_or_webp_bytes_give_a_reply_or_one_sentence(kind, cut, noise, where, text):
    """A JPEG or WebP with any UserComment, cut short and with noise spliced into its EXIF: a reply, or one sentence."""
    data = exif_image(kind, b"UNICODE\0" + text.encode("utf-16-be", errors="surrogatepass"))
    data = data[: max(cut, 12)] if cut < len(data) else data
    data = data[:where] + noise + data[where:]
    try:
        reply = info(data, "photo.jpg")
    except InvalidOption as error:
        assert_sentence(error)
        return
    assert len(reply) <= 2000 and reply.startswith("PNG info of photo.jpg:")

"""The console chat's own texts, through the real chat flow on a real service."""

from __future__ import annotations

import io
import re
from pathlib import Path

from adapters.console import ConsoleChat
from bot.jobs import Requester
from bot.options import OPTIONS
from bot.service import ImageService
from tests.fakes.backend import FakeBackend
from tests.fakes.service import started_service


def ada(service: ImageService, data_dir: Path) -> tuple[ConsoleChat, io.StringIO]:
    """Return the console chat of user ada and what it prints."""
    out = io.StringIO()
    return ConsoleChat(service, Requester(platform="console", user_id="ada"), out, data_dir), out


async def test_help_lists_every_imagine_flag_with_its_range(tmp_path: Path) -> None:
    """`help` shows each option of /imagine as it is typed, so a user need not open the README."""
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        chat, out = ada(service, tmp_path)
        assert await chat.handle("help")
    text = out.getvalue()
    for option in OPTIONS:
        if option != "prompt":
            assert re.search(rf"--{option.replace('_', '-')}\b", text), option
    assert "--steps N" in text and "1–100" in text
    assert "Euler a" in text


async def test_image_files_in_the_console(tmp_path: Path) -> None:
    """`--image PATH` reads a file (the console only); a missing, oversized or non-image file is one line."""
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 200, 10)).save(tmp_path / "green.png")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "big.png").write_bytes(b"\0" * 300_000)
    backend = FakeBackend()
    async with started_service(backend, tmp_path / "data", max_input_bytes=200_000) as (service, _):
        chat, out = ada(service, tmp_path)
        assert await chat.handle(f"/imagine a fox --image {tmp_path / 'green.png'} --strength 0.5")
        assert backend.requests[-1].strength == 0.5 and backend.requests[-1].init_image is not None
        for name in ("missing.png", "notes.png", "big.png"):
            assert not await chat.handle(f"/imagine a fox --image {tmp_path / name}")
    lines = [line for line in out.getvalue().splitlines() if line.startswith("✖")]
    assert len(backend.requests) == 1
    assert lines[0].startswith("✖ --image '") and lines[0].endswith("' cannot be read (No such file or directory).")
    assert lines[1:] == ["✖ --image must be a PNG, JPEG or WebP file.", "✖ --image is 293 KB; the most is 195.3 KB."]


async def test_guide_shows_where_the_guide_the_controlnet_saw_is_kept(tmp_path: Path) -> None:
    """`guide [#id]` names each ControlNet's guide and the file it is kept in (the preprocessed map)."""
    from PIL import Image

    from bot.images import input_path

    Image.new("RGB", (64, 64), (10, 200, 10)).save(tmp_path / "green.png")
    backend = FakeBackend()
    async with started_service(backend, tmp_path / "data") as (service, _):
        chat, out = ada(service, tmp_path / "data")
        assert await chat.handle(f"/imagine a fox --steps 10 --cn tiny-controlnet --guide {tmp_path / 'green.png'}")
        assert await chat.handle("guide #1")
        assert not await chat.handle("guide #1 #2")
    control = backend.requests[-1].controlnets[0]
    lines = out.getvalue().splitlines()
    at = lines.index("#1 guide 1: tiny-controlnet (canny, weight 1, balanced) on steps 1–10 of 10")
    assert lines[at + 1] == f"    {tmp_path / 'data' / input_path(control.guide)}"
    assert lines[-1].startswith("✖ Argument '#2' is not understood")


async def test_a_style_reference_from_a_file_in_the_console(tmp_path: Path) -> None:
    """`--sref PATH:0.5` reads the file as a style reference; `guide` shows it with the layers it acted on."""
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 200, 10)).save(tmp_path / "green.png")
    backend = FakeBackend()
    async with started_service(backend, tmp_path / "data") as (service, _):
        chat, out = ada(service, tmp_path / "data")
        assert await chat.handle(f"/imagine a fox --steps 10 --sref {tmp_path / 'green.png'}:0.5")
        assert await chat.handle("guide")
        assert not await chat.handle(f"/imagine a fox --sref {tmp_path / 'missing.png'}")
    (style,) = backend.requests[-1].controlnets
    assert (style.model, style.style, style.weight, style.end_step) == ("tiny-ip-adapter", True, 0.5, 10)
    lines = out.getvalue().splitlines()
    assert "#1 style reference 1: tiny-ip-adapter (style layers, weight 0.5) on steps 1–10 of 10" in lines
    assert lines[-1].startswith("✖ --sref '") and lines[-1].endswith("' cannot be read (No such file or directory).")


async def test_info_names_the_author_as_the_console_shows_users(tmp_path: Path) -> None:
    """`info` shows the latest generation's parameters, its author plain (no chat mention markup)."""
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        chat, out = ada(service, tmp_path)
        assert await chat.handle("/imagine a red fox --seed 7 --steps 4")
        assert await chat.handle("info")
    text = out.getvalue()
    assert "#1 · generate · done · ada\na red fox\nSteps: 4, " in text and "<@" not in text and "```" not in text
    assert "Seed: 7" in text


async def test_history_counts_the_refiner_split_in_the_steps_that_ran(tmp_path: Path) -> None:
    """40 steps at strength 0.5 run 20; refined at 85 %, history says 17 of those 20 (as Discord and Slack do)."""
    from PIL import Image

    Image.new("RGB", (128, 128), (10, 200, 10)).save(tmp_path / "green.png")
    async with started_service(FakeBackend(), tmp_path / "data") as (service, _):
        chat, out = ada(service, tmp_path)
        assert await chat.handle(
            f"/imagine a fox --image {tmp_path / 'green.png'} --strength 0.5 --steps 40 --refiner 85"
        )
        await chat.handle("history")
    assert " · refiner 17/20 · " in out.getvalue()


async def test_edit_prints_the_imagine_text_that_sent_back_makes_the_image_again(tmp_path: Path) -> None:
    """No form in a terminal: `edit` prints the latest image's /imagine text; pasted back, it makes the same request."""
    backend = FakeBackend()
    async with started_service(backend, tmp_path / "data") as (service, _):
        chat, out = ada(service, tmp_path)
        assert not await chat.handle("edit")
        assert out.getvalue() == "✖ There is no earlier image of yours to edit; make one with /imagine first.\n"
        assert await chat.handle("/imagine a red fox --seed 7 --steps 4")
        assert await chat.handle("edit")
        (line,) = [line for line in out.getvalue().splitlines() if line.startswith("Change it and send it: ")]
        command = line.removeprefix("Change it and send it: ")
        assert command.startswith("/imagine a red fox --model tiny ") and "--seed 7" in command
        assert await chat.handle(command)
        assert not await chat.handle("edit #9")
    first, again = backend.requests
    assert again == first
    assert out.getvalue().splitlines()[-1] == "✖ There is no generation #9."


async def test_pnginfo_reads_a_png_file_and_prints_its_imagine_without_the_code_fences(tmp_path: Path) -> None:
    from tests.bot.test_pnginfo import A1111, png

    (tmp_path / "castle.png").write_bytes(png(parameters=A1111))
    async with started_service(FakeBackend(), tmp_path / "data") as (service, _):
        chat, out = ada(service, tmp_path)
        assert await chat.handle(f"pnginfo {tmp_path / 'castle.png'}")
        assert not await chat.handle(f"pnginfo {tmp_path / 'missing.png'}")
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["PNG info of castle.png:", "a castle on a hill <lora:pixel-art:0.7> <lora:moody-light:1>"]
    assert "```" not in out.getvalue()
    (command,) = [line for line in lines if line.startswith("/imagine ")]
    assert "--seed 1234" in command and lines[-1].startswith("✖ Image '")


async def test_a_prompt_with_choices_makes_and_shows_each_image(tmp_path: Path) -> None:
    """`/imagine a {red, blue} fox`: both jobs are shown to their end, in order; a literal brace is escaped in Edit."""
    backend = FakeBackend()
    async with started_service(backend, tmp_path / "data") as (service, _):
        chat, out = ada(service, tmp_path)
        assert await chat.handle("/imagine a {red, blue} fox --seed 7 --steps 4")
        assert [request.prompt for request in backend.requests] == ["a red fox", "a blue fox"]
        done = [line for line in out.getvalue().splitlines() if " done" in line]
        assert [line.split(" done")[0] for line in done] == ["#1", "#2"]
        assert not await chat.handle("/imagine a {red, blue fox")
        assert out.getvalue().splitlines()[-1] == "✖ Prompt has a '{' without its '}' (write \\{ for a brace itself)."
        assert await chat.handle("/imagine a \\{red\\} fox --steps 4")
        assert await chat.handle("edit")
        assert out.getvalue().splitlines()[-1].startswith("Change it and send it: /imagine a \\{red\\} fox --model")
    assert [request.prompt for request in backend.requests][2:] == ["a {red} fox"]


async def test_blend_takes_two_or_three_images_then_a_prompt(tmp_path: Path) -> None:
    """`blend #1 #2 a cat --ar 2:3`: the model's IP-Adapter on each image, the words and flags after them."""
    backend = FakeBackend()
    async with started_service(backend, tmp_path / "data") as (service, _):
        chat, out = ada(service, tmp_path)
        for line in ("/imagine a red fox", "/imagine a blue sea"):
            assert await chat.handle(line)
        assert await chat.handle("blend #1 #2 a cat --ar 2:3")
        request = backend.requests[-1]
        assert request.prompt == "a cat" and request.width < request.height
        assert [(c.model, c.weight) for c in request.controlnets] == [("tiny-ip-adapter", 0.5)] * 2
        assert await chat.handle("blend #1 #2 #1")
        assert [c.weight for c in backend.requests[-1].controlnets] == [0.33] * 3
        for line in ("blend #1", "blend #1 #2 #1 #2", "blend a cat"):
            assert not await chat.handle(line)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("✖")]
    assert lines == [
        "✖ blend takes 2 or 3 images (#12, #12.2 or a file) and then a prompt if you like, not '#1'.",
        "✖ blend takes 2 or 3 images, not 4.",
        "✖ blend takes 2 or 3 images (#12, #12.2 or a file) and then a prompt if you like, not 'a cat'.",
    ]
    assert len(backend.requests) == 4

"""Copy /imagine: the gallery shows the command that makes an image again; a chat reads it back as the same request."""

from __future__ import annotations

import html
import re

from tests.adapters.gallery.conftest import ALICE, Gallery
from tests.adapters.gallery.test_gallery_web import csrf_of


def commands_in(page: str) -> list[str]:
    """Return the /imagine commands a page's Copy buttons carry, in order."""
    return [
        html.unescape(found) for found in re.findall(r'<button type="button" class="copy" data-copy="([^"]*)"', page)
    ]


async def _made(gallery: Gallery, generation_id: int) -> None:
    job = gallery.service.job(generation_id)
    if job is not None:
        await job.result()


async def test_the_detail_view_copies_the_command_that_makes_the_same_request(gallery: Gallery):
    """The command on the page, sent as /imagine, queues exactly the request of the image, seed and LoRA included."""
    fox = await gallery.make(
        ALICE, '“a "red" fox --not a flag”', "--seed 7 --lora tiny-lora:0.8 --steps 6 --refiner 80"
    )
    assert fox.request.prompt == 'a "red" fox --not a flag'
    page = await (await gallery.client.get(f"{await gallery.path(ALICE)}i/{fox.id}")).text()
    (command,) = commands_in(page)
    assert f"<code>{command}</code>" in html.unescape(page)
    assert command.startswith("/imagine ") and "--seed 7" in command and "--lora tiny-lora:0.8" in command
    again = await gallery.service.imagine(command.removeprefix("/imagine "), ALICE)
    assert again.request == fox.request


async def test_a_variations_command_names_its_source_image_and_reproduces_it(gallery: Gallery):
    """A Vary made in the gallery: its command says --image #<original>, and reads back to the same request."""
    fox = await gallery.make(ALICE, "a red fox", "--seed 7")
    path = await gallery.path(ALICE)
    value = csrf_of(await (await gallery.client.get(f"{path}i/{fox.id}")).text())
    response = await gallery.client.post(
        f"{path}i/{fox.id}/vary", data={"csrf": value, "kind": "subtle"}, allow_redirects=False
    )
    vary_id = int(response.headers["Location"].rsplit("/", 1)[1])
    await _made(gallery, vary_id)
    (command,) = commands_in(await (await gallery.client.get(f"{path}i/{vary_id}")).text())
    assert f"--image #{fox.id} --strength 0.35" in command
    vary = await gallery.service.details(ALICE, vary_id)
    again = await gallery.service.imagine(command.removeprefix("/imagine "), ALICE)
    assert again.request == vary.request


async def test_grid_cards_carry_the_same_commands_and_an_upscale_has_none(gallery: Gallery):
    """Each card of the grid has its Copy button; an upscale, which no /imagine makes, has none."""
    fox = await gallery.make(ALICE, "a red fox", "--seed 7")
    path = await gallery.path(ALICE)
    value = csrf_of(await (await gallery.client.get(f"{path}i/{fox.id}")).text())
    response = await gallery.client.post(
        f"{path}i/{fox.id}/upscale", data={"csrf": value, "factor": "2"}, allow_redirects=False
    )
    upscale_id = int(response.headers["Location"].rsplit("/", 1)[1])
    await _made(gallery, upscale_id)
    grid = await (await gallery.client.get(path)).text()
    detail = await (await gallery.client.get(f"{path}i/{fox.id}")).text()
    assert commands_in(grid) == commands_in(detail)  # the fox's only: the upscale's card has none
    assert commands_in(await (await gallery.client.get(f"{path}i/{upscale_id}")).text()) == []

"""`gallery` in every chat: a private link that opens the user's own gallery, and `gallery revoke`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from bot.chat import ChatFlow, Text
from bot.errors import GalleryOff
from tests.adapters.gallery.conftest import ALICE, Gallery
from tests.fakes.backend import FakeBackend
from tests.fakes.service import started_service


async def test_gallery_answers_with_a_link_that_opens_the_users_gallery(gallery: Gallery):
    """`gallery` replies (to the asker only) with a link to their images, how long it works and how to revoke."""
    await gallery.make(ALICE, "a red fox")
    reply = await ChatFlow(gallery.service, command="/imagine ").text(ALICE, "gallery")
    assert isinstance(reply, Text)
    link = re.search(r"http://gallery\.test/g/\S+/", reply.text)
    assert link and "7 days" in reply.text and "/imagine gallery revoke" in reply.text
    html = await (await gallery.client.get(urlsplit(link.group(0)).path)).text()
    assert "a red fox" in html


async def test_gallery_revoke_kills_the_links_given_before(gallery: Gallery):
    """After `gallery revoke` the earlier link shows the no-longer-works page."""
    flow = ChatFlow(gallery.service)
    first = await flow.text(ALICE, "gallery")
    assert isinstance(first, Text)
    path = urlsplit(re.search(r"http\S+/", first.text).group(0)).path  # type: ignore[union-attr]
    revoked = await flow.text(ALICE, "gallery revoke")
    assert isinstance(revoked, Text) and "stopped working" in revoked.text
    assert (await gallery.client.get(path)).status == 410


async def test_gallery_followed_by_other_words_is_a_prompt_on_slack(gallery: Gallery):
    """'/imagine gallery of old masters' draws a gallery; it is not the command."""
    assert await ChatFlow(gallery.service, command="/imagine ").text(ALICE, "gallery of old masters") is None


async def test_gallery_says_so_when_the_operator_has_not_turned_it_on(tmp_path):
    """Without IMAGEBOT_GALLERY_PORT, `gallery` is one sentence naming the setting."""
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        try:
            await ChatFlow(service).text(ALICE, "gallery")
        except GalleryOff as error:
            assert "IMAGEBOT_GALLERY_PORT" in str(error)
        else:
            raise AssertionError("no refusal")


async def test_vary_region_answers_a_private_link_to_the_images_editor_for_its_author_only(gallery: Gallery):
    """🖌️ Vary (Region) under image 2 of a result: a link (to the clicker alone) to that image's page in their gallery,
    how long it works; another member's click is refused, as their Vary would be."""
    from bot.errors import NotAllowed
    from tests.adapters.gallery.conftest import BOB

    foxes = await gallery.make(ALICE, "two foxes", "--count 2 --size 256x256")
    assert "region" in gallery.service.result_actions(foxes.request)
    reply = await ChatFlow(gallery.service).action(ALICE, "region", foxes.id, 1)
    assert isinstance(reply, Text)
    link = re.search(rf"http://gallery\.test/g/\S+/i/{foxes.id}/region\?image=2", reply.text)
    assert (
        link and reply.text.startswith(f"🖌️ Select the parts of #{foxes.id}.2 to make again") and "7 days" in reply.text
    )
    page = await gallery.client.get(urlsplit(link.group(0)).path, params={"image": "2"})
    assert page.status == 200 and '<canvas width="256" height="256"' in await page.text()
    try:
        await ChatFlow(gallery.service).action(BOB, "region", foxes.id)
    except NotAllowed as error:
        assert str(error) == "Only the author of this image can vary a region of it."
    else:
        raise AssertionError("no refusal")


async def test_vary_region_is_not_offered_without_a_gallery_and_an_old_button_says_why(tmp_path):
    """Its selection is made on the gallery's page: without a gallery there is no button, and a click is the
    sentence naming the setting."""
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        fox = await (await service.imagine("a red fox --size 256x256", ALICE)).result()
        assert "region" not in service.result_actions(fox.request)
        try:
            await ChatFlow(service).action(ALICE, "region", fox.id)
        except GalleryOff as error:
            assert "IMAGEBOT_GALLERY_PORT" in str(error)
        else:
            raise AssertionError("no refusal")


async def test_region_as_text_names_any_image_and_words_after_it_are_a_prompt_on_slack(gallery: Gallery):
    """``region [#id[.n]]`` (the console, Slack; Discord's /region): the same private link as the button, for the
    latest image when none is named; ``region of ice`` is a prompt where prompts are typed, a sentence elsewhere."""
    from bot.errors import InvalidOption

    foxes = await gallery.make(ALICE, "two foxes", "--count 2 --size 256x256")
    flow = ChatFlow(gallery.service, command="/imagine ")
    for typed, image in (("region", f"#{foxes.id}"), (f"region #{foxes.id}.2", f"#{foxes.id}.2")):
        reply = await flow.text(ALICE, typed)
        assert isinstance(reply, Text) and reply.text.startswith(f"🖌️ Select the parts of {image} to make again")
    assert f"/i/{foxes.id}/region?image=2" in reply.text
    assert await flow.text(ALICE, "region of ice") is None
    try:
        await flow.text(ALICE, "region of ice", strict=True)
    except InvalidOption as error:
        assert str(error) == "region takes an optional #id, not 'of ice'."
    else:
        raise AssertionError("no refusal")

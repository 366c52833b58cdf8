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

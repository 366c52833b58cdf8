"""A server's showcase: the images their authors starred, for anyone with the server's link; never another."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from adapters.gallery import BadLink, Links, Server, create_app, serving
from bot.chat import ChatFlow, Text
from bot.errors import BotError, GalleryOff
from bot.jobs import Requester
from bot.policy import rule_changes
from tests.adapters.gallery.conftest import ALICE, BOB, Gallery
from tests.adapters.gallery.test_gallery_web import csrf_of
from tests.fakes.backend import FakeBackend
from tests.fakes.service import started_service
from tests.properties.sentences import FUZZ

CAROL = Requester("discord", "333", workspace="guild-2", channel="chan-9")
ALICE_DM = Requester("discord", "111", channel="dm-1", direct=True)


async def turn(gallery: Gallery, on: bool, who: Requester = ALICE) -> None:
    """Turn the showcase of the user's server on or off, as its admin command does."""
    changes = rule_changes(await gallery.service.admin.policy(who), gallery.service.catalog, showcase=on)
    await gallery.service.admin.update_policy(who, changes, may_manage=True)


async def showcase_path(gallery: Gallery, who: Requester = ALICE) -> str:
    """Return the path of the server's showcase link, as `gallery showcase` gives it."""
    return urlsplit(await gallery.service.showcase.link(who)).path


def ids_in(page: str) -> set[int]:
    return {int(found) for found in re.findall(r'id="g([0-9]+)"', page)}


async def test_the_showcase_shows_only_starred_unflagged_finished_images_of_its_server(gallery: Gallery):
    """Starred images of the server, by any member; not unstarred ones, other servers', DMs' or flagged ones."""
    gallery.backend.nsfw_seeds.update({55, 61})
    fox = await gallery.make(ALICE, "a red fox", "--seed 7")
    owl = await gallery.make(ALICE, "an unstarred owl")
    tiger = await gallery.make(BOB, "bob's tiger")
    flagged = await gallery.make(ALICE, "a flagged thing", "--seed 55")
    pair = await gallery.make(ALICE, "a pair of cats", "--seed 60 --n 2")
    elsewhere = await gallery.make(CAROL, "carol's heron")
    private = await gallery.make(ALICE_DM, "a direct message moth")
    for who, generation in ((ALICE, fox), (BOB, tiger), (ALICE, flagged), (ALICE, pair), (CAROL, elsewhere)):
        await gallery.service.star(who, generation.id)
    await gallery.service.star(ALICE_DM, private.id)
    await turn(gallery, True)
    await turn(gallery, True, CAROL)
    path = await showcase_path(gallery)

    response = await gallery.client.get(path)
    page = await response.text()
    assert response.status == 200
    assert ids_in(page) == {fox.id, tiger.id, pair.id}
    assert page.index("a pair of cats") < page.index("bob&#39;s tiger") < page.index("a red fox")  # newest first
    assert "owl" not in page and "heron" not in page and "moth" not in page and "flagged" not in page

    png = await gallery.client.get(f"{path}image/{fox.id}-0.png")
    assert await png.read() == (gallery.data_dir / fox.images[0].path).read_bytes()
    thumb = await gallery.client.get(f"{path}thumb/{tiger.id}-0.webp")
    with Image.open(io.BytesIO(await thumb.read())) as image:
        assert image.format == "WEBP"
    assert (await gallery.client.get(f"{path}image/{pair.id}-0.png")).status == 200
    for hidden in (f"{pair.id}-1", f"{owl.id}-0", f"{flagged.id}-0", f"{elsewhere.id}-0", f"{private.id}-0"):
        for route in (f"image/{hidden}.png", f"thumb/{hidden}.webp"):
            assert (await gallery.client.get(path + route)).status == 404, route
    # Carol's server has its own showcase, with only its own image.
    assert ids_in(await (await gallery.client.get(await showcase_path(gallery, CAROL))).text()) == {elsewhere.id}


async def test_only_the_author_stars_and_each_answer_says_where_the_image_shows(gallery: Gallery):
    """Bob cannot star Alice's image; Alice's answers follow the showcase being off, on, flagged or a DM."""
    gallery.backend.nsfw_seeds.add(55)
    fox = await gallery.make(ALICE, "a red fox")
    with pytest.raises(BotError) as refused:
        await gallery.service.star(BOB, fox.id)
    assert str(refused.value) == "Only the author of this image can star it."
    assert not (await gallery.history.generations.get(fox.id)).starred  # type: ignore[union-attr]

    star = gallery.service.star
    assert await star(ALICE, fox.id) == (
        f"⭐ #{fox.id} is starred; it shows in this server's showcase once server managers turn it on."
    )
    await turn(gallery, True)
    assert await star(ALICE, None) == f"⭐ #{fox.id} is starred and shows in the server's showcase."
    assert (
        await star(ALICE, fox.id, starred=False)
        == f"☆ #{fox.id} is no longer starred; it has left the server's showcase."
    )
    flagged = await gallery.make(ALICE, "a flagged thing", "--seed 55")
    assert await star(ALICE, flagged.id) == f"⭐ #{flagged.id} is starred, but flagged images never go to the showcase."
    moth = await gallery.make(ALICE_DM, "a moth")
    assert await star(ALICE_DM, moth.id) == (
        f"⭐ #{moth.id} is starred. Only images made in a server go to a showcase, not those of direct messages."
    )


async def test_an_unfinished_image_cannot_be_starred(gallery: Gallery):
    """A queued image is refused with a sentence and stays unstarred."""
    gallery.backend.gate = asyncio.Event()
    job = await gallery.service.imagine("a slow fox", ALICE)
    with pytest.raises(BotError) as refused:
        await gallery.service.star(ALICE, job.id)
    assert re.fullmatch(rf"star takes a finished image, and #{job.id} is (queued|running)\.", str(refused.value))
    gallery.backend.gate.set()
    await job.result()
    assert not (await gallery.history.generations.get(job.id)).starred  # type: ignore[union-attr]


async def test_turning_the_showcase_off_kills_its_link_and_on_again_makes_a_new_one(gallery: Gallery):
    """Off: the link says it no longer works (410). On again: a new link; the old one stays dead."""
    fox = await gallery.make(ALICE, "a red fox")
    await gallery.service.star(ALICE, fox.id)
    await turn(gallery, True)
    old = await showcase_path(gallery)
    await turn(gallery, True)  # on while on: the same link keeps working
    assert await showcase_path(gallery) == old
    assert (await gallery.client.get(old)).status == 200

    await turn(gallery, False)
    gone = await gallery.client.get(old)
    assert gone.status == 410 and "turned off or given a new link" in await gone.text()
    assert (await gallery.client.get(f"{old}image/{fox.id}-0.png")).status == 410
    with pytest.raises(BotError) as refused:
        await gallery.service.showcase.link(BOB)
    assert str(refused.value) == (
        "This server's showcase is off; server managers can turn it on (admin setting showcase)."
    )
    audit = await gallery.history.policies.recent_audit("discord", "guild-1")
    assert audit[0].detail == "showcase=off" and audit[1].detail == "showcase=on"

    await turn(gallery, True)
    new = await showcase_path(gallery)
    assert new != old
    assert (await gallery.client.get(new)).status == 200
    assert (await gallery.client.get(old)).status == 410
    assert "showcase: on" in (await gallery.service.admin.policy(ALICE)).summary()


async def test_showcase_and_personal_links_do_not_open_each_other_and_forged_ones_are_not_found(gallery: Gallery):
    """A personal token under /s/, a showcase token under /g/, or a tampered one: a plain 404."""
    fox = await gallery.make(ALICE, "a red fox")
    await gallery.service.star(ALICE, fox.id)
    await turn(gallery, True)
    showcase_token = (await showcase_path(gallery)).split("/")[2]
    personal_token = (await gallery.path(ALICE)).split("/")[2]
    payload, signature = showcase_token.split(".")
    for path in (
        f"/s/{personal_token}/",
        f"/g/{showcase_token}/",
        f"/g/{showcase_token}/image/{fox.id}-0.png",
        f"/s/{payload}.{signature[:-2]}AA/",
        f"/s/{payload[:-2]}AA.{signature}/",
        f"/s/{'x' * 40}/",
    ):
        response = await gallery.client.get(path)
        page = await response.text()
        assert response.status == 404 and "Traceback" not in page and "Not found" in page, path
    # A showcase link has no actions: posting is not allowed, and no personal route exists under it.
    posted = await gallery.client.post(f"/s/{showcase_token}/i/{fox.id}/delete", data={"csrf": "x"})
    assert posted.status in (404, 405)
    assert await gallery.history.generations.get(fox.id) is not None
    assert (await gallery.client.get(f"/s/{showcase_token}/i/{fox.id}")).status == 404


async def test_malformed_showcase_pages_get_a_plain_bad_request(gallery: Gallery):
    """A cursor that is no id is a 400 page, not a traceback."""
    await turn(gallery, True)
    path = await showcase_path(gallery)
    for after in ("x", "-1", "0", "99999999999999999999", "1e5"):
        response = await gallery.client.get(path, params={"after": after})
        assert response.status == 400 and "Traceback" not in await response.text(), after


async def test_showcase_pages_follow_one_another_by_id(gallery: Gallery):
    """25 starred images: the first page shows 24, its Older link the oldest one."""
    made = []
    for n in range(25):
        generation = await gallery.make(ALICE, f"image {n}")
        await gallery.service.star(ALICE, generation.id)
        made.append(generation.id)
    await turn(gallery, True)
    path = await showcase_path(gallery)
    first = await (await gallery.client.get(path)).text()
    assert ids_in(first) == set(made[1:])
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older is not None
    second = await (await gallery.client.get(older.group(1).replace("&amp;", "&"))).text()
    assert ids_in(second) == {made[0]} and 'rel="next"' not in second


async def test_the_gallery_star_button_stars_and_unstars_for_the_showcase(gallery: Gallery):
    """The detail page's button (POST with the CSRF value) stars the image; the grid shows ⭐; unstar takes it out."""
    fox = await gallery.make(ALICE, "a red fox")
    await turn(gallery, True)
    path, shared = await gallery.path(ALICE), await showcase_path(gallery)
    page = await (await gallery.client.get(f"{path}i/{fox.id}")).text()
    assert "Star for the server's showcase" in page
    refused = await gallery.client.post(f"{path}i/{fox.id}/star", data={"csrf": "0" * 32})
    assert refused.status == 403 and not (await gallery.history.generations.get(fox.id)).starred  # type: ignore[union-attr]

    value = csrf_of(page)
    response = await gallery.client.post(f"{path}i/{fox.id}/star", data={"csrf": value}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == f"{path}i/{fox.id}"
    assert "⭐ Starred: unstar" in await (await gallery.client.get(f"{path}i/{fox.id}")).text()
    assert 'title="starred for the showcase"' in await (await gallery.client.get(path)).text()
    assert ids_in(await (await gallery.client.get(shared)).text()) == {fox.id}

    await gallery.client.post(f"{path}i/{fox.id}/unstar", data={"csrf": value})
    assert ids_in(await (await gallery.client.get(shared)).text()) == set()


async def test_deleting_or_forgetting_a_starred_image_takes_it_out_of_the_showcase(gallery: Gallery):
    """A deleted image and a forgotten user's images leave the showcase with them."""
    fox, owl = await gallery.make(ALICE, "a red fox"), await gallery.make(BOB, "an owl")
    await gallery.service.star(ALICE, fox.id)
    await gallery.service.star(BOB, owl.id)
    await turn(gallery, True)
    path = await showcase_path(gallery)
    assert ids_in(await (await gallery.client.get(path)).text()) == {fox.id, owl.id}
    await gallery.service.delete(BOB, owl.id)
    await gallery.service.forget(ALICE)
    assert ids_in(await (await gallery.client.get(path)).text()) == set()
    assert (await gallery.client.get(f"{path}image/{fox.id}-0.png")).status == 404


async def test_showcase_pages_carry_the_security_headers_and_the_log_never_holds_the_token(gallery: Gallery, caplog):
    """The same headers as the personal pages; the access log shows /s/…/ without the token."""
    await turn(gallery, True)
    path = await showcase_path(gallery)
    token = path.split("/")[2]
    app = create_app(service=gallery.service, store=gallery.store, links=gallery.links)
    caplog.set_level(logging.INFO, logger="imagebot.gallery.access")
    async with serving(app, "127.0.0.1", 0) as runner, aiohttp.ClientSession() as session:
        host, port = runner.addresses[0][:2]
        async with session.get(f"http://{host}:{port}{path}") as response:
            assert response.status == 200
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "<script>" not in await response.text()
    lines = [record.getMessage() for record in caplog.records if record.name == "imagebot.gallery.access"]
    assert lines and all(token not in line for line in lines)
    assert any("/s/…/" in line for line in lines)


async def test_the_chat_words_star_unstar_and_gallery_showcase(gallery: Gallery):
    """The console's words: `star`, `unstar #id`, `gallery showcase`; refusals are sentences."""
    flow = ChatFlow(gallery.service)
    fox = await gallery.make(ALICE, "a red fox")
    with pytest.raises(BotError) as refused:
        await flow.text(ALICE, "gallery showcase", strict=True)
    assert "showcase is off" in str(refused.value)
    await turn(gallery, True)
    starred = await flow.text(ALICE, "star", strict=True)
    assert isinstance(starred, Text) and starred.text.startswith(f"⭐ #{fox.id} is starred and shows")
    link = await flow.text(BOB, "gallery showcase", strict=True)
    assert isinstance(link, Text) and "/s/" in link.text and "starred" in link.text
    shared = urlsplit(link.text.split()[3]).path
    assert ids_in(await (await gallery.client.get(shared)).text()) == {fox.id}
    unstarred = await flow.text(ALICE, f"unstar #{fox.id}", strict=True)
    assert isinstance(unstarred, Text) and unstarred.text.startswith(f"☆ #{fox.id} is no longer starred")
    with pytest.raises(BotError) as refused:
        await flow.text(ALICE_DM, "gallery showcase", strict=True)
    assert str(refused.value) == "A showcase belongs to a server; ask for it there, not here."
    # On Slack, "star wars poster" is a prompt, not the star command.
    assert await flow.text(ALICE, "star wars poster") is None


async def test_without_a_gallery_the_showcase_link_is_refused_with_the_gallerys_sentence(tmp_path: Path):
    """A bot that serves no web pages says so."""
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        with pytest.raises(GalleryOff):
            await service.showcase.link(ALICE)


_LINKS = Links(secret=b"k" * 32, store=None, base_url="http://x", data_dir=Path("/nonexistent"))  # type: ignore[arg-type]


@FUZZ
@given(token=st.text(max_size=300))
@example(token="WyJkaXNjb3JkIiwiZ3VpbGQtMSIsdHJ1ZV0.x")
def test_only_our_own_showcase_tokens_name_a_server(token: str):
    """Any text is a BadLink, unless it is a token we signed, which reads back to what was signed."""
    try:
        server = _LINKS.server(token)
    except BadLink:
        return
    assert isinstance(server, Server)


@FUZZ
@given(platform=st.text(max_size=20), workspace=st.text(max_size=40), since=st.integers(0, 2**53))
def test_a_signed_showcase_token_reads_back_to_its_server(platform: str, workspace: str, since: int):
    """What `showcase_link` signs, `server` reads back exactly; one character changed is a BadLink."""
    link = asyncio.run(_LINKS.showcase_link(platform, workspace, since))
    token = link.rsplit("/", 2)[1]
    assert _LINKS.server(token) == Server(platform, workspace, since)
    payload, signature = token.rsplit(".", 1)
    # The first character of the signature: all six of its bits count (the last one's may not).
    tampered = f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    with pytest.raises(BadLink):
        _LINKS.server(tampered)


async def test_a_slack_workspaces_showcase_speaks_of_the_workspace(gallery: Gallery):
    """The page and the dead link's sentence use Slack's words: a workspace, /imagine gallery showcase."""
    ada = Requester("slack", "U_ADA", workspace="T1", channel="C1")
    fox = await gallery.make(ada, "a red fox")
    await gallery.service.star(ada, fox.id)
    await turn(gallery, True, ada)
    path = await showcase_path(gallery, ada)
    page = await (await gallery.client.get(path)).text()
    assert "The images this workspace's members starred." in page and ids_in(page) == {fox.id}
    await turn(gallery, False, ada)
    gone = await (await gallery.client.get(path)).text()
    assert "This workspace&#39;s showcase was turned off" in gone and "/imagine gallery showcase" in gone


async def test_the_starred_filter_of_ones_own_gallery_shows_only_starred_images(gallery: Gallery):
    """`Starred only` in the search form: the owner's starred images, with the other filters; the box stays ticked."""
    fox, owl = await gallery.make(ALICE, "a red fox"), await gallery.make(ALICE, "a red owl")
    await gallery.make(ALICE, "a blue fox")
    await gallery.service.star(ALICE, fox.id)
    await gallery.service.star(ALICE, owl.id)
    path = await gallery.path(ALICE)
    page = await (await gallery.client.get(path, params={"starred": "1"})).text()
    assert ids_in(page) == {fox.id, owl.id} and 'name="starred" value="1" checked' in page
    assert ids_in(await (await gallery.client.get(path, params={"starred": "1", "q": "fox"})).text()) == {fox.id}
    await gallery.service.star(ALICE, owl.id, starred=False)
    assert ids_in(await (await gallery.client.get(path, params={"starred": "1"})).text()) == {fox.id}

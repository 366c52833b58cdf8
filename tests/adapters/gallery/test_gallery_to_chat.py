"""A gallery action's result also appears in the chat where the original was made, with that chat's buttons.

The gallery and the chat share one service, as in ``imagebot run``: Discord and Slack
run against their loopback fakes, the gallery's pages are posted to over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePath
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.console import ConsoleChat
from adapters.gallery import Links, create_app
from bot.actions import encode_action
from bot.errors import NotFound
from bot.jobs import Requester
from bot.service import ImageService
from storage import SqliteGallery
from tests.adapters.discord.conftest import running_bot
from tests.adapters.discord.test_discord_bot import _custom_ids, _finished, _imagine, _reply_of
from tests.adapters.slack.conftest import action_ids, running_app
from tests.fakes.backend import FakeBackend
from tests.fakes.discord import FakeDiscord
from tests.fakes.service import started_service
from tests.fakes.slack import FakeSlack


@contextlib.asynccontextmanager
async def gallery_of(service: ImageService, data_dir: Path) -> AsyncIterator[tuple[TestClient, Links]]:
    """Serve the gallery's pages on the same service and database as the running chat."""
    store = await SqliteGallery.open(data_dir / "imagebot.sqlite3")
    links = Links(secret=b"test-secret", store=store, base_url="http://gallery.test", data_dir=data_dir)
    try:
        app = create_app(service=service, store=store, links=links, rate_limit=10_000)
        async with TestClient(TestServer(app)) as client:
            yield client, links
    finally:
        await store.close()


async def click_in_gallery(
    client: TestClient, links: Links, who: Requester, generation_id: int, action: str, **form: str
) -> tuple[int, str]:
    """POST a card's action as the gallery page's form does; return the new generation's id and the page shown."""
    path = urlsplit(await links.link(who.platform, who.user_id)).path
    token = path.split("/")[2]
    response = await client.post(
        f"{path}i/{generation_id}/{action}", data={"csrf": links.csrf(token), **form}, allow_redirects=False
    )
    assert response.status == 303, await response.text()
    location = response.headers["Location"]
    page = await client.get(location)
    assert page.status == 200
    return int(urlsplit(location).path.rsplit("/", 1)[1]), await page.text()


async def test_a_gallery_reroll_of_a_discord_image_is_posted_in_its_channel_with_working_buttons(tmp_path):
    """Reroll in the gallery: a new message in the original's channel, image and buttons; its 🔄 button works."""
    async with (
        FakeDiscord() as fake,
        running_bot(fake, FakeBackend(), tmp_path, seeds=itertools.count(100).__next__) as running,
        gallery_of(running.service, tmp_path) as (client, links),
    ):
        _, first = await _imagine(fake, {"prompt": "a red fox", "seed": "7"})
        before = set(fake.messages)
        new_id, page = await click_in_gallery(client, links, running.who(fake.alice), 1, "reroll")
        assert "It also appears in the chat where #1 was made." in page
        await fake.wait_for(lambda: set(fake.messages) - before)
        (posted_id,) = set(fake.messages) - before
        posted = await _finished(fake, fake.messages[posted_id])

        assert posted.channel_id == first.channel_id and posted.interaction_id is None
        assert posted.edits[0]["content"].startswith(f"⏳ #{new_id} · seed 100")
        assert "from the gallery" in posted.edits[0]["content"]
        generation = await running.service.details(running.who(fake.alice), new_id)
        stored = tmp_path / generation.images[0].path
        assert [(a.filename, a.data) for a in posted.attachments] == [
            (f"imagebot-{PurePath(stored).name}", stored.read_bytes())
        ]
        assert posted.embeds[0]["image"]["url"] == f"attachment://imagebot-{PurePath(stored).name}"
        assert _custom_ids(posted) == [encode_action(action, new_id) for action in _result_actions(first)]

        click = await fake.click(posted.id, encode_action("reroll", new_id))
        again = await _finished(fake, await _reply_of(click))
        assert {f["name"]: f["value"] for f in again.embeds[0]["fields"]}["Seed"] == "101"
        assert (await running.service.details(running.who(fake.alice), new_id + 1)).parent_id == new_id


def _result_actions(message) -> list[str]:
    """Return the actions of a result message's buttons, in their order (``ib:<action>:<id>``)."""
    return [custom_id.split(":")[1] for custom_id in _custom_ids(message)]


async def test_a_gallery_vary_of_a_slack_image_is_posted_in_its_channel_with_working_buttons(tmp_path):
    """Vary in the gallery: a card in the original's Slack channel, the image uploaded below it; its Reroll works."""
    async with (
        FakeSlack() as fake,
        running_app(fake, FakeBackend(), tmp_path, seeds=itertools.count(100).__next__) as running,
        gallery_of(running.service, tmp_path) as (client, links),
    ):
        sent = await fake.send_slash(running.url, text="a red fox --seed 7")
        assert sent.status == 200
        first = await running.finished_card(1)
        new_id, _ = await click_in_gallery(client, links, running.who(), 1, "vary", kind="subtle")
        card = await running.finished_card(2)

        first_text = card.updates[0]["text"]
        assert first_text.startswith(f"⏳ #{new_id} · seed 100") and first_text.endswith("from the gallery")
        assert [a.split(":")[1] for a in action_ids(card)] == [a.split(":")[1] for a in action_ids(first)]
        assert all(a.endswith(f":{new_id}") for a in action_ids(card))
        generation = await running.service.details(running.who(), new_id)
        assert generation.action == "vary" and generation.message_ref == f"C1:{card.ts}"
        stored = tmp_path / generation.images[0].path
        uploads = [m.files for m in fake.channel_messages() if m.files]
        assert [(f"imagebot-{PurePath(stored).name}", stored.read_bytes())] in uploads

        (value,) = [
            element["value"]
            for block in card.blocks or []
            for element in block.get("elements") or []
            if element.get("action_id") == f"ib:reroll:{new_id}"
        ]
        clicked = await fake.send_block_action(
            running.url, f"ib:reroll:{new_id}", value, message_ts=card.ts, channel_id=card.channel
        )
        assert clicked.status == 200
        rerolled = await running.finished_card(3)
        assert all(a.endswith(f":{new_id + 1}") for a in action_ids(rerolled))
        assert (await running.service.details(running.who(), new_id + 1)).parent_id == new_id


async def test_a_gallery_action_whose_chat_is_not_running_stays_in_the_gallery(tmp_path):
    """A Slack image rerolled in the gallery while only Discord runs: the job runs, no chat gets a message, no error."""
    async with (
        FakeDiscord() as fake,
        running_bot(fake, FakeBackend(), tmp_path) as running,
        gallery_of(running.service, tmp_path) as (client, links),
    ):
        slack_user = Requester("slack", "U_ALICE", workspace="T1", channel="C1")
        original = await (await running.service.imagine("a red fox", slack_user)).result()
        before = set(fake.messages)
        new_id, page = await click_in_gallery(client, links, slack_user, original.id, "reroll")
        assert "It also appears" not in page
        await _made(running.service, slack_user, new_id)
        assert set(fake.messages) == before


async def test_a_gallery_action_of_a_console_image_is_printed_in_the_running_console(tmp_path):
    """The console of `imagebot chat` prints the gallery's job, then where its image is."""
    who = Requester("console", "me")
    out = io.StringIO()
    async with started_service(FakeBackend(), tmp_path, seeds=itertools.count(100).__next__) as (service, _):
        chat = ConsoleChat(service, who, out, tmp_path)
        assert await chat.handle("imagine a red fox --seed 7")
        read, write = os.pipe()
        with open(read) as stdin, open(write, "w") as typing:
            session = asyncio.create_task(chat.run(stdin))
            try:
                async with gallery_of(service, tmp_path) as (client, links):
                    await _until(lambda: service.poster("console") is chat)
                    new_id, _ = await click_in_gallery(client, links, who, 1, "reroll")
                    await _until(lambda: f"#{new_id} done" in out.getvalue())
            finally:
                typing.write("quit\n")
                typing.flush()
                await session
        lines = out.getvalue().splitlines()
        assert any(line.startswith(f"⏳ #{new_id} · seed 100") and "from the gallery" in line for line in lines)
        stored = (await service.details(who, new_id)).images[0].path
        assert f"  {tmp_path / stored}" in lines
        assert service.poster("console") is None


async def _made(service: ImageService, who: Requester, generation_id: int) -> None:
    """Wait until a generation is finished, and check that it was made."""
    job = service.job(generation_id)
    if job is not None:
        await job.result()
    assert (await service.details(who, generation_id)).status == "done"


async def _until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def delete_in_gallery(client: TestClient, links: Links, who: Requester, generation_id: int) -> None:
    """POST a card's Delete as the gallery page's form does; check it leads back to the grid."""
    path = urlsplit(await links.link(who.platform, who.user_id)).path
    token = path.split("/")[2]
    response = await client.post(
        f"{path}i/{generation_id}/delete", data={"csrf": links.csrf(token)}, allow_redirects=False
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == path


async def _gone(service: ImageService, who: Requester, generation_id: int) -> None:
    with pytest.raises(NotFound):
        await service.details(who, generation_id)


async def _shown_in(service: ImageService, who: Requester, generation_id: int) -> str:
    """Wait until the chat has remembered the message that shows a generation; return its ref."""
    refs: list[str | None] = [None]

    async def attached() -> bool:
        refs[0] = (await service.details(who, generation_id)).message_ref
        return refs[0] is not None

    async with asyncio.timeout(10):
        while not await attached():
            await asyncio.sleep(0.01)
    assert refs[0] is not None
    return refs[0]


async def test_a_gallery_delete_of_a_discord_image_edits_its_message_as_the_delete_button_does(tmp_path):
    """Delete in the gallery: the image's Discord message becomes the deleted sentence, with no image or buttons."""
    async with (
        FakeDiscord() as fake,
        running_bot(fake, FakeBackend(), tmp_path) as running,
        gallery_of(running.service, tmp_path) as (client, links),
    ):
        _, first = await _imagine(fake, {"prompt": "a red fox", "seed": "7"})
        who = running.who(fake.alice)
        assert await _shown_in(running.service, who, 1) == str(first.id)
        assert first.attachments and first.embeds and first.components

        await delete_in_gallery(client, links, who, 1)
        await _gone(running.service, who, 1)
        await fake.wait_for(lambda: first.content == "🗑 #1 was deleted by its author.")
        assert first.edits[-1] == {
            "content": "🗑 #1 was deleted by its author.",
            "embeds": [],
            "components": [],
            "attachments": [],
        }
        assert not first.deleted


async def test_a_gallery_delete_whose_discord_message_is_gone_still_deletes(tmp_path, caplog):
    """The chat refuses the edit (its message was deleted): the image is deleted all the same, the refusal logged."""
    async with (
        FakeDiscord() as fake,
        running_bot(fake, FakeBackend(), tmp_path) as running,
        gallery_of(running.service, tmp_path) as (client, links),
    ):
        _, first = await _imagine(fake, {"prompt": "a red fox", "seed": "7"})
        who = running.who(fake.alice)
        await _shown_in(running.service, who, 1)
        first.deleted = True

        await delete_in_gallery(client, links, who, 1)
        await _gone(running.service, who, 1)
        await _until(lambda: "could not edit the message of deleted #1" in caplog.text)
        assert "fake-token" not in caplog.text


async def test_a_gallery_delete_of_a_slack_image_deletes_its_card_and_upload_as_the_delete_button_does(tmp_path):
    """Delete in the gallery: the image's Slack card and the image uploaded below it are deleted."""
    async with (
        FakeSlack() as fake,
        running_app(fake, FakeBackend(), tmp_path) as running,
        gallery_of(running.service, tmp_path) as (client, links),
    ):
        other = await fake.send_slash(running.url, text="a grey wolf --seed 3")
        assert other.status == 200
        kept = await running.finished_card(1)
        sent = await fake.send_slash(running.url, text="a red fox --seed 7")
        assert sent.status == 200
        card = await running.finished_card(2)
        assert await _shown_in(running.service, running.who(), 2) == f"C1:{card.ts}"
        (upload,) = [m for m in fake.channel_messages() if m.files and m.ts > card.ts]

        await delete_in_gallery(client, links, running.who(), 2)
        await _gone(running.service, running.who(), 2)
        await fake.wait_for(lambda: card.deleted and upload.deleted)
        assert [(c.args["channel"], c.args["ts"]) for c in fake.calls_to("chat.delete")] == [("C1", card.ts)]
        assert not kept.deleted and [m.files for m in fake.channel_messages() if m.files and m.ts < card.ts]


async def test_a_gallery_delete_whose_chat_is_not_running_deletes_in_the_gallery_only(tmp_path):
    """A Slack image deleted in the gallery while only Discord runs: it is deleted, no chat is touched, no error."""
    async with (
        FakeDiscord() as fake,
        running_bot(fake, FakeBackend(), tmp_path) as running,
        gallery_of(running.service, tmp_path) as (client, links),
    ):
        slack_user = Requester("slack", "U_ALICE", workspace="T1", channel="C1")
        original = await (await running.service.imagine("a red fox", slack_user)).result()
        await running.service.attach_message(original.id, "C1:1700000000.000100")
        calls = len(fake.calls)

        await delete_in_gallery(client, links, slack_user, original.id)
        await _gone(running.service, slack_user, original.id)
        assert len(fake.calls) == calls


async def test_a_gallery_delete_of_a_console_image_is_printed_in_the_running_console(tmp_path):
    """The console of `imagebot chat` prints that the gallery deleted one of its images."""
    who = Requester("console", "me")
    out = io.StringIO()
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        chat = ConsoleChat(service, who, out, tmp_path)
        assert await chat.handle("imagine a red fox --seed 7")
        read, write = os.pipe()
        with open(read) as stdin, open(write, "w") as typing:
            session = asyncio.create_task(chat.run(stdin))
            try:
                async with gallery_of(service, tmp_path) as (client, links):
                    await _until(lambda: service.poster("console") is chat)
                    await delete_in_gallery(client, links, who, 1)
                    await _until(lambda: "🗑 #1 was deleted by its author." in out.getvalue())
            finally:
                typing.write("quit\n")
                typing.flush()
                await session
        await _gone(service, who, 1)


@contextlib.asynccontextmanager
async def served_links(data_dir: Path) -> AsyncIterator[Links]:
    """The gallery's links on the chat's database, for a service that offers what needs the gallery (Vary (Region))."""
    from storage import SqliteDatabase

    await (await SqliteDatabase.open(data_dir / "imagebot.sqlite3")).close()  # migrated before the gallery reads it
    store = await SqliteGallery.open(data_dir / "imagebot.sqlite3")
    try:
        yield Links(secret=b"test-secret", store=store, base_url="http://gallery.test", data_dir=data_dir)
    finally:
        await store.close()


async def _select_in_gallery(client: TestClient, link: str, selection: str) -> int:
    """Open the Vary (Region) page a chat's link names and send a selection from it; return the new generation's id."""
    split = urlsplit(link)
    page = await client.get(split.path, params=dict(p.split("=") for p in split.query.split("&") if p))
    assert page.status == 200
    html = await page.text()
    csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    prompt = html.split("<textarea", 1)[1].split(">", 1)[1].split("</textarea>", 1)[0]
    form = {"csrf": csrf, "regions": selection, "prompt": prompt}
    if 'name="image"' in html:
        form["image"] = html.split('name="image" value="', 1)[1].split('"', 1)[0]
    response = await client.post(split.path, data=form, allow_redirects=False)
    assert response.status == 303, await response.text()
    return int(urlsplit(response.headers["Location"]).path.rsplit("/", 1)[1])


async def test_vary_region_on_discord_links_its_author_to_the_page_and_posts_the_result_in_the_channel(tmp_path):
    """🖌️ Vary (Region) ends the pans' row; a click answers its author alone with the link to the image's page;
    the selection sent from there comes back to the channel as an image with its buttons, the box repainted."""
    async with (
        FakeDiscord() as fake,
        served_links(tmp_path) as links,
        running_bot(fake, FakeBackend(), tmp_path, gallery=links) as running,
        gallery_of(running.service, tmp_path) as (client, _),
    ):
        _, first = await _imagine(fake, {"prompt": "a red fox", "seed": "7", "size": "1024x1024"})
        rows = [[button["custom_id"].split(":")[1] for button in row["components"]] for row in first.components]
        assert rows[2] == ["pan-left", "pan-right", "pan-up", "pan-down", "region"]
        assert first.components[2]["components"][-1]["label"] == "Vary (Region)"
        click = await fake.click(first.id, encode_action("region", 1))
        body = await click.response()
        assert body["type"] == 4 and body["data"]["flags"] & 64
        text = body["data"]["content"]
        assert text.startswith("🖌️ Select the parts of #1 to make again") and "http://gallery.test/g/" in text
        link = next(word for word in text.split() if word.startswith("http://gallery.test/"))
        assert link.endswith("/i/1/region")
        before = set(fake.messages)
        new_id = await _select_in_gallery(client, link, "100,100 600,100 600,500 100,500")
        await fake.wait_for(lambda: set(fake.messages) - before)
        (posted_id,) = set(fake.messages) - before
        posted = await _finished(fake, fake.messages[posted_id])
        assert posted.channel_id == first.channel_id and "region" in _result_actions(posted)
        request = running.backend.requests[-1]
        assert request.mask_image is not None and request.prompt == "a red fox" and request.seed != 7
        assert (await running.service.details(running.who(fake.alice), new_id)).parent_id == 1


async def test_vary_region_on_slack_answers_its_author_alone_with_the_link(tmp_path):
    """The card's 🖌️ Vary (Region) button: an ephemeral line with the link to the image's page in their gallery."""
    async with (
        FakeSlack() as fake,
        served_links(tmp_path) as links,
        running_app(fake, FakeBackend(), tmp_path, gallery=links) as running,
    ):
        sent = await fake.send_slash(running.url, text="a red fox --seed 7 --count 2 --size 1024x1024")
        assert sent.status == 200
        card = await running.finished_card(1)
        assert "ib:region:1" in action_ids(card)
        clicked = await fake.send_block_action(
            running.url, "ib:region:1", "", message_ts=card.ts, channel_id=card.channel
        )
        assert clicked.status == 200
        await fake.wait_for(lambda: any("🖌️ Select the parts of #1" in text for text in running.ephemeral()))
        (line,) = [text for text in running.ephemeral() if "🖌️" in text]
        assert "http://gallery.test/g/" in line and "/i/1/region" in line and "7 days" in line

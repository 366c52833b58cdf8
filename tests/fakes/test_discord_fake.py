"""The Discord fake drives the real, unmodified discord.py client (no imagebot code here)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from PIL import Image

from tests.fakes.discord import FakeDiscord, FakeMessage, patch_discord


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()


class TicketButton(discord.ui.DynamicItem[discord.ui.Button], template=r"t:(?P<id>[0-9]+)"):
    """A persistent button: any client instance with the dynamic item registered can handle it."""

    def __init__(self, ticket_id: int) -> None:
        super().__init__(discord.ui.Button(label="Open", custom_id=f"t:{ticket_id}"))
        self.ticket_id = ticket_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            f"ticket {self.ticket_id} via {interaction.client.label}", ephemeral=True
        )


class AgainView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Again", custom_id="again")
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content="again!", view=None)


class Bot(discord.Client):
    """A small bot with one command per behaviour under test; handlers report to ``results``."""

    def __init__(self, label: str = "first") -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.label = label
        self.tree = app_commands.CommandTree(self)
        self.results: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.raw_reactions: list[discord.RawReactionActionEvent] = []
        self._add_commands()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(TicketButton)
        await self.tree.sync()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.raw_reactions.append(payload)
        channel = self.get_channel(payload.channel_id)
        await channel.send(f"saw {payload.emoji.name} on {payload.message_id}")

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(description="Render with progress edits")
        async def render(interaction: discord.Interaction, prompt: str, steps: int, scale: float) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=f"{prompt}: step 1/{steps}")
            await interaction.edit_original_response(content=f"{prompt}: step 2/{steps}")
            # no content: Discord leaves it as it was
            files = [discord.File(io.BytesIO(PNG), "image.png")]
            await interaction.edit_original_response(attachments=files, view=AgainView())
            self.results.put_nowait(("render", (prompt, steps, scale)))

        @tree.command(description="Answers too late")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.2)
            try:
                await interaction.response.defer()
            except discord.NotFound as exc:
                self.results.put_nowait(("slow", exc))

        @tree.command(description="Answers twice")
        async def twice(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("one", file=discord.File(io.BytesIO(PNG), "one.png"))
            try:  # a fresh InteractionResponse forgets the first answer, as a second process would
                await discord.InteractionResponse(interaction).send_message("two")
            except discord.HTTPException as exc:
                self.results.put_nowait(("twice", exc))

        @tree.command(description="Ephemeral follow-up")
        async def quiet(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.followup.send("x", ephemeral=True)

        @tree.command(description="Posts a persistent button")
        async def ticket(interaction: discord.Interaction, number: int) -> None:
            view = discord.ui.View(timeout=None)
            view.add_item(TicketButton(number))
            await interaction.response.send_message(f"ticket {number}", view=view)

        @tree.command(description="Autocompleted colour")
        async def pick(interaction: discord.Interaction, colour: str) -> None:
            await interaction.response.send_message(colour)

        @pick.autocomplete("colour")
        async def pick_colour(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            names = ["red", "green", "blue", "rose"]
            return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

        @tree.command(description="Who is asking, and where")
        async def whoami(interaction: discord.Interaction) -> None:
            where = "DM" if isinstance(interaction.channel, discord.DMChannel) else interaction.channel.name
            manage = interaction.permissions.manage_guild
            await interaction.response.send_message(
                f"{interaction.user.name} in {where} guild={interaction.guild} manage={manage}"
            )


@contextlib.asynccontextmanager
async def running(client: Bot, fake: FakeDiscord, connection: int = 1) -> AsyncIterator[Bot]:
    task = asyncio.create_task(client.start("fake-token"))
    try:
        await fake.wait_for(lambda: fake.connections >= connection or task.done(), timeout=10)
        if task.done():
            task.result()  # login or connect failed: raise its error
        await asyncio.wait_for(client.wait_until_ready(), 5)
        yield client
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        with patch_discord(fake):
            yield fake


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[Bot]:
    async with running(Bot(), fake) as client:
        yield client


async def result(bot: Bot, name: str) -> Any:
    got, value = await asyncio.wait_for(bot.results.get(), 5)
    assert got == name
    return value


async def test_login_connect_and_sync(fake: FakeDiscord, bot: Bot) -> None:
    assert [(c.method, c.path) for c in fake.calls[:3]] == [
        ("GET", "/users/@me"),
        ("GET", "/oauth2/applications/@me"),
        ("PUT", f"/applications/{fake.app_id}/commands"),
    ]
    assert all(c.status == 200 for c in fake.calls)
    assert {c.authorization for c in fake.calls[:3]} == {"Bot fake-token"}
    synced = {c["name"] for c in fake.calls[2].json}
    assert synced == {"render", "slow", "twice", "quiet", "ticket", "pick", "whoami"}
    assert {c["name"] for c in fake.commands} == synced and all(c["id"] for c in fake.commands)
    session = fake.sessions[0]
    assert session.token == "fake-token" and session.intents == discord.Intents.default().value
    assert fake.ready.is_set()
    assert bot.user.id == fake.app_id and bot.application_id == fake.app_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None and guild.get_channel(fake.channel_id).name == "general"
    assert guild.get_thread(fake.thread_id).parent_id == fake.channel_id
    assert guild.me is not None


async def test_deferred_progress_edits_and_final_file_with_button(fake: FakeDiscord, bot: Bot) -> None:
    inter = await fake.slash("render", {"prompt": "cat", "steps": 2, "scale": 2})

    assert [o["type"] for o in inter.payload["data"]["options"]] == [3, 4, 10]  # from the synced definition
    assert await result(bot, "render") == ("cat", 2, 2.0)
    assert (await inter.response())["type"] == 5
    original = inter.original
    assert original is not None and not original.ephemeral and original.type == 20
    assert [e["content"] for e in original.edits] == ["", "cat: step 1/2", "cat: step 2/2", "cat: step 2/2"]
    assert original.edits[-1]["attachments"] == ["image.png"]
    [attachment] = original.attachments
    assert attachment.data == PNG and attachment.content_type == "image/png"
    assert original.custom_ids == ["again"]
    assert original.flags == 0  # the loading flag went with the first edit
    upload = next(c for c in fake.calls if c.files)
    assert upload.method == "PATCH" and upload.path.endswith("/messages/@original")
    assert upload.files == [("image.png", PNG, "application/octet-stream")]

    click = await fake.click(original.id, "again")  # the view stored for this message answers UPDATE_MESSAGE

    assert (await click.response())["type"] == 7
    assert click.original is original
    assert original.edits[-1] == {"content": "again!", "embeds": [], "components": [], "attachments": ["image.png"]}


async def test_callback_after_the_deadline_is_unknown_interaction(fake: FakeDiscord, bot: Bot) -> None:
    fake.callback_deadline = 0.05
    inter = await fake.slash("slow")

    error = await result(bot, "slow")
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert [(a.type, a.status) for a in inter.callbacks] == [(5, 404)]
    assert inter.original is None and not inter.acknowledged


async def test_second_initial_response_is_already_acknowledged(fake: FakeDiscord, bot: Bot) -> None:
    inter = await fake.slash("twice")

    error = await result(bot, "twice")
    assert isinstance(error, discord.HTTPException) and error.status == 400 and error.code == 40060
    assert [(a.type, a.status) for a in inter.callbacks] == [(4, 200), (4, 400)]
    assert inter.original is not None and inter.original.content == "one"
    assert [(a.filename, a.data) for a in inter.original.attachments] == [("one.png", PNG)]  # multipart callback


async def test_ephemeral_followup_after_defer(fake: FakeDiscord, bot: Bot) -> None:
    inter = await fake.slash("quiet")

    await fake.wait_for(lambda: bool(inter.followups))
    [followup] = inter.followups
    assert followup.content == "x" and followup.flags & 64 and followup.ephemeral
    post = next(c for c in fake.calls if c.method == "POST" and c.path.startswith("/webhooks/"))
    assert post.json["flags"] == 64 and post.authorization is None


async def test_click_reaches_persistent_dynamic_item(fake: FakeDiscord, bot: Bot) -> None:
    inter = await fake.slash("ticket", {"number": 7})
    await inter.response()
    message = inter.original
    assert message is not None and message.custom_ids == ["t:7"]

    click = await fake.click(message.id, "t:7", user=fake.bob)

    body = await click.response()
    assert body["type"] == 4 and body["data"]["flags"] == 64
    assert click.original is not None and click.original.ephemeral
    assert click.original.content == "ticket 7 via first"


async def test_raw_reaction_reaches_the_client(fake: FakeDiscord, bot: Bot) -> None:
    sent = await bot.get_channel(fake.channel_id).send("react to me")

    await fake.react(sent.id, "👍")

    def seen() -> FakeMessage | None:
        return next((m for m in fake.messages.values() if m.content.startswith("saw")), None)

    await fake.wait_for(lambda: seen() is not None)
    assert seen().content == f"saw 👍 on {sent.id}"
    [payload] = bot.raw_reactions
    assert payload.message_id == sent.id and payload.emoji.name == "👍"
    assert payload.user_id == int(fake.alice["id"]) and payload.member.name == "alice"


async def test_autocomplete_returns_the_handlers_choices(fake: FakeDiscord, bot: Bot) -> None:
    choices = await fake.autocomplete("pick", {"colour": "r"}, focused="colour")

    assert choices == [{"name": "red", "value": "red"}, {"name": "rose", "value": "rose"}]


async def test_dm_slash_command(fake: FakeDiscord, bot: Bot) -> None:
    inter = await fake.slash("whoami", dm=True, user=fake.bob)

    body = await inter.response()
    assert body["data"]["content"] == "bob in DM guild=None manage=False"
    assert inter.payload["context"] == 1 and "member" not in inter.payload
    assert inter.original.channel_id == inter.channel_id != fake.channel_id


async def test_member_permissions_default_to_all_for_the_owner(fake: FakeDiscord, bot: Bot) -> None:
    async def reply(**kwargs: Any) -> str:
        inter = await fake.slash("whoami", **kwargs)
        return (await inter.response())["data"]["content"]

    assert await reply() == "alice in general guild=Fake Guild manage=True"
    assert await reply(user=fake.bob) == "bob in general guild=Fake Guild manage=False"
    assert await reply(permissions=0) == "alice in general guild=Fake Guild manage=False"
    assert await reply(channel_id=fake.thread_id) == "alice in imagebot thread guild=Fake Guild manage=True"


async def test_rest_rules_without_a_client(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.api_base}/guilds/1/members") as response:
            assert response.status == 404 and response.headers["Content-Type"] == "application/json"
            assert await response.json() == {"message": "404: Not Found", "code": 0}
        async with http.patch(f"{fake.api_base}/webhooks/{fake.app_id}/nope/messages/@original", json={}) as response:
            assert response.status == 404 and (await response.json())["code"] == 10015
        async with http.post(f"{fake.api_base}/interactions/1/nope/callback", json={"type": 1}) as response:
            assert response.status == 404 and (await response.json())["code"] == 10062
    assert [(c.method, c.path, c.status) for c in fake.calls] == [
        ("GET", "/guilds/1/members", 404),
        ("PATCH", f"/webhooks/{fake.app_id}/nope/messages/@original", 404),
        ("POST", "/interactions/1/nope/callback", 404),
    ]


async def test_second_client_after_restart_receives_a_click(fake: FakeDiscord) -> None:
    async with running(Bot("first"), fake):
        inter = await fake.slash("ticket", {"number": 42})
        await inter.response()
    assert not fake.ready.is_set()

    async with running(Bot("second"), fake, connection=2):
        assert fake.sessions[1].token == "fake-token" and fake.sessions[0].closed
        click = await fake.click(inter.original.id, "t:42")
        await click.response()
        assert click.original.content == "ticket 42 via second"

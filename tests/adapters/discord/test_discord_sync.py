"""Command sync over real sockets: the bot sends the bulk overwrite only when its commands changed."""

from __future__ import annotations

import discord
import pytest
from discord import app_commands

from adapters.discord import setup
from adapters.discord._sync import RECORD_NAME
from bot.config import DiscordSettings
from tests.adapters.discord.conftest import running_bot
from tests.fakes.discord import DiscordError, FakeDiscord
from tests.fakes.service import started_service


def _syncs(fake: FakeDiscord) -> list[str]:
    """Return the paths of the bulk overwrites (PUT …/commands) the fake has answered so far."""
    return [call.path for call in fake.calls if call.method == "PUT" and call.path.endswith("/commands")]


def _add_ping(bot) -> None:
    @app_commands.command(name="ping", description="Answer pong.")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")

    bot.tree.add_command(ping)


def _in_guild(fake: FakeDiscord):
    def prepare(bot) -> None:
        bot.settings = bot.settings.model_copy(update={"guild_id": fake.guild_id})

    return prepare


async def test_first_start_syncs_and_a_restart_with_the_same_commands_does_not(fake, backend, tmp_path):
    """The first start sends the bulk overwrite; a second start on the same data dir sends none."""
    async with running_bot(fake, backend, tmp_path):
        assert _syncs(fake) == [f"/applications/{fake.app_id}/commands"]
    async with running_bot(fake, backend, tmp_path):
        pass
    assert len(_syncs(fake)) == 1
    assert "imagine" in {command["name"] for command in fake.commands}


async def test_a_changed_command_is_synced_again(fake, backend, tmp_path):
    """Adding a command, then taking it away again, each syncs once more."""
    async with running_bot(fake, backend, tmp_path):
        pass
    async with running_bot(fake, backend, tmp_path, prepare=_add_ping):
        assert len(_syncs(fake)) == 2
        assert "ping" in {command["name"] for command in fake.commands}
    async with running_bot(fake, backend, tmp_path):
        assert len(_syncs(fake)) == 3
        assert "ping" not in {command["name"] for command in fake.commands}


async def test_global_and_guild_commands_are_recorded_apart(fake, backend, tmp_path):
    """A global sync does not stand in for a guild sync of the same commands, nor the other way round."""
    async with running_bot(fake, backend, tmp_path):
        pass
    async with running_bot(fake, backend, tmp_path, prepare=_in_guild(fake)):
        assert _syncs(fake)[-1] == f"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands"
    async with running_bot(fake, backend, tmp_path, prepare=_in_guild(fake)):
        pass
    async with running_bot(fake, backend, tmp_path):
        pass
    assert len(_syncs(fake)) == 2


async def test_a_failed_sync_is_not_recorded_so_the_next_start_syncs(fake, backend, tmp_path, monkeypatch):
    """A refused bulk overwrite stops the start and stores no hash; the next start syncs."""

    def refuse(app_id: str) -> None:
        raise DiscordError(403, 50001, "Missing Access")

    monkeypatch.setattr(fake, "_check_app", refuse)
    settings = DiscordSettings(token="fake-token", api_base=fake.api_base, gateway_url=fake.gateway_url)
    async with started_service(backend, tmp_path) as (service, _):
        bot = setup(service, settings, data_dir=tmp_path, guild_ready_timeout=0.1)
        try:
            with pytest.raises(discord.Forbidden):
                await bot.start("fake-token")
        finally:
            await bot.close()
    assert [call.status for call in fake.calls if call.method == "PUT"] == [403]
    assert not (tmp_path / RECORD_NAME).exists()

    monkeypatch.undo()
    async with running_bot(fake, backend, tmp_path):
        assert [call.status for call in fake.calls if call.method == "PUT"] == [403, 200]


async def test_an_unreadable_record_means_a_sync(fake, backend, tmp_path):
    """A damaged record file is ignored (and replaced): the start syncs instead of failing."""
    (tmp_path / RECORD_NAME).write_text("{not json")
    async with running_bot(fake, backend, tmp_path):
        assert len(_syncs(fake)) == 1
    async with running_bot(fake, backend, tmp_path):
        pass
    assert len(_syncs(fake)) == 1

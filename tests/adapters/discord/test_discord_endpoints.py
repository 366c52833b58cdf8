"""Configured Discord endpoints apply to one bot only: discord.py's class-wide defaults stay as they are."""

from __future__ import annotations

import discord.http
import pytest
import yarl
from discord.gateway import DiscordWebSocket

from adapters.discord import setup
from adapters.discord._http import Endpoints
from bot.config import DiscordSettings
from tests.adapters.discord.conftest import running_bot
from tests.fakes.backend import FakeBackend
from tests.fakes.discord import FakeDiscord

API = "https://discord.com/api/v10"
GATEWAY = "wss://gateway.discord.gg/"
LOOPBACK = Endpoints(api_base="http://127.0.0.1:8080/api/v10/", gateway_url="ws://127.0.0.1:8080/gateway")


@pytest.mark.parametrize(
    ("url", "moved"),
    [
        (f"{API}/users/@me", "http://127.0.0.1:8080/api/v10/users/@me"),
        (f"{API}/channels/1/messages?limit=5", "http://127.0.0.1:8080/api/v10/channels/1/messages?limit=5"),
        (
            f"{API}/channels/1/messages/2/reactions/%F0%9F%94%84/@me",
            "http://127.0.0.1:8080/api/v10/channels/1/messages/2/reactions/%F0%9F%94%84/@me",
        ),
        (f"{GATEWAY}?v=10&encoding=json", "ws://127.0.0.1:8080/gateway?v=10&encoding=json"),
        ("https://discord.com/api/v100/users/@me", None),  # only whole path segments match
        ("https://cdn.discordapp.com/attachments/1/2/a.png", None),
        ("wss://gateway-us-east1-b.discord.gg/?v=10", None),  # a resume URL the gateway gave
    ],
)
def test_move_changes_only_urls_on_the_default_endpoints(url, moved):
    """URLs on discord.py's API base or default gateway move, query and escapes kept; others stay."""
    assert str(LOOPBACK.move(yarl.URL(url, encoded=True))) == (moved or url)


def test_no_endpoints_move_nothing():
    """Without configured endpoints every URL stays where discord.py put it."""
    assert Endpoints().move(yarl.URL(f"{API}/users/@me")) == yarl.URL(f"{API}/users/@me")


async def test_creating_a_bot_leaves_discord_py_defaults_alone(fake, tmp_path):
    """setup() with loopback endpoints changes neither Route.BASE nor the default gateway."""
    base, gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    settings = DiscordSettings(token="fake-token", api_base=fake.api_base, gateway_url=fake.gateway_url)
    bot = setup(object(), settings, data_dir=tmp_path)
    assert base == discord.http.Route.BASE
    assert gateway == DiscordWebSocket.DEFAULT_GATEWAY
    await bot.close()


async def test_a_running_bot_reaches_its_fake_with_the_defaults_untouched(running):
    """Login, sync and gateway all reach the loopback fake while Route.BASE still names Discord."""
    assert not discord.http.Route.BASE.startswith(running.fake.http_base)
    assert not str(DiscordWebSocket.DEFAULT_GATEWAY).startswith(running.fake.gateway_url)
    assert {call.path for call in running.fake.calls} >= {"/users/@me", f"/applications/{running.fake.app_id}/commands"}


async def test_two_bots_with_different_endpoints_each_reach_their_own(tmp_path):
    """Two bots in one process, each on its own fake Discord, both connect and sync to their own."""
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    async with (
        FakeDiscord() as first,
        FakeDiscord() as second,
        running_bot(first, FakeBackend(), tmp_path / "first"),
        running_bot(second, FakeBackend(), tmp_path / "second"),
    ):
        for fake in (first, second):
            assert [call.method for call in fake.calls if call.path.endswith("/commands")] == ["PUT"]
            assert fake.connections == 1

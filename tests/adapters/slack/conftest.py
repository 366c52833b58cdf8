"""A running imagebot Slack app, driven through the fake Slack by the real slack-bolt and slack-sdk."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.slack import running as running_slack
from bot.config import SlackSettings
from bot.jobs import Requester
from bot.service import ImageService
from storage import SqliteDatabase
from tests.fakes.backend import FakeBackend
from tests.fakes.service import started_service
from tests.fakes.slack import FakeSlack, SlackMessage


@dataclass
class Running:
    """An app connected to the fake, and what it stands on."""

    fake: FakeSlack
    service: ImageService
    backend: FakeBackend
    history: SqliteDatabase
    data_dir: Path
    url: str  # the app's events URL in HTTP mode, "socket mode" otherwise

    @staticmethod
    def who(user_id: str = "U_ALICE") -> Requester:
        """Return the requester the service knows a fake user as."""
        return Requester("slack", user_id)

    def cards(self, channel: str = "C1") -> list[SlackMessage]:
        """Return the app's cards (messages with blocks) in a channel, oldest first."""
        return [m for m in self.fake.channel_messages(channel) if m.blocks and not m.ephemeral_user]

    def ephemeral(self, user_id: str = "U_ALICE") -> list[str]:
        """Return the texts shown to one user only."""
        return [m.text or "" for m in self.fake.messages.values() if m.ephemeral_user == user_id]

    async def finished_card(self, number: int, channel: str = "C1", timeout: float = 10.0) -> SlackMessage:
        """Wait until the `number`-th card of a channel shows a finished or failed image; return it."""

        def done() -> bool:
            cards = self.cards(channel)
            return len(cards) >= number and (
                bool(action_ids(cards[number - 1], "ib:reroll:")) or "✖" in (cards[number - 1].text or "")
            )

        await self.fake.wait_for(done, timeout)
        return self.cards(channel)[number - 1]


def action_ids(message: SlackMessage, prefix: str = "") -> list[str]:
    """Return the action ids of a message's buttons."""
    return [
        element["action_id"]
        for block in message.blocks or []
        for element in block.get("elements") or []
        if element.get("type") == "button" and element["action_id"].startswith(prefix)
    ]


@contextlib.asynccontextmanager
async def running_app(
    fake: FakeSlack, backend: FakeBackend, data_dir: Path, *, socket_mode: bool = False, **service_options: object
) -> AsyncIterator[Running]:
    """Start service and app on `data_dir`; stop both on exit."""
    settings = SlackSettings(
        bot_token=fake.bot_token,
        app_token=fake.app_token if socket_mode else None,
        signing_secret=None if socket_mode else fake.signing_secret,
        api_base=fake.api_base,
        host="127.0.0.1",
        port=0,
        progress_interval=0,
    )
    async with (
        started_service(backend, data_dir, **service_options) as (service, history),
        running_slack(service, settings) as url,
    ):
        if socket_mode:
            await fake.wait_socket()
        yield Running(fake, service, backend, history, data_dir, url)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def running(fake: FakeSlack, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_app(fake, backend, tmp_path, seeds=itertools.count(100).__next__) as running:
        yield running

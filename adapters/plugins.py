"""The chats this package ships, as plugins (`bot.plugins.ChatPlugin`) found by name through entry points.

Importing this module imports no chat SDK: a chat's SDK is loaded when the chat
starts, so a bot installed without the Slack extra still runs on Discord.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bot.config import DiscordSettings, SlackSettings
from bot.plugins import Check
from bot.service import ImageService

__all__ = ["discord", "slack"]

log = logging.getLogger(__name__)


class DiscordPlugin:
    """Discord over its gateway, with discord.py."""

    name = "discord"

    def configured(self) -> bool:
        """Tell whether a bot token is set."""
        return DiscordSettings().token is not None

    async def run(self, service: ImageService, data_dir: Path) -> None:
        """Log in and serve until cancelled."""
        from adapters.discord import setup

        settings = DiscordSettings()
        assert settings.token is not None
        async with setup(service, settings, data_dir=data_dir) as bot:
            await bot.start(settings.token.get_secret_value())

    async def checks(self) -> list[Check]:
        """Say whether the token is set (it is tried when the bot logs in)."""
        found = "token set" if self.configured() else "no token: not started"
        return [Check("Discord", True, found)]


class SlackPlugin:
    """Slack over Socket Mode or signed HTTP requests, with slack-bolt."""

    name = "slack"

    def configured(self) -> bool:
        """Tell whether a bot token and a way in (app token or signing secret) are set."""
        settings = SlackSettings()
        if settings.bot_token is not None and not settings.configured:
            log.warning("Slack: IMAGEBOT_SLACK_BOT_TOKEN is set but neither an app token nor a signing secret is")
        return settings.configured

    async def run(self, service: ImageService, data_dir: Path) -> None:
        """Connect (or serve events) until cancelled."""
        from adapters.slack import running

        async with running(service, SlackSettings()):
            await asyncio.Event().wait()

    async def checks(self) -> list[Check]:
        """Refuse a bot token without a way in; say which mode is set up."""
        settings = SlackSettings()
        if settings.bot_token is not None and not settings.configured:
            return [
                Check(
                    "Slack",
                    False,
                    "IMAGEBOT_SLACK_BOT_TOKEN is set without IMAGEBOT_SLACK_APP_TOKEN (Socket Mode) or"
                    " IMAGEBOT_SLACK_SIGNING_SECRET (HTTP mode); set one of them.",
                )
            ]
        if not settings.configured:
            return [Check("Slack", True, "no bot token: not started")]
        mode = "app token set (Socket Mode)" if settings.app_token else "signing secret set (HTTP)"
        return [Check("Slack", True, f"bot token and {mode}")]


discord = DiscordPlugin()
slack = SlackPlugin()

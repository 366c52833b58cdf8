"""The Discord front end (discord.py): slash commands, live progress, persistent buttons, reactions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.config import DiscordSettings

if TYPE_CHECKING:
    from bot.service import ImageService

    from ._bot import ImageBot

__all__ = ["setup"]


def setup(service: ImageService, settings: DiscordSettings, **options: Any) -> ImageBot:
    """Return the bot, pointed at the configured Discord endpoints; start it with ``bot.start(token)``.

    Args:
        service: the image service.
        settings: token, endpoints, command guild, progress interval.
        options: passed to discord.py's client.
    """
    import discord.http
    import yarl
    from discord.gateway import DiscordWebSocket

    from ._bot import ImageBot

    # discord.py reads both from class attributes; they are only changed when configured (tests, proxies).
    if settings.api_base:
        discord.http.Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)
    return ImageBot(service, settings, **options)

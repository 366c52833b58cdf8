"""The Discord front end (discord.py): slash commands, live progress, persistent buttons, reactions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import DiscordSettings

if TYPE_CHECKING:
    from bot.service import ImageService

    from ._bot import ImageBot

__all__ = ["setup"]


def setup(
    service: ImageService, settings: DiscordSettings, *, data_dir: Path | None = None, **options: Any
) -> ImageBot:
    """Return the bot, pointed at the configured Discord endpoints; start it with ``bot.start(token)``.

    Args:
        service: the image service.
        settings: token, endpoints (for this bot only), command guild, progress interval.
        data_dir: where the bot records its last command sync, so that it syncs only when the
            commands changed; ``None`` syncs on every start.
        options: passed to discord.py's client.
    """
    from ._bot import ImageBot

    return ImageBot(service, settings, data_dir=data_dir, **options)

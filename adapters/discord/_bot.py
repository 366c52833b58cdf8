"""The discord.py bot: the cog, the persistent buttons, command sync and the one error handler."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Self

import discord
from discord import app_commands
from discord.ext import commands
from discord.state import ConnectionState

from bot.chat import refusal
from bot.config import DiscordSettings
from bot.service import ImageService

from ._cog import ImagesCog
from ._http import EndpointHTTPClient, Endpoints
from ._sync import RECORD_NAME, sync_commands
from ._views import GenerationButton, WordsButton

__all__ = ["ImageBot"]

log = logging.getLogger(__name__)


class ImageBot(commands.Bot):
    """A bot with the image commands and nothing else.

    Args:
        service: the image service.
        settings: the Discord settings; its endpoints, when set, apply to this bot only.
        data_dir: where the bot records its last command sync; ``None`` syncs on every start.
        options: passed to discord.py's client (tests use a short ``guild_ready_timeout``).
    """

    def __init__(
        self, service: ImageService, settings: DiscordSettings, *, data_dir: Path | None = None, **options: Any
    ) -> None:
        # Read by _get_state, which discord.py's __init__ calls.
        self.settings = settings
        # Slash commands, buttons and raw reactions need no privileged intents.
        intents = discord.Intents.default()
        # Users' words are echoed (prompts, file names, a caption): none of them may ping @everyone, a role or
        # anyone. The one ping the bot means (a resumed job's author) asks for it on its message.
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options)
        self.service = service
        self.sync_record = data_dir / RECORD_NAME if data_dir is not None else None
        self.tree.error(self._on_command_error)

    def _get_state(self, **options: Any) -> ConnectionState[Self]:
        """Swap in the HTTP client for the configured endpoints before anything holds discord.py's own.

        ``Client.__init__`` builds ``self.http`` just before this call; the connection state
        made here and the command tree made after it both keep the client they find.
        """
        endpoints = Endpoints(self.settings.api_base, self.settings.gateway_url)
        if endpoints != Endpoints():
            self.http = EndpointHTTPClient(self.http, endpoints)
        return super()._get_state(**options)

    async def setup_hook(self) -> None:
        """Register the cog and the persistent buttons, then sync the commands if they changed."""
        cog = ImagesCog(self, self.service, self.settings)
        await self.add_cog(cog)
        self.add_dynamic_items(GenerationButton, WordsButton)
        guild = discord.Object(self.settings.guild_id) if self.settings.guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        await sync_commands(self.tree, guild=guild, record=self.sync_record)
        await cog.follow_resumed()

    async def _on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Answer any unexpected failure with one private sentence; the traceback goes to the log."""
        if isinstance(error, app_commands.CheckFailure):
            text = "✖ This command does not work here."
        else:
            text = refusal(error, f"command {interaction.command and interaction.command.name}")
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)

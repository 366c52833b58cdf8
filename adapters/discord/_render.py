"""What the Discord bot shows: the result embed, details, listings."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.actions import format_ref
from bot.catalog import Catalog
from bot.history import Generation
from bot.summary import history_line, result_fields

__all__ = ["discord_time", "history_text", "result_embed"]

_EMBED_COLOUR = discord.Colour.from_rgb(88, 101, 242)


def result_embed(generation: Generation, filename: str | None, catalog: Catalog | None = None) -> discord.Embed:
    """Return the embed shown with a finished image: prompt, settings (`catalog` names IP-Adapters), warnings."""
    request = generation.request
    embed = discord.Embed(title=request.prompt[:256], colour=_EMBED_COLOUR)
    if request.negative_prompt:
        embed.description = f"**Negative:** {request.negative_prompt[:1000]}"
    for name, value in result_fields(generation, catalog):
        embed.add_field(name=name, value=value[:1024], inline=True)
    if generation.warnings:
        embed.add_field(name="⚠ Notes", value="\n".join(generation.warnings)[:1024], inline=False)
    action = f" · {generation.action} of {format_ref(generation.parent_id)}" if generation.parent_id else ""
    embed.set_footer(text=f"{format_ref(generation.id)}{action} · 🔄 reroll · ✨ refine")
    if filename is not None:
        embed.set_image(url=f"attachment://{filename}")
    return embed


def history_text(generations: Sequence[Generation]) -> str:
    """Return a user's recent generations, one line each, with what reuses them."""
    if not generations:
        return "No images yet; make one with /imagine."
    lines = [history_line(generation) for generation in generations]
    lines.append("Reuse one with `/reroll id:<n>`, `/refine id:<n>` or `/info id:<n>`.")
    return "\n".join(lines)[:2000]


def discord_time(at: float) -> str:
    """Return a timestamp that Discord shows relative to now, in the reader's zone."""
    return f"<t:{int(at)}:R>"

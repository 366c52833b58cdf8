"""What the Discord bot shows: progress lines, the result embed, listings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord

from bot.actions import format_ref
from bot.jobs import Job, JobEvent, progress_bar
from bot.pngmeta import parameters_text

if TYPE_CHECKING:
    from storage.history import Generation

__all__ = ["details_text", "history_text", "progress_text", "result_embed"]

_EMBED_COLOUR = discord.Colour.from_rgb(88, 101, 242)


def progress_text(job: Job, event: JobEvent) -> str:
    """Return the line that stands for the image while it is queued or being made."""
    head = f"{format_ref(job.id)} · seed {job.request.seed}"
    if event.kind == "queued":
        position = job.position if job.position is not None else event.position
        where = "next in the queue" if position in (None, 0, 1) else f"position {position} in the queue"
        return f"⏳ {head} · {where}"
    if event.kind == "progress" and event.progress is not None:
        step, total, stage = event.progress.step, event.progress.total, event.progress.stage
        return f"🎨 {head} · {stage} `{progress_bar(step, total)}` {step}/{total}"
    return f"🎨 {head} · starting"


def _field_text(generation: Generation) -> list[tuple[str, str]]:
    request = generation.request
    base, refined = request.split
    fields = [
        ("Seed", str(generation.seed)),
        ("Steps", f"{request.steps}" + (f" ({base} base + {refined} refiner)" if request.refiner else "")),
        (
            "Refiner",
            f"{request.refiner.model} from {round(100 * base / request.steps)} %" if request.refiner else "off",
        ),
        ("Model", request.model),
        ("Size", f"{request.width}×{request.height}"),
        ("Sampler", f"{request.scheduler} · CFG {request.cfg_scale:g}"),
    ]
    if request.loras:
        fields.append(("LoRAs", ", ".join(f"{lora.name}:{lora.weight:g}" for lora in request.loras)))
    if request.count > 1:
        fields.append(("Images", f"{request.count} (seeds {generation.seed}…{generation.seed + request.count - 1})"))
    if generation.seconds is not None:
        fields.append(("Time", f"{generation.seconds:.1f} s"))
    return fields


def result_embed(generation: Generation, filename: str | None) -> discord.Embed:
    """Return the embed shown with a finished image: prompt, settings, warnings."""
    request = generation.request
    embed = discord.Embed(title=request.prompt[:256], colour=_EMBED_COLOUR)
    if request.negative_prompt:
        embed.description = f"**Negative:** {request.negative_prompt[:1000]}"
    for name, value in _field_text(generation):
        embed.add_field(name=name, value=value[:1024], inline=True)
    if generation.warnings:
        embed.add_field(name="⚠ Notes", value="\n".join(generation.warnings)[:1024], inline=False)
    action = f" · {generation.action} of {format_ref(generation.parent_id)}" if generation.parent_id else ""
    embed.set_footer(text=f"{format_ref(generation.id)}{action} · 🔄 reroll · ✨ refine")
    if filename is not None:
        embed.set_image(url=f"attachment://{filename}")
    return embed


def details_text(generation: Generation) -> str:
    """Return everything needed to reproduce a generation, as a code block."""
    lines = [f"{format_ref(generation.id)} · {generation.action} · {generation.status} · <@{generation.user_id}>"]
    if generation.parent_id:
        lines.append(f"from {format_ref(generation.parent_id)}")
    if generation.error:
        lines.append(f"error: {generation.error}")
    text = parameters_text(generation.request, generation.seed)
    return "\n".join(lines) + f"\n```\n{text[:1700]}\n```"


def history_text(generations: Sequence[Generation]) -> str:
    """Return a user's recent generations, one line each, with what reuses them."""
    if not generations:
        return "No images yet; make one with /imagine."
    lines = []
    for generation in generations:
        request = generation.request
        refiner = f" · refiner {request.split[0]}/{request.steps}" if request.refiner else ""
        prompt = request.prompt if len(request.prompt) <= 50 else request.prompt[:49] + "…"
        lines.append(
            f"`{format_ref(generation.id)}` {generation.status} · seed `{generation.seed}` · {request.model}"
            f"{refiner} · {prompt}"
        )
    lines.append("Reuse one with `/reroll id:<n>`, `/refine id:<n>` or `/info id:<n>`.")
    return "\n".join(lines)[:2000]

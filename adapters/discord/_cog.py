"""Slash commands, buttons and reactions: Discord events in, `ImageService` calls out.

Every interaction is answered within Discord's 3 seconds before any slow work:
/imagine defers at once; reroll, refine and the buttons first ask the service
(a few milliseconds of SQLite) so that a refusal can be a private sentence,
then answer with the queued line. A job is then followed in a task that edits
the same message: queue position, progress, and finally the image with its
embed and buttons.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from math import gcd
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import metrics
from bot.actions import ButtonAction, format_ref
from bot.chat import (
    RESUMED,
    ChatFlow,
    Deleted,
    EditForm,
    Flagged,
    Guides,
    Listing,
    OneImage,
    RemixForm,
    Reply,
    Started,
    Text,
    image_words,
    posted_line,
    refusal,
    updates,
)
from bot.complete import Suggestion, complete_name, complete_weighted, complete_wildcard
from bot.config import DiscordSettings
from bot.controls import BLEND_SHAPES, blend_options
from bot.describe import words_in
from bot.errors import BotError
from bot.history import Generation
from bot.inputs import ImageLoader
from bot.jobs import Job, JobEvent, Requester
from bot.options import SDXL_BUCKETS, PanDirection
from bot.policy import FLAGGED
from bot.request import CONTROL_MODES
from bot.rules import SCHEDULERS
from bot.service import ZOOM_OUT, ImageService, VaryKind
from bot.summary import (
    deleted_line,
    progress_line,
    withheld_line,
)
from bot.upload import fit_upload

from .._download import FileHosts
from ._attachments import DISCORD_FILE_HOSTS, attachment_loader, image_attachment, token
from ._render import discord_time, history_text, result_embed
from ._views import EditModal, GuideModal, ImageModal, result_view, running_view, words_view

__all__ = ["ImagesCog", "settings_changes"]

log = logging.getLogger(__name__)

PLATFORM = "discord"
# Reactions on a result message do what the buttons do.
REACTIONS: dict[str, ButtonAction] = {
    "🔄": "reroll",
    "✨": "refine",
    "🌿": "vary-subtle",
    "🌪️": "vary-strong",
    "❌": "delete",
    "⭐": "star",
}
# Clients send some emoji with the variation selector U+FE0F and some without; either matches.
_BY_EMOJI = {emoji.replace("\ufe0f", ""): action for emoji, action in REACTIONS.items()}
# What /upscale, /vary, /zoom and /pan take to name an image; buttons act on a generation's first.
IMAGE_OPTION = "a previous image: 12 or #12, and #12.2 for its second (default: your latest)"
FROM_IMAGE_MENU = "Imagine from this image"
GUIDE_MENU = "Use as ControlNet guide"
STYLE_MENU = "Use as style reference"
# The one value a message menu's form asks besides the prompt: its label and placeholder, by option.
_MENU_VALUES = {
    "strength": ("Strength (0-1)", "0.8: lower keeps more of the image"),
    "sw": ("Style weight (0-200 %)", "100: the image's look in full"),
}
PNG_INFO_MENU = "PNG info"
DESCRIBE_MENU = "Describe image"
NO_IMAGE = "✖ That message has no PNG, JPEG or WebP image attached."
DESCRIBE_ONE = "Describe takes a file or one of your images, not both."
NO_WORDS = "That message holds no words to imagine; /describe an image again."
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# A latent preview goes with every PREVIEW_EVERY-th allowed progress edit at most.
PREVIEW_EVERY = 2


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _ratio(width: int, height: int) -> str:
    divisor = gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


SIZE_CHOICES = [app_commands.Choice(name=f"{w}×{h} ({_ratio(w, h)})", value=f"{w}x{h}") for w, h in SDXL_BUCKETS]
SCHEDULER_CHOICES = [app_commands.Choice(name=name, value=name) for name in SCHEDULERS[:25]]
CONTROL_MODE_CHOICES = [app_commands.Choice(name=name, value=name) for name in CONTROL_MODES]
BLEND_SHAPE_CHOICES = [app_commands.Choice(name=name, value=ratio) for name, ratio in BLEND_SHAPES]

Edit = Callable[..., Awaitable[discord.Message | None]]


def _choices(suggestions: Iterable[Suggestion]) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=suggestion.label, value=suggestion.value) for suggestion in suggestions]


def requester(interaction: discord.Interaction) -> Requester:
    """Return who sent an interaction, and where (with the channel's age-restricted flag)."""
    return _requester(interaction.user.id, interaction.guild_id, interaction.channel_id, interaction.channel)


def _requester(user_id: int, guild_id: int | None, channel_id: int | None, channel: object) -> Requester:
    return Requester(
        PLATFORM,
        str(user_id),
        workspace=str(guild_id) if guild_id else None,
        channel=str(channel_id) if channel_id else None,
        age_restricted=age_restricted(channel),
    )


def age_restricted(channel: object) -> bool:
    """Tell whether a channel is age-restricted (False for DMs and channels not in the cache)."""
    # Text, voice and forum channels and threads (through their parent) have is_nsfw(); DMs do not.
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def settings_changes(given: Mapping[str, object]) -> dict[str, object]:
    """Return the changes /settings asks for: its options that were given (None: left out).

    ``refiner`` 0 is the refiner off, which is no saved default.
    """
    return {key: (value or None) if key == "refiner" else value for key, value in given.items() if value is not None}


class ImagesCog(commands.Cog, name="Images"):
    """The image commands, buttons and reactions.

    Args:
        bot: the discord.py bot.
        service: the image service.
        settings: the Discord settings (progress edit interval).
    """

    def __init__(self, bot: commands.Bot, service: ImageService, settings: DiscordSettings) -> None:
        self.bot = bot
        self.service = service
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self.flow = ChatFlow(service, details_limit=1700, when=discord_time)
        self.file_hosts = FileHosts.of(DISCORD_FILE_HOSTS, settings.api_base)
        # A cog cannot declare a context menu with a decorator; they are added to the tree in `cog_load`.
        # Discord's most message menus for an app: five.
        self.menus = tuple(
            app_commands.ContextMenu(name=name, callback=callback)
            for name, callback in (
                (FROM_IMAGE_MENU, self.imagine_from_message),
                (GUIDE_MENU, self.guide_from_message),
                (STYLE_MENU, self.style_from_message),
                (PNG_INFO_MENU, self.png_info_of_message),
                (DESCRIBE_MENU, self.describe_message),
            )
        )

    async def follow_resumed(self) -> None:
        """Post a message for each job a restart resumed and follow it there.

        The interaction that asked for it expired with the old process, so the image comes
        as a new message in its channel (a direct message for a private one).
        """
        for job, _ in self.service.resumed(PLATFORM):
            self._spawn(self._post_and_follow(job, posted_line(job, RESUMED), ping=True))

    async def post(self, job: Job, text: str) -> None:
        """Post a job started outside Discord (a gallery click) in its channel and follow it (`bot.ports.ChatPoster`).

        Returns at once: the message is sent and followed in a task of the cog's.
        """
        self._spawn(self._post_and_follow(job, text))

    async def _post_and_follow(self, job: Job, text: str, *, ping: bool = False) -> None:
        """Send a new message about a job where it belongs, naming its author, and follow it.

        The author is pinged only with `ping` (a resumed job they waited for, not their own click in the gallery).
        """
        try:
            channel = await self._home(job)
            message = await channel.send(
                f"{text} · <@{job.requester.user_id}>",
                view=running_view(job.id),
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=ping),
            )
        except discord.HTTPException as error:
            log.warning("could not post %s in its channel: %s; it stays in history", format_ref(job.id), error)
            return
        limit = message.guild.filesize_limit if message.guild else DEFAULT_UPLOAD_LIMIT
        await self._follow(job, message.edit, limit)

    async def _home(self, job: Job) -> discord.abc.Messageable:
        """Return where a new message about a job goes: its channel, or a direct message for a private one."""
        return await self._channel(job.private, job.requester.channel, job.requester.user_id)

    async def _channel(
        self, private: bool, channel: str | None, user_id: str
    ) -> discord.DMChannel | discord.PartialMessageable:
        if private or channel is None:
            return await self.bot.create_dm(discord.Object(int(user_id)))
        return self.bot.get_partial_messageable(int(channel))

    async def retract(self, generation: Generation, text: str) -> None:
        """Edit the message of a generation deleted in the gallery into `text` (`bot.ports.ChatPoster`).

        As the 🗑 button does: no image, embed or buttons stay. Returns at once: the edit is made in a task.
        """
        if generation.message_ref is not None:
            self._spawn(self._retract(generation, int(generation.message_ref), text))

    async def _retract(self, generation: Generation, message_id: int, text: str) -> None:
        try:
            channel = await self._channel(generation.private, generation.channel, generation.user_id)
            await channel.get_partial_message(message_id).edit(content=text, embed=None, attachments=[], view=None)
        except discord.HTTPException as error:
            # A private image's message was ephemeral (only the interaction could edit it), or it is gone.
            log.warning("could not edit the message of deleted %s: %s", format_ref(generation.id), error)

    async def cog_load(self) -> None:
        """Add the context menus (the cog does not hold them as commands), and post gallery clicks from now on."""
        for menu in self.menus:
            self.bot.tree.add_command(menu)
        self.service.add_poster(PLATFORM, self)

    async def cog_unload(self) -> None:
        """Stop posting and following jobs (the jobs themselves run on) and drop the context menus."""
        self.service.remove_poster(PLATFORM, self)
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)
        for task in self._tasks:
            task.cancel()

    # -- commands -----------------------------------------------------------------------------------

    @app_commands.command(name="imagine", description="Make an image from a prompt.")
    @app_commands.describe(
        prompt="what to draw (flags such as --ar 16:9 work here too)",
        negative="what to keep out of the image",
        seed="a number from 1; the same seed and settings give the same image",
        steps="denoising steps, 1-100 (SDXL: 20-35)",
        refiner="the SDXL refiner takes over at this percent of the steps (0 = off; best 85-90)",
        lora="LoRAs with weights: name:0.8, other",
        model="a model from the catalog",
        style="a catalog style: its words around your prompt (cinematic, anime, …)",
        size="width × height",
        cfg="how closely to follow the prompt, 0-50 (SDXL: 5-9)",
        scheduler="the sampler",
        count="images at once, 1-4 (seeds seed, seed+1, …)",
        private="show the image to you only",
        image="start from this image (PNG, JPEG or WebP)",
        strength="with an image: how much of it is made again, 0-1 (0.8)",
        mask="with an image: white repaints, black keeps",
        control_image="a ControlNet guide: its edges (or depth…) shape the image (PNG, JPEG or WebP)",
        control="the catalog ControlNet that reads the guide",
        control_weight="how strongly the ControlNet steers, 0-2 (1)",
        control_start="the first step it acts on: a step like 3 or a percentage like 10% (first)",
        control_end="the last step it acts on: a step like 10 or a percentage like 40% (last)",
        control_mode="which matters more: both, your prompt, or the ControlNet",
        tile="seamless: the image repeats edge to edge, a texture",
        variation="a close variant of the seed's image, 0-1 (0.1-0.3: close); --variation-seed in the prompt",
        style_image="a style reference (--sref): its look, not what it shows (PNG, JPEG or WebP); --sw in the prompt",
    )
    @app_commands.choices(size=SIZE_CHOICES, scheduler=SCHEDULER_CHOICES, control_mode=CONTROL_MODE_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: str,
        negative: str | None = None,
        seed: str | None = None,
        steps: app_commands.Range[int, 1, 100] | None = None,
        refiner: app_commands.Range[int, 0, 99] | None = None,
        lora: str | None = None,
        model: str | None = None,
        style: str | None = None,
        size: str | None = None,
        cfg: app_commands.Range[float, 0.0, 50.0] | None = None,
        scheduler: str | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        private: bool | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.0, 1.0] | None = None,
        mask: discord.Attachment | None = None,
        control_image: discord.Attachment | None = None,
        control: str | None = None,
        control_weight: app_commands.Range[float, 0.0, 2.0] | None = None,
        control_start: str | None = None,
        control_end: str | None = None,
        control_mode: str | None = None,
        tile: bool | None = None,
        variation: app_commands.Range[float, 0.0, 1.0] | None = None,
        style_image: discord.Attachment | None = None,
    ) -> None:
        """Queue a generation and follow it in the deferred reply."""
        files = (("image", image), ("mask", mask), ("control_image", control_image), ("style_image", style_image))
        attachments = {token(option): file for option, file in files if file is not None}
        given = {
            "prompt": prompt,
            "negative": negative,
            "seed": seed,
            "steps": steps,
            "refiner": refiner,
            "lora": lora,
            "model": model,
            "style": style,
            "size": size,
            "cfg": cfg,
            "scheduler": scheduler,
            "count": count,
            "image": token("image") if image is not None else None,
            "strength": strength,
            "mask": token("mask") if mask is not None else None,
            "control_image": token("control_image") if control_image is not None else None,
            "control": control,
            "control_weight": control_weight,
            "control_start": control_start,
            "control_end": control_end,
            "control_mode": control_mode,
            "tile": tile,
            "variation": variation,
            "style_image": token("style_image") if style_image is not None else None,
        }
        await self._imagine(interaction, given, attachments, private)

    async def imagine_from_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Ask for a prompt (and a strength) to make a new image from a message's image attachment."""
        await self._with_attachment(interaction, message, FROM_IMAGE_MENU, ("image", "strength"))

    async def style_from_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Ask for a prompt (and a style weight) to make a new image in the style of a message's image attachment."""
        await self._with_attachment(interaction, message, STYLE_MENU, ("style_image", "sw"))

    async def _with_attachment(
        self, interaction: discord.Interaction, message: discord.Message, title: str, options: tuple[str, str]
    ) -> None:
        """Ask for a prompt and one value (`options`: the attachment's option, the value's), then queue the image.

        The value goes to the service as typed, so a bad one gets the same sentence as its flag would.
        """
        attachment = await self._image_of(interaction, message)
        if attachment is None:
            return
        option, value_option = options
        label, placeholder = _MENU_VALUES[value_option]

        async def submit(answer: discord.Interaction, file: discord.Attachment, prompt: str, value: str) -> None:
            given = {"prompt": prompt, option: token(option), value_option: value.strip() or None}
            await self._imagine(answer, given, {token(option): file}, None)

        await interaction.response.send_modal(ImageModal(title, label, placeholder, submit, attachment))
        self._acked(interaction)

    def _remixer(self, form: RemixForm) -> Callable[[discord.Interaction, str], Awaitable[None]]:
        """Return what a remix form's words go to: its action, run on its image with them as the prompt."""

        async def remix(interaction: discord.Interaction, words: str) -> None:
            who = requester(interaction)
            await self._ask(interaction, self.flow.remix(who, form.action, form.generation_id, form.index, words))

        return remix

    async def on_edit(self, interaction: discord.Interaction, text: str) -> None:
        """Queue a generation from an Edit form's /imagine text, its flags read as in the prompt option."""
        await self._imagine(interaction, {"prompt": text}, {}, None)

    async def guide_from_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Ask for a prompt and a ControlNet to make a new image guided by a message's image attachment."""
        attachment = await self._image_of(interaction, message)
        if attachment is not None:
            names = ", ".join(self.service.offered.names("controlnet"))
            await interaction.response.send_modal(GuideModal(self, attachment, names))
            self._acked(interaction)

    async def png_info_of_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Say privately what a message's image file says of how it was made, and the /imagine that asks for it."""
        attachment = await self._image_of(interaction, message)
        if attachment is None:
            return
        _, _, load = await self._defer(interaction, True, {token("image"): attachment})
        try:
            reply = await self.flow.png_info(await load(token("image"), "image"), attachment.filename)
        except BotError as error:
            await self._refuse_deferred(interaction, error, private=True)
            return
        await interaction.edit_original_response(content=reply.text[:2000])

    async def describe_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Say privately what a message's image shows, in words to send with /imagine."""
        attachment = await self._image_of(interaction, message)
        if attachment is not None:
            await self._describe(interaction, attachment, None, private=True)

    async def _image_of(self, interaction: discord.Interaction, message: discord.Message) -> discord.Attachment | None:
        """Return the image a message menu acts on, or None once the user is told the message has none."""
        attachment = image_attachment(message)
        if attachment is None:
            await interaction.response.send_message(NO_IMAGE, ephemeral=True)
            self._acked(interaction)
        return attachment

    @app_commands.command(name="describe", description="An image in words, to send with /imagine (Midjourney's).")
    @app_commands.describe(
        file="an image to describe (PNG, JPEG or WebP)",
        image="or one of yours: 12 or #12, and #12.2 for its second (default: your latest)",
        private="show the words to you only",
    )
    async def describe(
        self,
        interaction: discord.Interaction,
        file: discord.Attachment | None = None,
        image: str | None = None,
        private: bool | None = None,
    ) -> None:
        """Put an attachment, or one of the user's images, into words."""
        if file is not None and image:
            await interaction.response.send_message(f"✖ {DESCRIBE_ONE}", ephemeral=True)
            self._acked(interaction)
            return
        await self._describe(interaction, file, image, private=private)

    async def _describe(
        self,
        interaction: discord.Interaction,
        file: discord.Attachment | None,
        image: str | None,
        *,
        private: bool | None,
    ) -> None:
        files = {} if file is None else {token("file"): file}
        who, private, load = await self._defer(interaction, private, files)
        try:
            reply = await self.flow.describe(who, image, file=token("file") if file else None, load=load)
        except BotError as error:
            await self._refuse_deferred(interaction, error, private=private)
            return
        await interaction.edit_original_response(content=reply.text[:2000], view=words_view(len(reply.words)))

    async def on_words(self, interaction: discord.Interaction, number: int) -> None:
        """Open the /imagine form holding the `number`-th words of the /describe answer the clicked button is under."""
        words = words_in(interaction.message.content if interaction.message else "", number)
        if words is None:  # not an answer of ours (its words were cut, or edited away)
            await interaction.response.send_message(f"✖ {NO_WORDS}", ephemeral=True)
        else:
            await interaction.response.send_modal(EditModal(self.on_edit, words, "Imagine these words"))
        self._acked(interaction)

    async def _defer(
        self, interaction: discord.Interaction, private: bool | None, attachments: Mapping[str, discord.Attachment]
    ) -> tuple[Requester, bool, ImageLoader]:
        """Defer the reply, privately or not (None: the user's setting); return who asked, where, and a loader.

        Deferred first: fetching an attachment, and a model's reading of it, can take longer than Discord's 3
        seconds. The loader reads `attachments` (token → attachment) from Discord's own hosts.
        """
        who = requester(interaction)
        if private is None:
            private = await self.service.user_settings.wants_private(who)
        await interaction.response.defer(ephemeral=private, thinking=True)
        self._acked(interaction)
        return who, private, attachment_loader(attachments, self.file_hosts, self.service.max_input_bytes)

    async def on_guide(
        self, interaction: discord.Interaction, attachment: discord.Attachment, prompt: str, control: str
    ) -> None:
        """Queue a generation guided by an attachment, with the modal's prompt and ControlNet."""
        given = {"prompt": prompt, "control_image": token("control_image"), "control": control.strip() or None}
        await self._imagine(interaction, given, {token("control_image"): attachment}, None)

    async def _imagine(
        self,
        interaction: discord.Interaction,
        given: Mapping[str, object],
        attachments: Mapping[str, discord.Attachment],
        private: bool | None,
    ) -> None:
        """Defer, then queue the generations (fetching their attachments) and follow the first in the deferred reply."""
        who, private, load = await self._defer(interaction, private, attachments)
        try:
            started = await self.flow.imagine(who, given, private=private, load=load)
        except BotError as error:
            await self._refuse_deferred(interaction, error, private=private)
            return
        self._follow_interaction(interaction, started.job)
        # A prompt with {…} choices: each further job gets a message of its own under the first.
        for job in started.more:
            try:
                message = await interaction.followup.send(
                    progress_line(job, JobEvent("queued")), ephemeral=private, view=running_view(job.id), wait=True
                )
            except discord.HTTPException as error:  # as on Slack: a job nobody can follow is not made
                log.info("could not post the message of %s (%s); it is cancelled", format_ref(job.id), error)
                await self.service.cancel(who, job.id)
                continue
            self._spawn(self._follow(job, message.edit, interaction.filesize_limit))

    @app_commands.command(name="blend", description="One image of two or three (Midjourney's /blend).")
    @app_commands.describe(
        image1="an image to blend (PNG, JPEG or WebP)",
        image2="another",
        image3="a third, if you like",
        images="or, with them, images of yours: #3 #4 (#3.2 for a result's second)",
        prompt="words to steer the blend (flags such as --seed work too); none: the images alone",
        dimensions="the shape of the result (default: the model's own)",
        private="show the image to you only",
    )
    @app_commands.choices(dimensions=BLEND_SHAPE_CHOICES)
    async def blend(
        self,
        interaction: discord.Interaction,
        image1: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        images: str | None = None,
        prompt: str | None = None,
        dimensions: str | None = None,
        private: bool | None = None,
    ) -> None:
        """Queue a blend of the attachments and the user's named images by the model's IP-Adapter, as /imagine does."""
        files = {token(f"image{n}"): file for n, file in enumerate((image1, image2, image3), 1) if file is not None}
        try:
            given = blend_options([*files, *image_words(images or "")], prompt or "")
        except BotError as error:
            await interaction.response.send_message(refusal(error), ephemeral=True)
            self._acked(interaction)
            return
        await self._imagine(interaction, given | ({"ar": dimensions} if dimensions else {}), files, private)

    @imagine.autocomplete("lora")
    async def _lora_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return _choices(complete_weighted(self.service.offered, "lora", current))

    @imagine.autocomplete("model")
    async def _model_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return _choices(complete_name(self.service.offered, "model", current))

    @imagine.autocomplete("style")
    async def _style_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return _choices(complete_name(self.service.offered, "style", current))

    @imagine.autocomplete("control")
    async def _control_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return _choices(complete_name(self.service.offered, "controlnet", current))

    @app_commands.command(name="reroll", description="Same settings, new seed (default: your latest image).")
    @app_commands.describe(id="the generation number (see /history)")
    async def reroll(self, interaction: discord.Interaction, id: app_commands.Range[int, 1] | None = None) -> None:
        """Queue a reroll and follow it."""
        await self._ask(interaction, self.flow.reroll(requester(interaction), id))

    @app_commands.command(name="refine", description="Same seed; the SDXL refiner takes over the last steps.")
    @app_commands.describe(id="the generation number (default: your latest)", percent="where the refiner starts (85)")
    async def refine(
        self,
        interaction: discord.Interaction,
        id: app_commands.Range[int, 1] | None = None,
        percent: app_commands.Range[int, 1, 99] | None = None,
    ) -> None:
        """Queue a refine and follow it."""
        await self._ask(interaction, self.flow.refine(requester(interaction), id, percent))

    @app_commands.command(name="upscale", description="A larger copy of an image, 2× or 4× (default: your latest).")
    @app_commands.describe(image=IMAGE_OPTION, factor="how many times larger each side gets")
    async def upscale(
        self, interaction: discord.Interaction, factor: Literal[2, 4] = 2, image: str | None = None
    ) -> None:
        """Queue an upscale of any image of a generation, not only the first (the button's)."""
        await self._ask(interaction, self.flow.upscale(requester(interaction), image, factor))

    @app_commands.command(name="vary", description="The image again, a little or a lot changed (default: your latest).")
    @app_commands.describe(image=IMAGE_OPTION, strength="subtle: a little changed; strong: a lot")
    async def vary(
        self, interaction: discord.Interaction, strength: VaryKind = "subtle", image: str | None = None
    ) -> None:
        """Queue a variation of any image of a generation."""
        await self._ask(interaction, self.flow.vary(requester(interaction), image, strength))

    @app_commands.command(name="zoom", description="Zoom out: the image smaller in its frame, the border painted.")
    @app_commands.describe(image=IMAGE_OPTION, factor="how far out (1.5: the image at two thirds of the frame)")
    async def zoom(
        self,
        interaction: discord.Interaction,
        factor: app_commands.Range[float, 1.1, 2.0] = ZOOM_OUT,
        image: str | None = None,
    ) -> None:
        """Queue a zoom out of any image of a generation."""
        await self._ask(interaction, self.flow.zoom(requester(interaction), image, factor))

    @app_commands.command(name="pan", description="Widen the image one way, the new strip painted to continue it.")
    @app_commands.describe(image=IMAGE_OPTION, direction="which side grows")
    async def pan(self, interaction: discord.Interaction, direction: PanDirection, image: str | None = None) -> None:
        """Queue a pan of any image of a generation."""
        await self._ask(interaction, self.flow.pan(requester(interaction), image, direction))

    @app_commands.command(name="square", description="Make a wide or tall image square, the new strips painted.")
    @app_commands.describe(image=IMAGE_OPTION)
    async def square(self, interaction: discord.Interaction, image: str | None = None) -> None:
        """Queue a Make Square of any image of a generation."""
        await self._ask(interaction, self.flow.square(requester(interaction), image))

    @app_commands.command(name="region", description="Vary (Region): select the parts of an image to make again.")
    @app_commands.describe(image=IMAGE_OPTION)
    async def region(self, interaction: discord.Interaction, image: str | None = None) -> None:
        """Answer privately with the link to an image's Vary (Region) page in the user's gallery."""
        await self._ask(interaction, self.flow.region(requester(interaction), image))

    @app_commands.command(name="history", description="Your recent generations, with their seeds.")
    async def history(self, interaction: discord.Interaction, count: app_commands.Range[int, 1, 25] = 10) -> None:
        """List the user's recent generations."""
        await self._ask(interaction, self.flow.history(requester(interaction), count))

    @app_commands.command(name="info", description="Everything about one generation (default: your latest).")
    async def info(self, interaction: discord.Interaction, id: app_commands.Range[int, 1] | None = None) -> None:
        """Show a generation's parameters."""
        await self._ask(interaction, self.flow.info(requester(interaction), id))

    @app_commands.command(
        name="edit", description="Change an image's /imagine text and make it anew (default: latest)."
    )
    @app_commands.describe(id="the generation number (default: your latest)")
    async def edit(self, interaction: discord.Interaction, id: app_commands.Range[int, 1] | None = None) -> None:
        """Open the Edit form of a generation."""
        await self._ask(interaction, self.flow.edit(requester(interaction), id))

    @app_commands.command(name="cancel", description="Cancel a queued or running image (default: your newest).")
    async def cancel(self, interaction: discord.Interaction, id: app_commands.Range[int, 1] | None = None) -> None:
        """Cancel a job of the user's."""
        await self._ask(interaction, self.flow.cancel(requester(interaction), id))

    @app_commands.command(name="queue", description="How many images wait, and where yours are.")
    async def queue(self, interaction: discord.Interaction) -> None:
        """Show the queue."""
        await self._answer(interaction, self.flow.queue(requester(interaction)))

    @app_commands.command(name="loras", description="LoRAs in the catalog.")
    async def loras(self, interaction: discord.Interaction, search: str = "") -> None:
        """List catalog LoRAs matching a search."""
        await self._answer(interaction, self.flow.loras(search))

    @loras.autocomplete("search")
    async def _lora_search_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _choices(complete_name(self.service.offered, "lora", current))

    @app_commands.command(name="wildcards", description="The wildcards a prompt draws a line from: __name__.")
    async def wildcards(self, interaction: discord.Interaction, search: str = "") -> None:
        """List the operator's wildcards whose name holds a search."""
        await self._answer(interaction, await self.flow.wildcards(search))

    @wildcards.autocomplete("search")
    async def _wildcard_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return _choices(complete_wildcard(await self.service.wildcards(), current))

    @app_commands.command(name="settings", description="Your defaults for /imagine (no options: show them).")
    @app_commands.choices(size=SIZE_CHOICES, scheduler=SCHEDULER_CHOICES)
    @app_commands.describe(
        refiner="where the SDXL refiner takes over, in percent of the steps (0: off)",
        scheduler="the sampler",
        cfg="how closely to follow the prompt (0-50)",
        private="your images only to you",
        batching="false keeps your images bit-exact: never batched with other users' jobs",
        vary_subtle="the strength of Vary (Subtle), 0-1 (0.35)",
        vary_strong="the strength of Vary (Strong), 0-1 (0.7)",
        vary_region="the strength of Vary (Region) in the parts selected, 0-1 (0.9)",
        upscale_strength="how much an upscale redraws, 0-1 (0.3)",
        remix="Vary, Zoom Out, Make Square and Pan first show the prompt to change (Midjourney's Remix)",
        reset="true to clear your defaults (your option sets stay)",
    )
    async def settings_command(
        self,
        interaction: discord.Interaction,
        model: str | None = None,
        steps: app_commands.Range[int, 1, 100] | None = None,
        refiner: app_commands.Range[int, 0, 99] | None = None,
        size: str | None = None,
        scheduler: str | None = None,
        cfg: app_commands.Range[float, 0, 50] | None = None,
        private: bool | None = None,
        batching: bool | None = None,
        vary_subtle: app_commands.Range[float, 0, 1] | None = None,
        vary_strong: app_commands.Range[float, 0, 1] | None = None,
        vary_region: app_commands.Range[float, 0, 1] | None = None,
        upscale_strength: app_commands.Range[float, 0, 1] | None = None,
        remix: bool | None = None,
        reset: bool = False,
    ) -> None:
        """Show or change the user's defaults."""
        who = requester(interaction)
        given = {
            "model": model,
            "steps": steps,
            "refiner": refiner,
            "size": size,
            "scheduler": scheduler,
            "cfg": cfg,
            "private": private,
            "batching": batching,
            "vary_subtle": vary_subtle,
            "vary_strong": vary_strong,
            "vary_region": vary_region,
            "upscale_strength": upscale_strength,
            "remix": remix,
        }

        await self._ask(interaction, self.flow.settings(who, settings_changes(given), reset=reset))

    settings_command.autocomplete("model")(_model_choices)

    @app_commands.command(name="prefer", description="Your option sets: --mine in a prompt for flags you keep typing.")
    @app_commands.describe(
        name="the set's name, typed as --name in a prompt (no flags: show it; no name: list them all)",
        flags="the flags it stands for, like --ar 2:3 --no blurry; none removes the set",
    )
    async def prefer(self, interaction: discord.Interaction, name: str | None = None, flags: str | None = None) -> None:
        """Show, save or remove the user's option sets."""
        await self._ask(interaction, self.flow.prefer(requester(interaction), name, flags))

    @prefer.autocomplete("name")
    async def _set_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        sets = await self.service.user_settings.option_sets(requester(interaction))
        typed = current.strip().lstrip("-—").lower()
        return [app_commands.Choice(name=f"--{name}", value=name) for name in sorted(sets) if typed in name][:25]

    @app_commands.command(name="forget", description="Delete all your images, seeds and settings for good.")
    @app_commands.describe(confirm="true to really delete everything")
    async def forget(self, interaction: discord.Interaction, confirm: bool = False) -> None:
        """Delete the user's history after a confirmation."""
        how = "run `/forget confirm:True`"
        await self._ask(interaction, self.flow.forget(requester(interaction), confirm=confirm, how_to_confirm=how))

    @app_commands.command(name="gallery", description="A private link to all your images on the web.")
    @app_commands.describe(
        revoke="true to make every link you were given stop working",
        showcase="true for the link to this server's showcase of starred images instead",
    )
    async def gallery(self, interaction: discord.Interaction, revoke: bool = False, showcase: bool = False) -> None:
        """Answer privately with a personal gallery link, revoke every earlier one, or give the server's showcase."""
        reply = self.flow.gallery(
            requester(interaction), revoke=revoke, showcase=showcase, revoke_hint="/gallery revoke:True"
        )
        await self._ask(interaction, reply)

    @app_commands.command(
        name="imagine-admin", description="This server's image rules (managers only; no options: show)."
    )
    @app_commands.guild_only()
    @app_commands.describe(
        open_reroll="let everyone reroll anyone's images (the new image is theirs)",
        ban="add a banned word or phrase (re:<regex> for a pattern); matched ignoring case, accents, l33t",
        unban="remove a banned rule, by its number or text",
        models="the only models allowed, comma-separated (all: every model)",
        loras="the only LoRAs allowed, comma-separated (all: every LoRA)",
        blocked_models="models nobody may use, comma-separated (none: none blocked)",
        blocked_loras="LoRAs nobody may use, comma-separated (none: none blocked)",
        max_steps="the most steps a request may ask for (0: no limit)",
        max_count="the most images a request may ask for (0: no limit)",
        max_size="the largest width×height, e.g. 1024x1024 (0: no limit)",
        member_quota="the images each member may make a day (0: no limit)",
        channels="the only channels the bot answers in: #mentions or here (all: every channel)",
        flagged="how an image the safety check flagged is shown in age-restricted channels (elsewhere never plainly)",
        showcase="a web page of the images members starred (⭐), for anyone with its link; off kills the link",
        default_model="the model members' images use when they name none (none: the bot's default)",
        audit="show who recently made, deleted or was refused images, and who changed the rules",
    )
    @app_commands.choices(flagged=[app_commands.Choice(name=name, value=name) for name in FLAGGED])
    async def imagine_admin(
        self,
        interaction: discord.Interaction,
        open_reroll: bool | None = None,
        ban: str | None = None,
        unban: str | None = None,
        models: str | None = None,
        loras: str | None = None,
        blocked_models: str | None = None,
        blocked_loras: str | None = None,
        max_steps: app_commands.Range[int, 0, 100] | None = None,
        max_count: app_commands.Range[int, 0, 4] | None = None,
        max_size: str | None = None,
        member_quota: app_commands.Range[int, 0, 10000] | None = None,
        channels: str | None = None,
        flagged: str | None = None,
        showcase: bool | None = None,
        default_model: str | None = None,
        audit: bool = False,
    ) -> None:
        """Show or change the server's policy, or read its audit log."""
        who = requester(interaction)

        asked = {
            "open_reroll": open_reroll,
            "ban": ban,
            "unban": unban,
            "models": models,
            "loras": loras,
            "blocked_models": blocked_models,
            "blocked_loras": blocked_loras,
            "max_steps": max_steps,
            "max_count": max_count,
            "max_size": max_size,
            "member_quota": member_quota,
            "channels": channels,
            "flagged": flagged,
            "showcase": showcase,
            "default_model": default_model,
        }

        async def manages() -> bool:
            return interaction.permissions.manage_guild

        await self._ask(interaction, self.flow.server_rules(who, asked, audit=audit, may_manage=manages))

    imagine_admin.autocomplete("default_model")(_model_choices)

    # -- buttons and reactions ----------------------------------------------------------------------

    async def on_action(
        self, interaction: discord.Interaction, action: ButtonAction, generation_id: int, index: int
    ) -> None:
        """Handle a click on one of the buttons under a generation (or one image of it)."""
        await self._ask(interaction, self.flow.action(requester(interaction), action, generation_id, index))

    async def _answer(self, interaction: discord.Interaction, reply: Reply) -> None:
        """Render the chat flow's reply to an interaction, within Discord's 3 seconds."""
        if isinstance(reply, Started):
            job = reply.job
            await interaction.response.send_message(
                progress_line(job, JobEvent("queued")), ephemeral=job.private, view=running_view(job.id)
            )
            self._acked(interaction)
            self._follow_interaction(interaction, job)
            return
        if isinstance(reply, Deleted):
            await interaction.response.edit_message(
                content=deleted_line(reply.generation_id), embed=None, attachments=[], view=None
            )
        elif isinstance(reply, Listing):
            await interaction.response.send_message(history_text(reply.generations), ephemeral=True)
        elif isinstance(reply, Text):
            await interaction.response.send_message(reply.text, ephemeral=True)
        elif isinstance(reply, Guides):
            files = [discord.File(io.BytesIO(guide.data), filename=guide.filename) for guide in reply.images]
            text = "\n".join(guide.label for guide in reply.images)
            await interaction.response.send_message(text[:2000], files=files, ephemeral=True)
        elif isinstance(reply, EditForm):
            title = f"Edit {format_ref(reply.generation_id)} and imagine"
            await interaction.response.send_modal(EditModal(self.on_edit, reply.text, title))
        elif isinstance(reply, RemixForm):
            await interaction.response.send_modal(EditModal(self._remixer(reply), reply.prompt, reply.title, "Prompt"))
        elif isinstance(reply, OneImage):
            view = result_view(reply.generation_id, reply.actions, index=reply.index)
            await interaction.response.send_message(reply.text, view=view, ephemeral=True)
        elif isinstance(reply, Flagged):  # Discord has no Show button: flagged images are spoilers on the message
            text = f"🔞 {format_ref(reply.generation_id)}: flagged images are shown as spoilers under the image."
            await interaction.response.send_message(text, ephemeral=True)
        self._acked(interaction)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """Do what the matching button does when the author reacts to a result message; ⭐ stars it."""
        await self._react(payload, _BY_EMOJI.get(str(payload.emoji).replace("\ufe0f", "")))

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        """Take the star back when the author removes their ⭐ from a result message."""
        starred = _BY_EMOJI.get(str(payload.emoji).replace("\ufe0f", "")) == "star"
        await self._react(payload, "unstar" if starred else None)

    async def _react(self, payload: discord.RawReactionActionEvent, action: ButtonAction | None) -> None:
        if action is None or self.bot.user is None or payload.user_id == self.bot.user.id:
            return
        generation = await self.service.by_message(PLATFORM, str(payload.message_id))
        if generation is None:
            return
        who = _requester(
            payload.user_id, payload.guild_id, payload.channel_id, self.bot.get_channel(payload.channel_id)
        )
        channel = self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        try:
            reply = await self.flow.action(who, action, generation.id, form=False)  # a reaction shows no form
        except BotError as error:
            # A reaction has no private reply; the refusal is only logged.
            log.info("reaction %s on %s by %s refused: %s", action, generation.id, payload.user_id, error)
            return
        if isinstance(reply, Deleted):
            await channel.get_partial_message(payload.message_id).delete()
            return
        if not isinstance(reply, Started):
            return
        job = reply.job
        message = await channel.send(
            progress_line(job, JobEvent("queued")),
            view=running_view(job.id),
            reference=discord.MessageReference(message_id=payload.message_id, channel_id=payload.channel_id),
            mention_author=False,
        )
        limit = message.guild.filesize_limit if message.guild else DEFAULT_UPLOAD_LIMIT
        self._spawn(self._follow(job, message.edit, limit))

    # -- following a job ----------------------------------------------------------------------------

    def _follow_interaction(self, interaction: discord.Interaction, job: Job) -> None:
        self._spawn(self._follow(job, interaction.edit_original_response, interaction.filesize_limit))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, job: Job, edit: Edit, upload_limit: int) -> None:
        """Edit one message through a job's life, as often as the chat flow says an update is worth it.

        discord.py itself waits out rate limits and retries server errors. A progress edit
        Discord still refuses is dropped (the next one says more), and the job goes on.
        """
        async for update in updates(
            job, interval=self.settings.progress_interval, preview_every=PREVIEW_EVERY, clock=_loop_time
        ):
            if update.final:
                await self._show_outcome(job, update.event, update.text, edit, upload_limit)
                return
            changes: dict[str, Any] = {"content": update.text, "view": running_view(job.id)}
            if update.preview is not None:
                changes["attachments"] = [discord.File(io.BytesIO(update.preview), filename="preview.webp")]
            try:
                await edit(**changes)
            except discord.HTTPException as error:
                log.info("dropped a progress edit of %s: %s", format_ref(job.id), error)

    async def _show_outcome(self, job: Job, event: JobEvent, line: str, edit: Edit, upload_limit: int) -> None:
        if event.kind != "done" or event.generation is None:
            await self._finally_show(job, edit, content=line, embed=None, view=None, files=list)
            return
        generation = event.generation
        # A job resumed after a restart lost its requester's flag; the channel still has it.
        adult = job.requester.age_restricted or (
            job.requester.channel is not None and age_restricted(self.bot.get_channel(int(job.requester.channel)))
        )
        displays = await self.service.admin.displays(generation, age_restricted=adult)
        uploads: list[tuple[bytes, str, bool]] = []
        picks = [n for n, display in enumerate(displays) if display != "withhold"]  # "Image N" of what is shown
        for image, display in zip(generation.images, displays, strict=True):
            if display == "withhold":
                continue
            data, name = fit_upload(await self.service.read_image(image.path), image.filename, upload_limit)
            uploads.append((data, name, display == "spoiler"))

        def files() -> list[discord.File]:
            # discord.py names a spoiler SPOILER_<name>; Discord blurs it until clicked.
            return [discord.File(io.BytesIO(data), filename=name, spoiler=spoiler) for data, name, spoiler in uploads]

        # The embed's own image would show a spoilered file plainly: only an unflagged one goes there.
        shown = uploads[0][1] if uploads and not uploads[0][2] else None
        message = await self._finally_show(
            job,
            edit,
            content=withheld_line(displays),
            embed=result_embed(generation, shown, self.service.catalog),
            view=result_view(generation.id, self.service.result_actions(generation.request), picks=picks),
            files=files,
        )
        if message is not None:
            await self.service.attach_message(generation.id, str(message.id))

    async def _finally_show(
        self,
        job: Job,
        edit: Edit,
        *,
        content: str | None,
        embed: discord.Embed | None,
        view: discord.ui.View | None,
        files: Callable[[], list[discord.File]],
    ) -> discord.Message | None:
        """Edit a job's message into its outcome; if Discord refuses, post the outcome as a new message.

        The edit fails for good when the message was deleted, the interaction's token
        expired (after 15 minutes, so a long queue), or Discord kept failing past
        discord.py's retries: the user must still get the image, so it comes anew, naming them.
        Return the message that shows it, or None when neither worked (the image stays in history).
        """
        try:
            return await edit(content=content, embed=embed, attachments=files(), view=view)
        except discord.HTTPException as error:
            log.warning(
                "could not edit the outcome of %s into its message (%s); posting it anew", format_ref(job.id), error
            )
        mention = f"<@{job.requester.user_id}>"
        try:
            channel = await self._home(job)
            return await channel.send(
                content=f"{mention} {content}" if content else mention,
                embed=embed or discord.utils.MISSING,
                files=files(),
                view=view or discord.utils.MISSING,
            )
        except discord.HTTPException as error:
            log.warning("could not post the outcome of %s: %s; it stays in history", format_ref(job.id), error)
            return None

    # -- replies ------------------------------------------------------------------------------------

    @staticmethod
    def _acked(interaction: discord.Interaction) -> None:
        """Record how long after Discord created the interaction it was answered."""
        seconds = (discord.utils.utcnow() - interaction.created_at).total_seconds()
        metrics.ACK_SECONDS.labels(PLATFORM).observe(max(seconds, 0.0))

    async def _ask(self, interaction: discord.Interaction, reply: Awaitable[Reply]) -> None:
        """Answer with what the chat flow replies, or privately with the refusal it raised."""
        try:
            answer = await reply
        except BotError as error:
            await interaction.response.send_message(refusal(error), ephemeral=True)
            self._acked(interaction)
            return
        await self._answer(interaction, answer)

    @staticmethod
    async def _refuse_deferred(interaction: discord.Interaction, error: BotError, *, private: bool) -> None:
        """Turn a deferred reply into a private refusal."""
        if private:
            await interaction.edit_original_response(content=refusal(error))
            return
        # The public "thinking…" reply goes; the sentence is shown to the user only.
        await interaction.delete_original_response()
        await interaction.followup.send(refusal(error), ephemeral=True)

"""The platform-neutral chat flow: what a user typed or clicked becomes a use case, a job's life becomes updates.

Every chat shares it, so a command, a button and a sentence a user reads exist once::

    /imagine (text or typed options; {…} choices: several)   ─► ChatFlow.imagine ─┐
    text  ("reroll #3", "history 5", "settings steps=30", …) ─► ChatFlow.text    ─┤
    click (a button or reaction: reroll, refine, details, …) ─► ChatFlow.action  ─┴► Reply
    Reply: Started(jobs) | Text | Listing | Deleted | Flagged | Guides | OneImage | EditForm
    job ─► updates(job) ─► Update (the line to show, a preview when due), ending with the final one
    job started outside every chat (a gallery click) ─► show_in_chat ─► the original's chat (a ChatPoster)
    generation deleted outside every chat (the gallery) ─► retract_in_chat ─► its message there (a ChatPoster)

An adapter turns its platform's events into these calls and renders each reply
and update as an embed, Block Kit or terminal text; it decides nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from bot import wildcards
from bot.actions import (
    BUTTON_LOOKS,
    PAN_ACTIONS,
    ButtonAction,
    format_image_ref,
    format_ref,
    parse_image_ref,
    parse_ref_args,
)
from bot.admin import server_word
from bot.controls import blend_options
from bot.describe import answer_text
from bot.errors import BotError, InvalidOption, shown
from bot.history import Generation, StoredImage
from bot.inputs import ImageLoader
from bot.jobs import Job, JobEvent, Requester
from bot.option_sets import SUFFIX, checked_name, sets_text
from bot.options import Defaults, PanDirection
from bot.pnginfo import png_info
from bot.policy import parse_admin, rule_changes
from bot.service import ZOOM_OUT, ImageService, VaryKind
from bot.showcase import showcase_line
from bot.summary import (
    FORGET_WARNING,
    GALLERY_REVOKED,
    audit_text,
    control_line,
    defaults_line,
    deleted_line,
    details_text,
    forgotten_line,
    gallery_line,
    mention,
    parse_setting_pairs,
    progress_line,
    region_line,
)
from bot.user_settings import remix

__all__ = [
    "EDIT_MOST",
    "FROM_GALLERY",
    "GENERIC_ERROR",
    "REMIXABLE",
    "RESUMED",
    "ChatFlow",
    "Deleted",
    "EditForm",
    "Flagged",
    "GuideImage",
    "Guides",
    "Listing",
    "OneImage",
    "RemixForm",
    "Reply",
    "Started",
    "Text",
    "Update",
    "cancelling_line",
    "failure_line",
    "image_words",
    "posted_line",
    "queue_text",
    "refusal",
    "retract_in_chat",
    "show_in_chat",
    "updates",
]

log = logging.getLogger(__name__)

GENERIC_ERROR = "Something went wrong; it has been logged."
# The most characters of /imagine text an Edit form holds: Slack's text input (Discord's holds 4000).
EDIT_MOST = 3000
# The most generations one history reply lists (Discord's /history takes up to this too).
HISTORY_MOST = 25
# Why a chat posts about a job no message of the user's asked for there.
FROM_GALLERY = "from the gallery"
RESUMED = "resumed after a restart"


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def refusal(error: BaseException, what: str = "a chat command") -> str:
    """Return the one line a user sees for a failure: a `BotError` as it is, anything else generic (and logged)."""
    if isinstance(error, BotError):
        return f"✖ {error}"
    log.error("%s failed", what, exc_info=error)
    return f"✖ {GENERIC_ERROR}"


def failure_line(job: Job, message: str | None) -> str:
    """Return the line that replaces a job's progress when it failed or was cancelled."""
    return f"✖ {format_ref(job.id)} · {message or 'The generation failed.'}"


def cancelling_line(generation_id: int) -> str:
    """Return what a cancel answers."""
    return f"⏹ Cancelling {format_ref(generation_id)}."


def posted_line(job: Job, why: str) -> str:
    """Return the first line of a message a chat posts unasked about a job: its queued line and why it is here."""
    return f"{progress_line(job, JobEvent('queued'))} · {why}"


async def show_in_chat(service: ImageService, job: Job, why: str = FROM_GALLERY) -> bool:
    """Show a job started outside every chat in the chat where its original was made, and follow it there.

    Returns:
        Whether that platform's chat runs in this process and took the job; when it does
        not (Slack not configured, say), the result is in the gallery only, and that is no error.
    """
    poster = service.poster(job.requester.platform)
    if poster is None:
        return False
    try:
        await poster.post(job, posted_line(job, why))
    except Exception:
        # The job runs on and its result is in the gallery; the chat's failure is the operator's to read.
        log.exception("could not post %s in the %s chat", format_ref(job.id), job.requester.platform)
        return False
    return True


async def retract_in_chat(service: ImageService, generation: Generation) -> bool:
    """Take back the chat message that showed a generation deleted outside every chat (in the gallery).

    Args:
        service: the service whose running chats may hold the message.
        generation: the generation as read before it was deleted: the deleted row no longer names its message.

    Returns:
        Whether its platform's chat runs in this process and was asked to; the delete stands either way.
    """
    poster = service.poster(generation.platform)
    if poster is None:
        return False
    try:
        await poster.retract(generation, deleted_line(generation.id))
    except Exception:
        # The generation is deleted all the same; the chat's failure is the operator's to read.
        log.exception("could not retract %s in the %s chat", format_ref(generation.id), generation.platform)
        return False
    return True


def queue_text(waiting: int, mine: Sequence[Job]) -> str:
    """Return how many jobs wait in all and where the user's are."""
    lines = [f"{waiting} waiting in all."]
    for job in mine:
        where = "being made" if job.position == 0 else f"position {job.position}"
        lines.append(f"{format_ref(job.id)} · {where} · {job.request.prompt[:60]}")
    if not mine:
        lines.append("You have nothing queued.")
    return "\n".join(lines)


# -- replies ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """Jobs were queued: show each one's progress where the user asked (``{…}`` choices in a prompt: several)."""

    job: Job
    more: tuple[Job, ...] = ()

    @property
    def jobs(self) -> tuple[Job, ...]:
        """Every job queued, in the order of their prompts."""
        return (self.job, *self.more)


@dataclass(frozen=True, slots=True)
class Text:
    """A sentence or a few lines for the user who asked only.

    `words`: prompts the chat may offer to imagine (a ``/describe`` answer's): a button each that
    opens the ``/imagine`` form holding them (`bot.actions.WORDS_ID`, numbered when several).
    """

    text: str
    words: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Listing:
    """The user's recent generations, newest first (each chat lays them out its own way)."""

    generations: tuple[Generation, ...]


@dataclass(frozen=True, slots=True)
class Deleted:
    """A generation and its files are gone: remove the message that showed it."""

    generation_id: int


@dataclass(frozen=True, slots=True)
class Flagged:
    """A generation's flagged images, for its author's eyes only."""

    generation_id: int
    images: tuple[StoredImage, ...]


@dataclass(frozen=True, slots=True)
class GuideImage:
    """One guide image a ControlNet saw, with the line that says which and on which steps, and its file's name."""

    label: str
    sha256: str
    data: bytes
    filename: str


@dataclass(frozen=True, slots=True)
class Guides:
    """The guide images of a generation's ControlNets (after preprocessing), for the user who asked only."""

    generation_id: int
    images: tuple[GuideImage, ...]


@dataclass(frozen=True, slots=True)
class OneImage:
    """One image of a several-image result and the buttons that act on it alone, for the user who asked only."""

    generation_id: int
    index: int
    text: str
    actions: tuple[ButtonAction, ...]


@dataclass(frozen=True, slots=True)
class EditForm:
    """A form holding a generation's ``/imagine`` text (without the command), for the user who asked to change it."""

    generation_id: int
    text: str

    @property
    def line(self) -> str:
        """The text for a chat that shows no form: to copy, change and send."""
        return f"Change it and send it: /imagine {self.text}"


# The buttons whose image-to-image remix mode lets the user re-word first (Midjourney's Remix: not Upscale).
REMIXABLE: frozenset[ButtonAction] = frozenset(
    {"vary-subtle", "vary-strong", "zoom-out", "zoom-out-2", "square", *PAN_ACTIONS}
)


@dataclass(frozen=True, slots=True)
class RemixForm:
    """A form holding a result's prompt, for a user in remix mode to re-word before the button's action runs.

    Sent back with `ChatFlow.remix`; a chat with no forms never gets one (its buttons are none).
    """

    generation_id: int
    index: int
    action: ButtonAction
    prompt: str

    @property
    def title(self) -> str:
        """What the form is for: ``Remix: 🌪️ Vary (Strong) #12.2``."""
        emoji, words = BUTTON_LOOKS[self.action]
        ref = format_image_ref(self.generation_id, self.index)
        return " ".join(part for part in ("Remix:", emoji, words, ref) if part)  # a pan button has no words


Reply = Started | Text | Listing | Deleted | Flagged | Guides | OneImage | EditForm | RemixForm


class ChatFlow:
    """Turns chat commands and clicks into use cases, the same on every platform.

    Args:
        service: the image service.
        command: how the chat's users start a text command: ``"/imagine "`` on Slack, ``""`` in the console.
        details_limit: the most characters of parameters a details reply shows (the platform's message limit).
        quote: escapes users' text for the chat's markup (Slack's ``&<>``).
        mention: names a user in the chat's markup (Discord's and Slack's ``<@id>``; the console's plain id).
        may_manage: tells whether a user manages their server (Slack's admins), for ``admin …`` text;
            None where the chat has no such word.
        when: shows an audit entry's time in the chat's markup (each chat shows it in the reader's zone).
    """

    def __init__(
        self,
        service: ImageService,
        *,
        command: str = "",
        details_limit: int = 1700,
        quote: Callable[[str], str] = str,
        mention: Callable[[str], str] = mention,
        may_manage: Callable[[Requester], Awaitable[bool]] | None = None,
        when: Callable[[float], str] = _utc,
    ) -> None:
        self.service = service
        self._command = command
        self._details_limit = details_limit
        self._quote = quote
        self._mention = mention
        self._may_manage = may_manage
        self._when = when

    async def action(
        self, who: Requester, action: ButtonAction, generation_id: int, index: int = 0, *, form: bool = True
    ) -> Reply:
        """Do what a button or reaction on a generation's message asks (of its image `index`, 0 the first).

        In remix mode (the user's ``remix`` setting), Vary, Zoom Out, Make Square and Pan first answer a `RemixForm`
        where a chat can show one (`form`: a button can, a reaction cannot): `remix` then runs them.
        """
        image = format_image_ref(generation_id, index) if index else generation_id
        if form and action in REMIXABLE and remix(await self.service.user_settings.get(who)):
            await self.service.image_actions(who, generation_id, index)  # refused now, as the action would be
            generation = await self.service.details(who, generation_id)
            return RemixForm(generation.id, index, action, generation.request.prompt)
        if action in REMIXABLE:
            return await self._from_result(who, action, image)
        if action == "region":
            return await self.region(who, image)
        if action == "pick":
            return await self.pick(who, generation_id, index)
        if action == "edit":
            return await self.edit(who, generation_id)
        if action == "reroll":
            return await self.reroll(who, generation_id)
        if action == "refine":
            return await self.refine(who, generation_id)
        if action in ("upscale-2", "upscale-4"):
            return await self.upscale(who, image, 4 if action == "upscale-4" else 2)
        if action == "details":
            return await self.info(who, generation_id)
        if action == "cancel":
            return await self.cancel(who, generation_id)
        if action == "show":
            return Flagged(generation_id, tuple(await self.service.flagged_images(who, generation_id)))
        if action == "guide":
            return await self.guides(who, generation_id)
        if action in ("star", "unstar"):
            return await self.star(who, generation_id, starred=action == "star")
        await self.service.delete(who, generation_id)
        return Deleted(generation_id)

    async def gallery(
        self, who: Requester, *, revoke: bool = False, showcase: bool = False, revoke_hint: str | None = None
    ) -> Text:
        """Answer ``gallery`` (a new personal link), ``gallery revoke`` or ``gallery showcase``.

        ``revoke`` kills every earlier link of the user's; ``showcase`` answers with the link to
        the server's showcase. `revoke_hint` is how this chat's users revoke (Discord's
        ``/gallery revoke:True``).
        """
        if showcase:
            return Text(showcase_line(who, await self.service.showcase.link(who)))
        if revoke:
            await self.service.revoke_gallery(who)
            return Text(GALLERY_REVOKED)
        link = await self.service.gallery_link(who)
        assert self.service.gallery is not None  # gallery_link refuses otherwise
        hint = revoke_hint or f"{self._command}gallery revoke"
        return Text(gallery_line(link, self.service.gallery.lifetime_days, hint))

    async def region(self, who: Requester, image: int | str | None) -> Text:
        """Answer 🖌️ Vary (Region) or ``region [#id[.n]]``: a private link to the page that selects parts to vary.

        The page is in the user's gallery; the image is the latest when none is named.
        """
        ref, link = await self.service.region_link(who, _image(image))
        assert self.service.gallery is not None  # region_link refuses otherwise
        return Text(region_line(link, ref, self.service.gallery.lifetime_days))

    async def server_rules(
        self,
        who: Requester,
        asked: Mapping[str, Any],
        *,
        audit: bool = False,
        may_manage: Callable[[], Awaitable[bool]],
    ) -> Text:
        """Answer an admin command: the server's audit log, or its rules after the changes `asked` for, if any.

        `asked` takes `bot.policy.rule_changes`' options; `may_manage` is the platform's check of
        the user, asked only where it matters (Slack's costs an API call).
        """
        admin = self.service.admin
        if audit:
            entries = await admin.audit_log(who, may_manage=await may_manage())
            return Text(audit_text(entries, self._when, self._quote)[: self._details_limit])
        policy = await admin.policy(who)
        changes = rule_changes(policy, self.service.catalog, **asked, here=who.channel)
        if changes:
            policy = await admin.update_policy(who, changes, may_manage=await may_manage())
        return Text(f"This {server_word(who)}: {policy.summary()}")

    async def _admin_text(self, who: Requester, text: str, manages: Callable[[Requester], Awaitable[bool]]) -> Text:
        """Answer ``admin`` (the rules), ``admin audit`` or ``admin ban gore`` (`bot.policy.parse_admin`)."""
        asked = {} if text in ("", "audit") else parse_admin(text)
        return await self.server_rules(who, asked, audit=text == "audit", may_manage=lambda: manages(who))

    async def star(self, who: Requester, generation_id: int | None, *, starred: bool = True) -> Text:
        """Answer ``star [#id]``, ``unstar [#id]`` and the ⭐ reaction: a user's image in or out of the showcase."""
        return Text(await self.service.star(who, generation_id, starred=starred))

    async def imagine(
        self,
        who: Requester,
        given: str | Mapping[str, object],
        *,
        private: bool | None = None,
        load: ImageLoader | None = None,
    ) -> Started:
        """Answer ``/imagine``: a job for each prompt the options make (`ImageService.imagine_each`)."""
        first, *more = await self.service.imagine_each(given, who, private=private, load=load)
        return Started(first, tuple(more))

    async def blend(
        self,
        who: Requester,
        images: Sequence[str],
        prompt: str = "",
        *,
        private: bool | None = None,
        load: ImageLoader | None = None,
    ) -> Started:
        """Answer ``/blend``: one image of 2–3 images, each read by the model's IP-Adapter (`blend_options`)."""
        return await self.imagine(who, blend_options(images, prompt), private=private, load=load)

    async def describe(
        self,
        who: Requester,
        image: int | str | None = None,
        *,
        file: str | None = None,
        load: ImageLoader | None = None,
    ) -> Text:
        """Answer ``/describe``: an image in words, ready for ``/imagine``.

        The image is a result (`image`: an id, ``#12.2``, None: the latest) or a chat's `file`, which
        `load` reads (a Discord attachment's token, a console path). The words are a prompt already
        (`bot.describe.as_prompt`), shown in a code block to copy.
        """
        name, said = await self.service.describe(who, file if file is not None else _image(image), load)
        what = "Your image" if file is not None else name
        return Text(answer_text(what, [self._quote(text) for text in said.texts]), words=said.texts)

    async def reroll(self, who: Requester, generation_id: int | None) -> Started:
        """Answer ``reroll [#id]``: the same settings, a new seed (default: the user's latest)."""
        return Started(await self.service.reroll(who, generation_id))

    async def refine(self, who: Requester, generation_id: int | None, percent: int | None = None) -> Started:
        """Answer ``refine [#id] [percent]``: the same seed, the refiner taking over at `percent`."""
        return Started(await self.service.refine(who, generation_id, percent))

    async def upscale(self, who: Requester, image: int | str | None, factor: Literal[2, 4] = 2) -> Started:
        """Answer ``upscale [#id[.n]] [2|4]``: a larger copy of an image (``#12.2``: its second; None: the latest)."""
        return Started(await self.service.upscale(who, _image(image), factor))

    async def vary(self, who: Requester, image: int | str | None, kind: VaryKind, prompt: str | None = None) -> Started:
        """Answer ``vary subtle|strong [#id[.n]]``: the image again, a little or a lot changed (`prompt`: re-worded)."""
        return Started(await self.service.vary(who, _image(image), kind, prompt))

    async def zoom(
        self, who: Requester, image: int | str | None, factor: float = ZOOM_OUT, prompt: str | None = None
    ) -> Started:
        """Answer ``zoom [#id[.n]] [factor]``: the image smaller in the same frame, the border painted anew."""
        return Started(await self.service.zoom(who, _image(image), factor, prompt))

    async def pan(
        self, who: Requester, image: int | str | None, direction: PanDirection, prompt: str | None = None
    ) -> Started:
        """Answer ``pan left|right|up|down [#id[.n]]``: the canvas grown that way, the strip painted anew."""
        return Started(await self.service.pan(who, _image(image), direction, prompt))

    async def square(self, who: Requester, image: int | str | None, prompt: str | None = None) -> Started:
        """Answer ``square [#id[.n]]`` and Make Square: the short side grown to the long one, the strips painted."""
        return Started(await self.service.square(who, _image(image), prompt))

    async def remix(self, who: Requester, action: str, generation_id: int, index: int, words: str) -> Started:
        """Run a `RemixForm`'s action (Vary, Zoom Out, Pan) with the words it was sent back with as the prompt.

        `action` comes back through the platform (a Slack form's metadata): one that is no remix is refused.
        """
        remixed = next((known for known in REMIXABLE if known == action), None)
        if remixed is None:
            raise InvalidOption("Remix", f"is for Vary, Zoom Out, Make Square and Pan, not '{shown(action)}'")
        image = format_image_ref(generation_id, index) if index else generation_id
        return await self._from_result(who, remixed, image, words)

    async def _from_result(
        self, who: Requester, action: ButtonAction, image: int | str, words: str | None = None
    ) -> Started:
        """Run Vary, Zoom Out, Make Square or Pan on a result's image, re-worded by `words` when given (a remix)."""
        if action in PAN_ACTIONS:
            return await self.pan(who, image, PAN_ACTIONS[action], words)
        if action in ("zoom-out", "zoom-out-2"):
            return await self.zoom(who, image, 2.0 if action == "zoom-out-2" else ZOOM_OUT, words)
        if action == "square":
            return await self.square(who, image, words)
        return await self.vary(who, image, "strong" if action == "vary-strong" else "subtle", words)

    async def pick(self, who: Requester, generation_id: int, index: int) -> OneImage:
        """Answer "Image 2" under a several-image result: that image's own buttons (Midjourney's U2)."""
        stored, actions = await self.service.image_actions(who, generation_id, index)
        ref = format_image_ref(generation_id, index)
        which = f"Image {index + 1} of {format_ref(generation_id)} ({ref}, seed {stored.seed})"
        return OneImage(generation_id, index, f"{which}: these buttons act on it alone.", actions)

    async def edit(self, who: Requester, generation_id: int | None) -> EditForm:
        """Answer Edit and ``edit [#id]``: a form holding a generation's ``/imagine`` text (None: the latest's).

        The text is what to change and run as a new image; a chat with no forms shows it to copy.
        """
        generation_id, text = await self.service.imagine_text(who, generation_id)
        if len(text) > EDIT_MOST:
            reason = f"{format_ref(generation_id)}'s /imagine text is {len(text)} characters, more than a form holds"
            raise InvalidOption("edit", f"is not offered: {reason} ({EDIT_MOST})")
        return EditForm(generation_id, text)

    async def png_info(self, data: bytes, name: str) -> Text:
        """Answer PNG info on an image file: the parameters its PNG carries and the ``/imagine`` that asks for them.

        Off the event loop: the file is anyone's, up to the input limit, and its text chunks are inflated.
        """
        defaults = Defaults(model=self.service.default_model)
        catalog, limits = self.service.catalog, self.service.limits
        most = self._details_limit
        return Text(self._quote(await asyncio.to_thread(png_info, data, name, catalog, defaults, limits, most)))

    async def history(self, who: Requester, count: int = 10) -> Listing:
        """Answer ``history [count]``: the user's latest generations (1 to 25; a count out of range is refused)."""
        if not 1 <= count <= HISTORY_MOST:
            raise InvalidOption("history", f"takes a count from 1 to {HISTORY_MOST}, not {count}", typed=True)
        return Listing(tuple(await self.service.history(who, limit=count)))

    async def info(self, who: Requester, generation_id: int | None) -> Text:
        """Everything about a generation the user may see (None: their latest): its prompt, seed and settings."""
        generation = await self.service.details(who, generation_id)
        return Text(details_text(generation, limit=self._details_limit, quote=self._quote, mention=self._mention))

    async def cancel(self, who: Requester, generation_id: int | None) -> Text:
        """Answer ``cancel [#id]``: stop a queued or running job of the user's (default: the newest)."""
        return Text(cancelling_line(await self.service.cancel(who, generation_id)))

    async def prefer(self, who: Requester, name: str | None = None, flags: str | None = None) -> Text:
        """Answer ``prefer``: the user's option sets, or one of them; with flags, save it (``none`` removes it)."""
        saved = self.service.user_settings
        make = f"{self._command}prefer"
        if name is None:
            return Text(sets_text(await saved.option_sets(who), f"{make} NAME --flags…"))
        name = checked_name(name)
        if flags is None:
            sets = await saved.option_sets(who)
            if name not in sets:
                return Text(f"--{name} is none of your option sets; `{make} {name} --flags…` makes it.")
            return Text(f"--{name}  {shown(sets[name], 200)}")
        removing = flags.strip().lower() == "none"
        sets = await saved.set_option(who, name, None if removing else flags)
        if removing:
            return Text(f"--{name} is removed.")
        if name == SUFFIX:
            return Text(
                f"--{name} is now {shown(sets[name], 200)}; every prompt of yours takes it (its own flags win)."
            )
        return Text(f"--{name} is now {shown(sets[name], 200)}; type --{name} in a prompt to use it.")

    async def forget(self, who: Requester, *, confirm: bool, how_to_confirm: str | None = None) -> Text:
        """Answer ``forget``: the warning and how to confirm, or, confirmed, delete everything of the user's.

        `how_to_confirm` is this chat's way (Discord's ``run `/forget confirm:True```).
        """
        if not confirm:
            how = how_to_confirm or f"send `{self._command}forget confirm`"
            return Text(f"{FORGET_WARNING}; {how} to go ahead.")
        return Text(forgotten_line(await self.service.forget(who)))

    async def guides(self, who: Requester, generation_id: int | None) -> Guides:
        """Answer ``guide [#id]`` and "Show guide": the images a generation's ControlNets were guided by."""
        generation, images = await self.service.guides(who, generation_id)
        controls, run = generation.request.controlnets, generation.request.run_steps
        return Guides(
            generation.id,
            tuple(
                GuideImage(
                    f"{format_ref(generation.id)} {'style reference' if control.style else 'guide'} {n}: "
                    f"{control_line(control, run, self.service.catalog)}",
                    control.guide,
                    data,
                    f"guide-{generation.id}-{n}.png",
                )
                for n, (control, data) in enumerate(zip(controls, images, strict=True), start=1)
            ),
        )

    def loras(self, search: str = "") -> Text:
        """Answer ``loras [search]``: the LoRAs offered here whose name, description or trigger words hold `search`."""
        matching = self.service.offered.search("lora", search, limit=len(self.service.offered.names("lora")))
        if not matching:
            return Text(f"No LoRA here matches '{shown(search, 40)}'.")
        # 11 lines of at most 162 characters and the count of the rest: within Discord's 2,000.
        lines = [
            f"`{entry.name}`"
            + (f" — {shown(entry.description, 40)}" if entry.description else "")
            + (f" (trigger: {shown(', '.join(entry.trigger_words), 40)})" if entry.trigger_words else "")
            for entry in matching[:11]
        ]
        more = len(matching) - len(lines)
        return Text(
            "\n".join(lines) + (f"\n…and {more} more: search for part of a name to narrow the list." if more else "")
        )

    async def wildcards(self, search: str = "") -> Text:
        """Answer ``wildcards [search]``: the wildcard files whose name holds `search`, with a few choices each."""
        library = await self.service.wildcards()
        if not library:
            return Text("This bot has no wildcards: its operator adds them as files of choices, one a line.")
        # 15 lines of at most ~120 characters: within every chat's message (Discord's 2,000).
        matching = wildcards.search(library, search)
        found = matching[:15]
        if not found:
            return Text(f"No wildcard's name holds '{shown(search, 40)}'.")
        lines = [
            f"__{shown(name, 50)}__ ({len(choices)}): "
            + shown("; ".join(choices[:3]) + ("; …" if len(choices) > 3 else ""), 60)
            for name, choices in found
        ]
        more = len(matching) - len(found)
        tail = f"\n…and {more} more: name part of one to narrow the list." if more else ""
        return Text("A line of each is drawn where a prompt names it:\n" + "\n".join(lines) + tail)

    def queue(self, who: Requester) -> Text:
        """Answer ``queue``: how many jobs wait, and where the user's are."""
        return Text(queue_text(*self.service.queue(who)))

    async def text(
        self, who: Requester, text: str, *, strict: bool = False, load: ImageLoader | None = None
    ) -> Reply | None:
        """Run a text command (``reroll #3``, ``history 5``…); None when the words are no command.

        A chat decides what None means: Slack takes the whole text as a prompt
        ("history of rome"). With `strict` (the console), a command word with
        arguments it cannot take is refused with a sentence instead. `load` reads the chat's
        files that ``blend`` names (the console's); without it, only ``#id`` images are taken.
        """
        word, _, rest = text.strip().partition(" ")
        try:
            command = self._parse(word.lower(), rest.strip(), load)
        except InvalidOption:
            if strict:
                raise
            return None
        return None if command is None else await command(who)

    async def settings(self, who: Requester, changes: Mapping[str, object], *, reset: bool = False) -> Text:
        """Answer ``settings``: save `changes` (``reset``: clear every saved default first), then show them all.

        The line names the user's option sets too (`bot.option_sets`), which a reset keeps.
        """
        saved_settings = self.service.user_settings
        saved, sets = await saved_settings.read(who)
        if reset:
            changes = {**dict.fromkeys(saved), **changes}
        if changes:
            saved = await saved_settings.update(who, changes)
        return Text(defaults_line(saved, sets))

    def _parse(
        self, word: str, rest: str, load: ImageLoader | None = None
    ) -> Callable[[Requester], Awaitable[Reply]] | None:
        """Parse a text command's arguments into the call that answers it; None for no command word.

        Only arguments are checked here (`InvalidOption` for arguments it cannot take), before
        any use case runs: a refusal of the use case itself (a setting out of range) is the
        user's answer, never a prompt.
        """
        if word == "history":
            # Not str.isdigit(): it takes "²", which int() refuses.
            if rest and not re.fullmatch(r"[0-9]{1,9}", rest):
                raise InvalidOption("history", f"takes a count of images, not '{shown(rest)}'", typed=True)
            count = int(rest or 10)
            return lambda who: self.history(who, count)
        if word == "settings":
            changes = parse_setting_pairs(rest)
            if changes is None:
                raise InvalidOption("settings", f"takes key=value pairs, not '{shown(rest)}'", typed=True)
            return lambda who: self.settings(who, changes)
        if word == "prefer":
            name, flags = [*rest.split(maxsplit=1), "", ""][:2]
            if (name and not _SET_NAME.fullmatch(name)) or (flags and flags.lower() != "none" and flags[0] not in "-—"):
                reason = "takes a name and the flags it stands for, like prefer mine --ar 2:3 --no blurry"
                raise InvalidOption("prefer", reason + _not(rest), typed=True)
            return lambda who: self.prefer(who, name or None, flags or None)
        if word == "forget":
            if rest not in ("", "confirm"):
                raise InvalidOption("forget", f"takes nothing or 'confirm', not '{shown(rest)}'", typed=True)
            return lambda who: self.forget(who, confirm=rest == "confirm")
        if word == "wildcards":
            # "wildcards in the sky" is a prompt on Slack: a search is one name, or part of one.
            if rest and not _WILDCARD_SEARCH.fullmatch(rest):
                raise InvalidOption("wildcards", f"takes a name or part of one, not '{shown(rest)}'", typed=True)
            return lambda who: self.wildcards(rest)
        if word == "loras":
            # "loras of the forest" is a prompt on Slack: a search is one word.
            if rest and not _LORA_SEARCH.fullmatch(rest):
                raise InvalidOption("loras", f"takes one word to search for, not '{shown(rest)}'", typed=True)
            return lambda who: _ready(self.loras(rest))
        if word == "queue":
            if rest:
                raise InvalidOption("queue", f"takes nothing, not '{shown(rest)}'", typed=True)
            return lambda who: _ready(self.queue(who))
        if word == "admin":
            manages = self._may_manage
            return None if manages is None else lambda who: self._admin_text(who, rest, manages)
        if word == "gallery":
            # "gallery of old masters" is a prompt on Slack, not a command with arguments.
            which = rest.lower()
            if which not in ("", "revoke", "showcase"):
                reason = f"takes nothing, 'revoke' or 'showcase', not '{shown(rest, 40)}'"
                raise InvalidOption("gallery", reason, typed=True)
            return lambda who: self.gallery(who, revoke=which == "revoke", showcase=which == "showcase")
        if word == "blend":
            images, prompt = _blend_args(rest, files=load is not None)
            return lambda who: self.blend(who, images, prompt, load=load)
        if word == "describe":
            # "describe a cat" is a prompt on Slack, not a command with arguments.
            if rest and (" " in rest or not _is_image_word(rest, files=load is not None)):
                takes = "an optional image (#12, #12.2" + (" or a file" if load is not None else "") + ")"
                raise InvalidOption("describe", f"takes {takes}" + _not(rest), typed=True)
            if rest and parse_image_ref(rest) is None:
                return lambda who: self.describe(who, file=rest, load=load)
            return lambda who: self.describe(who, rest or None)
        if word == "upscale":
            ref, factor = _upscale_args(rest)
            return lambda who: self.upscale(who, ref, factor)
        if word == "zoom":
            ref, zoom = _zoom_args(rest)
            return lambda who: self.zoom(who, ref, zoom)
        if word == "pan":
            direction, ref = _word_and_image(rest, _PAN_WORDS, "pan", "left, right, up or down")
            return lambda who: self.pan(who, ref, direction)
        if word == "vary":
            kind, ref = _word_and_image(rest, _VARY_WORDS, "vary", "subtle or strong")
            return lambda who: self.vary(who, ref, kind)
        if word == "region":
            # "region of ice" is a prompt on Slack, not a command with arguments.
            if rest and parse_image_ref(rest) is None:
                raise InvalidOption("region", "takes an optional #id" + _not(rest), typed=True)
            return lambda who: self.region(who, rest or None)
        if word == "square":
            if rest and parse_image_ref(rest) is None:
                raise InvalidOption("square", "takes an optional #id" + _not(rest), typed=True)
            return lambda who: self.square(who, rest or None)
        if word not in ("reroll", "refine", "edit", "cancel", "guide", "info", "star", "unstar"):
            return None
        args = parse_ref_args(rest, allow_percent=word == "refine")
        ref_commands: dict[str, Callable[[Requester], Awaitable[Reply]]] = {
            "reroll": lambda who: self.reroll(who, args.generation_id),
            "refine": lambda who: self.refine(who, args.generation_id, args.percent),
            "edit": lambda who: self.edit(who, args.generation_id),
            "cancel": lambda who: self.cancel(who, args.generation_id),
            "guide": lambda who: self.guides(who, args.generation_id),
            "info": lambda who: self.info(who, args.generation_id),
            "star": lambda who: self.star(who, args.generation_id),
            "unstar": lambda who: self.star(who, args.generation_id, starred=False),
        }
        return ref_commands[word]


async def _ready(reply: Reply) -> Reply:
    return reply


def _zoom_args(rest: str) -> tuple[str | None, float]:
    """Parse ``zoom [#id[.n]] [factor]`` (either order; default: your latest image, 1.5×)."""
    ref: str | None = None
    factor: float | None = None
    for word in rest.split():
        number = word.lower().removesuffix("x").removesuffix("×")
        if parse_image_ref(word) is not None and ref is None:
            ref = word
        elif re.fullmatch(r"[0-9](?:\.[0-9]{1,2})?", number) and factor is None:
            factor = float(number)
        else:
            reason = f"takes an optional #id and a factor such as 1.5 or 2, not '{shown(word, 40)}'"
            raise InvalidOption("zoom", reason, typed=True)
    return ref, ZOOM_OUT if factor is None else factor


def _blend_args(rest: str, *, files: bool) -> tuple[list[str], str]:
    """Parse ``blend #3 #4 [#5] [prompt and flags]``: the leading images (with `files`, files too), the rest."""
    words = rest.split()
    images = list(itertools.takewhile(lambda word: _is_image_word(word, files=files), words))
    if len(images) < 2:
        takes = "2 or 3 images (#12, #12.2" + (" or a file" if files else "") + ") and then a prompt if you like"
        raise InvalidOption("blend", "takes " + takes + _not(rest), typed=True)
    return images, rest.split(maxsplit=len(images))[len(images)] if len(words) > len(images) else ""


def _is_image_word(word: str, *, files: bool) -> bool:
    return parse_image_ref(word) is not None or (files and word.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))


def _not(rest: str) -> str:
    """Return what a refusal of a command's arguments says of the words given: nothing when there were none."""
    return f", not '{shown(rest, 40)}'" if rest else ""


# An option set's name as ``prefer`` takes it (`bot.option_sets.checked_name` says what else it must be).
_SET_NAME = re.compile(r"(?:--|—)?[A-Za-z][A-Za-z0-9_-]*")
_WILDCARD_SEARCH = re.compile(r"_*[A-Za-z0-9][A-Za-z0-9_/-]{0,99}")
_LORA_SEARCH = re.compile(r"[\w.-]{1,64}")
_PAN_WORDS: dict[str, PanDirection] = {direction: direction for direction in PAN_ACTIONS.values()}
_VARY_WORDS: dict[str, VaryKind] = {"subtle": "subtle", "strong": "strong"}
_W = TypeVar("_W")


def _word_and_image(rest: str, words: Mapping[str, _W], command: str, takes: str) -> tuple[_W, str | None]:
    """Parse ``pan left [#id[.n]]`` or ``vary strong [#id[.n]]``: one of `words` and an image, either order."""
    typed = rest.lower().split()
    chosen = [words[word] for word in typed if word in words]
    refs = [word for word in typed if parse_image_ref(word) is not None]
    if len(chosen) != 1 or len(refs) > 1 or len(typed) != 1 + len(refs):
        raise InvalidOption(command, f"takes {takes} and an optional #id" + _not(rest), typed=True)
    return chosen[0], refs[0] if refs else None


def image_words(text: str) -> list[str]:
    """Return the images a typed list names (``#3 #4``, ``3, 4.2``: a chat's option), each as ``#12[.n]``.

    Anything else is refused, as `_image` refuses it.
    """
    found = []
    for word in text.replace(",", " ").split():
        ref = _image(word)
        assert isinstance(ref, str)  # a word is never empty, so never None
        found.append(ref)
    return found


def _image(typed: int | str | None) -> int | str | None:
    """Return the image a command names: a button's generation id, ``#12`` or ``#12.2``, or None when absent.

    Discord's option may leave out the ``#``. Anything else is refused: it must never fall back
    to the user's latest image.
    """
    if isinstance(typed, int):
        return typed
    text = (typed or "").strip()
    if not text:
        return None
    ref = text if text.startswith("#") else f"#{text}"
    if parse_image_ref(ref) is None:
        raise InvalidOption("image", f"must be a previous image like #12 or #12.2, not '{shown(text)}'", typed=True)
    return ref


def _upscale_args(rest: str) -> tuple[str | None, Literal[2, 4]]:
    """Parse ``upscale [#id[.n]] [2|4]`` (either order; default: your latest image, 2×)."""
    ref: str | None = None
    factor: Literal[2, 4] = 2
    seen_factor = False
    for word in rest.split():
        if parse_image_ref(word) is not None and ref is None:
            ref = word
        elif word.lower().removesuffix("x").removesuffix("×") in ("2", "4") and not seen_factor:
            factor, seen_factor = (4 if word.startswith("4") else 2), True
        else:
            reason = f"takes an optional #id and 2 or 4, not '{shown(word, 40)}'"
            raise InvalidOption("upscale", reason, typed=True)
    return ref, factor


# -- following a job --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Update:
    """One change worth showing on the message that follows a job.

    `text` is the progress line, or for a failed or cancelled job the sentence
    that replaces it; a ``done`` update carries the generation in its event.
    `preview` is a latent preview's image bytes when one is due.
    """

    event: JobEvent
    text: str
    preview: bytes | None = None

    @property
    def final(self) -> bool:
        """Return whether the job ends with this update."""
        return self.event.final


async def updates(
    job: Job,
    *,
    interval: float,
    preview_every: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Update]:
    """Yield the updates of a job worth an edit, ending with the final one.

    A progress line is shown at most once per `interval` seconds (chat APIs
    rate-limit edits), an unchanged line never twice; a preview goes with every
    `preview_every`-th allowed edit at most (0: never), since it is an upload.
    """
    shown: str | None = None
    shown_at = preview_at = float("-inf")
    async for event in job.events():
        if event.final:
            text = progress_line(job, event) if event.kind == "done" else failure_line(job, event.message)
            yield Update(event, text)
            return
        text = progress_line(job, event)
        now = clock()
        if text == shown or (event.kind == "progress" and now - shown_at < interval):
            continue
        preview = event.progress.preview if event.progress else None
        if preview is not None and preview_every and now - preview_at >= preview_every * interval:
            preview_at = now
        else:
            preview = None
        yield Update(event, text, preview)
        shown, shown_at = text, now

"""Slack listeners: commands, shortcuts, modals, buttons and reactions in, `ImageService` calls out.

Every listener acknowledges before any slow work, well inside Slack's 3
seconds; only the modal submissions ask the service first (a few milliseconds
of SQLite), because their refusal is the acknowledgement itself (an error on
the offending field). A queued job gets a placeholder card that a task keeps
updating: queue position, progress, and finally the settings and buttons,
with the image uploaded just below it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.actions import ACTION_ID_PATTERN, WORDS_ID_PATTERN, ButtonAction, decode_action, format_ref, parse_ref_args
from bot.chat import (
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
    refusal,
    updates,
)
from bot.config import SlackSettings
from bot.controls import blend_options
from bot.describe import prompt_of
from bot.errors import BotError
from bot.history import Generation, StoredImage
from bot.inputs import ImageLoader
from bot.jobs import Job, JobEvent, Requester
from bot.rules import DEFAULT_REFINE_PERCENT
from bot.service import ImageService
from bot.summary import progress_line, withheld_line

from .._download import FileHosts
from ._blocks import (
    BLEND_SHORTCUT,
    BLEND_VIEW,
    COMMAND,
    DESCRIBE_SHORTCUT,
    EDIT_VIEW,
    FILE_BLOCKS,
    FROM_IMAGE_SHORTCUT,
    GENERATE_SHORTCUT,
    GUIDE_SHORTCUT,
    HELP,
    IMAGINE_VIEW,
    PNG_INFO_SHORTCUT,
    REFINE_SHORTCUT,
    REFINE_VIEW,
    REMIX_VIEW,
    REROLL_SHORTCUT,
    STYLE_SHORTCUT,
    Block,
    Destination,
    FileRole,
    SourceFile,
    blend_modal,
    blend_target,
    edit_modal,
    escape,
    failed_blocks,
    history_text,
    imagine_modal,
    imagine_options,
    imagine_source,
    modal_field,
    modal_target,
    one_image_blocks,
    progress_blocks,
    refine_modal,
    remix_modal,
    remix_target,
    result_blocks,
    slack_time,
    view_values,
    words_blocks,
)
from ._files import SLACK_FILE_HOSTS, file_loader, image_file, image_files, token

__all__ = ["EVENTS", "REACTIONS", "SlackImages"]

log = logging.getLogger(__name__)

PLATFORM = "slack"
NOT_AN_IMAGE = "That message is not one of my images; use this on a message with an image's buttons."
NO_IMAGE_FILE = "That message has no PNG, JPEG or WebP file."
NO_WORDS = "That button holds no words to imagine; describe the image again."
NO_CONTROLNET = "This bot's catalog has no ControlNet to guide an image with."
CANNOT_POST = "I cannot post in this conversation; invite me with `/invite @imagebot`, or pick another one."
# Reactions on a result card do what its buttons do (Slack's names for 🔄, ✨, 🌿, 🌪️ and ❌).
REACTIONS: dict[str, ButtonAction] = {
    "arrows_counterclockwise": "reroll",
    "sparkles": "refine",
    "herb": "vary-subtle",
    "tornado": "vary-strong",
    "x": "delete",
    "star": "star",
}
EVENTS = ("reaction_added", "reaction_removed")


def _timed(listener: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Wrap a listener so that its ``ack`` records the acknowledgement latency.

    Bolt passes arguments by the names in the listener's signature, which
    `functools.wraps` keeps, so the wrapped listener gets exactly what it asked for.
    """

    @functools.wraps(listener)
    async def timed(**arguments: Any) -> None:
        started = time.perf_counter()
        ack = arguments["ack"]

        async def timed_ack(**response: Any) -> None:
            await ack(**response)
            metrics.ACK_SECONDS.labels(PLATFORM).observe(time.perf_counter() - started)

        await listener(**{**arguments, "ack": timed_ack})

    return timed


def message_ref(channel: str, ts: str) -> str:
    """Return how a Slack message is remembered: a ts is unique only within its channel."""
    return f"{channel}:{ts}"


def _file_title(generation_id: int, seed: int) -> str:
    """Return the title an image is uploaded with, by which a gallery delete finds it again."""
    return f"{format_ref(generation_id)} · seed {seed}"


def _clicked_in(body: Mapping[str, Any]) -> Destination:
    """Return where a clicked button's message is: its channel, and its thread.

    An ephemeral message (an image's own buttons, a describe answer) comes without itself: its
    container names the thread.
    """
    thread = (body.get("message") or {}).get("thread_ts") or (body.get("container") or {}).get("thread_ts")
    return Destination(body["channel"]["id"], thread)


def _requester(user: str, team: str | None, channel: str | None) -> Requester:
    """Return who acted where; Slack's direct-message conversations have ids starting with D."""
    return Requester(PLATFORM, user, workspace=team, channel=channel, direct=bool(channel and channel.startswith("D")))


def _team(body: dict[str, Any]) -> str | None:
    return (body.get("team") or {}).get("id") or body.get("team_id")


class SlackImages:
    """The image commands, shortcuts, buttons and reactions of one Bolt app.

    Args:
        app: the Bolt app to register the listeners on.
        service: the image service.
        settings: the Slack settings (progress interval).
    """

    def __init__(self, app: AsyncApp, service: ImageService, settings: SlackSettings) -> None:
        self.client: AsyncWebClient = app.client
        self.service = service
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self.flow = ChatFlow(
            service,
            command=f"{COMMAND} ",
            details_limit=2800,
            quote=escape,
            may_manage=self._is_admin,
            when=slack_time,
        )
        self.file_hosts = FileHosts.of(SLACK_FILE_HOSTS, settings.api_base)
        app.command(COMMAND)(_timed(self.on_command))
        app.shortcut(GENERATE_SHORTCUT)(_timed(self.on_generate_shortcut))
        app.view(IMAGINE_VIEW)(_timed(self.on_imagine_submit))
        app.shortcut(REROLL_SHORTCUT)(_timed(self.on_reroll_shortcut))
        app.shortcut(REFINE_SHORTCUT)(_timed(self.on_refine_shortcut))
        app.shortcut(FROM_IMAGE_SHORTCUT)(_timed(self.on_from_image_shortcut))
        app.shortcut(GUIDE_SHORTCUT)(_timed(self.on_guide_shortcut))
        app.shortcut(STYLE_SHORTCUT)(_timed(self.on_style_shortcut))
        app.shortcut(PNG_INFO_SHORTCUT)(_timed(self.on_png_info_shortcut))
        app.shortcut(DESCRIBE_SHORTCUT)(_timed(self.on_describe_shortcut))
        app.shortcut(BLEND_SHORTCUT)(_timed(self.on_blend_shortcut))
        app.view(REFINE_VIEW)(_timed(self.on_refine_submit))
        app.view(EDIT_VIEW)(_timed(self.on_edit_submit))
        app.view(BLEND_VIEW)(_timed(self.on_blend_submit))
        app.view(REMIX_VIEW)(_timed(self.on_remix_submit))
        app.action(ACTION_ID_PATTERN)(_timed(self.on_button))
        app.action(WORDS_ID_PATTERN)(_timed(self.on_words))
        app.event("reaction_added")(self.on_reaction)
        app.event("reaction_removed")(self.on_reaction_removed)
        app.error(self.on_error)
        service.add_poster(PLATFORM, self)

    def follow_resumed(self) -> None:
        """Keep updating the cards of the jobs a restart resumed (their cards were posted before it)."""
        for job, ref in self.service.resumed(PLATFORM):
            channel, _, ts = (ref or "").partition(":")
            if ts:
                self._spawn(self._follow(job, Destination(channel), ts))

    async def post(self, job: Job, text: str) -> None:
        """Post a job started outside Slack (a gallery click) in its channel and follow it (`bot.ports.ChatPoster`).

        Returns at once: the card is posted and followed in a task. A card that cannot be
        posted leaves the job running: its result is in the gallery that asked for it.
        """
        self._spawn(self._post_and_follow(job, text))

    async def _post_and_follow(self, job: Job, text: str) -> None:
        channel = job.requester.user_id if job.private or job.requester.channel is None else job.requester.channel
        fallback, blocks = progress_blocks(job, text)
        try:
            posted = await self.client.chat_postMessage(channel=channel, text=fallback, blocks=blocks)
        except SlackApiError as error:
            log.warning("could not post %s in its channel: %s", format_ref(job.id), error.response.get("error"))
            return
        await self.service.attach_message(job.id, message_ref(posted["channel"], posted["ts"]))
        await self._follow(job, Destination(posted["channel"]), posted["ts"])

    async def retract(self, generation: Generation, text: str) -> None:
        """Delete the card of a generation deleted in the gallery, and its images (`bot.ports.ChatPoster`).

        As the 🗑 button does, card and images go, so `text` is not shown. Returns at once: the
        deletes are made in a task. The images are found by the titles they were uploaded with.
        """
        channel, _, ts = (generation.message_ref or "").partition(":")
        if ts:
            self._spawn(self._retract(generation, channel, ts))

    async def _retract(self, generation: Generation, channel: str, ts: str) -> None:
        ref = format_ref(generation.id)
        try:
            await self.client.chat_delete(channel=channel, ts=ts)
        except SlackApiError as error:
            log.warning("could not delete the card of deleted %s: %s", ref, error.response.get("error"))
        titles = {_file_title(generation.id, image.seed) for image in generation.images}
        try:
            listed = await self.client.files_list(channel=channel, ts_from=ts.partition(".")[0], types="images")
        except SlackApiError as error:
            log.warning("could not list the images of deleted %s: %s", ref, error.response.get("error"))
            return
        for file in listed.get("files") or []:
            if file.get("title") not in titles:
                continue
            try:
                await self.client.files_delete(file=file["id"])
            except SlackApiError as error:
                # A member's own file with the same title is not the bot's to delete; the others still go.
                log.warning("could not delete an image of deleted %s: %s", ref, error.response.get("error"))

    async def aclose(self) -> None:
        """Stop following jobs; the jobs themselves run on."""
        self.service.remove_poster(PLATFORM, self)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- /imagine -----------------------------------------------------------------------------------

    async def on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """Handle ``/imagine <prompt and flags>`` and its words (help, history, settings and more)."""
        await ack()
        who = _requester(command["user_id"], command.get("team_id"), command["channel_id"])
        where = Destination(command["channel_id"])
        text = (command.get("text") or "").strip()
        try:
            await self._command(who, where, text, command.get("trigger_id"))
        except BotError as error:
            await self._tell(who, refusal(error))

    async def _command(self, who: Requester, where: Destination, text: str, trigger: str | None) -> None:
        if text.lower() in ("", "help"):
            await self._tell(who, HELP)
            return
        # Anything that is no command is a prompt, even one that starts with a command word ("history of rome").
        reply = await self.flow.text(who, text) or await self.flow.imagine(who, text)
        await self._show(reply, who, where, "", trigger=trigger)

    async def _is_admin(self, who: Requester) -> bool:
        """Tell whether a user administers the workspace (Slack's admins and owners)."""
        user = (await self.client.users_info(user=who.user_id)).get("user") or {}
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    # -- the "Generate image" modal -----------------------------------------------------------------

    async def on_generate_shortcut(self, ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        """Open the "Generate image" modal."""
        await ack()
        # The form says which model an empty field means for this user: theirs, the workspace's, the bot's.
        model = await self.service.model_for(_requester(shortcut["user"]["id"], _team(shortcut), None))
        await self.client.views_open(trigger_id=shortcut["trigger_id"], view=imagine_modal(self.service.offered, model))

    async def on_imagine_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Queue the modal's generation, or keep the modal open with the error on its field.

        With an image file the modal closes first and a refusal comes as a private message:
        fetching the file may take longer than the 3 seconds Slack waits for the answer.
        """
        given, channel = imagine_options(view)
        user = body["user"]["id"]
        source = imagine_source(view)
        if source is not None and not given.get(source.role):
            given[source.role] = source.file_id
        # The core sees a token per file; only the loader turns it back into a Slack file id.
        files = {token(str(given[option])): str(given[option]) for option in FILE_BLOCKS if option in given}
        given |= {option: token(str(given[option])) for option in FILE_BLOCKS if option in given}
        who = _requester(user, _team(body), channel)
        # The card goes into the message's thread when it is posted where the message is.
        thread = source.thread_ts if source is not None and source.channel == who.channel else None
        where = Destination(who.channel or user, thread)
        load = file_loader(self.client, files, self.file_hosts, self.service.max_input_bytes)
        if files:
            await ack()
        try:
            # No conversation picked: the image goes to the user's direct messages, privately.
            started = await self.flow.imagine(who, given, private=None if who.channel else True, load=load)
        except BotError as error:
            if files:
                await self._tell(who, refusal(error))
                return
            shown = {block.get("block_id") for block in view.get("blocks") or []}
            field = modal_field(getattr(error, "option", None), set(given), shown)
            await ack(response_action="errors", errors={field: str(error)})
            return
        if not files:
            await ack()
        await self._show(started, who, where, "")

    # -- message shortcuts --------------------------------------------------------------------------

    async def on_reroll_shortcut(self, ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        """Reroll the image whose message the shortcut was used on."""
        await ack()
        who, where, generation_id = await self._shortcut_target(shortcut)
        if generation_id is None:
            await self._tell(who, NOT_AN_IMAGE)
            return
        try:
            await self._show(await self.flow.action(who, "reroll", generation_id), who, where, "")
        except BotError as error:
            await self._tell(who, refusal(error))

    async def on_refine_shortcut(self, ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        """Ask where the refiner should start, for the image whose message the shortcut was used on."""
        await ack()
        who, where, generation_id = await self._shortcut_target(shortcut)
        if generation_id is None:
            await self._tell(who, NOT_AN_IMAGE)
            return
        await self.client.views_open(
            trigger_id=shortcut["trigger_id"], view=refine_modal(generation_id, where, DEFAULT_REFINE_PERCENT)
        )

    async def on_refine_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Queue the refine, or keep the modal open with the refusal on the percent field."""
        generation_id, where = modal_target(view)
        who = _requester(body["user"]["id"], _team(body), where.channel)
        try:
            percent = parse_ref_args(str(view_values(view).get("percent") or ""), allow_percent=True).percent
            job = await self.service.refine(who, generation_id, percent)
        except BotError as error:
            await ack(response_action="errors", errors={"percent": str(error)})
            return
        await ack()
        await self._start(job, where)

    async def on_edit_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Queue a generation from the Edit modal's /imagine text, or keep it open with the refusal on the text."""
        _, where = modal_target(view)
        who = _requester(body["user"]["id"], _team(body), where.channel)
        try:
            started = await self.flow.imagine(who, str(view_values(view).get("text") or ""))
        except BotError as error:
            await ack(response_action="errors", errors={"text": str(error)})
            return
        await ack()
        await self._show(started, who, where, "")

    async def on_remix_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Run the Remix modal's action with its words, or keep it open with the refusal on the words."""
        action, generation_id, index, where = remix_target(view)
        who = _requester(body["user"]["id"], _team(body), where.channel)
        words = str(view_values(view).get("prompt") or "")
        try:
            started = await self.flow.remix(who, action, generation_id, index, words)
        except BotError as error:
            await ack(response_action="errors", errors={"prompt": str(error)})
            return
        await ack()
        await self._show(started, who, where, "")

    async def on_from_image_shortcut(self, ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        """Open the "Generate image" modal to start from the image file of the message the shortcut was used on."""
        await self._open_with_file(ack, shortcut, "image")

    async def on_guide_shortcut(self, ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        """Open the "Generate image" modal with the message's image file as the ControlNet's guide."""
        await self._open_with_file(ack, shortcut, "control_image")

    async def on_style_shortcut(self, ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        """Open the "Generate image" modal with the message's image file as the style reference (--sref)."""
        await self._open_with_file(ack, shortcut, "style_image")

    async def on_png_info_shortcut(self, ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        """Say privately what a message's image file says of how it was made, and the /imagine that asks for it."""

        async def answer(who: Requester, load: ImageLoader, file: Mapping[str, Any]) -> Text:
            data = await load(token(file["id"]), "image")
            return await self.flow.png_info(data, str(file.get("name") or file["id"]))

        await self._answer_file(ack, shortcut, answer)

    async def on_describe_shortcut(self, ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        """Say privately what a message's image file shows, in words to send with /imagine."""

        async def answer(who: Requester, load: ImageLoader, file: Mapping[str, Any]) -> Text:
            return await self.flow.describe(who, file=token(file["id"]), load=load)

        await self._answer_file(ack, shortcut, answer)

    async def on_blend_shortcut(self, ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        """Open the "Blend images" modal (words, a shape) for a message's 2 or 3 image files (Midjourney's /blend).

        A message with another number of images gets the blend's own sentence, and no modal.
        """
        await ack()
        channel = shortcut["channel"]["id"]
        message = shortcut.get("message") or {}
        who = _requester(shortcut["user"]["id"], _team(shortcut), channel)
        files = image_files(message)
        try:
            blend_options([token(file["id"]) for file in files])  # how many it takes is the blend's to say
        except BotError as error:
            await self._tell(who, refusal(error))
            return
        view = blend_modal(files, Destination(channel, message.get("thread_ts")))
        await self.client.views_open(trigger_id=shortcut["trigger_id"], view=view)

    async def on_blend_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Blend the modal's files with its words and shape, and post the card where the message is.

        The modal closes first and a refusal comes as a private message: fetching the files may take longer than
        the 3 seconds Slack waits for the answer.
        """
        await ack()
        files, where = blend_target(view)
        values = view_values(view)
        who = _requester(body["user"]["id"], _team(body), where.channel)
        shape = values.get("dimensions")
        prompt = str(values.get("prompt") or "") + (f" --ar {shape}" if isinstance(shape, str) else "")
        tokens = {token(file): file for file in files}
        load = file_loader(self.client, tokens, self.file_hosts, self.service.max_input_bytes)
        try:
            started = await self.flow.blend(who, list(tokens), prompt, load=load)
        except BotError as error:
            await self._tell(who, refusal(error), thread_ts=where.thread_ts)
            return
        await self._show(started, who, where, "")

    async def _answer_file(
        self,
        ack: AsyncAck,
        shortcut: dict[str, Any],
        answer: Callable[[Requester, ImageLoader, Mapping[str, Any]], Awaitable[Text]],
    ) -> None:
        """Answer a shortcut on a message's image file privately (in its thread), with what `answer` makes of it."""
        await ack()
        message = shortcut.get("message") or {}
        file = image_file(message)
        who = _requester(shortcut["user"]["id"], _team(shortcut), shortcut["channel"]["id"])
        where = Destination(shortcut["channel"]["id"], message.get("thread_ts"))
        if file is None:
            await self._tell(who, NO_IMAGE_FILE, thread_ts=where.thread_ts)
            return
        load = file_loader(self.client, {token(file["id"]): file["id"]}, self.file_hosts, self.service.max_input_bytes)
        try:
            reply = await answer(who, load, file)
        except BotError as error:
            await self._tell(who, refusal(error), thread_ts=where.thread_ts)
            return
        await self._show(reply, who, where, "")

    async def _open_with_file(self, ack: AsyncAck, shortcut: dict[str, Any], role: FileRole) -> None:
        await ack()
        channel = shortcut["channel"]["id"]
        message = shortcut.get("message") or {}
        file = image_file(message)
        who = _requester(shortcut["user"]["id"], _team(shortcut), channel)
        if file is None:
            await self._tell(who, NO_IMAGE_FILE)
            return
        if role == "control_image" and not self.service.offered.names("controlnet"):
            await self._tell(who, NO_CONTROLNET)
            return
        name = str(file.get("name") or file["id"])
        source = SourceFile(file["id"], name, channel, message.get("thread_ts"), role)
        model = await self.service.model_for(_requester(shortcut["user"]["id"], _team(shortcut), channel))
        await self.client.views_open(
            trigger_id=shortcut["trigger_id"], view=imagine_modal(self.service.offered, model, source)
        )

    async def _shortcut_target(self, shortcut: dict[str, Any]) -> tuple[Requester, Destination, int | None]:
        channel = shortcut["channel"]["id"]
        who = _requester(shortcut["user"]["id"], _team(shortcut), channel)
        generation = await self.service.by_message(PLATFORM, message_ref(channel, shortcut["message_ts"]))
        thread = (shortcut.get("message") or {}).get("thread_ts")
        return who, Destination(channel, thread), generation.id if generation else None

    # -- buttons and reactions ----------------------------------------------------------------------

    async def on_button(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Do what a card's button says."""
        await ack()
        decoded = decode_action(action["action_id"])
        if decoded is None:  # the listener's pattern matched, so this cannot happen
            return
        kind, generation_id, index = decoded
        channel = body["channel"]["id"]
        who = _requester(body["user"]["id"], _team(body), channel)
        card_ts = (body.get("container") or {}).get("message_ts", "")
        where = _clicked_in(body)
        files = [file_id for file_id in action.get("value", "").split(",") if file_id.startswith("F")]
        try:
            trigger = body.get("trigger_id")
            reply = await self.flow.action(who, kind, generation_id, index, form=trigger is not None)
            await self._show(reply, who, where, card_ts, files, trigger=trigger)
        except BotError as error:
            await self._tell(who, refusal(error))

    async def on_words(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Open the /imagine form holding a /describe answer's words (the button's value, read back as one)."""
        await ack()
        where = _clicked_in(body)
        words = prompt_of(str(action.get("value") or ""))
        if words is None:
            await self._tell(_requester(body["user"]["id"], _team(body), where.channel), NO_WORDS)
            return
        await self.client.views_open(trigger_id=body["trigger_id"], view=edit_modal(None, where, words))

    async def on_reaction(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        """Do what a card's button does when someone reacts to it with 🔄, ✨, 🌿, 🌪️ or ❌; ⭐ stars it."""
        await self._react(event, context.team_id, REACTIONS.get(event.get("reaction", "")))

    async def on_reaction_removed(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        """Take the star back when a card's author removes their ⭐."""
        await self._react(event, context.team_id, "unstar" if event.get("reaction") == "star" else None)

    async def _react(self, event: dict[str, Any], team: str | None, kind: ButtonAction | None) -> None:
        item = event.get("item") or {}
        if kind is None or item.get("type") != "message":
            return
        channel, ts = item["channel"], item["ts"]
        generation = await self.service.by_message(PLATFORM, message_ref(channel, ts))
        if generation is None:
            return
        who = _requester(event["user"], team, channel)
        try:
            reply = await self.flow.action(who, kind, generation.id, form=False)  # a reaction opens no form
            await self._show(reply, who, Destination(channel), ts)
        except BotError as error:
            if kind not in ("star", "unstar"):
                await self._tell(who, refusal(error))
                return
            # Anyone may put a ⭐ on a card for its own sake: only the author's stars the image.
            log.info("%s of %s by %s refused: %s", kind, generation.id, event["user"], error)

    async def _show(
        self,
        reply: Reply,
        who: Requester,
        where: Destination,
        card_ts: str,
        files: Sequence[str] = (),
        *,
        trigger: str | None = None,
    ) -> None:
        """Render the chat flow's reply: a card to follow, a private line, a form, or the deletion of a card.

        `trigger`: a button click's trigger id, which a form (Edit's) needs to open.
        """
        if isinstance(reply, Started):
            for job in reply.jobs:
                await self._start(job, where)
        elif isinstance(reply, Text):
            blocks = words_blocks(reply.text, reply.words) if reply.words else None
            await self._tell(who, reply.text, blocks, thread_ts=where.thread_ts)
        elif isinstance(reply, Listing):
            await self._tell(who, history_text(reply.generations))
        elif isinstance(reply, OneImage):
            await self._tell(who, reply.text, one_image_blocks(reply), thread_ts=where.thread_ts)
        elif isinstance(reply, EditForm) and trigger is not None:
            await self.client.views_open(trigger_id=trigger, view=edit_modal(reply.generation_id, where, reply.text))
        elif isinstance(reply, EditForm):  # nothing to open a form with
            await self._tell(who, escape(reply.line))
        elif isinstance(reply, RemixForm) and trigger is not None:  # asked for only where there is one
            await self.client.views_open(trigger_id=trigger, view=remix_modal(reply, where))
        elif isinstance(reply, Guides):
            # Files cannot be ephemeral on Slack: the guides go to the user who asked, in a direct message.
            posted = await self.client.chat_postMessage(
                channel=who.user_id, text="\n".join(escape(guide.label) for guide in reply.images)
            )
            uploads = [
                {"file": guide.data, "filename": guide.filename, "title": guide.label[:250]} for guide in reply.images
            ]
            await self.client.files_upload_v2(channel=posted["channel"], file_uploads=uploads)
        elif isinstance(reply, Flagged):
            posted = await self.client.chat_postMessage(
                channel=who.user_id,
                text=f"🔞 {format_ref(reply.generation_id)}: flagged by the safety check, for you only.",
            )
            await self._upload(reply.images, reply.generation_id, Destination(posted["channel"], None))
        elif isinstance(reply, Deleted) and card_ts:
            await self.client.chat_delete(channel=where.channel, ts=card_ts)
            for file_id in files:
                await self.client.files_delete(file=file_id)

    async def on_error(self, error: Exception, body: dict[str, Any]) -> None:
        """Log an unexpected failure and tell the user one sentence, never a traceback."""
        sentence = refusal(error, "a Slack request")
        user = body.get("user_id") or (body.get("user") or {}).get("id")
        channel = body.get("channel_id") or (body.get("channel") or {}).get("id")
        if isinstance(user, str) and isinstance(channel, str):
            await self._tell(Requester(PLATFORM, user, channel=channel), sentence)

    # -- following a job ----------------------------------------------------------------------------

    async def _start(self, job: Job, where: Destination) -> None:
        """Post the job's card and follow it; a card that cannot be posted cancels the job."""
        channel = job.requester.user_id if job.private else where.channel
        text, blocks = progress_blocks(job, progress_line(job, JobEvent("queued")))
        try:
            posted = await self.client.chat_postMessage(
                channel=channel, thread_ts=None if job.private else where.thread_ts, text=text, blocks=blocks
            )
        except SlackApiError as error:
            log.info("could not post the card of %s: %s", format_ref(job.id), error.response.get("error"))
            await self.service.cancel(job.requester, job.id)
            await self._tell(job.requester, CANNOT_POST)
            return
        # Posting to a user id lands in the direct message with the app; the answer names that channel.
        card = Destination(posted["channel"], None if job.private else where.thread_ts)
        # Remembered now, so that a reaction or shortcut on the card finds the image as soon as it shows.
        await self.service.attach_message(job.id, message_ref(card.channel, posted["ts"]))
        self._spawn(self._follow(job, card, posted["ts"]))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, job: Job, card: Destination, ts: str) -> None:
        """Update the card through a job's life, as often as the chat flow says an update is worth it.

        The client waits out rate limits (see `setup`). A progress update Slack still
        refuses is dropped (the next one says more), and the job goes on.
        """
        try:
            async for update in updates(job, interval=self.settings.progress_interval):
                if update.event.kind == "done" and update.event.generation is not None:
                    await self._show_result(job, update.event.generation, card, ts)
                elif update.final:
                    await self._finally_show(job, card, ts, *failed_blocks(job, update.text))
                else:
                    text, blocks = progress_blocks(job, update.text)
                    try:
                        await self.client.chat_update(channel=card.channel, ts=ts, text=text, blocks=blocks)
                    except SlackApiError as error:
                        log.info("dropped a progress update of %s: %s", format_ref(job.id), error.response.get("error"))
        except SlackApiError as error:
            # The upload failed, or neither the card nor a new one could show the outcome; the image stays in history.
            log.warning("could not show the outcome of %s: %s", format_ref(job.id), error.response.get("error"))

    async def _show_result(self, job: Job, generation: Generation, card: Destination, ts: str) -> None:
        # Slack has no spoiler: a flagged image stays out of the channel, and its author may "Show" it.
        displays = await self.service.admin.displays(generation)
        shown = [image for image, display in zip(generation.images, displays, strict=True) if display == "show"]
        file_ids = await self._upload(shown, generation.id, card) if shown else []
        withheld = withheld_line(displays, spoilered="only its author can see it, with 🔞 Show.")
        actions = self.service.result_actions(generation.request)
        # A "spoiler" is an image its author may Show, so it keeps its "Image N" button; a withheld one has none.
        picks = [n for n, display in enumerate(displays) if display != "withhold"]
        text, blocks = result_blocks(
            generation,
            file_ids,
            actions,
            withheld=withheld,
            show="spoiler" in displays,
            picks=picks,
            catalog=self.service.catalog,
        )
        await self._finally_show(job, card, ts, text, blocks)

    async def _finally_show(self, job: Job, card: Destination, ts: str, text: str, blocks: list[Block]) -> None:
        """Update the card into the job's outcome; if Slack refuses, post the outcome as a new card.

        The update fails for good when the card was deleted or Slack kept failing: the
        user must still get the outcome. The new card is remembered in the card's place,
        so its buttons' neighbours, reactions and shortcuts act on the image.
        """
        try:
            await self.client.chat_update(channel=card.channel, ts=ts, text=text, blocks=blocks)
            return
        except SlackApiError as error:
            log.warning(
                "could not update the card of %s (%s); posting a new one",
                format_ref(job.id),
                error.response.get("error"),
            )
        posted = await self.client.chat_postMessage(
            channel=card.channel, thread_ts=card.thread_ts, text=text, blocks=blocks
        )
        await self.service.attach_message(job.id, message_ref(posted["channel"], posted["ts"]))

    async def _upload(self, images: Sequence[StoredImage], generation_id: int, where: Destination) -> list[str]:
        """Upload images below a card (or into a direct message) and return their file ids."""
        uploads = [
            {
                "file": await self.service.read_image(image.path),
                "filename": image.filename,
                "title": _file_title(generation_id, image.seed),
            }
            for image in images
        ]
        response = await self.client.files_upload_v2(
            channel=where.channel, thread_ts=where.thread_ts, file_uploads=uploads
        )
        return [file["id"] for file in response.get("files") or []]

    # -- replies ------------------------------------------------------------------------------------

    async def _tell(
        self, who: Requester, text: str, blocks: Sequence[Block] | None = None, *, thread_ts: str | None = None
    ) -> None:
        """Say something to one user only: ephemeral where they are (in `thread_ts`), else in a direct message."""
        try:
            if who.channel is not None:
                await self.client.chat_postEphemeral(
                    channel=who.channel, user=who.user_id, text=text, blocks=blocks, thread_ts=thread_ts
                )
                return
        except SlackApiError as error:
            log.info("ephemeral message refused (%s); sending a direct message", error.response.get("error"))
        await self.client.chat_postMessage(channel=who.user_id, text=text, blocks=blocks)

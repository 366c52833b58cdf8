"""A fake Discord that the unmodified discord.py client can log in to, for end-to-end adapter tests.

What it fakes
-------------
``FakeDiscord`` is a real aiohttp server on 127.0.0.1 (random free port) speaking Discord's v10
protocol, as far as a slash-command bot needs it:

* Gateway (WebSocket ``/gateway``, plain TEXT frames): HELLO, HEARTBEAT_ACK, IDENTIFY answered with
  READY and a GUILD_CREATE for one guild (an ``@everyone`` role, text channel ``channel_id``, thread
  ``thread_id``, members bot/alice/bob). RESUME is answered with INVALID_SESSION (false), so the
  client identifies again. Every connection gets its own HELLO/READY, so a second client (a
  simulated restart) can connect to the same fake. Tests dispatch events with ``slash``,
  ``autocomplete``, ``click``, ``react`` or the raw ``dispatch``; they go to the newest live session.
* REST under ``/api/v10``: ``users/@me``, application info, ``gateway[/bot]``, global and guild
  command sync, interaction callbacks (Discord's rules: ``callback_deadline`` seconds after the
  dispatch, else 404 code 10062; a second callback gets 400 code 40060), the interaction webhook
  routes (``@original``, follow-ups; 404 code 10015 before the first callback), channel messages,
  reactions and DM channel creation. Everything is recorded in ``fake.calls``; a route the fake
  does not know answers Discord's 404 and is recorded all the same, so a gap shows up there.
  JSON answers carry exactly ``Content-Type: application/json``, which discord.py requires.
* Attachment URLs in message objects point back at the fake, which serves the uploaded bytes and
  records each download in ``fake.downloads`` (with any Authorization header it carried).
  ``attachment(filename, data)`` makes an attachment a user gives (a slash command's attachment
  option, or a message of theirs from ``user_message``); ``url=`` puts it on another host and
  ``redirect_to=`` makes the fake answer its download with a 302 there.
* Message context menus (``message_command``) and modals: a callback of type 9 opens one, and
  ``submit_modal(interaction, {label: value})`` sends its MODAL_SUBMIT.

Every message the bot creates (callback, webhook or channel POST) is kept in ``fake.messages``
with its attachments' bytes and an ``edits`` list of snapshots (one at creation, one per edit).

Faults: ``fail_edits(count, status)`` answers the next ``count`` message edits (``PATCH`` of an
interaction's message or of a channel message) with ``status`` instead of editing: 429 as Discord
rate-limits (``retry_after`` in the body and the ``Retry-After`` header, and the ``Via`` header
without which discord.py takes a 429 for a Cloudflare ban), 404 as an expired interaction token
(code 10015), anything else as a bare server error. They are recorded in ``fake.calls`` like any
answer; ``fake.edit_faults`` holds those still to come.

Driving it
----------
::

    async with FakeDiscord() as fake:
        with patch_discord(fake):  # Route.BASE and DiscordWebSocket.DEFAULT_GATEWAY point here
            task = asyncio.create_task(client.start("fake-token"))
            await fake.wait_ready()  # 1st connection sent its GUILD_CREATE; wait_ready(2) after a restart
            inter = await fake.slash("imagine", {"prompt": "a cat"})
            assert (await inter.response())["type"] == 5
            await fake.wait_for(lambda: inter.original is not None and inter.original.attachments)
            await client.close()
            await task

Readiness: ``fake.ready`` is an ``asyncio.Event`` set when a connection has been sent its
GUILD_CREATE and cleared when no ready connection is left open. ``fake.connections`` counts the
connections that got READY over the fake's life and ``await fake.wait_ready(n)`` waits for the
n-th, which is race-free across restarts (read ``n = fake.connections + 1`` before starting a
client). ``fake.sessions`` lists the gateway connections (token, intents, received payloads).

Events: ``slash``, ``autocomplete``, ``click`` and ``react`` build the payloads (alice is the
default user and the guild owner, so she has every permission); each interaction is a
``FakeInteraction`` whose ``response()`` is its first accepted callback, ``original`` the message
its callback made (or, for a component, the clicked message after a type 6/7 callback) and
``followups`` its webhook follow-ups. ``wait_for(predicate)`` re-checks after every REST call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord
import yarl
from aiohttp import BodyPartReader, WSMsgType, web

from tests.fakes._loopback import LoopbackServer

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
# view channel, send messages, embed links, attach files, read history, add reactions,
# use external emojis, use application commands, send messages in threads
MEMBER_PERMISSIONS = sum(1 << bit for bit in (10, 11, 14, 15, 16, 6, 18, 31, 38))
OWNER_PERMISSIONS = discord.Permissions.all().value  # Discord grants the guild owner everything

# Interaction types and the callback types Discord accepts for each.
APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
ALLOWED_CALLBACKS = {
    1: {1},
    APPLICATION_COMMAND: {4, 5, 9},
    MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
    AUTOCOMPLETE: {8},
    MODAL_SUBMIT: {4, 5, 6, 7},
}


class DiscordError(Exception):
    """An error answer in Discord's shape: ``{"message": ..., "code": ...}`` with an HTTP status."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{status} {message} (code {code})")
        self.status, self.code, self.message = status, code, message


def unknown_interaction() -> DiscordError:
    return DiscordError(404, 10062, "Unknown interaction")


def already_acknowledged() -> DiscordError:
    return DiscordError(400, 40060, "Interaction has already been acknowledged.")


def unknown_webhook() -> DiscordError:
    return DiscordError(404, 10015, "Unknown Webhook")


def unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def unknown_channel() -> DiscordError:
    return DiscordError(404, 10003, "Unknown Channel")


def json_response(status: int, body: Any) -> web.Response:
    """A JSON answer whose Content-Type is exactly ``application/json`` (no charset), or a bare 204."""
    if body is None:
        return web.Response(status=204)
    return web.Response(status=status, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()


def _option_type(value: Any) -> int:
    """The application command option type Discord would use for a Python value."""
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def _custom_ids(components: list[dict]) -> Iterator[str]:
    for component in components:
        if "custom_id" in component:
            yield component["custom_id"]
        yield from _custom_ids(component.get("components", []))
        if "accessory" in component:
            yield from _custom_ids([component["accessory"]])


@dataclass
class FakeCall:
    """One REST request: path without the /api/v10 prefix, parsed JSON (or multipart payload_json)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any = None
    files: list[tuple[str, bytes, str]] = field(default_factory=list)  # (filename, bytes, content type)
    status: int = 0
    authorization: str | None = field(default=None, repr=False)
    response: Any = field(default=None, repr=False)


@dataclass
class FakeAttachment:
    filename: str
    data: bytes = field(repr=False)
    content_type: str
    id: int = 0
    url: str | None = None  # served elsewhere than the fake
    redirect_to: str | None = None  # the fake answers a download with a 302 to here


@dataclass
class FakeDownload:
    """One GET of an attachment's URL on the fake."""

    attachment_id: int
    authorization: str | None = None


@dataclass
class FakeMessage:
    """A message the bot created; ``edits`` holds a snapshot at creation and after every edit."""

    id: int
    channel_id: int
    content: str = ""
    embeds: list[dict] = field(default_factory=list)
    components: list[dict] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    flags: int = 0
    ephemeral: bool = False
    interaction_id: int | None = None
    deleted: bool = False
    edits: list[dict] = field(default_factory=list)
    type: int = 0
    reference: dict | None = None
    created_at: str = field(default_factory=_iso_now)
    edited_at: str | None = None
    author: dict | None = None  # a user's message; None: the bot's
    # What the create and each edit let ping, in order (None: none said, Discord's default: everyone named).
    allowed_mentions: list[dict | None] = field(default_factory=list)

    def snapshot(self) -> dict:
        return {
            "content": self.content,
            "embeds": list(self.embeds),
            "components": list(self.components),
            "attachments": [a.filename for a in self.attachments],
        }

    @property
    def custom_ids(self) -> list[str]:
        return list(_custom_ids(self.components))


@dataclass
class CallbackAttempt:
    """One POST to the interaction's callback route, accepted (200/204) or not (404/400)."""

    type: int
    data: dict | None
    status: int = 0
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic())


@dataclass
class FakeInteraction:
    id: int
    token: str
    type: int
    user: dict
    channel_id: int
    payload: dict = field(default_factory=dict, repr=False)
    message_id: int | None = None  # the clicked message, for components
    dispatched_at: float = 0.0  # time.monotonic() when INTERACTION_CREATE was sent
    callbacks: list[CallbackAttempt] = field(default_factory=list)
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    _response: dict | None = field(default=None, repr=False)
    _answered: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def acknowledged(self) -> bool:
        return self._response is not None

    async def response(self, timeout: float = 5.0) -> dict:
        """The first accepted callback body, ``{"type": ..., "data": ...}``."""
        try:
            await asyncio.wait_for(self._answered.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no accepted callback for interaction {self.id}; attempts: {self.callbacks}") from None
        assert self._response is not None
        return self._response


@dataclass
class GatewaySession:
    """One gateway connection. ``received`` holds the client's payloads except heartbeats (no token)."""

    number: int
    session_id: str
    ws: web.WebSocketResponse = field(repr=False)
    token: str | None = field(default=None, repr=False)
    intents: int | None = None
    seq: int = 0
    ready: bool = False
    closed: bool = False
    received: list[dict] = field(default_factory=list)


@contextlib.contextmanager
def patch_discord(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py's REST (incl. interaction callbacks and webhooks) and gateway at ``fake``."""
    old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


class FakeDiscord(LoopbackServer):
    def __init__(self) -> None:
        self._last_snowflake = 0
        self.app_id = self.snowflake()  # a bot's user id is its application id
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.thread_id = self.snowflake()
        self.adult_channel_id = self.snowflake()  # an age-restricted ("nsfw") text channel
        self.callback_deadline = 3.0
        self.started_at = _iso_now()
        self.users: dict[int, dict] = {}
        self.bot_user = {**self.user(self.app_id, "imagebot"), "bot": True, "discriminator": "0001", "verified": True}
        self.users[self.app_id] = self.bot_user
        self.alice = self.user(self.snowflake(), "alice")
        self.bob = self.user(self.snowflake(), "bob")
        self.channels: dict[int, dict] = {}
        self.calls: list[FakeCall] = []
        self.commands: list[dict] = []  # every synced command; guild commands carry guild_id
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.sessions: list[GatewaySession] = []
        self.ready = asyncio.Event()
        self.connections = 0  # gateway connections that were sent READY + GUILD_CREATE, over the fake's life
        self.api_base = self.gateway_url = self.http_base = ""
        self.edit_faults: list[tuple[int, float]] = []  # (status, retry_after) for the next message edits
        self.followup_faults = 0  # the next follow-up messages refused as an expired interaction's (404)
        self.downloads: list[FakeDownload] = []
        self._by_token: dict[str, FakeInteraction] = {}
        self._attachments: dict[int, FakeAttachment] = {}
        self._dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self._changed = asyncio.Condition()
        self._add_guild_channels()
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [
            (method, re.compile(pattern), handler)
            for method, pattern, handler in [
                ("GET", r"/users/@me", lambda call: self.bot_user),
                ("GET", r"/oauth2/applications/@me", lambda call: self._application()),
                ("GET", r"/gateway", lambda call: self._gateway_info()),
                ("GET", r"/gateway/bot", lambda call: self._gateway_info()),
                ("PUT", r"/applications/(\d+)/commands", self._put_commands),
                ("GET", r"/applications/(\d+)/commands", self._get_commands),
                ("PUT", r"/applications/(\d+)/guilds/(\d+)/commands", self._put_commands),
                ("GET", r"/applications/(\d+)/guilds/(\d+)/commands", self._get_commands),
                ("POST", r"/interactions/(\d+)/([^/]+)/callback", self._callback),
                ("GET", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._get_webhook_message),
                ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._edit_webhook_message),
                ("DELETE", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._delete_webhook_message),
                ("POST", r"/webhooks/(\d+)/([^/]+)", self._post_followup),
                ("POST", r"/channels/(\d+)/messages", self._post_channel_message),
                ("GET", r"/channels/(\d+)/messages/(\d+)", self._get_channel_message),
                ("PATCH", r"/channels/(\d+)/messages/(\d+)", self._edit_channel_message),
                ("DELETE", r"/channels/(\d+)/messages/(\d+)", self._delete_channel_message),
                ("PUT", r"/channels/(\d+)/messages/(\d+)/reactions/.+", lambda call, *ids: None),
                ("DELETE", r"/channels/(\d+)/messages/(\d+)/reactions(/.+)?", lambda call, *ids: None),
                ("GET", r"/channels/(\d+)", self._get_channel),
                ("POST", r"/users/@me/channels", self._create_dm),
            ]
        ]

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{id}/{filename}", self._serve_attachment)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        port = await self._serve(app)
        self.http_base = f"http://127.0.0.1:{port}"
        self.api_base = self.http_base + API_PREFIX
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"

    async def close(self) -> None:
        for session in self.sessions:
            if not session.ws.closed:
                await session.ws.close(code=1001)
        await super().close()

    # -- helpers for tests ------------------------------------------------------------------------

    def snowflake(self) -> int:
        """A fresh, time-based, strictly increasing Discord snowflake."""
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_snowflake = max(self._last_snowflake + 1, now)
        return self._last_snowflake

    def user(self, user_id: int, name: str) -> dict:
        """A user object; the fake remembers it (e.g. for DM channel creation)."""
        user = {
            "id": str(user_id),
            "username": name,
            "discriminator": "0",
            "global_name": name.title(),
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
        }
        self.users[user_id] = user
        return user

    def member(self, user: dict, *, permissions: int | None = None) -> dict:
        """A guild member; ``permissions`` (as interactions carry them) is left out when None."""
        member = {
            "user": user,
            "roles": [],
            "joined_at": self.started_at,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member

    def dm_channel(self, user: dict) -> dict:
        """The bot's DM channel with ``user`` (type 1), created on first use."""
        user_id = int(user["id"])
        if user_id not in self._dm_channels:
            channel_id = self.snowflake()
            self._dm_channels[user_id] = channel_id
            self.channels[channel_id] = {
                "id": str(channel_id),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [user],
            }
        return self.channels[self._dm_channels[user_id]]

    def message_payload(self, message: FakeMessage) -> dict:
        """The Discord message object for ``message``, as REST answers and interactions carry it."""
        payload: dict[str, Any] = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "type": message.type,
            "content": message.content,
            "author": message.author or self.bot_user,
            "attachments": [self._attachment_payload(a) for a in message.attachments],
            "embeds": message.embeds,
            "components": message.components,
            "flags": message.flags,
            "timestamp": message.created_at,
            "edited_timestamp": message.edited_at,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
        }
        if message.reference:
            payload["message_reference"] = message.reference
        inter = self.interactions.get(message.interaction_id or 0)
        if inter is not None:
            metadata: dict[str, Any] = {
                "id": str(inter.id),
                "type": inter.type,
                "user": inter.user,
                "authorizing_integration_owners": inter.payload.get("authorizing_integration_owners", {}),
            }
            if inter.type == APPLICATION_COMMAND:
                metadata["name"] = inter.payload["data"]["name"]
                metadata["command_type"] = 1
            if message in inter.followups and inter.original is not None:
                metadata["original_response_message_id"] = str(inter.original.id)
            if inter.message_id is not None:
                metadata["interacted_message_id"] = str(inter.message_id)
            payload.update(webhook_id=str(self.app_id), application_id=str(self.app_id), interaction_metadata=metadata)
        return payload

    def attachment(
        self,
        filename: str,
        data: bytes,
        *,
        content_type: str | None = None,
        url: str | None = None,
        redirect_to: str | None = None,
    ) -> FakeAttachment:
        """An attachment a user gives; its type is guessed from the name as Discord does, unless given."""
        attachment = self._attachment(filename, data, content_type or "application/octet-stream")
        if content_type is not None:
            attachment.content_type = content_type
        attachment.url, attachment.redirect_to = url, redirect_to
        return attachment

    def user_message(
        self, attachments: list[FakeAttachment], *, content: str = "", user: dict | None = None, channel_id: int = 0
    ) -> FakeMessage:
        """A message a user (default alice) posted with `attachments`, for a context menu to act on."""
        message = FakeMessage(
            id=self.snowflake(),
            channel_id=channel_id or self.channel_id,
            content=content,
            attachments=attachments,
            author=user or self.alice,
        )
        message.edits.append(message.snapshot())
        self.messages[message.id] = message
        return message

    def fail_edits(self, count: int, status: int, *, retry_after: float = 0.05) -> None:
        """Answer the next `count` message edits with `status` (429, 404 or a 5xx) instead of making them."""
        self.edit_faults.extend([(status, retry_after)] * count)

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever the fake records anything."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            recent = "\n".join(f"  {c.method} {c.path} -> {c.status}" for c in self.calls[-15:]) or "  (none)"
            raise TimeoutError(f"condition not met within {timeout}s; last calls:\n{recent}") from None

    async def wait_ready(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``count`` gateway connections (over the fake's life) were sent their GUILD_CREATE."""
        await self.wait_for(lambda: self.connections >= count, timeout)

    # -- test-driven gateway events ---------------------------------------------------------------

    async def dispatch(self, event: str, data: dict) -> None:
        """Send a DISPATCH (op 0) with the next sequence number to the newest ready connection."""
        live = [s for s in self.sessions if s.ready and not s.closed]
        if not live:
            raise RuntimeError(f"no ready gateway connection to send {event} to")
        await self._send_dispatch(live[-1], event, data)

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: dict | None = None,
        channel_id: int | None = None,
        dm: bool = False,
        attachment_size_limit: int | None = None,
        permissions: int | None = None,
    ) -> FakeInteraction:
        """Dispatch an APPLICATION_COMMAND interaction for chat-input command ``name``.

        ``permissions`` overrides the member's permissions (default: all for the owner alice, else
        ``MEMBER_PERMISSIONS``).
        """
        user = user or self.alice
        channel = self.dm_channel(user) if dm else self._channel(channel_id or self.channel_id)
        data = self._command_data(name, options, channel)
        return await self._interact(
            APPLICATION_COMMAND,
            data,
            user,
            channel,
            attachment_size_limit=attachment_size_limit,
            permissions=permissions,
        )

    async def message_command(self, name: str, message: FakeMessage, *, user: dict | None = None) -> FakeInteraction:
        """Dispatch a message context menu command (type 3) on `message`, as the message's own menu does."""
        user = user or self.alice
        channel = self._channel(message.channel_id)
        command = self._find_command(name, channel.get("guild_id"), command_type=3)
        data: dict[str, Any] = {
            "id": command["id"] if command else str(self.snowflake()),
            "name": name,
            "type": 3,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): self.message_payload(message)}},
        }
        if command is not None and "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return await self._interact(APPLICATION_COMMAND, data, user, channel)

    async def submit_modal(
        self, opened_by: FakeInteraction, values: dict[str, str], *, user: dict | None = None
    ) -> FakeInteraction:
        """Dispatch the MODAL_SUBMIT of the modal `opened_by` answered with, its text inputs filled by label."""
        response = await opened_by.response()
        if response["type"] != 9:
            raise ValueError(f"interaction {opened_by.id} opened no modal: {response}")
        modal = response["data"]

        def filled(components: list[dict], label: str | None = None) -> list[dict]:
            out = []
            for component in components:
                if component["type"] == 1:  # an action row
                    out.append({"type": 1, "components": filled(component["components"])})
                elif component["type"] == 18:  # a label around one component
                    (inner,) = filled([component["component"]], component["label"])
                    out.append({"type": 18, "component": inner})
                elif component["type"] == 4:  # a text input
                    name = label or component.get("label")
                    out.append({"type": 4, "custom_id": component["custom_id"], "value": values.get(name, "")})
            return out

        data = {"custom_id": modal["custom_id"], "components": filled(modal["components"])}
        channel = self._channel(opened_by.channel_id)
        return await self._interact(MODAL_SUBMIT, data, user or self.alice, channel)

    async def autocomplete(
        self, name: str, options: dict[str, Any], focused: str, *, user: dict | None = None, timeout: float = 5.0
    ) -> list[dict]:
        """Dispatch an AUTOCOMPLETE interaction with ``focused`` marked and return the bot's choices."""
        user = user or self.alice
        data = self._command_data(name, {focused: "", **options}, self._channel(self.channel_id), focused=focused)
        inter = await self._interact(AUTOCOMPLETE, data, user, self._channel(self.channel_id))
        response = await inter.response(timeout)
        return list((response["data"] or {}).get("choices", []))

    async def click(self, message_id: int, custom_id: str, *, user: dict | None = None) -> FakeInteraction:
        """Dispatch a MESSAGE_COMPONENT (button) interaction for a button on one of the bot's messages."""
        message = self.messages.get(message_id)
        if message is None:
            raise KeyError(f"the bot never created message {message_id}")
        if custom_id not in message.custom_ids:
            raise ValueError(f"message {message_id} has no component {custom_id!r}; it has {message.custom_ids}")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(
            MESSAGE_COMPONENT, data, user or self.alice, self._channel(message.channel_id), message=message
        )

    async def react(self, message_id: int, emoji: str, *, user: dict | None = None, removed: bool = False) -> None:
        """Dispatch MESSAGE_REACTION_ADD: ``user`` (default alice) reacted with a unicode emoji.

        With `removed`, MESSAGE_REACTION_REMOVE: the user took that reaction back (no member, as Discord sends it).
        """
        message = self.messages.get(message_id)
        if message is None:
            raise KeyError(f"the bot never created message {message_id}")
        user = user or self.alice
        channel = self._channel(message.channel_id)
        data: dict[str, Any] = {
            "user_id": user["id"],
            "channel_id": str(message.channel_id),
            "message_id": str(message_id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "burst_colors": [],
            "type": 0,
            "message_author_id": str(self.app_id),
        }
        if removed:
            data = {key: data[key] for key in ("user_id", "channel_id", "message_id", "emoji", "burst", "type")}
        if "guild_id" in channel:
            data["guild_id"] = channel["guild_id"]
            if not removed:
                data["member"] = self.member(user)
        await self.dispatch("MESSAGE_REACTION_REMOVE" if removed else "MESSAGE_REACTION_ADD", data)

    # -- gateway ----------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = GatewaySession(number=len(self.sessions) + 1, session_id=secrets.token_hex(16), ws=ws)
        self.sessions.append(session)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_gateway_payload(session, json.loads(msg.data))
        finally:
            session.closed = True
            if not any(s.ready and not s.closed for s in self.sessions):
                self.ready.clear()
            await self._notify()
        return ws

    async def _on_gateway_payload(self, session: GatewaySession, payload: dict) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:  # HEARTBEAT
            await session.ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
            return
        if op == 2:  # IDENTIFY
            session.token, session.intents = data["token"], data.get("intents")
            data = {k: v for k, v in data.items() if k != "token"}
        session.received.append({"op": op, "d": data})
        if op == 2:
            await self._send_dispatch(session, "READY", self._ready_payload(session, data.get("shard")))
            await self._send_dispatch(session, "GUILD_CREATE", self._guild_payload())
            session.ready = True
            self.connections += 1
            self.ready.set()
            await self._notify()
        elif op == 6:  # RESUME: not supported, make the client identify again
            await session.ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))

    async def _send_dispatch(self, session: GatewaySession, event: str, data: dict) -> None:
        session.seq += 1
        await session.ws.send_str(json.dumps({"op": 0, "t": event, "s": session.seq, "d": data}))

    def _ready_payload(self, session: GatewaySession, shard: list[int] | None) -> dict:
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "session_type": "normal",
            "application": {"id": str(self.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
            "_trace": ["fake-discord"],
        }
        if shard is not None:
            ready["shard"] = shard
        return ready

    def _add_guild_channels(self) -> None:
        self.channels[self.channel_id] = {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        self.channels[self.adult_channel_id] = {
            **self.channels[self.channel_id],
            "id": str(self.adult_channel_id),
            "name": "adults-only",
            "position": 1,
            "nsfw": True,
        }
        self.channels[self.thread_id] = {
            "id": str(self.thread_id),
            "type": 11,
            "guild_id": str(self.guild_id),
            "parent_id": str(self.channel_id),
            "owner_id": self.alice["id"],
            "name": "imagebot thread",
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": self.started_at,
                "locked": False,
                "create_timestamp": self.started_at,
            },
        }

    def _guild_payload(self) -> dict:
        members = [self.member(u) for u in (self.bot_user, self.alice, self.bob)]
        return {
            "id": str(self.guild_id),
            "name": "Fake Guild",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": self.alice["id"],
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": str(self.channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "features": [],
            "roles": [
                {
                    "id": str(self.guild_id),  # @everyone shares the guild's id
                    "name": "@everyone",
                    "permissions": str(MEMBER_PERMISSIONS),
                    "position": 0,
                    "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                    "icon": None,
                    "unicode_emoji": None,
                }
            ],
            "emojis": [],
            "stickers": [],
            "joined_at": self.started_at,
            "large": False,
            "unavailable": False,
            "lazy": True,
            "member_count": len(members),
            "members": members,
            "voice_states": [],
            "presences": [],
            "channels": [self.channels[self.channel_id], self.channels[self.adult_channel_id]],
            "threads": [self.channels[self.thread_id]],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # -- interactions -----------------------------------------------------------------------------

    def _channel(self, channel_id: int) -> dict:
        if channel_id not in self.channels:
            raise KeyError(f"unknown channel {channel_id}")
        return self.channels[channel_id]

    def _find_command(self, name: str, guild_id: str | None, *, command_type: int = 1) -> dict | None:
        candidates = [c for c in self.commands if c["name"] == name and c.get("type", 1) == command_type]
        scoped = [c for c in candidates if guild_id is not None and c.get("guild_id") == guild_id]
        unscoped = [c for c in candidates if "guild_id" not in c]
        return (scoped or unscoped or [None])[0]

    def _command_data(
        self, name: str, options: dict[str, Any] | None, channel: dict, *, focused: str | None = None
    ) -> dict:
        command = self._find_command(name, channel.get("guild_id"))
        definitions = {o["name"]: o for o in (command or {}).get("options", [])}
        data: dict[str, Any] = {"id": command["id"] if command else str(self.snowflake()), "name": name, "type": 1}
        if command is not None and "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        built = []
        attachments: dict[str, dict] = {}
        for option_name, value in (options or {}).items():
            option_type = definitions[option_name]["type"] if option_name in definitions else _option_type(value)
            if isinstance(value, FakeAttachment):  # Discord sends its id and the object under "resolved"
                attachments[str(value.id)] = self._attachment_payload(value)
                option_type, value = 11, str(value.id)
            option: dict[str, Any] = {"name": option_name, "type": option_type, "value": value}
            if option_name == focused:
                option["focused"] = True
            built.append(option)
        if built:
            data["options"] = built
        if attachments:
            data["resolved"] = {"attachments": attachments}
        return data

    async def _interact(
        self,
        interaction_type: int,
        data: dict,
        user: dict,
        channel: dict,
        *,
        message: FakeMessage | None = None,
        attachment_size_limit: int | None = None,
        permissions: int | None = None,
    ) -> FakeInteraction:
        if permissions is None:
            permissions = OWNER_PERMISSIONS if user["id"] == self.alice["id"] else MEMBER_PERMISSIONS
        inter = FakeInteraction(
            id=self.snowflake(),
            token=secrets.token_urlsafe(48),
            type=interaction_type,
            user=user,
            channel_id=int(channel["id"]),
            message_id=message.id if message else None,
        )
        payload: dict[str, Any] = {
            "id": str(inter.id),
            "application_id": str(self.app_id),
            "type": interaction_type,
            "data": data,
            "token": inter.token,
            "version": 1,
            "channel_id": channel["id"],
            "channel": channel,
            "app_permissions": str(MEMBER_PERMISSIONS),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": attachment_size_limit or DEFAULT_ATTACHMENT_SIZE_LIMIT,
        }
        if "guild_id" in channel:
            payload.update(
                guild_id=channel["guild_id"],
                guild={"id": channel["guild_id"], "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=self.member(user, permissions=permissions),
                context=0,
                authorizing_integration_owners={"0": channel["guild_id"]},
            )
        else:
            payload.update(user=user, context=1, authorizing_integration_owners={"0": "0"})
        if message is not None:
            payload["message"] = self.message_payload(message)
        inter.payload = payload
        self.interactions[inter.id] = inter
        self._by_token[inter.token] = inter
        inter.dispatched_at = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return inter

    def _callback(self, call: FakeCall, interaction_id: str, token: str) -> dict | None:
        body = call.json or {}
        attempt = CallbackAttempt(type=int(body.get("type", 0)), data=body.get("data"))
        inter = self.interactions.get(int(interaction_id))
        if inter is not None and inter.token == token:
            inter.callbacks.append(attempt)
        try:
            if inter is None or inter.token != token:
                raise unknown_interaction()
            if time.monotonic() - inter.dispatched_at > self.callback_deadline:
                raise unknown_interaction()
            if inter.acknowledged:
                raise already_acknowledged()
            if attempt.type not in ALLOWED_CALLBACKS.get(inter.type, set()):
                raise DiscordError(400, 50035, "Invalid Form Body")
            message = self._apply_callback(inter, attempt.type, attempt.data or {}, call.files)
        except DiscordError as exc:
            attempt.status = exc.status
            raise
        inter._response = {"type": attempt.type, "data": attempt.data}
        inter._answered.set()
        if call.query.get("with_response") not in ("1", "true", "True"):
            attempt.status = 204
            return None
        attempt.status = 200
        interaction: dict[str, Any] = {"id": str(inter.id), "type": inter.type, "activity_instance_id": None}
        resource: dict[str, Any] = {"type": attempt.type}
        if message is not None:
            interaction.update(
                response_message_id=str(message.id),
                response_message_loading=attempt.type == 5,
                response_message_ephemeral=message.ephemeral,
            )
            resource["message"] = self.message_payload(message)
        return {"interaction": interaction, "resource": resource}

    def _apply_callback(
        self, inter: FakeInteraction, callback_type: int, data: dict, files: list[tuple[str, bytes, str]]
    ) -> FakeMessage | None:
        """Apply an accepted callback; returns the message it created or updated, if any."""
        clicked = self.messages.get(inter.message_id or 0)
        message_type = 20 if inter.type == APPLICATION_COMMAND else 0
        if callback_type == 4:  # CHANNEL_MESSAGE_WITH_SOURCE
            inter.original = self._create_message(inter.channel_id, data, files, inter, message_type)
            return inter.original
        if callback_type == 5:  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: the "thinking" message
            flags = (int(data.get("flags") or 0) & EPHEMERAL) | LOADING
            inter.original = self._create_message(inter.channel_id, {"flags": flags}, [], inter, message_type)
            return inter.original
        if callback_type == 6:  # DEFERRED_UPDATE_MESSAGE: @original is now the clicked message
            inter.original = clicked
            return None
        if callback_type == 7:  # UPDATE_MESSAGE: edit the clicked message
            assert clicked is not None
            inter.original = clicked
            self._edit_message(clicked, data, files)
            return clicked
        return None  # 1 PONG, 8 AUTOCOMPLETE_RESULT and 9 MODAL only answer the interaction

    # -- messages ---------------------------------------------------------------------------------

    def _attachment(self, filename: str, data: bytes, content_type: str) -> FakeAttachment:
        guessed = mimetypes.guess_type(filename)[0]  # Discord sniffs the type; clients send octet-stream
        attachment = FakeAttachment(filename, data, guessed or content_type, id=self.snowflake())
        self._attachments[attachment.id] = attachment
        return attachment

    def _attachment_payload(self, attachment: FakeAttachment) -> dict:
        url = attachment.url or f"{self.http_base}/attachments/{attachment.id}/{attachment.filename}"
        return {
            "id": str(attachment.id),
            "filename": attachment.filename,
            "size": len(attachment.data),
            "url": url,
            "proxy_url": url,
            "content_type": attachment.content_type,
        }

    def _create_message(
        self,
        channel_id: int,
        data: dict,
        files: list[tuple[str, bytes, str]],
        interaction: FakeInteraction | None = None,
        message_type: int = 0,
    ) -> FakeMessage:
        flags = int(data.get("flags") or 0)
        message = FakeMessage(
            id=self.snowflake(),
            channel_id=channel_id,
            content=data.get("content") or "",
            embeds=list(data.get("embeds") or []),
            components=list(data.get("components") or []),
            attachments=[self._attachment(*f) for f in files],
            flags=flags,
            ephemeral=bool(flags & EPHEMERAL),
            interaction_id=interaction.id if interaction else None,
            type=message_type,
            reference=data.get("message_reference"),
            allowed_mentions=[data.get("allowed_mentions")],
        )
        message.edits.append(message.snapshot())
        self.messages[message.id] = message
        return message

    def _edit_message(self, message: FakeMessage, data: dict, files: list[tuple[str, bytes, str]]) -> None:
        """Discord's PATCH: a key present replaces the field, an absent key leaves it unchanged."""
        if "content" in data:
            message.content = data["content"] or ""
        message.allowed_mentions.append(data.get("allowed_mentions"))
        if "embeds" in data:
            message.embeds = list(data["embeds"] or [])
        if "components" in data:
            message.components = list(data["components"] or [])
        if "flags" in data and data["flags"] is not None:
            message.flags = (message.flags & EPHEMERAL) | int(data["flags"])
        new = [self._attachment(*f) for f in files]
        if data.get("attachments") is not None:  # the list names the existing attachments to keep
            keep = {int(a["id"]) for a in data["attachments"] if "id" in a}
            message.attachments = [a for a in message.attachments if a.id in keep] + new
        else:
            message.attachments = message.attachments + new
        message.flags &= ~LOADING
        message.edited_at = _iso_now()
        message.edits.append(message.snapshot())

    def _channel_message(self, channel_id: str, message_id: str) -> FakeMessage:
        message = self.messages.get(int(message_id))
        if message is None or message.deleted or message.ephemeral or message.channel_id != int(channel_id):
            raise unknown_message()
        return message

    # -- REST -------------------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _rest(self, request: web.Request) -> web.Response:
        call = FakeCall(
            method=request.method,
            path=request.path.removeprefix(API_PREFIX),
            query=dict(request.query),
            authorization=request.headers.get("Authorization"),
        )
        if request.content_type == "multipart/form-data":
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "payload_json":
                    call.json = json.loads(await part.text())
                elif part.name and part.name.startswith("files["):
                    content_type = part.headers.get("Content-Type", "application/octet-stream")
                    call.files.append((part.filename or part.name, bytes(await part.read()), content_type))
        elif request.can_read_body:
            raw = await request.read()
            call.json = json.loads(raw) if raw else None
        if call.method == "PATCH" and "/messages/" in call.path and self.edit_faults:
            return await self._fail_edit(call, *self.edit_faults.pop(0))
        try:
            status, body = 200, self._route(call)
        except DiscordError as exc:
            status, body = exc.status, {"message": exc.message, "code": exc.code}
        except Exception as exc:  # a bug in the fake: answer 400, since discord.py retries a 500 for seconds
            status, body = 400, {"message": f"FakeDiscord failed on {call.method} {call.path}: {exc!r}", "code": 0}
        call.status, call.response = (204 if body is None else status), body
        self.calls.append(call)
        await self._notify()
        return json_response(call.status, body)

    async def _fail_edit(self, call: FakeCall, status: int, retry_after: float) -> web.Response:
        headers = {"Content-Type": "application/json"}
        if status == 429:
            body: dict[str, Any] = {
                "message": "You are being rate limited.",
                "retry_after": retry_after,
                "global": False,
            }
            headers.update({"Retry-After": f"{retry_after:g}", "Via": "1.1 google", "X-RateLimit-Scope": "user"})
        elif status == 404:
            body = {"message": unknown_webhook().message, "code": unknown_webhook().code}
        else:
            body = {"message": f"{status}: Server Error", "code": 0}
        call.status, call.response = status, body
        self.calls.append(call)
        await self._notify()
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)

    def _route(self, call: FakeCall) -> Any:
        for method, pattern, handler in self._routes:
            if method == call.method and (match := pattern.fullmatch(call.path)):
                return handler(call, *match.groups())
        raise DiscordError(404, 0, "404: Not Found")

    async def _serve_attachment(self, request: web.Request) -> web.Response:
        attachment = self._attachments.get(int(request.match_info["id"]))
        if attachment is None:
            return web.Response(status=404)
        self.downloads.append(FakeDownload(attachment.id, request.headers.get("Authorization")))
        await self._notify()
        if attachment.redirect_to:
            return web.Response(status=302, headers={"Location": attachment.redirect_to})
        return web.Response(body=attachment.data, headers={"Content-Type": attachment.content_type})

    def _application(self) -> dict:
        return {
            "id": str(self.app_id),
            "name": "imagebot",
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": self.bot_user,
            "owner": self.alice,
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
            "tags": [],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "approximate_guild_count": 1,
            "integration_types_config": {"0": {}},
        }

    def _gateway_info(self) -> dict:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return {"url": self.gateway_url, "shards": 1, "session_start_limit": limit}

    def _check_app(self, app_id: str) -> None:
        if int(app_id) != self.app_id:
            raise DiscordError(404, 10002, "Unknown Application")

    def _put_commands(self, call: FakeCall, app_id: str, guild_id: str | None = None) -> list[dict]:
        self._check_app(app_id)
        previous = {(c["name"], c.get("type", 1)): c for c in self.commands if c.get("guild_id") == guild_id}
        synced = []
        for command in call.json or []:
            old = previous.get((command["name"], command.get("type", 1)))
            stored = {"type": 1, "description": "", **command}
            stored.update(
                id=old["id"] if old else str(self.snowflake()),
                application_id=str(self.app_id),
                version=str(self.snowflake()),
            )
            if guild_id is not None:
                stored["guild_id"] = guild_id
            synced.append(stored)
        self.commands = [c for c in self.commands if c.get("guild_id") != guild_id] + synced
        return synced

    def _get_commands(self, call: FakeCall, app_id: str, guild_id: str | None = None) -> list[dict]:
        self._check_app(app_id)
        return [c for c in self.commands if c.get("guild_id") == guild_id]

    def _webhook_interaction(self, app_id: str, token: str) -> FakeInteraction:
        inter = self._by_token.get(token)
        if int(app_id) != self.app_id or inter is None or not inter.acknowledged:
            raise unknown_webhook()
        return inter

    def _webhook_message(self, app_id: str, token: str, message_id: str) -> FakeMessage:
        inter = self._webhook_interaction(app_id, token)
        if message_id == "@original":
            message = inter.original
        else:
            owned = [m for m in (inter.original, *inter.followups) if m is not None]
            message = next((m for m in owned if m.id == int(message_id)), None)
        if message is None or message.deleted:
            raise unknown_message()
        return message

    def _get_webhook_message(self, call: FakeCall, app_id: str, token: str, message_id: str) -> dict:
        return self.message_payload(self._webhook_message(app_id, token, message_id))

    def _edit_webhook_message(self, call: FakeCall, app_id: str, token: str, message_id: str) -> dict:
        message = self._webhook_message(app_id, token, message_id)
        self._edit_message(message, call.json or {}, call.files)
        return self.message_payload(message)

    def _delete_webhook_message(self, call: FakeCall, app_id: str, token: str, message_id: str) -> None:
        self._webhook_message(app_id, token, message_id).deleted = True

    def _post_followup(self, call: FakeCall, app_id: str, token: str) -> dict | None:
        inter = self._webhook_interaction(app_id, token)
        if self.followup_faults:
            self.followup_faults -= 1
            raise unknown_webhook()
        message_type = 20 if inter.type == APPLICATION_COMMAND else 0
        message = self._create_message(inter.channel_id, call.json or {}, call.files, inter, message_type)
        inter.followups.append(message)
        if call.query.get("wait") in ("1", "true", "True"):
            return self.message_payload(message)
        return None

    def _post_channel_message(self, call: FakeCall, channel_id: str) -> dict:
        if int(channel_id) not in self.channels:
            raise unknown_channel()
        data = call.json or {}
        message_type = 19 if data.get("message_reference") else 0
        return self.message_payload(self._create_message(int(channel_id), data, call.files, None, message_type))

    def _get_channel_message(self, call: FakeCall, channel_id: str, message_id: str) -> dict:
        return self.message_payload(self._channel_message(channel_id, message_id))

    def _edit_channel_message(self, call: FakeCall, channel_id: str, message_id: str) -> dict:
        message = self._channel_message(channel_id, message_id)
        self._edit_message(message, call.json or {}, call.files)
        return self.message_payload(message)

    def _delete_channel_message(self, call: FakeCall, channel_id: str, message_id: str) -> None:
        self._channel_message(channel_id, message_id).deleted = True

    def _get_channel(self, call: FakeCall, channel_id: str) -> dict:
        if int(channel_id) not in self.channels:
            raise unknown_channel()
        return self.channels[int(channel_id)]

    def _create_dm(self, call: FakeCall) -> dict:
        user_id = int((call.json or {})["recipient_id"])
        user = self.users.get(user_id) or self.user(user_id, f"user{user_id}")
        return self.dm_channel(user)

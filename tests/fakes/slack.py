"""A loopback fake of Slack that the unmodified slack-sdk / slack-bolt can talk to, for adapter tests.

What it fakes
-------------
``FakeSlack`` is a real aiohttp server on 127.0.0.1 (random free port) with three faces:

* Web API under ``fake.api_base`` (``http://127.0.0.1:PORT/api/``; pass it as ``base_url`` of
  ``AsyncWebClient``). Every call is recorded in ``fake.calls`` as a ``SlackCall`` whose ``args``
  merge the query string, the form body (urlencoded or multipart) and a JSON body, with JSON-string
  fields (``blocks``, ``view``, ``files``, ``attachments``) decoded. Implemented: ``auth.test``,
  ``chat.postMessage`` / ``update`` / ``postEphemeral`` / ``delete``, ``views.open`` / ``update``,
  ``reactions.add``, ``conversations.info``, ``users.info`` (``is_admin`` for ``fake.admins``),
  ``apps.connections.open`` and the three-step upload
  that ``files_upload_v2`` uses (``files.getUploadURLExternal``, a POST of the raw bytes to the
  returned URL on this server, ``files.completeUploadExternal``), ``files.delete``,
  ``files.info`` and ``files.list`` (shared files not deleted, of one ``channel`` if given, one page).
  Files users shared (``share_file``, posted with ``user_message``) are served at
  their ``url_private_download`` on this server, to the bot token only (anything else gets Slack's
  302 to the sign-in page); each download is recorded in ``fake.downloads`` with the token it
  carried. ``url=`` puts a file on another host, ``redirect_to=`` answers its download with a 302. A
  ``chat.postMessage`` to a user id lands in the app's direct message with them (``D…``, see
  ``dm_channel``); channels in ``fake.not_member`` refuse posts and uploads with ``not_in_channel``,
  as Slack does for a channel the bot was not invited to. Unknown methods are recorded and
  answered ``{"ok": false, "error": "unknown_method"}``; a call without a token gets ``not_authed``.
  Messages live in ``fake.messages[(channel, ts)]`` (``SlackMessage``, with an ``updates`` list of
  snapshots: one at creation, one per ``chat.update``); views in ``fake.views[view_id]``.
* A driver for an app in HTTP mode: ``send_slash``, ``send_block_action``, ``send_global_shortcut``,
  ``send_message_shortcut``, ``send_view_submission`` and ``send_event`` build Slack's payloads,
  sign them with ``fake.signing_secret`` (``X-Slack-Signature: v0=HMAC-SHA256(v0:{ts}:{body})``)
  and POST them to the app's URL, returning a ``SentRequest``. ``timestamp=`` / ``secret=`` forge
  stale or wrongly signed requests. ``response_url``s point at the fake; what is POSTed there is
  recorded as a ``SlackCall`` with method ``"response_url"``. The ``*_payload`` builders are
  public, so the same payloads can go through Socket Mode.
* Socket Mode: ``apps.connections.open`` returns ``ws://127.0.0.1:PORT/socket``; a connection gets
  ``{"type": "hello"}`` and pings are answered by aiohttp. ``await fake.socket_send(type, payload)``
  sends an envelope to the newest connection and returns the client's ack.

Faults: ``fail_updates(count, status)`` answers the next ``count`` ``chat.update`` calls with HTTP
``status`` instead of updating: 429 as Slack rate-limits (``{"ok": false, "error": "ratelimited"}``
with a ``Retry-After`` header), anything else as a server error (``internal_error``). They are
recorded in ``fake.calls`` all the same; ``fake.update_faults`` holds those still to come.

Driving it
----------
::

    async with FakeSlack() as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_base)
        app = AsyncApp(signing_secret=fake.signing_secret, client=client)
        ...  # serve the app on some URL
        sent = await fake.send_slash(url, text="a cat")
        assert sent.status == 200
        await fake.wait_for(lambda: fake.calls_to("chat.postMessage"))

``wait_for(predicate)`` re-checks after every recorded call and message change and raises
``TimeoutError`` listing the last calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import mimetypes
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from tests.fakes._loopback import LoopbackServer

JSON_STRING_FIELDS = ("blocks", "view", "files", "attachments", "metadata")


@dataclass
class SlackCall:
    """One request the fake received (a Web API method, an upload or a response_url POST)."""

    method: str
    args: dict[str, Any]
    token: str | None = field(default=None, repr=False)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    status: int = 200  # the HTTP status answered (not 200 only for an injected fault)


@dataclass
class SlackMessage:
    """A message the app posted (or an upload shared into a channel)."""

    channel: str
    ts: str
    text: str | None = None
    blocks: list[dict] | None = None
    thread_ts: str | None = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    ephemeral_user: str | None = None
    deleted: bool = False
    updates: list[dict] = field(default_factory=list)
    user: str | None = None  # a user's message; None: the app's
    file_ids: list[str] = field(default_factory=list)  # files a user shared with it

    def snapshot(self) -> dict:
        return {"text": self.text, "blocks": self.blocks}


@dataclass
class SlackFile:
    """A file started with files.getUploadURLExternal."""

    id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str | None = None
    shared: bool = False
    channel: str | None = None
    deleted: bool = False
    mimetype: str = "application/octet-stream"
    url: str | None = None  # served elsewhere than the fake
    redirect_to: str | None = None  # the fake answers a download with a 302 to here


@dataclass
class FileDownload:
    """One GET of a file's url_private_download on the fake."""

    file_id: str
    token: str | None


@dataclass
class SentRequest:
    """What the app under test answered to a request the driver sent."""

    status: int
    body: str
    json: Any
    elapsed: float


@dataclass
class SocketConnection:
    """One Socket Mode WebSocket connection."""

    ws: web.WebSocketResponse
    received: list[dict] = field(default_factory=list)
    sent: list[dict] = field(default_factory=list)  # envelopes the fake sent on it


class FakeSlack(LoopbackServer):
    def __init__(self) -> None:
        self.signing_secret = secrets.token_hex(16)
        self.bot_token = "xoxb-fake"
        self.app_token = "xapp-fake"
        self.bot_user_id = "U_BOT"
        self.bot_id = "B_BOT"
        self.team_id = "T1"
        self.team_domain = "fake"
        self.api_app_id = "A1"
        self.channel_id = "C1"
        self.users = {"U_ALICE": "alice", "U_BOB": "bob", "U_BOT": "imagebot"}
        self.admins: set[str] = {"U_ALICE"}  # workspace admins, as users.info reports them
        self.calls: list[SlackCall] = []
        self.messages: dict[tuple[str, str], SlackMessage] = {}
        self.views: dict[str, dict] = {}
        self.uploads: dict[str, SlackFile] = {}
        self.reactions: list[tuple[str, str, str]] = []
        self.sockets: list[SocketConnection] = []
        self.not_member: set[str] = set()  # channels the bot is not in: posting there fails
        self.update_faults: list[tuple[int, int]] = []  # (status, retry_after) for the next chat.update calls
        self.socket_acks: list[dict] = []
        self.downloads: list[FileDownload] = []
        self.base = ""
        self.api_base = ""
        self.socket_url = ""
        self._ids = itertools.count(1)
        self._ts = itertools.count(1)
        self._cond = asyncio.Condition()
        self._acks: dict[str, asyncio.Future[dict]] = {}
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        app.router.add_post("/response/{rid}", self._response_url)
        app.router.add_route("*", "/api/{method}", self._api)
        port = await self._serve(app)
        self.base = f"http://127.0.0.1:{port}"
        self.api_base = self.base + "/api/"
        self.socket_url = f"ws://127.0.0.1:{port}/socket"
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        for conn in self.sockets:
            if not conn.ws.closed:
                await conn.ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().close()

    # -- queries ----------------------------------------------------------------------------------

    def fail_updates(self, count: int, status: int, *, retry_after: int = 0) -> None:
        """Answer the next `count` chat.update calls with HTTP `status` (429 or a 5xx) instead of making them."""
        self.update_faults.extend([(status, retry_after)] * count)

    def calls_to(self, method: str) -> list[SlackCall]:
        return [c for c in self.calls if c.method == method]

    def channel_messages(self, channel: str | None = None, *, include_deleted: bool = False) -> list[SlackMessage]:
        channel = channel or self.channel_id
        return [m for m in self.messages.values() if m.channel == channel and (include_deleted or not m.deleted)]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(predicate), timeout)
            except TimeoutError:
                last = "\n".join(f"  {c.method} {c.args!r}"[:300] for c in self.calls[-10:])
                raise TimeoutError(f"condition not met within {timeout}s; last calls:\n{last}") from None

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def new_ts(self) -> str:
        n = next(self._ts)
        return f"{1700000000 + n // 10000}.{(n % 10000) * 100:06d}"

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    # -- Web API ----------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        files: list[tuple[str, bytes]] = []
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                args.update(body)
        elif request.method == "POST" and request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files.append((value.filename, value.file.read()))
                else:
                    args[key] = value
        for key in JSON_STRING_FIELDS:
            if isinstance(args.get(key), str):
                with contextlib.suppress(ValueError):
                    args[key] = json.loads(args[key])
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        call = SlackCall(method, args, token, files)
        self.calls.append(call)
        if method == "chat.update" and self.update_faults:
            status, retry_after = self.update_faults.pop(0)
            call.status = status
            await self._notify()
            if status == 429:
                headers = {"Retry-After": str(retry_after)}
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
            return web.json_response({"ok": False, "error": "internal_error"}, status=status)
        try:
            if not token:
                result: dict[str, Any] = {"ok": False, "error": "not_authed"}
            else:
                handler = self._methods().get(method)
                result = handler(call) if handler else {"ok": False, "error": "unknown_method"}
        finally:
            await self._notify()
        return web.json_response(result)

    def _methods(self) -> dict[str, Callable[[SlackCall], dict]]:
        return {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.delete": self._delete,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "reactions.add": self._reactions_add,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "files.delete": self._files_delete,
            "files.info": self._files_info,
            "files.list": self._files_list,
        }

    def _auth_test(self, call: SlackCall) -> dict:
        return {
            "ok": True,
            "url": f"https://{self.team_domain}.slack.com/",
            "team": "Fake Team",
            "user": self.users[self.bot_user_id],
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _connections_open(self, call: SlackCall) -> dict:
        if not (call.token or "").startswith("xapp-"):
            return {"ok": False, "error": "not_allowed_token_type"}
        return {"ok": True, "url": self.socket_url}

    def message_payload(self, message: SlackMessage) -> dict:
        payload: dict[str, Any] = {
            "type": "message",
            "ts": message.ts,
            "text": message.text or "",
            "user": message.user or self.bot_user_id,
        }
        if message.user is None:
            payload["bot_id"] = self.bot_id
        if message.blocks is not None:
            payload["blocks"] = message.blocks
        if message.thread_ts:
            payload["thread_ts"] = message.thread_ts
        if message.files:
            payload["files"] = [{"name": name, "size": len(data)} for name, data in message.files]
        if message.file_ids:
            payload["files"] = [self.file_object(self.uploads[file_id]) for file_id in message.file_ids]
        return payload

    # -- files users share ------------------------------------------------------------------------

    def share_file(
        self,
        name: str,
        data: bytes,
        *,
        mimetype: str | None = None,
        url: str | None = None,
        redirect_to: str | None = None,
    ) -> SlackFile:
        """A file a user uploaded; its type is guessed from the name as Slack does, unless given."""
        guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
        file = SlackFile(
            id=self.new_id("F"),
            filename=name,
            length=len(data),
            data=data,
            mimetype=mimetype or guessed,
            url=url,
            redirect_to=redirect_to,
        )
        self.uploads[file.id] = file
        return file

    def file_object(self, file: SlackFile) -> dict:
        """Slack's file object, as files.info, messages and file inputs carry it."""
        url = file.url or f"{self.base}/files-pri/{self.team_id}-{file.id}/{file.filename}"
        return {
            "id": file.id,
            "name": file.filename,
            "title": file.title or file.filename,
            "mimetype": file.mimetype,
            "filetype": file.filename.rsplit(".", 1)[-1].lower(),
            "size": len(file.data or b""),
            "url_private": url,
            "url_private_download": url,
            "is_external": False,
        }

    def user_message(
        self,
        files: list[SlackFile],
        *,
        text: str = "",
        user_id: str = "U_ALICE",
        channel_id: str = "C1",
        thread_ts: str | None = None,
    ) -> SlackMessage:
        """A message a user posted with shared files (in `thread_ts`, a reply), for a message shortcut to act on."""
        args = {"text": text, "thread_ts": thread_ts}
        message = self._create(channel_id, args, user=user_id, file_ids=[f.id for f in files])
        for file in files:
            file.shared, file.channel = True, channel_id
        return message

    def _files_info(self, call: SlackCall) -> dict:
        file = self.uploads.get(call.args.get("file", ""))
        if file is None or file.deleted:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": self.file_object(file)}

    def _files_list(self, call: SlackCall) -> dict:
        channel = call.args.get("channel")
        files = [f for f in self.uploads.values() if f.shared and not f.deleted and channel in (None, f.channel)]
        paging = {"count": 100, "total": len(files), "page": 1, "pages": 1}
        return {"ok": True, "files": [self.file_object(f) for f in files], "paging": paging}

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"].removeprefix(self.team_id + "-")
        auth = request.headers.get("Authorization", "")
        self.downloads.append(FileDownload(file_id, auth.removeprefix("Bearer ") if auth else None))
        await self._notify()
        file = self.uploads.get(file_id)
        if file is None or file.deleted:
            return web.Response(status=404)
        if auth != f"Bearer {self.bot_token}":  # Slack sends anyone else to its sign-in page
            return web.Response(status=302, headers={"Location": f"https://{self.team_domain}.slack.com/?redir=x"})
        if file.redirect_to:
            return web.Response(status=302, headers={"Location": file.redirect_to})
        return web.Response(body=file.data or b"", headers={"Content-Type": file.mimetype})

    def _create(self, channel: str, args: dict, **extra: Any) -> SlackMessage:
        message = SlackMessage(
            channel=channel,
            ts=self.new_ts(),
            text=args.get("text"),
            blocks=args.get("blocks"),
            thread_ts=args.get("thread_ts") or None,
            **extra,
        )
        message.updates.append(message.snapshot())
        self.messages[(channel, message.ts)] = message
        return message

    def dm_channel(self, user_id: str) -> str:
        """Return the id of the direct-message conversation between the app and a user."""
        return "D" + user_id.removeprefix("U")

    def _post_message(self, call: SlackCall) -> dict:
        channel = call.args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if channel in self.not_member:
            return {"ok": False, "error": "not_in_channel"}
        if channel.startswith("U"):  # a user id posts into the app's direct message with that user
            channel = self.dm_channel(channel)
        message = self._create(channel, call.args)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": self.message_payload(message)}

    def _find(self, call: SlackCall) -> SlackMessage | None:
        message = self.messages.get((call.args.get("channel", ""), call.args.get("ts", "")))
        return None if message is None or message.deleted else message

    def _update(self, call: SlackCall) -> dict:
        message = self._find(call)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if "text" in call.args:
            message.text = call.args["text"]
        if "blocks" in call.args:
            message.blocks = call.args["blocks"]
        message.updates.append(message.snapshot())
        return {
            "ok": True,
            "channel": message.channel,
            "ts": message.ts,
            "text": message.text,
            "message": self.message_payload(message),
        }

    def _post_ephemeral(self, call: SlackCall) -> dict:
        channel, user = call.args.get("channel"), call.args.get("user")
        if not channel or not user:
            return {"ok": False, "error": "invalid_arguments"}
        if channel in self.not_member:
            return {"ok": False, "error": "not_in_channel"}
        message = self._create(channel, call.args, ephemeral_user=user)
        return {"ok": True, "message_ts": message.ts}

    def _delete(self, call: SlackCall) -> dict:
        message = self._find(call)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.deleted = True
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _views_open(self, call: SlackCall) -> dict:
        view = call.args.get("view")
        if not isinstance(view, dict) or not call.args.get("trigger_id"):
            return {"ok": False, "error": "invalid_arguments"}
        view = {**view, "id": self.new_id("V"), "team_id": self.team_id, "app_id": self.api_app_id}
        self.views[view["id"]] = view
        return {"ok": True, "view": view}

    def _views_update(self, call: SlackCall) -> dict:
        view = call.args.get("view")
        view_id = call.args.get("view_id")
        if not view_id and call.args.get("external_id"):
            view_id = next((k for k, v in self.views.items() if v.get("external_id") == call.args["external_id"]), None)
        if not isinstance(view, dict) or view_id not in self.views:
            return {"ok": False, "error": "not_found"}
        self.views[view_id] = {**view, "id": view_id, "team_id": self.team_id, "app_id": self.api_app_id}
        return {"ok": True, "view": self.views[view_id]}

    def _reactions_add(self, call: SlackCall) -> dict:
        self.reactions.append((call.args.get("channel", ""), call.args.get("timestamp", ""), call.args.get("name", "")))
        return {"ok": True}

    def _conversations_info(self, call: SlackCall) -> dict:
        channel = call.args.get("channel", "")
        is_im = channel.startswith("D")
        return {
            "ok": True,
            "channel": {
                "id": channel,
                "name": channel.lower(),
                "is_channel": not is_im,
                "is_im": is_im,
                "is_private": False,
                "is_member": True,
            },
        }

    def _users_info(self, call: SlackCall) -> dict:
        user_id = call.args.get("user", "")
        if user_id not in self.users:
            return {"ok": False, "error": "user_not_found"}
        admin = user_id in self.admins
        return {
            "ok": True,
            "user": {**self._user(user_id), "is_admin": admin, "is_owner": False, "is_primary_owner": False},
        }

    def _get_upload_url(self, call: SlackCall) -> dict:
        filename = call.args.get("filename")
        if not filename or "length" not in call.args:
            return {"ok": False, "error": "invalid_arguments"}
        file = SlackFile(id=self.new_id("F"), filename=filename, length=int(call.args["length"]))
        self.uploads[file.id] = file
        return {"ok": True, "upload_url": f"{self.base}/upload/{file.id}", "file_id": file.id}

    async def _upload(self, request: web.Request) -> web.Response:
        file = self.uploads.get(request.match_info["file_id"])
        data = await request.read()
        self.calls.append(SlackCall("upload", {"file_id": request.match_info["file_id"]}, None, [("", data)]))
        if file is None:
            await self._notify()
            return web.Response(status=404, text="not found")
        file.data = data
        self.calls[-1].files = [(file.filename, data)]
        await self._notify()
        return web.Response(text="OK - " + str(len(data)))

    def _complete_upload(self, call: SlackCall) -> dict:
        items = call.args.get("files")
        if not isinstance(items, list) or not items:
            return {"ok": False, "error": "invalid_arguments"}
        uploaded: list[SlackFile] = []
        for item in items:
            file = self.uploads.get(item.get("id", ""))
            if file is None or file.data is None:
                return {"ok": False, "error": "file_not_found"}
            file.title = item.get("title") or file.filename
            uploaded.append(file)
        channel = call.args.get("channel_id") or (call.args.get("channels") or "").split(",")[0] or None
        if channel in self.not_member:
            return {"ok": False, "error": "not_in_channel"}
        if channel:
            args = {**call.args, "text": call.args.get("initial_comment")}
            self._create(channel, args, files=[(f.filename, f.data or b"") for f in uploaded])
        for file in uploaded:
            file.shared, file.channel = bool(channel), channel
        return {
            "ok": True,
            "files": [
                {"id": f.id, "name": f.filename, "title": f.title, "size": len(f.data or b""), "channels": [channel]}
                for f in uploaded
            ],
        }

    def _files_delete(self, call: SlackCall) -> dict:
        file = self.uploads.get(call.args.get("file", ""))
        if file is None or file.deleted:
            return {"ok": False, "error": "file_not_found"}
        file.deleted = True
        # A message whose files are all deleted is gone from the channel, as in Slack.
        for message in self.messages.values():
            names = {name for name, _ in message.files}
            if file.filename in names and all(
                f.deleted for f in self.uploads.values() if f.filename in names and f.channel == message.channel
            ):
                message.deleted = True
        return {"ok": True}

    async def _response_url(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"raw": text}
        args = body if isinstance(body, dict) else {"body": body}
        self.calls.append(SlackCall("response_url", {**args, "response_id": request.match_info["rid"]}))
        await self._notify()
        return web.json_response({"ok": True})

    # -- Socket Mode ------------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = SocketConnection(ws)
        self.sockets.append(conn)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len([c for c in self.sockets if not c.ws.closed]),
                "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.api_app_id},
            }
        )
        await self._notify()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            with contextlib.suppress(ValueError):
                data = json.loads(msg.data)
                conn.received.append(data)
                envelope_id = data.get("envelope_id") if isinstance(data, dict) else None
                if envelope_id:
                    self.socket_acks.append(data)
                    future = self._acks.pop(envelope_id, None)
                    if future is not None and not future.done():
                        future.set_result(data)
                await self._notify()
        return ws

    async def wait_socket(self, count: int = 1, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: len(self.sockets) >= count, timeout)

    async def socket_send(
        self, envelope_type: str, payload: dict, *, accepts_response_payload: bool | None = None, timeout: float = 5.0
    ) -> dict:
        live = [c for c in self.sockets if not c.ws.closed]
        if not live:
            raise RuntimeError("no Socket Mode connection is open")
        if accepts_response_payload is None:
            accepts_response_payload = envelope_type != "events_api"
        envelope_id = secrets.token_hex(8)
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if envelope_type == "events_api":
            envelope["retry_attempt"] = 0
            envelope["retry_reason"] = ""
        live[-1].sent.append(envelope)
        await live[-1].ws.send_json(envelope)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._acks.pop(envelope_id, None)

    # -- payload builders -------------------------------------------------------------------------

    def _user(self, user_id: str) -> dict:
        name = self.users.get(user_id, user_id.lower())
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _team(self) -> dict:
        return {"id": self.team_id, "domain": self.team_domain}

    def new_response_url(self) -> str:
        return f"{self.base}/response/{self.new_id('R')}"

    def new_trigger_id(self) -> str:
        return f"{next(self._ids)}.{secrets.token_hex(6)}"

    def slash_payload(
        self, command: str = "/imagine", text: str = "", user_id: str = "U_ALICE", channel_id: str = "C1"
    ) -> dict:
        return {
            "token": "verification-token",
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_id.lower(),
            "user_id": user_id,
            "user_name": self.users.get(user_id, user_id.lower()),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "response_url": self.new_response_url(),
            "trigger_id": self.new_trigger_id(),
        }

    def _stored_message(self, channel_id: str, message_ts: str) -> dict:
        message = self.messages.get((channel_id, message_ts))
        if message is None:
            return {"type": "message", "ts": message_ts, "text": ""}
        return self.message_payload(message)

    def block_action_payload(
        self, action_id: str, value: str, *, user_id: str = "U_ALICE", channel_id: str = "C1", message_ts: str = ""
    ) -> dict:
        message = self._stored_message(channel_id, message_ts)
        block_id = "b0"
        for block in message.get("blocks") or []:
            if any(e.get("action_id") == action_id for e in block.get("elements") or [] if isinstance(e, dict)):
                block_id = block.get("block_id", block_id)
                break
            accessory = block.get("accessory") or {}
            if accessory.get("action_id") == action_id:
                block_id = block.get("block_id", block_id)
                break
        stored = self.messages.get((channel_id, message_ts))
        ephemeral = bool(stored and stored.ephemeral_user)
        container = {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": ephemeral}
        if stored and stored.thread_ts:
            container["thread_ts"] = stored.thread_ts  # undocumented, but sent for a message in a thread
        return {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": self.api_app_id,
            "token": "verification-token",
            "container": container,
            "trigger_id": self.new_trigger_id(),
            "team": self._team(),
            "channel": {"id": channel_id, "name": channel_id.lower()},
            # An ephemeral message is not sent back: the app cannot read it either.
            **({} if ephemeral else {"message": message}),
            "response_url": self.new_response_url(),
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": value,
                    "action_ts": str(time.time()),
                }
            ],
        }

    def global_shortcut_payload(self, callback_id: str, *, user_id: str = "U_ALICE") -> dict:
        return {
            "type": "shortcut",
            "token": "verification-token",
            "action_ts": str(time.time()),
            "team": self._team(),
            "user": self._user(user_id),
            "callback_id": callback_id,
            "trigger_id": self.new_trigger_id(),
        }

    def message_shortcut_payload(
        self, callback_id: str, *, user_id: str = "U_ALICE", channel_id: str = "C1", message_ts: str = ""
    ) -> dict:
        return {
            "type": "message_action",
            "token": "verification-token",
            "action_ts": str(time.time()),
            "team": self._team(),
            "user": self._user(user_id),
            "channel": {"id": channel_id, "name": channel_id.lower()},
            "callback_id": callback_id,
            "trigger_id": self.new_trigger_id(),
            "message_ts": message_ts,
            "message": self._stored_message(channel_id, message_ts),
            "response_url": self.new_response_url(),
        }

    def view_submission_payload(
        self,
        callback_id: str,
        values: dict[str, dict[str, dict]],
        *,
        user_id: str = "U_ALICE",
        private_metadata: str = "",
    ) -> dict:
        stored = next((v for v in reversed(self.views.values()) if v.get("callback_id") == callback_id), None)
        view = {
            "id": stored["id"] if stored else self.new_id("V"),
            "team_id": self.team_id,
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "blocks": (stored or {}).get("blocks", []),
            "title": (stored or {}).get("title", {"type": "plain_text", "text": "Modal"}),
            "state": {"values": values},
            "hash": secrets.token_hex(6),
            "app_id": self.api_app_id,
            "bot_id": self.bot_id,
        }
        return {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user_id),
            "api_app_id": self.api_app_id,
            "token": "verification-token",
            "trigger_id": self.new_trigger_id(),
            "view": view,
            "response_urls": [],
        }

    def reaction_event(
        self, reaction: str, *, user_id: str = "U_ALICE", channel_id: str = "C1", message_ts: str = ""
    ) -> dict:
        """Return the ``reaction_added`` event of a user reacting to a message (for ``send_event``)."""
        message = self.messages.get((channel_id, message_ts))
        return {
            "type": "reaction_added",
            "user": user_id,
            "reaction": reaction,
            "item": {"type": "message", "channel": channel_id, "ts": message_ts},
            "item_user": self.bot_user_id if message is not None else "U_SOMEONE",
        }

    def event_envelope(self, event: dict) -> dict:
        return {
            "token": "verification-token",
            "team_id": self.team_id,
            "api_app_id": self.api_app_id,
            "event": {"event_ts": str(time.time()), **event},
            "type": "event_callback",
            "event_id": self.new_id("Ev"),
            "event_time": int(time.time()),
            "authorizations": [
                {"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True, "is_enterprise_install": False}
            ],
        }

    # -- HTTP-mode driver -------------------------------------------------------------------------

    def sign(self, body: str, *, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        key = (self.signing_secret if secret is None else secret).encode()
        digest = hmac.new(key, f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + digest}

    async def post_signed(
        self, url: str, body: str, content_type: str, *, timestamp: int | None = None, secret: str | None = None
    ) -> SentRequest:
        assert self._session is not None, "FakeSlack is not started"
        headers = {"Content-Type": content_type, **self.sign(body, timestamp=timestamp, secret=secret)}
        started = time.monotonic()
        async with self._session.post(url, data=body.encode(), headers=headers) as resp:
            text = await resp.text()
        elapsed = time.monotonic() - started
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return SentRequest(resp.status, text, parsed, elapsed)

    async def _send_form(self, url: str, form: dict, timestamp: int | None, secret: str | None) -> SentRequest:
        body = urlencode(form)
        return await self.post_signed(
            url, body, "application/x-www-form-urlencoded", timestamp=timestamp, secret=secret
        )

    async def _send_interactive(
        self, url: str, payload: dict, timestamp: int | None, secret: str | None
    ) -> SentRequest:
        return await self._send_form(url, {"payload": json.dumps(payload)}, timestamp, secret)

    async def send_slash(
        self,
        url: str,
        command: str = "/imagine",
        text: str = "",
        user_id: str = "U_ALICE",
        channel_id: str = "C1",
        *,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> SentRequest:
        return await self._send_form(url, self.slash_payload(command, text, user_id, channel_id), timestamp, secret)

    async def send_block_action(
        self,
        url: str,
        action_id: str,
        value: str,
        *,
        user_id: str = "U_ALICE",
        channel_id: str = "C1",
        message_ts: str = "",
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> SentRequest:
        payload = self.block_action_payload(
            action_id, value, user_id=user_id, channel_id=channel_id, message_ts=message_ts
        )
        return await self._send_interactive(url, payload, timestamp, secret)

    async def send_global_shortcut(
        self,
        url: str,
        callback_id: str,
        *,
        user_id: str = "U_ALICE",
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> SentRequest:
        return await self._send_interactive(
            url, self.global_shortcut_payload(callback_id, user_id=user_id), timestamp, secret
        )

    async def send_message_shortcut(
        self,
        url: str,
        callback_id: str,
        *,
        user_id: str = "U_ALICE",
        channel_id: str = "C1",
        message_ts: str = "",
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> SentRequest:
        payload = self.message_shortcut_payload(
            callback_id, user_id=user_id, channel_id=channel_id, message_ts=message_ts
        )
        return await self._send_interactive(url, payload, timestamp, secret)

    async def send_view_submission(
        self,
        url: str,
        callback_id: str,
        values: dict[str, dict[str, dict]],
        *,
        user_id: str = "U_ALICE",
        private_metadata: str = "",
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> SentRequest:
        payload = self.view_submission_payload(callback_id, values, user_id=user_id, private_metadata=private_metadata)
        return await self._send_interactive(url, payload, timestamp, secret)

    async def send_event(
        self, url: str, event: dict, *, timestamp: int | None = None, secret: str | None = None
    ) -> SentRequest:
        body = json.dumps(self.event_envelope(event))
        return await self.post_signed(url, body, "application/json", timestamp=timestamp, secret=secret)

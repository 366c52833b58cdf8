"""The gallery's pages on aiohttp.web: a user's grid, a generation, its images and actions; a server's showcase.

Every page under ``/g/<token>/`` is its token's owner's: the token is checked (and rate
limited) before any handler runs, every read goes through the owner-scoped read model,
and an id that is not the owner's is a 404 like an id that does not exist. Actions call
the same `ImageService` use cases as the chat buttons, so policy, quotas, owner rules and
audit are the chat's.

Pages under ``/s/<token>/`` are a server's showcase (`bot.showcase`): read only, its token
good while the server's showcase stays on, and every read through the showcase-scoped read
model, so an image that is not starred, not the server's or flagged is a 404 there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest, FileField
from aiohttp.web_response import StreamResponse
from multidict import MultiDictProxy

from adapters.gallery._export import write_export
from adapters.gallery._links import BadLink, ExpiredLink, Links, Owner, Server
from bot.actions import BUTTON_LOOKS, PAN_ACTIONS, ButtonAction, format_image_ref, format_ref
from bot.catalog import Catalog
from bot.chat import REMIXABLE, ChatFlow, retract_in_chat, show_in_chat
from bot.errors import BotError, NotAllowed, NotFound, QueueFull, QuotaReached, RateLimited
from bot.gallery import PAGE_SIZE, GalleryQuery
from bot.history import FINAL, Generation
from bot.jobs import Requester
from bot.pngmeta import parameters_text
from bot.ports import GalleryStore
from bot.regions import MAX_PARTS, REGION_STRENGTH
from bot.service import ImageService
from bot.summary import read_as_written, result_fields

__all__ = ["RedactedAccessLogger", "create_app"]

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_TOKEN = r"[A-Za-z0-9_\-\.]{20,400}"
# 18 digits stay below SQLite's 2^63: a longer id is no id, and the router answers 404 itself.
_ID = r"[0-9]{1,18}"
_MAX_ID = 2**63 - 1
_ACTIONS = (
    "reroll",
    "refine",
    "vary",
    "upscale",
    "zoom",
    "pan",
    "square",
    "remix",
    "region",
    "delete",
    "star",
    "unstar",
)
# A showcase link is shared by a whole server, so it gets this many times a personal link's rate.
_SHOWCASE_RATE = 10
_MAX_SEARCH = 200
# The most images ticked on the grid that one download or delete takes: a few pages' worth.
_MOST_PICKED = 100

# No inline script or style anywhere: the pages load one stylesheet and one script of our own.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The token is in the path: no page may send it on in a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

# The plain pages for what went wrong: a title and a sentence, never a traceback.
_PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("Bad request", "That address or search could not be read."),
    403: ("Not allowed", "That form was stale or not sent from this page; reload the page and try again."),
    404: ("Not found", "There is nothing here."),
    405: ("Not allowed", "That does not work this way."),
    410: ("This link no longer works", "It has expired or was revoked. Ask the bot for a new one with /gallery."),
    413: ("Too large", "That request was too large."),
    429: ("Slow down", "Too many requests from this link; wait a minute and try again."),
    500: ("Something went wrong", "It has been logged."),
}


def showcase_gone(platform: str) -> str:
    """Return the sentence of a showcase link that no longer works, in its platform's words."""
    where, ask = ("workspace", "/imagine gallery showcase") if platform == "slack" else ("server", "/gallery showcase")
    return f"This {where}'s showcase was turned off or given a new link; ask the bot for the current one with {ask}."


def redact(path: str) -> str:
    """Return a request path with its token cut out, for the logs."""
    return re.sub(r"/([gs])/[^/]+", r"/\1/…", path)


class RedactedAccessLogger(AbstractAccessLogger):
    """aiohttp's access log without tokens (they are in the path) or query strings (users' search words)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Write one line: method, redacted path, status, seconds."""
        self.logger.info("%s %s %d %.3fs", request.method, redact(request.path), response.status, time)


class _Refused(Exception):
    """A request a page answers with its own sentence (a status and one line), raised from a helper."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence


# What the link check leaves on a request for the handlers.
OWNER = web.RequestKey("owner", Owner)
SERVER = web.RequestKey("server", Server)
CSRF = web.RequestKey("csrf", str)
ROOT = web.RequestKey("root", str)


class _Limiter:
    """A token bucket per link: `rate` requests a minute, in bursts of up to `rate`."""

    def __init__(self, rate: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        if len(self._buckets) > 10_000:
            # Forget links idle for a minute or more: their buckets are full again anyway.
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        tokens, at = self._buckets.get(key, (float(self._rate), now))
        tokens = min(float(self._rate), tokens + (now - at) * self._rate / 60)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True


@dataclass(frozen=True, slots=True)
class _Card:
    """What a page shows of one generation."""

    id: int
    ref: str
    prompt: str
    status: str
    kind: str
    fields: list[tuple[str, str]]
    images: list[int]
    parent_id: int | None
    created: str
    flagged: bool
    starred: bool
    finished: bool
    error: str | None
    command: str | None  # the /imagine text that makes it again; None where no /imagine does


def _kind(generation: Generation) -> str:
    """Return what made it: the action, and image-to-image, inpaint or outpaint when the request says so."""
    request = generation.request
    kind = generation.action
    if request.outpaint is not None:
        return f"{kind} · outpaint"
    if request.mask_image is not None:
        return f"{kind} · inpaint"
    if request.init_image is not None and kind not in ("vary", "upscale"):
        return f"{kind} · image-to-image"
    return kind


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _card(generation: Generation, catalog: Catalog, commands: Mapping[int, str | None] | None = None) -> _Card:
    return _Card(
        id=generation.id,
        ref=format_ref(generation.id),
        prompt=generation.request.prompt,
        status=generation.status,
        kind=_kind(generation),
        fields=result_fields(generation, catalog),
        images=[image.index for image in generation.images],
        parent_id=generation.parent_id,
        created=_when(generation.created_at),
        flagged=any(image.nsfw for image in generation.images),
        starred=generation.starred,
        finished=generation.status in FINAL,
        error=generation.error,
        command=(commands or {}).get(generation.id),
    )


def _remix_label(action: ButtonAction) -> str:
    """Return a remix button's words: the chat button's (a pan's arrow says where)."""
    emoji, words = BUTTON_LOOKS[action]
    return f"{emoji} {words or 'Pan ' + PAN_ACTIONS[action]}"


def _image_number(text: object, generation: Generation) -> int:
    """Read which image of a result a page or form acts on (1 when absent); any other value is a bad request."""
    if text is None or text == "":
        return 1
    if not isinstance(text, str) or not re.fullmatch(r"[1-9]", text) or int(text) > max(len(generation.images), 1):
        raise web.HTTPBadRequest()
    return int(text)


def _author(generation: Generation) -> Requester:
    """Return who acts on a generation from the gallery: its author where it was made (that server's rules apply)."""
    return Requester(
        generation.platform,
        generation.user_id,
        workspace=generation.workspace,
        channel=generation.channel,
        direct=generation.workspace is None,
    )


def _picked(form: MultiDictProxy[str | bytes | bytearray | FileField]) -> list[int]:
    """Read the ids ticked on the grid: each once, at most `_MOST_PICKED`; none, or one that is no id, is refused."""
    ids = form.getall("id", [])
    if not ids:
        raise _Refused(400, "Tick the images to download or delete first.")
    if len(ids) > _MOST_PICKED:
        raise _Refused(400, f"That is {len(ids)} images; tick at most {_MOST_PICKED} at once.")
    if not all(isinstance(text, str) and re.fullmatch(_ID, text) and 0 < int(text) <= _MAX_ID for text in ids):
        raise web.HTTPBadRequest()
    return list(dict.fromkeys(int(str(text)) for text in ids))


def _deleted(text: str | None) -> int | None:
    """Read how many images the last delete of several took (the grid's notice); anything else is a bad request."""
    if text is None or text == "":
        return None
    if not re.fullmatch(r"[0-9]{1,3}", text):
        raise web.HTTPBadRequest()
    return int(text)


def _cursor(text: str | None) -> int | None:
    """Read a page cursor (the last id shown); anything but a whole number in SQLite's range is a bad request."""
    if text is None or text == "":
        return None
    if not re.fullmatch(r"[0-9]{1,19}", text) or not 0 < int(text) <= _MAX_ID:
        raise web.HTTPBadRequest()
    return int(text)


def _day(text: str | None) -> float | None:
    """Read a YYYY-MM-DD date as the start of that UTC day; anything else is a bad request."""
    if not text:
        return None
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()
    raise web.HTTPBadRequest()


class _Pages:
    def __init__(
        self, service: ImageService, store: GalleryStore, links: Links, prefix: str, templates: jinja2.Environment
    ) -> None:
        self._service = service
        self._store = store
        self._links = links
        self._prefix = prefix
        self._templates = templates
        self._exporting: set[Owner] = set()

    def render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        html = self._templates.get_template(name).render(static=f"{self._prefix}/static", **context)
        return web.Response(text=html, status=status, content_type="text/html")

    def problem(self, status: int, sentence: str | None = None) -> web.Response:
        title, default = _PROBLEMS.get(status, _PROBLEMS[400 if status < 500 else 500])
        return self.render("problem.html", status, title=title, sentence=sentence or default)

    # -- pages ------------------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.Response:
        return self.render("problem.html", title="imagebot gallery", sentence="Ask the bot for your link: /gallery.")

    async def grid(self, request: web.Request) -> web.Response:
        owner = request[OWNER]
        query = request.query
        words = query.get("q", "")
        model = query.get("model", "") or None
        lora = query.get("lora", "") or None
        sort = query.get("sort", "new")
        starred = query.get("starred", "")
        names_too_long = any(name is not None and len(name) > 100 for name in (model, lora))
        if len(words) > _MAX_SEARCH or names_too_long or sort not in ("new", "old") or starred not in ("", "1"):
            raise web.HTTPBadRequest()
        since, until = _day(query.get("from")), _day(query.get("to"))
        page = GalleryQuery(
            words=words,
            model=model,
            lora=lora,
            since=since,
            until=None if until is None else until + 86400,  # "to" takes that whole day
            starred=starred == "1",
            oldest_first=sort == "old",
            after=_cursor(query.get("after")),
            limit=PAGE_SIZE + 1,  # one more tells whether there is a next page
        )
        generations = await self._store.page(owner.platform, owner.user_id, page)
        shown = generations[:PAGE_SIZE]
        commands = await self._commands(owner, shown)
        kept = {key: value for key, value in query.items() if key not in ("after", "deleted") and value}
        more = None
        if len(generations) > PAGE_SIZE:
            more = "?" + urlencode({**kept, "after": str(shown[-1].id)})
        return self.render(
            "grid.html",
            root=request[ROOT],
            cards=[_card(generation, self._service.catalog, commands) for generation in shown],
            models=await self._store.models(owner.platform, owner.user_id),
            loras=await self._store.loras(owner.platform, owner.user_id),
            search={key: query.get(key, "") for key in ("q", "model", "lora", "from", "to", "starred")},
            sort=sort,
            more=more,
            first="?" + urlencode(kept) if page.after is not None else None,
            csrf=request[CSRF],
            picking=True,
            deleted=_deleted(query.get("deleted")),
        )

    async def detail(self, request: web.Request) -> web.Response:
        generation = await self._own(request)
        owner = request[OWNER]
        children = await self._store.children(owner.platform, owner.user_id, generation.id)
        offered = self._service.result_actions(generation.request)
        chosen = _image_number(request.query.get("image"), generation)
        source = await self._service.made_from(generation) if generation.images else None
        return self.render(
            "detail.html",
            chosen=chosen,
            # Before and after, one over the other, for a Vary or Upscale: the same framing.
            compare=None if source is None else (format_image_ref(*source), *source),
            root=request[ROOT],
            card=_card(generation, self._service.catalog, await self._commands(owner, [generation])),
            negative=generation.request.negative_prompt,
            parameters=parameters_text(generation.request, generation.seed),
            warnings=generation.warnings,
            read_as_written=read_as_written(generation.request),
            children=[_card(child, self._service.catalog) for child in children],
            posted=request.query.get("posted") == "1" and generation.parent_id is not None,
            csrf=request[CSRF],
            # The chats' result buttons: none that could only be refused.
            offered=offered,
            pans=[(PAN_ACTIONS[action], BUTTON_LOOKS[action][0]) for action in offered if action in PAN_ACTIONS],
            # Remix (Midjourney's): the prompt re-worded, then one of these runs on the image.
            remixes=[(action, _remix_label(action)) for action in offered if action in REMIXABLE],
            # The buttons read as in chat.
            words={action: words for action, (_, words) in BUTTON_LOOKS.items()},
        )

    async def region(self, request: web.Request) -> web.Response:
        """Show Vary (Region)'s editor: one image of a result, to select the parts to make again, and its prompt."""
        generation = await self._own(request)
        chosen = _image_number(request.query.get("image"), generation)
        if generation.status != "done" or "region" not in self._service.result_actions(generation.request):
            sentence = f"Vary (Region) cannot run on {format_image_ref(generation.id, chosen - 1)} here."
            return self.problem(400, sentence)
        image = generation.images[chosen - 1]
        saved = await self._service.user_settings.get(_author(generation))
        return self.render(
            "region.html",
            strength=saved.get("vary_region", REGION_STRENGTH),
            root=request[ROOT],
            id=generation.id,
            ref=format_image_ref(generation.id, chosen - 1),
            image=image,
            several=len(generation.images) > 1,
            chosen=chosen,
            prompt=generation.request.prompt,
            most=MAX_PARTS,
            csrf=request[CSRF],
        )

    async def status(self, request: web.Request) -> web.Response:
        generation = await self._own(request)
        final = generation.status in FINAL
        return web.json_response({"id": generation.id, "status": generation.status, "final": final})

    async def showcase(self, request: web.Request) -> web.Response:
        """Show a server's showcase: its starred images, newest first, a page at a time."""
        server = request[SERVER]
        after = _cursor(request.query.get("after"))
        generations = await self._store.showcase(server.platform, server.workspace, after=after, limit=PAGE_SIZE + 1)
        shown = generations[:PAGE_SIZE]
        more = f"?after={shown[-1].id}" if len(generations) > PAGE_SIZE else None
        return self.render(
            "showcase.html",
            root=request[ROOT],
            cards=[_card(g, self._service.catalog) for g in shown],
            more=more,
            first=after is not None,
            community="workspace" if server.platform == "slack" else "server",
        )

    async def thumbnail(self, request: web.Request) -> web.Response:
        generation = await self._visible(request)
        image = self._image(generation, request)
        owner = Owner(generation.platform, generation.user_id)
        data = await self._links.thumbnail(
            owner, generation.id, image.index, lambda: self._service.read_image(image.path)
        )
        return web.Response(body=data, content_type="image/webp", headers={"Cache-Control": "private, max-age=86400"})

    async def image(self, request: web.Request) -> web.Response:
        """Serve the stored PNG's bytes as they are, so its parameters text chunk comes along."""
        generation = await self._visible(request)
        image = self._image(generation, request)
        try:
            data = await self._service.read_image(image.path)
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        headers = {"Cache-Control": "private, max-age=86400"}
        if request.query.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="imagebot-{generation.id}-{image.index}.png"'
        return web.Response(body=data, content_type="image/png", headers=headers)

    async def export(self, request: web.Request) -> web.StreamResponse:
        """Send all the owner's images and a record of each generation as one ZIP, made while it is sent."""
        return await self._export(request, None)

    async def _export(self, request: web.Request, chosen: Sequence[Generation] | None) -> web.StreamResponse:
        """Send the owner's images (of the `chosen` generations alone, when given) and their records as one ZIP."""
        owner = request[OWNER]
        if owner in self._exporting:  # one at a time a user: each reads every image
            return self.problem(429, "Your ZIP is being made already; wait for that download to finish.")
        self._exporting.add(owner)
        response = web.StreamResponse(
            headers={"Content-Type": "application/zip", "Content-Disposition": 'attachment; filename="imagebot.zip"'}
        )
        try:
            await response.prepare(request)
            await write_export(
                response.write,
                self._store,
                owner.platform,
                owner.user_id,
                read=self._service.read_image,
                commands=lambda generations: self._commands(owner, generations),
                chosen=chosen,
            )
            await response.write_eof()
        except Exception as error:
            # Headers are sent: no error page can follow. Cut the connection, so the file is not taken for whole.
            if not isinstance(error, ConnectionError):
                log.exception("gallery export failed")
            if request.transport is not None:
                request.transport.close()
        finally:
            self._exporting.discard(owner)
        return response

    async def act(self, request: web.Request) -> web.Response:
        """Run a card's action as the chat button would, post it in the original's chat, and show its page."""
        form = await self._form(request)
        if form is None:
            return self.problem(403)
        generation = await self._own(request)
        who = _author(generation)
        action = request.match_info["action"]
        root = request[ROOT]
        try:
            if action == "delete":
                await self._service.delete(who, generation.id)
                # Read before the delete, `generation` still names the chat message that showed it.
                await retract_in_chat(self._service, generation)
                raise web.HTTPSeeOther(f"{root}/")
            if action in ("star", "unstar"):
                await self._service.star(who, generation.id, starred=action == "star")
                raise web.HTTPSeeOther(f"{root}/i/{generation.id}")
            number = _image_number(form.get("image"), generation)
            if action == "region":
                selection, words, strength = form.get("regions"), form.get("prompt"), form.get("strength", "")
                if not isinstance(selection, str) or not isinstance(words, str) or not isinstance(strength, str):
                    raise web.HTTPBadRequest()
                if strength and not re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,6})?", strength):
                    raise web.HTTPBadRequest()
                # The prompt as it was is no remix: only new words are checked as one.
                prompt = None if words.strip() == generation.request.prompt.strip() else words
                ref = format_image_ref(generation.id, number - 1)
                job = await self._service.vary_region(
                    who, ref, selection, prompt, float(strength) if strength else None
                )
            elif action == "remix":
                do, words = form.get("do"), form.get("prompt")
                if not isinstance(do, str) or not isinstance(words, str):
                    raise web.HTTPBadRequest()
                job = (await ChatFlow(self._service).remix(who, do, generation.id, number - 1, words)).job
            else:
                image = format_image_ref(generation.id, number - 1) if number > 1 else generation.id
                job = await self._run(action, who, generation.id, image, form)
        except (NotFound, NotAllowed):
            return self.problem(404)
        except (QueueFull, RateLimited, QuotaReached) as error:
            return self.problem(429, str(error))
        except BotError as error:
            return self.problem(400, str(error))
        # The result shows here and, where that chat runs in this process, in the chat of the original.
        posted = await show_in_chat(self._service, job)
        raise web.HTTPSeeOther(f"{root}/i/{job.id}" + ("?posted=1" if posted else ""))

    async def delete_picked(self, request: web.Request) -> web.Response:
        """Delete the images ticked on the grid, as each one's Delete would, and show the grid again."""
        form = await self._form(request)
        if form is None:
            return self.problem(403)
        generations = await self._owned(request, _picked(form))
        for generation in generations:
            await self._service.delete(_author(generation), generation.id)
            await retract_in_chat(self._service, generation)
        raise web.HTTPSeeOther(f"{request[ROOT]}/?deleted={len(generations)}")

    async def export_picked(self, request: web.Request) -> web.StreamResponse:
        """Send the images ticked on the grid and their records as one ZIP."""
        form = await self._form(request)
        if form is None:
            return self.problem(403)
        return await self._export(request, await self._owned(request, _picked(form)))

    async def _owned(self, request: web.Request, ids: Sequence[int]) -> list[Generation]:
        """Return the owner's generations of `ids`; a 404 if any is not theirs, as for one image, so nothing is done."""
        owner = request[OWNER]
        generations = []
        for generation_id in ids:
            generation = await self._store.get(owner.platform, owner.user_id, generation_id)
            if generation is None:
                raise web.HTTPNotFound()
            generations.append(generation)
        return generations

    async def _form(self, request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField] | None:
        """Return a posted form if it carries this link's CSRF value, else None (a stale or forged form)."""
        form = await request.post()
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(sent, request[CSRF]):
            return None
        return form

    async def _run(
        self, action: str, who: Requester, generation_id: int, image: int | str, form: Mapping[str, Any]
    ) -> Any:
        """Run `action` on a generation; Vary, Zoom Out, pan, Make Square and Upscale on its `image` (``#12.2``)."""
        if action == "reroll":
            return await self._service.reroll(who, generation_id)
        if action == "refine":
            percent = str(form.get("percent", ""))
            if not re.fullmatch(r"[0-9]{1,2}", percent) or not 1 <= int(percent) <= 99:
                raise web.HTTPBadRequest()
            return await self._service.refine(who, generation_id, int(percent))
        if action == "vary":
            kind = form.get("kind")
            if kind not in ("subtle", "strong"):
                raise web.HTTPBadRequest()
            return await self._service.vary(who, image, "strong" if kind == "strong" else "subtle")
        if action == "zoom":
            factor = form.get("factor", "1.5")
            if factor not in ("1.5", "2"):
                raise web.HTTPBadRequest()
            return await self._service.zoom(who, image, float(factor))
        if action == "pan":
            direction = next((d for d in PAN_ACTIONS.values() if d == form.get("direction")), None)
            if direction is None:
                raise web.HTTPBadRequest()
            return await self._service.pan(who, image, direction)
        if action == "square":
            return await self._service.square(who, image)
        factor = form.get("factor", "2")
        if factor not in ("2", "4"):
            raise web.HTTPBadRequest()
        return await self._service.upscale(who, image, 4 if factor == "4" else 2)

    async def _commands(self, owner: Owner, generations: Sequence[Generation]) -> dict[int, str | None]:
        """Return the /imagine text of each generation, its input images named as the owner's earlier images."""
        return await self._service.imagine_texts(owner.platform, owner.user_id, generations)

    async def _visible(self, request: web.Request) -> Generation:
        """Return the generation the path names as the link shows it: the owner's own, or in the server's showcase."""
        server = request.get(SERVER)
        if server is None:
            return await self._own(request)
        generation = await self._store.showcased(server.platform, server.workspace, int(request.match_info["id"]))
        if generation is None:
            raise web.HTTPNotFound()
        return generation

    async def _own(self, request: web.Request) -> Generation:
        """Return the generation the path names if it is the token's owner's; a 404 otherwise, whoever's it is."""
        owner = request[OWNER]
        generation = await self._store.get(owner.platform, owner.user_id, int(request.match_info["id"]))
        if generation is None:
            raise web.HTTPNotFound()
        return generation

    @staticmethod
    def _image(generation: Generation, request: web.Request) -> Any:
        index = int(request.match_info["index"])
        for image in generation.images:
            if image.index == index:
                return image
        raise web.HTTPNotFound()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    *,
    service: ImageService,
    store: GalleryStore,
    links: Links,
    prefix: str = "",
    rate_limit: int = 120,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """Return the gallery's aiohttp application.

    Args:
        service: the image service the actions call.
        store: the gallery's read model.
        links: checks tokens, derives CSRF values, keeps thumbnails.
        prefix: the path the gallery is served under (the base URL's path), without a trailing slash.
        rate_limit: requests one link may make per minute.
        clock: a monotonic clock for the rate limit.
    """
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    pages = _Pages(service, store, links, prefix, templates)
    limiter = _Limiter(rate_limit, clock)
    showcase_limiter = _Limiter(rate_limit * _SHOWCASE_RATE, clock)

    @web.middleware
    async def plain_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turn every failure into a plain page: a status, a title and a sentence, never a traceback."""
        try:
            return await handler(request)
        except _Refused as error:
            return pages.problem(error.status, error.sentence)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return pages.problem(error.status)
        except Exception:
            log.exception("gallery page %s %s failed", request.method, redact(request.path))
            return pages.problem(500)

    @web.middleware
    async def owner_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Check the link of every page under /g/<token>/ or /s/<token>/ before its handler runs."""
        token = request.match_info.get("token")
        showcase = request.match_info.get("showcase")
        if showcase is not None:
            return await server_only(request, handler, showcase)
        if token is None:
            return await handler(request)
        if not limiter.allow(token):
            return pages.problem(429)
        try:
            request[OWNER] = await links.owner(token)
        except BadLink:
            return pages.problem(404)
        except ExpiredLink:
            return pages.problem(410)
        request[CSRF] = links.csrf(token)
        request[ROOT] = f"{prefix}/g/{token}"
        return await handler(request)

    async def server_only(request: web.Request, handler: Handler, token: str) -> web.StreamResponse:
        """Check a showcase link: ours, and the server's showcase still on since the link was made."""
        if not showcase_limiter.allow(token):
            return pages.problem(429)
        try:
            server = links.server(token)
        except BadLink:
            return pages.problem(404)
        policy = await service.admin.server_policy(server.platform, server.workspace)
        if policy.showcase_since != server.since:
            return pages.problem(410, showcase_gone(server.platform))
        request[SERVER] = server
        request[ROOT] = f"{prefix}/s/{token}"
        return await handler(request)

    async def secure(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")

    app = web.Application(middlewares=[plain_errors, owner_only], client_max_size=64 * 1024)
    app.on_response_prepare.append(secure)
    base = f"{prefix}/g/{{token:{_TOKEN}}}"
    app.router.add_get(f"{prefix}/", pages.home)
    app.router.add_get(f"{base}/", pages.grid)
    app.router.add_get(f"{base}/i/{{id:{_ID}}}", pages.detail)
    app.router.add_get(f"{base}/export.zip", pages.export, allow_head=False)  # a HEAD would read every image
    app.router.add_post(f"{base}/export.zip", pages.export_picked)
    app.router.add_post(f"{base}/delete", pages.delete_picked)
    app.router.add_get(f"{base}/i/{{id:{_ID}}}/status", pages.status)
    app.router.add_get(f"{base}/i/{{id:{_ID}}}/region", pages.region)
    app.router.add_post(f"{base}/i/{{id:{_ID}}}/{{action:{'|'.join(_ACTIONS)}}}", pages.act)
    shared = f"{prefix}/s/{{showcase:{_TOKEN}}}"
    app.router.add_get(f"{shared}/", pages.showcase)
    for root in (base, shared):
        app.router.add_get(f"{root}/thumb/{{id:{_ID}}}-{{index:[0-9]{{1,2}}}}.webp", pages.thumbnail)
        app.router.add_get(f"{root}/image/{{id:{_ID}}}-{{index:[0-9]{{1,2}}}}.png", pages.image)
    app.router.add_static(f"{prefix}/static", _HERE / "static", append_version=False)
    return app

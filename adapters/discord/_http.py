"""One bot's discord.py HTTP client, sending its REST and gateway traffic to configured endpoints.

discord.py takes its endpoints from class attributes (``discord.http.Route.BASE``
and ``DiscordWebSocket.DEFAULT_GATEWAY``); setting those would move every client
in the process. Every request one client makes, interaction callbacks, webhooks
and the gateway connection included, goes through the aiohttp session its
`HTTPClient` opens at login. That session's request class moves URLs on
discord.py's default endpoints to the configured ones, and touches no other
client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl
from discord.errors import HTTPException, LoginFailure
from discord.gateway import DiscordClientWebSocketResponse, DiscordWebSocket
from discord.http import HTTPClient, Route
from discord.utils import MISSING

if TYPE_CHECKING:
    from discord.types.user import User

__all__ = ["EndpointHTTPClient", "Endpoints"]


@dataclass(frozen=True)
class Endpoints:
    """Where one client's traffic goes instead of Discord's; ``None`` keeps Discord's.

    Args:
        api_base: the REST base URL, such as ``http://127.0.0.1:8080/api/v10``.
        gateway_url: the gateway WebSocket URL.
    """

    api_base: str | None = None
    gateway_url: str | None = None

    def move(self, url: yarl.URL) -> yarl.URL:
        """Return `url` moved to the configured endpoint when it is on discord.py's default one, else `url`."""
        if self.gateway_url and url.with_query(None) == DiscordWebSocket.DEFAULT_GATEWAY:
            return yarl.URL(self.gateway_url).with_query(url.query)
        if self.api_base:
            text, default = str(url), Route.BASE
            rest = text[len(default) :]
            if text.startswith(default) and rest[:1] in ("", "/", "?"):
                return yarl.URL(self.api_base.rstrip("/") + rest, encoded=True)
        return url


def _request_class(endpoints: Endpoints) -> type[aiohttp.ClientRequest]:
    """Return an aiohttp request class that moves its URL with `endpoints` before anything reads it."""

    class MovedRequest(aiohttp.ClientRequest):
        def __init__(self, method: str, url: yarl.URL, **options: Any) -> None:
            super().__init__(method, endpoints.move(url), **options)

    return MovedRequest


class EndpointHTTPClient(HTTPClient):
    """discord.py's HTTP client whose session sends everything to `endpoints`.

    Args:
        like: the client discord.py built; its connector, proxy and rate-limit options are kept.
        endpoints: where the traffic goes.
    """

    def __init__(self, like: HTTPClient, endpoints: Endpoints) -> None:
        super().__init__(
            like.loop,
            like.connector or None,
            proxy=like.proxy,
            proxy_auth=like.proxy_auth,
            unsync_clock=not like.use_clock,
            http_trace=like.http_trace,
            max_ratelimit_timeout=like.max_ratelimit_timeout,
        )
        self.endpoints = endpoints

    async def static_login(self, token: str) -> User:
        """Open the session with the moving request class, then log in as `HTTPClient.static_login` does.

        discord.py opens its session inside ``static_login`` and has no parameter for the
        request class, so this repeats that method (as of discord.py 2.7) with it added.
        """
        if self.connector is MISSING:
            self.connector = aiohttp.TCPConnector(limit=0)
        # Interactions and webhooks read the session under this (name-mangled) attribute.
        self._HTTPClient__session = aiohttp.ClientSession(
            connector=self.connector,
            ws_response_class=DiscordClientWebSocketResponse,
            trace_configs=None if self.http_trace is None else [self.http_trace],
            cookie_jar=aiohttp.DummyCookieJar(),
            request_class=_request_class(self.endpoints),
        )
        self._global_over = asyncio.Event()
        self._global_over.set()
        old_token, self.token = self.token, token
        try:
            data: User = await self.request(Route("GET", "/users/@me"))
        except HTTPException as exc:
            self.token = old_token
            if exc.status == 401:
                raise LoginFailure("Improper token has been passed.") from exc
            raise
        return data

"""What every fake shares: an aiohttp application served on 127.0.0.1 (a free port), used as ``async with``."""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import Self

from aiohttp import web


async def trickle(
    request: web.Request, body: bytes, *, pieces: int, gap: float, status: int = 200
) -> web.StreamResponse:
    """Answer `body` as JSON in `pieces` writes `gap` seconds apart: headers at once, then a slow body.

    Each gap is shorter than a client's read timeout while the whole answer takes longer than
    its request timeout, the fault that a per-read timeout alone never notices. A client that
    gives up closes the connection, and the writing stops there.
    """
    response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    size = max(1, math.ceil(len(body) / max(1, pieces)))
    try:
        for start in range(0, len(body), size):
            await asyncio.sleep(gap)
            await response.write(body[start : start + size])
        await response.write_eof()
    except ConnectionError:
        pass  # the client hung up
    return response


class LoopbackServer:
    """Serves one aiohttp application on a free loopback port until closed.

    Subclasses build their application in ``start()`` and pass it to `_serve`; a
    subclass that holds connections of its own closes them in ``close()`` before
    calling this one.
    """

    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        raise NotImplementedError

    async def _serve(self, app: web.Application, *, backlog: int = 128) -> int:
        """Start serving `app` and return the port it got."""
        # A handler still running at close is a fault's hang that the client gave up on: it is cut
        # short, not waited for (a second per such test, minutes of a suite).
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, backlog=backlog).start()
        return int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

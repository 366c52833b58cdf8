"""A plain HTTP file host on 127.0.0.1 that records every request, for the download-safety tests.

``FileHost`` serves what ``put`` gives it, answers ``redirect`` paths with a 302, and
``stream`` paths with an endless chunked body (no Content-Length) until the client hangs up,
counting the bytes it wrote. ``requests`` holds every request with its Authorization header,
so a test can assert that a host the bot must not reach saw nothing, and no token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from tests.fakes._loopback import LoopbackServer, trickle

CHUNK = 64 * 1024


@dataclass
class HostRequest:
    path: str
    authorization: str | None


class FileHost(LoopbackServer):
    def __init__(self) -> None:
        self.base = ""
        self.requests: list[HostRequest] = []
        self.streamed: dict[str, int] = {}  # path → bytes written before the client hung up
        self._files: dict[str, tuple[bytes, str]] = {}
        self._redirects: dict[str, str] = {}
        self._streams: dict[str, int] = {}  # path → the most bytes to write
        self._trickles: dict[str, tuple[bytes, float]] = {}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        port = await self._serve(app)
        self.base = f"http://127.0.0.1:{port}"

    def put(self, path: str, data: bytes, content_type: str = "image/png") -> str:
        self._files[path] = (data, content_type)
        return f"{self.base}/{path}"

    def redirect(self, path: str, to: str) -> str:
        self._redirects[path] = to
        return f"{self.base}/{path}"

    def stream(self, path: str, most: int) -> str:
        self._streams[path] = most
        return f"{self.base}/{path}"

    def slow(self, path: str, data: bytes, gap: float) -> str:
        self._trickles[path] = (data, gap)
        return f"{self.base}/{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.requests.append(HostRequest(path, request.headers.get("Authorization")))
        if path in self._redirects:
            return web.Response(status=302, headers={"Location": self._redirects[path]})
        if path in self._trickles:
            data, gap = self._trickles[path]
            return await trickle(request, data, pieces=20, gap=gap)
        if path in self._streams:
            return await self._stream(request, path, self._streams[path])
        if path in self._files:
            data, content_type = self._files[path]
            return web.Response(body=data, headers={"Content-Type": content_type})
        return web.Response(status=404)

    async def _stream(self, request: web.Request, path: str, most: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.streamed[path] = 0
        try:
            while self.streamed[path] < most:
                await response.write(b"\0" * CHUNK)
                self.streamed[path] += CHUNK
                await asyncio.sleep(0)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up
        return response

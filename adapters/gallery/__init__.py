"""The web gallery: each user's images behind a personal link, served by aiohttp.web in the bot's own process.

`Links` makes and checks the links (and is the `bot.ports.GalleryLinks` the chats ask);
`create_app` builds the pages; `serving` runs them on a port until the block ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from adapters.gallery._links import BadLink, ExpiredLink, Links, Owner, Server, secret_key
from adapters.gallery._web import RedactedAccessLogger, create_app

__all__ = ["BadLink", "ExpiredLink", "Links", "Owner", "Server", "create_app", "secret_key", "serving"]


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve the app on host:port (0: any free port, see ``runner.addresses``) until the block ends."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=RedactedAccessLogger,
        access_log=logging.getLogger("imagebot.gallery.access"),
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield runner
    finally:
        await runner.cleanup()

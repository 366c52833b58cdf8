"""The Slack front end (slack-bolt): /imagine, shortcuts with modals, Block Kit buttons, reactions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler, async_default_handlers
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import SlackSettings
from bot.service import ImageService

from ._app import SlackImages

__all__ = ["EVENTS_PATH", "running", "setup"]

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def setup(service: ImageService, settings: SlackSettings) -> tuple[AsyncApp, SlackImages]:
    """Return a Bolt app with the image listeners, pointed at the configured Web API."""
    if settings.bot_token is None:
        raise ValueError("IMAGEBOT_SLACK_BOT_TOKEN is not set")
    client_options: dict[str, Any] = {"base_url": settings.api_base} if settings.api_base else {}
    # slack-sdk retries only a lost connection by default; a 429 (Retry-After) is waited out too.
    # Server errors are not retried here: a resent chat.postMessage may post twice.
    retry_handlers = [*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
    client = AsyncWebClient(
        token=settings.bot_token.get_secret_value(), retry_handlers=retry_handlers, **client_options
    )
    secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
    app = AsyncApp(client=client, signing_secret=secret)
    return app, SlackImages(app, service, settings)


@contextlib.asynccontextmanager
async def running(service: ImageService, settings: SlackSettings) -> AsyncIterator[str]:
    """Run the app until the block ends; yield where Slack reaches it (Socket Mode, or the HTTP URL).

    With an app token the app connects out over Socket Mode; otherwise it serves
    signed HTTP requests on ``POST /slack/events`` at the configured host and port.
    """
    app, images = setup(service, settings)
    images.follow_resumed()
    try:
        if settings.app_token is not None:
            handler = AsyncSocketModeHandler(app, app_token=settings.app_token.get_secret_value())
            await handler.connect_async()  # type: ignore[no-untyped-call]  # slack-bolt leaves it unannotated
            log.info("Slack: connected over Socket Mode")
            try:
                yield "socket mode"
            finally:
                await handler.close_async()  # type: ignore[no-untyped-call]
        else:
            runner = web.AppRunner(app.web_app(path=EVENTS_PATH), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, settings.host, settings.port).start()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}{EVENTS_PATH}"
            log.info("Slack: serving events on %s", url)
            try:
                yield url
            finally:
                await runner.cleanup()
    finally:
        await images.aclose()

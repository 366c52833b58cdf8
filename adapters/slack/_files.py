"""Slack files as `--image`/`--mask`: described by files.info, refused by that, else fetched with the bot token.

The app names each file in the options it hands the service by a token
(``slack-file-F123``); the loader made here turns a token back into the file's bytes.
Any other reference a user types names nothing here, so the URL fetched is always the
one files.info gives for a file id, never one from user text, and the token goes only
to Slack's file host (checked in `adapters._download` before the request).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import InvalidOption, shown
from bot.images import not_an_image, too_large
from bot.inputs import ImageLoader

from .._download import IMAGE_TYPES, FileHosts, download

__all__ = ["SLACK_FILE_HOSTS", "file_loader", "image_file", "image_files", "token"]

# Where Slack serves url_private_download; moved with the API base like every API call (see setup).
SLACK_FILE_HOSTS = ("files.slack.com",)


def token(file_id: str) -> str:
    """Return how a Slack file is named in the options.

    Anything but ``#id`` would do; no ``:``, so that it stands in the ``--cn NAME=GUIDE:WEIGHT`` list too (a blend).
    """
    return f"slack-file-{file_id}"


def image_files(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Return a message's files that Slack says are PNG, JPEG or WebP images, in order."""
    return [
        file
        for file in message.get("files") or []
        if isinstance(file, dict) and file.get("mimetype") in IMAGE_TYPES and isinstance(file.get("id"), str)
    ]


def image_file(message: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Return a message's first file that Slack says is a PNG, JPEG or WebP image."""
    return next(iter(image_files(message)), None)


def file_loader(client: AsyncWebClient, files: Mapping[str, str], hosts: FileHosts, limit: int) -> ImageLoader:
    """Return the service's loader for these files (token → file id), at most `limit` bytes each."""

    async def load(ref: str, option: str) -> bytes:
        file_id = files.get(ref)
        if file_id is None:
            raise InvalidOption(option, f"must be a previous image like #12 (or #12.2) or a file, not '{shown(ref)}'")
        try:
            file = (await client.files_info(file=file_id)).get("file") or {}
        except SlackApiError as error:
            raise InvalidOption(option, f"could not be found in Slack ({error.response.get('error')})") from None
        # What Slack says of the file is enough to refuse it without fetching a byte.
        size = file.get("size")
        if isinstance(size, int) and size > limit:
            raise too_large(option, size, limit)
        if file.get("mimetype") not in IMAGE_TYPES:
            raise not_an_image(option)
        url = file.get("url_private_download") or file.get("url_private") or ""
        headers = {"Authorization": f"Bearer {client.token}"}
        return await download(str(url), option=option, hosts=hosts, limit=limit, headers=headers)

    return load

"""Discord attachments as `--image`/`--mask`: refused by what Discord says of them, else fetched from its CDN.

The cog names each attachment in the options it hands the service by a token
(``attachment-image``); the loader made here turns a token back into the attachment's
bytes. Any other reference a user types (a URL, another token) names nothing here, so user
text can never make the bot fetch anything.
"""

from __future__ import annotations

from collections.abc import Mapping

import discord

from bot.errors import InvalidOption, shown
from bot.images import not_an_image, too_large
from bot.inputs import ImageLoader

from .._download import IMAGE_TYPES, FileHosts, download

__all__ = ["DISCORD_FILE_HOSTS", "attachment_loader", "image_attachment", "token"]

# Where Discord serves attachments; moved with the API base like every other endpoint (see _http.py).
DISCORD_FILE_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")


def token(option: str) -> str:
    """Return how an attachment given for `option` is named in the options.

    Anything but ``#id`` would do; no ``:``, so that it stands in the ``--cn NAME=GUIDE:WEIGHT`` list too.
    """
    return f"attachment-{option}"


def _declared_type(attachment: discord.Attachment) -> str:
    return (attachment.content_type or "").split(";")[0].strip().lower()


def image_attachment(message: discord.Message) -> discord.Attachment | None:
    """Return a message's first attachment that Discord says is a PNG, JPEG or WebP image."""
    return next((a for a in message.attachments if _declared_type(a) in IMAGE_TYPES), None)


def attachment_loader(attachments: Mapping[str, discord.Attachment], hosts: FileHosts, limit: int) -> ImageLoader:
    """Return the service's loader for these attachments (token → attachment), at most `limit` bytes each."""

    async def load(ref: str, option: str) -> bytes:
        attachment = attachments.get(ref)
        if attachment is None:
            reason = f"must be a previous image like #12 (or #12.2) or an attachment, not '{shown(ref)}'"
            raise InvalidOption(option, reason)
        # What Discord says of the file is enough to refuse it without fetching a byte.
        if attachment.size > limit:
            raise too_large(option, attachment.size, limit)
        if _declared_type(attachment) not in IMAGE_TYPES:
            raise not_an_image(option)
        # Attachments need no authorization: no header goes with the request, the bot token least of all.
        return await download(attachment.url, option=option, hosts=hosts, limit=limit)

    return load

"""Fetching an image a chat user attached, from that chat's own file host and nowhere else.

Discord attachments and Slack files are the only bytes the bot fetches for a user, and
Slack's need the bot token, so both chats go through this one function:

- The URL must be on one of the chat's file hosts, over https, or on the origin of the
  configured API base (which already gets every API call, the token included; in tests it is
  the loopback fake, the one place plain http is allowed). This is checked before any request.
- Redirects are never followed: a redirect could lead the token, or the bot, anywhere.
- The whole request is bounded by a timeout, not each read only, so a host that trickles
  bytes cannot hold a job open.
- No more than the limit is read: a declared length over it is refused before the body, and
  the body is read in chunks and dropped as soon as it passes the limit.

aiohttp is the HTTP client because both chat SDKs already stand on it (httpx comes only
with the hosted backends' extra).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import yarl

from bot.errors import InvalidOption
from bot.images import too_large

__all__ = ["DOWNLOAD_TIMEOUT", "IMAGE_TYPES", "FileHosts", "download"]

log = logging.getLogger(__name__)

# The content types a chat may declare for an image the bot accepts (bot.images sniffs the bytes too).
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
DOWNLOAD_TIMEOUT = 30.0  # seconds for the whole download
_CHUNK = 64 * 1024

Origin = tuple[str, str, int]  # scheme, host, port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: yarl.URL) -> Origin | None:
    """Return a URL's origin, or None when it has none a download may go to (relative, credentials, odd scheme)."""
    if not url.is_absolute() or url.host is None or url.port is None or url.user or url.password:
        return None
    if url.scheme == "https" or (url.scheme == "http" and _loopback(url.host)):
        return url.scheme, url.host.lower(), url.port
    return None


@dataclass(frozen=True)
class FileHosts:
    """The origins one chat's files may be fetched from.

    Args:
        origins: (scheme, host, port) triples.
    """

    origins: frozenset[Origin]

    @classmethod
    def of(cls, hosts: Iterable[str], api_base: str | None = None) -> FileHosts:
        """Return the chat's own file `hosts` over https, plus the origin of its configured `api_base`.

        The API base is where the adapter already sends its API calls, so it is trusted as much;
        moving the API to a loopback fake moves the file host with it, as in production the
        settings move every endpoint.
        """
        origins = {("https", host.lower(), 443) for host in hosts}
        if api_base:
            base = _origin(yarl.URL(api_base))
            if base is not None:
                origins.add(base)
        return cls(frozenset(origins))

    def allows(self, url: str) -> bool:
        """Tell whether `url` is on one of these origins (https, or http on a loopback API base)."""
        try:
            origin = _origin(yarl.URL(url))
        except ValueError:
            return False
        return origin is not None and origin in self.origins


async def download(
    url: str,
    *,
    option: str,
    hosts: FileHosts,
    limit: int,
    headers: Mapping[str, str] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> bytes:
    """Fetch at most `limit` bytes from `url`, which must be on `hosts`; `headers` go to that host only.

    Raises:
        InvalidOption: the URL is on another host, the host redirects or refuses, the file is
            larger than `limit`, or the download fails or takes longer than `timeout`; one
            sentence naming `option`.
    """
    if not hosts.allows(url):
        # Checked before any request, so neither the token nor the bot goes elsewhere.
        log.warning("refused to fetch a %s from %r: not the chat's file host", option, url[:200])
        raise InvalidOption(option, "is not on the chat's own file host, so it was not fetched")
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout), cookie_jar=aiohttp.DummyCookieJar()
            ) as session,
            session.get(yarl.URL(url, encoded=True), headers=headers, allow_redirects=False) as response,
        ):
            if 300 <= response.status < 400:
                where = response.headers.get("Location")
                log.warning("the file host redirected a %s download to %r; not followed", option, where)
                raise InvalidOption(option, "could not be fetched: the file host sent it elsewhere")
            if response.status != 200:
                raise InvalidOption(option, f"could not be fetched (the file host answered HTTP {response.status})")
            if response.content_length is not None and response.content_length > limit:
                raise too_large(option, response.content_length, limit)
            data = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                data += chunk
                if len(data) > limit:
                    # Leaving the block closes the connection: the rest is never read.
                    raise too_large(option, len(data), limit)
            return bytes(data)
    except (aiohttp.ClientError, TimeoutError) as error:
        log.info("could not fetch a %s: %r", option, error)
        raise InvalidOption(option, "could not be fetched from the chat; try again") from None

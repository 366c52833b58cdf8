"""Personal gallery links: signed, expiring tokens bound to one (platform, user), and the thumbnails kept for them.

A token is ``[platform, user_id, epoch]`` signed with a timestamp (itsdangerous). It is
good while it is younger than the lifetime and its epoch is still the user's epoch in the
store: `/gallery revoke` and `/forget` raise the epoch, so every earlier link dies at once
without a list of tokens to keep.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, TimestampSigner, URLSafeSerializer, URLSafeTimedSerializer
from PIL import Image

from bot.ports import GalleryStore

__all__ = ["BadLink", "ExpiredLink", "Links", "Owner", "Server", "secret_key"]

THUMBNAIL_SIDE = 384
_SALT = "imagebot-gallery-link"
# Another salt: a personal token is never a showcase token, nor the other way round.
_SHOWCASE_SALT = "imagebot-showcase-link"
# A token minted a little in the future (another host's clock) still passes; more is forged or broken.
_CLOCK_SKEW = 60.0


class BadLink(Exception):
    """The token is not one of ours: forged, cut short or tampered with."""


class ExpiredLink(Exception):
    """The token was ours, but it is too old or its user revoked it."""


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose gallery a token opens."""

    platform: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Server:
    """Whose showcase a showcase token opens, and since when that showcase was on when the link was made."""

    platform: str
    workspace: str
    since: int


def secret_key(data_dir: Path, configured: str | None) -> bytes:
    """Return the key that signs links: the configured one, else one made once and kept under the data directory.

    Kept, so links survive a restart; readable by the bot's user only.
    """
    if configured:
        return configured.encode()
    path = data_dir / "gallery" / "secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(32))
    return path.read_bytes().strip()


class Links:
    """Makes and checks gallery links (a `bot.ports.GalleryLinks`), and keeps each user's thumbnails.

    Args:
        secret: the signing key.
        store: the gallery's read model, which holds each user's link epoch.
        base_url: where the gallery is reached, without a trailing slash.
        data_dir: thumbnails go under ``gallery/thumbs`` in it.
        lifetime_days: how long a link works.
        clock: the wall clock (tests move it to expire links).
    """

    def __init__(
        self,
        *,
        secret: bytes,
        store: GalleryStore,
        base_url: str,
        data_dir: Path,
        lifetime_days: float = 7.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._store = store
        self.base_url = base_url.rstrip("/")
        self._thumbs = data_dir / "gallery" / "thumbs"
        self.lifetime_days = lifetime_days
        self._clock = clock

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT, signer=_Signer)
        # No lifetime: a showcase link is shared and pinned; it works while the showcase stays on.
        self._showcase_serializer = URLSafeSerializer(secret, salt=_SHOWCASE_SALT)

    async def link(self, platform: str, user_id: str) -> str:
        """Return a new link to the user's gallery."""
        epoch = await self._store.epoch(platform, user_id)
        return f"{self.base_url}/g/{self._serializer.dumps([platform, user_id, epoch])}/"

    async def region_link(self, platform: str, user_id: str, generation_id: int, index: int) -> str:
        """Return a new link to the Vary (Region) page of one of the user's images (`index`: 0 the first)."""
        image = f"?image={index + 1}" if index else ""
        return f"{await self.link(platform, user_id)}i/{int(generation_id)}/region{image}"

    async def revoke(self, platform: str, user_id: str) -> None:
        """Make every link given to the user so far stop working."""
        await self._store.next_epoch(platform, user_id)

    async def forget(self, platform: str, user_id: str) -> None:
        """Revoke the user's links and delete their thumbnails."""
        await self.revoke(platform, user_id)
        await asyncio.to_thread(shutil.rmtree, self._folder(Owner(platform, user_id)), ignore_errors=True)

    async def forget_images(self, generation_ids: Sequence[int]) -> None:
        """Delete the thumbnails kept of these generations' images, in whichever user's folder."""

        def delete() -> None:
            for generation_id in generation_ids:
                for path in self._thumbs.glob(f"*/{int(generation_id)}-*.webp"):
                    path.unlink(missing_ok=True)

        await asyncio.to_thread(delete)

    async def owner(self, token: str) -> Owner:
        """Return whose gallery a token opens.

        Raises:
            BadLink: the token is not one of ours.
            ExpiredLink: it is too old, or the user revoked it.
        """
        try:
            payload, signed_at = self._serializer.loads(token, return_timestamp=True)
        except BadSignature:
            raise BadLink() from None
        platform, user_id, epoch = _two_names_and_a_number(payload)
        age = self._clock() - signed_at.timestamp()
        if age < -_CLOCK_SKEW:
            raise BadLink()
        if age > self.lifetime_days * 86400 or epoch != await self._store.epoch(platform, user_id):
            raise ExpiredLink()
        return Owner(platform, user_id)

    async def showcase_link(self, platform: str, workspace: str, since: int) -> str:
        """Return the link to a server's showcase, good while the showcase stays on since `since`."""
        return f"{self.base_url}/s/{self._showcase_serializer.dumps([platform, workspace, since])}/"

    def server(self, token: str) -> Server:
        """Return whose showcase a showcase token opens (whether it is still on is the caller's to check).

        Raises:
            BadLink: the token is not one of our showcase tokens.
        """
        try:
            payload = self._showcase_serializer.loads(token)
        except BadSignature:
            raise BadLink() from None
        return Server(*_two_names_and_a_number(payload))

    def csrf(self, token: str) -> str:
        """Return the value a form posted with this token must carry.

        Derived from the token with the key, so it needs no storage and a page of one link
        cannot post for another.
        """
        return hmac.new(self._secret, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()[:32]

    async def thumbnail(
        self, owner: Owner, generation_id: int, index: int, read: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """Return a small WebP of one image, made the first time and kept under the data directory.

        `read` reads the stored PNG; it is only called when no thumbnail is kept.
        """
        path = self._folder(owner) / f"{generation_id}-{index}.webp"
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            pass
        data = await asyncio.to_thread(_webp, await read())
        await asyncio.to_thread(_write_atomically, path, data)
        return data

    def _folder(self, owner: Owner) -> Path:
        # Hashed: ids from chats become file names only through a digest.
        digest = hashlib.sha256(f"{owner.platform}\0{owner.user_id}".encode()).hexdigest()[:32]
        return self._thumbs / digest


def _two_names_and_a_number(payload: object) -> tuple[str, str, int]:
    """Return a token's payload, ``[platform, user or server, number]``; anything else is a BadLink.

    Only a payload we signed gets here, but a key shared with an older version may have signed another shape.
    """
    match payload:
        case [str(platform), str(name), int(number)] if not isinstance(number, bool):
            return platform, name, number
    raise BadLink()


def _webp(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file, so two requests for one thumbnail never read half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    temporary.write_bytes(data)
    os.replace(temporary, path)

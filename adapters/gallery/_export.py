"""A user's whole gallery as one ZIP: every image file as it is stored, and a line of JSON a generation.

The archive is written while it is sent, an image at a time, so memory holds one image
whatever the gallery's size; nothing is compressed (PNG, JPEG and WebP are compressed
already), and the images keep their parameters (the PNG's text chunk, the EXIF comment) as
stored. ``generations.jsonl`` holds each generation's record newest first (failed and
cancelled ones too, which have no file): its id, when, what made it, its seed, its request
as stored and the ``/imagine`` text that asks for it again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import PurePath

from bot.gallery import GalleryQuery
from bot.history import Generation, StoredImage
from bot.ports import GalleryStore

__all__ = ["MANIFEST", "write_export"]

MANIFEST = "generations.jsonl"
# Generations read from the store at a time.
_BATCH = 100


class _Spool:
    """The file ZipFile writes to: what it wrote since the last `take`, to send on (no seek, no tell)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: `take` hands the bytes on."""

    def close(self) -> None:
        """Nothing to close: the response is the caller's."""

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


async def _generations(
    store: GalleryStore, platform: str, user_id: str, chosen: Sequence[Generation] | None = None
) -> AsyncIterator[list[Generation]]:
    """Yield the user's generations newest first, a keyset page at a time; the `chosen` ones alone, when given."""
    if chosen is not None:
        yield list(chosen)
        return
    after: int | None = None
    while True:
        page = await store.page(platform, user_id, GalleryQuery(after=after, limit=_BATCH))
        if not page:
            return
        yield page
        after = page[-1].id


def _record(generation: Generation, files: Sequence[str], command: str | None) -> str:
    return json.dumps(
        {
            "id": generation.id,
            "created": dt.datetime.fromtimestamp(generation.created_at, dt.UTC).isoformat(timespec="seconds"),
            "action": generation.action,
            "parent": generation.parent_id,
            "status": generation.status,
            "seed": generation.seed,
            "model": generation.model,
            "backend": generation.backend,
            "imagine": command,
            "request": generation.request.model_dump(mode="json"),
            "files": list(files),
        },
        ensure_ascii=False,
    )


def _entry(name: str, when: float) -> zipfile.ZipInfo:
    # ZIP dates start in 1980; a stored time is seconds since 1970.
    moment = dt.datetime.fromtimestamp(max(when, 315_532_800), dt.UTC)
    info = zipfile.ZipInfo(name, date_time=moment.timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED
    return info


async def write_export(
    send: Callable[[bytes], Awaitable[None]],
    store: GalleryStore,
    platform: str,
    user_id: str,
    *,
    read: Callable[[str], Awaitable[bytes]],
    commands: Callable[[Sequence[Generation]], Awaitable[Mapping[int, str | None]]],
    chosen: Sequence[Generation] | None = None,
) -> int:
    """Write the user's ZIP to `send` as it is made; return the number of image files in it.

    `chosen`: only these generations of the user's, as read already (the grid's ticked ones); None: all of them.

    `read` reads a stored image's bytes (a file gone from disk is left out); `commands` gives
    each generation's ``/imagine`` text. The images come first, then the records, read again
    page by page and written as they are read, so no list of them is held either.
    """
    spool = _Spool()
    missing: set[str] = set()
    count = 0
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:
        async for page in _generations(store, platform, user_id, chosen):
            for generation in page:
                for image in generation.images:
                    name = _name(generation, image)
                    try:
                        data = await read(image.path)
                    except FileNotFoundError:
                        missing.add(name)
                        continue
                    # The CRC of a large image takes a moment: off the event loop.
                    await asyncio.to_thread(archive.writestr, _entry(name, generation.created_at), data)
                    await send(spool.take())
                    count += 1
        now = dt.datetime.now(dt.UTC).timestamp()
        with archive.open(_entry(MANIFEST, now), "w", force_zip64=True) as manifest:
            async for page in _generations(store, platform, user_id, chosen):
                texts = await commands(page)
                for generation in page:
                    files = [name for image in generation.images if (name := _name(generation, image)) not in missing]
                    manifest.write(f"{_record(generation, files, texts.get(generation.id))}\n".encode())
                await send(spool.take())
    await send(spool.take())
    return count


def _name(generation: Generation, image: StoredImage) -> str:
    return f"images/{generation.id}-{image.index}{PurePath(image.path).suffix}"

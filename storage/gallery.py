"""The web gallery's read model (`bot.ports.GalleryStore`) on its own connection to the bot's SQLite file.

Its own connection: a gallery page never waits behind the chat path's lock, and in
WAL mode its reads never block the chats' writes (nor the writes its reads).
Every query is scoped to one (platform, user).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from bot.gallery import GalleryQuery, match_expression
from bot.history import Generation
from storage._database import Clock, Database, check_limit
from storage.generations import select_generations

__all__ = ["SqliteGallery"]

_OWNER = "platform = ? AND user_id = ?"
# A server's showcase: starred, finished, and with an image the safety check did not flag.
_SHOWCASE = (
    "platform = ? AND workspace = ? AND starred_at IS NOT NULL AND status = 'done'"
    " AND EXISTS (SELECT 1 FROM images WHERE images.generation_id = generations.id AND images.nsfw IS NOT 1)"
)


class SqliteGallery:
    """A `bot.ports.GalleryStore` over ``generations`` and the gallery's tables (prompts, LoRAs, inputs, epochs).

    Open it with `SqliteGallery.open`; `close` it when done.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, clock: Clock = time.time) -> SqliteGallery:
        """Open a second connection to the bot's file (migrating it, as any connection may)."""
        return cls(await Database.open(path, clock=clock))

    async def close(self) -> None:
        """Close the gallery's connection."""
        await self._db.close()

    async def page(self, platform: str, user_id: str, query: GalleryQuery) -> list[Generation]:
        """Return one page of the user's generations with their images, in the query's order."""
        check_limit(query.limit)
        where = [_OWNER]
        parameters: list[Any] = [platform, user_id]
        filters = (
            ("id > ?" if query.oldest_first else "id < ?", query.after),
            ("model = ?", query.model),
            ("id IN (SELECT generation_id FROM generation_loras WHERE name = ?)", query.lora),
            ("created_at >= ?", query.since),
            ("created_at < ?", query.until),
        )
        for condition, value in filters:
            if value is not None:
                where.append(condition)
                parameters.append(value)
        if query.starred:
            where.append("starred_at IS NOT NULL")
        return await select_generations(
            self._db,
            " AND ".join(where),
            tuple(parameters),
            limit=query.limit,
            newest_first=not query.oldest_first,
            matching=match_expression(query.words),
        )

    async def get(self, platform: str, user_id: str, generation_id: int) -> Generation | None:
        """Return the user's own generation, or None (also when it is someone else's)."""
        found = await select_generations(self._db, f"id = ? AND {_OWNER}", (generation_id, platform, user_id))
        return found[0] if found else None

    async def children(self, platform: str, user_id: str, generation_id: int) -> list[Generation]:
        """Return the user's generations made from this one, oldest first (at most 50)."""
        return await select_generations(
            self._db,
            f"parent_id = ? AND {_OWNER}",
            (generation_id, platform, user_id),
            limit=50,
            newest_first=False,
        )

    async def models(self, platform: str, user_id: str) -> list[str]:
        """Return the models the user's generations used, sorted."""
        return await self._distinct(platform, user_id, "model", "generations")

    async def loras(self, platform: str, user_id: str) -> list[str]:
        """Return the LoRAs the user's generations used, sorted."""
        return await self._distinct(platform, user_id, "name", "generation_loras")

    async def _distinct(self, platform: str, user_id: str, column: str, table: str) -> list[str]:
        """Return the distinct values of a column among the user's rows, sorted.

        Each is found as the smallest value after the previous one, an index seek on
        (platform, user_id, column): the cost grows with the number of values, not of rows.
        """
        async with self._db.lock:
            rows = await self._db.conn.execute_fetchall(
                "WITH RECURSIVE used (value) AS ("
                f" SELECT MIN({column}) FROM {table} WHERE {_OWNER}"
                " UNION ALL"
                f" SELECT (SELECT MIN({column}) FROM {table} WHERE {_OWNER} AND {column} > used.value)"
                " FROM used WHERE used.value IS NOT NULL"
                ") SELECT value FROM used WHERE value IS NOT NULL",
                (platform, user_id, platform, user_id),
            )
        return [str(row[0]) for row in rows]

    async def epoch(self, platform: str, user_id: str) -> int:
        """Return the user's link epoch (0 until a link was first revoked)."""
        async with self._db.lock:
            rows = list(
                await self._db.conn.execute_fetchall(
                    f"SELECT epoch FROM gallery_epochs WHERE {_OWNER}", (platform, user_id)
                )
            )
        return int(rows[0][0]) if rows else 0

    async def next_epoch(self, platform: str, user_id: str) -> int:
        """Raise the user's link epoch by one and return it."""
        async with self._db.lock:
            rows = list(
                await self._db.conn.execute_fetchall(
                    "INSERT INTO gallery_epochs (platform, user_id, epoch) VALUES (?, ?, 1)"
                    " ON CONFLICT (platform, user_id) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
                    (platform, user_id),
                )
            )
        return int(rows[0][0])

    async def showcase(self, platform: str, workspace: str, *, after: int | None, limit: int) -> list[Generation]:
        """Return one page of a server's showcase, newest first, each generation with only its unflagged images."""
        check_limit(limit)
        where = _SHOWCASE
        parameters: tuple[Any, ...] = (platform, workspace)
        if after is not None:
            where, parameters = f"{where} AND id < ?", (*parameters, after)
        return [_unflagged(g) for g in await select_generations(self._db, where, parameters, limit=limit)]

    async def showcased(self, platform: str, workspace: str, generation_id: int) -> Generation | None:
        """Return the generation as the server's showcase shows it (unflagged images only), or None."""
        found = await select_generations(self._db, f"id = ? AND {_SHOWCASE}", (generation_id, platform, workspace))
        return _unflagged(found[0]) if found else None


def _unflagged(generation: Generation) -> Generation:
    """Return the generation without the images the safety check flagged (an unchecked one stays)."""
    return dataclasses.replace(generation, images=tuple(image for image in generation.images if not image.nsfw))

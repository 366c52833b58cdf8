"""Every generation a user asked for, with its seed, status and images, so any of them can be rerolled.

A queued generation is a ``queued`` row, so a restart can resume it
(`SqliteGenerations.unfinished`). Status moves one way (`bot.history`): a
``mark_*`` call on a finished generation changes nothing and returns False.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, get_args

from bot.history import Generation, NewGeneration, Status, StoredImage
from bot.request import GenerationRequest
from storage._database import Database, check_limit

__all__ = ["SqliteGenerations", "select_generations"]

_STATUSES: frozenset[str] = frozenset(get_args(Status))
_INT64_MAX = 2**63 - 1


def check_images(images: Sequence[StoredImage]) -> tuple[StoredImage, ...]:
    """Return the images sorted by index, rejecting what the table would refuse."""
    ordered = tuple(sorted(images, key=lambda image: image.index))
    indexes = [image.index for image in ordered]
    if len(set(indexes)) != len(indexes) or any(index < 0 for index in indexes):
        raise ValueError(f"image indexes must be distinct and not negative, not {indexes}")
    # seed + i can pass MAX_SEED; SQLite would raise an OverflowError halfway through the insert.
    for image in ordered:
        if not 0 <= image.seed <= _INT64_MAX:
            raise ValueError(f"image seeds must be from 0 to {_INT64_MAX}, not {image.seed}")
    return ordered


def check_status(status: str | None) -> None:
    """Refuse a status filter that is not one of `Status`."""
    if status is not None and status not in _STATUSES:
        raise ValueError(f"status must be one of {sorted(_STATUSES)}, not {status!r}")


_COLUMNS = (
    "id, platform, workspace, channel, user_id, parent_id, action, request, seed, model, backend, status,"
    " error, warnings, private, created_at, started_at, finished_at, message_ref, cost, interruptions,"
    " starred_at IS NOT NULL AS starred"
)
# Each column's name as it comes back ("... AS starred": starred), in the order of Generation's fields.
_NAMES = tuple(column.split()[-1] for column in _COLUMNS.split(","))
_IMAGE_COLUMNS = "i.idx, i.seed, i.path, i.sha256, i.width, i.height, i.nsfw"
_GENERATION_FIELDS = len(_NAMES)
_UNFINISHED_SQL = "status IN ('queued', 'running')"
# The most images one lookup names: a page of cards with an image, a mask and three guides each.
_MAX_SHAS = 200
# The job's cost is added to what was paid before it ran (a guide map a backend made); None adds nothing.
_ADD_COST = "cost = CASE WHEN ? IS NULL THEN cost ELSE COALESCE(cost, 0) + ? END"
# Written exactly as in the indexes of migration 6: SQLite uses an expression index only for the same expression.
_INIT_IMAGE = "json_extract(request, '$.init_image')"
_MASK_IMAGE = "json_extract(request, '$.mask_image')"


class SqliteGenerations:
    """A `bot.ports.GenerationStore` in the ``generations`` and ``images`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, new: NewGeneration) -> Generation:
        """Store a new ``queued`` generation, created now, and return it with its id."""
        created_at = self._db.clock()
        async with self._db.lock:
            try:
                rows = await self._db.conn.execute_fetchall(
                    "INSERT INTO generations (platform, workspace, channel, user_id, parent_id, action,"
                    " request, seed, model, backend, warnings, private, created_at, cost)"
                    f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                    (
                        new.platform,
                        new.workspace,
                        new.channel,
                        new.user_id,
                        new.parent_id,
                        new.action,
                        json.dumps(new.request.to_dict(), separators=(",", ":")),
                        new.request.seed,
                        new.request.model,
                        new.backend,
                        json.dumps(list(new.warnings), separators=(",", ":")),
                        int(new.private),
                        created_at,
                        new.cost,
                    ),
                )
            except sqlite3.IntegrityError as error:
                if new.parent_id is not None and "FOREIGN KEY" in str(error):
                    raise KeyError(new.parent_id) from error
                raise
        return _generation(next(iter(rows)), ())

    async def get(self, generation_id: int) -> Generation | None:
        """Return the generation with its images, or None."""
        return await self._one("id = ?", (generation_id,))

    async def latest(self, platform: str, user_id: str, *, status: Status | None = None) -> Generation | None:
        """Return the user's newest generation (optionally only one with that status), or None."""
        check_status(status)
        if status is None:
            return await self._one("platform = ? AND user_id = ?", (platform, user_id))
        return await self._one("platform = ? AND user_id = ? AND status = ?", (platform, user_id, status))

    async def recent(
        self, platform: str, user_id: str, limit: int = 10, before_id: int | None = None
    ) -> list[Generation]:
        """Return up to `limit` of the user's generations, newest first, older than `before_id` if given."""
        check_limit(limit)
        # Two statements rather than "? IS NULL OR id < ?", which would hide the range from the planner.
        if before_id is None:
            return await select_generations(self._db, "platform = ? AND user_id = ?", (platform, user_id), limit=limit)
        where = "platform = ? AND user_id = ? AND id < ?"
        return await select_generations(self._db, where, (platform, user_id, before_id), limit=limit)

    async def mark_running(self, generation_id: int) -> bool:
        """Record that a worker started it now; return False if it had already finished."""
        async with self._db.lock:
            return await self._move(generation_id, "status = 'running', started_at = ?", (self._db.clock(),))

    async def mark_interrupted(self, generation_id: int) -> bool:
        """Put a ``running`` generation back to ``queued``, counting the interruption; False if not running."""
        async with self._db.lock:
            cursor = await self._db.conn.execute(
                "UPDATE generations SET status = 'queued', started_at = NULL, interruptions = interruptions + 1"
                " WHERE id = ? AND status = 'running'",
                (generation_id,),
            )
            return cursor.rowcount == 1

    async def mark_done(
        self,
        generation_id: int,
        images: Sequence[StoredImage],
        cost: float | None = None,
        notes: Sequence[str] = (),
    ) -> bool:
        """Record its images, cost and notes and that it finished now; False (nothing stored) if it had already."""
        ordered = check_images(images)
        async with self._db.transaction():
            moved = await self._move(
                generation_id,
                # json_each walks an array in order, so the notes follow the warnings given at submit.
                f"status = 'done', finished_at = ?, {_ADD_COST}, warnings = (SELECT json_group_array(value) FROM"
                " (SELECT value FROM json_each(warnings) UNION ALL SELECT value FROM json_each(?)))",
                (self._db.clock(), cost, cost, json.dumps(list(notes))),
            )
            if moved and ordered:
                await self._db.conn.executemany(
                    "INSERT INTO images (generation_id, idx, seed, path, sha256, width, height, nsfw)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (generation_id, i.index, i.seed, i.path, i.sha256, i.width, i.height, _flag(i.nsfw))
                        for i in ordered
                    ],
                )
            return moved

    async def mark_failed(self, generation_id: int, error: str, cost: float | None = None) -> bool:
        """Record why it failed and what it cost anyway; return False if it had already finished."""
        async with self._db.lock:
            return await self._move(
                generation_id,
                f"status = 'failed', finished_at = ?, error = ?, {_ADD_COST}",
                (self._db.clock(), error, cost, cost),
            )

    async def mark_cancelled(self, generation_id: int) -> bool:
        """Record that it was cancelled; return False if it had already finished."""
        async with self._db.lock:
            return await self._move(generation_id, "status = 'cancelled', finished_at = ?", (self._db.clock(),))

    async def set_message_ref(self, generation_id: int, ref: str | None) -> None:
        """Remember the chat message that shows it (None forgets it)."""
        await self._set(generation_id, "message_ref = ?", (ref,))

    async def set_starred(self, generation_id: int, starred: bool) -> None:
        """Star it for its server's showcase, now (a second star keeps the first time), or take the star back."""
        starred_at = "starred_at = CASE WHEN ? THEN COALESCE(starred_at, ?) END"
        await self._set(generation_id, starred_at, (int(starred), self._db.clock()))

    async def note_input_source(self, sha256: str, generation_id: int, index: int) -> None:
        """Remember that an input image (the SHA-256 of its checked bytes) is one of a generation's images."""
        async with self._db.lock:
            try:
                await self._db.conn.execute(
                    "INSERT INTO input_sources (generation_id, idx, sha256) VALUES (?, ?, ?)"
                    " ON CONFLICT (generation_id, idx) DO UPDATE SET sha256 = excluded.sha256",
                    (generation_id, index, sha256),
                )
            except sqlite3.IntegrityError:
                raise KeyError(generation_id) from None

    async def find_images(self, platform: str, user_id: str, sha256s: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Return which of the user's images an input image was made from: sha256 → (generation id, image index).

        The oldest, where several were (`GenerationStore.note_input_source` records them).
        """
        wanted = sorted(set(sha256s))[:_MAX_SHAS]
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        async with self._db.lock:
            rows = await self._db.conn.execute_fetchall(
                # CROSS JOIN keeps this order: from the few rows of these images to their generations, where
                # the planner's own choice probed every one of the user's generations (15 ms at 100,000).
                "SELECT s.sha256, g.id, s.idx FROM input_sources AS s CROSS JOIN generations AS g"
                " ON g.id = s.generation_id"
                f" WHERE s.sha256 IN ({marks}) AND g.platform = ? AND g.user_id = ? ORDER BY g.id DESC, s.idx DESC",
                (*wanted, platform, user_id),
            )
        # Oldest last, so it is the one kept: the original, not a later copy of the same bytes.
        return {str(sha): (int(generation_id), int(index)) for sha, generation_id, index in rows}

    async def input_flagged(self, sha256: str) -> bool:
        """Tell whether an input image is one of a generation's images that the safety check flagged."""
        async with self._db.lock:
            rows = list(
                await self._db.conn.execute_fetchall(
                    "SELECT 1 FROM input_sources AS s JOIN images AS i ON i.generation_id = s.generation_id"
                    " AND i.idx = s.idx WHERE s.sha256 = ? AND i.nsfw = 1 LIMIT 1",
                    (sha256,),
                )
            )
        return bool(rows)

    async def by_message_ref(self, platform: str, ref: str) -> Generation | None:
        """Return the (newest) generation shown by that message, or None."""
        return await self._one("platform = ? AND message_ref = ?", (platform, ref))

    async def images_since(self, platform: str, workspace: str, since: float, user_id: str | None = None) -> int:
        """Return how many images the workspace (or one user in it) asked for since a time, not failed ones."""
        rows = await self._db.conn.execute_fetchall(
            "SELECT COALESCE(SUM(json_extract(request, '$.count')), 0) FROM generations"
            " WHERE platform = ? AND workspace = ? AND created_at >= ? AND status NOT IN ('failed', 'cancelled')"
            " AND (? IS NULL OR user_id = ?)",
            (platform, workspace, since, user_id, user_id),
        )
        return int(next(iter(rows))[0])

    async def unfinished(self) -> list[Generation]:
        """Return every ``queued`` or ``running`` generation, oldest first, to resume after a restart."""
        return await select_generations(self._db, _UNFINISHED_SQL, (), newest_first=False)

    async def finished_ids(
        self, *, platform: str | None = None, user_id: str | None = None, before: float | None = None, limit: int = 500
    ) -> list[int]:
        """Return ids of finished generations (of one user, created before a time), oldest first, for deleting."""
        check_limit(limit)
        async with self._db.lock:
            rows = await self._db.conn.execute_fetchall(
                "SELECT id FROM generations WHERE status NOT IN ('queued', 'running')"
                " AND (? IS NULL OR platform = ?) AND (? IS NULL OR user_id = ?) AND (? IS NULL OR created_at < ?)"
                " ORDER BY id LIMIT ?",
                (platform, platform, user_id, user_id, before, before, limit),
            )
        return [int(row[0]) for row in rows]

    async def delete(self, generation_id: int) -> tuple[StoredImage, ...]:
        """Delete it and its image rows; return those images so the caller can delete the files."""
        async with self._db.transaction():
            rows = await self._db.conn.execute_fetchall(
                "SELECT idx, seed, path, sha256, width, height, nsfw FROM images WHERE generation_id = ? ORDER BY idx",
                (generation_id,),
            )
            # images go by ON DELETE CASCADE, children's parent_id by ON DELETE SET NULL.
            await self._db.conn.execute("DELETE FROM generations WHERE id = ?", (generation_id,))
        return tuple(_image(row) for row in rows)

    async def inputs_of(self, generation_ids: Iterable[int]) -> set[str]:
        """Return the SHA-256 of every input image (init image, mask) these generations' requests use."""
        ids = json.dumps(list(generation_ids))
        async with self._db.lock:
            rows = await self._db.conn.execute_fetchall(
                f"SELECT {_INIT_IMAGE}, {_MASK_IMAGE} FROM generations WHERE id IN (SELECT value FROM json_each(?))",
                (ids,),
            )
        return {sha for row in rows for sha in row if isinstance(sha, str)}

    async def unreferenced_inputs(self, shas: Iterable[str]) -> set[str]:
        """Return those of `shas` that no stored generation's request uses as its init image or mask."""
        given = json.dumps(sorted(set(shas)))
        # Two NOT EXISTS, one per expression index; an OR in one subquery would scan the table.
        async with self._db.lock:
            rows = await self._db.conn.execute_fetchall(
                "SELECT value FROM json_each(?) AS given"
                f" WHERE NOT EXISTS (SELECT 1 FROM generations WHERE {_INIT_IMAGE} = given.value)"
                f" AND NOT EXISTS (SELECT 1 FROM generations WHERE {_MASK_IMAGE} = given.value)",
                (given,),
            )
        return {str(row[0]) for row in rows}

    async def _move(self, generation_id: int, assignments: str, values: tuple[Any, ...]) -> bool:
        """Apply a status change to an unfinished generation; the caller holds the lock."""
        cursor = await self._db.conn.execute(
            f"UPDATE generations SET {assignments} WHERE id = ? AND {_UNFINISHED_SQL}",
            (*values, generation_id),
        )
        if cursor.rowcount == 1:
            return True
        exists = await self._db.conn.execute_fetchall("SELECT 1 FROM generations WHERE id = ?", (generation_id,))
        if not list(exists):
            raise KeyError(generation_id)
        return False

    async def _set(self, generation_id: int, assignments: str, values: tuple[Any, ...]) -> None:
        """Change columns of a generation, whatever its status; KeyError if there is none."""
        async with self._db.lock:
            cursor = await self._db.conn.execute(
                f"UPDATE generations SET {assignments} WHERE id = ?", (*values, generation_id)
            )
        if cursor.rowcount == 0:
            raise KeyError(generation_id)

    async def _one(self, where: str, parameters: tuple[Any, ...]) -> Generation | None:
        found = await select_generations(self._db, where, parameters, limit=1)
        return found[0] if found else None


async def select_generations(
    db: Database,
    where: str,
    parameters: tuple[Any, ...],
    *,
    limit: int | None = None,
    newest_first: bool = True,
    matching: str | None = None,
) -> list[Generation]:
    """Fetch the generations matching `where` with their images, in one statement.

    One statement is one hop to the connection's thread and one consistent
    snapshot, without a BEGIN/COMMIT pair around two queries. The LIMIT sits
    in the subquery, so it counts generations, not image rows. The gallery's
    read model (`storage.gallery`) shares it, so both build the same values.

    `matching`, an FTS5 expression over the prompts: the rows come from the prompt index in id
    order and stop at the limit, where an ``id IN (…MATCH…)`` would first read every match
    (0.4 ms against 11 ms for a word in 9,000 of 100,000 prompts).
    """
    order = "DESC" if newest_first else "ASC"
    limit_sql = "" if limit is None else " LIMIT ?"
    if matching is None:
        inner = f"SELECT {_COLUMNS} FROM generations WHERE {where} ORDER BY id {order}{limit_sql}"
    else:
        inner = (
            f"SELECT {_COLUMNS} FROM generation_prompts JOIN generations ON generations.id = generation_prompts.rowid"
            f" WHERE generation_prompts MATCH ? AND {where} ORDER BY generation_prompts.rowid {order}{limit_sql}"
        )
        parameters = (matching, *parameters)
    sql = (
        f"SELECT g.*, {_IMAGE_COLUMNS}"
        f" FROM ({inner}) AS g"
        f" LEFT JOIN images AS i ON i.generation_id = g.id ORDER BY g.id {order}, i.idx"
    )
    if limit is not None:
        parameters = (*parameters, limit)
    async with db.lock:
        rows = await db.conn.execute_fetchall(sql, parameters)
    return _generations(rows)


def _generations(rows: Iterable[Sequence[Any]]) -> list[Generation]:
    """Build Generations from joined rows: the generation's columns, then one image's (NULL if none)."""
    fields: dict[int, Sequence[Any]] = {}
    images: dict[int, list[StoredImage]] = {}
    for row in rows:
        generation_id = row[0]
        if generation_id not in fields:
            fields[generation_id] = row[:_GENERATION_FIELDS]
            images[generation_id] = []
        if row[_GENERATION_FIELDS] is not None:
            images[generation_id].append(_image(row[_GENERATION_FIELDS:]))
    return [_generation(fields[key], tuple(images[key])) for key in fields]


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _image(row: Sequence[Any]) -> StoredImage:
    """Build a StoredImage from its columns (`_IMAGE_COLUMNS`); nsfw is 0, 1 or NULL."""
    index, seed, path, sha256, width, height, nsfw = row
    return StoredImage(index, seed, path, sha256, width, height, None if nsfw is None else bool(nsfw))


def _generation(row: Sequence[Any], images: tuple[StoredImage, ...]) -> Generation:
    """Build a Generation from its columns (`_COLUMNS`), named as they come back."""
    fields = dict(zip(_NAMES, row, strict=True))
    fields.update(
        request=GenerationRequest.from_dict(json.loads(fields["request"])),
        warnings=tuple(json.loads(fields["warnings"])),
        private=bool(fields["private"]),
        starred=bool(fields["starred"]),
    )
    return Generation(**fields, images=images)

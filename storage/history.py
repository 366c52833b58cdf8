"""Every generation a user asked for, with its seed, status and images, so any of them can be rerolled.

`HistoryStore` is the port the service and the queue depend on. `SqliteHistory`
is the real store; `InMemoryHistory` behaves the same with dicts, for fast tests
of the code above it. A queued generation is a ``queued`` row, so a restart can
resume it (`HistoryStore.unfinished`).

Status moves one way: ``queued`` → ``running`` → ``done`` | ``failed`` |
``cancelled``; ``done``, ``failed`` and ``cancelled`` are final. A ``mark_*``
call on a finished generation changes nothing and returns False, which is how a
worker learns that the user cancelled while it was still working.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import aiosqlite

from bot.request import GenerationRequest
from storage import _schema

__all__ = [
    "Action",
    "AuditEntry",
    "Clock",
    "Generation",
    "HistoryStore",
    "InMemoryHistory",
    "NewGeneration",
    "SqliteHistory",
    "Status",
    "StoredImage",
]

Action = Literal["generate", "reroll", "refine"]
Status = Literal["queued", "running", "done", "failed", "cancelled"]
Clock = Callable[[], float]

_ACTIONS: frozenset[str] = frozenset(get_args(Action))
_STATUSES: frozenset[str] = frozenset(get_args(Status))
_UNFINISHED: tuple[Status, ...] = ("queued", "running")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One thing someone did in a server: made, rerolled, refined or deleted an image, was blocked, changed a rule."""

    platform: str
    workspace: str
    user_id: str
    action: str
    generation_id: int | None = None
    detail: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One image file of a generation; `path` is relative to the data directory."""

    index: int
    seed: int
    path: str
    sha256: str
    width: int
    height: int
    nsfw: bool | None = None  # the safety check's verdict; None: the image was not checked


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """What a caller knows about a generation before it is queued.

    Raises:
        ValueError: the request has no seed yet, or `action` is not one of `Action`.
    """

    platform: str
    user_id: str
    request: GenerationRequest
    action: Action
    backend: str
    workspace: str | None = None
    channel: str | None = None
    parent_id: int | None = None
    warnings: tuple[str, ...] = ()
    private: bool = False

    def __post_init__(self) -> None:
        if self.request.seed is None:
            raise ValueError("a generation is stored with its seed; resolve the request's seed first")
        if self.action not in _ACTIONS:
            raise ValueError(f"action must be one of {sorted(_ACTIONS)}, not {self.action!r}")
        # A list passed by a caller would make the frozen dataclass unhashable and mutable.
        object.__setattr__(self, "warnings", tuple(self.warnings))


@dataclass(frozen=True, slots=True)
class Generation:
    """One stored generation: the request that reproduces it, where it stands, and its images."""

    id: int
    platform: str
    workspace: str | None
    channel: str | None
    user_id: str
    parent_id: int | None
    action: Action
    request: GenerationRequest
    seed: int
    model: str
    backend: str
    status: Status
    error: str | None
    warnings: tuple[str, ...]
    private: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    message_ref: str | None
    cost: float | None
    images: tuple[StoredImage, ...] = field(default=())
    interruptions: int = 0

    @property
    def seconds(self) -> float | None:
        """Return how long the backend worked on it, or None until it has started and finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@runtime_checkable
class HistoryStore(Protocol):
    """Where generations, their images and per-user settings are kept.

    Methods that take a generation id raise `KeyError` when there is no such
    generation, except `get` (None) and `delete` (nothing to delete).
    """

    async def add(self, new: NewGeneration) -> Generation:
        """Store a new ``queued`` generation, created now, and return it with its id."""
        ...

    async def get(self, generation_id: int) -> Generation | None:
        """Return the generation with its images, or None."""
        ...

    async def latest(self, platform: str, user_id: str, *, status: Status | None = None) -> Generation | None:
        """Return the user's newest generation (optionally only one with that status), or None."""
        ...

    async def recent(
        self, platform: str, user_id: str, limit: int = 10, before_id: int | None = None
    ) -> list[Generation]:
        """Return up to `limit` of the user's generations, newest first, older than `before_id` if given."""
        ...

    async def mark_running(self, generation_id: int) -> bool:
        """Record that a worker started it now; return False if it had already finished."""
        ...

    async def mark_interrupted(self, generation_id: int) -> bool:
        """Put a ``running`` generation a restart interrupted back to ``queued``, counting the interruption.

        Return False if it was not running.
        """
        ...

    async def mark_done(
        self,
        generation_id: int,
        images: Sequence[StoredImage],
        cost: float | None = None,
        notes: Sequence[str] = (),
    ) -> bool:
        """Record its images, what it cost, notes added to its warnings, and that it finished now.

        Return False (and store nothing) if it had already finished.
        """
        ...

    async def mark_failed(self, generation_id: int, error: str, cost: float | None = None) -> bool:
        """Record why it failed and what it cost anyway; return False if it had already finished."""
        ...

    async def mark_cancelled(self, generation_id: int) -> bool:
        """Record that it was cancelled; return False if it had already finished."""
        ...

    async def set_message_ref(self, generation_id: int, ref: str | None) -> None:
        """Remember the chat message that shows it (None forgets it)."""
        ...

    async def by_message_ref(self, platform: str, ref: str) -> Generation | None:
        """Return the (newest) generation shown by that message, or None."""
        ...

    async def images_since(self, platform: str, workspace: str, since: float, user_id: str | None = None) -> int:
        """Return how many images the workspace (or one user in it) asked for since a time.

        Failed and cancelled generations do not count.
        """
        ...

    async def unfinished(self) -> list[Generation]:
        """Return every ``queued`` or ``running`` generation, oldest first, to resume after a restart."""
        ...

    async def get_settings(self, platform: str, user_id: str) -> dict[str, Any]:
        """Return a copy of the user's saved settings; empty if none were saved."""
        ...

    async def put_settings(self, platform: str, user_id: str, settings: Mapping[str, Any]) -> None:
        """Replace the user's saved settings (any JSON-ready mapping)."""
        ...

    async def get_policy(self, platform: str, workspace: str) -> dict[str, Any]:
        """Return a copy of the workspace's (guild's) saved policy; empty if none was saved."""
        ...

    async def put_policy(self, platform: str, workspace: str, policy: Mapping[str, Any]) -> None:
        """Replace the workspace's (guild's) policy (any JSON-ready mapping)."""
        ...

    async def delete(self, generation_id: int) -> tuple[StoredImage, ...]:
        """Delete it and its image rows; return those images so the caller can delete the files."""
        ...

    async def finished_ids(
        self, *, platform: str | None = None, user_id: str | None = None, before: float | None = None, limit: int = 500
    ) -> list[int]:
        """Return ids of finished generations (of one user, created before a time), oldest first, for deleting."""
        ...

    async def audit(self, entry: AuditEntry) -> None:
        """Record what someone did in a server, now (the entry's `at` is ignored)."""
        ...

    async def recent_audit(self, platform: str, workspace: str, limit: int = 20) -> list[AuditEntry]:
        """Return a server's newest audit entries, newest first."""
        ...

    async def close(self) -> None:
        """Release the store; it cannot be used afterwards."""
        ...


def _check_images(images: Sequence[StoredImage]) -> tuple[StoredImage, ...]:
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


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def _check_status(status: str | None) -> None:
    if status is not None and status not in _STATUSES:
        raise ValueError(f"status must be one of {sorted(_STATUSES)}, not {status!r}")


def _settings_json(settings: Mapping[str, Any]) -> str:
    # ensure_ascii: lone surrogates from chat payloads cannot be encoded as UTF-8 by sqlite3.
    return json.dumps(dict(settings), ensure_ascii=True, separators=(",", ":"), allow_nan=False)


class InMemoryHistory:
    """A `HistoryStore` kept in dicts, for tests; it forgets everything when dropped.

    Args:
        clock: returns the current time in seconds since the epoch.
    """

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._generations: dict[int, Generation] = {}
        self._settings: dict[tuple[str, str], str] = {}
        self._policies: dict[tuple[str, str], str] = {}
        self._audit: list[AuditEntry] = []
        self._last_id = 0

    async def add(self, new: NewGeneration) -> Generation:
        """Store a new ``queued`` generation, created now, and return it with its id."""
        if new.parent_id is not None and new.parent_id not in self._generations:
            raise KeyError(new.parent_id)
        assert new.request.seed is not None  # NewGeneration checks it
        # Round-trip the request as the SQLite store does, so both hand back equal objects.
        request = GenerationRequest.from_dict(json.loads(json.dumps(new.request.to_dict())))
        self._last_id += 1
        generation = Generation(
            id=self._last_id,
            platform=new.platform,
            workspace=new.workspace,
            channel=new.channel,
            user_id=new.user_id,
            parent_id=new.parent_id,
            action=new.action,
            request=request,
            seed=new.request.seed,
            model=new.request.model,
            backend=new.backend,
            status="queued",
            error=None,
            warnings=new.warnings,
            private=new.private,
            created_at=self._clock(),
            started_at=None,
            finished_at=None,
            message_ref=None,
            cost=None,
        )
        self._generations[generation.id] = generation
        return generation

    async def get(self, generation_id: int) -> Generation | None:
        """Return the generation with its images, or None."""
        return self._generations.get(generation_id)

    async def latest(self, platform: str, user_id: str, *, status: Status | None = None) -> Generation | None:
        """Return the user's newest generation (optionally only one with that status), or None."""
        _check_status(status)
        mine = (
            g
            for g in self._generations.values()
            if g.platform == platform and g.user_id == user_id and (status is None or g.status == status)
        )
        return max(mine, key=lambda g: g.id, default=None)

    async def recent(
        self, platform: str, user_id: str, limit: int = 10, before_id: int | None = None
    ) -> list[Generation]:
        """Return up to `limit` of the user's generations, newest first, older than `before_id` if given."""
        _check_limit(limit)
        mine = [
            g
            for g in self._generations.values()
            if g.platform == platform and g.user_id == user_id and (before_id is None or g.id < before_id)
        ]
        return sorted(mine, key=lambda g: g.id, reverse=True)[:limit]

    async def mark_running(self, generation_id: int) -> bool:
        """Record that a worker started it now; return False if it had already finished."""
        return self._move(generation_id, status="running", started_at=self._clock())

    async def mark_interrupted(self, generation_id: int) -> bool:
        """Put a ``running`` generation back to ``queued``, counting the interruption; False if not running."""
        generation = self._generations[generation_id]
        if generation.status != "running":
            return False
        return self._move(generation_id, status="queued", started_at=None, interruptions=generation.interruptions + 1)

    async def mark_done(
        self,
        generation_id: int,
        images: Sequence[StoredImage],
        cost: float | None = None,
        notes: Sequence[str] = (),
    ) -> bool:
        """Record its images, cost and notes and that it finished now; False (nothing stored) if it had already."""
        ordered = _check_images(images)
        generation = self._generations.get(generation_id)
        warnings = (generation.warnings if generation else ()) + tuple(notes)
        return self._move(
            generation_id, status="done", finished_at=self._clock(), images=ordered, cost=cost, warnings=warnings
        )

    async def mark_failed(self, generation_id: int, error: str, cost: float | None = None) -> bool:
        """Record why it failed and what it cost anyway; return False if it had already finished."""
        return self._move(generation_id, status="failed", finished_at=self._clock(), error=error, cost=cost)

    async def mark_cancelled(self, generation_id: int) -> bool:
        """Record that it was cancelled; return False if it had already finished."""
        return self._move(generation_id, status="cancelled", finished_at=self._clock())

    async def set_message_ref(self, generation_id: int, ref: str | None) -> None:
        """Remember the chat message that shows it (None forgets it)."""
        generation = self._generations[generation_id]
        self._generations[generation_id] = dataclasses.replace(generation, message_ref=ref)

    async def by_message_ref(self, platform: str, ref: str) -> Generation | None:
        """Return the (newest) generation shown by that message, or None."""
        shown = (g for g in self._generations.values() if g.platform == platform and g.message_ref == ref)
        return max(shown, key=lambda g: g.id, default=None)

    async def images_since(self, platform: str, workspace: str, since: float, user_id: str | None = None) -> int:
        """Return how many images the workspace (or one user in it) asked for since a time, not failed ones."""
        return sum(
            g.request.count
            for g in self._generations.values()
            if (g.platform, g.workspace) == (platform, workspace)
            and user_id in (None, g.user_id)
            and g.created_at >= since
            and g.status not in ("failed", "cancelled")
        )

    async def unfinished(self) -> list[Generation]:
        """Return every ``queued`` or ``running`` generation, oldest first, to resume after a restart."""
        return sorted((g for g in self._generations.values() if g.status in _UNFINISHED), key=lambda g: g.id)

    async def get_settings(self, platform: str, user_id: str) -> dict[str, Any]:
        """Return a copy of the user's saved settings; empty if none were saved."""
        stored = self._settings.get((platform, user_id))
        return {} if stored is None else dict(json.loads(stored))

    async def put_settings(self, platform: str, user_id: str, settings: Mapping[str, Any]) -> None:
        """Replace the user's saved settings (any JSON-ready mapping)."""
        # Stored as JSON, as in SQLite, so a caller mutating its dict later changes nothing here.
        self._settings[(platform, user_id)] = _settings_json(settings)

    async def get_policy(self, platform: str, workspace: str) -> dict[str, Any]:
        """Return a copy of the workspace's (guild's) saved policy; empty if none was saved."""
        stored = self._policies.get((platform, workspace))
        return {} if stored is None else dict(json.loads(stored))

    async def put_policy(self, platform: str, workspace: str, policy: Mapping[str, Any]) -> None:
        """Replace the workspace's (guild's) policy (any JSON-ready mapping)."""
        self._policies[(platform, workspace)] = _settings_json(policy)

    async def delete(self, generation_id: int) -> tuple[StoredImage, ...]:
        """Delete it and its image rows; return those images so the caller can delete the files."""
        generation = self._generations.pop(generation_id, None)
        if generation is None:
            return ()
        # Mirrors ON DELETE SET NULL: rerolls of a deleted image stay, without their parent.
        for child in [g for g in self._generations.values() if g.parent_id == generation_id]:
            self._generations[child.id] = dataclasses.replace(child, parent_id=None)
        return generation.images

    async def finished_ids(
        self, *, platform: str | None = None, user_id: str | None = None, before: float | None = None, limit: int = 500
    ) -> list[int]:
        """Return ids of finished generations (of one user, created before a time), oldest first, for deleting."""
        _check_limit(limit)
        found = sorted(
            g.id
            for g in self._generations.values()
            if g.status not in _UNFINISHED
            and platform in (None, g.platform)
            and user_id in (None, g.user_id)
            and (before is None or g.created_at < before)
        )
        return found[:limit]

    async def audit(self, entry: AuditEntry) -> None:
        """Record what someone did in a server, now."""
        self._audit.append(dataclasses.replace(entry, at=self._clock()))

    async def recent_audit(self, platform: str, workspace: str, limit: int = 20) -> list[AuditEntry]:
        """Return a server's newest audit entries, newest first."""
        _check_limit(limit)
        mine = [e for e in self._audit if (e.platform, e.workspace) == (platform, workspace)]
        return mine[::-1][:limit]

    async def close(self) -> None:
        """Release the store (nothing to release in memory)."""

    def _move(self, generation_id: int, **changes: Any) -> bool:
        generation = self._generations[generation_id]
        if generation.status not in _UNFINISHED:
            return False
        self._generations[generation_id] = dataclasses.replace(generation, **changes)
        return True


_COLUMNS = (
    "id, platform, workspace, channel, user_id, parent_id, action, request, seed, model, backend, status,"
    " error, warnings, private, created_at, started_at, finished_at, message_ref, cost, interruptions"
)
_IMAGE_COLUMNS = "i.idx, i.seed, i.path, i.sha256, i.width, i.height, i.nsfw"
_GENERATION_FIELDS = 21
_UNFINISHED_SQL = "status IN ('queued', 'running')"


class SqliteHistory:
    """A `HistoryStore` in one SQLite file, through one aiosqlite connection.

    aiosqlite runs every statement on the connection's own thread, so the event
    loop never blocks. Coroutines share that one connection, so each operation
    holds a lock for its whole transaction: otherwise one coroutine's statements
    would land inside another's open transaction and commit or roll back with it.

    Create it with `SqliteHistory.open`, not the constructor.
    """

    def __init__(self, conn: aiosqlite.Connection, clock: Clock = time.time) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, clock: Clock = time.time) -> SqliteHistory:
        """Open (or create) the database file and bring its schema up to date.

        Args:
            path: the SQLite file; its directory is created if missing. ``":memory:"`` works too.
            clock: returns the current time in seconds since the epoch.

        Returns:
            The open store; `close` it when done.
        """
        if str(path) != ":memory:":
            await asyncio.to_thread(Path(path).parent.mkdir, parents=True, exist_ok=True)
        conn = await _schema.connect(path)
        try:
            await _schema.migrate(conn)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, clock)

    async def close(self) -> None:
        """Wait for the operation in progress, then close the connection."""
        async with self._lock:
            await self._conn.close()

    async def add(self, new: NewGeneration) -> Generation:
        """Store a new ``queued`` generation, created now, and return it with its id."""
        request_json = json.dumps(new.request.to_dict(), separators=(",", ":"))
        warnings_json = json.dumps(list(new.warnings), separators=(",", ":"))
        created_at = self._clock()
        async with self._lock:
            try:
                cursor = await self._conn.execute(
                    "INSERT INTO generations (platform, workspace, channel, user_id, parent_id, action,"
                    " request, seed, model, backend, warnings, private, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new.platform,
                        new.workspace,
                        new.channel,
                        new.user_id,
                        new.parent_id,
                        new.action,
                        request_json,
                        new.request.seed,
                        new.request.model,
                        new.backend,
                        warnings_json,
                        int(new.private),
                        created_at,
                    ),
                )
            except sqlite3.IntegrityError as error:
                if new.parent_id is not None and "FOREIGN KEY" in str(error):
                    raise KeyError(new.parent_id) from error
                raise
        assert cursor.lastrowid is not None and new.request.seed is not None
        return Generation(
            id=cursor.lastrowid,
            platform=new.platform,
            workspace=new.workspace,
            channel=new.channel,
            user_id=new.user_id,
            parent_id=new.parent_id,
            action=new.action,
            request=GenerationRequest.from_dict(json.loads(request_json)),
            seed=new.request.seed,
            model=new.request.model,
            backend=new.backend,
            status="queued",
            error=None,
            warnings=new.warnings,
            private=new.private,
            created_at=created_at,
            started_at=None,
            finished_at=None,
            message_ref=None,
            cost=None,
        )

    async def get(self, generation_id: int) -> Generation | None:
        """Return the generation with its images, or None."""
        return await self._one("id = ?", (generation_id,))

    async def latest(self, platform: str, user_id: str, *, status: Status | None = None) -> Generation | None:
        """Return the user's newest generation (optionally only one with that status), or None."""
        _check_status(status)
        if status is None:
            return await self._one("platform = ? AND user_id = ?", (platform, user_id))
        return await self._one("platform = ? AND user_id = ? AND status = ?", (platform, user_id, status))

    async def recent(
        self, platform: str, user_id: str, limit: int = 10, before_id: int | None = None
    ) -> list[Generation]:
        """Return up to `limit` of the user's generations, newest first, older than `before_id` if given."""
        _check_limit(limit)
        # Two statements rather than "? IS NULL OR id < ?", which would hide the range from the planner.
        if before_id is None:
            return await self._many("platform = ? AND user_id = ?", (platform, user_id), limit=limit)
        where = "platform = ? AND user_id = ? AND id < ?"
        return await self._many(where, (platform, user_id, before_id), limit=limit)

    async def mark_running(self, generation_id: int) -> bool:
        """Record that a worker started it now; return False if it had already finished."""
        async with self._lock:
            return await self._move(generation_id, "status = 'running', started_at = ?", (self._clock(),))

    async def mark_interrupted(self, generation_id: int) -> bool:
        """Put a ``running`` generation back to ``queued``, counting the interruption; False if not running."""
        async with self._lock:
            cursor = await self._conn.execute(
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
        ordered = _check_images(images)
        async with self._transaction():
            moved = await self._move(
                generation_id,
                # json_each walks an array in order, so the notes follow the warnings given at submit.
                "status = 'done', finished_at = ?, cost = ?, warnings = (SELECT json_group_array(value) FROM"
                " (SELECT value FROM json_each(warnings) UNION ALL SELECT value FROM json_each(?)))",
                (self._clock(), cost, json.dumps(list(notes))),
            )
            if moved and ordered:
                await self._conn.executemany(
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
        async with self._lock:
            return await self._move(
                generation_id, "status = 'failed', finished_at = ?, error = ?, cost = ?", (self._clock(), error, cost)
            )

    async def mark_cancelled(self, generation_id: int) -> bool:
        """Record that it was cancelled; return False if it had already finished."""
        async with self._lock:
            return await self._move(generation_id, "status = 'cancelled', finished_at = ?", (self._clock(),))

    async def set_message_ref(self, generation_id: int, ref: str | None) -> None:
        """Remember the chat message that shows it (None forgets it)."""
        async with self._lock:
            cursor = await self._conn.execute(
                "UPDATE generations SET message_ref = ? WHERE id = ?", (ref, generation_id)
            )
        if cursor.rowcount == 0:
            raise KeyError(generation_id)

    async def by_message_ref(self, platform: str, ref: str) -> Generation | None:
        """Return the (newest) generation shown by that message, or None."""
        return await self._one("platform = ? AND message_ref = ?", (platform, ref))

    async def images_since(self, platform: str, workspace: str, since: float, user_id: str | None = None) -> int:
        """Return how many images the workspace (or one user in it) asked for since a time, not failed ones."""
        rows = await self._conn.execute_fetchall(
            "SELECT COALESCE(SUM(json_extract(request, '$.count')), 0) FROM generations"
            " WHERE platform = ? AND workspace = ? AND created_at >= ? AND status NOT IN ('failed', 'cancelled')"
            " AND (? IS NULL OR user_id = ?)",
            (platform, workspace, since, user_id, user_id),
        )
        return int(next(iter(rows))[0])

    async def unfinished(self) -> list[Generation]:
        """Return every ``queued`` or ``running`` generation, oldest first, to resume after a restart."""
        return await self._many(_UNFINISHED_SQL, (), newest_first=False)

    async def get_settings(self, platform: str, user_id: str) -> dict[str, Any]:
        """Return a copy of the user's saved settings; empty if none were saved."""
        return await self._get_document("user_settings", "settings", "user_id", platform, user_id)

    async def put_settings(self, platform: str, user_id: str, settings: Mapping[str, Any]) -> None:
        """Replace the user's saved settings (any JSON-ready mapping)."""
        await self._put_document("user_settings", "settings", "user_id", platform, user_id, settings)

    async def get_policy(self, platform: str, workspace: str) -> dict[str, Any]:
        """Return a copy of the workspace's (guild's) saved policy; empty if none was saved."""
        return await self._get_document("policies", "policy", "workspace", platform, workspace)

    async def put_policy(self, platform: str, workspace: str, policy: Mapping[str, Any]) -> None:
        """Replace the workspace's (guild's) policy (any JSON-ready mapping)."""
        await self._put_document("policies", "policy", "workspace", platform, workspace, policy)

    async def finished_ids(
        self, *, platform: str | None = None, user_id: str | None = None, before: float | None = None, limit: int = 500
    ) -> list[int]:
        """Return ids of finished generations (of one user, created before a time), oldest first, for deleting."""
        _check_limit(limit)
        async with self._lock:
            rows = await self._conn.execute_fetchall(
                "SELECT id FROM generations WHERE status NOT IN ('queued', 'running')"
                " AND (? IS NULL OR platform = ?) AND (? IS NULL OR user_id = ?) AND (? IS NULL OR created_at < ?)"
                " ORDER BY id LIMIT ?",
                (platform, platform, user_id, user_id, before, before, limit),
            )
        return [int(row[0]) for row in rows]

    async def audit(self, entry: AuditEntry) -> None:
        """Record what someone did in a server, now."""
        async with self._lock:
            await self._conn.execute(
                "INSERT INTO audit (platform, workspace, user_id, action, generation_id, detail, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.platform,
                    entry.workspace,
                    entry.user_id,
                    entry.action,
                    entry.generation_id,
                    entry.detail,
                    self._clock(),
                ),
            )

    async def recent_audit(self, platform: str, workspace: str, limit: int = 20) -> list[AuditEntry]:
        """Return a server's newest audit entries, newest first."""
        _check_limit(limit)
        async with self._lock:
            rows = await self._conn.execute_fetchall(
                "SELECT platform, workspace, user_id, action, generation_id, detail, at FROM audit"
                " WHERE platform = ? AND workspace = ? ORDER BY id DESC LIMIT ?",
                (platform, workspace, limit),
            )
        return [AuditEntry(*row) for row in rows]

    # Settings and policies are one JSON document per (platform, key); table and column names are ours.
    async def _get_document(self, table: str, column: str, key: str, platform: str, value: str) -> dict[str, Any]:
        async with self._lock:
            rows = list(
                await self._conn.execute_fetchall(
                    f"SELECT {column} FROM {table} WHERE platform = ? AND {key} = ?", (platform, value)
                )
            )
        return dict(json.loads(rows[0][0])) if rows else {}

    async def _put_document(
        self, table: str, column: str, key: str, platform: str, value: str, document: Mapping[str, Any]
    ) -> None:
        text = _settings_json(document)
        async with self._lock:
            await self._conn.execute(
                f"INSERT INTO {table} (platform, {key}, {column}, updated_at) VALUES (?, ?, ?, ?)"
                f" ON CONFLICT (platform, {key}) DO UPDATE"
                f" SET {column} = excluded.{column}, updated_at = excluded.updated_at",
                (platform, value, text, self._clock()),
            )

    async def delete(self, generation_id: int) -> tuple[StoredImage, ...]:
        """Delete it and its image rows; return those images so the caller can delete the files."""
        async with self._transaction():
            rows = await self._conn.execute_fetchall(
                "SELECT idx, seed, path, sha256, width, height, nsfw FROM images WHERE generation_id = ? ORDER BY idx",
                (generation_id,),
            )
            # images go by ON DELETE CASCADE, children's parent_id by ON DELETE SET NULL.
            await self._conn.execute("DELETE FROM generations WHERE id = ?", (generation_id,))
        return tuple(_image(row) for row in rows)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """Hold the lock and one write transaction; commit on success, roll back on any error.

        IMMEDIATE takes the write lock at BEGIN, so a writer in another process
        makes us wait there (busy_timeout) instead of failing halfway through.
        """
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                yield
                await self._conn.execute("COMMIT")
            except BaseException:
                # Also after a cancellation mid-BEGIN or a failed COMMIT: the statement may still run
                # on the connection's thread. sqlite3's rollback() is queued behind it and does nothing
                # when no transaction is open; shielded, so a second cancellation cannot skip it.
                await asyncio.shield(self._conn.rollback())
                raise

    async def _move(self, generation_id: int, assignments: str, values: tuple[Any, ...]) -> bool:
        """Apply a status change to an unfinished generation; the caller holds the lock."""
        cursor = await self._conn.execute(
            f"UPDATE generations SET {assignments} WHERE id = ? AND {_UNFINISHED_SQL}",
            (*values, generation_id),
        )
        if cursor.rowcount == 1:
            return True
        exists = await self._conn.execute_fetchall("SELECT 1 FROM generations WHERE id = ?", (generation_id,))
        if not list(exists):
            raise KeyError(generation_id)
        return False

    async def _one(self, where: str, parameters: tuple[Any, ...]) -> Generation | None:
        found = await self._many(where, parameters, limit=1)
        return found[0] if found else None

    async def _many(
        self, where: str, parameters: tuple[Any, ...], *, limit: int | None = None, newest_first: bool = True
    ) -> list[Generation]:
        """Fetch the generations matching `where` with their images, in one statement.

        One statement is one hop to the connection's thread and one consistent
        snapshot, without a BEGIN/COMMIT pair around two queries. The LIMIT sits
        in the subquery, so it counts generations, not image rows.
        """
        order = "DESC" if newest_first else "ASC"
        limit_sql = "" if limit is None else " LIMIT ?"
        sql = (
            f"SELECT g.*, {_IMAGE_COLUMNS}"
            f" FROM (SELECT {_COLUMNS} FROM generations WHERE {where} ORDER BY id {order}{limit_sql}) AS g"
            f" LEFT JOIN images AS i ON i.generation_id = g.id ORDER BY g.id {order}, i.idx"
        )
        if limit is not None:
            parameters = (*parameters, limit)
        async with self._lock:
            rows = await self._conn.execute_fetchall(sql, parameters)
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
    (
        id_,
        platform,
        workspace,
        channel,
        user_id,
        parent_id,
        action,
        request,
        seed,
        model,
        backend,
        status,
        error,
        warnings,
        private,
        created_at,
        started_at,
        finished_at,
        message_ref,
        cost,
        interruptions,
    ) = row
    return Generation(
        id=id_,
        platform=platform,
        workspace=workspace,
        channel=channel,
        user_id=user_id,
        parent_id=parent_id,
        action=action,
        request=GenerationRequest.from_dict(json.loads(request)),
        seed=seed,
        model=model,
        backend=backend,
        status=status,
        error=error,
        warnings=tuple(json.loads(warnings)),
        private=bool(private),
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        message_ref=message_ref,
        cost=cost,
        images=images,
        interruptions=interruptions,
    )

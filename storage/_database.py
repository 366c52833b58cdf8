"""One SQLite file shared by the stores, through one aiosqlite connection.

aiosqlite runs every statement on the connection's own thread, so the event
loop never blocks. Coroutines share that one connection, so each operation
holds the database's lock for its whole transaction: otherwise one coroutine's
statements would land inside another's open transaction and commit or roll back
with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiosqlite

from storage import _schema

__all__ = ["Clock", "Database", "check_limit"]

Clock = Callable[[], float]


def check_limit(limit: int) -> None:
    """Refuse a row limit below 1, which SQLite would read as no limit at all."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def document_json(document: Mapping[str, Any]) -> str:
    """Return a settings or policy document as the JSON the tables keep."""
    # ensure_ascii: lone surrogates from chat payloads cannot be encoded as UTF-8 by sqlite3.
    return json.dumps(dict(document), ensure_ascii=True, separators=(",", ":"), allow_nan=False)


class Database:
    """The open connection, its lock and the clock every store of one file shares.

    Create it with `Database.open`, not the constructor.
    """

    def __init__(self, conn: aiosqlite.Connection, clock: Clock = time.time) -> None:
        self.conn = conn
        self.clock = clock
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, clock: Clock = time.time) -> Database:
        """Open (or create) the database file and bring its schema up to date.

        Args:
            path: the SQLite file; its directory is created if missing. ``":memory:"`` works too.
            clock: returns the current time in seconds since the epoch.

        Returns:
            The open database; `close` it when done.
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
        async with self.lock:
            await self.conn.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Hold the lock and one write transaction; commit on success, roll back on any error.

        IMMEDIATE takes the write lock at BEGIN, so a writer in another process
        makes us wait there (busy_timeout) instead of failing halfway through.
        """
        async with self.lock:
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
                yield
                await self.conn.execute("COMMIT")
            except BaseException:
                # Also after a cancellation mid-BEGIN or a failed COMMIT: the statement may still run
                # on the connection's thread. sqlite3's rollback() is queued behind it and does nothing
                # when no transaction is open; shielded, so a second cancellation cannot skip it.
                await asyncio.shield(self.conn.rollback())
                raise

    # Settings and policies are one JSON document per (platform, key); table and column names are ours.
    async def get_document(self, table: str, column: str, key: str, platform: str, value: str) -> dict[str, Any]:
        """Return the JSON document stored under (platform, value), or an empty one."""
        async with self.lock:
            rows = list(
                await self.conn.execute_fetchall(
                    f"SELECT {column} FROM {table} WHERE platform = ? AND {key} = ?", (platform, value)
                )
            )
        return dict(json.loads(rows[0][0])) if rows else {}

    async def put_document(
        self, table: str, column: str, key: str, platform: str, value: str, document: Mapping[str, Any]
    ) -> None:
        """Replace the JSON document stored under (platform, value)."""
        text = document_json(document)
        async with self.lock:
            await self.conn.execute(
                f"INSERT INTO {table} (platform, {key}, {column}, updated_at) VALUES (?, ?, ?, ?)"
                f" ON CONFLICT (platform, {key}) DO UPDATE"
                f" SET {column} = excluded.{column}, updated_at = excluded.updated_at",
                (platform, value, text, self.clock()),
            )

"""Durable state: the core's stores in one SQLite file, and image files under the data directory."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from storage._database import Clock, Database
from storage.files import ImageFiles
from storage.gallery import SqliteGallery
from storage.generations import SqliteGenerations
from storage.policies import SqlitePolicies
from storage.settings import SqliteSettings

__all__ = ["ImageFiles", "SqliteDatabase", "SqliteGallery", "SqliteGenerations", "SqlitePolicies", "SqliteSettings"]


@dataclass(frozen=True, slots=True)
class SqliteDatabase:
    """The stores of one SQLite file, sharing its connection: generations, policies, user settings.

    Open it with `SqliteDatabase.open`; `close` it when done.
    """

    db: Database
    generations: SqliteGenerations
    policies: SqlitePolicies
    settings: SqliteSettings

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, clock: Clock = time.time) -> SqliteDatabase:
        """Open (or create) the file, bring its schema up to date, and return its stores."""
        db = await Database.open(path, clock=clock)
        return cls(db, SqliteGenerations(db), SqlitePolicies(db), SqliteSettings(db))

    async def close(self) -> None:
        """Wait for the operation in progress, then close the connection."""
        await self.db.close()

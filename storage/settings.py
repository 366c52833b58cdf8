"""Each user's saved defaults, one JSON document per (platform, user)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storage._database import Database

__all__ = ["SqliteSettings"]


class SqliteSettings:
    """A `bot.ports.SettingsStore` in the ``user_settings`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, platform: str, user_id: str) -> dict[str, Any]:
        """Return a copy of the user's saved settings; empty if none were saved."""
        return await self._db.get_document("user_settings", "settings", "user_id", platform, user_id)

    async def put(self, platform: str, user_id: str, settings: Mapping[str, Any]) -> None:
        """Replace the user's saved settings (any JSON-ready mapping)."""
        await self._db.put_document("user_settings", "settings", "user_id", platform, user_id, settings)

"""Each server's (guild's, workspace's) rules, one JSON document each, and its audit log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.history import AuditEntry
from storage._database import Database, check_limit

__all__ = ["SqlitePolicies"]


class SqlitePolicies:
    """A `bot.ports.PolicyStore` in the ``policies`` and ``audit`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, platform: str, workspace: str) -> dict[str, Any]:
        """Return a copy of the server's saved rules; empty if none were saved."""
        return await self._db.get_document("policies", "policy", "workspace", platform, workspace)

    async def put(self, platform: str, workspace: str, policy: Mapping[str, Any]) -> None:
        """Replace the server's rules (any JSON-ready mapping)."""
        await self._db.put_document("policies", "policy", "workspace", platform, workspace, policy)

    async def audit(self, entry: AuditEntry) -> None:
        """Record what someone did in a server, now."""
        async with self._db.lock:
            await self._db.conn.execute(
                "INSERT INTO audit (platform, workspace, user_id, action, generation_id, detail, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.platform,
                    entry.workspace,
                    entry.user_id,
                    entry.action,
                    entry.generation_id,
                    entry.detail,
                    self._db.clock(),
                ),
            )

    async def recent_audit(self, platform: str, workspace: str, limit: int = 20) -> list[AuditEntry]:
        """Return a server's newest audit entries, newest first."""
        check_limit(limit)
        async with self._db.lock:
            rows = await self._db.conn.execute_fetchall(
                "SELECT platform, workspace, user_id, action, generation_id, detail, at FROM audit"
                " WHERE platform = ? AND workspace = ? ORDER BY id DESC LIMIT ?",
                (platform, workspace, limit),
            )
        return [AuditEntry(*row) for row in rows]

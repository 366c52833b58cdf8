"""Sync the slash commands only when their definitions changed since the last sync.

Discord rate-limits the bulk overwrite that ``CommandTree.sync`` sends, so a bot
that restarts often must not send it on every start. The record is a small JSON
file mapping ``<application id>:<guild id or "global">`` to a hash of the exact
payload the last successful sync sent. Deleting the file forces the next start
to sync, for instance after the commands were changed with another tool.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

__all__ = ["RECORD_NAME", "sync_commands"]

log = logging.getLogger(__name__)

RECORD_NAME = "discord-commands.json"


async def sync_commands(
    tree: app_commands.CommandTree[Any], *, guild: discord.abc.Snowflake | None, record: Path | None
) -> bool:
    """Sync the tree's commands for `guild` (``None``: global) unless `record` shows this payload was synced.

    Args:
        tree: the bot's command tree, its commands added.
        guild: the guild the commands are synced to, or ``None`` for the global commands.
        record: the file holding the hashes of past syncs; ``None`` syncs every time.

    Returns:
        Whether the commands were synced.
    """
    key = f"{tree.client.application_id}:{guild.id if guild is not None else 'global'}"
    digest = await _payload_hash(tree, guild)
    synced = _read(record) if record is not None else {}
    if synced.get(key) == digest:
        log.info("slash commands for %s unchanged since the last sync; not syncing", key)
        return False
    # A failed sync raises here, before the hash is stored, so the next start tries again.
    await tree.sync(guild=guild)
    if record is not None:
        try:
            _write(record, {**synced, key: digest})
        except OSError as error:  # the commands are synced: the next start merely syncs once more
            log.warning("could not record the command sync in %s: %s", record, error)
    log.info("slash commands for %s synced", key)
    return True


async def _payload_hash(tree: app_commands.CommandTree[Any], guild: discord.abc.Snowflake | None) -> str:
    """Hash the payload ``tree.sync(guild=guild)`` would send, in the same way it builds it."""
    commands = tree.get_commands(guild=guild)
    translator = tree.translator
    if translator is not None:
        payload = [await command.get_translated_payload(tree, translator) for command in commands]
    else:
        payload = [command.to_dict(tree) for command in commands]
    # Discord keys commands by type and name, so the order they were added in does not count.
    payload.sort(key=lambda command: (command.get("type", 1), command["name"]))
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _read(record: Path) -> dict[str, str]:
    """Return the stored hashes; a missing or unreadable record holds none."""
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("ignoring the unreadable command sync record %s: %s", record, error)
        return {}
    if not isinstance(data, dict):
        log.warning("ignoring the command sync record %s: not a JSON object", record)
        return {}
    return {str(key): str(value) for key, value in data.items()}


def _write(record: Path, hashes: dict[str, str]) -> None:
    """Replace the record in one step, so a crash mid-write leaves the old one."""
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(record.name + ".tmp")
    partial.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, record)

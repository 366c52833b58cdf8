"""``imagebot doctor``: check the configuration before (or while) the bot runs, one line per check.

Each check says what it found, or, when it fails, one sentence with the fix.
Secrets are reported as set or not set, never shown. Nothing is changed: the
database is read, not migrated; the GPU is probed in a child process, so this
process never imports torch (the same rule as the bot's).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

from bot.catalog import load_catalog
from bot.config import SETTINGS, CoreSettings, settings_problem
from bot.plugins import Check
from bot.wildcards import load_wildcards
from imagebot.plugins import backend_plugins, chat_plugins

__all__ = ["Check", "check_all", "report"]


def report(checks: list[Check]) -> str:
    """Return the checks as a table, one line each."""
    width = max(len(check.name) for check in checks)
    return "\n".join(f"{'✔' if check.ok else '✖'} {check.name:<{width}}  {check.detail}" for check in checks)


async def check_all(*, running: bool = False) -> list[Check]:
    """Run every check that applies to the configuration in the environment.

    The storage checks are the doctor's own; each chat and each backend in use
    (the configured one and those catalog models are pinned to) runs its own.

    Args:
        running: the bot is running (a health check): its own worker holds GPU memory,
            so free VRAM is reported, not required.
    """
    checks = [_settings()]
    if not checks[0].ok:
        return checks  # everything else reads the settings
    core = CoreSettings()
    catalog = load_catalog(core.catalog)
    checks += [
        await _data_dir(core.data_dir),
        await _database(core.data_dir / "imagebot.sqlite3"),
        await _wildcards(core),
    ]
    for chat in chat_plugins().values():
        checks += await chat.checks()
    wanted = {core.backend} | {m.backend for m in catalog.entries("model") if m.backend}
    plugins = backend_plugins()
    for name in sorted(wanted):
        if name not in plugins:
            checks.append(Check("backend", False, f"{name} is not installed; use {', '.join(plugins)}."))
            continue
        checks += await plugins[name].checks(catalog, core, running=running)
    return checks


async def _wildcards(core: CoreSettings) -> Check:
    """Read the wildcard files as the bot reads them at start (`bot.wildcards`)."""
    folder = core.wildcard_folder
    if not folder.is_dir():
        if core.wildcards is not None:
            return Check("wildcards", False, f"IMAGEBOT_WILDCARDS: {folder} is not a folder; make it, or unset it.")
        return Check("wildcards", True, f"none: files of choices in {folder} would be drawn from with __name__")
    try:
        library = await asyncio.to_thread(load_wildcards, folder)
    except (OSError, ValueError) as error:
        return Check(
            "wildcards", False, f"{error}; mend it: a starting bot refuses it, a running one keeps the last good files."
        )
    choices = sum(len(lines) for lines in library.values())
    return Check("wildcards", True, f"{len(library)} files of {choices} choices in {folder}")


def _settings() -> Check:
    problem = settings_problem()
    if problem is not None:
        return Check("settings", False, problem)
    return Check("settings", True, f"{sum(len(s.model_fields) for s in SETTINGS)} settings valid")


async def _data_dir(path: Path) -> Check:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as error:
        return Check(
            "data dir",
            False,
            f"{path} is not writable ({error.strerror}); point IMAGEBOT_DATA_DIR at a folder you own.",
        )
    return Check("data dir", True, f"{path.resolve()} is writable")


async def _database(path: Path) -> Check:
    from storage._schema import SCHEMA_VERSION

    if not path.exists():
        return Check("database", True, f"{path.name} will be created on the first start (schema {SCHEMA_VERSION})")

    def version() -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    try:
        found = await asyncio.to_thread(version)
    except sqlite3.Error as error:
        return Check("database", False, f"{path} cannot be read ({error}); restore it from a backup or move it away.")
    if found > SCHEMA_VERSION:
        return Check(
            "database", False, f"schema {found} is newer than this imagebot's ({SCHEMA_VERSION}); upgrade imagebot."
        )
    if found < SCHEMA_VERSION:
        return Check("database", True, f"schema {found}; migrated to {SCHEMA_VERSION} on the next start")
    return Check("database", True, f"schema {found}, current")

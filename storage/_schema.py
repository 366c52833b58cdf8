"""The SQLite schema, its migrations, and how every connection is opened.

Migration ``i`` brings ``PRAGMA user_version`` from ``i`` to ``i + 1``; each runs
in its own ``BEGIN IMMEDIATE`` transaction together with the version bump, so a
crash leaves the file at a whole version and two processes opening the same
file at once cannot both apply a migration. Append new migrations; never edit
one that has shipped.

SQLite ignores ``PRAGMA foreign_keys`` inside a transaction, so a future
migration that rebuilds a table must not rely on switching it off.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence

import aiosqlite

__all__ = ["BUSY_TIMEOUT_MS", "MIGRATIONS", "SCHEMA_VERSION", "connect", "migrate", "user_version"]

BUSY_TIMEOUT_MS = 5000

MIGRATIONS: list[str] = [
    # 1: generations, their images, per-user settings, per-workspace policy.
    """
    CREATE TABLE generations (
        -- AUTOINCREMENT: ids are in button custom_ids, so a deleted id must never come back.
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        platform    TEXT NOT NULL,
        workspace   TEXT,
        channel     TEXT,
        user_id     TEXT NOT NULL,
        parent_id   INTEGER REFERENCES generations (id) ON DELETE SET NULL,
        action      TEXT NOT NULL CHECK (action IN ('generate', 'reroll', 'refine')),
        request     TEXT NOT NULL CHECK (json_valid(request)),
        seed        INTEGER NOT NULL,
        model       TEXT NOT NULL,
        backend     TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        error       TEXT,
        warnings    TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(warnings)),
        private     INTEGER NOT NULL DEFAULT 0 CHECK (private IN (0, 1)),
        created_at  REAL NOT NULL,
        started_at  REAL,
        finished_at REAL,
        message_ref TEXT,
        cost        REAL
    ) STRICT;

    -- "latest/recent of this user": an index range read newest first, no sort.
    CREATE INDEX generations_user_latest ON generations (platform, user_id, id DESC);
    -- a reaction or button on a posted message finds its generation.
    CREATE INDEX generations_message_ref ON generations (platform, message_ref)
        WHERE message_ref IS NOT NULL;
    -- resuming after a restart reads only the few unfinished rows.
    CREATE INDEX generations_unfinished ON generations (status, id)
        WHERE status IN ('queued', 'running');
    -- ON DELETE SET NULL looks children up by parent; without this a delete scans the table.
    CREATE INDEX generations_parent ON generations (parent_id) WHERE parent_id IS NOT NULL;

    CREATE TABLE images (
        generation_id INTEGER NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
        idx           INTEGER NOT NULL CHECK (idx >= 0),
        seed          INTEGER NOT NULL,
        path          TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        width         INTEGER NOT NULL,
        height        INTEGER NOT NULL,
        PRIMARY KEY (generation_id, idx)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE user_settings (
        platform   TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        settings   TEXT NOT NULL CHECK (json_valid(settings)),
        updated_at REAL NOT NULL,
        PRIMARY KEY (platform, user_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE policies (
        platform   TEXT NOT NULL,
        workspace  TEXT NOT NULL,
        policy     TEXT NOT NULL CHECK (json_valid(policy)),
        updated_at REAL NOT NULL,
        PRIMARY KEY (platform, workspace)
    ) STRICT, WITHOUT ROWID;
    """,
    # 2: how often a restart interrupted a running generation (it is resumed once, then failed).
    """
    ALTER TABLE generations ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0 CHECK (interruptions >= 0);
    """,
    # 3: a workspace's images of the day, for its daily quota: an index range read, not a scan.
    """
    CREATE INDEX generations_workspace_day ON generations (platform, workspace, created_at)
        WHERE workspace IS NOT NULL;
    """,
    # 4: who did what in a server (generations, rerolls, refines, deletes, blocked prompts, rule changes).
    """
    CREATE TABLE audit (
        id            INTEGER PRIMARY KEY,
        platform      TEXT NOT NULL,
        workspace     TEXT NOT NULL,
        user_id       TEXT NOT NULL,
        action        TEXT NOT NULL,
        generation_id INTEGER,
        detail        TEXT NOT NULL DEFAULT '',
        at            REAL NOT NULL
    ) STRICT;
    CREATE INDEX audit_recent ON audit (platform, workspace, id DESC);
    """,
    # 5: the safety check's verdict on each image (NULL: not checked), so a resumed or listed image
    # is shown as it was the first time: spoilered or withheld when flagged.
    """
    ALTER TABLE images ADD COLUMN nsfw INTEGER CHECK (nsfw IN (0, 1));
    """,
    # 6: 'vary' and 'upscale' join the actions. SQLite cannot change a CHECK in place, so generations
    # is rebuilt (SQLite's documented procedure). Foreign keys stay on inside a transaction, and dropping
    # generations would cascade to images, so images is rebuilt first, pointing at the new table;
    # RENAME then rewrites both references. The AUTOINCREMENT counter is carried over: ids are in
    # buttons, and a deleted id must never come back.
    """
    CREATE TABLE generations_new (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        platform    TEXT NOT NULL,
        workspace   TEXT,
        channel     TEXT,
        user_id     TEXT NOT NULL,
        parent_id   INTEGER REFERENCES generations_new (id) ON DELETE SET NULL,
        action      TEXT NOT NULL CHECK (action IN ('generate', 'reroll', 'refine', 'vary', 'upscale')),
        request     TEXT NOT NULL CHECK (json_valid(request)),
        seed        INTEGER NOT NULL,
        model       TEXT NOT NULL,
        backend     TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        error       TEXT,
        warnings    TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(warnings)),
        private     INTEGER NOT NULL DEFAULT 0 CHECK (private IN (0, 1)),
        created_at  REAL NOT NULL,
        started_at  REAL,
        finished_at REAL,
        message_ref TEXT,
        cost        REAL,
        interruptions INTEGER NOT NULL DEFAULT 0 CHECK (interruptions >= 0)
    ) STRICT;
    INSERT INTO generations_new SELECT * FROM generations ORDER BY id;
    UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'generations')
        WHERE name = 'generations_new';

    CREATE TABLE images_new (
        generation_id INTEGER NOT NULL REFERENCES generations_new (id) ON DELETE CASCADE,
        idx           INTEGER NOT NULL CHECK (idx >= 0),
        seed          INTEGER NOT NULL,
        path          TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        width         INTEGER NOT NULL,
        height        INTEGER NOT NULL,
        nsfw          INTEGER CHECK (nsfw IN (0, 1)),
        PRIMARY KEY (generation_id, idx)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO images_new SELECT * FROM images;

    DROP TABLE images;
    DROP TABLE generations;
    ALTER TABLE generations_new RENAME TO generations;
    ALTER TABLE images_new RENAME TO images;

    CREATE INDEX generations_user_latest ON generations (platform, user_id, id DESC);
    CREATE INDEX generations_message_ref ON generations (platform, message_ref)
        WHERE message_ref IS NOT NULL;
    CREATE INDEX generations_unfinished ON generations (status, id)
        WHERE status IN ('queued', 'running');
    CREATE INDEX generations_parent ON generations (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX generations_workspace_day ON generations (platform, workspace, created_at)
        WHERE workspace IS NOT NULL;
    """,
    # 7: the input images a request uses (init image, mask), by SHA-256, so deleting generations
    # learns which kept inputs no row uses any more with an index lookup per input, not a scan.
    # Partial: most requests have none, and their NULLs need no entries.
    """
    CREATE INDEX generations_init_image ON generations (json_extract(request, '$.init_image'))
        WHERE json_extract(request, '$.init_image') IS NOT NULL;
    CREATE INDEX generations_mask_image ON generations (json_extract(request, '$.mask_image'))
        WHERE json_extract(request, '$.mask_image') IS NOT NULL;
    """,
    # 8: the web gallery. Prompt words searchable with FTS5: a table of its own, keyed by the
    # generation's id, kept in step by triggers and filled from the rows already there. (A future
    # rebuild of generations, as in 6, drops these triggers with the table: recreate them.)
    # And each user's link epoch: a gallery link carries the epoch it was made in, and
    # `/gallery revoke` or `/forget` raises it, so every earlier link dies; forget keeps the row.
    """
    CREATE VIRTUAL TABLE generation_prompts USING fts5 (prompt, tokenize = 'unicode61 remove_diacritics 2');
    INSERT INTO generation_prompts (rowid, prompt) SELECT id, json_extract(request, '$.prompt') FROM generations;
    CREATE TRIGGER generation_prompts_insert AFTER INSERT ON generations BEGIN
        INSERT INTO generation_prompts (rowid, prompt) VALUES (new.id, json_extract(new.request, '$.prompt'));
    END;
    CREATE TRIGGER generation_prompts_delete AFTER DELETE ON generations BEGIN
        DELETE FROM generation_prompts WHERE rowid = old.id;
    END;
    CREATE TRIGGER generation_prompts_update AFTER UPDATE OF request ON generations BEGIN
        UPDATE generation_prompts SET prompt = json_extract(new.request, '$.prompt') WHERE rowid = new.id;
    END;

    CREATE TABLE gallery_epochs (
        platform TEXT NOT NULL,
        user_id  TEXT NOT NULL,
        epoch    INTEGER NOT NULL CHECK (epoch >= 0),
        PRIMARY KEY (platform, user_id)
    ) STRICT, WITHOUT ROWID;
    """,
    # 9: which previous image an input image was made from (`--image #12`, a Vary): an input is
    # kept as its checked bytes, whose SHA-256 differs from the image file's (no text chunk), so
    # the gallery's /imagine command names it `#12` through this table. Rows go with their image.
    """
    CREATE TABLE input_sources (
        generation_id INTEGER NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
        idx           INTEGER NOT NULL CHECK (idx >= 0),
        sha256        TEXT NOT NULL,
        PRIMARY KEY (generation_id, idx)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX input_sources_sha256 ON input_sources (sha256);
    """,
    # 10: the gallery's LoRA filter. The LoRAs of each request in a table of their own, kept in step
    # by triggers and filled from the rows already there, so a filter or the list of a user's LoRAs
    # reads an index instead of parsing every request's JSON. (A rebuild of generations, as in 6,
    # drops these triggers with the table: recreate them.)
    """
    CREATE TABLE generation_loras (
        generation_id INTEGER NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
        name          TEXT NOT NULL,
        PRIMARY KEY (generation_id, name)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX generation_loras_name ON generation_loras (name, generation_id);
    INSERT OR IGNORE INTO generation_loras (generation_id, name)
        SELECT g.id, json_extract(l.value, '$.name') FROM generations AS g, json_each(g.request, '$.loras') AS l;
    CREATE TRIGGER generation_loras_insert AFTER INSERT ON generations BEGIN
        INSERT OR IGNORE INTO generation_loras (generation_id, name)
            SELECT new.id, json_extract(value, '$.name') FROM json_each(new.request, '$.loras');
    END;
    CREATE TRIGGER generation_loras_update AFTER UPDATE OF request ON generations BEGIN
        DELETE FROM generation_loras WHERE generation_id = new.id;
        INSERT OR IGNORE INTO generation_loras (generation_id, name)
            SELECT new.id, json_extract(value, '$.name') FROM json_each(new.request, '$.loras');
    END;
    """,
    # 11: the models a user's generations used (the gallery's model filter), read by hopping from
    # one model to the next along this index: a few lookups however long the history, where a
    # DISTINCT over the user's rows took 55 ms at 100,000 generations (bench/gallery_load.py).
    """
    CREATE INDEX generations_user_model ON generations (platform, user_id, model);
    """,
    # 12: a server's showcase. When its author starred a generation (NULL: not starred); the partial
    # indexes hold only starred rows, so a server's showcase page, and a user's "starred only"
    # gallery page, read them and nothing else. (A rebuild of generations, as in 6, must carry the
    # column and recreate the indexes.)
    """
    ALTER TABLE generations ADD COLUMN starred_at REAL;
    CREATE INDEX generations_showcase ON generations (platform, workspace, id) WHERE starred_at IS NOT NULL;
    CREATE INDEX generations_starred ON generations (platform, user_id, id) WHERE starred_at IS NOT NULL;
    """,
    # 13: the LoRAs a user used (the gallery's LoRA menu), read by hopping along an index of their
    # own, as the models are (11): a join from the user's generations probed every one of them,
    # 13 ms at 100,000 generations. Each row carries its generation's owner, set by the triggers.
    """
    ALTER TABLE generation_loras ADD COLUMN platform TEXT;
    ALTER TABLE generation_loras ADD COLUMN user_id TEXT;
    UPDATE generation_loras SET (platform, user_id) =
        (SELECT platform, user_id FROM generations WHERE generations.id = generation_loras.generation_id);
    CREATE INDEX generation_loras_user ON generation_loras (platform, user_id, name);
    DROP TRIGGER generation_loras_insert;
    CREATE TRIGGER generation_loras_insert AFTER INSERT ON generations BEGIN
        INSERT OR IGNORE INTO generation_loras (generation_id, name, platform, user_id)
            SELECT new.id, json_extract(value, '$.name'), new.platform, new.user_id
            FROM json_each(new.request, '$.loras');
    END;
    DROP TRIGGER generation_loras_update;
    CREATE TRIGGER generation_loras_update AFTER UPDATE OF request ON generations BEGIN
        DELETE FROM generation_loras WHERE generation_id = new.id;
        INSERT OR IGNORE INTO generation_loras (generation_id, name, platform, user_id)
            SELECT new.id, json_extract(value, '$.name'), new.platform, new.user_id
            FROM json_each(new.request, '$.loras');
    END;
    """,
    # 14: prompts read as A1111 reads them (`bot.weighting`). The generations made before read
    # theirs as written, the first 77 tokens; marked so, a reroll or refine of one makes what it
    # made then. Rows stored from now on carry the field.
    """
    UPDATE generations SET request = json_set(request, '$.prompt_weighting', json('false'))
        WHERE json_type(request, '$.prompt_weighting') IS NULL;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


async def connect(path: str | os.PathLike[str]) -> aiosqlite.Connection:
    """Open a connection in autocommit mode with the pragmas every connection needs.

    Transactions are explicit (``BEGIN``/``COMMIT``), so Python's sqlite3 never
    opens one behind the caller's back.

    Args:
        path: the database file, or ``":memory:"``.

    Returns:
        The open connection; the schema is not touched (see `migrate`).
    """
    conn = await aiosqlite.connect(os.fspath(path), isolation_level=None)
    try:
        conn.row_factory = aiosqlite.Row
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await _switch_to_wal(conn)
        # NORMAL is durable across application crashes in WAL mode; only a power cut may lose
        # the last commits, which is the usual trade for not fsyncing on every commit.
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        await conn.close()
        raise
    return conn


async def _switch_to_wal(conn: aiosqlite.Connection) -> None:
    """Put the file in WAL mode, waiting out another connection that is switching it at the same moment.

    SQLite does not call the busy handler for this switch in every case: two processes opening a
    new file at once can get "database is locked" at once, so it is retried here, for as long as
    the busy timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)


async def user_version(conn: aiosqlite.Connection) -> int:
    """Return the schema version recorded in the file."""
    rows = list(await conn.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[str] | None = None) -> int:
    """Apply every migration the file has not seen yet, each in its own transaction.

    Args:
        conn: a connection from `connect`, not inside a transaction.
        migrations: the scripts to apply; `MIGRATIONS` unless a test gives others.

    Returns:
        The schema version after migrating.

    Raises:
        RuntimeError: the file was written by a newer version of the bot.
    """
    scripts = MIGRATIONS if migrations is None else migrations
    while True:
        try:
            await conn.execute("BEGIN IMMEDIATE")
            # Read inside the write lock: another process may have migrated meanwhile.
            version = await user_version(conn)
            if version > len(scripts):
                raise RuntimeError(
                    f"the database is at schema version {version}, newer than this code's {len(scripts)}"
                )
            if version == len(scripts):
                await conn.execute("COMMIT")
                return version
            for statement in _statements(scripts[version]):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version + 1}")
            await conn.execute("COMMIT")
        except BaseException:
            # rollback() does nothing when no transaction is open (e.g. one that failed to BEGIN).
            await asyncio.shield(conn.rollback())
            raise


def _statements(script: str) -> list[str]:
    """Split a script into statements.

    ``executescript`` would commit the open transaction first, so a migration is
    run statement by statement inside ours instead.
    """
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    # What is left after the last statement may only be blank lines and comments.
    if any(line.strip() and not line.strip().startswith("--") for line in pending.splitlines()):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending.strip()[:80]!r}")
    return statements

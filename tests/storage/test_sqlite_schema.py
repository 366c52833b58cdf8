"""The SQLite schema: migrations by user_version, pragmas, and the indexes the hot queries use."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

import storage
from storage import SqliteDatabase, _schema


def file_version(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def table_names(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_storage_exports_are_sorted_and_importable():
    """storage.__all__ is sorted and every name in it exists."""
    assert storage.__all__ == sorted(storage.__all__)
    for name in storage.__all__:
        assert hasattr(storage, name)


async def test_empty_file_reaches_latest_version(tmp_path):
    """Opening a new file applies every migration."""
    path = tmp_path / "new.db"
    store = await SqliteDatabase.open(path)
    await store.close()
    assert file_version(path) == _schema.SCHEMA_VERSION == len(_schema.MIGRATIONS)
    assert {"generations", "images", "user_settings", "policies"} <= table_names(path)


async def test_reopen_is_idempotent_and_keeps_data(tmp_path, make_new):
    """Opening a migrated file again changes nothing and loses nothing."""
    path = tmp_path / "h.db"
    store = await SqliteDatabase.open(path)
    generation = await store.generations.add(make_new())
    await store.close()
    store = await SqliteDatabase.open(path)
    try:
        assert file_version(path) == _schema.SCHEMA_VERSION
        assert await store.generations.get(generation.id) == generation
    finally:
        await store.close()


async def test_open_creates_missing_directory(tmp_path):
    """The data directory does not have to exist yet."""
    store = await SqliteDatabase.open(tmp_path / "data" / "nested" / "h.db")
    await store.close()
    assert (tmp_path / "data" / "nested" / "h.db").exists()


async def test_new_migration_applies_once_from_its_version(tmp_path):
    """A migration appended later runs once, taking user_version from i to i + 1."""
    path = tmp_path / "h.db"
    extra = [*_schema.MIGRATIONS, "ALTER TABLE generations ADD COLUMN upscaled INTEGER;"]
    for _ in range(2):
        conn = await _schema.connect(path)
        try:
            assert await _schema.migrate(conn, extra) == len(extra)
        finally:
            await conn.close()
    assert file_version(path) == len(extra)
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(generations)")]
    assert columns.count("upscaled") == 1


async def test_failing_migration_rolls_back_whole(tmp_path):
    """A migration that fails halfway leaves neither its tables nor a new version."""
    path = tmp_path / "h.db"
    broken = [*_schema.MIGRATIONS, "CREATE TABLE half_done (x INTEGER);\nCREATE TABLE broken (;"]
    conn = await _schema.connect(path)
    try:
        with pytest.raises(sqlite3.OperationalError):
            await _schema.migrate(conn, broken)
        assert not conn.in_transaction
    finally:
        await conn.close()
    assert file_version(path) == _schema.SCHEMA_VERSION
    assert "half_done" not in table_names(path)


async def test_newer_file_is_refused(tmp_path):
    """A file migrated by a newer release is not touched by an older one."""
    path = tmp_path / "h.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {_schema.SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        await SqliteDatabase.open(path)


async def test_two_processes_opening_at_once_migrate_once(tmp_path):
    """Two connections migrating the same new file at once both succeed."""
    path = tmp_path / "h.db"
    stores = await asyncio.gather(SqliteDatabase.open(path), SqliteDatabase.open(path))
    for store in stores:
        await store.close()
    assert file_version(path) == _schema.SCHEMA_VERSION


async def test_connection_pragmas(tmp_path):
    """Every connection runs WAL, synchronous=NORMAL, foreign keys and a busy timeout."""
    conn = await _schema.connect(tmp_path / "h.db")
    try:

        async def pragma(name: str):
            return next(iter(await conn.execute_fetchall(f"PRAGMA {name}")))[0]

        assert await pragma("journal_mode") == "wal"
        assert await pragma("synchronous") == 1  # NORMAL
        assert await pragma("foreign_keys") == 1
        assert await pragma("busy_timeout") == _schema.BUSY_TIMEOUT_MS
    finally:
        await conn.close()


async def test_wal_mode_is_persistent_in_the_file(tmp_path):
    """The file itself is in WAL mode, so other tools reading it do not block the bot."""
    path = tmp_path / "h.db"
    store = await SqliteDatabase.open(path)
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_statement_splitting_keeps_semicolons_in_comments_and_strings():
    """The migration splitter cuts at statement ends only."""
    script = "-- first; not the end\nCREATE TABLE a (x TEXT DEFAULT ';');\n\nCREATE TABLE b (y);\n-- end\n"
    assert _schema._statements(script) == [
        "-- first; not the end\nCREATE TABLE a (x TEXT DEFAULT ';');",
        "CREATE TABLE b (y);",
    ]


def test_statement_splitting_refuses_a_cut_off_statement():
    """A migration ending mid-statement is a bug caught before it runs."""
    with pytest.raises(ValueError, match="incomplete"):
        _schema._statements("CREATE TABLE a (x);\nCREATE TABLE b (")


async def plan_of_calls(store: SqliteDatabase, call) -> list[str]:
    """Run `call` with tracing on and return the query plan of every SELECT on generations it ran."""
    statements: list[str] = []
    await store.db.conn.set_trace_callback(statements.append)
    try:
        await call()
    finally:
        await store.db.conn.set_trace_callback(None)
    plans = []
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT") and "FROM generations" in sql:
            rows = await store.db.conn.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}")
            plans.append(" | ".join(row[3] for row in rows))
    return plans


@pytest.mark.parametrize(
    ("method", "index"),
    [
        (lambda s: s.generations.latest("discord", "u1"), "generations_user_latest"),
        (lambda s: s.generations.latest("discord", "u1", status="done"), "generations_user_latest"),
        (lambda s: s.generations.recent("discord", "u1", 10, before_id=50), "generations_user_latest"),
        (lambda s: s.generations.by_message_ref("discord", "C1/123"), "generations_message_ref"),
        (lambda s: s.generations.unfinished(), "generations_unfinished"),
    ],
    ids=["latest", "latest-status", "recent-page", "by_message_ref", "unfinished"],
)
async def test_hot_queries_use_their_index(tmp_path, make_new, method, index):
    """The statements the store really runs search an index and never scan generations."""
    store = await SqliteDatabase.open(tmp_path / "h.db")
    try:
        for n in range(50):
            generation = await store.generations.add(make_new(f"u{n % 7}"))
            await store.generations.set_message_ref(generation.id, f"C1/{n}")
        # Fresh statistics, so the planner's choice is the one it makes on a real, busy file.
        await store.db.conn.execute("ANALYZE")
        plans = await plan_of_calls(store, lambda: method(store))
    finally:
        await store.close()
    assert plans, "the call ran no SELECT on generations"
    for plan in plans:
        assert index in plan, plan
        assert "SCAN generations" not in plan, plan


async def test_vary_migration_keeps_rows_images_and_the_id_counter(tmp_path, make_new, make_request):
    """Migration 6 rebuilds generations to admit 'vary': every row, image and reference survives, and a
    deleted id (the newest, so only the AUTOINCREMENT counter remembers it) is never handed out again."""
    path = tmp_path / "h.db"
    conn = await _schema.connect(path)
    try:
        await _schema.migrate(conn, _schema.MIGRATIONS[:5])
    finally:
        await conn.close()
    request = make_request(7).model_dump_json()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        for parent in (None, 1, None):
            conn.execute(
                "INSERT INTO generations (platform, user_id, parent_id, action, request, seed, model, backend,"
                " status, created_at) VALUES ('discord', 'u1', ?, 'generate', ?, 7, 'tiny', 'local', 'done', 1.0)",
                (parent, request),
            )
        conn.execute("INSERT INTO images VALUES (2, 0, 7, 'images/0/2-0.png', 'ab', 128, 128, 1)")
        conn.execute("DELETE FROM generations WHERE id = 3")
    store = await SqliteDatabase.open(path)
    try:
        kept = await store.generations.get(2)
        assert kept is not None and kept.parent_id == 1 and kept.seed == 7
        assert [(image.path, image.nsfw) for image in kept.images] == [("images/0/2-0.png", True)]
        varied = await store.generations.add(make_new(action="vary", parent_id=2))
        assert varied.id == 4 and varied.action == "vary"
        # the images still belong to their generation: deleting it takes them along
        assert [image.path for image in await store.generations.delete(2)] == ["images/0/2-0.png"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == 0
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"generations_user_latest", "generations_unfinished", "generations_workspace_day"} <= indexes


async def test_unreferenced_inputs_look_up_both_indexes(tmp_path, make_new):
    """Each input is two index lookups (init image, mask), never a scan of generations."""
    store = await SqliteDatabase.open(tmp_path / "h.db")
    try:
        for n in range(50):
            await store.generations.add(make_new(f"u{n % 7}"))
        await store.db.conn.execute("ANALYZE")
        plans = await plan_of_calls(store, lambda: store.generations.unreferenced_inputs(["a" * 64, "b" * 64]))
    finally:
        await store.close()
    assert len(plans) == 1
    assert "generations_init_image" in plans[0] and "generations_mask_image" in plans[0], plans[0]
    assert "SCAN generations" not in plans[0], plans[0]


async def test_a_file_from_before_inputs_gains_their_indexes_and_keeps_its_rows(tmp_path, make_new):
    """Migrations 6 and 7 add the input indexes to a file at version 5 without touching its generations."""
    path = tmp_path / "h.db"
    conn = await _schema.connect(path)
    try:
        assert await _schema.migrate(conn, _schema.MIGRATIONS[:5]) == 5
        await conn.execute(
            "INSERT INTO generations (platform, user_id, action, request, seed, model, backend, created_at)"
            " VALUES ('discord', 'u1', 'generate', json_object('init_image', ?), 1, 'sdxl', 'local', 0)",
            ("a" * 64,),
        )
    finally:
        await conn.close()
    store = await SqliteDatabase.open(path)
    try:
        assert await store.generations.unreferenced_inputs(["a" * 64, "b" * 64]) == {"b" * 64}
        assert await store.generations.inputs_of([1]) == {"a" * 64}
    finally:
        await store.close()
    assert file_version(path) == _schema.SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"generations_init_image", "generations_mask_image"} <= indexes


async def test_generations_from_before_weighting_keep_their_prompts_as_written(tmp_path, make_new, make_request):
    """Migration 14 marks every stored request to read its prompt as written (no weights, 77 tokens), so
    a reroll or refine of an old `(fox:1.5)` image makes what it made then; new rows read A1111's weights."""
    path = tmp_path / "h.db"
    conn = await _schema.connect(path)
    try:
        assert await _schema.migrate(conn, _schema.MIGRATIONS[:13]) == 13
    finally:
        await conn.close()
    stored = make_request(7, prompt="a (red:1.5) fox, [blurry]", loras=[{"name": "pixel-art", "weight": 0.8}])
    data = stored.to_dict()
    del data["prompt_weighting"]  # as rows were written before the field
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO generations (platform, user_id, action, request, seed, model, backend, status, created_at)"
            " VALUES ('discord', 'u1', 'generate', ?, 7, 'sdxl', 'local', 'done', 1.0)",
            (json.dumps(data),),
        )
    store = await SqliteDatabase.open(path)
    try:
        old = await store.generations.get(1)
        assert old is not None
        assert old.request.prompt_weighting is False
        assert old.request.model_copy(update={"prompt_weighting": True}) == stored
        new = await store.generations.add(make_new(request=stored))
        assert (await store.generations.get(new.id)).request.prompt_weighting is True
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        # the indexes its update re-derived still find the old row by LoRA and by prompt words
        assert conn.execute("SELECT name FROM generation_loras WHERE generation_id = 1").fetchall() == [("pixel-art",)]
        found = conn.execute("SELECT rowid FROM generation_prompts WHERE generation_prompts MATCH 'fox'").fetchall()
        assert (1,) in found

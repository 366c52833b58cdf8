"""The gallery's read model: prompt search kept in step with the history, existing rows found after migrating."""

from __future__ import annotations

import pytest

from bot.gallery import GalleryQuery, match_expression
from bot.history import NewGeneration, StoredImage
from bot.request import GenerationRequest, WeightedName
from storage import SqliteDatabase, SqliteGallery, _schema
from storage.generations import SqliteGenerations


def new(prompt: str, user: str = "u1", model: str = "tiny") -> NewGeneration:
    request = GenerationRequest(prompt=prompt, model=model, seed=1)
    return NewGeneration(platform="console", user_id=user, request=request, action="generate", backend="fake")


async def test_rows_from_before_the_migration_are_searchable(tmp_path):
    """A file at schema 7 with generations: after migration 8 their prompts are found."""
    path = tmp_path / "h.db"
    conn = await _schema.connect(path)
    await _schema.migrate(conn, _schema.MIGRATIONS[:7])
    await conn.execute(
        "INSERT INTO generations (platform, user_id, action, request, seed, model, backend, created_at)"
        " VALUES ('console', 'u1', 'generate', ?, 1, 'tiny', 'fake', 0)",
        (GenerationRequest(prompt="an old lighthouse", model="tiny", seed=1).model_dump_json(),),
    )
    await conn.close()
    gallery = await SqliteGallery.open(path)
    try:
        found = await gallery.page("console", "u1", GalleryQuery(words="lighthouse"))
        assert [g.request.prompt for g in found] == ["an old lighthouse"]
    finally:
        await gallery.close()


async def test_search_follows_adds_and_deletes_and_stays_with_its_owner(tmp_path):
    """A new row is found at once, a deleted one never again, and another user's never."""
    history = await SqliteDatabase.open(tmp_path / "h.db")
    gallery = await SqliteGallery.open(tmp_path / "h.db")
    try:
        fox = await history.generations.add(new("a red fox"))
        await history.generations.add(new("a red fox of someone else", user="u2"))
        assert [g.id for g in await gallery.page("console", "u1", GalleryQuery(words="fox"))] == [fox.id]
        await history.generations.delete(fox.id)
        assert await gallery.page("console", "u1", GalleryQuery(words="fox")) == []
    finally:
        await gallery.close()
        await history.close()


async def test_models_are_the_users_own_distinct_and_sorted(tmp_path):
    """The model filter's choices: each model the user used once, in order; none of another user's."""
    history = await SqliteDatabase.open(tmp_path / "h.db")
    gallery = await SqliteGallery.open(tmp_path / "h.db")
    try:
        assert await gallery.models("console", "u1") == []
        for model in ("sdxl", "tiny", "sdxl", "sdxl-turbo", "tiny"):
            await history.generations.add(new("a fox", model=model))
        await history.generations.add(new("a fox", user="u2", model="juggernaut"))
        await history.generations.add(new("a fox", user="u0", model="aaa"))
        assert await gallery.models("console", "u1") == ["sdxl", "sdxl-turbo", "tiny"]
        assert await gallery.models("console", "u2") == ["juggernaut"]
    finally:
        await gallery.close()
        await history.close()


async def test_link_epochs_start_at_zero_and_only_go_up(tmp_path):
    gallery = await SqliteGallery.open(tmp_path / "h.db")
    try:
        assert await gallery.epoch("console", "u1") == 0
        assert await gallery.next_epoch("console", "u1") == 1
        assert await gallery.next_epoch("console", "u1") == 2
        assert await gallery.epoch("console", "u1") == 2 and await gallery.epoch("console", "u2") == 0
    finally:
        await gallery.close()


def test_match_expression_quotes_every_word():
    """Whatever is typed, FTS5 sees quoted words only, the last one a prefix."""
    assert match_expression('fox AND "owl" NEAR(') == '"fox" "AND" "owl" "NEAR"*'
    assert match_expression(' "* ( ) ') is None


def with_loras(prompt: str, *names: str, user: str = "u1") -> NewGeneration:
    request = GenerationRequest(
        prompt=prompt, model="tiny", seed=1, loras=tuple(WeightedName(name=n, weight=0.5) for n in names)
    )
    return NewGeneration(platform="console", user_id=user, request=request, action="generate", backend="fake")


async def test_the_lora_filter_finds_the_owners_generations_with_that_lora(tmp_path):
    """Filtered by a LoRA: the user's generations using it (any weight), with other filters too; never another's."""
    history = await SqliteDatabase.open(tmp_path / "h.db")
    gallery = await SqliteGallery.open(tmp_path / "h.db")
    try:
        pixel = await history.generations.add(with_loras("a pixel fox", "pixel-art"))
        both = await history.generations.add(with_loras("a pixel toy owl", "pixel-art", "toy-face"))
        await history.generations.add(with_loras("a plain fox"))
        await history.generations.add(with_loras("their pixel fox", "pixel-art", user="u2"))

        def ids(query: GalleryQuery):
            return gallery.page("console", "u1", query)

        assert [g.id for g in await ids(GalleryQuery(lora="pixel-art"))] == [both.id, pixel.id]
        assert [g.id for g in await ids(GalleryQuery(lora="toy-face"))] == [both.id]
        assert [g.id for g in await ids(GalleryQuery(lora="pixel-art", words="fox"))] == [pixel.id]
        assert await ids(GalleryQuery(lora="no-such-lora")) == []
        assert await gallery.loras("console", "u1") == ["pixel-art", "toy-face"]
        assert await gallery.loras("console", "nobody") == []
        await history.generations.delete(both.id)
        assert await gallery.loras("console", "u1") == ["pixel-art"]
    finally:
        await gallery.close()
        await history.close()


async def test_rows_from_before_the_lora_migration_are_filtered_by_lora(tmp_path):
    """A file at schema 9 with a LoRA generation: after migration 10 the filter finds it."""
    path = tmp_path / "h.db"
    conn = await _schema.connect(path)
    await _schema.migrate(conn, _schema.MIGRATIONS[:9])
    request = GenerationRequest(
        prompt="an old pixel lighthouse", model="tiny", seed=1, loras=(WeightedName(name="pixel-art"),)
    )
    await conn.execute(
        "INSERT INTO generations (platform, user_id, action, request, seed, model, backend, created_at)"
        " VALUES ('console', 'u1', 'generate', ?, 1, 'tiny', 'fake', 0)",
        (request.model_dump_json(),),
    )
    await conn.close()
    gallery = await SqliteGallery.open(path)
    try:
        found = await gallery.page("console", "u1", GalleryQuery(lora="pixel-art"))
        assert [g.request.prompt for g in found] == ["an old pixel lighthouse"]
        assert await gallery.loras("console", "u1") == ["pixel-art"]
    finally:
        await gallery.close()


def in_server(prompt: str, user: str = "u1", server: str = "g1") -> NewGeneration:
    request = GenerationRequest(prompt=prompt, model="tiny", seed=1)
    return NewGeneration(
        platform="discord", user_id=user, workspace=server, request=request, action="generate", backend="fake"
    )


async def finished(db: SqliteDatabase, new_generation: NewGeneration, *flags: bool | None) -> int:
    """Store a generation as done with one image per flag (the safety verdict); return its id."""
    generation = await db.generations.add(new_generation)
    images = [StoredImage(n, 1, f"{generation.id}-{n}.png", "0" * 64, 64, 64, flag) for n, flag in enumerate(flags)]
    await db.generations.mark_done(generation.id, images)
    return generation.id


async def test_rows_from_before_the_showcase_migration_are_unstarred_and_can_be_starred(tmp_path):
    """A file at schema 11: after migration 12 its rows read unstarred, and a star puts one in its server's showcase."""
    path = tmp_path / "h.db"
    conn = await _schema.connect(path)
    await _schema.migrate(conn, _schema.MIGRATIONS[:11])
    await conn.execute(
        "INSERT INTO generations (platform, workspace, user_id, action, request, seed, model, backend, status,"
        " created_at) VALUES ('discord', 'g1', 'u1', 'generate', ?, 1, 'tiny', 'fake', 'done', 0)",
        (GenerationRequest(prompt="an old fox", model="tiny", seed=1).model_dump_json(),),
    )
    await conn.execute(
        "INSERT INTO images (generation_id, idx, seed, path, sha256, width, height)"
        " VALUES (1, 0, 1, 'a.png', ?, 64, 64)",
        ("0" * 64,),
    )
    await conn.close()
    db = await SqliteDatabase.open(path)
    gallery = await SqliteGallery.open(path)
    try:
        old = await db.generations.get(1)
        assert old is not None and not old.starred
        assert await gallery.showcase("discord", "g1", after=None, limit=10) == []
        await db.generations.set_starred(1, True)
        (shown,) = await gallery.showcase("discord", "g1", after=None, limit=10)
        assert shown.id == 1 and shown.starred and shown.request.prompt == "an old fox"
    finally:
        await gallery.close()
        await db.close()


async def test_the_showcase_holds_starred_finished_unflagged_images_of_one_server(tmp_path):
    """Only starred, done generations of that server, each with only its unflagged (or unchecked) images."""
    db = await SqliteDatabase.open(tmp_path / "h.db")
    gallery = await SqliteGallery.open(tmp_path / "h.db")
    try:
        mixed = await finished(db, in_server("mixed"), False, True, None)
        all_flagged = await finished(db, in_server("all flagged"), True)
        other_server = await finished(db, in_server("elsewhere", server="g2"), False)
        unstarred = await finished(db, in_server("unstarred"), False)
        queued = (await db.generations.add(in_server("queued"))).id
        for generation_id in (mixed, all_flagged, other_server, queued):
            await db.generations.set_starred(generation_id, True)
        (shown,) = await gallery.showcase("discord", "g1", after=None, limit=10)
        assert shown.id == mixed and [image.index for image in shown.images] == [0, 2]
        assert await gallery.showcased("discord", "g1", mixed) == shown
        for hidden in (all_flagged, other_server, unstarred, queued):
            assert await gallery.showcased("discord", "g1", hidden) is None
        assert [g.id for g in await gallery.showcase("discord", "g2", after=None, limit=10)] == [other_server]
        assert await gallery.showcase("discord", "g1", after=mixed, limit=10) == []
    finally:
        await gallery.close()
        await db.close()


async def test_a_second_star_keeps_the_first_and_an_unknown_id_is_a_key_error(tmp_path):
    """Starring twice keeps the time of the first star; unstarring clears it; no such row raises KeyError."""
    db = await SqliteDatabase.open(tmp_path / "h.db")
    try:
        fox = await finished(db, in_server("fox"), False)
        await db.generations.set_starred(fox, True)
        first = list(await db.db.conn.execute_fetchall("SELECT starred_at FROM generations WHERE id = ?", (fox,)))
        await db.generations.set_starred(fox, True)
        again = list(await db.db.conn.execute_fetchall("SELECT starred_at FROM generations WHERE id = ?", (fox,)))
        assert first == again and first[0][0] is not None
        await db.generations.set_starred(fox, False)
        assert not (await db.generations.get(fox)).starred  # type: ignore[union-attr]
        with pytest.raises(KeyError):
            await db.generations.set_starred(999, True)
    finally:
        await db.close()


async def test_the_showcase_and_starred_only_read_their_partial_indexes_and_never_scan_generations(tmp_path):
    """A showcase page and a user's "starred only" page search indexes of starred rows only."""
    db = await SqliteDatabase.open(tmp_path / "h.db")
    gallery = await SqliteGallery.open(tmp_path / "h.db")
    try:
        for n in range(200):
            generation_id = await finished(db, in_server(f"image {n}", user=f"u{n % 5}"), False)
            if n % 50 == 0:
                await db.generations.set_starred(generation_id, True)
        await gallery._db.conn.execute("ANALYZE")
        statements: list[str] = []
        await gallery._db.conn.set_trace_callback(statements.append)
        await gallery.showcase("discord", "g1", after=None, limit=25)
        await gallery.page("discord", "u0", GalleryQuery(starred=True, limit=25))
        await gallery._db.conn.set_trace_callback(None)
        showcase_sql, starred_sql = [s for s in statements if "FROM generations" in s]
        for sql, index in ((showcase_sql, "generations_showcase"), (starred_sql, "generations_starred")):
            rows = await gallery._db.conn.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}")
            plan = " | ".join(row[3] for row in rows)
            assert index in plan and "SCAN generations" not in plan, plan
    finally:
        await gallery.close()
        await db.close()


async def plans(gallery: SqliteGallery | SqliteGenerations, call) -> list[str]:
    """Run `call` with tracing on and return the query plan of each statement it ran."""
    statements: list[str] = []
    await gallery._db.conn.set_trace_callback(statements.append)
    try:
        await call()
    finally:
        await gallery._db.conn.set_trace_callback(None)
    found = []
    for sql in statements:
        rows = await gallery._db.conn.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}")
        found.append(" | ".join(row[3] for row in rows))
    return found


async def test_the_lora_menu_and_the_input_lookup_never_walk_the_users_generations(tmp_path):
    """With many generations of one user, both read their own index; neither probes each of the user's rows."""
    history = await SqliteDatabase.open(tmp_path / "h.db")
    gallery = await SqliteGallery.open(tmp_path / "h.db")
    try:
        for n in range(300):
            made = await history.generations.add(with_loras(f"fox {n}", *(["pixel-art"] if n % 100 == 0 else [])))
            await history.generations.note_input_source(f"{n:064x}", made.id, 0)
        await history.generations.add(with_loras("their fox", "toy-face", user="u2"))
        await gallery._db.conn.execute("ANALYZE")
        assert await gallery.loras("console", "u1") == ["pixel-art"]
        assert await history.generations.find_images("console", "u1", [f"{7:064x}", f"{8:064x}"]) == {
            f"{7:064x}": (8, 0),
            f"{8:064x}": (9, 0),
        }
        (lora_plan,) = await plans(gallery, lambda: gallery.loras("console", "u1"))
        assert "generation_loras_user" in lora_plan and " generations " not in f" {lora_plan} ", lora_plan
        find = history.generations.find_images
        (input_plan,) = await plans(history.generations, lambda: find("console", "u1", [f"{7:064x}"]))
        first = input_plan.split(" | ")[0]
        assert first.startswith("SEARCH s USING") and "input_sources_sha256" in first, input_plan
    finally:
        await gallery.close()
        await history.close()

"""An `ImageService` on a data directory with the shipped catalog, for adapter tests and benchmarks.

Also what a test reads of that directory afterwards: the image files, the recorded rows, and that they agree.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.catalog import Catalog, load_catalog
from bot.options import Limits
from bot.ports import Backend
from bot.service import ImageService
from imagebot.bootstrap import stores_of
from storage import SqliteDatabase
from tests.fakes.stores import InMemoryDatabase


async def assert_nothing_half_written(history: SqliteDatabase, data_dir: Path) -> None:
    """Every image a row claims is on disk under a finished row, and every image file on disk is claimed by one."""
    claimed: set[Path] = set()
    generation_id = 1
    while (stored := await history.generations.get(generation_id)) is not None:
        assert stored.status == "done" or not stored.images, stored
        claimed.update(data_dir / image.path for image in stored.images)
        generation_id += 1
    assert {path for path in (data_dir / "images").rglob("*") if path.is_file()} == claimed


@contextlib.asynccontextmanager
async def started_service(
    backend: Backend,
    data_dir: Path,
    *,
    catalog: Catalog | None = None,
    default_model: str = "tiny",
    **options: Any,
) -> AsyncIterator[tuple[ImageService, SqliteDatabase]]:
    """Yield a started service (the shipped catalog and the tiny model by default) and its SQLite database.

    Both are closed on exit; the backend is its caller's.
    """
    history = await SqliteDatabase.open(data_dir / "imagebot.sqlite3")
    service = ImageService(
        backend=backend,
        stores=stores_of(history, data_dir),
        catalog=catalog or load_catalog(),
        default_model=default_model,
        limits=Limits(pixel_budget=4 * 1024 * 1024),
        **options,
    )
    await service.start()
    try:
        yield service, history
    finally:
        await service.aclose()
        await history.close()


def image_files(data_dir: Path) -> set[str]:
    """Every file under the images folder (a temporary one too), relative to the data directory."""
    return {path.relative_to(data_dir).as_posix() for path in (data_dir / "images").rglob("*") if path.is_file()}


def recorded(data_dir: Path) -> dict[int, tuple[str, list[str]]]:
    """Each generation's status and image paths, read from the file as another process would."""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'imagebot.sqlite3'}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT g.id, g.status, i.path FROM generations g LEFT JOIN images i ON i.generation_id = g.id"
        ).fetchall()
    found: dict[int, tuple[str, list[str]]] = {}
    for generation_id, status, path in rows:
        found.setdefault(generation_id, (status, []))[1].extend([path] if path else [])
    return found


def assert_no_half_writes(data_dir: Path) -> None:
    """Every recorded image has its file, and every file its row."""
    paths = [path for _, images in recorded(data_dir).values() for path in images]
    assert image_files(data_dir) == set(paths)


@contextlib.asynccontextmanager
async def memory_service(backend: Backend, data_dir: Path, **options: Any) -> AsyncIterator[ImageService]:
    """Yield a started service on the in-memory stores: the shipped catalog, the tiny model, seeds 100, 101, …

    `options` are `ImageService`'s own (limits, queue sizes, input limits…), replacing these defaults.
    """
    settings: dict[str, Any] = {
        "catalog": load_catalog(),
        "default_model": "tiny",
        "limits": Limits(pixel_budget=4 * 1024 * 1024),
        "seeds": itertools.count(100).__next__,
    }
    service = ImageService(
        backend=backend, stores=stores_of(InMemoryDatabase.create(), data_dir), **(settings | options)
    )
    await service.start()
    try:
        yield service
    finally:
        await service.aclose()

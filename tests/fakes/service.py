"""An `ImageService` on a data directory with the shipped catalog, for adapter tests and benchmarks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.catalog import Catalog, load_catalog
from bot.options import Limits
from bot.ports import Backend
from bot.service import ImageService
from imagebot.bootstrap import stores_of
from storage import SqliteDatabase


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

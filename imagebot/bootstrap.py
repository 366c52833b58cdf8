"""Wire the real parts together: settings → stores → backend → service."""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bot.catalog import Catalog, load_catalog
from bot.config import CoreSettings, QueueSettings
from bot.errors import BotError
from bot.options import Limits
from bot.plugins import ConfigurationError
from bot.ports import Backend, ConcurrentBackend, GenerationStore, PolicyStore, SettingsStore, Stores
from bot.service import ImageService
from imagebot.plugins import backend_plugin
from storage import ImageFiles, SqliteDatabase

__all__ = ["App", "bootstrap", "cuda_present", "freeze_startup_heap", "pick_default_model", "stores_of"]

TINY_NOTICE = (
    "No CUDA GPU and no IMAGEBOT_DEFAULT_MODEL set: using the tiny offline model "
    "(random weights, so it makes noise, not pictures). Set IMAGEBOT_DEFAULT_MODEL=sdxl on a GPU box."
)


class Database(Protocol):
    """The stores of one database, closed together (`storage.SqliteDatabase`, or a test's in-memory one)."""

    @property
    def generations(self) -> GenerationStore:
        """Return the generations and their images."""
        ...

    @property
    def policies(self) -> PolicyStore:
        """Return the server rules and audit log."""
        ...

    @property
    def settings(self) -> SettingsStore:
        """Return the users' defaults."""
        ...

    async def close(self) -> None:
        """Release the database."""
        ...


def stores_of(database: Database, data_dir: Path) -> Stores:
    """Return the service's stores: a database's three, and the image files under `data_dir`."""
    return Stores(database.generations, database.policies, database.settings, ImageFiles(data_dir))


@dataclass
class App:
    """Everything an entry point holds while the bot runs."""

    service: ImageService
    backend: Backend
    database: Database
    catalog: Catalog
    data_dir: Path
    pinned: dict[str, Backend] = field(default_factory=dict)

    async def aclose(self) -> None:
        """Stop the queue, the backends and the database, in that order."""
        await self.service.aclose()
        for backend in (self.backend, *self.pinned.values()):
            await backend.aclose()
        await self.database.close()


def cuda_present() -> bool:
    """Tell whether an NVIDIA GPU is visible, without importing torch in the bot process."""
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


def pick_default_model(configured: str | None, announce: Callable[[str], None], backend: str = "local") -> str:
    """Return the configured default model, else sdxl on a hosted API or with CUDA, else the tiny model (announced)."""
    if configured:
        return configured
    if backend != "local" or cuda_present():
        return "sdxl"
    announce(TINY_NOTICE)
    return "tiny"


async def bootstrap(
    core: CoreSettings | None = None,
    queue: QueueSettings | None = None,
    *,
    backend: Backend | None = None,
    database: Database | None = None,
    announce: Callable[[str], None] = print,
) -> App:
    """Build the service from settings; tests pass their own backend or history store.

    Args:
        core: data, backend and request settings; read from the environment when not given.
        queue: queue limits; likewise.
        backend: use this backend instead of the configured one.
        database: use these stores instead of the SQLite file in the data directory.
        announce: where notices for the operator go (the tiny-model notice).
    """
    core = core or CoreSettings()
    queue = queue or QueueSettings()
    catalog = load_catalog(core.catalog)
    default_model = pick_default_model(core.default_model, announce, core.backend)
    try:
        catalog.get("model", default_model)
    except BotError as error:
        raise ConfigurationError(f"IMAGEBOT_DEFAULT_MODEL: {error}") from error
    core.data_dir.mkdir(parents=True, exist_ok=True)
    backend = backend or backend_plugin(core.backend).create(catalog, core)
    pinned: dict[str, Backend] = {}
    for name in sorted({m.backend for m in catalog.entries("model") if m.backend and m.backend != backend.name}):
        try:
            pinned[name] = backend_plugin(name).create(catalog, core)
        except ConfigurationError as error:
            # The models pinned there are refused with a sentence; the others work.
            announce(f"Catalog models on the {name} backend are unavailable: {error}")
    database = database or await SqliteDatabase.open(core.data_dir / "imagebot.sqlite3")
    stores = stores_of(database, core.data_dir)
    service = ImageService(
        backend=backend,
        backends=pinned,
        stores=stores,
        catalog=catalog,
        default_model=default_model,
        limits=Limits(pixel_budget=core.pixel_budget),
        # A cluster batches and spreads what it is sent at once; one GPU worker takes one job at a time.
        concurrency=backend.concurrency if isinstance(backend, ConcurrentBackend) else 1,
        max_queue=queue.max_queue,
        max_per_user=queue.max_per_user,
        daily_quota=queue.daily_quota,
        log_prompts=core.log_prompts,
        retention_days=core.retention_days,
        max_input_bytes=core.max_input_bytes,
        max_input_pixels=core.max_input_pixels,
    )
    await service.start()
    return App(service, backend, database, catalog, core.data_dir, pinned)


def freeze_startup_heap() -> None:
    """Keep what startup allocated (modules, chat SDKs, the catalog) out of every later garbage collection.

    A long-running bot with discord.py and slack-bolt imported holds enough
    objects that a full collection paused the event loop for up to 70 ms in
    bench/ack_latency.py (p99 of Discord acks 12-30 ms instead of 1-2 ms);
    frozen, the collector only walks what is allocated while serving.
    """
    gc.collect()
    gc.freeze()

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
from bot.config import (
    CoreSettings,
    LocalWorkerSettings,
    ModelsLabSettings,
    QueueSettings,
    RaySettings,
    RunwareSettings,
)
from bot.errors import BotError
from bot.options import Limits
from bot.ports import Backend, ConcurrentBackend, GenerationStore, PolicyStore, SettingsStore, Stores
from bot.service import ImageService
from storage import ImageFiles, SqliteDatabase

__all__ = ["App", "ConfigurationError", "bootstrap", "cuda_present", "freeze_startup_heap", "pick_default_model"]

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


class ConfigurationError(Exception):
    """The settings cannot make a working bot; the message says which setting to change."""


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


def _backend(name: str, core: CoreSettings, worker: LocalWorkerSettings, catalog: Catalog) -> Backend:
    if name == "local":
        from inference.local import LocalBackend

        token = worker.hf_token.get_secret_value() if worker.hf_token else None
        return LocalBackend(
            catalog,
            core.data_dir,
            device=worker.device,
            dtype=worker.dtype,
            hf_token=token,
            stall_timeout=worker.stall_timeout,
            load_timeout=worker.load_timeout,
            max_batch=worker.max_batch,
            safety_checker=worker.safety_checker,
            preview_decoder=worker.preview_decoder,
        )
    if name == "ray":
        try:
            from inference.ray_serve import RayBackend
        except ImportError as error:
            raise ConfigurationError(
                "IMAGEBOT_BACKEND=ray needs Ray Serve: install the ray extra (pip install -e '.[ray]')."
            ) from error
        settings = RaySettings()
        return RayBackend(
            catalog,
            core.data_dir,
            settings.address,
            app_name=settings.app_name,
            stall_timeout=worker.stall_timeout,
            load_timeout=worker.load_timeout,
            concurrency=settings.concurrency,
        )
    if name == "runware":
        from inference.runware import RunwareBackend

        runware = RunwareSettings()
        if runware.api_key is None:
            raise ConfigurationError("the runware backend needs IMAGEBOT_RUNWARE_API_KEY.")
        return RunwareBackend(catalog, runware)
    if name == "modelslab":
        from inference.modelslab import ModelsLabBackend

        modelslab = ModelsLabSettings()
        if modelslab.api_key is None:
            raise ConfigurationError("the modelslab backend needs IMAGEBOT_MODELSLAB_API_KEY.")
        return ModelsLabBackend(catalog, modelslab)
    raise ConfigurationError(
        f"IMAGEBOT_BACKEND={name} is not available in this version; use local, ray, runware or modelslab."
    )


async def bootstrap(
    core: CoreSettings | None = None,
    worker: LocalWorkerSettings | None = None,
    queue: QueueSettings | None = None,
    *,
    backend: Backend | None = None,
    database: Database | None = None,
    announce: Callable[[str], None] = print,
) -> App:
    """Build the service from settings; tests pass their own backend or history store.

    Args:
        core: data, backend and request settings; read from the environment when not given.
        worker: local worker settings; likewise.
        queue: queue limits; likewise.
        backend: use this backend instead of the configured one.
        database: use these stores instead of the SQLite file in the data directory.
        announce: where notices for the operator go (the tiny-model notice).
    """
    core = core or CoreSettings()
    worker = worker or LocalWorkerSettings()
    queue = queue or QueueSettings()
    catalog = load_catalog(core.catalog)
    default_model = pick_default_model(core.default_model, announce, core.backend)
    try:
        catalog.get("model", default_model)
    except BotError as error:
        raise ConfigurationError(f"IMAGEBOT_DEFAULT_MODEL: {error}") from error
    core.data_dir.mkdir(parents=True, exist_ok=True)
    backend = backend or _backend(core.backend, core, worker, catalog)
    pinned: dict[str, Backend] = {}
    for name in sorted({m.backend for m in catalog.entries("model") if m.backend and m.backend != backend.name}):
        try:
            pinned[name] = _backend(name, core, worker, catalog)
        except ConfigurationError as error:
            # The models pinned there are refused with a sentence; the others work.
            announce(f"Catalog models on the {name} backend are unavailable: {error}")
    database = database or await SqliteDatabase.open(core.data_dir / "imagebot.sqlite3")
    stores = Stores(database.generations, database.policies, database.settings, ImageFiles(core.data_dir))
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

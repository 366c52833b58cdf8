"""Wire the real parts together: settings → stores → backend → service."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot.catalog import Catalog, load_catalog
from bot.config import CoreSettings, GallerySettings, QueueSettings
from bot.errors import BotError
from bot.options import Limits
from bot.plugins import ConfigurationError
from bot.ports import (
    Backend,
    ConcurrentBackend,
    GalleryLinks,
    GenerationStore,
    PolicyStore,
    SettingsStore,
    Stores,
    WarmingBackend,
)
from bot.service import ImageService
from bot.wildcards import WildcardFolder
from imagebot.plugins import backend_plugin
from storage import ImageFiles, SqliteDatabase, SqliteGallery

if TYPE_CHECKING:
    from adapters.gallery import Links

__all__ = ["App", "Gallery", "bootstrap", "cuda_present", "freeze_startup_heap", "pick_default_model", "stores_of"]

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
class Gallery:
    """The web gallery's parts: its read model on its own connection, its links, and where it listens."""

    store: SqliteGallery
    links: Links
    settings: GallerySettings
    prefix: str

    @contextlib.asynccontextmanager
    async def serving(self, service: ImageService) -> AsyncIterator[None]:
        """Serve the gallery's pages on its port until the block ends."""
        from adapters.gallery import create_app, serving

        app = create_app(
            service=service,
            store=self.store,
            links=self.links,
            prefix=self.prefix,
            rate_limit=self.settings.rate_limit,
        )
        assert self.settings.port is not None
        async with serving(app, self.settings.host, self.settings.port):
            yield


async def open_gallery(settings: GallerySettings, data_dir: Path) -> Gallery:
    """Open the gallery's connection to the bot's file and make its link signer (aiohttp loaded only now)."""
    try:
        from adapters.gallery import Links, secret_key
    except ImportError as error:
        raise ConfigurationError(
            f"IMAGEBOT_GALLERY_PORT is set, but the gallery's packages are missing ({error.name});"
            " install the gallery extra: pip install 'imagebot[gallery]'"
        ) from error
    base_url = (settings.base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    # The base URL's path is where the pages are served, so a proxy passes paths through unchanged.
    prefix = "/" + base_url.split("://", 1)[-1].partition("/")[2].strip("/")
    secret = settings.secret.get_secret_value() if settings.secret else None
    store = await SqliteGallery.open(data_dir / "imagebot.sqlite3")
    links = Links(
        secret=secret_key(data_dir, secret),
        store=store,
        base_url=base_url,
        data_dir=data_dir,
        lifetime_days=settings.token_days,
    )
    return Gallery(store, links, settings, prefix.rstrip("/"))


@dataclass
class App:
    """Everything an entry point holds while the bot runs."""

    service: ImageService
    backend: Backend
    database: Database
    catalog: Catalog
    data_dir: Path
    pinned: dict[str, Backend] = field(default_factory=dict)
    gallery: Gallery | None = None

    async def aclose(self) -> None:
        """Stop the queue, the backends and the databases, in that order."""
        await self.service.aclose()
        for backend in (self.backend, *self.pinned.values()):
            await backend.aclose()
        await self.database.close()
        if self.gallery is not None:
            await self.gallery.store.close()


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
    gallery: GallerySettings | None = None,
    announce: Callable[[str], None] = print,
    warm: bool = False,
) -> App:
    """Build the service from settings; tests pass their own backend or history store.

    Args:
        core: data, backend and request settings; read from the environment when not given.
        queue: queue limits; likewise.
        backend: use this backend instead of the configured one.
        database: use these stores instead of the SQLite file in the data directory.
        gallery: the web gallery's settings; it is opened when they name a port.
        announce: where notices for the operator go (the tiny-model notice).
        warm: get the backend ready for the default model now (a bot that serves; a one-shot
            command such as ``imagebot history`` must not start a GPU worker it never uses).
    """
    core = core or CoreSettings()
    queue = queue or QueueSettings()
    catalog = load_catalog(core.catalog)
    default_model = pick_default_model(core.default_model, announce, core.backend)
    try:
        catalog.get("model", default_model)
    except BotError as error:
        raise ConfigurationError(f"IMAGEBOT_DEFAULT_MODEL: {error}") from error
    if core.upscaler:
        try:
            catalog.get("upscaler", core.upscaler)
        except BotError as error:
            raise ConfigurationError(f"IMAGEBOT_UPSCALER: {error}") from error
    if core.wildcards is not None and not core.wildcards.is_dir():
        raise ConfigurationError(f"IMAGEBOT_WILDCARDS: {core.wildcards} is not a folder")
    try:
        wildcards = WildcardFolder(core.wildcard_folder)
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"IMAGEBOT_WILDCARDS: {error}") from error
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
    web = await open_gallery(gallery, core.data_dir) if gallery is not None and gallery.port is not None else None
    links: GalleryLinks | None = web.links if web is not None else None
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
        gallery=links,
        upscaler=core.upscaler,
        wildcards=wildcards,
    )
    await service.start()
    if warm and isinstance(backend, WarmingBackend):
        backend.warm_up(default_model)
    return App(service, backend, database, catalog, core.data_dir, pinned, web)


def freeze_startup_heap() -> None:
    """Keep what startup allocated (modules, chat SDKs, the catalog) out of every later garbage collection.

    A long-running bot with discord.py and slack-bolt imported holds enough
    objects that a full collection paused the event loop for up to 70 ms in
    bench/ack_latency.py (p99 of Discord acks 12-30 ms instead of 1-2 ms);
    frozen, the collector only walks what is allocated while serving.
    """
    gc.collect()
    gc.freeze()

"""What a backend or a chat offers the composition root, so that either is found by name and checks itself.

Backends and chats register under the Python entry-point groups
``imagebot.backends`` and ``imagebot.chats`` (see pyproject.toml); a package
that adds one (ComfyUI, Matrix) declares its own entry point and touches
nothing here. A plugin object is light to import: it loads its SDK only when
asked to create or check something.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from bot.catalog import Catalog
from bot.config import CoreSettings
from bot.ports import Backend
from bot.service import ImageService

__all__ = ["BACKENDS", "CHATS", "BackendPlugin", "ChatPlugin", "Check", "ConfigurationError"]

BACKENDS = "imagebot.backends"
CHATS = "imagebot.chats"


class ConfigurationError(Exception):
    """The settings cannot make a working bot; the message says which setting to change."""


@dataclass(frozen=True, slots=True)
class Check:
    """One line of ``imagebot doctor``: what was checked, whether it passed, and what was found (or the fix)."""

    name: str
    ok: bool
    detail: str


@runtime_checkable
class BackendPlugin(Protocol):
    """Makes a `Backend` from the settings and says whether it can work here."""

    name: str

    def create(self, catalog: Catalog, core: CoreSettings) -> Backend:
        """Return the backend; raise `ConfigurationError` naming the setting that is missing."""
        ...

    async def checks(self, catalog: Catalog, core: CoreSettings, *, running: bool) -> list[Check]:
        """Return this backend's doctor checks (`running`: a health check of a running bot)."""
        ...


@runtime_checkable
class ChatPlugin(Protocol):
    """Runs one chat platform's front end on the service when its credentials are set."""

    name: str

    def configured(self) -> bool:
        """Tell whether the chat's credentials are set, so `imagebot run` starts it."""
        ...

    async def run(self, service: ImageService, data_dir: Path) -> None:
        """Run the chat until it is cancelled."""
        ...

    async def checks(self) -> list[Check]:
        """Return this chat's doctor checks."""
        ...

"""Fixtures of the local-backend tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bot.catalog import load_catalog


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(tiny_data_dir: Path) -> AsyncIterator[object]:
    """One started LocalBackend per test module: starting a worker means importing torch, which is slow."""
    from inference.local import LocalBackend

    backend = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    await backend.start()
    yield backend
    await backend.aclose()

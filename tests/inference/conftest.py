"""Fixtures of the local-backend tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
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


@pytest.fixture(scope="module")
def runner(tiny_data_dir: Path) -> Any:
    """The tiny model's runner in the test process (CPU, float32), one per test module; a module may load more."""
    from inference.local._pipeline import SDXLRunner

    return SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")


@pytest.fixture
def unet_calls(runner: Any) -> Iterator[Counter[str]]:
    """UNet forward calls of the base and the refiner of the module's `runner`, while the test runs."""
    calls: Counter[str] = Counter()
    hooks = [
        runner.base.unet.register_forward_hook(lambda *_: calls.update(["base"])),
        runner.refiner.unet.register_forward_hook(lambda *_: calls.update(["refiner"])),
    ]
    yield calls
    for hook in hooks:
        hook.remove()

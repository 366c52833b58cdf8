"""Fixtures of the entry-point property suite."""

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a world's image files would go (its service is never started, so none are written)."""
    return tmp_path_factory.mktemp("data")


Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    """Run an example's coroutine on one event loop per module: a loop per example would cost more than the example."""
    with asyncio.Runner() as runner:
        yield runner.run

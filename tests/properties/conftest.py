"""Fixtures of the entry-point property suite."""

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a world's image files would go (its service is never started, so none are written)."""
    return tmp_path_factory.mktemp("data")


T = TypeVar("T")


class Run(Protocol):
    """Run a coroutine to its end on the module's event loop and return what it returns."""

    def __call__(self, coroutine: Coroutine[Any, Any, T], /) -> T: ...


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    """Run an example's coroutine on one event loop per module: a loop per example would cost more than the example."""
    with asyncio.Runner() as runner:
        yield runner.run

"""Fixtures shared by the storage tests: requests, a fake clock, and both kinds of stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.history import NewGeneration
from bot.request import GenerationRequest
from storage import SqliteDatabase
from tests.fakes.stores import InMemoryDatabase


class FakeClock:
    """Returns 1000.0, 1001.0, 1002.0, … so timestamps and durations are exact."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now - 1.0


def make_request(seed: int = 42, **changes: Any) -> GenerationRequest:
    fields: dict[str, Any] = {"prompt": "a lighthouse at dusk", "model": "sdxl", "seed": seed}
    fields.update(changes)
    return GenerationRequest(**fields)


def make_new(user_id: str = "u1", platform: str = "discord", seed: int = 42, **changes: Any) -> NewGeneration:
    fields: dict[str, Any] = {
        "platform": platform,
        "user_id": user_id,
        "request": make_request(seed),
        "action": "generate",
        "backend": "local",
    }
    fields.update(changes)
    return NewGeneration(**fields)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="make_request")
def make_request_fixture() -> Any:
    """The request builder, as a fixture: test modules cannot import a non-package conftest safely."""
    return make_request


@pytest.fixture(name="make_new")
def make_new_fixture() -> Any:
    """The NewGeneration builder, as a fixture."""
    return make_new


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Any]:
    """Each behaviour test runs against both stores, which must agree.

    The SQLite store runs on ":memory:": the same SQL, without paying for fsyncs
    in every test. What only a file has (WAL, durability, migrations on reopen)
    is tested in test_sqlite_history.py.
    """
    if request.param == "memory":
        database: Any = InMemoryDatabase.create(clock=clock)
    else:
        database = await SqliteDatabase.open(":memory:", clock=clock)
    yield database
    await database.close()

"""Fixtures of the core's tests."""

from __future__ import annotations

import pytest

from tests.fakes.backend import FakeBackend


@pytest.fixture
def backend() -> FakeBackend:
    """The fake backend a test's service makes images with: it records each request it is sent."""
    return FakeBackend()

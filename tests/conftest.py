"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Never reach the Hugging Face Hub from a test; worker processes inherit this.
os.environ["HF_HUB_OFFLINE"] = "1"
# The tiny model's tensors are too small to profit from threads, and two OpenMP
# threads on a busy two-core box spin for seconds per step. Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Examples are judged on what they find, not on how fast a shared CI box runs them.
settings.register_profile("thorough", deadline=None)
# `make test-fast` wants an answer in a minute: a few examples still catch a broken strategy.
# Tests that set their own max_examples keep it under either profile.
settings.register_profile("quick", settings.get_profile("thorough"), max_examples=10)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or "thorough"
settings.load_profile(PROFILE)
# The property suite over every entry point (tests/properties) wants 10,000 examples each under
# `make test`: the rare payload that crashes is what it is for. Other property tests keep the profile's count.
FUZZ_EXAMPLES = 10 if PROFILE == "quick" else 10_000


_PROPERTIES = Path(__file__).parent / "properties"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the longest files first: the entry-point property suite (minutes each under `make test`), then those
    with slow tests (worker processes, Ray, whole bots). xdist hands files to its workers in this order (the
    `make test`'s `--no-loadscope-reorder`: by default it goes by how many tests a file has, which put the property
    suite, few tests of minutes each, last), so the short ones fill in at the end instead of one long file running
    alone there. Each file's tests keep their order."""
    rank: dict[Path, int] = {}
    for item in items:
        mine = 0 if item.path.is_relative_to(_PROPERTIES) else 1 if item.get_closest_marker("slow") else 2
        rank[item.path] = min(rank.get(item.path, 2), mine)
    items.sort(key=lambda item: rank[item.path])


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the tiny random-weight SDXL, built once per test session."""
    from inference import tiny

    data_dir = tmp_path_factory.mktemp("data")
    tiny.ensure(data_dir)
    return data_dir

"""Safety checkers with a fixed verdict, for ``safety_checker="tests.fakes.safety:flag_all"`` and the like.

The worker imports the factory named in its setting (`inference.local._safety.load_checker`); its
PYTHONPATH holds the repository root, so these import in the worker process too.
"""

from __future__ import annotations

from typing import Any


class FixedVerdict:
    """Give every image the same verdict, and remember the models it was asked about."""

    def __init__(self, flagged: bool) -> None:
        self.flagged = flagged
        self.models: list[str] = []

    def __call__(self, model_local: str, images: list[Any]) -> list[bool | None]:
        self.models.append(model_local)
        return [self.flagged] * len(images)


def flag_all() -> FixedVerdict:
    """Return a checker that flags every image."""
    return FixedVerdict(True)


def pass_all() -> FixedVerdict:
    """Return a checker that passes every image."""
    return FixedVerdict(False)

"""The one seam between the bot and whatever makes images."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol, runtime_checkable

from bot.errors import JobCancelled
from bot.request import GeneratedImage, GenerationRequest, Progress

__all__ = ["Backend", "BatchingBackend", "ConcurrentBackend", "ProgressCallback"]

ProgressCallback = Callable[[Progress], None]


@runtime_checkable
class Backend(Protocol):
    """Makes the images of one fully resolved request.

    `generate` reports each finished step through `on_progress`, checks `cancel`
    between steps and raises `bot.errors.JobCancelled` when it is set. Failures
    of the backend itself surface as `bot.errors.BackendUnavailable` (or another
    `BotError`), never as transport or CUDA exceptions.
    """

    @property
    def name(self) -> str:
        """Return the backend's name in settings and the catalog (``local``, ``runware``…)."""
        ...

    def check(self, request: GenerationRequest) -> None:
        """Raise `bot.errors.InvalidOption` when this backend cannot make the request as asked.

        Called before the request is queued, so a refusal costs nothing and loses nothing.
        """
        ...

    async def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: asyncio.Event | None = None,
    ) -> list[GeneratedImage]:
        """Return one image per seed of the request, in order."""
        ...

    async def aclose(self) -> None:
        """Release processes, connections and memory."""
        ...


@runtime_checkable
class BatchingBackend(Backend, Protocol):
    """A backend that can make several compatible requests in one call (the local GPU worker)."""

    max_batch: int

    def batch_key(self, request: GenerationRequest) -> Hashable:
        """Return what requests must share to be made together."""
        ...

    async def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: Sequence[ProgressCallback | None],
        cancels: Sequence[asyncio.Event],
    ) -> list[list[GeneratedImage] | JobCancelled]:
        """Return each request's images (or `JobCancelled` for one cancelled alone), in order."""
        ...


@runtime_checkable
class ConcurrentBackend(Backend, Protocol):
    """A backend that takes several jobs at once and batches and spreads them itself (a Ray cluster)."""

    concurrency: int

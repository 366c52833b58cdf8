"""A job handle: what adapters hold while a generation is queued or running.

A `Job` records every event it goes through (queued, started, progress, done,
failed, cancelled); each call of `events()` replays them from the start and
then follows live, so a late subscriber misses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from bot.errors import BotError, JobCancelled
from bot.history import Generation
from bot.request import GenerationRequest, Progress

__all__ = ["Job", "JobEvent", "Requester", "progress_bar"]


def progress_bar(step: int, total: int, width: int = 20) -> str:
    """Return a text bar such as ``██████░░░░`` for `step` of `total`."""
    filled = width * min(max(step, 0), total) // max(total, 1)
    return "█" * filled + "░" * (width - filled)


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where: the owner of the generation.

    `age_restricted` is the platform's own flag of the channel (Discord's age-restricted
    channels); a server's policy can add channels (Slack has no such flag).
    """

    platform: str
    user_id: str
    workspace: str | None = None
    channel: str | None = None
    age_restricted: bool = False
    direct: bool = False  # a direct message with the bot: a server's channel list does not apply

    @property
    def key(self) -> tuple[str, str]:
        """Return the identity used for ownership and fairness."""
        return self.platform, self.user_id


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One thing that happened to a job.

    `kind` says which; `position` is set for ``queued``, `progress` for
    ``progress``, `generation` for ``done``, `message` (a user sentence) for
    ``failed`` and ``cancelled``.
    """

    kind: Literal["queued", "started", "progress", "done", "failed", "cancelled"]
    position: int | None = None
    progress: Progress | None = None
    generation: Generation | None = None
    message: str | None = None

    @property
    def final(self) -> bool:
        """Return whether the job ends with this event."""
        return self.kind in ("done", "failed", "cancelled")


@dataclass(eq=False)
class Job:
    """A queued or running generation, with its event history."""

    id: int
    requester: Requester
    request: GenerationRequest
    warnings: tuple[str, ...] = ()
    private: bool = False
    batchable: bool = True
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    position_of: Callable[[Job], int | None] = field(default=lambda job: None, repr=False)
    eta_of: Callable[[Job], float | None] = field(default=lambda job: None, repr=False)
    _history: list[JobEvent] = field(default_factory=list, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def position(self) -> int | None:
        """Return the place in the queue (1 = next), 0 while running, None when finished."""
        return None if self.finished else self.position_of(self)

    @property
    def eta(self) -> float | None:
        """Return the seconds until it should start, from recent job times; None if unknown or not waiting."""
        return None if self.finished else self.eta_of(self)

    @property
    def finished(self) -> bool:
        """Return whether the job has reached done, failed or cancelled."""
        return bool(self._history) and self._history[-1].final

    @property
    def succeeded(self) -> bool:
        """Return whether the job ended with its images made."""
        return bool(self._history) and self._history[-1].kind == "done"

    def emit(self, event: JobEvent) -> None:
        """Record an event and wake every subscriber; nothing is recorded after the final one."""
        if self.finished:
            return
        self._history.append(event)
        self._changed.set()

    async def events(self) -> AsyncIterator[JobEvent]:
        """Yield every event of the job, past and future, ending with the final one."""
        seen = 0
        while True:
            while seen < len(self._history):
                event = self._history[seen]
                seen += 1
                yield event
                if event.final:
                    return
            self._changed.clear()
            await self._changed.wait()

    async def result(self) -> Generation:
        """Wait for the job to end and return its generation, or raise the user-facing error."""
        async for event in self.events():
            if event.kind == "done":
                assert event.generation is not None
                return event.generation
            if event.kind == "cancelled":
                raise JobCancelled()
            if event.kind == "failed":
                raise BotError(event.message or "The generation failed.")
        raise AssertionError("unreachable: events() ends with a final event")

"""What the history records: every generation a user asked for, its images, and what people did in a server.

These are plain frozen values; the stores that keep them are ports (`bot.ports`)
implemented in `storage/`. Status moves one way: ``queued`` → ``running`` →
``done`` | ``failed`` | ``cancelled``; the last three are final.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Literal, get_args

from bot.request import GenerationRequest

__all__ = [
    "ACTIONS",
    "FINAL",
    "UNFINISHED",
    "Action",
    "AuditEntry",
    "Generation",
    "NewGeneration",
    "Status",
    "StoredImage",
]

Action = Literal["generate", "reroll", "refine", "vary", "upscale"]
Status = Literal["queued", "running", "done", "failed", "cancelled"]

ACTIONS: frozenset[str] = frozenset(get_args(Action))
UNFINISHED: tuple[Status, ...] = ("queued", "running")
FINAL: tuple[Status, ...] = ("done", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One thing someone did in a server: made, rerolled, refined or deleted an image, was blocked, changed a rule."""

    platform: str
    workspace: str
    user_id: str
    action: str
    generation_id: int | None = None
    detail: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One image file of a generation; `path` is relative to the data directory."""

    index: int
    seed: int
    path: str
    sha256: str
    width: int
    height: int
    nsfw: bool | None = None  # the safety check's verdict; None: the image was not checked

    @property
    def filename(self) -> str:
        """Return the name a chat uploads it under: ``imagebot-`` and its stored file's name."""
        return f"imagebot-{PurePath(self.path).name}"


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """What a caller knows about a generation before it is queued.

    Raises:
        ValueError: the request has no seed yet, or `action` is not one of `Action`.
    """

    platform: str
    user_id: str
    request: GenerationRequest
    action: Action
    backend: str
    workspace: str | None = None
    channel: str | None = None
    parent_id: int | None = None
    warnings: tuple[str, ...] = ()
    private: bool = False
    cost: float | None = None  # paid before the job ran: a guide map the backend made for it

    def __post_init__(self) -> None:
        if self.request.seed is None:
            raise ValueError("a generation is stored with its seed; resolve the request's seed first")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {sorted(ACTIONS)}, not {self.action!r}")
        # A list passed by a caller would make the frozen dataclass unhashable and mutable.
        object.__setattr__(self, "warnings", tuple(self.warnings))


@dataclass(frozen=True, slots=True)
class Generation:
    """One stored generation: the request that reproduces it, where it stands, and its images."""

    id: int
    platform: str
    workspace: str | None
    channel: str | None
    user_id: str
    parent_id: int | None
    action: Action
    request: GenerationRequest
    seed: int
    model: str
    backend: str
    status: Status
    error: str | None
    warnings: tuple[str, ...]
    private: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    message_ref: str | None
    cost: float | None
    images: tuple[StoredImage, ...] = field(default=())
    interruptions: int = 0
    starred: bool = False  # its author starred it for the server's showcase

    @property
    def seconds(self) -> float | None:
        """Return how long the backend worked on it, or None until it has started and finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

"""In-memory stores that behave as the SQLite ones do, for fast tests of the code above them.

The contract tests in tests/storage/test_history_store.py run both against the
same assertions, so a fake cannot drift from the real store.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from bot.history import UNFINISHED, AuditEntry, Generation, NewGeneration, Status, StoredImage
from bot.request import GenerationRequest
from storage._database import check_limit, document_json
from storage.generations import check_images, check_status

Clock = Callable[[], float]
_Store = TypeVar("_Store")


class InMemoryGenerations:
    """A `GenerationStore` kept in a dict; it forgets everything when dropped."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._generations: dict[int, Generation] = {}
        self._last_id = 0
        self.input_sources: dict[tuple[int, int], str] = {}  # (generation id, image index) → input sha256

    async def add(self, new: NewGeneration) -> Generation:
        """Store a new ``queued`` generation, created now, and return it with its id."""
        if new.parent_id is not None and new.parent_id not in self._generations:
            raise KeyError(new.parent_id)
        assert new.request.seed is not None  # NewGeneration checks it
        # Round-trip the request as the SQLite store does, so both hand back equal objects.
        request = GenerationRequest.from_dict(json.loads(json.dumps(new.request.to_dict())))
        self._last_id += 1
        generation = Generation(
            id=self._last_id,
            platform=new.platform,
            workspace=new.workspace,
            channel=new.channel,
            user_id=new.user_id,
            parent_id=new.parent_id,
            action=new.action,
            request=request,
            seed=new.request.seed,
            model=new.request.model,
            backend=new.backend,
            status="queued",
            error=None,
            warnings=new.warnings,
            private=new.private,
            created_at=self._clock(),
            started_at=None,
            finished_at=None,
            message_ref=None,
            cost=new.cost,
        )
        self._generations[generation.id] = generation
        return generation

    async def get(self, generation_id: int) -> Generation | None:
        """Return the generation with its images, or None."""
        return self._generations.get(generation_id)

    async def latest(self, platform: str, user_id: str, *, status: Status | None = None) -> Generation | None:
        """Return the user's newest generation (optionally only one with that status), or None."""
        check_status(status)
        mine = (
            g
            for g in self._generations.values()
            if g.platform == platform and g.user_id == user_id and (status is None or g.status == status)
        )
        return max(mine, key=lambda g: g.id, default=None)

    async def recent(
        self, platform: str, user_id: str, limit: int = 10, before_id: int | None = None
    ) -> list[Generation]:
        """Return up to `limit` of the user's generations, newest first, older than `before_id` if given."""
        check_limit(limit)
        mine = [
            g
            for g in self._generations.values()
            if g.platform == platform and g.user_id == user_id and (before_id is None or g.id < before_id)
        ]
        return sorted(mine, key=lambda g: g.id, reverse=True)[:limit]

    async def mark_running(self, generation_id: int) -> bool:
        """Record that a worker started it now; return False if it had already finished."""
        return self._move(generation_id, status="running", started_at=self._clock())

    async def mark_interrupted(self, generation_id: int) -> bool:
        """Put a ``running`` generation back to ``queued``, counting the interruption; False if not running."""
        generation = self._generations[generation_id]
        if generation.status != "running":
            return False
        return self._move(generation_id, status="queued", started_at=None, interruptions=generation.interruptions + 1)

    async def mark_done(
        self,
        generation_id: int,
        images: Sequence[StoredImage],
        cost: float | None = None,
        notes: Sequence[str] = (),
    ) -> bool:
        """Record its images, cost and notes and that it finished now; False (nothing stored) if it had already."""
        ordered = check_images(images)
        generation = self._generations.get(generation_id)
        warnings = (generation.warnings if generation else ()) + tuple(notes)
        return self._move(
            generation_id,
            status="done",
            finished_at=self._clock(),
            images=ordered,
            cost=_added(generation, cost),
            warnings=warnings,
        )

    async def mark_failed(self, generation_id: int, error: str, cost: float | None = None) -> bool:
        """Record why it failed and what it cost anyway; return False if it had already finished."""
        generation = self._generations.get(generation_id)
        return self._move(
            generation_id, status="failed", finished_at=self._clock(), error=error, cost=_added(generation, cost)
        )

    async def mark_cancelled(self, generation_id: int) -> bool:
        """Record that it was cancelled; return False if it had already finished."""
        return self._move(generation_id, status="cancelled", finished_at=self._clock())

    async def set_message_ref(self, generation_id: int, ref: str | None) -> None:
        """Remember the chat message that shows it (None forgets it)."""
        generation = self._generations[generation_id]
        self._generations[generation_id] = dataclasses.replace(generation, message_ref=ref)

    async def set_starred(self, generation_id: int, starred: bool) -> None:
        """Star it for its server's showcase, or take the star back."""
        generation = self._generations[generation_id]
        self._generations[generation_id] = dataclasses.replace(generation, starred=starred)

    async def input_flagged(self, sha256: str) -> bool:
        """Tell whether an input image is one of a generation's images that the safety check flagged."""
        for (generation_id, index), sha in self.input_sources.items():
            generation = self._generations.get(generation_id)
            if sha == sha256 and generation and any(i.index == index and i.nsfw for i in generation.images):
                return True
        return False

    async def find_images(self, platform: str, user_id: str, sha256s: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Return which of the user's images input images were made from: sha256 → (generation id, image index)."""
        wanted = set(sha256s)
        found: dict[str, tuple[int, int]] = {}
        for (generation_id, index), sha in sorted(self.input_sources.items(), reverse=True):  # the oldest kept
            generation = self._generations[generation_id]
            if sha in wanted and (generation.platform, generation.user_id) == (platform, user_id):
                found[sha] = (generation_id, index)
        return found

    async def note_input_source(self, sha256: str, generation_id: int, index: int) -> None:
        """Remember that an input image (the SHA-256 of its checked bytes) is one of a generation's images."""
        if generation_id not in self._generations:
            raise KeyError(generation_id)
        self.input_sources[generation_id, index] = sha256

    async def by_message_ref(self, platform: str, ref: str) -> Generation | None:
        """Return the (newest) generation shown by that message, or None."""
        shown = (g for g in self._generations.values() if g.platform == platform and g.message_ref == ref)
        return max(shown, key=lambda g: g.id, default=None)

    async def images_since(self, platform: str, workspace: str, since: float, user_id: str | None = None) -> int:
        """Return how many images the workspace (or one user in it) asked for since a time, not failed ones."""
        return sum(
            g.request.count
            for g in self._generations.values()
            if (g.platform, g.workspace) == (platform, workspace)
            and user_id in (None, g.user_id)
            and g.created_at >= since
            and g.status not in ("failed", "cancelled")
        )

    async def unfinished(self) -> list[Generation]:
        """Return every ``queued`` or ``running`` generation, oldest first, to resume after a restart."""
        return sorted((g for g in self._generations.values() if g.status in UNFINISHED), key=lambda g: g.id)

    async def delete(self, generation_id: int) -> tuple[StoredImage, ...]:
        """Delete it and its image rows; return those images so the caller can delete the files."""
        generation = self._generations.pop(generation_id, None)
        if generation is None:
            return ()
        # Mirrors ON DELETE CASCADE of input_sources.
        self.input_sources = {key: sha for key, sha in self.input_sources.items() if key[0] != generation_id}
        # Mirrors ON DELETE SET NULL: rerolls of a deleted image stay, without their parent.
        for child in [g for g in self._generations.values() if g.parent_id == generation_id]:
            self._generations[child.id] = dataclasses.replace(child, parent_id=None)
        return generation.images

    async def finished_ids(
        self, *, platform: str | None = None, user_id: str | None = None, before: float | None = None, limit: int = 500
    ) -> list[int]:
        """Return ids of finished generations (of one user, created before a time), oldest first, for deleting."""
        check_limit(limit)
        found = sorted(
            g.id
            for g in self._generations.values()
            if g.status not in UNFINISHED
            and platform in (None, g.platform)
            and user_id in (None, g.user_id)
            and (before is None or g.created_at < before)
        )
        return found[:limit]

    async def inputs_of(self, generation_ids: Iterable[int]) -> set[str]:
        """Return the SHA-256 of every input image (init image, mask) these generations' requests use."""
        found = (self._generations.get(generation_id) for generation_id in generation_ids)
        return {sha for g in found if g is not None for sha in _inputs(g)}

    async def unreferenced_inputs(self, shas: Iterable[str]) -> set[str]:
        """Return those of `shas` that no stored generation's request uses as its init image or mask."""
        used = {sha for g in self._generations.values() for sha in _inputs(g)}
        return set(shas) - used

    def _move(self, generation_id: int, **changes: Any) -> bool:
        generation = self._generations[generation_id]
        if generation.status not in UNFINISHED:
            return False
        self._generations[generation_id] = dataclasses.replace(generation, **changes)
        return True


def _added(generation: Generation | None, cost: float | None) -> float | None:
    """The job's cost added to what was paid before it ran, as SQLite's store adds it; None adds nothing."""
    before = generation.cost if generation else None
    if cost is None:
        return before
    return (before or 0.0) + cost


def _inputs(generation: Generation) -> set[str]:
    """The input images a generation's request uses, read from its stored form as SQLite's json_extract does."""
    stored = generation.request.to_dict()
    return {sha for sha in (stored.get("init_image"), stored.get("mask_image")) if isinstance(sha, str)}


class InMemoryPolicies:
    """A `PolicyStore` kept in dicts."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._policies: dict[tuple[str, str], str] = {}
        self._audit: list[AuditEntry] = []

    async def get(self, platform: str, workspace: str) -> dict[str, Any]:
        stored = self._policies.get((platform, workspace))
        return {} if stored is None else dict(json.loads(stored))

    async def put(self, platform: str, workspace: str, policy: Mapping[str, Any]) -> None:
        # Stored as JSON, as in SQLite, so a caller mutating its dict later changes nothing here.
        self._policies[(platform, workspace)] = document_json(policy)

    async def audit(self, entry: AuditEntry) -> None:
        """Record what someone did in a server, now."""
        self._audit.append(dataclasses.replace(entry, at=self._clock()))

    async def recent_audit(self, platform: str, workspace: str, limit: int = 20) -> list[AuditEntry]:
        """Return a server's newest audit entries, newest first."""
        check_limit(limit)
        mine = [e for e in self._audit if (e.platform, e.workspace) == (platform, workspace)]
        return mine[::-1][:limit]


class InMemorySettings:
    """A `SettingsStore` kept in a dict."""

    def __init__(self) -> None:
        self._settings: dict[tuple[str, str], str] = {}

    async def get(self, platform: str, user_id: str) -> dict[str, Any]:
        stored = self._settings.get((platform, user_id))
        return {} if stored is None else dict(json.loads(stored))

    async def put(self, platform: str, user_id: str, settings: Mapping[str, Any]) -> None:
        self._settings[(platform, user_id)] = document_json(settings)


@dataclasses.dataclass(frozen=True)
class InMemoryDatabase:
    """The three in-memory stores, shaped like `storage.SqliteDatabase`."""

    generations: InMemoryGenerations
    policies: InMemoryPolicies
    settings: InMemorySettings

    @classmethod
    def create(cls, clock: Clock = time.time) -> InMemoryDatabase:
        return cls(InMemoryGenerations(clock), InMemoryPolicies(clock), InMemorySettings())

    def copy(self) -> InMemoryDatabase:
        """Return an independent copy: what one stores the other does not see.

        Copying the containers is enough: what they hold (generations, audit entries, JSON text) is immutable.
        """
        return InMemoryDatabase(_copied(self.generations), _copied(self.policies), _copied(self.settings))

    async def close(self) -> None:
        """Nothing to release in memory."""


def _copied(store: _Store) -> _Store:
    """Return a store whose dicts and lists are copies of `store`'s, the values in them shared."""
    clone = copy.copy(store)
    for name, value in vars(store).items():
        if isinstance(value, dict | list):
            setattr(clone, name, value.copy())
    return clone

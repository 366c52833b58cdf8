"""The core's ports: what it needs from the world, as protocols that `inference/` and `storage/` implement.

Nothing here does I/O. The composition root (`imagebot.bootstrap`) picks the
real implementations; tests pass in-memory fakes (`tests/fakes/stores.py`) or a
recording backend (`tests/fakes/backend.py`)::

    Backend ─┬─ BatchingBackend      (the local GPU worker: compatible jobs in one call)
             ├─ ConcurrentBackend    (a Ray cluster: several jobs at once)
             ├─ WarmingBackend       (gets ready for a model before its first job: the local worker)
             ├─ ImageCheckingBackend (runs its safety check on users' images: the local worker, Ray)
             ├─ GuideBackend         (makes ControlNet guide maps: Runware, the local worker's annotators)
             ├─ DescribingBackend    (puts an image into words, /describe: Runware, the local worker's captioner)
             └─ PublicUpscaleBackend (its upscale puts the image at a public link: ModelsLab)
    Stores ──┬─ GenerationStore      (generations and their images)
             ├─ PolicyStore          (server rules and the audit log)
             ├─ SettingsStore        (each user's defaults)
             └─ ImageStore           (image files under the data directory)
    GalleryStore                     (the web gallery's read model: pages, search, link epochs)
    GalleryLinks                     (the web gallery's personal links, made and revoked for the chats)
    ChatPoster                       (a running chat: posts jobs started elsewhere, retracts images deleted elsewhere)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot.actions import ButtonAction
from bot.catalog import CatalogEntry
from bot.errors import JobCancelled
from bot.gallery import GalleryQuery
from bot.guides import GuideMap
from bot.history import AuditEntry, Generation, NewGeneration, Status, StoredImage
from bot.jobs import Job
from bot.request import GeneratedImage, GenerationRequest, Preprocess, Progress

if TYPE_CHECKING:  # bot.describe's use case reads these ports: its data type is named here for types only
    from bot.describe import Description

__all__ = [
    "Backend",
    "BatchingBackend",
    "ChatPoster",
    "ConcurrentBackend",
    "DescribingBackend",
    "GalleryLinks",
    "GalleryStore",
    "GenerationStore",
    "GuideBackend",
    "ImageCheckingBackend",
    "ImageStore",
    "PolicyStore",
    "ProgressCallback",
    "PublicUpscaleBackend",
    "SettingsStore",
    "Stores",
    "WarmingBackend",
]

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

    @property
    def upscales_alone(self) -> bool:
        """Tell whether its upscale is an upscaler of the image alone (Runware's): no strength, no catalog upscaler.

        False where an upscale is the hires fix or a catalog upscaler (the local worker).
        """
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


@runtime_checkable
class ImageCheckingBackend(Backend, Protocol):
    """A backend that can run its safety check on images a user gives (the local worker's checker)."""

    async def flags(self, model: str, images: Sequence[bytes]) -> list[bool]:
        """Return, per image (PNG bytes), whether the safety check of catalog model `model` flags it."""
        ...


@runtime_checkable
class PublicUpscaleBackend(Backend, Protocol):
    """A backend whose upscale puts the image at a public link for a while (ModelsLab's super resolution).

    The service does not send it a private image: a private result would be public there.
    """

    @property
    def public_upscale(self) -> str:
        """Return where the image goes and for how long, to follow "refused here: " (one clause)."""
        ...


@runtime_checkable
class CatalogBackend(Backend, Protocol):
    """A backend that can tell which catalog entries it runs here (the local worker: what is installed).

    Autocomplete and forms offer only those; a name typed anyway gets the backend's sentence.
    """

    def runs(self, entry: CatalogEntry) -> bool:
        """Tell whether a request naming `entry` could run here (blocking: it may look at the disk)."""
        ...


@runtime_checkable
class LimitedBackend(Backend, Protocol):
    """A backend that cannot do all a result's buttons ask (ModelsLab has no Vary): those are not shown.

    A button that can only be refused is clutter; the text commands still answer with the
    backend's sentence.
    """

    def withheld_actions(self, request: GenerationRequest) -> frozenset[ButtonAction]:
        """Return the buttons under a result of `request` whose requests this backend would refuse."""
        ...


@runtime_checkable
class GuideBackend(Backend, Protocol):
    """A backend that makes ControlNet guide maps the bot does not make itself (depth, pose, …).

    The service asks it while a request is checked, before anything is queued: the map it
    returns is stored like any input, shown with the result and reused by rerolls, so the
    annotator runs once per guide, not once per generation.
    """

    guide_preprocessors: frozenset[Preprocess]

    async def make_guide(self, image: bytes, preprocess: Preprocess, width: int, height: int) -> GuideMap:
        """Return the `preprocess` map of `image` (a checked PNG) at `width`×`height`, and what it cost.

        The bytes are the backend's answer, to be checked like any image from outside; the cost is
        added to the generation's.

        Raises:
            bot.errors.BackendUnavailable: the API refused or failed; one sentence, nothing stored.
        """
        ...


@runtime_checkable
class DescribingBackend(Backend, Protocol):
    """A backend that says in words what an image shows (``/describe``): a captioning model's sentence."""

    def check_describe(self) -> None:
        """Raise `bot.errors.InvalidOption` (option ``describe``) when it cannot describe an image now.

        Called before the image is read: the local worker needs a catalog captioner whose files are
        in place; a hosted API without a caption task says which backends have one.
        """
        ...

    async def describe(self, image: bytes) -> Description:
        """Return what `image` (a checked PNG) shows, in the model's words, and what it cost.

        The text is the backend's answer, to be made a prompt (`bot.describe.as_prompt`) before it is shown.

        Raises:
            bot.errors.BackendUnavailable: the API or the worker failed; one sentence, which says it could
                not `bot.describe.DESCRIBING`.
        """
        ...


@runtime_checkable
class WarmingBackend(Backend, Protocol):
    """A backend that can get ready for a model before its first job (the local worker: load, compile)."""

    def warm_up(self, model: str) -> None:
        """Get ready for jobs of the catalog model `model` in the background, if its settings ask for it.

        Jobs that arrive meanwhile wait behind it; a failure is logged, never raised.
        """
        ...


@runtime_checkable
class GenerationStore(Protocol):
    """Where generations and their images are kept.

    Status moves one way (`bot.history`): a ``mark_*`` call on a finished
    generation changes nothing and returns False, which is how a worker learns
    that the user cancelled while it was still working. Methods that take a
    generation id raise `KeyError` when there is no such generation, except
    `get` (None) and `delete` (nothing to delete).
    """

    async def add(self, new: NewGeneration) -> Generation:
        """Store a new ``queued`` generation, created now, and return it with its id."""
        ...

    async def get(self, generation_id: int) -> Generation | None:
        """Return the generation with its images, or None."""
        ...

    async def latest(self, platform: str, user_id: str, *, status: Status | None = None) -> Generation | None:
        """Return the user's newest generation (optionally only one with that status), or None."""
        ...

    async def recent(
        self, platform: str, user_id: str, limit: int = 10, before_id: int | None = None
    ) -> list[Generation]:
        """Return up to `limit` of the user's generations, newest first, older than `before_id` if given."""
        ...

    async def mark_running(self, generation_id: int) -> bool:
        """Record that a worker started it now; return False if it had already finished."""
        ...

    async def mark_interrupted(self, generation_id: int) -> bool:
        """Put a ``running`` generation a restart interrupted back to ``queued``, counting the interruption.

        Return False if it was not running.
        """
        ...

    async def mark_done(
        self,
        generation_id: int,
        images: Sequence[StoredImage],
        cost: float | None = None,
        notes: Sequence[str] = (),
    ) -> bool:
        """Record its images, what it cost, notes added to its warnings, and that it finished now.

        Return False (and store nothing) if it had already finished.
        """
        ...

    async def mark_failed(self, generation_id: int, error: str, cost: float | None = None) -> bool:
        """Record why it failed and what it cost anyway; return False if it had already finished."""
        ...

    async def mark_cancelled(self, generation_id: int) -> bool:
        """Record that it was cancelled; return False if it had already finished."""
        ...

    async def set_message_ref(self, generation_id: int, ref: str | None) -> None:
        """Remember the chat message that shows it (None forgets it)."""
        ...

    async def set_starred(self, generation_id: int, starred: bool) -> None:
        """Star it for its server's showcase (a second star changes nothing), or take the star back.

        Raises:
            KeyError: no such generation.
        """
        ...

    async def by_message_ref(self, platform: str, ref: str) -> Generation | None:
        """Return the (newest) generation shown by that message, or None."""
        ...

    async def images_since(self, platform: str, workspace: str, since: float, user_id: str | None = None) -> int:
        """Return how many images the workspace (or one user in it) asked for since a time.

        Failed and cancelled generations do not count.
        """
        ...

    async def unfinished(self) -> list[Generation]:
        """Return every ``queued`` or ``running`` generation, oldest first, to resume after a restart."""
        ...

    async def delete(self, generation_id: int) -> tuple[StoredImage, ...]:
        """Delete it and its image rows; return those images so the caller can delete the files."""
        ...

    async def finished_ids(
        self, *, platform: str | None = None, user_id: str | None = None, before: float | None = None, limit: int = 500
    ) -> list[int]:
        """Return ids of finished generations (of one user, created before a time), oldest first, for deleting."""
        ...

    async def inputs_of(self, generation_ids: Iterable[int]) -> set[str]:
        """Return the SHA-256 of every input image (init image, mask) the requests of these generations use.

        Unknown ids are skipped. Ask before deleting them: their rows say it, and afterwards they are gone.
        """
        ...

    async def find_images(self, platform: str, user_id: str, sha256s: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Return which of the user's images input images were made from: sha256 → (generation id, image index)."""
        ...

    async def note_input_source(self, sha256: str, generation_id: int, index: int) -> None:
        """Remember that an input image (the SHA-256 of its checked bytes) is one of a generation's images.

        Raises:
            KeyError: no such generation.
        """
        ...

    async def input_flagged(self, sha256: str) -> bool:
        """Tell whether an input image is one of a generation's images that the safety check flagged."""
        ...

    async def unreferenced_inputs(self, shas: Iterable[str]) -> set[str]:
        """Return those of `shas` that no stored generation's request uses as its init image or mask.

        After deleting generations, these are the input files nothing needs any more.
        """
        ...


@runtime_checkable
class PolicyStore(Protocol):
    """Where each server's (guild's, workspace's) rules and its audit log are kept."""

    async def get(self, platform: str, workspace: str) -> dict[str, Any]:
        """Return a copy of the server's saved rules; empty if none were saved."""
        ...

    async def put(self, platform: str, workspace: str, policy: Mapping[str, Any]) -> None:
        """Replace the server's rules (any JSON-ready mapping)."""
        ...

    async def audit(self, entry: AuditEntry) -> None:
        """Record what someone did in a server, now (the entry's `at` is ignored)."""
        ...

    async def recent_audit(self, platform: str, workspace: str, limit: int = 20) -> list[AuditEntry]:
        """Return a server's newest audit entries, newest first."""
        ...


@runtime_checkable
class SettingsStore(Protocol):
    """Where each user's saved defaults are kept."""

    async def get(self, platform: str, user_id: str) -> dict[str, Any]:
        """Return a copy of the user's saved settings; empty if none were saved."""
        ...

    async def put(self, platform: str, user_id: str, settings: Mapping[str, Any]) -> None:
        """Replace the user's saved settings (any JSON-ready mapping)."""
        ...


@runtime_checkable
class ImageStore(Protocol):
    """Where image files are kept: a generation's by a path relative to the data directory, inputs by content.

    An input is an image a user sent (an init image, a mask), already checked and
    normalized by `bot.images.check_image`; a request refers to it by its SHA-256.
    """

    async def save(self, generation_id: int, index: int, data: bytes, ext: str) -> tuple[str, str]:
        """Write one image atomically; return its relative path and the SHA-256 of `data` in hex."""
        ...

    async def read(self, relative: str) -> bytes:
        """Return the bytes of a stored image; raise `FileNotFoundError` when it is gone."""
        ...

    async def delete(self, relative: str) -> None:
        """Delete a stored image; one that is already gone is not an error."""
        ...

    async def save_input(self, data: bytes) -> str:
        """Keep an input image atomically by its content; return the SHA-256 of `data` in hex.

        Saving the same bytes again writes nothing.
        """
        ...

    async def read_input(self, sha256: str) -> bytes:
        """Return a kept input image; raise `FileNotFoundError` when it is gone.

        Raise `ValueError` when `sha256` is not 64 lowercase hex digits.
        """
        ...

    async def delete_input(self, sha256: str) -> None:
        """Delete a kept input image; one that is already gone is not an error."""
        ...


@runtime_checkable
class GalleryStore(Protocol):
    """The web gallery's read model: a user's generations page by page, and each user's link epoch.

    Every method is scoped to one (platform, user): nothing here can return another user's row.
    A user's links carry the epoch they were made in; raising it (`next_epoch`) kills them all.
    """

    async def page(self, platform: str, user_id: str, query: GalleryQuery) -> list[Generation]:
        """Return one page of the user's generations with their images, in the query's order."""
        ...

    async def get(self, platform: str, user_id: str, generation_id: int) -> Generation | None:
        """Return the user's own generation, or None (also when it is someone else's)."""
        ...

    async def children(self, platform: str, user_id: str, generation_id: int) -> list[Generation]:
        """Return the user's generations made from this one (rerolls, refines, variations), oldest first."""
        ...

    async def models(self, platform: str, user_id: str) -> list[str]:
        """Return the models the user's generations used, sorted, for the filter."""
        ...

    async def loras(self, platform: str, user_id: str) -> list[str]:
        """Return the LoRAs the user's generations used, sorted, for the filter."""
        ...

    async def epoch(self, platform: str, user_id: str) -> int:
        """Return the user's link epoch (0 until a link was first revoked)."""
        ...

    async def next_epoch(self, platform: str, user_id: str) -> int:
        """Raise the user's link epoch by one and return it: every earlier link stops working."""
        ...

    async def showcase(self, platform: str, workspace: str, *, after: int | None, limit: int) -> list[Generation]:
        """Return one page of a server's showcase, newest first: its starred finished generations.

        Each with only its unflagged images; a generation whose every image was flagged is not
        in it. `after` is the last id the previous page showed.
        """
        ...

    async def showcased(self, platform: str, workspace: str, generation_id: int) -> Generation | None:
        """Return the generation as the server's showcase shows it, or None when it is not in it."""
        ...


@runtime_checkable
class GalleryLinks(Protocol):
    """The web gallery's personal links, as the chats ask for them (implemented in `adapters/gallery/`)."""

    @property
    def lifetime_days(self) -> float:
        """Return how many days a new link works."""
        ...

    async def link(self, platform: str, user_id: str) -> str:
        """Return a new link to the user's own gallery."""
        ...

    async def region_link(self, platform: str, user_id: str, generation_id: int, index: int) -> str:
        """Return a new link to the page of the user's gallery that selects parts of image `index` of a generation."""
        ...

    async def revoke(self, platform: str, user_id: str) -> None:
        """Make every link given to the user so far stop working."""
        ...

    async def forget(self, platform: str, user_id: str) -> None:
        """Revoke the user's links and delete what the gallery keeps of theirs (thumbnails)."""
        ...

    async def forget_images(self, generation_ids: Sequence[int]) -> None:
        """Delete the thumbnails kept of these generations' images (they were deleted)."""
        ...

    async def showcase_link(self, platform: str, workspace: str, since: int) -> str:
        """Return the link to a server's showcase, good while it stays on since `since` (`Policy.showcase_since`)."""
        ...


@runtime_checkable
class ChatPoster(Protocol):
    """A chat running in this process, posting with no message of a user's to answer (implemented in `adapters/`).

    What it posts about is a job started outside it, by a click in the web gallery: the
    result belongs in the chat where the original was made.
    """

    async def post(self, job: Job, text: str) -> None:
        """Post `text` in the job's channel (a direct message for a private job) and follow the job there.

        The message then goes through the job's updates to its result, with the same
        image, text and buttons as any result in this chat.
        """
        ...

    async def retract(self, generation: Generation, text: str) -> None:
        """Take back the message that showed a generation its author deleted outside this chat (in the gallery).

        `generation` was read before it was deleted, so its `message_ref` still names the
        message (None: the chat remembered none, and has nothing to take back but may say
        `text`). The chat does what its own delete button does: it replaces the message with
        `text`, with no image or buttons, or removes it. Returns at once; a chat's failure is
        logged by the chat and never undoes the delete.
        """
        ...


@dataclass(frozen=True, slots=True)
class Stores:
    """Every store the service uses, built together by the composition root."""

    generations: GenerationStore
    policies: PolicyStore
    settings: SettingsStore
    images: ImageStore

"""The image service: what every chat adapter calls.

It turns options into a checked request, records the generation before the
user is answered, queues the job fairly, runs it on the backend, stores the
images (with their parameters in the PNG) and keeps each user's history so
that any image can be rerolled or refined later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Literal

from bot import metrics, options, rules
from bot.actions import format_ref
from bot.catalog import Catalog
from bot.errors import BotError, ContentBlocked, InvalidOption, JobCancelled, NotAllowed, NotFound, QuotaReached
from bot.history import AuditEntry, Generation, NewGeneration, StoredImage
from bot.jobs import Job, JobEvent, Requester
from bot.pngmeta import embed_text, parameters_text
from bot.policy import Display, Policy
from bot.ports import Backend, BatchingBackend, Stores
from bot.queue import JobQueue
from bot.request import GeneratedImage, GenerationRequest, Progress

__all__ = ["ImageService", "random_seed"]

log = logging.getLogger(__name__)

_SETTING_KEYS = ("model", "steps", "refiner_percent", "width", "height", "scheduler", "cfg", "private", "batching")


def _merged(saved: Mapping[str, object], changes: Mapping[str, object]) -> dict[str, object]:
    """Return saved values with the changes applied; a change to None removes the key."""
    merged = {**saved, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def _wants_private(saved: Mapping[str, object]) -> bool:
    """Tell whether saved user settings ask for private delivery."""
    return bool(saved.get("private", False))


def _server(who: Requester) -> str:
    """Return what the user's platform calls a community: a Slack workspace, a Discord server."""
    return "workspace" if who.platform == "slack" else "server"


def _managers(who: Requester) -> str:
    """Return who may change a community's rules, in the platform's words."""
    return "workspace admins" if who.platform == "slack" else "server managers"


def _total_cost(images: list[GeneratedImage]) -> float | None:
    """Return what a remote backend charged for the images (``meta["cost"]``), or None when it said nothing."""
    costs = [float(image.meta["cost"]) for image in images if image.meta.get("cost") is not None]
    return sum(costs) if costs else None


INTERRUPTED_TWICE = "The bot restarted twice while this image was being made; please ask again."


def random_seed() -> int:
    """Return a fresh seed; 32-bit so people can read it out and type it back."""
    return secrets.randbelow(2**32 - 1) + 1


class ImageService:
    """Generate, reroll, refine and list images for chat users.

    Args:
        backend: makes the images (the configured ``IMAGEBOT_BACKEND``).
        backends: other backends by name, for catalog models pinned to one (``backend = "runware"``).
        stores: generations, server rules and audit, user settings, image files.
        catalog: the names users may ask for.
        default_model: the model used when neither the request nor the user's settings name one.
        limits: what one request may ask for.
        concurrency, max_queue, max_per_user: queue limits.
        daily_quota: images one server or workspace may make per UTC day (0: no limit).
        log_prompts: log users' prompts at INFO (otherwise at DEBUG).
        retention_days: delete finished generations older than this, at start and every 6 hours (0: keep).
        clock: the wall clock (tests pass a fixed one).
        seeds: where new seeds come from (tests pass a fixed sequence).
    """

    def __init__(
        self,
        *,
        backend: Backend,
        backends: Mapping[str, Backend] | None = None,
        stores: Stores,
        catalog: Catalog,
        default_model: str,
        limits: options.Limits,
        concurrency: int = 1,
        max_queue: int = 100,
        max_per_user: int = 4,
        daily_quota: int = 0,
        log_prompts: bool = False,
        retention_days: float = 0,
        seeds: Callable[[], int] = random_seed,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.limits = limits
        self._backend = backend
        self._backends = {backend.name: backend, **(backends or {})}
        self._generations = stores.generations
        self._policies = stores.policies
        self._settings = stores.settings
        self._files = stores.images
        self._default_model = catalog.get("model", default_model).name
        self._seeds = seeds
        self._daily_quota = daily_quota
        self._log_prompts = log_prompts
        self._retention_days = retention_days
        self._purger: asyncio.Task[None] | None = None
        self._clock = clock
        self._jobs: dict[int, Job] = {}
        self._resumed: list[tuple[Job, str | None]] = []
        self._queue = JobQueue(self._execute, concurrency=concurrency, max_queue=max_queue, max_per_user=max_per_user)
        metrics.watch_queue(lambda: self._queue.waiting, lambda: self._queue.running)

    @property
    def default_model(self) -> str:
        """Return the model used when nothing else names one."""
        return self._default_model

    async def start(self) -> None:
        """Resume what a previous run left queued or running, then start running jobs.

        A job that was running when the bot stopped runs again from the start, once;
        interrupted a second time, it fails with a sentence. Adapters follow the
        resumed jobs (`resumed`) to update the messages that show them.
        """
        for generation in await self._generations.unfinished():
            job = Job(
                generation.id,
                Requester(generation.platform, generation.user_id, generation.workspace, generation.channel),
                generation.request,
                generation.warnings,
                generation.private,
            )
            self._resumed.append((job, generation.message_ref))
            if generation.status == "running" and generation.interruptions >= 1:
                await self._generations.mark_failed(job.id, INTERRUPTED_TWICE)
                job.emit(JobEvent("failed", message=INTERRUPTED_TWICE))
                continue
            if generation.status == "running":
                await self._generations.mark_interrupted(job.id)
            self._jobs[job.id] = job
            job.emit(JobEvent("queued", position=await self._queue.resume(job)))
        if self._resumed:
            log.info("resumed %d unfinished generations", len(self._resumed))
        self._queue.start()
        if self._retention_days:
            self._purger = asyncio.create_task(self._purge_regularly(), name="imagebot-retention")

    async def _purge_regularly(self) -> None:
        while True:
            try:
                deleted = await self.purge(self._retention_days)
                if deleted:
                    log.info("retention: deleted %d generations older than %g days", deleted, self._retention_days)
            except Exception:
                log.exception("retention purge failed; trying again later")
            await asyncio.sleep(6 * 3600)

    def resumed(self, platform: str) -> list[tuple[Job, str | None]]:
        """Return the jobs of a platform that `start` resumed, with the message ref that shows each."""
        return [(job, ref) for job, ref in self._resumed if job.requester.platform == platform]

    async def aclose(self) -> None:
        """Stop the queue and the retention task; the backend and stores are closed by their owner."""
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        await self._queue.aclose()

    # -- submitting ---------------------------------------------------------------------------------

    async def imagine(self, given: str | Mapping[str, object], who: Requester, *, private: bool | None = None) -> Job:
        """Parse chat options (text flags or typed options) and queue the generation.

        `private` (delivered to its author only) defaults to the user's saved setting.
        """
        saved = await self._settings.get(*who.key)
        defaults = self._to_defaults(saved)
        if isinstance(given, str):
            parsed = options.parse_text(given, catalog=self.catalog, defaults=defaults, limits=self.limits)
        else:
            parsed = options.parse_options(given, catalog=self.catalog, defaults=defaults, limits=self.limits)
        if private is None:
            private = _wants_private(saved)
        return await self.submit(parsed.request, who, warnings=parsed.warnings, private=private, saved=saved)

    async def prefers_private(self, who: Requester) -> bool:
        """Tell whether the user's saved settings ask for private delivery."""
        return _wants_private(await self._settings.get(*who.key))

    async def submit(
        self,
        request: GenerationRequest,
        who: Requester,
        *,
        warnings: tuple[str, ...] = (),
        action: Literal["generate", "reroll", "refine"] = "generate",
        parent: Generation | None = None,
        private: bool = False,
        saved: Mapping[str, object] | None = None,
    ) -> Job:
        """Record a checked request as a queued generation and queue its job.

        `saved` is the user's settings when the caller has read them already.
        """
        self._queue.check_room(who.key)
        policy = await self._check_policy(who, request)
        backend = self._backend_for(request)
        backend.check(request)
        await self._check_quota(who, request.count, policy)
        if request.seed is None:
            request = request.with_seed(self._seeds())
        generation = await self._generations.add(
            NewGeneration(
                platform=who.platform,
                user_id=who.user_id,
                workspace=who.workspace,
                channel=who.channel,
                request=request,
                action=action,
                backend=backend.name,
                parent_id=parent.id if parent else None,
                warnings=warnings,
                private=private,
            )
        )
        # Batched images can differ from solo ones in the last bit; a user who needs exact bytes says so.
        if saved is None:
            saved = await self._settings.get(*who.key)
        batchable = saved.get("batching", True) is not False
        job = Job(generation.id, who, request, warnings, private, batchable=batchable)
        self._jobs[job.id] = job
        try:
            position = await self._queue.submit(job)
        except BotError:
            await self._generations.mark_failed(job.id, "the queue had no room")
            del self._jobs[job.id]
            raise
        job.emit(JobEvent("queued", position=position))
        await self._audit(who, action, job.id)
        context = {"job_id": job.id, "user_id": who.user_id, "platform": who.platform}
        log.info("queued %s (%s, %s) at position %s", format_ref(job.id), action, backend.name, position, extra=context)
        # Prompts are the users' words: at INFO only when the operator asks for them.
        log.log(
            logging.INFO if self._log_prompts else logging.DEBUG,
            "prompt of %s: %s",
            format_ref(job.id),
            request.prompt,
            extra=context,
        )
        return job

    async def reroll(self, who: Requester, generation_id: int | None) -> Job:
        """Queue the same settings with a new seed; None means the user's latest generation.

        Only the author may reroll, unless the server's policy opens rerolls to everyone:
        then the new image belongs to whoever asked.
        """
        parent = await self._source(who, generation_id, "reroll", opened_by="open_reroll")
        request = parent.request.with_seed(self._seeds())
        warnings = rules.check(request, self.catalog, self.limits)
        return await self.submit(
            request, who, warnings=warnings, action="reroll", parent=parent, private=parent.private
        )

    async def refine(
        self,
        who: Requester,
        generation_id: int | None,
        percent: int | None = None,
    ) -> Job:
        """Queue the same seed and settings with the refiner taking over at `percent`."""
        parent = await self._source(who, generation_id, "refine")
        model = self.catalog.get("model", parent.request.model)
        refiner = parent.request.refiner.model if parent.request.refiner else model.refiner
        if refiner is None:
            raise InvalidOption("refine", f"is not possible: model '{model.name}' has no refiner")
        request = parent.request.refined(refiner, percent or rules.DEFAULT_REFINE_PERCENT)
        warnings = rules.check(request, self.catalog, self.limits)
        return await self.submit(
            request, who, warnings=warnings, action="refine", parent=parent, private=parent.private
        )

    async def cancel(self, who: Requester, generation_id: int | None = None) -> int:
        """Cancel a queued or running job of the user's (None: their newest) and return its id."""
        if generation_id is None:
            mine = self._unfinished(who)
            if not mine:
                raise NotFound("queued or running generation of yours")
            generation_id = mine[-1].id
        job = self._jobs.get(generation_id)
        if job is None or job.finished:
            raise NotFound(f"queued or running generation {format_ref(generation_id)}")
        if job.requester.key != who.key:
            raise NotAllowed("cancel")
        if self._queue.remove(job):
            await self._generations.mark_cancelled(job.id)
            self._finish(job, JobEvent("cancelled", message=str(JobCancelled())))
        else:
            job.cancel_event.set()
        return generation_id

    async def delete(self, who: Requester, generation_id: int) -> None:
        """Delete a finished generation of the user's, with its image files."""
        generation = await self.details(who, generation_id)
        if (generation.platform, generation.user_id) != who.key:
            raise NotAllowed("delete")
        if generation_id in self._jobs:
            raise InvalidOption("delete", f"must wait: {format_ref(generation_id)} is still being made (cancel it)")
        for image in await self._generations.delete(generation_id):
            await self._files.delete(image.path)
        await self._audit(who, "delete", generation_id)

    async def forget(self, who: Requester) -> int:
        """Delete everything of a user's: queued jobs (cancelled), images, their files, history and settings.

        Returns:
            How many generations were deleted.
        """
        for job in self._unfinished(who):
            await self.cancel(who, job.id)
        deleted = await self._delete_finished(platform=who.platform, user_id=who.user_id)
        await self._settings.put(who.platform, who.user_id, {})
        await self._audit(who, "forget", detail=f"{deleted} generations")
        log.info("forgot %d generations of %s:%s", deleted, who.platform, who.user_id)
        return deleted

    async def purge(self, days: float) -> int:
        """Delete every finished generation older than `days`, with its files; return how many."""
        return await self._delete_finished(before=self._clock() - days * 86400)

    async def _delete_finished(self, **which: object) -> int:
        deleted = 0
        while ids := await self._generations.finished_ids(**which):  # type: ignore[arg-type]
            for generation_id in ids:
                for image in await self._generations.delete(generation_id):
                    await self._files.delete(image.path)
                deleted += 1
        return deleted

    async def attach_message(self, generation_id: int, ref: str) -> None:
        """Remember the chat message that shows a generation, so reactions on it find it."""
        await self._generations.set_message_ref(generation_id, ref)

    async def by_message(self, platform: str, ref: str) -> Generation | None:
        """Return the generation a chat message shows, or None."""
        return await self._generations.by_message_ref(platform, ref)

    # -- reading ------------------------------------------------------------------------------------

    def queue(self, who: Requester) -> tuple[int, list[Job]]:
        """Return how many jobs wait in all, and the user's unfinished jobs, oldest first."""
        return self._queue.waiting, self._unfinished(who)

    def _unfinished(self, who: Requester) -> list[Job]:
        """Return the user's queued and running jobs, oldest first."""
        return sorted(
            (job for job in self._jobs.values() if job.requester.key == who.key and not job.finished),
            key=lambda job: job.id,
        )

    async def read_image(self, relative: str) -> bytes:
        """Return the bytes of a stored image file."""
        return await self._files.read(relative)

    def job(self, generation_id: int) -> Job | None:
        """Return the live job of a generation that is queued or running."""
        return self._jobs.get(generation_id)

    async def history(self, who: Requester, limit: int = 10) -> list[Generation]:
        """Return the user's recent generations, newest first."""
        return await self._generations.recent(who.platform, who.user_id, limit=limit)

    async def details(self, who: Requester, generation_id: int) -> Generation:
        """Return a generation the user may see (their own, or anyone's that is not private)."""
        generation = await self._generations.get(generation_id)
        if generation is None or (generation.private and (generation.platform, generation.user_id) != who.key):
            raise NotFound(f"generation {format_ref(generation_id)}")
        return generation

    async def settings(self, who: Requester) -> dict[str, object]:
        """Return the user's saved defaults."""
        return await self._settings.get(*who.key)

    async def update_settings(self, who: Requester, changes: Mapping[str, object]) -> dict[str, object]:
        """Check and save some of the user's defaults; None removes one."""
        unknown = sorted(set(changes) - set(_SETTING_KEYS))
        if unknown:
            raise InvalidOption("setting", f"'{unknown[0]}' does not exist (settings: {', '.join(_SETTING_KEYS)})")
        current = _merged(await self._settings.get(*who.key), changes)
        # Parsing a probe prompt with the new defaults checks them with the same rules as a request.
        options.parse_text(
            "settings check", catalog=self.catalog, defaults=self._to_defaults(current), limits=self.limits
        )
        await self._settings.put(who.platform, who.user_id, current)
        return current

    async def policy(self, who: Requester) -> Policy:
        """Return the policy of the user's server (the empty policy outside a server)."""
        return await self._policy_of(who.platform, who.workspace)

    async def _policy_of(self, platform: str, workspace: str | None) -> Policy:
        if workspace is None:
            return Policy()
        return Policy.load(await self._policies.get(platform, workspace))

    async def update_policy(self, who: Requester, changes: Mapping[str, object], *, may_manage: bool) -> Policy:
        """Check and save some of the server's policy; `may_manage` is the platform's admin check."""
        if who.workspace is None:
            raise InvalidOption("server settings", "only exist in a server, not in direct messages")
        if not may_manage:
            raise NotAllowed("change", only=_managers(who), what=f"the {_server(who)}'s settings")
        policy = (await self.policy(who)).changed(changes)
        await self._policies.put(who.platform, who.workspace, policy.model_dump(mode="json"))
        await self._audit(who, "rules", detail=", ".join(f"{key}={value}" for key, value in sorted(changes.items())))
        log.info(
            "server policy of %s:%s changed by %s: %s",
            who.platform,
            who.workspace,
            who.user_id,
            ", ".join(sorted(changes)),
            extra={"user_id": who.user_id, "platform": who.platform},
        )
        return policy

    async def displays(self, generation: Generation, *, age_restricted: bool = False) -> tuple[Display, ...]:
        """Return how each image of a generation is shown where it is posted (`Policy.display`).

        `age_restricted` is the platform's flag of the generation's channel; a private
        generation goes to a direct message, which is never age-restricted.
        """
        policy = await self._policy_of(generation.platform, generation.workspace)
        adult = not generation.private and policy.is_age_restricted(generation.channel, age_restricted)
        return tuple(policy.display(image.nsfw, adult) for image in generation.images)

    async def flagged_images(self, who: Requester, generation_id: int) -> list[StoredImage]:
        """Return the flagged images of a generation for its author only (a "Show" button)."""
        generation = await self.details(who, generation_id)
        if (generation.platform, generation.user_id) != who.key:
            raise NotAllowed("show", what="its flagged images")
        return [image for image in generation.images if image.nsfw]

    # -- running ------------------------------------------------------------------------------------

    async def _check_policy(self, who: Requester, request: GenerationRequest) -> Policy:
        """Return the server's rules, or raise when the request breaks them (a banned prompt is audited)."""
        policy = await self.policy(who)
        policy.check_channel(None if who.direct else who.channel, _managers(who))
        try:
            policy.check(request, age_restricted=policy.is_age_restricted(who.channel, who.age_restricted))
        except ContentBlocked as blocked:
            await self._audit(who, "blocked", detail=blocked.rule)
            log.warning(
                "blocked a request of %s:%s in %s (%s)",
                who.platform,
                who.user_id,
                who.workspace,
                blocked.rule,
                extra={"user_id": who.user_id, "platform": who.platform},
            )
            raise
        return policy

    async def _check_quota(self, who: Requester, count: int, policy: Policy) -> None:
        """Raise `QuotaReached` when the server, or the user in it, has no images left today (UTC)."""
        if who.workspace is None:
            return
        now = self._clock()
        midnight = now - now % 86400
        where = _server(who)
        if self._daily_quota:
            made = await self._generations.images_since(who.platform, who.workspace, midnight)
            if made + count > self._daily_quota:
                raise QuotaReached(self._daily_quota, midnight + 86400 - now, where)
        if policy.user_daily_quota:
            made = await self._generations.images_since(who.platform, who.workspace, midnight, who.user_id)
            if made + count > policy.user_daily_quota:
                raise QuotaReached(policy.user_daily_quota, midnight + 86400 - now, where, personal=True)

    async def _audit(self, who: Requester, action: str, generation_id: int | None = None, detail: str = "") -> None:
        """Record what someone did in a server, for its admins."""
        if who.workspace is not None:
            await self._policies.audit(
                AuditEntry(who.platform, who.workspace, who.user_id, action, generation_id, detail)
            )

    async def audit_log(self, who: Requester, *, may_manage: bool, limit: int = 15) -> list[AuditEntry]:
        """Return the server's newest audit entries, for its managers only."""
        if who.workspace is None:
            raise InvalidOption("audit", "only exists in a server, not in direct messages")
        if not may_manage:
            raise NotAllowed("read", only=_managers(who), what=f"the {_server(who)}'s audit log")
        return await self._policies.recent_audit(who.platform, who.workspace, limit)

    def _backend_for(self, request: GenerationRequest) -> Backend:
        """Return the backend a request's model is pinned to in the catalog, else the configured one."""
        pinned = self.catalog.get("model", request.model).backend
        if pinned is None:
            return self._backend
        backend = self._backends.get(pinned)
        if backend is None:
            raise InvalidOption(
                "model", f"'{request.model}' runs on the {pinned} backend, which this bot has not configured"
            )
        return backend

    def _to_defaults(self, saved: Mapping[str, object]) -> options.Defaults:
        def number(key: str) -> int | None:
            value = saved.get(key)
            return int(value) if isinstance(value, int | float) else None

        cfg = saved.get("cfg")
        scheduler = saved.get("scheduler")
        return options.Defaults(
            model=str(saved.get("model") or self._default_model),
            steps=number("steps"),
            refiner_percent=number("refiner_percent"),
            width=number("width"),
            height=number("height"),
            scheduler=str(scheduler) if scheduler else None,
            cfg=float(cfg) if isinstance(cfg, int | float) else None,
        )

    async def _source(
        self, who: Requester, generation_id: int | None, action: str, *, opened_by: str | None = None
    ) -> Generation:
        """Return the generation to act on: the user's own, or another's where the policy key `opened_by` allows."""
        if generation_id is None:
            latest = await self._generations.latest(who.platform, who.user_id)
            if latest is None:
                raise NotFound(f"earlier image of yours to {action}; make one with /imagine first")
            return latest
        generation = await self.details(who, generation_id)
        if (generation.platform, generation.user_id) != who.key and not (
            opened_by is not None and getattr(await self.policy(who), opened_by)
        ):
            raise NotAllowed(action)
        return generation

    async def _execute(self, job: Job) -> None:
        """Run a job (with the compatible jobs waiting behind it, when the backend batches) to its end.

        Every outcome becomes an event and a row, never an exception.
        """
        if job.cancel_event.is_set():
            await self._generations.mark_cancelled(job.id)
            self._finish(job, JobEvent("cancelled", message=str(JobCancelled())))
            return
        backend = self._backend_for(job.request)
        group = [job, *self._batch_mates(job, backend)]
        try:
            for member in group:
                await self._generations.mark_running(member.id)
                member.emit(JobEvent("started"))
            started = time.perf_counter()
            if len(group) == 1:
                outcomes = [await self._generate(backend, job)]
            else:
                assert isinstance(backend, BatchingBackend)
                outcomes = await self._generate_batch(backend, group)
            seconds = time.perf_counter() - started
            for member, outcome in zip(group, outcomes, strict=True):
                await self._complete(member, outcome, seconds)
        finally:
            self._queue.release(group[1:])

    def _batch_mates(self, job: Job, backend: Backend) -> list[Job]:
        """Take the waiting jobs that can share this job's pipeline call, if the backend batches."""
        if not (isinstance(backend, BatchingBackend) and backend.max_batch > 1 and job.batchable):
            return []
        key = backend.batch_key(job.request)

        def fits(other: Job) -> bool:
            return (
                other.batchable
                and not other.cancel_event.is_set()
                and self._backend_for(other.request) is backend
                and backend.batch_key(other.request) == key
            )

        return self._queue.take(fits, backend.max_batch - 1)

    async def _generate(self, backend: Backend, job: Job) -> list[GeneratedImage] | BaseException:
        try:
            return await backend.generate(
                job.request,
                on_progress=lambda progress: job.emit(JobEvent("progress", progress=progress)),
                cancel=job.cancel_event,
            )
        except Exception as error:
            return error

    async def _generate_batch(
        self, backend: BatchingBackend, group: list[Job]
    ) -> list[list[GeneratedImage] | BaseException]:
        def progress_of(member: Job) -> Callable[[Progress], None]:
            return lambda progress: member.emit(JobEvent("progress", progress=progress))

        try:
            return list(
                await backend.generate_batch(
                    [member.request for member in group],
                    [progress_of(member) for member in group],
                    [member.cancel_event for member in group],
                )
            )
        except Exception as error:
            return [error] * len(group)

    async def _complete(self, job: Job, outcome: list[GeneratedImage] | BaseException, seconds: float) -> None:
        """Store a job's images, or record why it has none, and tell its followers."""
        context = {"job_id": job.id, "user_id": job.requester.user_id, "platform": job.requester.platform}
        if isinstance(outcome, JobCancelled):
            await self._generations.mark_cancelled(job.id)
            self._finish(job, JobEvent("cancelled", message=str(outcome)))
            return
        if isinstance(outcome, BotError):
            await self._generations.mark_failed(job.id, str(outcome), cost=getattr(outcome, "cost", None))
            self._finish(job, JobEvent("failed", message=str(outcome)))
            return
        if isinstance(outcome, BaseException):
            log.error("generation %s failed", job.id, exc_info=outcome, extra=context)
            message = "Something went wrong while making the image; it has been logged."
            await self._generations.mark_failed(job.id, message)
            self._finish(job, JobEvent("failed", message=message))
            return
        images = outcome
        try:
            stored = [await self._store(job, image) for image in images]
        except Exception as error:
            await self._complete(job, error, seconds)
            return
        # A backend's notes (a worker restarted on the way) reach the user under the image.
        notes = tuple(dict.fromkeys(str(image.meta["note"]) for image in images if image.meta.get("note")))
        if len(images) < job.request.count:
            notes += (f"Only {len(images)} of {job.request.count} images came back.",)
        await self._generations.mark_done(job.id, stored, cost=_total_cost(images), notes=notes)
        generation = await self._generations.get(job.id)
        metrics.GENERATION_SECONDS.labels(generation.backend if generation else "unknown").observe(seconds)
        log.info("generation %s done in %.2fs", job.id, seconds, extra=context)
        self._finish(job, JobEvent("done", generation=generation))

    async def _store(self, job: Job, image: GeneratedImage) -> StoredImage:
        data = image.data
        if job.request.output_format == "png":
            text = parameters_text(job.request, image.seed, {"Generation": format_ref(job.id)})
            data = embed_text(data, "parameters", text)
        path, sha256 = await self._files.save(job.id, image.index, data, job.request.output_format)
        return StoredImage(image.index, image.seed, path, sha256, image.width, image.height, image.nsfw)

    def _finish(self, job: Job, event: JobEvent) -> None:
        metrics.JOBS.labels(event.kind).inc()
        job.emit(event)
        self._jobs.pop(job.id, None)

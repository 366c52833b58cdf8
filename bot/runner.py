"""The job runner: queued jobs in, images stored and every outcome recorded, events out.

It owns the live jobs and the fair queue, resumes what a restart left
unfinished, batches compatible jobs on a backend that can, stores the images
with their parameters in the PNG, and turns every outcome into an event and a
row, never an exception. When storage fails (a full disk, a read-only database),
the user still gets the event, and no image file stays without its row.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from bot import metrics
from bot.actions import format_ref
from bot.catalog import Catalog
from bot.errors import BotError, InvalidOption, JobCancelled
from bot.history import StoredImage
from bot.jobs import Job, JobEvent, Requester
from bot.pngmeta import embed_parameters, parameters_text
from bot.ports import Backend, BatchingBackend, GenerationStore, ImageStore
from bot.queue import JobQueue
from bot.request import GeneratedImage, GenerationRequest, Progress

__all__ = ["GENERIC_FAILURE", "INTERRUPTED_TWICE", "NOT_SAVED", "JobRunner"]

log = logging.getLogger(__name__)

INTERRUPTED_TWICE = "The bot restarted twice while this image was being made; please ask again."
GENERIC_FAILURE = "Something went wrong while making the image; it has been logged."
NOT_SAVED = "The image could not be saved; it has been logged. Please try again later."


def _context(job: Job) -> dict[str, object]:
    """Return the fields every log line about a job carries."""
    return {"job_id": job.id, "user_id": job.requester.user_id, "platform": job.requester.platform}


def _total_cost(images: list[GeneratedImage]) -> float | None:
    """Return what a remote backend charged for the images (``meta["cost"]``), or None when it said nothing."""
    costs = [float(image.meta["cost"]) for image in images if image.meta.get("cost") is not None]
    return sum(costs) if costs else None


class JobRunner:
    """Runs queued jobs on their backend and records how each ends.

    Args:
        backend: the configured backend.
        backends: other backends by name, for catalog models pinned to one.
        generations: where each job's row and images are recorded.
        images: where image files go.
        catalog: tells which backend a model is pinned to.
        concurrency, max_queue, max_per_user: queue limits.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        backends: Mapping[str, Backend] | None,
        generations: GenerationStore,
        images: ImageStore,
        catalog: Catalog,
        concurrency: int = 1,
        max_queue: int = 100,
        max_per_user: int = 4,
    ) -> None:
        self._backend = backend
        self._backends = {backend.name: backend, **(backends or {})}
        self._generations = generations
        self._images = images
        self._catalog = catalog
        self._jobs: dict[int, Job] = {}
        self._resumed: list[tuple[Job, str | None]] = []
        self.queue = JobQueue(self._execute, concurrency=concurrency, max_queue=max_queue, max_per_user=max_per_user)
        metrics.watch_queue(lambda: self.queue.waiting, lambda: self.queue.running)

    async def start(self) -> None:
        """Resume what a previous run left queued or running, then start running jobs.

        A job that was running when the bot stopped runs again from the start, once;
        interrupted a second time, it fails with a sentence.
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
            job.emit(JobEvent("queued", position=await self.queue.resume(job)))
        if self._resumed:
            log.info("resumed %d unfinished generations", len(self._resumed))
        self.queue.start()

    async def aclose(self) -> None:
        """Stop the queue; running jobs are cancelled with it."""
        await self.queue.aclose()

    def resumed(self, platform: str) -> list[tuple[Job, str | None]]:
        """Return the jobs of a platform that `start` resumed, with the message ref that shows each."""
        return [(job, ref) for job, ref in self._resumed if job.requester.platform == platform]

    def job(self, generation_id: int) -> Job | None:
        """Return the live job of a generation that is queued or running."""
        return self._jobs.get(generation_id)

    def unfinished(self, who: Requester) -> list[Job]:
        """Return the user's queued and running jobs, oldest first."""
        return sorted(
            (job for job in self._jobs.values() if job.requester.key == who.key and not job.finished),
            key=lambda job: job.id,
        )

    @property
    def backend(self) -> Backend:
        """Return the configured backend (``IMAGEBOT_BACKEND``)."""
        return self._backend

    def backend_for(self, request: GenerationRequest) -> Backend:
        """Return the backend a request's model is pinned to in the catalog, else the configured one."""
        return self.backend_for_model(request.model)

    def backend_for_model(self, model: str) -> Backend:
        """Return the backend a catalog model is pinned to, else the configured one."""
        pinned = self._catalog.get("model", model).backend
        if pinned is None:
            return self._backend
        backend = self._backends.get(pinned)
        if backend is None:
            raise InvalidOption("model", f"'{model}' runs on the {pinned} backend, which this bot has not configured")
        return backend

    async def submit(self, job: Job) -> int:
        """Queue a job whose row is recorded; return its place. A refused job's row is failed."""
        self._jobs[job.id] = job
        try:
            position = await self.queue.submit(job)
        except BotError:
            await self._generations.mark_failed(job.id, "the queue had no room")
            del self._jobs[job.id]
            raise
        job.emit(JobEvent("queued", position=position))
        return position

    async def cancel(self, job: Job) -> None:
        """Cancel a live job: a waiting one at once, a running one at its backend's next step."""
        if self.queue.remove(job):
            await self._complete(job, JobCancelled(), 0.0)
        else:
            job.cancel_event.set()

    async def _execute(self, job: Job) -> None:
        """Run a job (with the compatible jobs waiting behind it, when the backend batches) to its end."""
        if job.cancel_event.is_set():
            await self._complete(job, JobCancelled(), 0.0)
            return
        backend = self.backend_for(job.request)
        group = [job, *self._batch_mates(job, backend)]
        try:
            outcomes: list[list[GeneratedImage] | BaseException]
            seconds = 0.0
            try:
                for member in group:
                    await self._generations.mark_running(member.id)
                    member.emit(JobEvent("started"))
            except Exception as error:
                outcomes = [error] * len(group)  # the history cannot be written: nothing is made
            else:
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
            self.queue.release(group[1:])

    def _batch_mates(self, job: Job, backend: Backend) -> list[Job]:
        """Take the waiting jobs that can share this job's pipeline call, if the backend batches."""
        if not (isinstance(backend, BatchingBackend) and backend.max_batch > 1 and job.batchable):
            return []
        key = backend.batch_key(job.request)

        def fits(other: Job) -> bool:
            return (
                other.batchable
                and not other.cancel_event.is_set()
                and self.backend_for(other.request) is backend
                and backend.batch_key(other.request) == key
            )

        return self.queue.take(fits, backend.max_batch - 1)

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
        """Store a job's images, or record why it has none, and tell its followers, even when storage fails."""
        try:
            await self._record(job, outcome, seconds)
        except Exception:
            # A read-only database or a full disk: the user still hears how the job ended. Where even the
            # failure cannot be written, the row stays unfinished, so the next start makes the job again.
            log.exception("generation %s could not be recorded", job.id, extra=_context(job))
            with contextlib.suppress(Exception):
                await self._generations.mark_failed(job.id, NOT_SAVED)
            self._finish(job, JobEvent("failed", message=NOT_SAVED))

    async def _record(self, job: Job, outcome: list[GeneratedImage] | BaseException, seconds: float) -> None:
        """Store a job's images, or record why it has none, and tell its followers; raise if storage fails."""
        context = _context(job)
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
            await self._generations.mark_failed(job.id, GENERIC_FAILURE)
            self._finish(job, JobEvent("failed", message=GENERIC_FAILURE))
            return
        images = outcome
        # A backend's notes (a worker restarted on the way) reach the user under the image.
        notes = tuple(dict.fromkeys(str(image.meta["note"]) for image in images if image.meta.get("note")))
        if len(images) < job.request.count:
            notes += (f"Only {len(images)} of {job.request.count} images came back.",)
        stored: list[StoredImage] = []
        try:
            for image in images:
                stored.append(await self._store(job, image))
            await self._generations.mark_done(job.id, stored, cost=_total_cost(images), notes=notes)
        except Exception:
            # No image file without its row: the files written so far go with the failed record.
            for saved in stored:
                try:
                    await self._images.delete(saved.path)
                except Exception:
                    log.exception("generation %s: %s could not be deleted", job.id, saved.path, extra=context)
            raise
        generation = await self._generations.get(job.id)
        metrics.GENERATION_SECONDS.labels(generation.backend if generation else "unknown").observe(seconds)
        log.info("generation %s done in %.2fs", job.id, seconds, extra=context)
        self._finish(job, JobEvent("done", generation=generation))

    async def _store(self, job: Job, image: GeneratedImage) -> StoredImage:
        text = parameters_text(job.request, image.seed, {"Generation": format_ref(job.id)}, index=image.index)
        data = embed_parameters(image.data, job.request.output_format, text)
        path, sha256 = await self._images.save(job.id, image.index, data, job.request.output_format)
        nsfw = image.nsfw
        init = job.request.init_image
        if nsfw is None and init is not None and await self._generations.input_flagged(init):
            # A backend that checks nothing (ModelsLab's upscaler) gives no verdict: a flagged input's carries over.
            nsfw = True
        return StoredImage(image.index, image.seed, path, sha256, image.width, image.height, nsfw)

    def _finish(self, job: Job, event: JobEvent) -> None:
        metrics.JOBS.labels(event.kind).inc()
        job.emit(event)
        self._jobs.pop(job.id, None)

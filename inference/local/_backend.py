"""`LocalBackend`: SDXL on this machine, in a worker process that owns torch.

The bot process never imports torch. It resolves catalog names to local ids
(`build_job`), starts ``python -m inference.local._worker`` with asyncio, and
talks to it in length-prefixed frames over the worker's stdin and stdout. One
job runs at a time; progress frames become `Progress` callbacks; setting the
job's cancel event sends a cancel frame and the worker stops at its next step.
The worker is supervised: when it dies (killed, segfault, also while it starts
or loads the model), runs out of GPU memory, or makes no progress for
`stall_timeout` seconds (it is then killed), a fresh worker is started and the
job is tried once more; the image then carries a note saying so. A second loss
fails the job with one sentence; lost while loading again, the sentence says the
worker cannot load the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot import metrics
from bot.catalog import Catalog, CatalogEntry
from bot.describe import DESCRIBING, Description
from bot.errors import BackendUnavailable, InvalidOption, JobCancelled
from bot.guides import GuideMap
from bot.ports import ProgressCallback
from bot.request import GeneratedImage, GenerationRequest, Preprocess, RefinerSpec
from bot.request import Progress as StepProgress
from inference.capabilities import CAPABILITIES
from inference.local._annotators import annotator_folder, preprocessors
from inference.local._captioner import captioner_folder
from inference.local._job import WorkerJob, asset_of, batch_key, build_job, check_installed, installed
from inference.local._protocol import (
    Cancel,
    Checked,
    CheckRequest,
    Described,
    DescribeRequest,
    Error,
    Fatal,
    Generate,
    Guided,
    GuideRequest,
    Message,
    Progress,
    ProtocolError,
    Ready,
    Result,
    Shutdown,
    Stats,
    StatsRequest,
    ToBot,
    encode_frame,
    from_worker,
    read_frame_async,
)

__all__ = ["LocalBackend"]

log = logging.getLogger(__name__)

_NAME = "local"
_STOPPED = "stopped unexpectedly"
# Lost again while loading, on a fresh worker: a model too big for this machine's memory, most likely.
_CANNOT_LOAD = (
    "the worker cannot load the model; it stopped while loading it on a fresh worker too, which is what"
    " running out of memory looks like (imagebot doctor checks the memory)"
)
# Where `inference` is importable from, for a worker started outside an installed package.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


class LocalBackend:
    """Generate with diffusers in a worker process on this machine.

    Args:
        catalog: resolves the request's model, refiner, VAE, LoRA and embedding names.
        data_dir: holds the tiny model and is the base of ``./`` catalog paths.
        device: torch device for the worker: ``auto`` (CUDA if present), ``cpu``, ``cuda:1``…
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float16``, ``bfloat16`` or ``float32``.
        hf_token: Hugging Face token for gated models, passed to the worker in its environment.
        start_timeout: seconds to wait for the worker to import torch and report ready.
        cancel_timeout: seconds a cancelled job may take to stop before the worker is killed.
        stall_timeout: seconds a running job may go without a step before the worker is killed.
        load_timeout: the same before a job's first step (loading, or downloading, its models).
        max_batch: most compatible jobs made in one pipeline call (1: no batching).
        safety_checker: the worker's image check (``auto``, ``off``, ``tiny``, a checker's id or folder, or
            ``module:callable`` naming a factory of a custom checker, imported in the worker); None: the
            worker reads ``IMAGEBOT_SAFETY_CHECKER``.
        preview_decoder: how step previews are made (``linear``, ``tiny``, a tiny autoencoder's id or folder);
            None: the worker reads ``IMAGEBOT_PREVIEW_DECODER``.
        warmup: `warm_up` makes one image of the default model at start, so that no user waits
            for the worker's start, the model's load or (when the UNets are compiled) compilation.
    """

    name = _NAME

    def __init__(
        self,
        catalog: Catalog,
        data_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        hf_token: str | None = None,
        *,
        start_timeout: float = 300.0,
        cancel_timeout: float = 30.0,
        stall_timeout: float = 300.0,
        load_timeout: float = 3600.0,
        max_batch: int = 4,
        safety_checker: str | None = None,
        preview_decoder: str | None = None,
        warmup: bool = False,
    ) -> None:
        self._catalog = catalog
        self._warmup = warmup
        self._warming: asyncio.Task[None] | None = None
        self._data_dir = Path(data_dir)
        self._device = device
        self._dtype = dtype
        self._hf_token = hf_token
        self._start_timeout = start_timeout
        self._cancel_timeout = cancel_timeout
        self._watchdog = _Watchdog(load=load_timeout, stall=stall_timeout)
        self.restarts = 0
        self.max_batch = max_batch
        self._worker_options = [
            *(("--safety-checker", safety_checker) if safety_checker else ()),
            *(("--preview-decoder", preview_decoder) if preview_decoder else ()),
        ]
        self.batch_sizes: list[int] = []  # jobs per pipeline call, one entry per call, for stats and tests
        self._worker: _Worker | None = None
        self._start_lock = asyncio.Lock()
        self._job_lock = asyncio.Lock()

    @property
    def worker_pid(self) -> int | None:
        """Return the process id of the running worker, if there is one."""
        worker = self._worker
        return worker.pid if worker is not None and worker.alive else None

    async def start(self) -> None:
        """Start the worker (if it is not running) and wait until it is ready.

        Raises:
            BackendUnavailable: the worker could not start.
        """
        try:
            await self._start()
        except WorkerLost as error:
            raise BackendUnavailable(_NAME, f"the worker {error.reason}") from error

    async def _start(self) -> None:
        """Start the worker if it is not running; raise `WorkerLost` if it dies before it is ready."""
        async with self._start_lock:
            if self._worker is not None and self._worker.alive:
                return
            if self._worker is not None:
                await self._worker.close(timeout=1.0)
            self._worker = await _Worker.spawn(self._worker_command(), self._worker_env(), self._start_timeout)

    def warm_up(self, model: str) -> None:
        """Start the worker and make one image of `model` in the background, when `warmup` is set.

        The image is small in steps but of the model's own size, through its refiner: the shapes
        a first job compiles for. Jobs queued meanwhile wait for it, as they would for any job.
        """
        if self._warmup and self._warming is None:
            self._warming = asyncio.create_task(self._warm(model), name="local-warm-up")

    async def _warm(self, model: str) -> None:
        started = time.perf_counter()
        try:
            job = build_job(warmup_request(self._catalog.get("model", model)), self._catalog, self._data_dir)
            await self._run([job], None, None)
        except Exception as error:  # a warm-up that fails is one cold first job, not a failed bot
            log.warning("warming the local worker up for %s failed: %s", model, error)
            return
        log.info(
            "local worker ready for %s in %.1f s (its warm-up image made)",
            model,
            time.perf_counter() - started,
        )

    @property
    def upscales_alone(self) -> bool:
        """Tell whether an upscale here is the image alone: no, it is the hires fix or a catalog upscaler."""
        return False

    def runs(self, entry: CatalogEntry) -> bool:
        """Tell whether the entry has local weights that are installed here (or fetched on first use)."""
        return entry.local is not None and installed(asset_of(entry, self._data_dir))

    def check(self, request: GenerationRequest) -> None:
        """Refuse what the worker cannot make: names without local weights or not installed here, LCM past 50 steps.

        The worker's own job resolution runs here too, so whatever it would refuse at run time is
        refused before the request is queued.
        """
        CAPABILITIES["local"].check(request, self._catalog)
        check_installed(build_job(request, self._catalog, self._data_dir))

    async def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: asyncio.Event | None = None,
    ) -> list[GeneratedImage]:
        """Return one image per seed of the request, in order.

        Raises:
            InvalidOption: a name is not in the catalog or cannot run locally.
            JobCancelled: `cancel` was set before the images were done.
            BackendUnavailable: the worker failed, died or could not start.
        """
        job = build_job(request, self._catalog, self._data_dir)
        return (await self._run([job], on_progress, cancel))[0]

    def batch_key(self, request: GenerationRequest) -> Hashable:
        """Return what requests must share to be made in one pipeline call (see `generate_batch`)."""
        return batch_key(build_job(request, self._catalog, self._data_dir))

    async def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: Sequence[ProgressCallback | None],
        cancels: Sequence[asyncio.Event],
    ) -> list[list[GeneratedImage] | JobCancelled]:
        """Make the images of requests with one `batch_key` in one pipeline call per stage.

        The batch stops only when every job of it is cancelled; a job cancelled alone gets
        `JobCancelled` in its place and its images are dropped. Failures raise for all.
        """
        jobs = [build_job(request, self._catalog, self._data_dir) for request in requests]

        def report(progress: StepProgress) -> None:
            for callback in on_progress:
                if callback is not None:
                    callback(progress)

        everyone = asyncio.Event()

        async def all_cancelled() -> None:
            await asyncio.gather(*(cancel.wait() for cancel in cancels))
            everyone.set()

        watcher = asyncio.create_task(all_cancelled())
        try:
            results = await self._run(jobs, report, everyone)
        finally:
            watcher.cancel()
        return [JobCancelled() if cancel.is_set() else images for images, cancel in zip(results, cancels, strict=True)]

    async def _run(
        self, jobs: list[WorkerJob], on_progress: ProgressCallback | None, cancel: asyncio.Event | None
    ) -> list[list[GeneratedImage]]:
        """Run jobs on the worker, once more on a fresh worker if it is lost.

        After running out of GPU memory, the second try makes one image per pipeline call, so that it fits.
        """
        one_by_one = False

        async def attempt() -> list[list[GeneratedImage]]:
            await self._start()
            if one_by_one and (len(jobs) > 1 or len(jobs[0].seeds) > 1):
                return await self._one_image_a_call(jobs, on_progress, cancel)
            assert self._worker is not None
            self.batch_sizes.append(len(jobs))
            return await self._worker.run(jobs, on_progress, cancel, self._cancel_timeout, self._watchdog)

        def lost(error: WorkerLost) -> None:
            nonlocal one_by_one
            one_by_one = error.oom
            self.restarts += 1
            log.warning("local worker lost (%s); retrying the job once on a fresh one", error.reason)

        warming = self._warming
        if warming is not None and not warming.done() and asyncio.current_task() is not warming:
            # Jobs wait behind the warm-up (asked for first), which a cancelled job must not cancel.
            await asyncio.shield(warming)
        async with self._job_lock:
            return await second_try(_NAME, attempt, lost, cancel)

    async def _one_image_a_call(
        self, jobs: list[WorkerJob], on_progress: ProgressCallback | None, cancel: asyncio.Event | None
    ) -> list[list[GeneratedImage]]:
        """Make every image of `jobs` in a pipeline call of its own; the same images, one at a time."""
        results: list[list[GeneratedImage]] = []
        for job in jobs:
            images: list[GeneratedImage] = []
            for seed in job.seeds:
                assert self._worker is not None
                self.batch_sizes.append(1)
                single = job.model_copy(update={"seeds": (seed,)})
                (made,) = await self._worker.run([single], on_progress, cancel, self._cancel_timeout, self._watchdog)
                images += [replace(image, index=len(images)) for image in made]
            results.append(images)
        return results

    async def flags(self, model: str, images: Sequence[bytes]) -> list[bool]:
        """Run the worker's safety check (the one `model`'s images get) on images a user gave.

        Raises:
            BackendUnavailable: the worker or its checker failed.
        """
        local = self._catalog.get("model", model).local or ""
        async with self._job_lock:
            await self.start()
            assert self._worker is not None
            return await self._worker.flags(local, images)

    @property
    def guide_preprocessors(self) -> frozenset[Preprocess]:
        """Return the guide maps this worker makes: those of catalog annotators whose files are here now."""
        return preprocessors(self._catalog, self._data_dir)

    async def make_guide(self, image: bytes, preprocess: Preprocess, width: int, height: int) -> GuideMap:
        """Return the `preprocess` map of `image` at `width`×`height`, made by a catalog annotator in the worker.

        Raises:
            InvalidOption: no catalog annotator for `preprocess` has its files here.
            BackendUnavailable: the worker or the annotator failed.
        """
        folder = annotator_folder(self._catalog, self._data_dir, preprocess)
        async with self._job_lock:
            await self.start()
            assert self._worker is not None
            return GuideMap(await self._worker.guide(str(folder), preprocess, image, width, height))

    def check_describe(self) -> None:
        """Refuse ``/describe`` while no catalog captioner has its files here (before the image is read).

        Raises:
            InvalidOption: option ``describe``, one sentence.
        """
        captioner_folder(self._catalog, self._data_dir)

    async def describe(self, image: bytes) -> Description:
        """Return what `image` (a checked PNG) shows, in the words of a catalog captioner in the worker; free.

        Raises:
            InvalidOption: no catalog captioner has its files here.
            BackendUnavailable: the worker or the captioner failed.
        """
        folder = captioner_folder(self._catalog, self._data_dir)
        async with self._job_lock:
            await self.start()
            assert self._worker is not None
            return await self._worker.describe(str(folder), image)

    async def stats(self) -> dict[str, int]:
        """Return the worker's load counters (pipelines, refiners, VAEs, LoRAs, embeddings)."""
        async with self._job_lock:
            await self.start()
            assert self._worker is not None
            return await self._worker.stats()

    async def aclose(self) -> None:
        """Stop the warm-up and the worker, politely first."""
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        async with self._start_lock:
            worker, self._worker = self._worker, None
            if worker is not None:
                await worker.close(timeout=10.0)

    def _worker_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "inference.local._worker",
            "--data-dir",
            str(self._data_dir),
            "--device",
            self._device,
            "--dtype",
            self._dtype,
            *self._worker_options,
        ]

    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
        if self._hf_token:
            # The environment, not argv: argv is visible to every user of the machine.
            env["HF_TOKEN"] = self._hf_token
        return env


def warmup_request(model: CatalogEntry) -> GenerationRequest:
    """Return the warm-up job of `model`: its size, CFG and refiner, four steps (compiling needs shapes, not steps)."""
    return GenerationRequest(
        prompt="warm-up",
        model=model.name,
        width=model.width or 1024,
        height=model.height or 1024,
        steps=4,
        cfg_scale=7.0 if model.default_cfg is None else model.default_cfg,
        seed=1,
        refiner=None if model.refiner is None else RefinerSpec(model=model.refiner, start_step=3),
    )


class WorkerLost(Exception):
    """The worker died, ran out of GPU memory or stalled; a fresh one may do the job.

    Args:
        reason: what happened, phrased to follow "the worker".
        oom: it ran out of GPU memory, so the second try makes one image per pipeline call.
        loading: it died before the job's first step: starting, or loading the model (the kernel's
            out-of-memory killer picks a process that is growing).
    """

    def __init__(self, reason: str, *, oom: bool = False, loading: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.oom = oom
        self.loading = loading


async def second_try(
    backend: str,
    attempt: Callable[[], Awaitable[list[list[GeneratedImage]]]],
    on_lost: Callable[[WorkerLost], None],
    cancel: asyncio.Event | None,
) -> list[list[GeneratedImage]]:
    """Run `attempt`; when its worker is lost, once more (on a fresh worker), noting it on the images.

    Shared by the local worker process and the Ray Serve replicas, which run the same worker code.

    Raises:
        JobCancelled: `cancel` was set before a try.
        BackendUnavailable: the worker was lost on both tries.
    """
    lost: WorkerLost | None = None
    for _ in range(2):
        if cancel is not None and cancel.is_set():
            raise JobCancelled
        try:
            results = await attempt()
        except WorkerLost as error:
            if lost is not None and error.loading:
                raise BackendUnavailable(backend, _CANNOT_LOAD) from error
            if lost is not None:
                raise BackendUnavailable(
                    backend, f"{error.reason}, and again on a fresh worker ({lost.reason} the first time)"
                ) from error
            lost = error
            metrics.WORKER_RESTARTS.inc()
            on_lost(error)
            continue
        if lost is not None:
            note = f"The worker {lost.reason}; it was restarted and this is the second try."
            for image in (image for images in results for image in images):
                image.meta["note"] = note
        return results
    raise AssertionError("unreachable: the loop returns or raises")


@dataclass(frozen=True, slots=True)
class _Died:
    """Not a frame: what the bot's reader tells every waiting job when the worker's stream ends."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Watchdog:
    """How long a job may go without a step: `load` before its first, `stall` after."""

    load: float
    stall: float


class _Worker:
    """One running worker process, its frame reader and the jobs waiting on it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._pending: dict[int, asyncio.Queue[ToBot | _Died]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._dead = False

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return not self._dead and self._process.returncode is None

    @classmethod
    async def spawn(cls, command: list[str], env: dict[str, str], timeout: float) -> _Worker:
        """Start the process and wait for its ``ready`` frame."""
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                # Its own session, so a Ctrl-C meant for the bot does not kill a job mid-step.
                start_new_session=True,
            )
        except OSError as error:
            raise BackendUnavailable(_NAME, "the worker process could not be started") from error
        worker = cls(process)
        assert process.stdout is not None
        try:
            first = await asyncio.wait_for(read_frame_async(process.stdout, from_worker), timeout)
        except (TimeoutError, ProtocolError) as error:
            await worker.close(timeout=1.0)
            raise BackendUnavailable(_NAME, "the worker process did not start in time") from error
        except asyncio.CancelledError:
            # Stopped while it starts (the bot closing during the warm-up): leave no worker behind.
            await worker.close(timeout=1.0)
            raise
        match first:
            case Ready(device=device, dtype=dtype):
                log.info("local worker %d ready on %s (%s)", process.pid, device, dtype)
            case None:
                # It died before it was ready (killed while importing torch or loading the checkers):
                # a loss like any other, so the job gets a fresh worker.
                await worker.close(timeout=1.0)
                log.warning("local worker %d %s before it was ready", process.pid, _exit(process.returncode))
                raise WorkerLost(f"{_STOPPED} while loading the model", loading=True)
            case Fatal(message=reason):
                await worker.close(timeout=1.0)
                raise BackendUnavailable(_NAME, reason)
            case _:
                await worker.close(timeout=1.0)
                raise BackendUnavailable(_NAME, "the worker process could not start")
        worker._reader = asyncio.create_task(worker._read_loop(), name=f"local-worker-{process.pid}")
        return worker

    async def run(
        self,
        jobs: list[WorkerJob],
        on_progress: ProgressCallback | None,
        cancel: asyncio.Event | None,
        cancel_timeout: float,
        watchdog: _Watchdog,
    ) -> list[list[GeneratedImage]]:
        """Send compatible jobs (one pipeline call) and follow their frames to each job's images (or the error).

        Raises:
            WorkerLost: the worker died, ran out of GPU memory or stalled (and was killed).
        """
        job_id, inbox = self._open()
        loop = asyncio.get_running_loop()
        cancel_sent = False
        deadline: float | None = None
        stalled_at = loop.time() + watchdog.load
        stepped = False
        finished = False
        get: asyncio.Future[ToBot | _Died] | None = None
        try:
            await self._send(Generate(job_id, tuple(jobs)))
            while True:
                get = get or asyncio.ensure_future(inbox.get())
                waiters: set[asyncio.Future[Any]] = {get}
                cancelled: asyncio.Future[Any] | None = None
                if cancel is not None and not cancel_sent:
                    cancelled = asyncio.ensure_future(cancel.wait())
                    waiters.add(cancelled)
                wake = stalled_at if deadline is None else min(deadline, stalled_at)
                done, _ = await asyncio.wait(
                    waiters, timeout=max(0.0, wake - loop.time()), return_when=asyncio.FIRST_COMPLETED
                )
                if cancelled is not None and not cancelled.done():
                    cancelled.cancel()
                if get in done:
                    message, get = get.result(), None
                    if isinstance(message, Progress):
                        stalled_at, stepped = loop.time() + watchdog.stall, True
                        report_progress(on_progress, message)
                        continue
                    finished = True
                    if isinstance(message, Error) and message.restart:
                        await self.close(timeout=5.0)
                    if cancel_sent or (cancel is not None and cancel.is_set()):
                        raise JobCancelled
                    match message:
                        case Result() | Error():
                            return images_of(message, _NAME)
                        case _Died(reason=reason) if stepped:
                            raise WorkerLost(reason)
                        case _Died(reason=reason):
                            raise WorkerLost(f"{reason} while loading the model", loading=True)
                        case _:
                            raise BackendUnavailable(
                                _NAME, f"the worker answered with an unexpected '{message.op}' frame"
                            )
                if cancelled is not None and cancelled in done:
                    await self._send(Cancel(job_id))
                    cancel_sent = True
                    deadline = loop.time() + cancel_timeout
                    continue
                if deadline is None or stalled_at < deadline:
                    seconds = watchdog.stall if stepped else watchdog.load
                    log.warning("local worker %d made no progress for %g s; killing it", self.pid, seconds)
                    finished = True
                    await self.close(timeout=0.0)
                    raise WorkerLost(f"made no progress for {seconds:g} s")
                # The worker ignored the cancel (stuck loading, say): it cannot be trusted with the next job.
                log.warning("local worker %d did not stop a cancelled job; killing it", self.pid)
                finished = True
                await self.close(timeout=0.0)
                raise JobCancelled
        except asyncio.CancelledError:
            if not finished and self.alive:
                # Our caller gave up; let the worker stop too instead of finishing for nobody.
                self._write(Cancel(job_id))
            raise
        finally:
            if get is not None:
                get.cancel()
            self._pending.pop(job_id, None)

    async def stats(self) -> dict[str, int]:
        """Ask for the worker's load counters and return its answer."""
        match reply := await self._ask(StatsRequest):
            case Stats(loads=loads):
                return loads
        raise _unexpected(reply)

    async def flags(self, model_local: str, images: Sequence[bytes]) -> list[bool]:
        """Ask the worker's safety check about images and return its verdicts."""
        match reply := await self._ask(lambda request_id: CheckRequest(request_id, model_local, tuple(images))):
            case Checked(flags=flags) if len(flags) == len(images):
                return list(flags)
            case Error(message=message):
                raise BackendUnavailable(_NAME, message)
        raise _unexpected(reply)

    async def guide(self, folder: str, preprocess: str, image: bytes, width: int, height: int) -> bytes:
        """Ask the worker for a guide map made by the annotator in `folder` and return its PNG."""
        match reply := await self._ask(
            lambda request_id: GuideRequest(request_id, folder, preprocess, image, width, height)
        ):
            case Guided(image=made):
                return made
            case Error(message=message):
                raise BackendUnavailable(_NAME, message)
        raise _unexpected(reply)

    async def describe(self, folder: str, image: bytes) -> Description:
        """Ask the worker for the captions of `image` by the captioner in `folder` and return their words."""
        match reply := await self._ask(lambda request_id: DescribeRequest(request_id, folder, image)):
            case Described(text=text, more=more):
                return Description(text, more=more)
            case Error(message=message):
                raise BackendUnavailable(_NAME, message, doing=DESCRIBING)
        raise _unexpected(reply, DESCRIBING)

    async def _ask(self, make: Callable[[int], Message]) -> ToBot | _Died:
        """Send a request (`make` given its id) outside any job and return the worker's answer to it."""
        request_id, inbox = self._open()
        try:
            await self._send(make(request_id))
            return await inbox.get()
        finally:
            self._pending.pop(request_id, None)

    async def close(self, timeout: float) -> None:
        """Ask the worker to exit; kill it after `timeout` seconds."""
        process = self._process
        if process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._write(Shutdown())
                assert process.stdin is not None
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._dead = True
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def _open(self) -> tuple[int, asyncio.Queue[ToBot | _Died]]:
        if not self.alive:
            raise BackendUnavailable(_NAME, "the worker process is not running")
        message_id = next(self._ids)
        inbox: asyncio.Queue[ToBot | _Died] = asyncio.Queue()
        self._pending[message_id] = inbox
        return message_id, inbox

    def _write(self, message: Message) -> None:
        assert self._process.stdin is not None
        if not self._process.stdin.is_closing():
            self._process.stdin.write(encode_frame(message))

    async def _send(self, message: Message) -> None:
        assert self._process.stdin is not None
        try:
            self._write(message)
            await self._process.stdin.drain()
        except (ConnectionError, RuntimeError) as error:
            self._dead = True
            raise WorkerLost(_STOPPED) from error

    async def _read_loop(self) -> None:
        """Route every frame to the job waiting for it; when the stream ends, tell them all."""
        assert self._process.stdout is not None
        reason = _STOPPED
        try:
            while (message := await read_frame_async(self._process.stdout, from_worker)) is not None:
                match message:
                    case (
                        Progress(id=to)
                        | Result(id=to)
                        | Error(id=to)
                        | Stats(id=to)
                        | Checked(id=to)
                        | Guided(id=to)
                        | Described(id=to)
                    ):
                        inbox = self._pending.get(to)
                        if inbox is not None:
                            inbox.put_nowait(message)
                    case _:
                        log.warning("local worker %d sent an unexpected '%s' frame", self.pid, message.op)
        except ProtocolError:
            log.exception("local worker %d wrote something that is not a frame of ours", self.pid)
            reason = "sent garbage"
        finally:
            self._dead = True
            with contextlib.suppress(ProcessLookupError):
                if self._process.returncode is None:
                    self._process.kill()
            for inbox in self._pending.values():
                inbox.put_nowait(_Died(reason))


def _unexpected(reply: ToBot | _Died, doing: str = "make the image") -> BackendUnavailable:
    """Return the error for an answer a request did not expect (or the worker's death instead of one)."""
    if isinstance(reply, _Died):
        return BackendUnavailable(_NAME, f"the worker {reply.reason}", doing=doing)
    return BackendUnavailable(_NAME, f"the worker answered with an unexpected '{reply.op}' frame", doing=doing)


def _exit(returncode: int | None) -> str:
    """Say how a process ended: ``was killed by SIGKILL`` (what the out-of-memory killer sends), ``exited with 1``."""
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"exited with {returncode}"


def report_progress(on_progress: ProgressCallback | None, message: Progress) -> None:
    """Pass a progress message to the job's callback; a failing callback is logged, never raised."""
    if on_progress is None:
        return
    try:
        on_progress(StepProgress(message.stage, message.step, message.total, message.preview))
    except Exception:
        # A broken progress display must not lose the images.
        log.exception("progress callback failed")


def images_of(message: Result | Error, backend: str) -> list[list[GeneratedImage]]:
    """Return the images of a result (one list per job); raise what an error means."""
    match message:
        case Result(results=results):
            return [list(images) for images in results]
        case Error(kind="cancelled"):
            raise JobCancelled
        case Error(kind="oom"):
            raise WorkerLost("ran out of GPU memory", oom=True)
        case Error(kind="invalid", option=option, message=text):
            raise InvalidOption(option or "request", text)
        case Error(message=text):
            raise BackendUnavailable(backend, text)

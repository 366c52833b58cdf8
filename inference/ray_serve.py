"""SDXL on a Ray cluster: the local worker's code as a Ray Serve deployment of GPU replicas.

For when one GPU box is not enough (``IMAGEBOT_BACKEND=ray``, extra ``ray``).

Replica side, `ImageWorker`: each replica holds one `SDXLRunner` (torch lives in
the replica's process, never in the bot's) and runs jobs with the worker
process's own `run_jobs`, so a replica streams back the very messages the worker
process writes to its stdout, each its frame's JSON in ``{"pid", "frame"}`` signed
with the replica's pid: progress (with latent previews), then one result or error.
Three Serve features do the rest:

* ``@serve.batch`` gathers the requests that reach a replica together; the ones
  with the same `batch_key` (model, size, steps, scheduler, refiner split,
  LoRAs, cfg) run as one pipeline call with a generator per image, the rule the
  local worker batches by.
* ``@serve.multiplexed``: a request carries the digest of the weights it needs
  (model, refiner, VAE, LoRAs, embeddings, ControlNets) as its multiplexed model id, so Serve
  sends it to a replica that already has them loaded; a replica that has not
  loads them first (`SDXLRunner.preload`).
* Cancellation: when the bot cancels a stream, Serve cancels the request's
  task on the replica, which flags the job; the pipeline stops at its next step
  (a batch stops when all of its jobs are cancelled) and the replica is free.

A replica whose job failed in a way that leaves its state suspect (out of GPU
memory, an unexpected error), or whose pipeline call stopped making steps (a
hung kernel), fails its health check, and Serve replaces it.

Bot side, `RayBackend`: resolves catalog names (`build_job`, as the local
backend does), streams each job through a Serve handle, and supervises it like
the local worker: a replica that dies or makes no progress for the watchdog's
time loses the job to a second try on another replica, with the same note.

The deployment is built by `app_builder` (``serve deploy deploy/ray-serve.yaml``
or ``serve run inference.ray_serve:app_builder``) and named ``imagebot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import ray
from ray import serve
from ray.exceptions import RayActorError, RayError
from ray.serve.exceptions import RayServeException, ReplicaUnavailableError

from bot.catalog import Catalog, CatalogEntry
from bot.describe import DESCRIBING, Description
from bot.errors import BackendUnavailable, JobCancelled
from bot.guides import GuideMap
from bot.images import input_path
from bot.ports import ProgressCallback
from bot.request import GeneratedImage, GenerationRequest, Preprocess
from inference.capabilities import CAPABILITIES
from inference.local._annotators import annotator_folder, preprocessors
from inference.local._backend import WorkerLost, images_of, report_progress, second_try
from inference.local._captioner import captioner_folder
from inference.local._job import WorkerJob, batch_key, build_job
from inference.local._protocol import (
    Checked,
    Described,
    Error,
    Guided,
    JobMessage,
    Message,
    Progress,
    ProtocolError,
    Result,
    ToBot,
    encode,
    from_worker,
)

__all__ = ["APP_NAME", "ImageWorker", "RayBackend", "app_builder", "assets_id"]

log = logging.getLogger(__name__)

APP_NAME = "imagebot"
_NAME: Final = "ray"
# Asset sets whose jobs a replica remembers for its multiplexed loader; older ones are forgotten.
_REMEMBERED_ASSETS = 64
_REMEMBERED_RUNS = 1000


def assets_id(job: WorkerJob) -> str:
    """Return the multiplexed model id of a job: a digest of the weights a replica must hold to run it.

    LoRA and embedding weights, ControlNet weights, guides and steps are left out: they change
    nothing that is loaded. ControlNets count (a replica keeps the ones it loaded), so jobs with
    one go to a replica that holds it.
    """
    wanted = {
        "model": job.model.local,
        "refiner": job.refiner.local if job.refiner else None,
        "vae": job.vae.local if job.vae else None,
        "loras": sorted({lora.local for lora in job.loras}),
        "embeddings": sorted({embedding.local for embedding in job.embeddings}),
    }
    if job.controlnets:  # absent otherwise, so ids of jobs without ControlNets stay as they were
        wanted["controlnets"] = sorted({control.asset.local for control in job.controlnets})
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:24]


def input_files(job: WorkerJob, data_dir: Path) -> dict[str, bytes]:
    """Return the stored images a job reads (init image, mask, ControlNet guides), by path under `data_dir`."""
    paths = [job.init_image, job.mask_image, *(control.guide for control in job.controlnets)]
    return {
        Path(path).relative_to(data_dir).as_posix(): Path(path).read_bytes()
        for path in dict.fromkeys(paths)
        if path is not None
    }


def localize(job: WorkerJob, inputs: dict[str, bytes], data_dir: Path) -> WorkerJob:
    """Write a job's input images under this node's `data_dir` and point the job at them.

    Each is content-addressed (``inputs/<ab>/<sha256>.png``, `bot.images.input_path`): a name
    that is not such a path, or bytes that do not hash to it, are refused, so nothing the bot
    sends can land outside the inputs folder or pass off one image as another.
    """
    for name, data in inputs.items():
        expected = None
        sha256 = name.rsplit("/", 1)[-1].removesuffix(".png")
        with contextlib.suppress(ValueError):  # not 64 hex digits: no input's name
            expected = input_path(sha256)
        if name != expected or hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"{name[:100]!r} is not the content-addressed path of its bytes")
        target = data_dir / name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
            partial.write_bytes(data)
            partial.replace(target)  # whole or absent, for a job reading it at the same time

    def here(path: str | None) -> str | None:
        if path is None:
            return None
        name = "/".join(Path(path).parts[-3:])  # inputs/<ab>/<sha256>.png
        if name not in inputs:
            raise ValueError(f"the job reads {name[:100]!r}, which was not sent with it")
        return str(data_dir / name)

    controls = tuple(control.model_copy(update={"guide": here(control.guide)}) for control in job.controlnets)
    update = {"init_image": here(job.init_image), "mask_image": here(job.mask_image), "controlnets": controls}
    return job.model_copy(update=update)


# -- replica side -----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Request:
    """One job on a replica: its messages go to `emit`, its cancel flag is set when the bot gives up."""

    job: WorkerJob
    emit: Callable[[JobMessage], None]
    cancel: threading.Event = field(default_factory=threading.Event)


class _ImageWorker:
    """A Serve replica that makes images with the local worker's code.

    Args:
        data_dir: where the tiny model is built and ``tiny:`` ids point (every node's own).
        device: torch device: ``auto`` (CUDA if present), ``cpu``, ``cuda:1``…
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float16``, ``bfloat16`` or ``float32``.
        max_batch: most requests gathered into one batch (1: no batching).
        batch_wait_s: how long the first request of a batch waits for others.
        safety_checker: the image check (``auto``, ``off``, ``tiny``, a checker's id or folder, or
            ``module:callable``), as on the local worker; None: the replica's ``IMAGEBOT_SAFETY_CHECKER``.
        preview_decoder: how step previews are made (``linear``, ``tiny``, a tiny autoencoder's id or
            folder); None: the replica's ``IMAGEBOT_PREVIEW_DECODER``.
        stall_timeout_s: seconds a running pipeline call may go without a step before the replica
            fails its health check (a hung kernel), so that Serve replaces it.
        load_timeout_s: the same before a call's first step (loading, or downloading, weights).
    """

    def __init__(
        self,
        data_dir: str,
        device: str = "auto",
        dtype: str = "auto",
        max_batch: int = 4,
        batch_wait_s: float = 0.05,
        safety_checker: str | None = None,
        preview_decoder: str | None = None,
        stall_timeout_s: float = 300.0,
        load_timeout_s: float = 3600.0,
    ) -> None:
        from inference.local._worker import make_runner

        self._data_dir = Path(data_dir)
        self._runner = make_runner(
            Path(data_dir), device, dtype, safety_checker=safety_checker, preview_decoder=preview_decoder
        )
        self._annotators: Any = None  # inference.local._annotators.Annotators, made at the first guide map
        self._captioners: Any = None  # inference.local._captioner.Captioners, made at the first description
        # One pipeline call at a time, off the replica's event loop so streams and cancels keep flowing.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="imagebot-sdxl")
        self._assets: dict[str, WorkerJob] = {}
        self._pid = os.getpid()
        self._suspect: str | None = None
        self._stall_timeout = stall_timeout_s
        self._load_timeout = load_timeout_s
        # While a pipeline call runs: when it started or last made a step, and whether it made one.
        self._running: tuple[float, bool] | None = None
        # The latest pipeline calls, for `stats`: a replica lives long, its memory must not grow.
        self._runs: deque[dict[str, Any]] = deque(maxlen=_REMEMBERED_RUNS)
        self._batched.set_max_batch_size(max_batch)
        self._batched.set_batch_wait_timeout_s(batch_wait_s)

    async def generate(
        self, job: dict[str, Any], inputs: dict[str, bytes] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream the messages of one job (a `WorkerJob.to_dict()`), signed: progress, then its result or an error.

        `inputs` are the job's input images, guides and masks (`input_files`): written under this
        replica's data dir, where the job then reads them.
        """
        loop = asyncio.get_running_loop()
        messages: asyncio.Queue[JobMessage] = asyncio.Queue()

        def emit(message: JobMessage) -> None:
            # Called from the pipeline thread: the queue belongs to this loop.
            loop.call_soon_threadsafe(messages.put_nowait, message)

        request = _Request(
            await asyncio.to_thread(localize, WorkerJob.from_dict(job), inputs or {}, self._data_dir), emit
        )
        try:
            assets = serve.get_multiplexed_model_id()
            if assets:
                failure = await self._load_assets(assets, request.job)
                if failure is not None:
                    yield self._signed(failure)
                    return
            batch = asyncio.ensure_future(self._batched(request))
            while True:
                message = await _next_message(messages, batch)
                yield self._signed(message)
                if not isinstance(message, Progress):
                    return
        except (asyncio.CancelledError, GeneratorExit):
            # The bot cancelled the stream (or went away): the pipeline stops at its next step.
            request.cancel.set()
            raise

    async def flags(self, model_local: str, images: list[bytes]) -> dict[str, Any]:
        """Run the safety check (the one `model_local`'s images get) on a user's input images: a signed frame.

        `Checked` with a verdict per image, or an `Error` when the checker cannot run. In the
        pipeline's thread: the checker shares the GPU with the pipelines, one call at a time.
        """
        from inference.local._worker import check_images

        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._executor, check_images, self._runner, 0, model_local, images)
        return self._signed(answer)

    async def guide(self, folder: str, preprocess: str, image: bytes, width: int, height: int) -> dict[str, Any]:
        """Make a guide map with the catalog annotator in `folder`: a signed `Guided` (or `Error`) frame.

        In the pipeline's thread, as the worker makes them: the annotator shares the GPU.
        """
        from inference.local._annotators import Annotators
        from inference.local._protocol import GuideRequest
        from inference.local._worker import make_guide

        if self._annotators is None:
            self._annotators = Annotators(self._runner.device)
        request = GuideRequest(0, folder, preprocess, image, width, height)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._executor, make_guide, self._annotators, request)
        return self._signed(answer)

    async def describe(self, folder: str, image: bytes) -> dict[str, Any]:
        """Put `image` into words with the catalog captioner in `folder`: a signed `Described` (or `Error`) frame.

        In the pipeline's thread, as the worker describes: the captioner shares the GPU.
        """
        from inference.local._captioner import Captioners
        from inference.local._protocol import DescribeRequest
        from inference.local._worker import describe_image

        if self._captioners is None:
            self._captioners = Captioners(self._runner.device, self._runner.dtype)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(
            self._executor, describe_image, self._captioners, DescribeRequest(0, folder, image)
        )
        return self._signed(answer)

    async def stats(self) -> dict[str, Any]:
        """Return this replica's pid, load counters, and each run's batch size, steps and outcome."""
        return {"pid": self._pid, "loads": self._runner.stats(), "runs": list(self._runs)}

    def check_health(self) -> None:
        """Fail Serve's health check when the pipelines are suspect or stalled, so that Serve replaces us.

        Suspect: a failure that leaves them in doubt (out of GPU memory, an unexpected error).
        Stalled: a pipeline call that made no step for the stall (or, before its first, the load) timeout.
        """
        if self._suspect is not None:
            raise RuntimeError(f"replica {self._pid} is suspect after {self._suspect}")
        running = self._running
        if running is not None:
            since, stepped = running
            limit = self._stall_timeout if stepped else self._load_timeout
            if time.monotonic() - since > limit:
                raise RuntimeError(f"replica {self._pid} made no progress for {limit:g} s")

    async def _load_assets(self, assets: str, job: WorkerJob) -> Error | None:
        """Have the job's weights loaded (through the multiplexed loader); return an error if they cannot be."""
        from inference.local._pipeline import JobFailed

        self._assets[assets] = job
        while len(self._assets) > _REMEMBERED_ASSETS:
            del self._assets[next(iter(self._assets))]
        try:
            await self._load(assets)
        except JobFailed as failure:
            return Error(0, failure.kind, failure.message, failure.option)
        return None

    @serve.multiplexed(max_num_models_per_replica=8)
    async def _load(self, assets: str) -> str:
        """Load the weights behind a multiplexed model id, once per replica (Serve keeps the 8 latest)."""
        job = self._assets[assets]
        await asyncio.get_running_loop().run_in_executor(self._executor, self._runner.preload, job)
        return assets

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def _batched(self, requests: list[_Request]) -> list[None]:
        """Run the requests Serve gathered, one pipeline call per group of one `batch_key`."""
        groups: dict[Hashable, list[_Request]] = {}
        for request in requests:
            groups.setdefault(batch_key(request.job), []).append(request)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            await loop.run_in_executor(self._executor, self._run_group, group)
        return [None] * len(requests)

    def _run_group(self, group: list[_Request]) -> None:
        """Run one group in the pipeline thread, handing each request its messages; record how it went."""
        from inference.local._worker import run_jobs

        run: dict[str, Any] = {"jobs": len(group), "steps": 0, "outcome": "done"}

        def emit(message: JobMessage) -> None:
            match message:
                case Result(results=results):
                    for request, images in zip(group, results, strict=True):
                        request.emit(replace(message, results=(images,)))
                    return
                case Progress():
                    run["steps"] += 1
                    self._running = (time.monotonic(), True)
                case Error(kind=kind, restart=restart):
                    run["outcome"] = kind
                    if restart:
                        self._suspect = kind
            for request in group:
                request.emit(message)

        def should_cancel() -> bool:
            return all(request.cancel.is_set() for request in group)

        self._running = (time.monotonic(), False)
        try:
            run_jobs(self._runner, 0, [request.job for request in group], should_cancel, emit)
        finally:
            self._running = None
        self._runs.append(run)

    def _signed(self, message: Message) -> dict[str, Any]:
        return {"pid": self._pid, "frame": encode(message)}


async def _next_message(messages: asyncio.Queue[JobMessage], batch: asyncio.Future[None]) -> JobMessage:
    """Return the request's next message; if its batch ended without one, an error saying so."""
    while True:
        if not messages.empty():
            return messages.get_nowait()
        if batch.done():
            error = batch.exception()
            name = type(error).__name__ if error is not None else "no answer"
            return Error(0, "failed", f"the replica failed ({name})", restart=True)
        getter = asyncio.ensure_future(messages.get())
        waiters: set[asyncio.Future[Any]] = {getter, batch}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()


# The deployment (a Serve `Deployment`, not a class): `app_builder` sets its replicas and resources.
ImageWorker = serve.deployment(name="ImageWorker", ray_actor_options={"num_gpus": 1}, max_ongoing_requests=8)(
    _ImageWorker
)


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Build the ``imagebot`` Serve application from a Serve config's ``args`` (see deploy/ray-serve.yaml).

    Args:
        args: ``data_dir`` (required), ``device``, ``dtype``, ``max_batch``, ``batch_wait_s``, ``safety_checker``,
            ``preview_decoder``, ``stall_timeout_s``, ``load_timeout_s``;
            ``num_replicas`` and ``num_gpus`` (per replica, default 1; 0 on CPU-only nodes).
    """
    known = {"data_dir", "device", "dtype", "max_batch", "batch_wait_s", "safety_checker", "preview_decoder"}
    known |= {"stall_timeout_s", "load_timeout_s", "num_replicas", "num_gpus"}
    if unknown := set(args) - known:
        raise ValueError(f"unknown imagebot Serve arguments: {', '.join(sorted(unknown))}")
    if "data_dir" not in args:
        raise ValueError("the imagebot Serve application needs a data_dir argument")
    max_batch = int(args.get("max_batch", 4))
    gpus = float(args.get("num_gpus", 1))
    deployment = ImageWorker.options(
        num_replicas=int(args.get("num_replicas", 1)),
        # Enough requests on a replica for a full batch to gather while the previous one runs.
        max_ongoing_requests=2 * max_batch,
        ray_actor_options={"num_gpus": gpus, "num_cpus": 1 if gpus == 0 else 0},
    )
    return deployment.bind(
        str(args["data_dir"]),
        str(args.get("device", "auto")),
        str(args.get("dtype", "auto")),
        max_batch,
        float(args.get("batch_wait_s", 0.05)),
        args.get("safety_checker"),
        args.get("preview_decoder"),
        float(args.get("stall_timeout_s", 300.0)),
        float(args.get("load_timeout_s", 3600.0)),
    )


# -- bot side ---------------------------------------------------------------------------------------


class RayBackend:
    """Generate on a Ray Serve deployment of `ImageWorker` replicas.

    Args:
        catalog: resolves the request's names to the weights the replicas load.
        data_dir: the base of ``./`` catalog paths (they must exist at the same place on the GPU nodes).
        address: the Ray cluster (``ray://head:10001``, ``auto``); unused when this process already joined one.
        app_name: the Serve application's name.
        stall_timeout: seconds a running job may go without a step before it is tried on another replica.
        load_timeout: the same before a job's first step (loading, or downloading, its weights).
        concurrency: jobs the service keeps in the cluster at once (replicas × their max_batch fills them).
    """

    name = _NAME

    def __init__(
        self,
        catalog: Catalog,
        data_dir: Path,
        address: str | None = "auto",
        *,
        app_name: str = APP_NAME,
        stall_timeout: float = 300.0,
        load_timeout: float = 3600.0,
        concurrency: int = 8,
    ) -> None:
        self._catalog = catalog
        self._data_dir = Path(data_dir)
        self._address = address
        self._app_name = app_name
        self._stall_timeout = stall_timeout
        self._load_timeout = load_timeout
        self._handle: Any = None
        self._joined = False  # whether this backend joined the cluster (and so leaves it on close)
        self._start_lock = asyncio.Lock()
        self.retries = 0
        self.concurrency = concurrency
        self.replica_pid: int | None = None  # the replica of the latest frame, for tests and logs

    async def start(self) -> None:
        """Join the cluster and find the Serve application.

        Raises:
            BackendUnavailable: the cluster cannot be reached or has no such application.
        """
        async with self._start_lock:
            if self._handle is None:
                self._handle = await asyncio.to_thread(self._connect)

    def _connect(self) -> Any:
        try:
            if not ray.is_initialized():
                ray.init(address=self._address, log_to_driver=False)
                self._joined = True
            return serve.get_app_handle(self._app_name)
        except (ConnectionError, RayError, RayServeException, ValueError) as error:
            log.warning("Ray Serve application %r not reachable: %s", self._app_name, error)
            where = f"at {self._address}" if self._address else "this process joined"
            raise BackendUnavailable(
                _NAME, f"no '{self._app_name}' Serve application is running on the Ray cluster {where}"
            ) from error

    @property
    def upscales_alone(self) -> bool:
        """Tell whether an upscale here is the image alone: no (the replicas run the local worker's code)."""
        return False

    def runs(self, entry: CatalogEntry) -> bool:
        """Tell whether the entry has local weights for the replicas (whether they are installed there is theirs)."""
        return CAPABILITIES[_NAME].identifier(entry) is not None

    def check(self, request: GenerationRequest) -> None:
        """Refuse what the replicas cannot make (the local worker's limits: the same code runs there)."""
        CAPABILITIES[_NAME].check(request, self._catalog)
        build_job(request, self._catalog, self._data_dir)

    async def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: asyncio.Event | None = None,
    ) -> list[GeneratedImage]:
        """Return one image per seed of the request, in order.

        Raises:
            InvalidOption: a name is not in the catalog or cannot run on the replicas.
            JobCancelled: `cancel` was set before the images were done.
            BackendUnavailable: the cluster failed, or two replicas were lost on this job.
        """
        job = build_job(request, self._catalog, self._data_dir)

        async def attempt() -> list[list[GeneratedImage]]:
            await self.start()
            return [await self._stream(job, on_progress, cancel)]

        def lost(error: WorkerLost) -> None:
            self.retries += 1
            log.warning("Ray replica lost (%s); retrying the job once on another", error.reason)

        return (await second_try(_NAME, attempt, lost, cancel))[0]

    async def _stream(
        self, job: WorkerJob, on_progress: ProgressCallback | None, cancel: asyncio.Event | None
    ) -> list[GeneratedImage]:
        """Follow one job's stream of messages to its images, cancelling it when asked or when it stalls."""
        handle = self._handle.options(stream=True, multiplexed_model_id=assets_id(job))
        # The replicas need not share the bot's disk: the job's input images travel with it.
        inputs = await asyncio.to_thread(input_files, job, self._data_dir)
        response = handle.generate.remote(job.to_dict(), inputs)
        frames = response.__aiter__()
        timeout = self._load_timeout
        cancelled = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        try:
            while True:
                following = asyncio.ensure_future(frames.__anext__())
                # A stream cancelled under it ends in RequestCancelledError, which nobody needs to read.
                following.add_done_callback(_drop_outcome)
                waiters = {following} if cancelled is None else {following, cancelled}
                done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if following not in done:
                    following.cancel()
                    response.cancel()
                    if cancelled is not None and cancelled in done:
                        raise JobCancelled
                    raise WorkerLost(f"made no progress for {timeout:g} s")
                try:
                    frame = following.result()
                except StopAsyncIteration:
                    raise BackendUnavailable(_NAME, "the replica ended the job without an answer") from None
                except (RayActorError, ReplicaUnavailableError) as error:
                    raise WorkerLost("stopped unexpectedly") from error
                except (RayError, RayServeException) as error:
                    raise BackendUnavailable(_NAME, f"the Ray cluster failed ({type(error).__name__})") from error
                self.replica_pid = frame.get("pid")
                match message := _read(frame):
                    case Progress():
                        timeout = self._stall_timeout
                        report_progress(on_progress, message)
                        continue
                    case Result() | Error():
                        if cancel is not None and cancel.is_set():
                            raise JobCancelled
                        images = images_of(message, _NAME)[0]
                        for image in images:
                            image.meta["replica"] = self.replica_pid
                        return images
                    case _:
                        raise _unexpected(message)
        except asyncio.CancelledError:
            # Our caller gave up; stop the replica's work instead of finishing for nobody.
            response.cancel()
            raise
        finally:
            if cancelled is not None:
                cancelled.cancel()

    async def flags(self, model: str, images: Sequence[bytes]) -> list[bool]:
        """Run a replica's safety check (the one `model`'s images get) on images a user gave.

        Raises:
            BackendUnavailable: the cluster failed, or the replica's checker could not run.
        """
        local = self._catalog.get("model", model).local or ""
        match message := await self._ask("flags", local, list(images)):
            case Checked(flags=flags) if len(flags) == len(images):
                return list(flags)
        raise _unexpected(message)

    @property
    def guide_preprocessors(self) -> frozenset[Preprocess]:
        """Return the guide maps the replicas make: those of catalog annotators whose files are in place.

        Looked up under this bot's data dir, as the replicas find ``./`` catalog paths at the same place.
        """
        return preprocessors(self._catalog, self._data_dir)

    async def make_guide(self, image: bytes, preprocess: Preprocess, width: int, height: int) -> GuideMap:
        """Return the `preprocess` map of `image` at `width`×`height`, made by a catalog annotator on a replica.

        Raises:
            InvalidOption: no catalog annotator for `preprocess` has its files in place.
            BackendUnavailable: the cluster or the annotator failed.
        """
        folder = annotator_folder(self._catalog, self._data_dir, preprocess)
        match message := await self._ask("guide", str(folder), preprocess, image, width, height):
            case Guided(image=made):
                return GuideMap(made)
        raise _unexpected(message)

    def check_describe(self) -> None:
        """Refuse ``/describe`` while no catalog captioner has its files in place (before the image is read).

        Looked up under this bot's data dir, as the replicas find ``./`` catalog paths at the same place.

        Raises:
            InvalidOption: option ``describe``, one sentence.
        """
        captioner_folder(self._catalog, self._data_dir)

    async def describe(self, image: bytes) -> Description:
        """Return what `image` (a checked PNG) shows, in the words of a catalog captioner on a replica; free.

        Raises:
            InvalidOption: no catalog captioner has its files in place.
            BackendUnavailable: the cluster or the captioner failed.
        """
        folder = captioner_folder(self._catalog, self._data_dir)
        match message := await self._ask("describe", str(folder), image, doing=DESCRIBING):
            case Described(text=text, more=more):
                return Description(text, more=more)
        raise _unexpected(message, DESCRIBING)

    async def _ask(self, method: str, *args: Any, doing: str = "make the image") -> ToBot:
        """Call a replica method outside any job and return its answer; an `Error` answer raises its sentence.

        `doing` is what a failure could not do, for its sentence ("The ray backend could not …").
        """
        await self.start()
        try:
            frame = await getattr(self._handle, method).remote(*args)
        except (RayError, RayServeException) as error:
            raise BackendUnavailable(_NAME, f"the Ray cluster failed ({type(error).__name__})", doing=doing) from error
        message = _read(frame, doing)
        if isinstance(message, Error):
            raise BackendUnavailable(_NAME, message.message, doing=doing)
        return message

    async def aclose(self) -> None:
        """Forget the handle; the cluster and its replicas keep running for other bots."""
        self._handle = None
        if self._joined:
            self._joined = False
            with contextlib.suppress(Exception):
                await asyncio.to_thread(ray.shutdown)


def _drop_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _read(frame: dict[str, Any], doing: str = "make the image") -> ToBot:
    try:
        return from_worker(frame.get("frame", b""))
    except ProtocolError as error:
        reason = "the replica answered with something this bot cannot read"
        raise BackendUnavailable(_NAME, reason, doing=doing) from error


def _unexpected(message: ToBot, doing: str = "make the image") -> BackendUnavailable:
    return BackendUnavailable(_NAME, f"the replica answered with an unexpected '{message.op}' frame", doing=doing)

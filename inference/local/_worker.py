"""The worker process: owns torch and the GPU, runs jobs the bot sends over stdin.

Started by `LocalBackend` as ``python -m inference.local._worker --data-dir DIR``.
Frames (see `_protocol`) come in on stdin and go out on the original stdout;
file descriptor 1 and `sys.stdout` are pointed at stderr first, so a library
that prints cannot corrupt the stream. stderr passes through to the bot's.

A reader thread takes frames off stdin while the main thread runs jobs, so a
``cancel`` frame reaches the running job, which stops at its next step. When
stdin closes (the bot exited or closed us), the running job is cancelled and
the worker exits.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bot.config import CoreSettings, LocalWorkerSettings
from bot.describe import DESCRIPTIONS
from bot.logs import setup_logging
from inference.local._annotators import Annotators
from inference.local._captioner import Captioners
from inference.local._job import WorkerJob
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
    JobMessage,
    Progress,
    ProtocolError,
    Ready,
    Result,
    Shutdown,
    Stage,
    Stats,
    StatsRequest,
    from_bot,
    read_frame,
    write_frame,
)

if TYPE_CHECKING:
    from inference.local._speed import Levers

__all__ = [
    "check_images",
    "describe_image",
    "levers",
    "main",
    "make_guide",
    "make_runner",
    "quiet_libraries",
    "run_jobs",
]

# What the reader thread hands the main one: requests it answers in turn (None: stdin closed).
_Inbox = queue.Queue[Generate | StatsRequest | CheckRequest | GuideRequest | DescribeRequest | None]


def main(argv: list[str] | None = None) -> int:
    """Serve jobs until stdin closes or a ``shutdown`` frame arrives; return the exit status."""
    args = _parse(argv)
    frames_in, frames_out = _claim_stdio()
    # The bot's format, level and secret redaction: the worker's lines share the bot's stderr.
    setup_logging(CoreSettings(), sys.stderr)
    try:
        runner = make_runner(
            args.data_dir,
            args.device,
            args.dtype,
            safety_checker=args.safety_checker,
            preview_decoder=args.preview_decoder,
        )
    except Exception as error:
        traceback.print_exc()
        write_frame(frames_out, Fatal(f"the worker could not start ({type(error).__name__})"))
        return 1
    try:
        write_frame(frames_out, Ready(str(runner.device), str(runner.dtype), os.getpid()))
    except BrokenPipeError:
        return 0  # the bot stopped while this worker started
    annotators = Annotators(runner.device)
    captioners = Captioners(runner.device, runner.dtype)
    inbox: _Inbox = queue.Queue()
    cancels: dict[int, threading.Event] = {}
    lock = threading.Lock()
    reader = threading.Thread(target=_read_loop, args=(frames_in, inbox, cancels, lock), name="frames-in", daemon=True)
    reader.start()
    try:
        while (message := inbox.get()) is not None:
            match message:
                case Generate(id=job_id, jobs=jobs):
                    with lock:
                        cancel = cancels[job_id]
                    try:
                        run_jobs(runner, job_id, jobs, cancel.is_set, lambda reply: write_frame(frames_out, reply))
                    finally:
                        with lock:
                            cancels.pop(job_id, None)
                case StatsRequest(id=request_id):
                    write_frame(frames_out, Stats(request_id, runner.stats()))
                case CheckRequest(id=request_id, model=model, images=images):
                    write_frame(frames_out, check_images(runner, request_id, model, images))
                case GuideRequest():
                    write_frame(frames_out, make_guide(annotators, message))
                case DescribeRequest():
                    write_frame(frames_out, describe_image(captioners, message))
    except BrokenPipeError:
        return 0  # the bot is gone; nobody is left to answer
    return 0


def check_images(runner: Any, request_id: int, model: str, images: Sequence[bytes]) -> Checked | Error:
    """Run the safety check on a user's input images; a checker that cannot run is an `Error`, not a verdict."""
    try:
        return Checked(request_id, tuple(runner.flags(model, list(images))))
    except Exception:
        traceback.print_exc()
        reason = "the safety checker could not check the image (are its files downloaded? see IMAGEBOT_SAFETY_CHECKER)"
        return Error(request_id, "failed", reason)


def make_guide(annotators: Annotators, request: GuideRequest) -> Guided | Error:
    """Make a guide map with a catalog annotator; one that cannot run is an `Error`, not a map."""
    try:
        image = annotators.make(Path(request.folder), request.preprocess, request.image, request.width, request.height)
    except Exception as failure:
        traceback.print_exc()
        reason = (
            f"the {request.preprocess} annotator could not make the guide map ({type(failure).__name__});"
            " imagebot doctor checks its files"
        )
        return Error(request.id, "failed", reason)
    return Guided(request.id, image)


def describe_image(captioners: Captioners, request: DescribeRequest) -> Described | Error:
    """Put an image into words with a catalog captioner; one that cannot run is an `Error`, not a caption."""
    try:
        first, *more = captioners.describe(Path(request.folder), request.image, DESCRIPTIONS)
    except Exception as failure:
        traceback.print_exc()
        reason = f"the captioner failed ({type(failure).__name__}); imagebot doctor checks its files"
        return Error(request.id, "failed", reason)
    return Described(request.id, first, more=tuple(more))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inference.local._worker")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    # Unset: IMAGEBOT_SAFETY_CHECKER (the worker is an entry point; the bot's .env applies here too).
    parser.add_argument("--safety-checker", default=None)
    parser.add_argument("--preview-decoder", default=None)  # unset: IMAGEBOT_PREVIEW_DECODER
    return parser.parse_args(argv)


def _claim_stdio() -> tuple[IO[bytes], IO[bytes]]:
    """Take fds 0 and 1 for the frames; leave the process a stdout that goes to stderr."""
    frames_in = os.fdopen(os.dup(0), "rb")
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    return frames_in, frames_out


def make_runner(
    data_dir: Path,
    device: str,
    dtype: str,
    *,
    safety_checker: str | None = None,
    preview_decoder: str | None = None,
    speed: Levers | None = None,
) -> Any:
    """Return an `SDXLRunner`, with the libraries' chatter about LoRAs turned down (imports torch).

    `safety_checker` None reads ``IMAGEBOT_SAFETY_CHECKER`` (a ``module:callable`` value is imported
    here, in the worker: see `inference.local._safety.load_checker`); `preview_decoder` None reads
    ``IMAGEBOT_PREVIEW_DECODER``; `speed` None the levers the settings name (`levers`).
    """
    quiet_libraries(verbose=CoreSettings().log_level.upper() == "DEBUG")
    from inference.local._pipeline import SDXLRunner

    settings = LocalWorkerSettings()
    return SDXLRunner(
        data_dir,
        device,
        dtype,
        os.environ.get("HF_TOKEN") or None,
        safety_checker=safety_checker or settings.safety_checker,
        preview_decoder=preview_decoder or settings.preview_decoder,
        levers=speed or levers(settings),
    )


def levers(settings: LocalWorkerSettings) -> Levers:
    """Return the `Levers` that a `LocalWorkerSettings` names (the worker's and the Ray replicas')."""
    from inference.local._speed import Levers

    return Levers(
        channels_last=settings.channels_last,
        fuse_qkv=settings.fuse_qkv,
        compile=settings.compile,
        compile_mode=settings.compile_mode,
        offload=settings.offload,
        vae_tiling=settings.vae_tiling,
    )


def quiet_libraries(*, verbose: bool) -> None:
    """Turn the libraries' warnings down, and their progress bars off unless the log level is DEBUG.

    Both warn at length about LoRAs without text-encoder weights and, without torchvision, about
    a PIL fallback; their bars ("Loading pipeline components…", "Writing model shards…") land in
    the bot's stderr between its log lines. None of it is anything an operator can act on; errors
    still raise. Called before diffusers' pipelines are imported: transformers warns at import.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # diffusers passes the hub an argument it deprecated; the hub says so on every download it tries.
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks", category=UserWarning)
    # peft's note on every second LoRA loaded side by side, which is how LoRAs combine.
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    if not verbose:
        transformers_logging.disable_progress_bar()  # the hub's download bars too
        diffusers_logging.disable_progress_bar()


def _read_loop(
    frames_in: IO[bytes],
    inbox: _Inbox,
    cancels: dict[int, threading.Event],
    lock: threading.Lock,
) -> None:
    """Route frames from the bot: jobs to the inbox, cancels straight to the job's event."""
    try:
        while (message := read_frame(frames_in, from_bot)) is not None:
            match message:
                case Shutdown():
                    break
                case Cancel(id=job_id):
                    with lock:
                        event = cancels.get(job_id)
                    if event is not None:
                        event.set()
                case Generate(id=job_id):
                    with lock:
                        cancels[job_id] = threading.Event()
                    inbox.put(message)
                case StatsRequest() | CheckRequest() | GuideRequest() | DescribeRequest():
                    inbox.put(message)
    except (ProtocolError, OSError):
        traceback.print_exc()
    finally:
        # Whoever closed our stdin wants nothing more: stop the running job too.
        with lock:
            for event in cancels.values():
                event.set()
        inbox.put(None)


def run_jobs(
    runner: Any,
    job_id: int,
    jobs: Sequence[WorkerJob],
    should_cancel: Callable[[], bool],
    emit: Callable[[JobMessage], None],
) -> None:
    """Run compatible jobs on `runner`; emit `Progress` messages, then a `Result` or an `Error`.

    The one place where the worker's outcomes become messages: the worker process writes
    them to its stdout, a Ray Serve replica (`inference.ray_serve`) streams them back.
    """
    import torch

    from inference.local._pipeline import JobFailed, RunCancelled

    def progress(stage: Stage, step: int, total: int, preview: bytes | None) -> None:
        emit(Progress(job_id, stage, step, total, preview))

    def error(kind: str, text: str, option: str | None = None, restart: bool = False) -> None:
        emit(Error(job_id, kind, text, option, restart))

    if should_cancel():
        error("cancelled", "cancelled before it started")
        return
    try:
        results = runner.run_batch(list(jobs), on_progress=progress, should_cancel=should_cancel)
    except RunCancelled:
        error("cancelled", "cancelled")
    except JobFailed as failure:
        error(failure.kind, failure.message, failure.option)
    except torch.cuda.OutOfMemoryError:
        traceback.print_exc()
        torch.cuda.empty_cache()
        # The bot restarts the worker (which frees what the failed job held) and tries once more.
        error("oom", "the GPU ran out of memory", restart=True)
    except BrokenPipeError:
        raise
    except Exception as failure:
        traceback.print_exc()
        # Who knows what state an unexpected error left behind: ask for a fresh worker.
        error("failed", f"the worker failed ({type(failure).__name__})", restart=True)
    else:
        emit(Result(job_id, tuple(tuple(images) for images in results)))


if __name__ == "__main__":
    sys.exit(main())

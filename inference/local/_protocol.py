"""Messages between the bot and the worker process, framed over the worker's stdin and stdout.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON holding one object with an ``op``. Binary values (image bytes) travel as
base64 strings. Both sides share these helpers: the bot reads with asyncio,
the worker with blocking file objects.

Each op is a frozen pydantic dataclass: both sides build those and match on
their types, and pydantic writes and checks the JSON (`encode`, `from_bot`,
`from_worker`), strictly: a missing key, a value of the wrong type (a bool is
no int, a string no number) or bytes that are not base64 is a `ProtocolError`
naming the key. Keys a message does not know are ignored (a Ray replica signs
its frames with its pid). The ``stats`` op means a request one way and its
answer the other.

bot -> worker (`ToWorker`)::

    Generate      {"id": 1, "jobs": [{...}], "op": "generate"}  # WorkerJob of each; several share a batch_key
    Cancel        {"id": 1, "op": "cancel"}
    StatsRequest  {"id": 2, "op": "stats"}
    CheckRequest  {"id": 3, "model": "tiny:base", "images": [(base64 PNG), ...], "op": "check"}  # a user's inputs
    GuideRequest  {"id": 4, "folder": "/data/annotators/x", "preprocess": "depth", "image": (base64 PNG),
                   "width": 1024, "height": 1024, "op": "guide"}    # a ControlNet guide map, by a catalog annotator
    DescribeRequest {"id": 5, "folder": "/data/captioners/x", "image": (base64 PNG),
                     "op": "describe"}    # an image in words, by a catalog captioner
    Shutdown      {"op": "shutdown"}

worker -> bot (`ToBot`)::

    Ready     {"device": "cpu", "dtype": "float32", "pid": 123, "op": "ready"}
    Progress  {"id": 1, "stage": "base", "step": 3, "total": 24, "preview": (base64 WebP or null), "op": "progress"}
    Result    {"id": 1, "results": [[{"index", "seed", "data" (base64), "width", "height", "meta", "nsfw"}]],
               "op": "result"}
    Error     {"id": 1, "kind": "cancelled" | "invalid" | "oom" | "failed", "message": "...", "option": ...,
               "restart": false, "op": "error"}     # restart: the worker's state is suspect
    Stats     {"id": 2, "loads": {"pipeline": 1, ...}, "op": "stats"}
    Checked   {"id": 3, "flags": [false, true], "op": "checked"}
    Guided    {"id": 4, "image": (base64 PNG), "op": "guided"}    # or an Error with that id
    Described {"id": 5, "text": "a fox in the snow", "more": ["a red fox on snow"],
               "op": "described"}                 # or an Error with that id
    Fatal     {"message": "...", "op": "fatal"}    # the worker could not start
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import KW_ONLY
from typing import IO, Annotated, Literal, TypeVar

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from bot.request import GeneratedImage
from inference.local._job import WorkerJob

__all__ = [
    "MAX_FRAME",
    "Cancel",
    "CheckRequest",
    "Checked",
    "DescribeRequest",
    "Described",
    "Error",
    "Fatal",
    "Generate",
    "GuideRequest",
    "Guided",
    "JobMessage",
    "Message",
    "Progress",
    "ProtocolError",
    "Ready",
    "Result",
    "Shutdown",
    "Stage",
    "Stats",
    "StatsRequest",
    "ToBot",
    "ToWorker",
    "encode",
    "encode_frame",
    "from_bot",
    "from_worker",
    "read_frame",
    "read_frame_async",
    "write_frame",
]

_HEADER = struct.Struct(">I")
# Four 2048² PNGs in base64 stay far below this; a larger length means a corrupt stream.
MAX_FRAME = 256 * 1024 * 1024

# The pipeline calls a job makes, in order; progress names the one it is in.
Stage = Literal["base", "refiner"]

_M = TypeVar("_M")


class ProtocolError(Exception):
    """A frame cannot be read: the stream is not frames (something else wrote to it), or not a known message."""


# -- messages ---------------------------------------------------------------------------------------
# Strict: the other side is our own code, so anything pydantic would have to coerce is a bug there.
# Each op is the last field and keyword-only, so messages are built and matched by their fields alone.
_STRICT = ConfigDict(strict=True, ser_json_bytes="base64", val_json_bytes="base64")


@dataclass(frozen=True, slots=True, config=_STRICT)
class Generate:
    """Make the images of compatible jobs (one `batch_key`) in one pipeline call."""

    id: int
    jobs: tuple[WorkerJob, ...]
    _: KW_ONLY
    op: Literal["generate"] = "generate"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Cancel:
    """Stop the job `id` at its next step."""

    id: int
    _: KW_ONLY
    op: Literal["cancel"] = "cancel"


@dataclass(frozen=True, slots=True, config=_STRICT)
class StatsRequest:
    """Ask for the worker's load counters; answered by `Stats` with the same `id`."""

    id: int
    _: KW_ONLY
    op: Literal["stats"] = "stats"


@dataclass(frozen=True, slots=True, config=_STRICT)
class CheckRequest:
    """Run the safety check of the model `model` (a local id) on images a user gave; answered by `Checked`."""

    id: int
    model: str
    images: tuple[bytes, ...]
    _: KW_ONLY
    op: Literal["check"] = "check"


@dataclass(frozen=True, slots=True, config=_STRICT)
class GuideRequest:
    """Make the `preprocess` map of `image` at `width`×`height` with the annotator in `folder`; answered by `Guided`."""

    id: int
    folder: str
    preprocess: str
    image: bytes
    width: int
    height: int
    _: KW_ONLY
    op: Literal["guide"] = "guide"


@dataclass(frozen=True, slots=True, config=_STRICT)
class DescribeRequest:
    """Put `image` (a checked PNG) into words with the captioner in `folder`; answered by `Described`."""

    id: int
    folder: str
    image: bytes
    _: KW_ONLY
    op: Literal["describe"] = "describe"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Shutdown:
    """Exit once the running job is done."""

    _: KW_ONLY
    op: Literal["shutdown"] = "shutdown"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Ready:
    """The worker has started (imported torch) and waits for jobs."""

    device: str
    dtype: str
    pid: int
    _: KW_ONLY
    op: Literal["ready"] = "ready"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Progress:
    """A step of the job `id` is done; `preview` is a small WebP of the latents, every few steps."""

    id: int
    stage: Stage
    step: int
    total: int
    preview: bytes | None = None
    _: KW_ONLY
    op: Literal["progress"] = "progress"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Result:
    """The images of the job `id`: one tuple per job of its `Generate`, in order."""

    id: int
    results: tuple[tuple[GeneratedImage, ...], ...]
    _: KW_ONLY
    op: Literal["result"] = "result"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Error:
    """The job `id` ended without images.

    `kind` is ``cancelled``, ``invalid`` (the user's choice; `option` names it), ``oom`` or ``failed``;
    `message` is one sentence for the user; `restart`: the worker's state is suspect.
    """

    id: int
    kind: str
    message: str
    option: str | None = None
    restart: bool = False
    _: KW_ONLY
    op: Literal["error"] = "error"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Stats:
    """The answer to `StatsRequest`: how often the worker loaded each kind of weights."""

    id: int
    loads: dict[str, int]
    _: KW_ONLY
    op: Literal["stats"] = "stats"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Checked:
    """The answer to `CheckRequest`: per image, whether the safety check flags it."""

    id: int
    flags: tuple[bool, ...]
    _: KW_ONLY
    op: Literal["checked"] = "checked"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Guided:
    """The answer to `GuideRequest`: the guide map, a PNG."""

    id: int
    image: bytes
    _: KW_ONLY
    op: Literal["guided"] = "guided"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Described:
    """The answer to `DescribeRequest`: the captioner's words (none, when it wrote only made-up ones), and others."""

    id: int
    text: str
    _: KW_ONLY
    more: tuple[str, ...] = ()
    op: Literal["described"] = "described"


@dataclass(frozen=True, slots=True, config=_STRICT)
class Fatal:
    """The worker could not start; `message` says why, in one sentence."""

    message: str
    _: KW_ONLY
    op: Literal["fatal"] = "fatal"


ToWorker = Generate | Cancel | StatsRequest | CheckRequest | GuideRequest | DescribeRequest | Shutdown
ToBot = Ready | Progress | Result | Error | Stats | Checked | Guided | Described | Fatal
Message = ToWorker | ToBot
# What `run_jobs` reports of one pipeline call: progress, then a result or an error.
JobMessage = Progress | Result | Error

_TO_WORKER: TypeAdapter[ToWorker] = TypeAdapter(Annotated[ToWorker, Field(discriminator="op")])
_TO_BOT: TypeAdapter[ToBot] = TypeAdapter(Annotated[ToBot, Field(discriminator="op")])
# Writing needs no discriminator: pydantic picks each message's own schema by its class.
_ANY: TypeAdapter[Message] = TypeAdapter(Message)


def encode(message: Message) -> bytes:
    """Return the JSON a frame holds for `message` (what a Ray replica sends as it is)."""
    return _ANY.dump_json(message)


def from_bot(payload: bytes | str) -> ToWorker:
    """Return the message of a frame's JSON the bot sent (what the worker reads).

    Raises:
        ProtocolError: not JSON, not an op the bot sends, or a key the message needs is missing or mistyped.
    """
    return _decode(payload, _TO_WORKER, "the bot")


def from_worker(payload: bytes | str) -> ToBot:
    """Return the message of a frame's JSON the worker sent (what the bot reads).

    Raises:
        ProtocolError: not JSON, not an op the worker sends, or a key the message needs is missing or mistyped.
    """
    return _decode(payload, _TO_BOT, "the worker")


def _decode(payload: bytes | str, adapter: TypeAdapter[_M], sender: str) -> _M:
    try:
        return adapter.validate_json(payload)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        kind, where, context = first["type"], first["loc"], first.get("ctx", {})
        if kind == "json_invalid":
            raise ProtocolError(f"a frame is not JSON: {first['msg']}") from None
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            raise ProtocolError(f"{sender} sends no frame with op {context.get('tag')!r}") from None
        if not where:  # JSON, but not an object
            raise ProtocolError("a frame is not an object with an 'op'") from None
        key = ".".join(map(str, where[1:]))
        raise ProtocolError(f"'{where[0]}' frame: '{key}': {first['msg']}") from None


# -- frames -----------------------------------------------------------------------------------------


def encode_frame(message: Message) -> bytes:
    """Return one frame holding `message`."""
    payload = encode(message)
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(payload)} bytes is over the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(payload)) + payload


def _length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame claims {length} bytes, over the {MAX_FRAME}-byte limit")
    return int(length)


def write_frame(stream: IO[bytes], message: Message) -> None:
    """Write one frame to a blocking binary stream and flush it."""
    stream.write(encode_frame(message))
    stream.flush()


def read_frame(stream: IO[bytes], decode: Callable[[bytes], _M]) -> _M | None:
    """Read one frame from a blocking binary stream; None at a clean end of stream.

    Args:
        stream: where the frames come from.
        decode: `from_bot` or `from_worker`, whichever side wrote the stream.
    """
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    length = _length(header)
    payload = _read_exactly(stream, length)
    if payload is None:
        raise ProtocolError("the stream ended inside a frame")
    return decode(payload)


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if remaining == size:
                return None
            raise ProtocolError("the stream ended inside a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


async def read_frame_async(reader: asyncio.StreamReader, decode: Callable[[bytes], _M]) -> _M | None:
    """Read one frame from an asyncio stream; None at a clean end of stream (`decode` as for `read_frame`)."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise ProtocolError("the stream ended inside a frame") from error
        return None
    length = _length(header)
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError as error:
        raise ProtocolError("the stream ended inside a frame") from error
    return decode(payload)

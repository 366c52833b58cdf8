"""Messages between the bot and the worker process, framed over the worker's stdin and stdout.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON holding one object with an ``op``. Binary values (image bytes) travel as
base64 strings. Both sides share these helpers: the bot reads with asyncio,
the worker with blocking file objects.

Each op is a frozen dataclass: both sides build those and match on their
types, and only this module knows the JSON keys. `Message.to_dict` gives the
object a frame holds; `from_bot` and `from_worker` turn one back into the
message (the ``stats`` op means a request one way and its answer the other).

bot -> worker (`ToWorker`)::

    Generate      {"op": "generate", "id": 1, "jobs": [{...}]}  # WorkerJob.to_dict() of each; several share a batch_key
    Cancel        {"op": "cancel", "id": 1}
    StatsRequest  {"op": "stats", "id": 2}
    CheckRequest  {"op": "check", "id": 3, "model": "tiny:base", "images": [(base64 PNG), ...]}  # a user's inputs
    GuideRequest  {"op": "guide", "id": 4, "folder": "/data/annotators/x", "preprocess": "depth", "image": (base64 PNG),
                   "width": 1024, "height": 1024}    # a ControlNet guide map, made by a catalog annotator
    Shutdown      {"op": "shutdown"}

worker -> bot (`ToBot`)::

    Ready     {"op": "ready", "device": "cpu", "dtype": "float32", "pid": 123}
    Progress  {"op": "progress", "id": 1, "stage": "base", "step": 3, "total": 24, "preview": (base64 WebP, some steps)}
    Result    {"op": "result", "id": 1, "results": [[{"index", "seed", "data" (base64), "width", "height", "meta",
                                                      "nsfw"}]]}
    Error     {"op": "error", "id": 1, "kind": "cancelled" | "invalid" | "oom" | "failed", "message": "...",
               "option": ..., "restart": false}     # restart: the worker's state is suspect
    Stats     {"op": "stats", "id": 2, "loads": {"pipeline": 1, ...}}
    Checked   {"op": "checked", "id": 3, "flags": [false, true]}
    Guided    {"op": "guided", "id": 4, "image": (base64 PNG)}    # or an Error with that id
    Fatal     {"op": "fatal", "message": "..."}    # the worker could not start

A frame with an op the reading side does not expect, or without a key (or
with a value of the wrong type) that its message needs, raises
`ProtocolError`. Keys a message does not know are ignored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, ClassVar, Literal, TypeVar, get_args

from pydantic import ValidationError

from bot.request import GeneratedImage
from inference.local._job import WorkerJob

__all__ = [
    "MAX_FRAME",
    "Cancel",
    "CheckRequest",
    "Checked",
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
    "decode_bytes",
    "encode_bytes",
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
_STAGES: tuple[Stage, ...] = get_args(Stage)

_T = TypeVar("_T")
_M = TypeVar("_M")


class ProtocolError(Exception):
    """A frame cannot be read: the stream is not frames (something else wrote to it), or not a known message."""


# -- messages ---------------------------------------------------------------------------------------


class Message:
    """One frame's content; each op is a frozen dataclass below."""

    __slots__ = ()
    op: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Generate(Message):
    """Make the images of compatible jobs (one `batch_key`) in one pipeline call."""

    op: ClassVar[str] = "generate"
    id: int
    jobs: tuple[WorkerJob, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op, "id": self.id, "jobs": [job.to_dict() for job in self.jobs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Generate:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        jobs = _field(data, "jobs", list, cls.op)
        try:
            return cls(_field(data, "id", int, cls.op), tuple(WorkerJob.from_dict(job) for job in jobs))
        except ValidationError as error:
            raise ProtocolError(f"'{cls.op}' frame: an invalid job ({error.error_count()} errors)") from None


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """Stop the job `id` at its next step."""

    op: ClassVar[str] = "cancel"
    id: int

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op, "id": self.id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cancel:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        return cls(_field(data, "id", int, cls.op))


@dataclass(frozen=True, slots=True)
class StatsRequest(Message):
    """Ask for the worker's load counters; answered by `Stats` with the same `id`."""

    op: ClassVar[str] = "stats"
    id: int

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op, "id": self.id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StatsRequest:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        return cls(_field(data, "id", int, cls.op))


@dataclass(frozen=True, slots=True)
class CheckRequest(Message):
    """Run the safety check of the model `model` (a local id) on images a user gave; answered by `Checked`."""

    op: ClassVar[str] = "check"
    id: int
    model: str
    images: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op, "id": self.id, "model": self.model, "images": [encode_bytes(i) for i in self.images]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckRequest:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        images = _field(data, "images", list, cls.op)
        if not all(isinstance(image, str) for image in images):
            raise ProtocolError(f"'{cls.op}' frame: 'images' are not encoded images")
        return cls(
            _field(data, "id", int, cls.op),
            _field(data, "model", str, cls.op),
            tuple(_bytes(image, "images", cls.op) for image in images),
        )


@dataclass(frozen=True, slots=True)
class GuideRequest(Message):
    """Make the `preprocess` map of `image` at `width`×`height` with the annotator in `folder`; answered by `Guided`."""

    op: ClassVar[str] = "guide"
    id: int
    folder: str
    preprocess: str
    image: bytes
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {
            "op": self.op,
            "id": self.id,
            "folder": self.folder,
            "preprocess": self.preprocess,
            "image": encode_bytes(self.image),
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuideRequest:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        return cls(
            _field(data, "id", int, cls.op),
            _field(data, "folder", str, cls.op),
            _field(data, "preprocess", str, cls.op),
            _bytes(_field(data, "image", str, cls.op), "image", cls.op),
            _field(data, "width", int, cls.op),
            _field(data, "height", int, cls.op),
        )


@dataclass(frozen=True, slots=True)
class Shutdown(Message):
    """Exit once the running job is done."""

    op: ClassVar[str] = "shutdown"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shutdown:
        """Return the message a frame's object holds."""
        return cls()


@dataclass(frozen=True, slots=True)
class Ready(Message):
    """The worker has started (imported torch) and waits for jobs."""

    op: ClassVar[str] = "ready"
    device: str
    dtype: str
    pid: int

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op, "device": self.device, "dtype": self.dtype, "pid": self.pid}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ready:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        return cls(
            _field(data, "device", str, cls.op), _field(data, "dtype", str, cls.op), _field(data, "pid", int, cls.op)
        )


@dataclass(frozen=True, slots=True)
class Progress(Message):
    """A step of the job `id` is done; `preview` is a small WebP of the latents, every few steps."""

    op: ClassVar[str] = "progress"
    id: int
    stage: Stage
    step: int
    total: int
    preview: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first (no ``preview`` key without one)."""
        frame: dict[str, Any] = {
            "op": self.op,
            "id": self.id,
            "stage": self.stage,
            "step": self.step,
            "total": self.total,
        }
        if self.preview is not None:
            frame["preview"] = encode_bytes(self.preview)
        return frame

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Progress:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        preview = _optional(data, "preview", str, cls.op)
        return cls(
            _field(data, "id", int, cls.op),
            _stage(_field(data, "stage", str, cls.op), cls.op),
            _field(data, "step", int, cls.op),
            _field(data, "total", int, cls.op),
            _bytes(preview, "preview", cls.op) if preview else None,
        )


@dataclass(frozen=True, slots=True)
class Result(Message):
    """The images of the job `id`: one tuple per job of its `Generate`, in order."""

    op: ClassVar[str] = "result"
    id: int
    results: tuple[tuple[GeneratedImage, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {
            "op": self.op,
            "id": self.id,
            "results": [
                [
                    {
                        "index": image.index,
                        "seed": image.seed,
                        "data": encode_bytes(image.data),
                        "width": image.width,
                        "height": image.height,
                        "meta": image.meta,
                        "nsfw": image.nsfw,
                    }
                    for image in images
                ]
                for images in self.results
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        results = _field(data, "results", list, cls.op)
        if not all(isinstance(images, list) and all(isinstance(image, dict) for image in images) for images in results):
            raise ProtocolError(f"'{cls.op}' frame: 'results' is not a list of lists of images")
        return cls(_field(data, "id", int, cls.op), tuple(tuple(map(cls._image, images)) for images in results))

    @classmethod
    def _image(cls, image: Mapping[str, Any]) -> GeneratedImage:
        return GeneratedImage(
            index=_field(image, "index", int, cls.op),
            seed=_field(image, "seed", int, cls.op),
            data=_bytes(_field(image, "data", str, cls.op), "data", cls.op),
            width=_field(image, "width", int, cls.op),
            height=_field(image, "height", int, cls.op),
            meta=_field(image, "meta", dict, cls.op),
            nsfw=_optional(image, "nsfw", bool, cls.op),
        )


@dataclass(frozen=True, slots=True)
class Error(Message):
    """The job `id` ended without images.

    `kind` is ``cancelled``, ``invalid`` (the user's choice; `option` names it), ``oom`` or ``failed``;
    `message` is one sentence for the user; `restart`: the worker's state is suspect.
    """

    op: ClassVar[str] = "error"
    id: int
    kind: str
    message: str
    option: str | None = None
    restart: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {
            "op": self.op,
            "id": self.id,
            "kind": self.kind,
            "message": self.message,
            "option": self.option,
            "restart": self.restart,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Error:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        return cls(
            _field(data, "id", int, cls.op),
            _field(data, "kind", str, cls.op),
            _field(data, "message", str, cls.op),
            _optional(data, "option", str, cls.op),
            bool(_optional(data, "restart", bool, cls.op)),
        )


@dataclass(frozen=True, slots=True)
class Stats(Message):
    """The answer to `StatsRequest`: how often the worker loaded each kind of weights."""

    op: ClassVar[str] = "stats"
    id: int
    loads: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op, "id": self.id, "loads": self.loads}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        loads = _field(data, "loads", dict, cls.op)
        if not all(isinstance(count, int) and not isinstance(count, bool) for count in loads.values()):
            raise ProtocolError(f"'{cls.op}' frame: 'loads' are not counts")
        return cls(_field(data, "id", int, cls.op), {str(kind): count for kind, count in loads.items()})


@dataclass(frozen=True, slots=True)
class Checked(Message):
    """The answer to `CheckRequest`: per image, whether the safety check flags it."""

    op: ClassVar[str] = "checked"
    id: int
    flags: tuple[bool, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op, "id": self.id, "flags": list(self.flags)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checked:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        flags = _field(data, "flags", list, cls.op)
        if not all(isinstance(flag, bool) for flag in flags):
            raise ProtocolError(f"'{cls.op}' frame: 'flags' are not verdicts")
        return cls(_field(data, "id", int, cls.op), tuple(flags))


@dataclass(frozen=True, slots=True)
class Guided(Message):
    """The answer to `GuideRequest`: the guide map, a PNG."""

    op: ClassVar[str] = "guided"
    id: int
    image: bytes

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op, "id": self.id, "image": encode_bytes(self.image)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Guided:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        return cls(_field(data, "id", int, cls.op), _bytes(_field(data, "image", str, cls.op), "image", cls.op))


@dataclass(frozen=True, slots=True)
class Fatal(Message):
    """The worker could not start; `message` says why, in one sentence."""

    op: ClassVar[str] = "fatal"
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready object a frame holds, ``op`` first."""
        return {"op": self.op, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fatal:
        """Return the message a frame's object holds; raise `ProtocolError` if it is malformed."""
        return cls(_field(data, "message", str, cls.op))


ToWorker = Generate | Cancel | StatsRequest | CheckRequest | GuideRequest | Shutdown
ToBot = Ready | Progress | Result | Error | Stats | Checked | Guided | Fatal
# What `run_jobs` reports of one pipeline call: progress, then a result or an error.
JobMessage = Progress | Result | Error

_TO_WORKER: dict[str, Callable[[Mapping[str, Any]], ToWorker]] = {
    kind.op: kind.from_dict for kind in (Generate, Cancel, StatsRequest, CheckRequest, GuideRequest, Shutdown)
}
_TO_BOT: dict[str, Callable[[Mapping[str, Any]], ToBot]] = {
    kind.op: kind.from_dict for kind in (Ready, Progress, Result, Error, Stats, Checked, Guided, Fatal)
}


def from_bot(data: Mapping[str, Any]) -> ToWorker:
    """Return the message of a frame the bot sent (what the worker reads).

    Raises:
        ProtocolError: the op is not one the bot sends, or a key the message needs is missing or mistyped.
    """
    return _message(data, _TO_WORKER, "the bot")


def from_worker(data: Mapping[str, Any]) -> ToBot:
    """Return the message of a frame the worker sent (what the bot reads).

    Raises:
        ProtocolError: the op is not one the worker sends, or a key the message needs is missing or mistyped.
    """
    return _message(data, _TO_BOT, "the worker")


def _message(data: Mapping[str, Any], kinds: Mapping[str, Callable[[Mapping[str, Any]], _M]], sender: str) -> _M:
    op = data.get("op")
    decode = kinds.get(op) if isinstance(op, str) else None
    if decode is None:
        raise ProtocolError(f"{sender} sends no frame with op {op!r}")
    return decode(data)


def _field(data: Mapping[str, Any], key: str, kind: type[_T], op: str) -> _T:
    """Return ``data[key]``, which must be a `kind` (a bool is no int here)."""
    if key not in data:
        raise ProtocolError(f"'{op}' frame: no '{key}'")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(f"'{op}' frame: '{key}' is {type(value).__name__}, not {kind.__name__}")
    return value


def _optional(data: Mapping[str, Any], key: str, kind: type[_T], op: str) -> _T | None:
    """Return ``data[key]`` as `_field` does, or None when the key is missing or null."""
    return None if data.get(key) is None else _field(data, key, kind, op)


def _stage(text: str, op: str) -> Stage:
    for stage in _STAGES:
        if text == stage:
            return stage
    raise ProtocolError(f"'{op}' frame: 'stage' is not one of {', '.join(_STAGES)}")


def _bytes(text: str, key: str, op: str) -> bytes:
    try:
        return decode_bytes(text)
    except (binascii.Error, UnicodeEncodeError):
        raise ProtocolError(f"'{op}' frame: '{key}' is not base64") from None


# -- frames -----------------------------------------------------------------------------------------


def encode_frame(message: Message) -> bytes:
    """Return one frame holding `message`."""
    payload = json.dumps(message.to_dict(), separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(payload)} bytes is over the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(payload)) + payload


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"a frame is not JSON: {error}") from error
    if not isinstance(data, dict) or "op" not in data:
        raise ProtocolError("a frame is not an object with an 'op'")
    return data


def _length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame claims {length} bytes, over the {MAX_FRAME}-byte limit")
    return int(length)


def write_frame(stream: IO[bytes], message: Message) -> None:
    """Write one frame to a blocking binary stream and flush it."""
    stream.write(encode_frame(message))
    stream.flush()


def read_frame(stream: IO[bytes], decode: Callable[[dict[str, Any]], _M]) -> _M | None:
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
    return decode(_decode(payload))


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


async def read_frame_async(reader: asyncio.StreamReader, decode: Callable[[dict[str, Any]], _M]) -> _M | None:
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
    return decode(_decode(payload))


def encode_bytes(data: bytes) -> str:
    """Return binary data as a JSON-safe string."""
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    """Return the binary data `encode_bytes` made `text` from."""
    return base64.b64decode(text.encode("ascii"), validate=True)

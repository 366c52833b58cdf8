"""Frames between the bot and the worker process, over the worker's stdin and stdout.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON holding one object with an ``op``. Binary values (image bytes) travel as
base64 strings. Both sides share these helpers: the bot reads with asyncio,
the worker with blocking file objects.

bot -> worker::

    {"op": "generate", "id": 1, "jobs": [{...}]}  # Job.to_dict() of each; several share a batch_key
    {"op": "cancel", "id": 1}
    {"op": "stats", "id": 2}
    {"op": "shutdown"}

worker -> bot::

    {"op": "ready", "device": "cpu", "dtype": "float32", "pid": 123}
    {"op": "progress", "id": 1, "stage": "base", "step": 3, "total": 24, "preview": (base64 WebP, some steps)}
    {"op": "result", "id": 1, "results": [[{"index", "seed", "data" (base64), "width", "height", "meta"}]]}
    {"op": "error", "id": 1, "kind": "cancelled" | "invalid" | "oom" | "failed", "message": "...",
     "option": ..., "restart": false}                # restart: the worker's state is suspect
    {"op": "stats", "id": 2, "loads": {"pipeline": 1, ...}}
    {"op": "fatal", "message": "..."}              # the worker could not start
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import IO, Any

__all__ = [
    "MAX_FRAME",
    "ProtocolError",
    "decode_bytes",
    "encode_bytes",
    "encode_frame",
    "read_frame",
    "read_frame_async",
    "write_frame",
]

_HEADER = struct.Struct(">I")
# Four 2048² PNGs in base64 stay far below this; a larger length means a corrupt stream.
MAX_FRAME = 256 * 1024 * 1024


class ProtocolError(Exception):
    """The byte stream is not a sequence of frames (something else wrote to it)."""


def encode_frame(message: dict[str, Any]) -> bytes:
    """Return one frame holding `message`."""
    payload = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(payload)} bytes is over the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(payload)) + payload


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"a frame is not JSON: {error}") from error
    if not isinstance(message, dict) or "op" not in message:
        raise ProtocolError("a frame is not an object with an 'op'")
    return message


def _length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame claims {length} bytes, over the {MAX_FRAME}-byte limit")
    return int(length)


def write_frame(stream: IO[bytes], message: dict[str, Any]) -> None:
    """Write one frame to a blocking binary stream and flush it."""
    stream.write(encode_frame(message))
    stream.flush()


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """Read one frame from a blocking binary stream; None at a clean end of stream."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    length = _length(header)
    payload = _read_exactly(stream, length)
    if payload is None:
        raise ProtocolError("the stream ended inside a frame")
    return _decode(payload)


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


async def read_frame_async(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """Read one frame from an asyncio stream; None at a clean end of stream."""
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
    return _decode(payload)


def encode_bytes(data: bytes) -> str:
    """Return binary data as a JSON-safe string."""
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    """Return the binary data `encode_bytes` made `text` from."""
    return base64.b64decode(text.encode("ascii"), validate=True)

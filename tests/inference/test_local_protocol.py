"""Frames between bot and worker, and the worker's hold on its stdout."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import pytest

from inference.local._protocol import (
    MAX_FRAME,
    ProtocolError,
    decode_bytes,
    encode_bytes,
    encode_frame,
    read_frame,
    read_frame_async,
    write_frame,
)

ROOT = Path(__file__).resolve().parents[2]


def test_frames_round_trip_through_a_blocking_stream():
    """Frames written one after another read back in order, then None at the end."""
    stream = io.BytesIO()
    write_frame(stream, {"op": "a", "n": 1})
    write_frame(stream, {"op": "b", "text": "é ✓"})
    stream.seek(0)
    assert read_frame(stream) == {"op": "a", "n": 1}
    assert read_frame(stream) == {"op": "b", "text": "é ✓"}
    assert read_frame(stream) is None


async def test_frames_round_trip_through_asyncio():
    """The asyncio reader reads what the blocking writer wrote."""
    reader = asyncio.StreamReader()
    reader.feed_data(encode_frame({"op": "progress", "step": 3}))
    reader.feed_eof()
    assert await read_frame_async(reader) == {"op": "progress", "step": 3}
    assert await read_frame_async(reader) is None


def test_bytes_travel_as_base64():
    """Image bytes survive the JSON frame."""
    data = bytes(range(256)) * 10
    assert decode_bytes(encode_bytes(data)) == data


@pytest.mark.parametrize(
    "raw",
    [
        encode_frame({"op": "x"})[:-2],  # cut inside the payload
        b"\x00\x00",  # cut inside the header
        (5).to_bytes(4, "big") + b"hello",  # not JSON
        (4).to_bytes(4, "big") + b"[12]",  # JSON but no op
        (MAX_FRAME + 1).to_bytes(4, "big"),  # absurd length: something else wrote to the pipe
    ],
)
async def test_garbage_is_a_protocol_error(raw):
    """Truncated, non-JSON or oversized frames raise ProtocolError, blocking or async."""
    with pytest.raises(ProtocolError):
        read_frame(io.BytesIO(raw))
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    with pytest.raises(ProtocolError):
        await read_frame_async(reader)


def test_worker_prints_cannot_reach_the_frame_stream():
    """After the worker claims stdio, print() and writes to fd 1 go to stderr, frames to the old stdout."""
    script = (
        "import os\n"
        "from inference.local._worker import _claim_stdio\n"
        "from inference.local._protocol import write_frame\n"
        "frames_in, frames_out = _claim_stdio()\n"
        "print('library chatter')\n"
        "os.write(1, b'C-level chatter')\n"
        "write_frame(frames_out, {'op': 'ready'})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=600, check=True)
    assert read_frame(io.BytesIO(done.stdout)) == {"op": "ready"}
    assert done.stdout == encode_frame({"op": "ready"})
    assert b"library chatter" in done.stderr and b"C-level chatter" in done.stderr

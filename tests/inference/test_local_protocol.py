"""Messages and frames between bot and worker, and the worker's hold on its stdout."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.catalog import load_catalog
from bot.request import GeneratedImage
from inference.local._job import build_job
from inference.local._protocol import (
    MAX_FRAME,
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
    encode,
    encode_frame,
    from_bot,
    from_worker,
    read_frame,
    read_frame_async,
    write_frame,
)
from tests.inference.tiny_requests import tiny_request

ROOT = Path(__file__).resolve().parents[2]
JOB = build_job(tiny_request(count=2), load_catalog(), Path("/data"))
IMAGE = GeneratedImage(index=0, seed=7, data=b"\x89PNG\x00\xff", width=128, height=128, meta={"steps": 4}, nsfw=True)


def b64(data: bytes) -> str:
    """Bytes as pydantic writes them in JSON: URL-safe base64."""
    return base64.urlsafe_b64encode(data).decode("ascii")


UNCHECKED = GeneratedImage(index=1, seed=8, data=b"", width=64, height=32)

# Each message beside the JSON object its frame holds.
TO_WORKER: list[tuple[Message, dict]] = [
    # Every field of each job: the worker process runs the bot's own code (a Ray replica gets `to_dict`'s).
    (Generate(1, (JOB, JOB)), {"op": "generate", "id": 1, "jobs": [JOB.model_dump(mode="json")] * 2}),
    (Cancel(1), {"op": "cancel", "id": 1}),
    (StatsRequest(2), {"op": "stats", "id": 2}),
    (
        CheckRequest(3, "tiny:base", (b"\x89PNG\x00", b"\xff")),
        {"op": "check", "id": 3, "model": "tiny:base", "images": ["iVBORwA=", "_w=="]},
    ),
    (
        GuideRequest(4, "/data/annotators/depth", "depth", b"\x89PNG\x00", 96, 64),
        {
            "op": "guide",
            "id": 4,
            "folder": "/data/annotators/depth",
            "preprocess": "depth",
            "image": "iVBORwA=",
            "width": 96,
            "height": 64,
        },
    ),
    (
        DescribeRequest(5, "/data/captioners/blip", b"\x89PNG\x00"),
        {"op": "describe", "id": 5, "folder": "/data/captioners/blip", "image": "iVBORwA="},
    ),
    (Shutdown(), {"op": "shutdown"}),
]
TO_BOT: list[tuple[Message, dict]] = [
    (Ready("cpu", "torch.float32", 123), {"op": "ready", "device": "cpu", "dtype": "torch.float32", "pid": 123}),
    (
        Progress(1, "base", 3, 24),
        {"op": "progress", "id": 1, "stage": "base", "step": 3, "total": 24, "preview": None},
    ),
    (
        Progress(1, "refiner", 1, 6, b"RIFF-webp"),
        {"op": "progress", "id": 1, "stage": "refiner", "step": 1, "total": 6, "preview": b64(b"RIFF-webp")},
    ),
    (
        Result(1, ((IMAGE, UNCHECKED), ())),
        {
            "op": "result",
            "id": 1,
            "results": [
                [
                    {
                        "index": 0,
                        "seed": 7,
                        "data": b64(IMAGE.data),
                        "width": 128,
                        "height": 128,
                        "meta": {"steps": 4},
                        "nsfw": True,
                    },
                    {"index": 1, "seed": 8, "data": "", "width": 64, "height": 32, "meta": {}, "nsfw": None},
                ],
                [],
            ],
        },
    ),
    (
        Error(1, "invalid", "too many steps", "steps"),
        {"op": "error", "id": 1, "kind": "invalid", "message": "too many steps", "option": "steps", "restart": False},
    ),
    (
        Error(1, "oom", "the GPU ran out of memory", restart=True),
        {
            "op": "error",
            "id": 1,
            "kind": "oom",
            "message": "the GPU ran out of memory",
            "option": None,
            "restart": True,
        },
    ),
    (Stats(2, {"pipeline": 1, "lora": 0}), {"op": "stats", "id": 2, "loads": {"pipeline": 1, "lora": 0}}),
    (Checked(3, (False, True)), {"op": "checked", "id": 3, "flags": [False, True]}),
    (Guided(4, b"\x89PNG\x00"), {"op": "guided", "id": 4, "image": "iVBORwA="}),
    (Described(5, "a fox in the snow"), {"op": "described", "id": 5, "text": "a fox in the snow", "more": []}),
    (
        Described(6, "a fox", more=("a red fox", "snow")),
        {"op": "described", "id": 6, "text": "a fox", "more": ["a red fox", "snow"]},
    ),
    (
        Fatal("the worker could not start (ValueError)"),
        {"op": "fatal", "message": "the worker could not start (ValueError)"},
    ),
]


def ids(cases: list[tuple[Message, dict]]) -> list[str]:
    return [f"{type(message).__name__}-{i}" for i, (message, _) in enumerate(cases)]


@pytest.mark.parametrize(("message", "wire"), TO_WORKER, ids=ids(TO_WORKER))
def test_what_the_bot_sends_is_its_object_and_reads_back_equal(message, wire):
    """Each bot -> worker message is that JSON object (bytes in base64), and the worker reads it back equal."""
    assert json.loads(encode(message)) == wire
    assert from_bot(json.dumps(wire)) == message


@pytest.mark.parametrize(("message", "wire"), TO_BOT, ids=ids(TO_BOT))
def test_what_the_worker_sends_is_its_object_and_reads_back_equal(message, wire):
    """Each worker -> bot message is that JSON object (bytes in base64), and the bot reads it back equal."""
    assert json.loads(encode(message)) == wire
    assert from_worker(json.dumps(wire)) == message


def test_a_frame_holds_the_compact_json_of_the_message():
    """The bytes on the pipe are the length, then the message's object as compact JSON."""
    payload = b'{"id":1,"stage":"base","step":3,"total":24,"preview":null,"op":"progress"}'
    assert encode_frame(Progress(1, "base", 3, 24)) == len(payload).to_bytes(4, "big") + payload


def test_messages_match_on_their_types():
    """Both sides match on the message classes, with their fields as the pattern's arguments."""
    match from_worker(b'{"op": "progress", "id": 5, "stage": "base", "step": 2, "total": 4}'):
        case Progress(5, stage, step, total, None):
            assert (stage, step, total) == ("base", 2, 4)
        case other:
            pytest.fail(f"matched {other!r}")


def test_keys_a_message_does_not_know_are_ignored():
    """A message reads as if a key it does not know were not there."""
    assert from_worker(b'{"op": "fatal", "message": "no", "pid": 9}') == Fatal("no")


@pytest.mark.parametrize(
    ("decode", "data", "reason"),
    [
        (from_worker, {"op": "hello", "id": 1}, "the worker sends no frame with op 'hello'"),
        (from_worker, {"op": 3}, "the worker sends no frame with op '3'"),
        (from_worker, {"id": 3}, "the worker sends no frame with op None"),
        (from_bot, {"op": "ready", "device": "cpu", "dtype": "float32", "pid": 1}, "the bot sends no frame with op"),
        (from_worker, {"op": "generate", "id": 1, "jobs": []}, "the worker sends no frame with op 'generate'"),
        (from_worker, {"op": "progress", "id": 1, "stage": "base", "step": 3}, "'progress' frame: 'total': Field"),
        (
            from_worker,
            {"op": "progress", "id": 1, "stage": "up", "step": 3, "total": 4},
            "'progress' frame: 'stage': Input should be 'base' or 'refiner'",
        ),
        (
            from_worker,
            {"op": "progress", "id": "1", "stage": "base", "step": 3, "total": 4},
            "'progress' frame: 'id': Input should be a valid integer",
        ),
        (from_worker, {"op": "stats", "id": True, "loads": {}}, "'stats' frame: 'id': Input should be a valid integer"),
        (from_worker, {"op": "stats", "id": 1, "loads": {"pipeline": "one"}}, "'stats' frame: 'loads.pipeline'"),
        (from_worker, {"op": "error", "id": 1, "kind": "failed"}, "'error' frame: 'message': Field required"),
        (from_worker, {"op": "result", "id": 1, "results": [{}]}, "'result' frame: 'results.0'"),
        (from_worker, {"op": "result", "id": 1, "results": [[{"index": 0}]]}, "'result' frame: 'results.0.0.seed'"),
        (
            from_worker,
            {"op": "progress", "id": 1, "stage": "base", "step": 1, "total": 2, "preview": "not base64!"},
            "'progress' frame: 'preview': Data should be valid base64",
        ),
        (from_worker, {"op": "checked", "id": 1, "flags": [1]}, "'checked' frame: 'flags.0'"),
        (from_bot, {"op": "cancel"}, "'cancel' frame: 'id': Field required"),
        (from_bot, {"op": "generate", "id": 1, "jobs": [{"prompt": "x"}]}, "'generate' frame: 'jobs.0."),
        (from_bot, {"op": "describe", "id": 5, "image": "iVBORwA="}, "'describe' frame: 'folder': Field required"),
        (
            from_bot,
            {"op": "describe", "id": 5, "folder": "/x", "image": "not base64!"},
            "'describe' frame: 'image': Data should be valid base64",
        ),
        (from_worker, {"op": "described", "id": 5}, "'described' frame: 'text': Field required"),
        (from_worker, {"op": "described", "id": 5, "text": ["a", "fox"]}, "'described' frame: 'text': Input should be"),
        (from_worker, {"op": "describe", "id": 5, "folder": "/x", "image": ""}, "the worker sends no frame with op"),
        (from_bot, {"op": "described", "id": 5, "text": "a fox"}, "the bot sends no frame with op 'described'"),
    ],
)
def test_a_malformed_message_is_a_protocol_error_with_a_reason(decode, data, reason):
    """An op the other side never sends, or a missing or mistyped key, raises ProtocolError saying which."""
    with pytest.raises(ProtocolError) as raised:
        decode(json.dumps(data))
    assert reason in str(raised.value)


def test_frames_round_trip_through_a_blocking_stream():
    """Frames written one after another read back in order, then None at the end."""
    stream = io.BytesIO()
    write_frame(stream, Generate(1, (JOB,)))
    write_frame(stream, Cancel(1))
    stream.seek(0)
    assert read_frame(stream, from_bot) == Generate(1, (JOB,))
    assert read_frame(stream, from_bot) == Cancel(1)
    assert read_frame(stream, from_bot) is None


async def test_frames_round_trip_through_asyncio():
    """The asyncio reader reads what the blocking writer wrote."""
    reader = asyncio.StreamReader()
    reader.feed_data(encode_frame(Progress(1, "base", 3, 4, "é ✓".encode())))
    reader.feed_eof()
    assert await read_frame_async(reader, from_worker) == Progress(1, "base", 3, 4, "é ✓".encode())
    assert await read_frame_async(reader, from_worker) is None


def test_bytes_travel_as_base64():
    """Image bytes survive the JSON frame, every byte value, and read back from standard base64 too."""
    data = bytes(range(256)) * 10
    assert from_worker(encode(Guided(4, data))) == Guided(4, data)
    assert from_worker(json.dumps({"op": "guided", "id": 4, "image": base64.b64encode(data).decode()})).image == data


@pytest.mark.parametrize(
    "raw",
    [
        encode_frame(Cancel(1))[:-2],  # cut inside the payload
        b"\x00\x00",  # cut inside the header
        (5).to_bytes(4, "big") + b"hello",  # not JSON
        (4).to_bytes(4, "big") + b"[12]",  # JSON but no op
        (MAX_FRAME + 1).to_bytes(4, "big"),  # absurd length: something else wrote to the pipe
        encode_frame(Ready("cpu", "float32", 1)),  # a frame, but one the bot never sends
        (13).to_bytes(4, "big") + b'{"op":"stop"}',  # a frame with an op nobody sends
    ],
)
async def test_garbage_is_a_protocol_error(raw):
    """Truncated, non-JSON, oversized or unknown frames raise ProtocolError, blocking or async."""
    with pytest.raises(ProtocolError):
        read_frame(io.BytesIO(raw), from_bot)
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    with pytest.raises(ProtocolError):
        await read_frame_async(reader, from_bot)


def test_worker_prints_cannot_reach_the_frame_stream():
    """After the worker claims stdio, print() and writes to fd 1 go to stderr, frames to the old stdout."""
    script = (
        "import os\n"
        "from inference.local._worker import _claim_stdio\n"
        "from inference.local._protocol import Ready, write_frame\n"
        "frames_in, frames_out = _claim_stdio()\n"
        "print('library chatter')\n"
        "os.write(1, b'C-level chatter')\n"
        "write_frame(frames_out, Ready('cpu', 'float32', 1))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=600, check=True)
    assert read_frame(io.BytesIO(done.stdout), from_worker) == Ready("cpu", "float32", 1)
    assert done.stdout == encode_frame(Ready("cpu", "float32", 1))
    assert b"library chatter" in done.stderr and b"C-level chatter" in done.stderr


# -- properties ----------------------------------------------------------------------------------

_ints = st.integers(-(2**63), 2**63 - 1)
_texts = st.text(max_size=20)
_blobs = st.binary(max_size=64)
_json = st.recursive(
    st.none() | st.booleans() | _ints | st.floats(allow_nan=False, allow_infinity=False) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)
_images = st.builds(
    GeneratedImage,
    _ints,
    _ints,
    _blobs,
    _ints,
    _ints,
    st.dictionaries(_texts, _json, max_size=3),
    st.none() | st.booleans(),
)
_to_bot = st.one_of(
    st.builds(Ready, _texts, _texts, _ints),
    st.builds(Progress, _ints, st.sampled_from(["base", "refiner"]), _ints, _ints, st.none() | _blobs),
    st.builds(Result, _ints, st.lists(st.lists(_images, max_size=2).map(tuple), max_size=2).map(tuple)),
    st.builds(Error, _ints, _texts, _texts, st.none() | _texts, st.booleans()),
    st.builds(Stats, _ints, st.dictionaries(_texts, _ints, max_size=3)),
    st.builds(Checked, _ints, st.lists(st.booleans(), max_size=4).map(tuple)),
    st.builds(Guided, _ints, _blobs),
    st.builds(Described, _ints, _texts),
    st.builds(Fatal, _texts),
)
_to_worker = st.one_of(
    st.builds(Generate, _ints, st.lists(st.just(JOB), max_size=2).map(tuple)),
    st.builds(Cancel, _ints),
    st.builds(StatsRequest, _ints),
    st.builds(CheckRequest, _ints, _texts, st.lists(_blobs, max_size=3).map(tuple)),
    st.builds(GuideRequest, _ints, _texts, _texts, _blobs, _ints, _ints),
    st.builds(DescribeRequest, _ints, _texts, _blobs),
    st.just(Shutdown()),
)
_OPS = ["generate", "cancel", "stats", "check", "guide", "describe", "shutdown", "ready", "progress", "result", "error",
        "checked", "guided", "described", "fatal"]  # fmt: skip


@given(message=_to_bot)
def test_any_message_the_worker_sends_reads_back_equal(message):
    """Every worker -> bot message survives its frame, whatever its numbers, texts and bytes."""
    assert read_frame(io.BytesIO(encode_frame(message)), from_worker) == message


@given(message=_to_worker)
def test_any_message_the_bot_sends_reads_back_equal(message):
    """Every bot -> worker message survives its frame, whatever its numbers, texts and bytes."""
    assert read_frame(io.BytesIO(encode_frame(message)), from_bot) == message


@given(data=st.dictionaries(_texts, _json, max_size=6), op=st.none() | st.sampled_from(_OPS) | _texts)
def test_any_object_is_a_message_or_a_protocol_error(data, op):
    """Whatever JSON object arrives, with a real op or not, reading it gives a message or a ProtocolError only."""
    payload = json.dumps(data if op is None else {**data, "op": op})
    for decode in (from_worker, from_bot):
        try:
            decode(payload)
        except ProtocolError as error:
            assert str(error) and "\n" not in str(error)


@given(payload=st.binary(max_size=200))
def test_any_bytes_are_a_message_or_a_protocol_error(payload):
    """Bytes that are not JSON at all (another program wrote to the pipe) are a ProtocolError, never a crash."""
    for decode in (from_worker, from_bot):
        with contextlib.suppress(ProtocolError):
            decode(payload)

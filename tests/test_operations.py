"""What an operator sees: JSON log lines with job ids, no secrets in any log line, and /metrics after a real image."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import CoreSettings
from bot.jobs import Requester
from bot.logs import setup_logging
from tests.fakes.backend import FakeBackend
from tests.fakes.service import started_service

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def log_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Route the root logger to a string, as `imagebot` does to stderr; put pytest's handlers back after."""
    for key in list(os.environ):
        if key.startswith("IMAGEBOT_"):
            monkeypatch.delenv(key)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


async def test_log_lines_are_json_with_the_job_and_no_prompt_at_info(log_stream: io.StringIO, tmp_path: Path) -> None:
    setup_logging(CoreSettings(log_level="INFO"), log_stream)  # a StringIO is not a terminal: JSON
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        await (await service.imagine("a secret garden --steps 2", Requester("slack", "U1"))).result()
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    queued = next(line for line in lines if line["message"].startswith("queued #1"))
    assert queued["level"] == "INFO" and queued["job_id"] == 1 and queued["user_id"] == "U1"
    assert any(line["message"].startswith("generation 1 done") and line["job_id"] == 1 for line in lines)
    assert "secret garden" not in log_stream.getvalue()


async def test_prompts_are_logged_when_the_operator_asks(log_stream: io.StringIO, tmp_path: Path) -> None:
    setup_logging(CoreSettings(log_level="INFO", log_format="text"), log_stream)
    async with started_service(FakeBackend(), tmp_path, log_prompts=True) as (service, _):
        await (await service.imagine("a secret garden --steps 2", Requester("slack", "U1"))).result()
    assert "prompt of #1: a secret garden" in log_stream.getvalue()
    assert not log_stream.getvalue().startswith("{")


def test_no_secret_reaches_a_log_line_whoever_logs_it(log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBOT_DISCORD_TOKEN", "discord-token-123")
    monkeypatch.setenv("IMAGEBOT_SLACK_BOT_TOKEN", "xoxb-slack-456")
    monkeypatch.setenv("IMAGEBOT_RUNWARE_API_KEY", "rw-key-789")
    monkeypatch.setenv("HF_TOKEN", "hf_token_000")
    setup_logging(CoreSettings(log_level="DEBUG"), log_stream)
    logging.getLogger("discord.http").debug("PATCH with Authorization: Bot %s", "discord-token-123")
    logging.getLogger("httpx").info("Bearer rw-key-789 and xoxb-slack-456")
    try:
        raise RuntimeError("hf_token_000 was refused")
    except RuntimeError:
        logging.getLogger("inference").exception("failed")
    text = log_stream.getvalue()
    for secret in ("discord-token-123", "xoxb-slack-456", "rw-key-789", "hf_token_000"):
        assert secret not in text
    assert text.count("***") == 5


@pytest.mark.slow
async def test_metrics_are_served_after_a_real_image_on_the_tiny_model(tmp_path: Path, tiny_data_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny").symlink_to(tiny_data_dir / "models" / "tiny")
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    env |= {"IMAGEBOT_DATA_DIR": str(data_dir), "IMAGEBOT_METRICS_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagebot.cli",
        "run",
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"/imagine a red fox --seed 7 --steps 4\n")
    await process.stdin.drain()
    while b"done" not in (line := await asyncio.wait_for(process.stdout.readline(), 600)):
        assert line, "imagebot run ended before the image was done"
    process.stdin.write(b"describe #1\n")
    await process.stdin.drain()
    while b"in words" not in (line := await asyncio.wait_for(process.stdout.readline(), 600)):
        assert line, "imagebot run ended before the image was described"
    scraped = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    )
    process.stdin.close()
    await asyncio.wait_for(process.wait(), 600)
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in scraped.splitlines()
        if line and line[0] != "#"
    }
    assert samples['imagebot_jobs_total{status="done"}'] == 1
    assert samples['imagebot_generation_seconds_count{backend="local"}'] == 1
    assert samples['imagebot_jobs_in_queue{state="queued"}'] == 0
    assert samples["imagebot_worker_restarts_total"] == 0
    assert samples['imagebot_descriptions_total{backend="local",outcome="done"}'] == 1

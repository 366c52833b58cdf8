"""Slack end to end: a real ``imagebot run`` process in HTTP mode, the tiny diffusers model, the fake Slack.

The process is started twice on one data directory, so the test also shows
that a card posted before a restart still rerolls after it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from bot.pngmeta import parse_parameters, read_text
from tests.adapters.slack.conftest import action_ids
from tests.fakes.slack import FakeSlack, SlackMessage

pytest.importorskip("diffusers")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
# A hang guard only: the first image includes the worker's start (importing torch).
SLOW = 600.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _start_app(fake: FakeSlack, data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    env.update(
        IMAGEBOT_DATA_DIR=str(data_dir),
        IMAGEBOT_SLACK_BOT_TOKEN=fake.bot_token,
        IMAGEBOT_SLACK_SIGNING_SECRET=fake.signing_secret,
        IMAGEBOT_SLACK_API_BASE=fake.api_base,
        IMAGEBOT_SLACK_HOST="127.0.0.1",
        IMAGEBOT_SLACK_PORT=str(port),
        IMAGEBOT_SLACK_PROGRESS_INTERVAL="0",
        # Everything is logged, so that a leaked secret would show.
        IMAGEBOT_LOG_LEVEL="DEBUG",
        HF_HUB_OFFLINE="1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagebot.cli", "run", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}/slack/events"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SLOW
    while True:  # the events URL answers once the app is up
        try:
            if (await fake.send_slash(url, text="help")).status == 200:
                return process, url
        except OSError:
            pass
        if process.returncode is not None or loop.time() > deadline:
            raise AssertionError(f"imagebot run did not start: {await process.stderr.read()!r}")  # type: ignore[union-attr]
        await asyncio.sleep(0.2)


async def _stop_app(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), SLOW)
    return stderr.decode()


async def _finished_card(fake: FakeSlack, number: int) -> SlackMessage:
    def cards() -> list[SlackMessage]:
        return [m for m in fake.channel_messages() if m.blocks and not m.ephemeral_user]

    await fake.wait_for(lambda: len(cards()) >= number and action_ids(cards()[number - 1], "ib:reroll:"), SLOW)
    return cards()[number - 1]


def _image_after(fake: FakeSlack, card: SlackMessage) -> dict[str, str]:
    """Return the A1111 parameters of the image uploaded right after a card."""
    uploads = [m for m in fake.channel_messages() if m.files and float(m.ts) > float(card.ts)]
    ((_, png),) = uploads[0].files
    return parse_parameters(read_text(png)["parameters"])["fields"]


async def test_imagine_refine_and_a_reaction_after_a_restart(tiny_data_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny").symlink_to(tiny_data_dir / "models" / "tiny")
    async with FakeSlack() as fake:
        process, url = await _start_app(fake, data_dir)
        try:
            sent = await fake.send_slash(url, text="a red fox --seed 7 --steps 10")
            assert sent.status == 200 and sent.elapsed < 3
            first = await _finished_card(fake, 1)
            assert _image_after(fake, first)["Seed"] == "7"
            assert any("base" in update["text"] and "10/10" in update["text"] for update in first.updates)

            await fake.send_block_action(url, "ib:refine:1", "1", message_ts=first.ts)
            refined = await _finished_card(fake, 2)
            parameters = _image_after(fake, refined)
            assert parameters["Seed"] == "7" and parameters["Refiner start step"] == "9"
        finally:
            stderr = await _stop_app(process)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert fake.bot_token not in stderr and fake.signing_secret not in stderr

        process, url = await _start_app(fake, data_dir)
        try:
            event = fake.reaction_event("arrows_counterclockwise", message_ts=first.ts)
            assert (await fake.send_event(url, event)).status == 200
            third = await _finished_card(fake, 3)
            assert _image_after(fake, third)["Seed"] != "7"
            assert "reroll of #1" in str(third.blocks)
        finally:
            stderr = await _stop_app(process)
        assert process.returncode == 0, stderr
        assert fake.bot_token not in stderr and fake.signing_secret not in stderr

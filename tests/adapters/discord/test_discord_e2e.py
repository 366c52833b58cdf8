"""Discord end to end with the tiny diffusers model in the real worker process.

The bot runs in this process for the interaction tests, and as a real
``imagebot run`` process (started twice) for the restart test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from bot.actions import encode_action
from bot.catalog import load_catalog
from bot.pngmeta import parse_parameters, read_text
from tests.adapters.discord.conftest import running_bot
from tests.adapters.discord.test_discord_bot import _custom_ids, _finished, _reply_of
from tests.fakes.discord import FakeDiscord

pytest.importorskip("diffusers")

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]
# A hang guard only: the first image includes the worker's start (importing torch).
SLOW = 600.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local_backend(tiny_data_dir):
    from inference.local import LocalBackend

    backend = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    yield backend
    await backend.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake():
    async with FakeDiscord() as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="module")
async def running(fake, local_backend, tmp_path):
    async with running_bot(fake, local_backend, tmp_path) as running:
        yield running


def _fields(message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


def _png_parameters(message) -> dict[str, str]:
    (attachment,) = message.attachments
    return parse_parameters(read_text(attachment.data)["parameters"])["fields"]


async def test_imagine_then_button_reroll_reaction_reroll_and_refine(running):
    """/imagine, 🔄 button, 🔄 reaction and ✨ button each post a real PNG; rerolls change the seed, refine keeps it."""
    fake = running.fake
    interaction = await fake.slash("imagine", {"prompt": "a red fox", "seed": "7", "steps": 10})
    assert (await interaction.response())["type"] == 5
    await fake.wait_for(lambda: interaction.original is not None, SLOW)
    first = await _finished(fake, interaction.original, SLOW)
    assert _png_parameters(first)["Seed"] == "7"
    assert any("base" in (edit.get("content") or "") and "10/10" in edit["content"] for edit in first.edits)
    # the worker's latent previews are shown while it works, then give way to the image
    assert any("preview.webp" in edit["attachments"] for edit in first.edits)
    assert [attachment.filename for attachment in first.attachments] == ["imagebot-1-0.png"]

    click = await fake.click(first.id, encode_action("reroll", 1))
    rerolled = await _finished(fake, await _reply_of(click), SLOW)
    new_seed = _fields(rerolled)["Seed"]
    assert new_seed != "7" and _png_parameters(rerolled)["Seed"] == new_seed
    assert rerolled.attachments[0].data != first.attachments[0].data

    before = set(fake.messages)
    await fake.react(first.id, "🔄")
    await fake.wait_for(lambda: set(fake.messages) - before)
    (reply_id,) = set(fake.messages) - before
    reacted = await _finished(fake, fake.messages[reply_id], SLOW)
    assert _fields(reacted)["Seed"] not in ("7", new_seed)

    click = await fake.click(first.id, encode_action("refine", 1))
    refined = await _finished(fake, await _reply_of(click), SLOW)
    assert _fields(refined)["Seed"] == "7"
    # the default refine starts at 85 %: 8.5 steps round half up to 9 base steps, 1 refiner step
    assert _fields(refined)["Steps"] == "10 (9 base + 1 refiner)"
    assert _png_parameters(refined)["Refiner start step"] == "9"
    assert any("refiner" in (edit.get("content") or "") and "1/1" in edit["content"] for edit in refined.edits)
    assert refined.attachments[0].data != first.attachments[0].data


def _syncs(fake: FakeDiscord) -> int:
    return sum(call.method == "PUT" and call.path.endswith("/commands") for call in fake.calls)


async def _start_bot(fake: FakeDiscord, data_dir: Path) -> asyncio.subprocess.Process:
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    env.update(
        IMAGEBOT_DATA_DIR=str(data_dir),
        IMAGEBOT_DISCORD_TOKEN="fake-token",
        IMAGEBOT_DISCORD_API_BASE=fake.api_base,
        IMAGEBOT_DISCORD_GATEWAY_URL=fake.gateway_url,
        IMAGEBOT_DISCORD_PROGRESS_INTERVAL="0",
        IMAGEBOT_LOG_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
    )
    connections = fake.connections
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagebot.cli", "run", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    await asyncio.wait_for(fake.wait_ready(connections + 1), SLOW)
    return process


async def _stop_bot(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), SLOW)
    return stderr.decode()


async def test_button_still_works_after_the_bot_process_restarts(fake, tiny_data_dir, tmp_path):
    """Post an image, stop `imagebot run`, start it again: the old message's reroll button makes a new image."""
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny").symlink_to(tiny_data_dir / "models" / "tiny")

    process = await _start_bot(fake, data_dir)
    try:
        interaction = await fake.slash("imagine", {"prompt": "a red fox", "seed": "7", "steps": 4})
        await fake.wait_for(lambda: interaction.original is not None, SLOW)
        first = await _finished(fake, interaction.original, SLOW)
    finally:
        stderr = await _stop_bot(process)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert _custom_ids(first)[0] == encode_action("reroll", 1)
    synced = _syncs(fake)

    process = await _start_bot(fake, data_dir)
    try:
        click = await fake.click(first.id, encode_action("reroll", 1))
        assert (await click.response())["type"] == 4
        second = await _finished(fake, await _reply_of(click), SLOW)
    finally:
        stderr = await _stop_bot(process)
    assert process.returncode == 0, stderr
    # the commands did not change, so the restart did not sync them again (imagebot run passes its data dir)
    assert _syncs(fake) == synced
    assert _fields(second)["Seed"] != "7"
    assert _fields(second)["Steps"] == "4"
    assert second.embeds[0]["footer"]["text"].startswith("#2 · reroll of #1")

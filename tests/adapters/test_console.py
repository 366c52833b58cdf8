"""The console chat's own texts, through the real chat flow on a real service."""

from __future__ import annotations

import io
import re
from pathlib import Path

from adapters.console import ConsoleChat
from bot.jobs import Requester
from bot.options import OPTIONS
from tests.fakes.backend import FakeBackend
from tests.fakes.service import started_service


async def test_help_lists_every_imagine_flag_with_its_range(tmp_path: Path) -> None:
    """`help` shows each option of /imagine as it is typed, so a user need not open the README."""
    async with started_service(FakeBackend(), tmp_path) as (service, _):
        out = io.StringIO()
        chat = ConsoleChat(service, Requester(platform="console", user_id="ada"), out, tmp_path)
        assert await chat.handle("help")
    text = out.getvalue()
    for option in OPTIONS:
        if option != "prompt":
            assert re.search(rf"--{option.replace('_', '-')}\b", text), option
    assert "--steps N" in text and "1–100" in text
    assert "Euler a" in text

"""The composition root's wiring that no single layer's tests see."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import CoreSettings
from bot.jobs import Requester
from bot.plugins import ConfigurationError
from imagebot.bootstrap import bootstrap
from inference.local import LocalBackend
from tests.fakes.backend import FakeBackend


@pytest.mark.slow  # starts the local worker
@pytest.mark.parametrize(("warm", "pipeline_calls"), [(True, [1, 1]), (False, [1])])
async def test_a_serving_bot_warms_the_default_model_up_and_a_one_shot_command_does_not(
    tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm: bool, pipeline_calls: list[int]
) -> None:
    """`imagebot run` and `chat` load the default model before anyone asks; `imagebot history` starts no worker.

    A serving bot's first job waits behind the warm-up image (two pipeline calls, the job's
    loading nothing); a one-shot command's job is the worker's first call.
    """
    monkeypatch.setenv("IMAGEBOT_DEVICE", "cpu")
    monkeypatch.delenv("IMAGEBOT_WARMUP", raising=False)  # the default
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny").symlink_to(tiny_data_dir / "models" / "tiny")
    app = await bootstrap(CoreSettings(data_dir=data_dir, default_model="tiny"), announce=lambda _: None, warm=warm)
    try:
        assert isinstance(app.backend, LocalBackend)
        job = await app.service.imagine("a red fox --steps 2 --refiner off", Requester("console", "alice"))
        generation = await job.result()
        assert generation.images and (data_dir / generation.images[0].path).read_bytes().startswith(b"\x89PNG")
        assert app.backend.batch_sizes == pipeline_calls
    finally:
        await app.aclose()


async def test_the_wildcard_folder_is_read_at_start_and_one_that_breaks_a_rule_stops_the_start(tmp_path: Path) -> None:
    """`<data dir>/wildcards` is read when it exists; IMAGEBOT_WILDCARDS names another folder; a missing folder or
    a broken file stops the start with a sentence naming the setting and the file."""
    data_dir = tmp_path / "data"
    (data_dir / "wildcards").mkdir(parents=True)
    (data_dir / "wildcards" / "animal.txt").write_text("fox\nowl\n", encoding="utf-8")
    core = CoreSettings(data_dir=data_dir, default_model="tiny")
    app = await bootstrap(core, backend=FakeBackend(), announce=lambda _: None, warm=False)
    try:
        generation = await (await app.service.imagine("a __animal__ at dawn", Requester("console", "alice"))).result()
        assert generation.request.prompt in ("a fox at dawn", "a owl at dawn")
    finally:
        await app.aclose()
    missing = tmp_path / "elsewhere"
    with pytest.raises(ConfigurationError, match=rf"^IMAGEBOT_WILDCARDS: {missing} is not a folder$"):
        await bootstrap(CoreSettings(data_dir=data_dir, wildcards=missing), backend=FakeBackend(), warm=False)
    (data_dir / "wildcards" / "empty.txt").write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"^IMAGEBOT_WILDCARDS: .*/empty\.txt has no choices"):
        await bootstrap(CoreSettings(data_dir=data_dir), backend=FakeBackend(), warm=False)

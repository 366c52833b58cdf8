"""The composition root's wiring that no single layer's tests see."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import CoreSettings
from bot.jobs import Requester
from imagebot.bootstrap import bootstrap
from inference.local import LocalBackend


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

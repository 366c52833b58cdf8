"""`IMAGEBOT_BACKEND=runware|modelslab` end to end: settings → bootstrap → a real `imagebot` process → the fakes."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from bot.config import CoreSettings
from bot.errors import InvalidOption
from bot.jobs import Requester
from bot.plugins import ConfigurationError
from imagebot.bootstrap import bootstrap
from imagebot.cli import backends_text
from tests.fakes.modelslab import FakeModelsLab
from tests.fakes.runware import FakeRunware

ROOT = Path(__file__).resolve().parents[1]


def test_backends_lists_every_table_and_marks_the_configured_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEBOT_RUNWARE_API_KEY", raising=False)
    monkeypatch.setenv("IMAGEBOT_MODELSLAB_API_KEY", "ml-secret")
    text = backends_text(CoreSettings(backend="modelslab"))
    head, *rows = text.splitlines()
    assert head.split("  ")[-1].strip() == "modelslab (configured), key set"
    assert head.split() == ["local", "ray", "runware,", "no", "key", "modelslab", "(configured),", "key", "set"]
    assert "ml-secret" not in text
    table = {row.split("  ")[0]: row for row in rows}
    assert table["largest size"].split() == ["largest", "size", "2048×2048", "2048×2048", "2048×2048", "1024×1024"]
    assert table["refiner from a chosen step"].endswith("no")


@pytest.mark.parametrize("backend", ["runware", "modelslab"])
async def test_a_hosted_backend_without_its_key_is_one_sentence(
    backend: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(f"IMAGEBOT_{backend.upper()}_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match=f"the {backend} backend needs IMAGEBOT_{backend.upper()}_API_KEY"):
        await bootstrap(CoreSettings(backend=backend, data_dir=tmp_path), announce=lambda _: None)  # type: ignore[arg-type]


async def _imagebot(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagebot.cli",
        *args,
        cwd=ROOT,
        env=clean | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_imagebot_generate_on_runware(tmp_path: Path) -> None:
    async with FakeRunware() as fake:
        env = {
            "IMAGEBOT_DATA_DIR": str(tmp_path),
            "IMAGEBOT_BACKEND": "runware",
            "IMAGEBOT_RUNWARE_API_KEY": fake.api_key,
            "IMAGEBOT_RUNWARE_URL": fake.url,
            "IMAGEBOT_LOG_LEVEL": "DEBUG",
        }
        code, out, err = await _imagebot(env, "generate", "a red fox --seed 7 --refiner 90")
        assert code == 0, err
        (task,) = fake.tasks.values()
    assert task.request["model"] == "civitai:101055@128078"  # sdxl: no tiny model on a hosted API
    assert task.request["refiner"] == {"model": "civitai:101055@128080", "startStep": 27}
    assert "#1 done" in out and "seed 7" in out
    assert list(tmp_path.glob("images/**/*.png"))
    assert fake.api_key not in err and "Traceback" not in err


async def test_imagebot_generate_on_modelslab_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    async with FakeModelsLab() as fake:
        env = {
            "IMAGEBOT_DATA_DIR": str(tmp_path),
            "IMAGEBOT_BACKEND": "modelslab",
            "IMAGEBOT_MODELSLAB_API_KEY": fake.api_key,
            "IMAGEBOT_MODELSLAB_URL": fake.url,
        }
        code, out, _ = await _imagebot(env, "generate", "a red fox --seed 7 --refiner 90")
        assert code == 1
        assert out.strip() == (
            "✖ Refiner cannot take over at a chosen step on ModelsLab; the local backend and Runware can."
        )
        code, out, err = await _imagebot(env, "generate", "a red fox --seed 7 --steps 30")
        assert code == 0, err
        assert fake.submits and len(fake.charges) == 1


PINNED = """
[model.hosted-sdxl]
architecture = "sdxl"
description = "SDXL on ModelsLab, whatever IMAGEBOT_BACKEND says"
modelslab = "sdxl"
backend = "modelslab"

[model.runware-sdxl]
architecture = "sdxl"
runware = "civitai:101055@128078"
backend = "runware"
"""


async def test_a_model_pinned_to_a_hosted_backend_runs_there(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from importlib import resources

    from tests.fakes.backend import FakeBackend

    catalog = tmp_path / "models.toml"
    catalog.write_text(resources.files("bot").joinpath("models.toml").read_text() + PINNED)
    notices: list[str] = []
    async with FakeModelsLab() as fake:
        monkeypatch.setenv("IMAGEBOT_MODELSLAB_API_KEY", fake.api_key)
        monkeypatch.setenv("IMAGEBOT_MODELSLAB_URL", fake.url)
        monkeypatch.delenv("IMAGEBOT_RUNWARE_API_KEY", raising=False)
        local = FakeBackend(name="local")
        core = CoreSettings(data_dir=tmp_path / "data", catalog=catalog, default_model="tiny")
        app = await bootstrap(core, backend=local, announce=notices.append)
        try:
            who = Requester("console", "alice")
            hosted = await (await app.service.imagine("a red fox --model hosted-sdxl --steps 20", who)).result()
            mine = await (await app.service.imagine("a red fox --steps 2", who)).result()
            with pytest.raises(InvalidOption) as refused:
                await app.service.imagine("a red fox --model runware-sdxl", who)
        finally:
            await app.aclose()
    assert (hosted.backend, mine.backend) == ("modelslab", "local")
    assert len(fake.charges) == 1 and len(local.requests) == 1
    assert str(refused.value) == "Model 'runware-sdxl' runs on the runware backend, which this bot has not configured."
    assert notices == [
        "Catalog models on the runware backend are unavailable: the runware backend needs IMAGEBOT_RUNWARE_API_KEY."
    ]

"""`imagebot doctor`: each check, failing the way an operator would meet it, with its one-sentence fix."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.plugins import Check
from imagebot.doctor import check_all, report
from storage._schema import SCHEMA_VERSION
from tests.fakes.modelslab import FakeModelsLab
from tests.fakes.runware import FakeRunware

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("IMAGEBOT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("IMAGEBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)  # no .env from the repository


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


@pytest.mark.slow  # imports torch and diffusers, or builds the tiny model
async def test_a_cpu_box_on_defaults_passes_every_check(tmp_path: Path) -> None:
    checks = by_name(await check_all())
    assert list(checks) == [
        "settings",
        "data dir",
        "database",
        "wildcards",
        "Discord",
        "Slack",
        "GPU",
        "model",
        "safety checker",
        "memory",
        "catalog",
    ]
    assert all(check.ok for check in checks.values()), report(list(checks.values()))
    assert checks["GPU"].detail.startswith("no CUDA GPU (torch ")
    assert checks["model"].detail == "the tiny offline model is built on the first start"
    assert checks["safety checker"].detail == "the tiny offline checker (built with the tiny model)"


@pytest.mark.slow  # imports torch and diffusers, or builds the tiny model
async def test_catalog_entries_that_cannot_load_here_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With the hub off, every hub entry not in the cache is named, and the missing upscaler files; a cached
    repository drops out of the list; with the hub on, only files that are missing remain."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    check = by_name(await check_all())["catalog"]
    assert check.ok and check.detail.startswith("11 of 21 entries are not here")
    assert ": sdxl, sdxl-turbo, sdxl-refiner, sdxl-vae-fp16-fix, pixel-art, toy-face, canny-sdxl" in check.detail
    assert check.detail.endswith("; a user who names one is told it is not installed")
    (tmp_path / "hf" / "hub" / "models--diffusers--controlnet-canny-sdxl-1.0" / "snapshots" / "1").mkdir(parents=True)
    check = by_name(await check_all())["catalog"]
    assert check.detail.startswith("10 of 21 entries") and "canny-sdxl" not in check.detail
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    check = by_name(await check_all())["catalog"]
    assert check.ok and check.detail.startswith("2 of 21 entries are not here")
    assert check.detail.endswith(
        ": realesr-general-x4v3, realesrgan-x4plus; a user who names one is told it is not installed"
    )


@pytest.mark.slow  # imports torch and diffusers, or builds the tiny model
async def test_a_custom_safety_checker_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBOT_SAFETY_CHECKER", "tests.fakes.safety:flag_all")
    check = by_name(await check_all())["safety checker"]
    assert check.ok
    assert check.detail == "a custom checker (tests.fakes.safety:flag_all), imported by the worker"


@pytest.mark.slow  # imports torch and diffusers, or builds the tiny model
async def test_a_configured_upscaler_is_checked_for_its_weight_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """IMAGEBOT_UPSCALER: the tiny network passes; a shipped one whose .pth is missing says where it goes."""
    monkeypatch.setenv("IMAGEBOT_UPSCALER", "tiny-upscaler")
    assert by_name(await check_all())["upscaler"].ok
    monkeypatch.setenv("IMAGEBOT_UPSCALER", "realesrgan-x4plus")
    check = by_name(await check_all())["upscaler"]
    assert not check.ok and check.detail.endswith(
        "upscalers/RealESRGAN_x4plus.pth does not exist; copy the upscaler's weights there or fix the catalog."
    )


@pytest.mark.slow  # imports torch and diffusers, or builds the tiny model
async def test_an_annotator_folder_is_checked_for_a_transformers_model(tmp_path: Path) -> None:
    """No folder: no check (depth is just not offered); an empty one fails with where the weights go."""
    assert "annotator" not in by_name(await check_all())
    folder = tmp_path / "data" / "annotators" / "depth-anything-v2-small"
    folder.mkdir(parents=True)
    check = by_name(await check_all())["annotator"]
    assert not check.ok and check.detail == (
        f"depth-anything-v2-small: {folder} holds no config.json; download the annotator's transformers weights there."
    )
    (folder / "config.json").write_text("{}", encoding="utf-8")
    check = by_name(await check_all())["annotator"]
    assert check.ok and check.detail.endswith("--preprocess depth runs on the local backend")


@pytest.mark.slow  # imports torch and diffusers, or builds the tiny model
async def test_a_pose_annotators_person_detector_is_checked_too(tmp_path: Path) -> None:
    """An openpose folder whose detector/ lacks its config fails (the worker would pose one person); with it, ok."""
    folder = tmp_path / "data" / "annotators" / "vitpose-base-simple"
    (folder / "detector").mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    check = by_name(await check_all())["annotator"]
    assert not check.ok and check.detail == (
        f"vitpose-base-simple: {folder / 'detector'} holds no config.json; download the person detector's"
        " transformers weights there."
    )
    (folder / "detector" / "config.json").write_text("{}", encoding="utf-8")
    check = by_name(await check_all())["annotator"]
    assert check.ok and check.detail == (
        f"vitpose-base-simple: {folder} is present with its person detector; --preprocess openpose runs on the"
        " local backend"
    )


@pytest.mark.slow  # imports torch and diffusers, or builds the tiny model
async def test_a_captioner_folder_is_checked_for_a_transformers_model(tmp_path: Path) -> None:
    """No folder: no check (/describe is not offered by it); an empty one fails with where the weights go."""
    assert "captioner" not in by_name(await check_all())
    folder = tmp_path / "data" / "captioners" / "blip-image-captioning-large"
    folder.mkdir(parents=True)
    check = by_name(await check_all())["captioner"]
    assert not check.ok and check.detail == (
        f"blip-large: {folder} holds no config.json; download the captioner's transformers weights there."
    )
    (folder / "config.json").write_text("{}", encoding="utf-8")
    check = by_name(await check_all())["captioner"]
    assert check.ok and check.detail == f"blip-large: {folder} is present; /describe runs on the local backend"


async def test_an_invalid_setting_is_named_and_nothing_else_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBOT_PIXEL_BUDGET", "lots")
    (check,) = await check_all()
    assert not check.ok
    assert check.detail.startswith("IMAGEBOT_PIXEL_BUDGET: Input should be a valid integer")
    assert check.detail.endswith("; see deploy/.env.example for its values.")


async def test_storage_problems(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMAGEBOT_BACKEND", "modelslab")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("IMAGEBOT_DATA_DIR", str(blocked))
    data_dir = by_name(await check_all())["data dir"]
    assert not data_dir.ok and data_dir.detail.endswith("point IMAGEBOT_DATA_DIR at a folder you own.")

    monkeypatch.setenv("IMAGEBOT_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "imagebot.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 99")
    database = by_name(await check_all())["database"]
    assert not database.ok
    assert database.detail == f"schema 99 is newer than this imagebot's ({SCHEMA_VERSION}); upgrade imagebot."


async def test_the_wildcard_files_are_read_as_the_bot_reads_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IMAGEBOT_BACKEND", "modelslab")
    folder = tmp_path / "data" / "wildcards"
    assert by_name(await check_all())["wildcards"] == Check(
        "wildcards", True, f"none: files of choices in {folder} would be drawn from with __name__"
    )
    (folder / "colors").mkdir(parents=True)
    (folder / "animal.txt").write_text("fox\nowl\n", encoding="utf-8")
    (folder / "colors" / "warm.txt").write_text("amber\n", encoding="utf-8")
    assert by_name(await check_all())["wildcards"] == Check("wildcards", True, f"2 files of 3 choices in {folder}")
    (folder / "animal.txt").write_text("fox\n\x07owl\n", encoding="utf-8")
    broken = by_name(await check_all())["wildcards"]
    assert not broken.ok and broken.detail == (
        f"{folder / 'animal.txt'}, line 2: a control character; a choice is words; mend it: a starting bot refuses it,"
        " a running one keeps the last good files."
    )
    monkeypatch.setenv("IMAGEBOT_WILDCARDS", str(tmp_path / "elsewhere"))
    missing = by_name(await check_all())["wildcards"]
    assert missing == Check(
        "wildcards", False, f"IMAGEBOT_WILDCARDS: {tmp_path / 'elsewhere'} is not a folder; make it, or unset it."
    )


async def test_half_configured_slack_is_a_failure_and_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBOT_BACKEND", "modelslab")
    monkeypatch.setenv("IMAGEBOT_SLACK_BOT_TOKEN", "xoxb-very-secret")
    monkeypatch.setenv("IMAGEBOT_DISCORD_TOKEN", "discord-very-secret")
    checks = await check_all()
    slack = by_name(checks)["Slack"]
    assert not slack.ok and "IMAGEBOT_SLACK_APP_TOKEN (Socket Mode)" in slack.detail
    monkeypatch.setenv("IMAGEBOT_SLACK_APP_TOKEN", "xapp-very-secret")
    checks = await check_all()
    text = report(checks)
    assert by_name(checks)["Discord"].detail == "token set"
    assert by_name(checks)["Slack"].detail == "bot token and app token set (Socket Mode)"
    assert "very-secret" not in text


@pytest.mark.slow  # imports torch and diffusers, or builds the tiny model
async def test_gpu_and_model_that_this_box_cannot_have(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBOT_DEVICE", "cuda")
    monkeypatch.setenv("IMAGEBOT_DEFAULT_MODEL", "sdxl")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checks = by_name(await check_all())
    assert not checks["GPU"].ok and checks["GPU"].detail.startswith("IMAGEBOT_DEVICE=cuda but torch ")
    assert not checks["model"].ok
    assert checks["model"].detail == (
        "stabilityai/stable-diffusion-xl-base-1.0 is not in the Hugging Face cache and HF_HUB_OFFLINE is set;"
        " run `huggingface-cli download stabilityai/stable-diffusion-xl-base-1.0` where the hub can be reached."
    )
    assert checks["safety checker"].detail == (
        "CompVis/stable-diffusion-safety-checker is not in the Hugging Face cache and HF_HUB_OFFLINE is set;"
        " run `huggingface-cli download CompVis/stable-diffusion-safety-checker` where the hub can be reached."
    )


@pytest.mark.slow  # imports torch and diffusers, or builds the tiny model
@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="memory is measured from Linux's /proc/meminfo")
async def test_a_model_bigger_than_the_memory_is_why_the_worker_is_killed_while_loading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Weights twice the machine's memory: the worker would die loading them, and doctor says so (not when running)."""
    total = (
        int(
            next(
                line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
            ).split()[1]
        )
        * 1024
    )
    (tmp_path / "data").mkdir()
    with (tmp_path / "data" / "huge.safetensors").open("wb") as weights:
        weights.truncate(2 * total)  # sparse: it takes no disk space
    catalog = tmp_path / "models.toml"
    catalog.write_text('[model.huge]\narchitecture = "sdxl"\nlocal = "./huge.safetensors"\n')
    monkeypatch.setenv("IMAGEBOT_CATALOG", str(catalog))
    monkeypatch.setenv("IMAGEBOT_DEFAULT_MODEL", "huge")
    memory = by_name(await check_all())["memory"]
    assert not memory.ok
    assert memory.detail.endswith(
        f"but the default model's weights take {2 * total / 1024**3:.1f} GiB; the worker would be killed while"
        " loading it: free memory, add swap, or pick a smaller IMAGEBOT_DEFAULT_MODEL."
    )
    assert by_name(await check_all(running=True))["memory"].ok


async def test_hosted_api_keys_are_tried_without_paying(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeRunware() as runware, FakeModelsLab() as modelslab:
        monkeypatch.setenv("IMAGEBOT_BACKEND", "runware")
        monkeypatch.setenv("IMAGEBOT_RUNWARE_URL", runware.url)
        monkeypatch.setenv("IMAGEBOT_RUNWARE_API_KEY", runware.api_key)
        assert by_name(await check_all())["Runware"].ok
        monkeypatch.setenv("IMAGEBOT_RUNWARE_API_KEY", "rw-wrong")
        refused = by_name(await check_all())["Runware"]
        assert (refused.ok, refused.detail) == (False, "the API key was refused; set a valid IMAGEBOT_RUNWARE_API_KEY.")

        monkeypatch.setenv("IMAGEBOT_BACKEND", "modelslab")
        monkeypatch.setenv("IMAGEBOT_MODELSLAB_URL", modelslab.url)
        monkeypatch.setenv("IMAGEBOT_MODELSLAB_API_KEY", modelslab.api_key)
        assert by_name(await check_all())["ModelsLab"].ok
        monkeypatch.setenv("IMAGEBOT_MODELSLAB_API_KEY", "ml-wrong")
        assert not by_name(await check_all())["ModelsLab"].ok
        url = modelslab.url
    assert runware.charges == [] and modelslab.charges == []
    unreachable = by_name(await check_all())["ModelsLab"]  # the fake is gone
    assert not unreachable.ok and unreachable.detail.startswith(f"{url} cannot be reached (ConnectError)")


async def test_the_command_exits_non_zero_on_a_failure(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    env |= {"IMAGEBOT_BACKEND": "runware", "IMAGEBOT_DATA_DIR": str(tmp_path / "data")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagebot.cli", "doctor", cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 1
    # One line a check, the names in a column as wide as the longest ("wildcards").
    lines = out.decode().splitlines()
    assert "✖ Runware    IMAGEBOT_RUNWARE_API_KEY is not set; create a key in Runware's dashboard." in lines
    assert (
        f"✔ wildcards  none: files of choices in {tmp_path / 'data' / 'wildcards'} would be drawn from with __name__"
        in lines
    )


def test_every_shipped_backend_and_chat_is_found_by_name() -> None:
    """The entry points name the four backends and two chats, each a plugin of its kind."""
    from imagebot.plugins import backend_plugins, chat_plugins

    assert list(backend_plugins()) == ["local", "modelslab", "ray", "runware"]
    assert list(chat_plugins()) == ["discord", "slack"]


def test_an_unknown_backend_names_the_installed_ones() -> None:
    """IMAGEBOT_BACKEND with a name no plugin has is one sentence listing those that exist."""
    from bot.plugins import ConfigurationError
    from imagebot.plugins import backend_plugin

    with pytest.raises(ConfigurationError) as refused:
        backend_plugin("comfyui")
    assert str(refused.value) == (
        "IMAGEBOT_BACKEND=comfyui is not available in this version; use local, modelslab, ray, runware."
    )


async def test_finding_plugins_imports_no_sdk() -> None:
    """Loading every plugin imports no chat SDK, torch, Ray or HTTP client: they load when used."""
    code = (
        "import sys; from imagebot.plugins import backend_plugins, chat_plugins; backend_plugins(); chat_plugins();"
        " print(sorted(m for m in ('discord', 'slack_bolt', 'torch', 'ray', 'httpx', 'huggingface_hub')"
        " if m in sys.modules))"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert out.decode().strip() == "[]"


async def test_doctor_without_the_local_extra_says_which_extra_is_missing(tmp_path: Path) -> None:
    """With huggingface_hub unimportable, the model check fails with the install sentence instead of crashing."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    for name in ("huggingface_hub", "torch"):
        (blocker / f"{name}.py").write_text("raise ImportError('not installed')\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    env |= {
        "IMAGEBOT_DATA_DIR": str(tmp_path / "data"),
        "IMAGEBOT_DEFAULT_MODEL": "sdxl",
        "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}",
        "HF_HOME": str(tmp_path / "hf"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagebot",
        "doctor",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 1, err.decode()
    assert "Traceback" not in out.decode() + err.decode()
    assert "the local extra is not installed; install it (pip install -e '.[local]')." in out.decode()


GIB = 1024**3


def _probe(free_gib: float, total_gib: float = 24) -> dict[str, object]:
    """What the CUDA probe prints for one GPU with `free_gib` free."""
    device = {"name": "NVIDIA L4", "free": int(free_gib * GIB), "total": int(total_gib * GIB)}
    return {"torch": "2.13.0+cu128", "cuda": "12.8", "devices": [device]}


@pytest.mark.parametrize(
    ("free", "offload", "ok", "says"),
    [
        (20, "none", True, "NVIDIA L4: 20.0 of 24.0 GiB free (CUDA 12.8), offload none"),
        (20, "model", True, "IMAGEBOT_OFFLOAD=none would fit and run faster"),
        (10, "none", False, "Set IMAGEBOT_OFFLOAD=model (only the running model on the GPU, a little slower)."),
        (10, "model", True, "NVIDIA L4: 10.0 of 24.0 GiB free (CUDA 12.8), offload model"),
        (4, "model", False, "Set IMAGEBOT_OFFLOAD=sequential (layer by layer, many times slower)."),
        (2, "sequential", False, "SDXL needs about 3 GiB even layer by layer"),
    ],
)
def test_doctor_says_which_offload_mode_the_free_gpu_memory_fits(free, offload, ok, says) -> None:
    """Free VRAM against SDXL base + refiner: everything on the GPU, model offload, or layer by layer."""
    from inference.plugins import gpu_check

    check = gpu_check("auto", offload, _probe(free), running=False)
    assert check.ok is ok
    assert says in check.detail


def test_doctor_does_not_count_the_running_workers_memory_against_it() -> None:
    from inference.plugins import gpu_check

    check = gpu_check("cuda:0", "none", _probe(1), running=True)
    assert check.ok and "the worker holds its share" in check.detail

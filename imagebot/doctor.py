"""``imagebot doctor``: check the configuration before (or while) the bot runs, one line per check.

Each check says what it found, or, when it fails, one sentence with the fix.
Secrets are reported as set or not set, never shown. Nothing is changed: the
database is read, not migrated; the GPU is probed in a child process, so this
process never imports torch (the same rule as the bot's).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from bot.catalog import load_catalog
from bot.config import (
    SETTINGS,
    CoreSettings,
    DiscordSettings,
    LocalWorkerSettings,
    ModelsLabSettings,
    RaySettings,
    RunwareSettings,
    SlackSettings,
    env_name,
)

__all__ = ["Check", "check_all", "report"]

# Run in a child process: the bot side never imports torch.
_CUDA_PROBE = """
import json, torch
devices = []
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        devices.append({"name": torch.cuda.get_device_name(i), "free": free, "total": total})
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "devices": devices}))
"""
# What SDXL base + refiner in bf16 take, with the shared text encoder and VAE, plus activations at 1024².
_SDXL_VRAM = 12 * 1024**3


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: what was checked, whether it passed, and what was found (or the fix)."""

    name: str
    ok: bool
    detail: str


def report(checks: list[Check]) -> str:
    """Return the checks as a table, one line each."""
    width = max(len(check.name) for check in checks)
    return "\n".join(f"{'✔' if check.ok else '✖'} {check.name:<{width}}  {check.detail}" for check in checks)


async def check_all(*, running: bool = False) -> list[Check]:
    """Run every check that applies to the configuration in the environment.

    Args:
        running: the bot is running (a health check): its own worker holds GPU memory,
            so free VRAM is reported, not required.
    """
    checks = [_settings()]
    if not checks[0].ok:
        return checks  # everything else reads the settings
    core, worker = CoreSettings(), LocalWorkerSettings()
    catalog = load_catalog(core.catalog)
    model = core.default_model or ("sdxl" if core.backend != "local" else None)
    steps: list[Callable[[], Awaitable[Check]]] = [
        lambda: _data_dir(core.data_dir),
        lambda: _database(core.data_dir / "imagebot.sqlite3"),
        _chats,
    ]
    if core.backend == "local":
        local = catalog.get("model", model or "tiny").local
        steps += [lambda: _gpu(worker, running), lambda: _model(core, local), lambda: _safety(worker, local)]
    backends = {core.backend} | {m.backend for m in catalog.entries("model") if m.backend}
    if core.backend == "ray":
        steps.append(_ray)
    if "runware" in backends:
        steps.append(_runware)
    if "modelslab" in backends:
        steps.append(_modelslab)
    for step in steps:
        checks.append(await step())
    return checks


def _settings() -> Check:
    for settings in SETTINGS:
        try:
            settings()
        except ValidationError as error:
            first = error.errors()[0]
            name = env_name(settings, str(first["loc"][0])) if first["loc"] else settings.__name__
            return Check("settings", False, f"{name}: {first['msg']}; see deploy/.env.example for its values.")
    return Check("settings", True, f"{sum(len(s.model_fields) for s in SETTINGS)} settings valid")


async def _data_dir(path: Path) -> Check:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as error:
        return Check(
            "data dir",
            False,
            f"{path} is not writable ({error.strerror}); point IMAGEBOT_DATA_DIR at a folder you own.",
        )
    return Check("data dir", True, f"{path.resolve()} is writable")


async def _database(path: Path) -> Check:
    from storage._schema import SCHEMA_VERSION

    if not path.exists():
        return Check("database", True, f"{path.name} will be created on the first start (schema {SCHEMA_VERSION})")

    def version() -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    try:
        found = await asyncio.to_thread(version)
    except sqlite3.Error as error:
        return Check("database", False, f"{path} cannot be read ({error}); restore it from a backup or move it away.")
    if found > SCHEMA_VERSION:
        return Check(
            "database", False, f"schema {found} is newer than this imagebot's ({SCHEMA_VERSION}); upgrade imagebot."
        )
    if found < SCHEMA_VERSION:
        return Check("database", True, f"schema {found}; migrated to {SCHEMA_VERSION} on the next start")
    return Check("database", True, f"schema {found}, current")


async def _chats() -> Check:
    discord, slack = DiscordSettings(), SlackSettings()
    if slack.bot_token is not None and not slack.configured:
        return Check(
            "chats",
            False,
            "IMAGEBOT_SLACK_BOT_TOKEN is set without IMAGEBOT_SLACK_APP_TOKEN (Socket Mode) or"
            " IMAGEBOT_SLACK_SIGNING_SECRET (HTTP mode); set one of them.",
        )
    found = []
    if discord.token is not None:
        found.append("Discord token set")
    if slack.configured:
        found.append(
            "Slack bot token and " + ("app token set (Socket Mode)" if slack.app_token else "signing secret set")
        )
    return Check("chats", True, "; ".join(found) if found else "no chat credentials: `imagebot run` opens the console")


async def _gpu(worker: LocalWorkerSettings, running: bool) -> Check:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CUDA_PROBE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return Check("GPU", False, f"torch could not be imported ({last[0]}); run `make install` again.")
    probe = json.loads(out)
    devices = probe["devices"]
    if not devices:
        if worker.device.startswith("cuda"):
            return Check(
                "GPU",
                False,
                f"IMAGEBOT_DEVICE={worker.device} but torch {probe['torch']} sees no CUDA GPU; install torch's CUDA"
                " build (make install TORCH_SPEC=...) or set IMAGEBOT_DEVICE=auto.",
            )
        return Check("GPU", True, f"no CUDA GPU (torch {probe['torch']}): the worker runs on the CPU")
    index = int(worker.device.partition(":")[2] or 0) if worker.device.startswith("cuda") else 0
    if index >= len(devices):
        return Check("GPU", False, f"IMAGEBOT_DEVICE={worker.device} but there are {len(devices)} GPUs; pick one.")
    device = devices[index]
    free = f"{device['free'] / 1024**3:.1f} of {device['total'] / 1024**3:.1f} GiB free"
    if device["free"] < _SDXL_VRAM and not running:
        return Check(
            "GPU", False, f"{device['name']}: {free}; SDXL base + refiner need about 12 GiB, free the GPU first."
        )
    return Check("GPU", True, f"{device['name']}: {free} (CUDA {probe['cuda']})")


async def _model(core: CoreSettings, local: str | None) -> Check:
    if local is None:
        return Check(
            "model", False, "the default model has no local weights; set IMAGEBOT_DEFAULT_MODEL to one that has."
        )
    if local.startswith("tiny:"):
        built = (core.data_dir / "models" / "tiny").exists()
        return Check("model", True, "the tiny offline model is " + ("built" if built else "built on the first start"))
    if local.startswith(("/", "./")) or local.endswith(".safetensors"):
        path = Path(local) if local.startswith("/") else core.data_dir / local
        if path.exists():
            return Check("model", True, f"{path} is present")
        return Check("model", False, f"{path} does not exist; fix the catalog's local path or copy the weights there.")
    return await asyncio.to_thread(_hub_model, local)


async def _safety(worker: LocalWorkerSettings, model_local: str | None) -> Check:
    from inference.local._safety import checker_source, is_custom_checker

    if is_custom_checker(worker.safety_checker):
        return Check("safety checker", True, f"a custom checker ({worker.safety_checker}), imported by the worker")
    source = checker_source(worker.safety_checker, model_local or "")
    if source is None:
        return Check("safety checker", True, "off (IMAGEBOT_SAFETY_CHECKER=off): images are not checked")
    if source.startswith("tiny:"):
        return Check("safety checker", True, "the tiny offline checker (built with the tiny model)")
    if source.startswith(("/", "./")):
        path = Path(source)
        if path.exists():
            return Check("safety checker", True, f"{path} is present")
        return Check("safety checker", False, f"{path} does not exist; fix IMAGEBOT_SAFETY_CHECKER.")
    return await asyncio.to_thread(_hub_model, source, "safety checker", "about 1.2 GB")


def _hub_model(repo: str, name: str = "model", size: str = "several GB") -> Check:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    # Read at call time: huggingface_hub's own constant is fixed when it is first imported.
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    try:
        cached = {
            entry.repo_id for entry in scan_cache_dir(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")).repos
        }
    except CacheNotFound:
        cached = set()
    if repo in cached:
        return Check(name, True, f"{repo} is in the Hugging Face cache")
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return Check(
            name,
            False,
            f"{repo} is not in the Hugging Face cache and HF_HUB_OFFLINE is set;"
            f" run `huggingface-cli download {repo}` where the hub can be reached.",
        )
    return Check(name, True, f"{repo} will be downloaded on the first image ({size})")


async def _ray() -> Check:
    settings = RaySettings()
    name = settings.app_name

    def probe() -> Check:
        try:
            import ray
            from ray import serve
        except ImportError:
            return Check("Ray", False, "Ray Serve is not installed; install the ray extra (pip install -e '.[ray]').")
        try:
            if not ray.is_initialized():
                ray.init(address=settings.address, log_to_driver=False)
            status = serve.status()
        except Exception as error:
            return Check(
                "Ray",
                False,
                f"the Ray cluster at {settings.address} cannot be reached ({type(error).__name__});"
                " check IMAGEBOT_RAY_ADDRESS and that the head node runs.",
            )
        app = status.applications.get(name)
        if app is None:
            return Check(
                "Ray", False, f"the cluster has no '{name}' Serve application; deploy it with deploy/ray-serve.yaml."
            )
        replicas = sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())
        if app.status != "RUNNING" or not replicas:
            return Check(
                "Ray", False, f"'{name}' is {app.status.value} with {replicas} running replicas; see `serve status`."
            )
        return Check("Ray", True, f"'{name}' is running on {replicas} replicas")

    return await asyncio.to_thread(probe)


async def _runware() -> Check:
    import httpx

    settings = RunwareSettings()
    if settings.api_key is None:
        return Check("Runware", False, "IMAGEBOT_RUNWARE_API_KEY is not set; create a key in Runware's dashboard.")
    # A poll of a task that does not exist: charges nothing, and tells a refused key from a good one.
    task = [{"taskType": "getResponse", "taskUUID": str(uuid.uuid4())}]
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(settings.url, json=task, headers=headers)
    except httpx.HTTPError as error:
        return Check(
            "Runware",
            False,
            f"{settings.url} cannot be reached ({type(error).__name__}); check IMAGEBOT_RUNWARE_URL and the network.",
        )
    if response.status_code in (401, 403):
        return Check("Runware", False, "the API key was refused; set a valid IMAGEBOT_RUNWARE_API_KEY.")
    return Check("Runware", True, f"{settings.url} reachable, API key accepted")


async def _modelslab() -> Check:
    import httpx

    settings = ModelsLabSettings()
    if settings.api_key is None:
        return Check(
            "ModelsLab", False, "IMAGEBOT_MODELSLAB_API_KEY is not set; create a key in ModelsLab's dashboard."
        )
    # A fetch of a job that does not exist: charges nothing, and its answer says whether the key is valid.
    body = {"key": settings.api_key.get_secret_value(), "request_id": "0"}
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(settings.url.rstrip("/") + "/fetch", json=body)
        answer = response.json()
    except (httpx.HTTPError, ValueError) as error:
        return Check(
            "ModelsLab",
            False,
            f"{settings.url} cannot be reached ({type(error).__name__}); check IMAGEBOT_MODELSLAB_URL and the network.",
        )
    message = str(answer.get("message", answer.get("messege", ""))) if isinstance(answer, dict) else ""
    if "api key" in message.lower():
        return Check("ModelsLab", False, "the API key was refused; set a valid IMAGEBOT_MODELSLAB_API_KEY.")
    return Check("ModelsLab", True, f"{settings.url} reachable, API key accepted")

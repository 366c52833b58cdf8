"""The backends this package ships, as plugins (`bot.plugins.BackendPlugin`) found by name through entry points.

Each creates its backend from its own settings and runs its own doctor checks;
importing this module imports none of their SDKs (torch, Ray, httpx), so a
bot installed without an extra still starts, and says which extra is missing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from bot.catalog import Catalog, CatalogEntry, Kind
from bot.config import CoreSettings, LocalWorkerSettings, ModelsLabSettings, RaySettings, RunwareSettings
from bot.errors import shown
from bot.plugins import Check, ConfigurationError
from bot.ports import Backend

__all__ = ["gpu_check", "local", "modelslab", "ray", "runware"]

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
# Free GPU memory SDXL base + refiner at 1024² need in bf16, by IMAGEBOT_OFFLOAD: everything on the
# GPU (weights 11.5 GiB plus activations), only the running model (the base UNet, 5 GiB, plus the
# VAE's decode), one layer at a time. Estimates; bench/gpu_sdxl.py's offload row measures the middle one.
_VRAM_BY_OFFLOAD = {"none": 12 * 1024**3, "model": 8 * 1024**3, "sequential": 3 * 1024**3}
_OFFLOAD_NOTES = {
    "none": "everything on the GPU",
    "model": "only the running model on the GPU, a little slower",
    "sequential": "layer by layer, many times slower",
}
# SDXL base's weights in half precision, for a model on the hub: its cache may hold other variants too.
_SDXL_WEIGHTS = 7 * 1024**3


class LocalPlugin:
    """The diffusers worker process on this machine's GPU (or CPU)."""

    name = "local"

    def create(self, catalog: Catalog, core: CoreSettings) -> Backend:
        """Return the local backend; torch is imported by its worker process only."""
        from inference.local import LocalBackend

        worker = LocalWorkerSettings()
        token = worker.hf_token.get_secret_value() if worker.hf_token else None
        return LocalBackend(
            catalog,
            core.data_dir,
            device=worker.device,
            dtype=worker.dtype,
            hf_token=token,
            stall_timeout=worker.stall_timeout,
            load_timeout=worker.load_timeout,
            max_batch=worker.max_batch,
            safety_checker=worker.safety_checker,
            preview_decoder=worker.preview_decoder,
            warmup=worker.warmup,
        )

    async def checks(self, catalog: Catalog, core: CoreSettings, *, running: bool) -> list[Check]:
        """Check the GPU, the default model's and safety checker's weights, memory, upscaler, annotators, captioners."""
        worker = LocalWorkerSettings()
        local = catalog.get("model", core.default_model or "tiny").local
        checks = [
            await _gpu(worker, running),
            await _model(core, local),
            await _safety(worker, local),
            await asyncio.to_thread(_memory, core, local, running),
        ]
        if core.upscaler:
            checks.append(_upscaler(core, catalog))
        checks += _annotators(core, catalog)
        checks += _captioners(core, catalog)
        checks.append(_installed(core, catalog))
        return checks


class RayPlugin:
    """The worker's code as Ray Serve replicas on a cluster."""

    name = "ray"

    def create(self, catalog: Catalog, core: CoreSettings) -> Backend:
        """Return a backend that joins the configured cluster."""
        try:
            from inference.ray_serve import RayBackend
        except ImportError as error:
            raise ConfigurationError(
                "IMAGEBOT_BACKEND=ray needs Ray Serve: install the ray extra (pip install -e '.[ray]')."
            ) from error
        settings, worker = RaySettings(), LocalWorkerSettings()
        return RayBackend(
            catalog,
            core.data_dir,
            settings.address,
            app_name=settings.app_name,
            stall_timeout=worker.stall_timeout,
            load_timeout=worker.load_timeout,
            concurrency=settings.concurrency,
        )

    async def checks(self, catalog: Catalog, core: CoreSettings, *, running: bool) -> list[Check]:
        """Check that the cluster answers and runs the application with replicas."""
        return [await _ray()]


class RunwarePlugin:
    """Runware's hosted API."""

    name = "runware"

    def create(self, catalog: Catalog, core: CoreSettings) -> Backend:
        """Return the Runware backend; its API key must be set."""
        from inference.runware import RunwareBackend

        settings = RunwareSettings()
        if settings.api_key is None:
            raise ConfigurationError("the runware backend needs IMAGEBOT_RUNWARE_API_KEY.")
        return RunwareBackend(catalog, settings, core.data_dir)

    async def checks(self, catalog: Catalog, core: CoreSettings, *, running: bool) -> list[Check]:
        """Try the API key with a request that costs nothing."""
        return [await _runware()]


class ModelsLabPlugin:
    """ModelsLab's hosted API."""

    name = "modelslab"

    def create(self, catalog: Catalog, core: CoreSettings) -> Backend:
        """Return the ModelsLab backend; its API key must be set."""
        from inference.modelslab import ModelsLabBackend

        settings = ModelsLabSettings()
        if settings.api_key is None:
            raise ConfigurationError("the modelslab backend needs IMAGEBOT_MODELSLAB_API_KEY.")
        return ModelsLabBackend(catalog, settings, core.data_dir)

    async def checks(self, catalog: Catalog, core: CoreSettings, *, running: bool) -> list[Check]:
        """Try the API key with a request that costs nothing."""
        return [await _modelslab()]


local = LocalPlugin()
ray = RayPlugin()
runware = RunwarePlugin()
modelslab = ModelsLabPlugin()


async def _gpu(worker: LocalWorkerSettings, running: bool) -> Check:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CUDA_PROBE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return Check("GPU", False, f"torch could not be imported ({last[0]}); install the local extra (make install).")
    return gpu_check(worker.device, worker.offload, json.loads(out), running=running)


def gpu_check(device_setting: str, offload: str, probe: dict[str, Any], *, running: bool) -> Check:
    """Judge the GPU that `device_setting` picks from a CUDA probe's answer, and say which offload mode fits.

    Args:
        device_setting: IMAGEBOT_DEVICE.
        offload: IMAGEBOT_OFFLOAD (``none``, ``model``, ``sequential``).
        probe: ``{"torch", "cuda", "devices": [{"name", "free", "total"}]}`` as `_CUDA_PROBE` prints it.
        running: the bot is running, so its worker's memory is in use and not free.
    """
    devices = probe["devices"]
    if not devices:
        if device_setting.startswith("cuda"):
            return Check(
                "GPU",
                False,
                f"IMAGEBOT_DEVICE={device_setting} but torch {probe['torch']} sees no CUDA GPU; install torch's CUDA"
                " build (make install TORCH_SPEC=...) or set IMAGEBOT_DEVICE=auto.",
            )
        return Check("GPU", True, f"no CUDA GPU (torch {probe['torch']}): the worker runs on the CPU")
    index = int(device_setting.partition(":")[2] or 0) if device_setting.startswith("cuda") else 0
    if index >= len(devices):
        return Check("GPU", False, f"IMAGEBOT_DEVICE={device_setting} but there are {len(devices)} GPUs; pick one.")
    device = devices[index]
    free = f"{device['free'] / 1024**3:.1f} of {device['total'] / 1024**3:.1f} GiB free"
    if running:
        return Check("GPU", True, f"{device['name']}: {free} (CUDA {probe['cuda']}; the worker holds its share)")
    fits = next((mode for mode, need in _VRAM_BY_OFFLOAD.items() if device["free"] >= need), None)
    if fits is None:
        return Check(
            "GPU",
            False,
            f"{device['name']}: {free}; SDXL needs about 3 GiB even layer by layer (IMAGEBOT_OFFLOAD=sequential)."
            " Free the GPU or set IMAGEBOT_DEVICE=cpu.",
        )
    order = list(_VRAM_BY_OFFLOAD)
    if order.index(offload) < order.index(fits):
        need = _VRAM_BY_OFFLOAD[offload] / 1024**3
        return Check(
            "GPU",
            False,
            f"{device['name']}: {free}; SDXL base + refiner with IMAGEBOT_OFFLOAD={offload} need about {need:.0f} GiB."
            f" Set IMAGEBOT_OFFLOAD={fits} ({_OFFLOAD_NOTES[fits]}).",
        )
    note = "" if offload == fits else f"; IMAGEBOT_OFFLOAD={fits} would fit and run faster"
    return Check("GPU", True, f"{device['name']}: {free} (CUDA {probe['cuda']}), offload {offload}{note}")


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


def _upscaler(core: CoreSettings, catalog: Catalog) -> Check:
    """Check that IMAGEBOT_UPSCALER names a catalog upscaler whose weight file is there (its network is read on use)."""
    entry = catalog.find("upscaler", core.upscaler or "")
    if entry is None or not entry.local:
        return Check(
            "upscaler", False, f"IMAGEBOT_UPSCALER={core.upscaler} names no catalog upscaler with local weights."
        )
    if entry.local.startswith("tiny:"):
        return Check("upscaler", True, f"{entry.name}: a tiny offline network (built with the tiny model)")
    if entry.local.startswith(("/", "./")):
        path = Path(entry.local) if entry.local.startswith("/") else core.data_dir / entry.local
        if path.is_file():
            return Check("upscaler", True, f"{entry.name}: {path} is present")
        return Check("upscaler", False, f"{path} does not exist; copy the upscaler's weights there or fix the catalog.")
    return Check("upscaler", True, f"{entry.name}: {entry.local}, downloaded on first use")


def _installed(core: CoreSettings, catalog: Catalog) -> Check:
    """Name the catalog entries the local backend cannot load here: users who name one are refused.

    No fault (an operator may keep entries for another machine or backend); the default model
    has its own check above.
    """
    from inference.local._job import asset_of, hub_offline, installed

    kinds: tuple[Kind, ...] = ("model", "refiner", "vae", "lora", "embedding", "controlnet", "upscaler")
    entries = [entry for kind in kinds for entry in catalog.entries(kind) if entry.local]
    missing = [entry.name for entry in entries if not installed(asset_of(entry, core.data_dir))]
    if not missing:
        fetched = "" if hub_offline() else " (hub repositories are downloaded on first use)"
        return Check("catalog", True, f"the local backend can load all {len(entries)} entries{fetched}")
    why = "files missing, or not in the Hugging Face cache while HF_HUB_OFFLINE is set"
    names = shown(", ".join(missing), 200)
    refused = "a user who names one is told it is not installed"
    return Check("catalog", True, f"{len(missing)} of {len(entries)} entries are not here ({why}): {names}; {refused}")


def _operator_folders(core: CoreSettings, catalog: Catalog, kind: Kind) -> list[tuple[CatalogEntry, Path]]:
    """Return the catalog entries of `kind` whose folder the operator made, and the folders.

    An entry without a folder is simply not offered (what it does is refused with a sentence),
    which is no fault; a tiny one comes with the tiny model.
    """
    found = []
    for entry in catalog.entries(kind):
        local = entry.local or ""
        if local.startswith(("/", "./")):
            path = Path(local) if local.startswith("/") else core.data_dir / local
            if path.exists():
                found.append((entry, path))
    return found


def _annotators(core: CoreSettings, catalog: Catalog) -> list[Check]:
    """Check each catalog annotator whose folder the operator made: it must hold a transformers model."""
    checks = []
    for entry, path in _operator_folders(core, catalog, "annotator"):
        detector = path / "detector"  # an openpose annotator's optional person detector
        if not (path / "config.json").is_file():
            detail = f"{path} holds no config.json; download the annotator's transformers weights there."
            checks.append(Check("annotator", False, f"{entry.name}: {detail}"))
        elif detector.exists() and not (detector / "config.json").is_file():
            # Without its config the worker would pose the whole image as one person, silently.
            detail = f"{detector} holds no config.json; download the person detector's transformers weights there."
            checks.append(Check("annotator", False, f"{entry.name}: {detail}"))
        else:
            found = " with its person detector" if detector.exists() else ""
            runs = f"--preprocess {entry.preprocess} runs on the local backend"
            checks.append(Check("annotator", True, f"{entry.name}: {path} is present{found}; {runs}"))
    return checks


def _captioners(core: CoreSettings, catalog: Catalog) -> list[Check]:
    """Check each catalog captioner whose folder the operator made: it must hold a transformers model."""
    checks = []
    for entry, path in _operator_folders(core, catalog, "captioner"):
        if not (path / "config.json").is_file():
            detail = f"{path} holds no config.json; download the captioner's transformers weights there."
            checks.append(Check("captioner", False, f"{entry.name}: {detail}"))
        else:
            runs = "/describe runs on the local backend"
            checks.append(Check("captioner", True, f"{entry.name}: {path} is present; {runs}"))
    return checks


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


def _memory(core: CoreSettings, local: str | None, running: bool) -> Check:
    """Compare the memory available with the default model's weights, which the worker reads into it to load them.

    Short of it, the kernel's out-of-memory killer kills the worker while it loads the model, and jobs
    fail with "the worker cannot load the model". A running bot's worker holds its own share already,
    so then the numbers are reported, not required.
    """
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return Check("memory", True, "not measured on this system")
    weights = _weights_bytes(core, local)
    found = f"{available / 1024**3:.1f} GiB available"
    if weights is None:
        return Check("memory", True, found)
    needed = f"the default model's weights take {weights / 1024**3:.1f} GiB"
    if weights > available and not running:
        return Check(
            "memory",
            False,
            f"{found} but {needed}; the worker would be killed while loading it: free memory, add swap,"
            " or pick a smaller IMAGEBOT_DEFAULT_MODEL.",
        )
    return Check("memory", True, f"{found}; {needed}")


def _weights_bytes(core: CoreSettings, local: str | None) -> int | None:
    """Return the size of the default model's weights: measured on disk, estimated on the hub, None if unknown."""
    if local is None:
        return None
    if local.startswith("tiny:"):
        path = core.data_dir / "models" / "tiny"
    elif local.startswith(("/", "./")) or local.endswith(".safetensors"):
        path = Path(local) if local.startswith("/") else core.data_dir / local
    else:
        return _SDXL_WEIGHTS
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) if path.is_dir() else None


def _hub_model(repo: str, name: str = "model", size: str = "several GB") -> Check:
    try:
        import huggingface_hub  # noqa: F401  (the worker downloads with it; installed, not merely present)
    except ImportError:
        return Check(name, False, "the local extra is not installed; install it (pip install -e '.[local]').")
    from inference.local._job import hub_cached, hub_offline

    if hub_cached(repo):
        return Check(name, True, f"{repo} is in the Hugging Face cache")
    if hub_offline():
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

"""Settings from the environment (prefix ``IMAGEBOT_``) and an optional ``.env`` file.

Only entry points (the CLI, `imagebot.bootstrap`) read these; everything else is
given plain values, so tests need no environment variables. Secrets are
`SecretStr`, so they never print in a repr or a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "SETTINGS",
    "CoreSettings",
    "DiscordSettings",
    "GallerySettings",
    "LocalWorkerSettings",
    "ModelsLabSettings",
    "QueueSettings",
    "RaySettings",
    "RunwareSettings",
    "SlackSettings",
    "env_example",
    "env_name",
]


def _config(prefix: str = "IMAGEBOT_") -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


class CoreSettings(BaseSettings):
    """Where data lives, which backend runs, and what requests may ask for."""

    model_config = _config()

    data_dir: Path = Field(default=Path("./data"), description="SQLite file, images and the tiny model.")
    backend: Literal["local", "ray", "runware", "modelslab"] = Field(
        default="local", description="Where images are made (ray: a Ray Serve cluster of GPU replicas)."
    )
    default_model: str | None = Field(
        default=None,
        description="Catalog model used when a request names none; unset: sdxl with CUDA, else tiny.",
    )
    catalog: Path | None = Field(default=None, description="A models.toml to use instead of the shipped one.")
    wildcards: Path | None = Field(
        default=None,
        description="Folder of wildcard files (name.txt, a choice a line) that __name__ in a prompt draws from; "
        "unset: <data dir>/wildcards, when it exists.",
    )
    upscaler: str | None = Field(
        default=None,
        description="Catalog upscaler (an ESRGAN-family network) that local upscales run; unset: the hires fix.",
    )
    pixel_budget: int = Field(
        default=4 * 1024 * 1024, ge=128 * 128, description="Largest width × height × count of one request."
    )
    max_input_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest image (--image, --mask) a user may give, in bytes."
    )
    max_input_pixels: int = Field(
        default=4096 * 4096, ge=128 * 128, description="Largest image a user may give, in width × height pixels."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="Log lines as JSON objects or text; auto: JSON unless stderr is a terminal."
    )
    log_prompts: bool = Field(default=False, description="Log users' prompts at INFO (otherwise only at DEBUG).")
    retention_days: float = Field(
        default=0, ge=0, description="Delete finished images and their history after this many days (0: keep them)."
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve Prometheus /metrics on this port; unset: off."
    )
    metrics_host: str = Field(default="127.0.0.1", description="The address /metrics listens on.")

    @property
    def wildcard_folder(self) -> Path:
        """The folder the wildcard files are read from: `wildcards`, else ``<data dir>/wildcards``."""
        return self.wildcards or self.data_dir / "wildcards"


class LocalWorkerSettings(BaseSettings):
    """The local diffusers worker process."""

    model_config = _config()

    device: str = Field(default="auto", description="torch device for the worker: auto, cuda, cuda:1, cpu.")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto", description="Weights dtype; auto: bfloat16 on CUDA, float32 on CPU."
    )
    hf_token: SecretStr | None = Field(default=None, description="Hugging Face token for gated models.")
    stall_timeout: float = Field(
        default=300.0, gt=0, description="Seconds a job may go without a step before its worker is killed and retried."
    )
    load_timeout: float = Field(
        default=3600.0, gt=0, description="The same before a job's first step (loading or downloading its models)."
    )
    max_batch: int = Field(
        default=4, ge=1, description="Compatible queued jobs made in one pipeline call (1: no batching)."
    )
    safety_checker: str = Field(
        default="auto",
        description=(
            "Image check after generation: auto (CompVis/stable-diffusion-safety-checker, the tiny checker for"
            " the tiny model), off, tiny, a StableDiffusionSafetyChecker's Hugging Face id or folder, or"
            " module:callable, a factory the worker imports that returns a checker of its own."
        ),
    )
    channels_last: bool = Field(
        default=True, description="CUDA: UNets and ControlNets in channels-last memory format (same image, faster)."
    )
    fuse_qkv: bool = Field(
        default=False,
        description="Fuse each attention's query, key and value projections (same image; undone with LoRAs).",
    )
    compile: Literal["off", "unet", "all"] = Field(
        default="off",
        description=(
            "torch.compile the UNets (unet) and the VAE decoder too (all); the first job of each size compiles"
            " for a minute or more, cached under the data dir across restarts."
        ),
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        default="default", description="torch.compile's mode when compile is on (max-autotune: longer compile, faster)."
    )
    warmup: bool = Field(
        default=True,
        description=(
            "Make one small image of the default model when the bot starts (imagebot run, chat): the model is"
            " loaded, and compiled when compile is on, before the first user asks."
        ),
    )
    offload: Literal["none", "model", "sequential"] = Field(
        default="none",
        description=(
            "CUDA memory: model (only the running model on the GPU; SDXL + refiner on 8-12 GB, a little slower),"
            " sequential (layer by layer, ~4 GB, many times slower)."
        ),
    )
    vae_tiling: bool = Field(default=False, description="Decode large images tile by tile (bounded VAE memory).")
    preview_decoder: str = Field(
        default="linear",
        description=(
            "Live previews: linear (a linear map of the latents, 1/8 size, no weights), tiny, or a tiny"
            " autoencoder's Hugging Face id or folder (madebyollin/taesdxl: full-size previews)."
        ),
    )


class QueueSettings(BaseSettings):
    """Limits of the job queue."""

    model_config = _config()

    max_queue: int = Field(default=100, ge=1, description="Jobs queued at once, all users together.")
    max_per_user: int = Field(default=4, ge=1, description="Jobs one user may have queued or running.")
    daily_quota: int = Field(
        default=0, ge=0, description="Images one server or workspace may make per UTC day (0: no limit)."
    )


class DiscordSettings(BaseSettings):
    """The Discord bot; it starts when a token is set."""

    model_config = _config("IMAGEBOT_DISCORD_")

    token: SecretStr | None = Field(default=None, description="Bot token; the Discord bot runs when it is set.")
    api_base: str | None = Field(default=None, description="REST base URL (tests: a loopback fake).")
    gateway_url: str | None = Field(default=None, description="Gateway WebSocket URL (tests: a loopback fake).")
    guild_id: int | None = Field(
        default=None, description="Sync the commands to this guild only (instant) instead of globally."
    )
    progress_interval: float = Field(
        default=1.5, ge=0, description="Seconds between progress edits of one message (Discord rate-limits edits)."
    )


class SlackSettings(BaseSettings):
    """The Slack app; it starts when the bot token and either the app token or the signing secret are set."""

    model_config = _config("IMAGEBOT_SLACK_")

    bot_token: SecretStr | None = Field(default=None, description="Bot token (xoxb-…); the Slack app runs when set.")
    app_token: SecretStr | None = Field(
        default=None, description="App-level token (xapp-…) for Socket Mode, which needs no public URL."
    )
    signing_secret: SecretStr | None = Field(
        default=None, description="Signing secret for HTTP mode (POST /slack/events), used when no app token is set."
    )
    api_base: str | None = Field(default=None, description="Web API base URL ending in / (tests: a loopback fake).")
    host: str = Field(default="0.0.0.0", description="HTTP mode: the address to listen on.")
    port: int = Field(default=3000, ge=0, le=65535, description="HTTP mode: the port to listen on.")
    progress_interval: float = Field(
        default=2.0, ge=0, description="Seconds between progress updates of one message (chat.update is rate-limited)."
    )

    @property
    def configured(self) -> bool:
        """Tell whether there is enough to start: a bot token and a way to receive events."""
        return self.bot_token is not None and (self.app_token is not None or self.signing_secret is not None)


class GallerySettings(BaseSettings):
    """The web gallery of each user's images; it starts with `imagebot run` when a port is set."""

    model_config = _config("IMAGEBOT_GALLERY_")

    port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve the gallery on this port; unset: off (no link is given)."
    )
    host: str = Field(
        default="127.0.0.1", description="The address it listens on; keep loopback behind a reverse proxy."
    )
    base_url: str | None = Field(
        default=None,
        description=(
            "The public URL the links start with, e.g. https://bot.example.com/gallery (its path is served as"
            " is, so the proxy passes it through); unset: http://HOST:PORT."
        ),
    )
    token_days: float = Field(default=7.0, gt=0, description="Days a gallery link works after /gallery gives it.")
    secret: SecretStr | None = Field(
        default=None,
        description="Key that signs the links (never logged); unset: a random one kept in DATA_DIR/gallery/secret.",
    )
    rate_limit: int = Field(default=120, ge=1, description="Requests one link may make per minute.")


class RunwareSettings(BaseSettings):
    """The Runware backend (IMAGEBOT_BACKEND=runware)."""

    model_config = _config("IMAGEBOT_RUNWARE_")

    api_key: SecretStr | None = Field(default=None, description="Runware API key (never logged).")
    url: str = Field(default="https://api.runware.ai/v1", description="REST endpoint (tests: a loopback fake).")
    timeout: float = Field(default=60.0, gt=0, description="Seconds one HTTP request may take before it is retried.")
    retry_budget: float = Field(
        default=120.0, ge=0, description="Seconds spent retrying transient failures (429, 5xx, timeouts) of one job."
    )
    async_above: float = Field(
        default=120.0,
        ge=0,
        description="Work (megapixels × steps × images) above which a job is queued at Runware and polled.",
    )
    poll_timeout: float = Field(default=600.0, gt=0, description="Seconds to wait for a polled job's images.")
    output_type: Literal["URL", "base64Data"] = Field(
        default="URL", description="How Runware returns images: a URL downloaded at once, or inline base64."
    )
    max_connections: int = Field(default=16, ge=1, description="Concurrent HTTP connections to Runware.")
    check_content: bool = Field(
        default=True, description="Ask Runware to check each image (safety.checkContent); flagged ones are spoilered."
    )


class RaySettings(BaseSettings):
    """The Ray Serve backend (IMAGEBOT_BACKEND=ray): GPU replicas deployed from deploy/ray-serve.yaml."""

    model_config = _config("IMAGEBOT_RAY_")

    address: str = Field(
        default="auto",
        description="The Ray cluster: ray://head:10001 (Ray Client), or auto for a cluster this machine belongs to.",
    )
    app_name: str = Field(default="imagebot", description="The Serve application's name in deploy/ray-serve.yaml.")
    concurrency: int = Field(
        default=8,
        ge=1,
        description="Jobs sent to the cluster at once (replicas × max_batch lets every replica fill a batch).",
    )


class ModelsLabSettings(BaseSettings):
    """The ModelsLab backend (IMAGEBOT_BACKEND=modelslab)."""

    model_config = _config("IMAGEBOT_MODELSLAB_")

    api_key: SecretStr | None = Field(default=None, description="ModelsLab API key (never logged).")
    url: str = Field(
        default="https://modelslab.com/api/v4/dreambooth",
        description="v4 text-to-image endpoint (tests: a loopback fake).",
    )
    upload_url: str = Field(
        default="https://modelslab.com/api/v6/base64_to_url",
        description="Base64-to-URL endpoint: an upscale's input is uploaded there first (a link for 24 hours).",
    )
    upscale_url: str = Field(
        default="https://modelslab.com/api/v6/image_editing/super_resolution",
        description="Super-resolution endpoint that upscales (RealESRGAN x2plus / x4plus).",
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds one HTTP request may take.")
    retry_budget: float = Field(
        default=60.0, ge=0, description="Seconds spent retrying what is safe to retry (refused submits, fetches)."
    )
    poll_timeout: float = Field(default=600.0, gt=0, description="Seconds to wait for a queued job's images.")
    max_connections: int = Field(default=16, ge=1, description="Concurrent HTTP connections to ModelsLab.")
    safety_checker: bool = Field(
        default=True, description="Ask ModelsLab to check each image (safety_checker); flagged ones are spoilered."
    )


SETTINGS: tuple[type[BaseSettings], ...] = (
    CoreSettings,
    QueueSettings,
    LocalWorkerSettings,
    RaySettings,
    RunwareSettings,
    ModelsLabSettings,
    DiscordSettings,
    SlackSettings,
    GallerySettings,
)


def settings_problem() -> str | None:
    """Return one sentence naming the first setting in the environment that is not valid, or None.

    The sentence names the variable, what is wrong with its value and where its
    allowed values are listed; the value itself is never repeated (it may be a secret).
    """
    for settings in SETTINGS:
        try:
            settings()
        except ValidationError as error:
            first = error.errors()[0]
            name = env_name(settings, str(first["loc"][0])) if first["loc"] else settings.__name__
            return f"{name}: {first['msg']}; see deploy/.env.example for its values."
    return None


def env_name(settings: type[BaseSettings], field: str) -> str:
    """Return the environment variable of a settings field, e.g. ``IMAGEBOT_SLACK_BOT_TOKEN``."""
    return (str(settings.model_config.get("env_prefix", "")) + field).upper()


def env_example() -> str:
    """Return ``deploy/.env.example``: every setting, its default and one line of help, from these classes."""
    lines = [
        "# Every imagebot setting with its default; generated by `imagebot env-example` from bot/config.py.",
        "# Copy to .env (or an EnvironmentFile) and uncomment what you change. Secrets stay empty here.",
    ]
    for settings in SETTINGS:
        lines += ["", f"# -- {settings.__doc__.splitlines()[0] if settings.__doc__ else settings.__name__}"]
        for name, field in settings.model_fields.items():
            default = field.default
            shown = "" if default is None or isinstance(default, SecretStr) else str(default)
            choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
            lines.append(f"# {field.description}" + (f" One of: {', '.join(choices)}." if choices else ""))
            lines.append(f"# {env_name(settings, name)}={shown}")
    return "\n".join(lines) + "\n"

"""deploy/ stays true to the code: the files parse, have what an operator needs, and name only real settings.

No Docker engine runs here, so the container files are checked structurally.
"""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

import yaml

from bot.config import SETTINGS, env_example, env_name

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SETTING_NAMES = {env_name(settings, field) for settings in SETTINGS for field in settings.model_fields}


def test_env_example_is_generated_from_the_settings() -> None:
    """Regenerate with `imagebot env-example > deploy/.env.example` when a setting changes."""
    assert (DEPLOY / ".env.example").read_text() == env_example()
    assert {
        line.split("=")[0].lstrip("# ")
        for line in env_example().splitlines()
        if "=" in line and line.startswith("# IMAGEBOT_")
    } == SETTING_NAMES


def test_every_imagebot_variable_in_deploy_the_readme_and_docs_is_a_setting() -> None:
    texts = [path.read_text() for path in DEPLOY.rglob("*") if path.is_file()]
    texts += [(ROOT / "README.md").read_text()]
    texts += [path.read_text() for path in (ROOT / "docs").glob("*.md")]
    used = {name for text in texts for name in re.findall(r"\bIMAGEBOT_[A-Z0-9_]+\b", text)}
    assert used - SETTING_NAMES == set()


def test_docs_configuration_has_a_row_for_every_setting() -> None:
    """docs/configuration.md lists each setting in the first cell of a table row."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(IMAGEBOT_[A-Z0-9_]+)` \|", text, flags=re.MULTILINE))
    assert documented == SETTING_NAMES


def test_compose_runs_the_bot_with_a_gpu_volumes_env_file_and_healthcheck() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    bot = compose["services"]["imagebot"]
    assert (
        ROOT / bot["build"]["context"].replace("..", ".") / bot["build"]["dockerfile"]
    ).resolve() == DEPLOY / "Dockerfile"
    (gpu,) = bot["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    mounts = dict(volume.split(":") for volume in bot["volumes"])
    assert mounts == {"imagebot-data": "/data", "hf-cache": "/hf-cache"}
    assert set(mounts) <= set(compose["volumes"])
    assert bot["env_file"] == [".env"] and bot["environment"]["IMAGEBOT_DATA_DIR"] == "/data"
    assert bot["healthcheck"]["test"] == ["CMD", "imagebot", "doctor", "--running"]
    assert bot["restart"] == "unless-stopped"


def test_dockerfile_builds_a_cuda_image_run_by_a_non_root_user() -> None:
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line and not line.startswith("#")]
    instructions = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert lines[0].startswith("ARG CUDA_IMAGE=nvidia/cuda:") and "FROM ${CUDA_IMAGE}" in lines
    assert "ARG EXTRAS=local,discord,slack,remote" in lines and any('".[$EXTRAS]"' in line for line in lines)
    user = [line for line in lines if line.startswith("USER ")]
    assert user == ["USER imagebot"] and instructions.index("USER") > instructions.index("RUN")
    assert 'VOLUME ["/data", "/hf-cache"]' in lines
    assert any(line.startswith("HEALTHCHECK") and '"doctor", "--running"' in line for line in lines)
    # every package the project installs is copied into the image
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {line.split()[1] for line in lines if line.startswith("COPY ") and not line.startswith("COPY pyproject")}
    assert {pattern.removesuffix("*").rstrip(".") for pattern in packages} == copied


def _unit(name: str) -> configparser.ConfigParser:
    """Read a systemd unit of deploy/systemd, its keys kept as written."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / name)
    return unit


def test_systemd_unit_restarts_reads_an_environment_file_and_runs_the_bot() -> None:
    unit = _unit("imagebot.service")
    service = unit["Service"]
    assert service["EnvironmentFile"] == "/etc/imagebot/imagebot.env"
    assert service["ExecStart"].endswith("/bin/imagebot run")
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_compose_ray_profile_runs_a_head_gpu_workers_and_the_bot_on_the_cluster() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    ray = {name: service for name, service in services.items() if "ray" in service.get("profiles", [])}
    assert set(ray) == {"ray-head", "ray-gpu", "imagebot-ray"}
    assert all("ray" in service["build"]["args"]["EXTRAS"].split(",") for service in ray.values())
    head = ray["ray-head"]
    config = head["volumes"][0].split(":")[0]
    assert (DEPLOY / config).resolve() == DEPLOY / "ray-serve.yaml"
    assert "ray start --head" in head["command"] and "serve deploy /etc/imagebot/ray-serve.yaml" in head["command"]
    (gpu,) = ray["ray-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "ray-head:6379" in ray["ray-gpu"]["command"]
    bot = ray["imagebot-ray"]
    assert bot["environment"]["IMAGEBOT_BACKEND"] == "ray" and bot["environment"]["IMAGEBOT_RAY_ADDRESS"] == "auto"
    assert bot["command"].endswith('exec imagebot run"') and "--num-gpus=0" in bot["command"]


def test_systemd_ray_worker_unit_joins_the_head_in_the_foreground() -> None:
    unit = _unit("imagebot-ray-worker.service")
    service = unit["Service"]
    assert service["ExecStart"] == "/opt/imagebot/.venv/bin/ray start --address=${RAY_HEAD}:6379 --block"
    assert service["EnvironmentFile"] == "/etc/imagebot/ray.env" and service["Restart"] == "on-failure"

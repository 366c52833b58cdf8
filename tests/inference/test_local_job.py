"""Resolving a request to what the worker loads, on the bot side (no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

import inference.local
from bot.catalog import Catalog, load_catalog
from bot.errors import InvalidOption
from bot.request import GenerationRequest, RefinerSpec, WeightedName
from inference.local._job import WorkerJob, build_job
from inference.local._schedulers import SCHEDULERS

CATALOG = Catalog.from_toml(
    """
[model.tiny]
architecture = "sdxl"
local = "tiny:base"

[model.mine]
architecture = "sdxl"
local = "./models/mine"

[model.flux]
architecture = "flux"
local = "black-forest-labs/FLUX.1-dev"

[model.remote-only]
architecture = "sdxl"
runware = "civitai:1@2"

[refiner.tiny-refiner]
architecture = "sdxl-refiner"
local = "tiny:refiner"

[vae.tiny-vae]
architecture = "sdxl"
local = "tiny:vae"

[lora.tiny-lora]
architecture = "sdxl"
local = "tiny:lora"

[lora.pixel-art]
architecture = "sdxl"
local = "nerijs/pixel-art-xl"
weight_name = "pixel-art-xl.safetensors"

[embedding.tiny-embedding]
architecture = "sdxl"
local = "tiny:embedding"
token = "<tiny>"

[embedding.no-token]
architecture = "sdxl"
local = "tiny:embedding"
"""
)


def request(**fields):
    values = {"prompt": "a red cube", "model": "tiny", "seed": 7, "steps": 20}
    values.update(fields)
    return GenerationRequest(**values)


def test_names_resolve_to_local_ids(tmp_path):
    """Every catalog name becomes its local id; weights, tokens and the split come along."""
    job = build_job(
        request(
            refiner=RefinerSpec(model="tiny-refiner", start_percent=80),
            vae="tiny-vae",
            loras=(WeightedName(name="tiny-lora", weight=0.5), WeightedName(name="pixel-art")),
            embeddings=(WeightedName(name="tiny-embedding"),),
            count=3,
        ),
        CATALOG,
        tmp_path,
    )
    assert job.model.local == "tiny:base"
    assert job.refiner is not None and job.refiner.local == "tiny:refiner"
    assert job.vae is not None and job.vae.local == "tiny:vae"
    assert [(lora.name, lora.local, lora.weight_name, lora.weight) for lora in job.loras] == [
        ("tiny-lora", "tiny:lora", None, 0.5),
        ("pixel-art", "nerijs/pixel-art-xl", "pixel-art-xl.safetensors", 1.0),
    ]
    assert job.embeddings[0].token == "<tiny>"
    assert (job.base_steps, job.refiner_steps) == (16, 4)
    assert job.seeds == (7, 8, 9)


def test_relative_paths_are_under_the_data_dir(tmp_path):
    """A ./ path in the catalog points into the data directory, never the working directory."""
    job = build_job(request(model="mine"), CATALOG, tmp_path)
    assert Path(job.model.local) == (tmp_path / "models" / "mine").resolve()


def test_job_round_trips_through_json():
    """The worker rebuilds exactly the job the bot sent."""
    job = build_job(request(loras=(WeightedName(name="tiny-lora"),)), CATALOG, Path("/data"))
    assert WorkerJob.from_dict(job.to_dict()) == job


def test_a_job_sends_only_the_settings_it_uses_so_a_replica_a_version_behind_takes_it():
    """Fields at their defaults are left out: a replica on the previous version (which forbids fields it does
    not know) takes a job that uses no newer setting, and refuses one that does rather than ignore it."""
    plain = build_job(request(), CATALOG, Path("/data")).to_dict()
    assert {"tiling", "variation_seeds", "variation_strength", "controlnets", "init_image"}.isdisjoint(plain)
    assert WorkerJob.from_dict(plain) == build_job(request(), CATALOG, Path("/data"))
    newer = build_job(request(tiling=True, variation_seed=5, variation_strength=0.3), CATALOG, Path("/data"))
    sent = newer.to_dict()
    assert (sent["tiling"], sent["variation_seeds"], sent["variation_strength"]) == (True, [5], 0.3)
    assert WorkerJob.from_dict(sent) == newer


def test_missing_seed_is_drawn():
    """A request without a seed gets one, so the images can still be reproduced."""
    job = build_job(request(seed=None, count=2), CATALOG, Path("/data"))
    assert job.seeds[1] == job.seeds[0] + 1


@pytest.mark.parametrize(
    ("fields", "option"),
    [
        ({"model": "tinny"}, "model"),
        ({"model": "flux"}, "model"),
        ({"model": "remote-only"}, "model"),
        ({"loras": (WeightedName(name="tiny-lorra"),)}, "lora"),
        ({"embeddings": (WeightedName(name="no-token"),)}, "embedding"),
        ({"vae": "other-vae"}, "vae"),
        ({"refiner": RefinerSpec(model="nope", start_percent=80)}, "refiner"),
        ({"scheduler": "Euler b"}, "scheduler"),
        ({"scheduler": "LCM", "steps": 60}, "steps"),
    ],
)
def test_what_cannot_run_locally_is_refused_before_the_worker(fields, option):
    """Unknown names and combinations the local backend cannot run raise InvalidOption."""
    with pytest.raises(InvalidOption) as caught:
        build_job(request(**fields), CATALOG, Path("/data"))
    assert caught.value.option == option


def test_unknown_scheduler_suggests_close_names():
    """A misspelt sampler gets a "did you mean"."""
    with pytest.raises(InvalidOption) as caught:
        build_job(request(scheduler="Euler b"), CATALOG, Path("/data"))
    assert "Euler a" in caught.value.suggestions


def test_every_scheduler_class_exists():
    """Each sampler names a diffusers scheduler class."""
    diffusers = pytest.importorskip("diffusers")
    for class_name, _ in SCHEDULERS.values():
        assert hasattr(diffusers, class_name)


def test_exported_names():
    """The package exports only the backend."""
    assert inference.local.__all__ == ["LocalBackend"]


def test_lcm_past_50_steps_is_refused_when_asked_not_when_run(tmp_path):
    """The local backend's check runs the worker's job resolution: LCM at 60 steps gets its
    sentence before anything is queued (it used to fail the job once the worker tried it)."""
    from inference.local import LocalBackend

    backend = LocalBackend(CATALOG, tmp_path)  # no worker is started by a check
    with pytest.raises(InvalidOption) as caught:
        backend.check(request(scheduler="LCM", steps=60))
    assert caught.value.option == "steps"
    assert "at most 50 with LCM" in str(caught.value)
    backend.check(request(scheduler="LCM", steps=8))
    assert backend.worker_pid is None


def test_an_upscaler_resolves_to_its_file_and_keeps_its_jobs_apart(tmp_path):
    """A catalog upscaler is the job's asset (``./`` under the data dir); its jobs never batch with hires-fix ones."""
    from inference.local._job import batch_key

    catalog = Catalog.from_toml(
        '[model.tiny]\narchitecture = "sdxl"\nlocal = "tiny:base"\n\n'
        '[upscaler.sharp]\narchitecture = "esrgan"\nlocal = "./upscalers/4x-sharp.safetensors"\n'
    )
    image = {"prompt": "a fox", "model": "tiny", "width": 256, "height": 256, "init_image": "a" * 64, "upscale": 2}
    alone = build_job(GenerationRequest(**image, upscaler="sharp", seed=3), catalog, tmp_path)
    assert alone.upscaler is not None and alone.strength is None
    assert alone.upscaler.local == str((tmp_path / "upscalers" / "4x-sharp.safetensors").resolve())
    assert WorkerJob.from_dict(alone.to_dict()) == alone
    hires = build_job(GenerationRequest(**image, strength=0.3, seed=3), catalog, tmp_path)
    assert hires.upscaler is None and batch_key(hires) != batch_key(alone)
    with pytest.raises(InvalidOption, match="not in the catalog"):
        build_job(GenerationRequest(**image, upscaler="blunt", seed=3), catalog, tmp_path)


def test_weights_not_installed_here_are_refused_before_anything_is_queued(tmp_path, monkeypatch):
    """A catalog folder that is missing, or a hub repository not in the cache while the hub is off, is one
    sentence from the backend's check (no worker started), naming the entry and not the path or repository;
    with the hub on, the worker downloads the repository on first use."""
    from inference.local import LocalBackend

    catalog = Catalog.from_toml(
        '[model.tiny]\narchitecture = "sdxl"\nlocal = "tiny:base"\n\n'
        '[model.mine]\narchitecture = "sdxl"\nlocal = "./models/mine"\n\n'
        '[controlnet.canny-sdxl]\narchitecture = "sdxl"\nlocal = "diffusers/controlnet-canny-sdxl-1.0"\n'
    )
    guided = GenerationRequest.from_dict(
        {
            "prompt": "a fox",
            "model": "tiny",
            "seed": 1,
            "controlnets": [{"model": "canny-sdxl", "guide": "b" * 64, "start_step": 1, "end_step": 20}],
        }
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    backend = LocalBackend(catalog, tmp_path / "data")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InvalidOption) as refused:
        backend.check(guided)
    sentence = "Controlnet 'canny-sdxl' is not installed on this bot; ask its operator to download it."
    assert str(refused.value) == sentence
    with pytest.raises(InvalidOption, match=r"^Model 'mine' is not installed on this bot"):
        backend.check(request(model="mine"))
    backend.check(request())  # the tiny model is built here when first used
    shipped = LocalBackend(load_catalog(), tmp_path / "data")
    prompted = guided.model_copy(
        update={"controlnets": (guided.controlnets[0].model_copy(update={"model": "ip-adapter-sdxl"}),)}
    )
    with pytest.raises(InvalidOption) as refused:
        shipped.check(prompted)
    assert (
        str(refused.value)
        == "IP-Adapter 'ip-adapter-sdxl' is not installed on this bot; ask its operator to download it."
    )

    (tmp_path / "hub" / "models--diffusers--controlnet-canny-sdxl-1.0" / "snapshots" / "0a1b").mkdir(parents=True)
    (tmp_path / "data" / "models" / "mine").mkdir(parents=True)
    backend.check(guided)
    backend.check(request(model="mine"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    (tmp_path / "hub" / "models--diffusers--controlnet-canny-sdxl-1.0" / "snapshots" / "0a1b").rmdir()
    backend.check(guided)
    assert backend.worker_pid is None

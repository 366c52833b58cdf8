"""The image check of the local worker: the tiny random-weight safety checker, in this process and in the worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.catalog import load_catalog
from inference.local._job import build_job
from tests.fakes.service import started_service
from tests.inference.remote import WHO
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

from inference.local._pipeline import SDXLRunner
from inference.local._safety import DEFAULT_CHECKER, checker_source

CATALOG = load_catalog()


@pytest.mark.parametrize(
    ("setting", "model", "source"),
    [
        ("auto", "tiny:base", "tiny:safety-checker"),
        ("auto", "stabilityai/stable-diffusion-xl-base-1.0", DEFAULT_CHECKER),
        ("off", "stabilityai/stable-diffusion-xl-base-1.0", None),
        ("tiny", "stabilityai/stable-diffusion-xl-base-1.0", "tiny:safety-checker"),
        ("./checkers/mine", "tiny:base", "./checkers/mine"),
    ],
)
def test_checker_source_per_setting_and_model(setting: str, model: str, source: str | None) -> None:
    """`auto` is diffusers' checker for real models and the tiny checker for the tiny model."""
    assert checker_source(setting, model) == source


def test_the_tiny_checker_runs_and_passes_noise(tiny_data_dir: Path) -> None:
    """The tiny checker's classifier runs on every image and, with its thresholds, flags none."""
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")
    images = runner.run(build_job(tiny_request(count=2, steps=2), CATALOG, tiny_data_dir))
    assert [image.nsfw for image in images] == [False, False]


def test_off_leaves_images_unchecked(tiny_data_dir: Path) -> None:
    """With the check off, no verdict is given (None), not a pass."""
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32", safety_checker="off")
    images = runner.run(build_job(tiny_request(steps=2), CATALOG, tiny_data_dir))
    assert [image.nsfw for image in images] == [None]


def test_a_checker_that_is_not_downloaded_fails_the_job_with_a_sentence(tiny_data_dir: Path, tmp_path: Path) -> None:
    """A configured checker that cannot be loaded fails the job rather than passing unchecked images."""
    from inference.local._pipeline import JobFailed

    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32", safety_checker=str(tmp_path / "missing"))
    with pytest.raises(JobFailed, match="safety checker could not be loaded"):
        runner.run(build_job(tiny_request(steps=2), CATALOG, tiny_data_dir))


@pytest.mark.slow
async def test_a_forced_flag_reaches_sqlite_through_the_worker_process(tiny_data_dir: Path, tmp_path: Path) -> None:
    """The worker's verdict crosses the process boundary and is stored with each image."""
    from inference.local import LocalBackend

    backend = LocalBackend(CATALOG, tiny_data_dir, device="cpu", safety_checker="tiny", safety_verdict="flag")
    try:
        async with started_service(backend, tmp_path) as (service, history):
            job = await service.imagine("a red fox --steps 2 --n 2", WHO)
            generation = await job.result()
            stored = await history.generations.get(generation.id)
    finally:
        await backend.aclose()
    assert stored is not None and [image.nsfw for image in stored.images] == [True, True]

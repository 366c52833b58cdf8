"""The image check of the local worker: the tiny random-weight checker and custom ones, here and in the worker."""

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
from inference.local._safety import DEFAULT_CHECKER, checker_source, is_custom_checker, load_checker
from tests.fakes.safety import FixedVerdict

CATALOG = load_catalog()


@pytest.mark.parametrize(
    ("setting", "model", "source"),
    [
        ("auto", "tiny:base", "tiny:safety-checker"),
        ("auto", "stabilityai/stable-diffusion-xl-base-1.0", DEFAULT_CHECKER),
        ("off", "stabilityai/stable-diffusion-xl-base-1.0", None),
        ("tiny", "stabilityai/stable-diffusion-xl-base-1.0", "tiny:safety-checker"),
        ("./checkers/mine", "tiny:base", "./checkers/mine"),
        ("tests.fakes.safety:flag_all", "tiny:base", "tests.fakes.safety:flag_all"),
    ],
)
def test_checker_source_per_setting_and_model(setting: str, model: str, source: str | None) -> None:
    """`auto` is diffusers' checker for real models and the tiny checker for the tiny model."""
    assert checker_source(setting, model) == source


@pytest.mark.parametrize(
    ("setting", "custom"),
    [
        ("tests.fakes.safety:flag_all", True),
        ("mychecks:nsfw", True),
        ("auto", False),
        ("off", False),
        ("tiny", False),
        ("tiny:safety-checker", False),
        ("tiny:checker", False),  # a tiny id, not the module `tiny`
        (DEFAULT_CHECKER, False),
        ("./checkers/mine", False),
        ("/srv/checkers:v2", False),
        ("C:\\checkers", False),
        ("package.module:", False),
    ],
)
def test_only_module_colon_callable_names_a_custom_checker(setting: str, custom: bool) -> None:
    """Hugging Face ids, folders and ``tiny:`` ids are never mistaken for a factory to import."""
    assert is_custom_checker(setting) is custom


def test_a_factory_is_imported_and_called() -> None:
    """`load_checker` returns what the named factory makes, a fresh one each time."""
    checker = load_checker("tests.fakes.safety:flag_all")
    assert isinstance(checker, FixedVerdict) and checker.flagged
    assert checker("tiny:base", ["a", "b"]) == [True, True]
    assert load_checker("tests.fakes.safety:flag_all") is not checker


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("tests.fakes.nowhere:flag_all", "cannot be imported: No module named 'tests.fakes.nowhere'"),
        ("tests.fakes.safety:flag_some", "cannot be imported: module 'tests.fakes.safety' has no attribute"),
        ("tests.inference.test_local_safety:CATALOG", "is a Catalog, not a callable"),
        ("os:getcwd", "made a str, not a checker"),
    ],
)
def test_a_factory_that_cannot_make_a_checker_is_named_in_the_error(setting: str, reason: str) -> None:
    """A missing module or callable, or one that makes no checker, raises ValueError naming the setting."""
    with pytest.raises(ValueError, match="the safety checker factory") as raised:
        load_checker(setting)
    assert setting in str(raised.value) and reason in str(raised.value)


@pytest.mark.parametrize(
    ("setting", "verdict"), [("tests.fakes.safety:flag_all", True), ("tests.fakes.safety:pass_all", False)]
)
def test_a_custom_checker_gives_the_verdict_in_place_of_the_classifier(
    tiny_data_dir: Path, setting: str, verdict: bool
) -> None:
    """The runner calls the factory's checker with the job's model and every image of the batch."""
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32", safety_checker=setting)
    images = runner.run(build_job(tiny_request(count=2, steps=2), CATALOG, tiny_data_dir))
    assert [image.nsfw for image in images] == [verdict, verdict]


def test_a_checker_can_be_handed_to_the_runner_itself(tiny_data_dir: Path) -> None:
    """In one process, composition passes the checker object; the runner calls it per pipeline call."""
    checker = FixedVerdict(True)
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32", safety_checker=checker)
    images = runner.run(build_job(tiny_request(steps=2), CATALOG, tiny_data_dir))
    assert [image.nsfw for image in images] == [True] and checker.models == ["tiny:base"]


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
async def test_a_custom_checkers_flag_reaches_sqlite_through_the_worker_process(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    """The worker imports the named checker; its verdict crosses the process boundary and is stored per image."""
    from inference.local import LocalBackend

    backend = LocalBackend(CATALOG, tiny_data_dir, device="cpu", safety_checker="tests.fakes.safety:flag_all")
    try:
        async with started_service(backend, tmp_path) as (service, history):
            job = await service.imagine("a red fox --steps 2 --n 2", WHO)
            generation = await job.result()
            stored = await history.generations.get(generation.id)
    finally:
        await backend.aclose()
    assert stored is not None and [image.nsfw for image in stored.images] == [True, True]


@pytest.mark.slow
async def test_the_worker_checks_a_users_input_images_with_its_checker(tiny_data_dir: Path) -> None:
    """`flags` crosses to the worker process and back: the configured checker's verdict per image."""
    import io

    from PIL import Image

    from inference.local import LocalBackend

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format="PNG")
    image = buffer.getvalue()
    for checker, verdict in (("tests.fakes.safety:flag_all", True), ("tests.fakes.safety:pass_all", False)):
        backend = LocalBackend(CATALOG, tiny_data_dir, device="cpu", safety_checker=checker)
        try:
            assert await backend.flags("tiny", [image, image]) == [verdict, verdict]
        finally:
            await backend.aclose()


@pytest.mark.slow
async def test_an_input_check_whose_checker_cannot_load_is_a_sentence(tiny_data_dir: Path, monkeypatch) -> None:
    """SDXL's checker (CompVis) is not in the cache and the hub is off: the check fails with a sentence."""
    import io

    from PIL import Image

    from bot.errors import BackendUnavailable
    from inference.local import LocalBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format="PNG")
    backend = LocalBackend(CATALOG, tiny_data_dir, device="cpu", safety_checker="auto")
    try:
        with pytest.raises(BackendUnavailable, match="the safety checker could not check the image"):
            await backend.flags("sdxl", [buffer.getvalue()])
        assert await backend.flags("tiny", [buffer.getvalue()]) == [False]  # the worker lives on
    finally:
        await backend.aclose()

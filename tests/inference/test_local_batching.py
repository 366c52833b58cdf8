"""Compatible jobs in one pipeline call: each image is the one it would be alone, up to batched arithmetic.

A batched matmul is not bit-identical to an unbatched one, so the bound is the one
measured on the tiny model on CPU: every channel within 1/255, at most 0.1 % of the
values differ. Users who need exact bytes turn batching off in their settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.catalog import load_catalog
from bot.images import input_path
from bot.jobs import Requester
from bot.request import Outpaint, RefinerSpec
from inference.local import LocalBackend
from inference.local._job import batch_key, build_job
from tests.fakes.service import started_service
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")


# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def assert_same_picture(batched: bytes, alone: bytes) -> None:
    a, b = pixels(batched), pixels(alone)
    assert np.abs(a - b).max() <= 1
    assert np.count_nonzero(a != b) <= 0.001 * a.size


@pytest.mark.parametrize(
    "refiner", [None, RefinerSpec(model="tiny-refiner", start_percent=75)], ids=["base", "refined"]
)
def test_each_image_of_a_batch_matches_it_alone(runner, tiny_data_dir, refiner) -> None:
    requests = [
        tiny_request(prompt="a red cube on a table", seed=11, refiner=refiner, steps=8),
        tiny_request(prompt="a blue sphere in the sky", seed=500, count=2, refiner=refiner, steps=8),
        tiny_request(prompt="a green cone", seed=77, refiner=refiner, steps=8),
    ]
    jobs = [build_job(request, CATALOG, tiny_data_dir) for request in requests]
    assert len({batch_key(job) for job in jobs}) == 1
    batched = runner.run_batch(jobs)
    assert [[image.seed for image in images] for images in batched] == [[11], [500, 501], [77]]
    assert batched[0][0].meta["batch"] == 4
    for job, images in zip(jobs, batched, strict=True):
        for image, alone in zip(images, runner.run(job), strict=True):
            assert_same_picture(image.data, alone.data)
            assert "batch" not in alone.meta


def test_what_changes_the_pipeline_call_keeps_jobs_apart(tiny_data_dir) -> None:
    def key(**fields):
        return batch_key(build_job(tiny_request(**fields), CATALOG, tiny_data_dir))

    same = key(prompt="one", seed=1)
    assert key(prompt="two", seed=2, count=3, output_format="webp") == same
    for change in (
        {"steps": 5},
        {"cfg_scale": 5.0},
        {"width": 192},
        {"scheduler": "Euler a"},
        {"negative_prompt": "blur"},
    ):
        assert key(**change) != same, change


# -- input images: one call for jobs of one mode and strength, whatever their images -----------------


def stored(data_dir: Path, image: Image.Image) -> str:
    """Write a PNG where the image store keeps inputs and return its sha256, as `ImageStore.save_input` does."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    path = data_dir / input_path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return sha


def picture(seed: int, size: tuple[int, int] = (128, 128), mode: str = "RGB") -> Image.Image:
    channels = 3 if mode == "RGB" else 1
    noise = np.random.default_rng(seed).integers(0, 256, (size[1] // 8, size[0] // 8, channels), dtype=np.uint8)
    return Image.fromarray(noise.squeeze(), mode).resize(size, Image.Resampling.BICUBIC)


@pytest.mark.parametrize("mode", ["image", "inpaint", "outpaint"])
def test_jobs_from_different_images_batch_and_each_matches_it_alone(runner, tiny_data_dir, mode) -> None:
    images = [stored(tiny_data_dir, picture(n)) for n in (1, 2, 3)]
    masks = [stored(tiny_data_dir, picture(n, mode="L")) for n in (4, 5, 6)]
    fields = [
        {"init_image": image, "strength": 0.6, "steps": 8}
        | ({"mask_image": mask} if mode == "inpaint" else {})
        | ({"outpaint": Outpaint(left=64), "width": 192} if mode == "outpaint" else {})
        for image, mask in zip(images, masks, strict=True)
    ]
    requests = [
        tiny_request(prompt="a red cube on a table", seed=11, **fields[0]),
        tiny_request(prompt="a blue sphere in the sky", seed=500, count=2, **fields[1]),
        tiny_request(prompt="a red cube on a table", seed=11, **fields[2]),  # only its image differs from the first
    ]
    jobs = [build_job(request, CATALOG, tiny_data_dir) for request in requests]
    assert len({batch_key(job) for job in jobs}) == 1
    batched = runner.run_batch(jobs)
    assert batched[0][0].meta["batch"] == 4 and batched[0][0].meta["base_steps"] == 5
    alone = [runner.run(job) for job in jobs]
    for images_batched, images_alone in zip(batched, alone, strict=True):
        for image, twin in zip(images_batched, images_alone, strict=True):
            assert (image.width, image.height) == (twin.width, twin.height)
            assert_same_picture(image.data, twin.data)
    # the same prompt and seed from another image is another picture, in the batch as alone
    assert np.abs(pixels(alone[0][0].data) - pixels(alone[2][0].data)).max() > 8


@pytest.mark.parametrize("mode", ["image", "inpaint"])
def test_each_image_of_a_request_from_an_image_is_the_one_its_seed_makes_alone(runner, tiny_data_dir, mode) -> None:
    """`#12.2` of an image-to-image or inpainting is what its seed (seed + 1) makes by itself."""
    fields = {"init_image": stored(tiny_data_dir, picture(10)), "strength": 0.6, "steps": 8}
    if mode == "inpaint":
        fields["mask_image"] = stored(tiny_data_dir, picture(11, mode="L"))
    pair = runner.run(build_job(tiny_request(seed=40, count=2, **fields), CATALOG, tiny_data_dir))
    second = runner.run(build_job(tiny_request(seed=41, **fields), CATALOG, tiny_data_dir))
    assert pair[1].seed == second[0].seed == 41
    assert_same_picture(pair[1].data, second[0].data)


def test_an_input_images_mode_and_strength_keep_jobs_apart_not_its_file(tiny_data_dir) -> None:
    one, two = (stored(tiny_data_dir, picture(n)) for n in (7, 8))
    mask = stored(tiny_data_dir, picture(9, mode="L"))

    def key(**fields):
        return batch_key(build_job(tiny_request(**fields), CATALOG, tiny_data_dir))

    image = key(init_image=one, strength=0.5)
    assert key(init_image=two, strength=0.5) == image
    assert key(init_image=two, strength=0.5, mask_image=mask) == key(init_image=one, strength=0.5, mask_image=mask)
    for other in (
        key(),
        key(init_image=one, strength=0.6),
        key(init_image=one, strength=0.5, mask_image=mask),
        key(init_image=one, strength=0.5, outpaint=Outpaint(left=64), width=192),
    ):
        assert other != image


def test_a_mixed_batch_is_refused(runner, tiny_data_dir) -> None:
    jobs = [build_job(tiny_request(steps=steps), CATALOG, tiny_data_dir) for steps in (4, 5)]
    with pytest.raises(ValueError, match="batch_key"):
        runner.run_batch(jobs)


# -- through the service: the queue hands compatible waiting jobs to one worker call ------------------

ALICE, BOB = Requester("console", "alice"), Requester("console", "bob")


async def test_jobs_waiting_together_are_made_together(tiny_data_dir, tmp_path) -> None:
    backend = LocalBackend(CATALOG, tiny_data_dir, device="cpu", max_batch=4)
    try:
        async with started_service(backend, tmp_path, max_per_user=10) as (service, _):
            await service.user_settings.update(BOB, {"batching": False})
            jobs = [await service.imagine(f"a red fox number {n} --steps 6 --seed {n + 1}", ALICE) for n in range(4)]
            jobs.append(await service.imagine("a grey wolf --steps 6 --seed 9", BOB))
            jobs.append(await service.imagine("a slow owl --steps 7 --seed 9", ALICE))  # another step count
            cancelled = await service.imagine("a lost cat --steps 6 --seed 30", ALICE)
            await asyncio.sleep(0)
            await service.cancel(ALICE, cancelled.id)
            generations = [await job.result() for job in jobs]
            alone = await backend.generate(jobs[1].request)
    finally:
        await backend.aclose()
    # the first ran alone (nothing waited yet); the next three fox jobs ran as one call;
    # Bob (batching off) and the 7-step owl ran alone; the cancelled cat never ran
    assert sorted(backend.batch_sizes[:4]) == [1, 1, 1, 3]
    assert [g.status for g in generations] == ["done"] * 6
    assert [g.images[0].seed for g in generations] == [1, 2, 3, 4, 9, 9]
    stored = (tmp_path / generations[1].images[0].path).read_bytes()
    assert_same_picture(_without_text(stored), alone[0].data)


def _without_text(png: bytes) -> bytes:
    """Return the pixels of a stored PNG (the service adds a parameters chunk) re-encoded, for comparison."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()

"""A1111's variation seed on the local worker: the seed's image, its starting noise moved toward another seed's.

At strength 1 the noise is the variation seed's own, so the image is the one ``--seed`` that
seed makes; at a small strength it stays close to the seed's image; images of one request keep
the seed and take variation seed + i. An ancestral sampler's later noise comes from the seed's
generator as without a variation (drawn as the pipeline draws).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.catalog import load_catalog
from bot.request import RefinerSpec
from inference.local._job import build_job
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

import torch

from inference.local._pipeline import SDXLRunner, slerp

# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()


def images(runner: SDXLRunner, **fields: object) -> list[np.ndarray]:
    made = runner.run(build_job(tiny_request(**fields), CATALOG, runner.data_dir))
    return [np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.int16) for image in made]


@pytest.mark.parametrize("scheduler", ["Euler", "Euler a"])
def test_at_strength_one_the_image_is_the_variation_seeds_own(runner, scheduler: str) -> None:
    """Deterministic sampler: the very image of ``--seed 42``. Ancestral: its later noise is still seed 7's."""
    (varied,) = images(runner, seed=7, variation_seed=42, variation_strength=1.0, scheduler=scheduler)
    (other,) = images(runner, seed=42, scheduler=scheduler)
    (own,) = images(runner, seed=7, scheduler=scheduler)
    if scheduler == "Euler":
        assert np.array_equal(varied, other)
    else:
        assert not np.array_equal(varied, other) and not np.array_equal(varied, own)


def test_a_small_strength_stays_close_to_the_seeds_image_and_grows_with_the_strength(runner) -> None:
    (own,) = images(runner, seed=7)
    distance = []
    for strength in (0.05, 0.3, 0.9):
        (varied,) = images(runner, seed=7, variation_seed=42, variation_strength=strength)
        distance.append(float(np.abs(varied - own).mean()))
    assert 0 < distance[0] < distance[1] < distance[2]
    (again,) = images(runner, seed=7, variation_seed=42, variation_strength=0.3)
    assert float(np.abs(again - own).mean()) == distance[1]  # the same settings, the same image


def test_every_image_keeps_the_seed_and_takes_the_next_variation_seed(runner) -> None:
    """``--n 2``: image 1 of variation seed 42 is image 0 of variation seed 43, both on seed 7."""
    job = build_job(tiny_request(seed=7, variation_seed=42, variation_strength=0.5, count=2), CATALOG, runner.data_dir)
    assert job.seeds == (7, 7) and job.variation_seeds == (42, 43)
    first, second = images(runner, seed=7, variation_seed=42, variation_strength=0.5, count=2)
    (alone,) = images(runner, seed=7, variation_seed=43, variation_strength=0.5)
    # A batch of two may differ from one image alone in the last bit of a sum, not more.
    assert int(np.abs(second - alone).max()) <= 1
    assert float(np.abs(first - second).mean()) > 5


def test_the_refiner_takes_the_varied_latents_on(runner) -> None:
    refiner = RefinerSpec(model="tiny-refiner", start_percent=50)
    (varied,) = images(runner, seed=7, variation_seed=42, variation_strength=1.0, refiner=refiner)
    (other,) = images(runner, seed=42, refiner=refiner)
    assert np.array_equal(varied, other)


def test_slerp_keeps_the_noise_scale_and_ends_at_each_side() -> None:
    a, b = (torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(n)) for n in (1, 2))
    assert torch.equal(slerp(0.0, a, b), a) and torch.equal(slerp(1.0, a, b), b)
    middle = slerp(0.5, a, b)
    assert torch.allclose(middle.flatten(1).norm(dim=1), a.flatten(1).norm(dim=1), rtol=0.05)
    # The same noise twice has no arc: the blend is that noise.
    assert torch.allclose(slerp(0.3, a, a), a)

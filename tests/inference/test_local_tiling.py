"""Seamless images (``--tile``) on the local worker: the image continues across its edges, as a texture.

With every convolution padded around the image, the models treat it as a torus: noise shifted
by a whole number of the UNet's cells gives the same picture shifted by as many pixels, to
rounding. With zeros around the edges (the default) it gives another picture at the borders.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.catalog import load_catalog
from bot.request import RefinerSpec
from inference.local._job import batch_key, build_job
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

import torch

from inference.local._pipeline import SDXLRunner, seamless

# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()


def pixels(runner: SDXLRunner, **fields: object) -> np.ndarray:
    (image,) = runner.run(build_job(tiny_request(**fields), CATALOG, runner.data_dir))
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.int16)


def test_a_tiled_image_is_the_picture_of_noise_shifted_around_the_edges(runner):
    """Shift the starting noise by a whole cell of the UNet, around the edge: tiled, the picture moves by as many
    pixels and is otherwise the same; untiled, its borders change. The padding modes are put back after."""
    pipe = runner._base_pipeline(build_job(tiny_request(), CATALOG, runner.data_dir).model)
    cell = 2 ** (len(pipe.unet.config.down_block_types) - 1)  # latent pixels per UNet cell
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)  # image pixels per latent pixel
    noise = torch.randn(
        (1, pipe.unet.config.in_channels, 128 // scale, 128 // scale), generator=torch.Generator().manual_seed(5)
    )
    shifted = torch.roll(noise, shifts=(cell, 3 * cell), dims=(2, 3))

    def picture(latents: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out = pipe(
                prompt="a red cube",
                latents=latents,
                num_inference_steps=2,
                guidance_scale=5.0,
                height=128,
                width=128,
                output_type="np",
            )
        return out.images[0]

    with seamless([pipe.unet, pipe.vae]):
        tiled, tiled_shifted = picture(noise), picture(shifted)
    moved = np.roll(tiled, shift=(cell * scale, 3 * cell * scale), axis=(0, 1))
    assert np.abs(moved - tiled_shifted).max() < 1e-3
    untiled = np.roll(picture(noise), shift=(cell * scale, 3 * cell * scale), axis=(0, 1))
    assert np.abs(untiled - picture(shifted)).max() > 1e-2
    modes = {
        layer.padding_mode
        for model in (pipe.unet, pipe.vae)
        for layer in model.modules()
        if isinstance(layer, torch.nn.Conv2d)
    }
    assert modes == {"zeros"}


def test_tile_changes_the_image_and_keeps_its_seed_and_the_refiner(runner):
    """`--tile` on the worker: another image than without it, the same one again for the same seed, with the
    refiner too; a tiled job never shares a call with an untiled one."""
    plain, tiled = pixels(runner), pixels(runner, tiling=True)
    assert np.abs(plain - tiled).max() > 10
    assert np.array_equal(tiled, pixels(runner, tiling=True))
    refined = RefinerSpec(model="tiny-refiner", start_step=3)
    assert np.abs(pixels(runner, tiling=True, refiner=refined) - pixels(runner, refiner=refined)).max() > 10
    job = build_job(tiny_request(), CATALOG, runner.data_dir)
    assert batch_key(job) != batch_key(build_job(tiny_request(tiling=True), CATALOG, runner.data_dir))

"""Image-to-image and inpainting on the local worker's runner, on the tiny model: steps × strength, exactly."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.catalog import load_catalog
from bot.images import input_path
from bot.request import Outpaint, RefinerSpec
from inference.local._job import build_job
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

from inference.local._pipeline import SDXLRunner

# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()


def store_input(data_dir: Path, image: Image.Image) -> str:
    """Write a PNG where the image store keeps inputs and return its sha256, as `ImageStore.save_input` does."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    path = data_dir / input_path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def gradient(width: int = 128, height: int = 128) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (height, 1)), np.tile(x[::-1], (height, 1)), np.full((height, width), 90, np.uint8)], 2)
    return Image.fromarray(rgb, "RGB")


@pytest.fixture(scope="module")
def runner(tiny_data_dir):
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")
    runner.run(
        build_job(
            tiny_request(steps=3, refiner=RefinerSpec(model="tiny-refiner", start_step=2)), CATALOG, tiny_data_dir
        )
    )
    return runner


@pytest.fixture(scope="module")
def init_sha(tiny_data_dir):
    return store_input(tiny_data_dir, gradient())


def run(runner, progress=None, **fields):
    job = build_job(tiny_request(**fields), CATALOG, runner.data_dir)
    return runner.run(job, on_progress=(lambda *event: progress.append(event[:3])) if progress is not None else None)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("scheduler", ["Euler", "DPM++ 2M Karras", "Euler a", "Heun"])
@pytest.mark.parametrize(
    ("steps", "strength", "ran"), [(40, 0.5, 20), (10, 0.35, 4), (7, 0.5, 4), (6, 1.0, 6), (9, 0.1, 1)]
)
def test_steps_times_strength_is_what_runs(runner, unet_calls, init_sha, scheduler, steps, strength, ran):
    """40 steps at strength 0.5 run the last 20 (halves round up), on every sampler: counted in UNet calls."""
    progress: list[tuple[str, int, int]] = []
    image = run(
        runner, progress, steps=steps, strength=strength, init_image=init_sha, scheduler=scheduler, cfg_scale=1.0
    )[0]
    assert unet_calls["base"] == (2 * ran - 1 if scheduler == "Heun" else ran)
    assert image.meta["base_steps"] == ran
    assert progress == [("base", i, ran) for i in range(1, ran + 1)]


def test_refiner_takes_its_share_of_the_steps_that_run(runner, unet_calls, init_sha):
    """20 steps at strength 0.5 run 10: with the refiner from 80 %, the base runs 8 and the refiner 2."""
    spec = RefinerSpec(model="tiny-refiner", start_percent=80)
    image = run(runner, steps=20, strength=0.5, init_image=init_sha, refiner=spec, cfg_scale=1.0)[0]
    assert (unet_calls["base"], unet_calls["refiner"]) == (8, 2)
    assert (image.meta["base_steps"], image.meta["refiner_steps"]) == (8, 2)


def test_same_image_seed_and_settings_give_the_same_pixels(runner, init_sha):
    first = run(runner, steps=6, strength=0.5, init_image=init_sha)[0]
    again = run(runner, steps=6, strength=0.5, init_image=init_sha)[0]
    stronger = run(runner, steps=6, strength=0.9, init_image=init_sha)[0]
    assert first.data == again.data
    assert first.data != stronger.data
    assert (first.width, first.height) == (128, 128)


def test_input_is_resized_to_the_requested_size(runner, tiny_data_dir):
    """A 200×100 input made into a 192×128 request comes out 192×128."""
    sha = store_input(tiny_data_dir, gradient(200, 100))
    image = run(runner, steps=4, strength=0.5, init_image=sha, width=192, height=128)[0]
    assert (image.width, image.height) == (192, 128)
    assert Image.open(io.BytesIO(image.data)).size == (192, 128)


def test_inpaint_keeps_the_masked_out_pixels_exactly_and_fades_the_new_part_in(runner, tiny_data_dir, init_sha):
    """White repaints, black keeps: with the left half masked, every pixel of the right half is the input's own
    (not its trip through the VAE, A1111's overlay), the left half is new, and the new part fades into the kept
    one over the last `OVERLAY_BLUR` pixels of the mask, not at a seam."""
    from inference.local._pipeline import OVERLAY_BLUR

    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (0, 0, 64, 128))
    mask_sha = store_input(tiny_data_dir, mask)
    source = np.asarray(gradient(), dtype=np.int16)
    masked = pixels(run(runner, steps=8, strength=1.0, init_image=init_sha, mask_image=mask_sha)[0].data)
    assert np.array_equal(masked[:, 64:], source[:, 64:])
    assert np.abs(masked[:, :56] - source[:, :56]).mean() > 20  # the random-weight model paints noise
    # The edge: the new part, then a blend of it and the input, then the input.
    new = np.abs(masked[:, 64 - 2 * OVERLAY_BLUR] - source[:, 64 - 2 * OVERLAY_BLUR]).mean()
    edge = np.abs(masked[:, 63] - source[:, 63]).mean()
    assert 0 < edge < new
    # Without a mask nothing is kept: the image-to-image run changes the right half too.
    unmasked = pixels(run(runner, steps=8, strength=1.0, init_image=init_sha)[0].data)
    assert np.abs(unmasked[:, 64:] - source[:, 64:]).mean() > 20


def test_zoom_out_shrinks_the_image_into_the_middle_at_the_same_size(runner, tiny_data_dir):
    """Zoom Out of a 256×256 image: the worker's canvas is 256×256 with the whole input shrunk to 128×128 in its
    middle and only the border to paint; the pipeline makes a 256×256 image from it."""
    from bot.options import zoom_out
    from inference.local._pipeline import _image_inputs

    big = gradient(256, 256)
    border = zoom_out(256, 256, 1.5)
    assert border is not None and border.sides == (64, 64, 64, 64)
    fields = {"init_image": store_input(tiny_data_dir, big), "width": 256, "height": 256, "outpaint": border}
    canvas, mask = _image_inputs(build_job(tiny_request(steps=6, strength=1.0, **fields), CATALOG, tiny_data_dir))
    shrunk = np.asarray(big.resize((128, 128), Image.Resampling.LANCZOS))
    assert canvas.size == (256, 256) and np.array_equal(np.asarray(canvas)[64:192, 64:192], shrunk)
    assert mask is not None and np.asarray(mask)[64:192, 64:192].max() == 0 and np.asarray(mask)[:64].min() == 255
    image = run(runner, steps=6, strength=1.0, **fields)[0]
    assert (image.width, image.height) == (256, 256)


def test_pan_keeps_the_image_pixel_for_pixel_and_paints_only_the_new_strip(runner, tiny_data_dir):
    """Pan right of a 128×128 image: the worker's canvas is 192×128 with the input unscaled on the left and
    only the 64-pixel strip on the right to paint; the pipeline makes a 192×128 image from it."""
    from bot.options import pan
    from inference.local._pipeline import _image_inputs

    source = gradient(128, 128)
    strip = pan(128, 128, "right", 4 * 1024 * 1024)
    assert strip is not None and strip.sides == (0, 64, 0, 0)
    fields = {"init_image": store_input(tiny_data_dir, source), "width": 192, "height": 128, "outpaint": strip}
    canvas, mask = _image_inputs(build_job(tiny_request(steps=6, strength=1.0, **fields), CATALOG, tiny_data_dir))
    assert canvas.size == (192, 128) and np.array_equal(np.asarray(canvas)[:, :128], np.asarray(source))
    assert mask is not None and np.asarray(mask)[:, :128].max() == 0 and np.asarray(mask)[:, 128:].min() == 255
    image = run(runner, steps=6, strength=1.0, **fields)[0]
    assert (image.width, image.height) == (192, 128)


def test_outpaint_extends_the_image_and_keeps_its_middle(runner, init_sha, tiny_data_dir):
    """64 px on the left and right: a 256×128 image whose middle is the input pixel for pixel, wherever the
    outpaint's mask keeps it, and whose borders are new."""
    from inference.local._pipeline import _image_inputs

    fields = {"init_image": init_sha, "width": 256, "height": 128, "outpaint": Outpaint(left=64, right=64)}
    image = run(runner, steps=6, strength=1.0, **fields)[0]
    assert (image.width, image.height) == (256, 128)
    out = pixels(image.data)
    canvas, mask = _image_inputs(build_job(tiny_request(steps=6, strength=1.0, **fields), CATALOG, tiny_data_dir))
    kept = np.asarray(mask) == 0
    assert kept[:, 64:192].mean() > 0.8 and not kept[:, :64].any() and not kept[:, 192:].any()
    assert np.array_equal(out[kept], np.asarray(canvas, dtype=np.int16)[kept])
    assert np.array_equal(out[:, 80:176], np.asarray(gradient(), dtype=np.int16)[:, 16:112])
    assert np.abs(out[:, :56] - np.asarray(canvas, dtype=np.int16)[:, :56]).mean() > 20

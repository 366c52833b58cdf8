"""The SDXL runner of the local worker, in this process, on the tiny model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.catalog import load_catalog
from bot.request import RefinerSpec, WeightedName
from inference.local._job import build_job
from inference.local._schedulers import SCHEDULERS
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

from inference.local._pipeline import RunCancelled, SDXLRunner

# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def runner(tiny_data_dir):
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")
    # Load base and refiner once so that tests can hook their UNets.
    runner.run(job(tiny_data_dir, steps=3, refiner=RefinerSpec(model="tiny-refiner", start_step=2)))
    return runner


request = tiny_request


def job(data_dir, **fields):
    return build_job(request(**fields), CATALOG, data_dir)


def run(runner, **fields):
    return runner.run(job(runner.data_dir, **fields))


def pixels(image):
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.int16)


def test_same_request_gives_the_same_bytes(runner):
    """Two runs of one request encode to byte-identical PNGs."""
    first, second = run(runner), run(runner)
    assert first[0].data == second[0].data
    assert first[0].data.startswith(b"\x89PNG\r\n\x1a\n")
    assert (first[0].width, first[0].height, first[0].seed) == (128, 128, 1234)


def test_png_has_no_text_chunks(runner):
    """The runner writes no metadata; the service adds the parameters chunk later."""
    image = Image.open(io.BytesIO(run(runner)[0].data))
    assert image.text == {}


def test_other_seed_other_image(runner):
    """A different seed makes a different image."""
    assert run(runner)[0].data != run(runner, seed=1235)[0].data


def test_batch_uses_seed_plus_index(runner):
    """count=2 makes images with seeds s and s+1; image 1 matches a single run of seed s+1."""
    pair = run(runner, count=2)
    assert [image.seed for image in pair] == [1234, 1235]
    assert [image.index for image in pair] == [0, 1]
    alone = run(runner, seed=1235)[0]
    assert np.abs(pixels(pair[1]) - pixels(alone)).max() <= 2


def test_meta(runner):
    """Each image reports its split, time, device and dtype."""
    meta = run(runner)[0].meta
    assert meta["base_steps"] == 4 and meta["refiner_steps"] == 0
    assert meta["device"] == "cpu" and meta["dtype"] == "float32"
    assert meta["seconds"] > 0


@pytest.mark.parametrize(("fmt", "magic"), [("jpg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_output_formats(runner, fmt, magic):
    """jpg and webp are encoded as asked."""
    assert run(runner, output_format=fmt)[0].data.startswith(magic)


# Refiner hand-off: UNet calls per pipeline are the documented split, for every sampler.
# 30 steps at 80 % is the case the fraction alone gets wrong (19 + 11 for DPM++ 2M Karras);
# the rest are short so the matrix stays cheap.
EVERY_SAMPLER_SPLIT = (10, RefinerSpec(model="tiny-refiner", start_percent=80), (8, 2))
MORE_SPLITS = [
    (30, RefinerSpec(model="tiny-refiner", start_percent=80), (24, 6)),
    (12, RefinerSpec(model="tiny-refiner", start_step=9), (9, 3)),
    (10, RefinerSpec(model="tiny-refiner", start_percent=50), (5, 5)),
    (7, RefinerSpec(model="tiny-refiner", start_percent=85), (6, 1)),
]


def expected_calls(scheduler, base, refiner):
    """UNet calls of a base/refiner split: one per step, but Heun (second order) needs two per step,
    except the very last step of the schedule, which is a single Euler call."""
    if scheduler == "Heun":
        return 2 * base, 2 * refiner - 1
    return base, refiner


def check_split(runner, unet_calls, scheduler, steps, spec, split):
    progress = []
    images = runner.run(
        job(runner.data_dir, steps=steps, refiner=spec, scheduler=scheduler, cfg_scale=1.0),
        on_progress=lambda *event: progress.append(event[:3]),
    )
    base, refiner = split
    assert (unet_calls["base"], unet_calls["refiner"]) == expected_calls(scheduler, base, refiner)
    assert (images[0].meta["base_steps"], images[0].meta["refiner_steps"]) == split
    assert "split_note" not in images[0].meta
    assert progress == [("base", i, base) for i in range(1, base + 1)] + [
        ("refiner", i, refiner) for i in range(1, refiner + 1)
    ]


@pytest.mark.parametrize("scheduler", tuple(SCHEDULERS))
def test_refiner_split_in_unet_calls(runner, unet_calls, scheduler):
    """Base and refiner UNets run exactly the split's steps, whatever the sampler."""
    check_split(runner, unet_calls, scheduler, *EVERY_SAMPLER_SPLIT)


@pytest.mark.parametrize("scheduler", ["DPM++ 2M Karras", "Heun", "Euler a"])
@pytest.mark.parametrize(("steps", "spec", "split"), MORE_SPLITS, ids=["30@80", "12@step9", "10@50", "7@85"])
def test_more_refiner_splits(runner, unet_calls, scheduler, steps, spec, split):
    """Odd splits (a start step, half and half, a one-step refiner) hold too."""
    check_split(runner, unet_calls, scheduler, steps, spec, split)


def test_impossible_split_is_reported(runner, unet_calls):
    """Where the schedule repeats a timestep, the nearest split runs and meta says so."""
    import diffusers

    from inference import tiny

    def twin_of(steps):
        scheduler = diffusers.DPMSolverMultistepScheduler.from_config(
            tiny.SDXL_SCHEDULER_CONFIG, use_karras_sigmas=True
        )
        scheduler.set_timesteps(steps)
        timesteps = scheduler.timesteps.tolist()
        return next((i for i in range(1, len(timesteps)) if timesteps[i] == timesteps[i - 1]), None)

    # The shortest schedule that repeats a timestep keeps the run cheap.
    steps = next(n for n in range(10, 101) if twin_of(n) is not None)
    twin = twin_of(steps)
    spec = RefinerSpec(model="tiny-refiner", start_step=twin)
    meta = run(runner, steps=steps, refiner=spec, scheduler="DPM++ 2M Karras", cfg_scale=1.0)[0].meta
    assert meta["requested_split"] == [twin, steps - twin]
    assert abs(meta["base_steps"] - twin) == 1
    assert "split_note" in meta
    assert (unet_calls["base"], unet_calls["refiner"]) == (meta["base_steps"], meta["refiner_steps"])


def test_refiner_with_no_steps_left_does_not_run(runner, unet_calls):
    """99% of 4 steps leaves the refiner nothing; the base runs alone and meta says why."""
    meta = run(runner, refiner=RefinerSpec(model="tiny-refiner", start_percent=99))[0].meta
    assert (meta["base_steps"], meta["refiner_steps"]) == (4, 0)
    assert "refiner_note" in meta
    assert unet_calls["refiner"] == 0


def test_refine_keeps_the_seed_and_changes_the_image(runner):
    """Refining an image uses the same seed and gives a different image."""
    plain = run(runner, steps=10)[0]
    refined = run(runner, steps=10, refiner=RefinerSpec(model="tiny-refiner", start_percent=80))[0]
    assert refined.seed == plain.seed
    assert refined.data != plain.data


# LoRAs, embeddings, VAE, clip skip


def test_lora_weight_zero_is_no_lora(runner):
    """A LoRA at weight 0 gives exactly the image without it; at weight 1 a different one."""
    plain = pixels(run(runner)[0])
    zero = pixels(run(runner, loras=(WeightedName(name="tiny-lora", weight=0.0),))[0])
    one = pixels(run(runner, loras=(WeightedName(name="tiny-lora", weight=1.0),))[0])
    assert np.array_equal(zero, plain)
    assert not np.array_equal(one, plain)
    assert np.array_equal(pixels(run(runner)[0]), plain)


def test_switching_loras_does_not_reload(runner):
    """tiny-lora -> tiny-lora-2 -> none -> tiny-lora loads each LoRA once and the pipeline never again."""
    before = runner.stats()
    first = run(runner, loras=(WeightedName(name="tiny-lora"),))[0].data
    second = run(runner, loras=(WeightedName(name="tiny-lora-2"),))[0].data
    none = run(runner)[0].data
    again = run(runner, loras=(WeightedName(name="tiny-lora"),))[0].data
    after = runner.stats()
    assert len({first, second, none}) == 3
    assert again == first
    assert after["pipeline"] == before["pipeline"] == 1
    assert after["refiner"] == before["refiner"]
    assert after["lora"] == 2
    assert set(runner.base.get_list_adapters()["unet"]) == {"tiny-lora", "tiny-lora-2"}


def test_two_loras_at_once(runner):
    """Two LoRAs combine into an image unlike either alone."""
    one = run(runner, loras=(WeightedName(name="tiny-lora"),))[0].data
    both = run(runner, loras=(WeightedName(name="tiny-lora"), WeightedName(name="tiny-lora-2", weight=0.5)))
    assert both[0].data != one


def test_embedding_changes_the_image(runner):
    """The <tiny> embedding changes the image, its weight scales it, and it leaves nothing behind."""
    plain = run(runner)[0].data
    embedded = run(runner, embeddings=(WeightedName(name="tiny-embedding"),))[0].data
    halved = run(runner, embeddings=(WeightedName(name="tiny-embedding", weight=0.5),))[0].data
    assert len({plain, embedded, halved}) == 3
    assert run(runner)[0].data == plain
    assert runner.stats()["embedding"] == 1


def test_embedding_token_is_added_when_missing(runner):
    """An embedding asked for but not in either prompt has its token appended, and meta says so."""
    added = run(runner, embeddings=(WeightedName(name="tiny-embedding"),))[0]
    typed = run(runner, prompt="a red cube on a table, <tiny>", embeddings=(WeightedName(name="tiny-embedding"),))
    assert added.meta["added_tokens"] == ["<tiny>"]
    assert "added_tokens" not in typed[0].meta
    assert typed[0].data == added.data


def test_second_embedding_keeps_the_first_working(runner, tmp_path):
    """Loading another embedding resizes the token tables; the first one's weight still applies."""
    import torch
    from safetensors.torch import save_file

    from bot.catalog import Catalog

    path = tmp_path / "other.safetensors"
    save_file({"clip_l": torch.ones(1, 32), "clip_g": torch.ones(1, 64)}, path)
    catalog = Catalog.from_toml(
        "[model.tiny]\narchitecture = 'sdxl'\nlocal = 'tiny:base'\n"
        "[embedding.tiny-embedding]\narchitecture = 'sdxl'\nlocal = 'tiny:embedding'\ntoken = '<tiny>'\n"
        f"[embedding.other]\narchitecture = 'sdxl'\nlocal = '{path}'\ntoken = '<other>'\n"
    )

    def go(*embeddings):
        names = tuple(WeightedName(name=name, weight=weight) for name, weight in embeddings)
        return runner.run(build_job(request(embeddings=names), catalog, runner.data_dir))[0].data

    go(("tiny-embedding", 1.0))
    go(("other", 1.0))
    full = go(("tiny-embedding", 1.0), ("other", 1.0))
    half = go(("tiny-embedding", 0.5), ("other", 1.0))
    assert full != half


def test_vae_swap_changes_the_image_and_comes_back(runner):
    """Another VAE decodes the same latents differently; without one the model's own is back."""
    own = run(runner)[0].data
    other = run(runner, vae="tiny-vae")[0].data
    assert other != own
    assert run(runner)[0].data == own
    assert runner.stats()["vae"] == 1
    run(runner, vae="tiny-vae")
    assert runner.stats()["vae"] == 1


def test_clip_skip_changes_the_image(runner):
    """clip_skip 1 conditions on an earlier text-encoder layer."""
    assert run(runner, clip_skip=1)[0].data != run(runner)[0].data


def test_negative_prompt_and_cfg_change_the_image(runner):
    """The negative prompt and the CFG scale reach the pipeline."""
    plain = run(runner)[0].data
    assert run(runner, negative_prompt="blurry")[0].data != plain
    assert run(runner, cfg_scale=3.0)[0].data != plain


def test_cancel_stops_at_the_next_step_and_the_runner_still_works(runner):
    """A cancel seen after step 2 stops the run; the next run is unaffected."""
    expected = run(runner, steps=8)[0].data
    progress = []
    with pytest.raises(RunCancelled):
        runner.run(
            job(runner.data_dir, steps=8),
            on_progress=lambda *event: progress.append(event[:3]),
            should_cancel=lambda: len(progress) >= 2,
        )
    assert progress == [("base", 1, 8), ("base", 2, 8)]
    assert run(runner, steps=8)[0].data == expected


def test_previews_come_every_quarter_of_a_stage_but_not_at_its_end(runner):
    """Steps 2, 4 and 6 of 8 carry a WebP of the latents, 1/8 of the image's size; the rest carry none."""
    previews = {}
    runner.run(
        job(runner.data_dir, steps=8),
        on_progress=lambda stage, step, total, preview: previews.update({step: preview}),
    )
    assert [step for step, preview in previews.items() if preview is not None] == [2, 4, 6]
    with Image.open(io.BytesIO(previews[4])) as image:
        assert image.format == "WEBP"
        assert image.size == (128 // 8, 128 // 8)


def test_a_tiny_autoencoder_makes_full_size_previews_and_the_same_image(runner, tiny_data_dir):
    """preview_decoder=tiny: previews are 128×128 pictures instead of 16×16 sketches; the image is unchanged."""
    decoded = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32", preview_decoder="tiny")
    previews = {}
    images = decoded.run(
        job(tiny_data_dir, steps=8), on_progress=lambda stage, step, total, preview: previews.update({step: preview})
    )
    assert [step for step, preview in previews.items() if preview is not None] == [2, 4, 6]
    with Image.open(io.BytesIO(previews[4])) as image:
        assert image.format == "WEBP" and image.size == (128, 128)
    assert images[0].data == run(runner, steps=8)[0].data


def test_a_preview_decoder_that_cannot_load_falls_back_to_the_linear_map(tiny_data_dir, caplog):
    """A missing decoder never fails a job: previews are the linear map's, with a warning."""
    broken = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32", preview_decoder=str(tiny_data_dir / "nothing"))
    previews = []
    broken.run(job(tiny_data_dir, steps=4), on_progress=lambda stage, step, total, preview: previews.append(preview))
    sizes = [Image.open(io.BytesIO(preview)).size for preview in previews if preview is not None]
    assert sizes == [(16, 16)] * 3
    assert "previews use the linear map" in caplog.text

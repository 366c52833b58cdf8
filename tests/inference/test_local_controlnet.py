"""ControlNets on the local worker's runner, on the tiny model: exact steps, weights, modes, switching, the refiner."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.catalog import load_catalog
from bot.images import input_path
from bot.request import ControlNetSpec, RefinerSpec
from inference import tiny
from inference.local._job import Asset, WorkerJob, build_job
from tests.inference.test_local_image_inputs import gradient, store_input
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

import torch
from diffusers import StableDiffusionXLControlNetPipeline

from inference.local._pipeline import SDXLRunner

# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()
SECOND = Asset(name="tiny-controlnet-2", local="tiny:controlnet-2")


def square() -> Image.Image:
    """An edge map such as canny makes of a drawn square: white outline on black."""
    image = Image.new("RGB", (128, 128), "black")
    ImageDraw.Draw(image).rectangle((32, 32, 96, 96), outline="white", width=3)
    return image


@pytest.fixture(scope="module")
def guide_sha(tiny_data_dir: Path) -> str:
    return store_input(tiny_data_dir, square())


@pytest.fixture(scope="module")
def init_sha(tiny_data_dir: Path) -> str:
    return store_input(tiny_data_dir, gradient())


@pytest.fixture(scope="module")
def runner(tiny_data_dir: Path, guide_sha: str) -> SDXLRunner:
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")
    # Load base, refiner and both ControlNets once so that tests can hook them.
    warm = job(
        tiny_data_dir,
        steps=3,
        refiner=RefinerSpec(model="tiny-refiner", start_step=2),
        controlnets=(cn(guide_sha, end=2),),
    )
    runner.run(warm)
    runner.run(second(warm))
    return runner


def cn(guide: str, start: int = 1, end: int = 4, **fields: object) -> ControlNetSpec:
    return ControlNetSpec(model="tiny-controlnet", guide=guide, start_step=start, end_step=end, **fields)


def job(data_dir: Path, **fields: object) -> WorkerJob:
    return build_job(tiny_request(**fields), CATALOG, data_dir)


def second(one: WorkerJob) -> WorkerJob:
    """The same job with its ControlNet swapped for the second tiny one (another id, other weights)."""
    control = one.controlnets[0].model_copy(update={"asset": SECOND})
    return one.model_copy(update={"controlnets": (control,)})


def run(runner: SDXLRunner, **fields: object):
    return runner.run(job(runner.data_dir, **fields))[0]


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.fixture
def residuals(runner: SDXLRunner):
    """For each call of the base UNet, whether ControlNet residuals came with it (non-zero ones); refiner calls too."""
    seen: dict[str, list[bool]] = {"base": [], "refiner": []}

    def recorder(stage: str):
        def hook(module, args, kwargs):
            down = kwargs.get("down_block_additional_residuals")
            mid = kwargs.get("mid_block_additional_residual")
            given = down is not None and mid is not None
            if given:
                assert any(bool(d.abs().sum() > 0) for d in down) and bool(mid.abs().sum() > 0)
            seen[stage].append(given)

        return hook

    hooks = [
        runner.base.unet.register_forward_pre_hook(recorder("base"), with_kwargs=True),
        runner.refiner.unet.register_forward_pre_hook(recorder("refiner"), with_kwargs=True),
    ]
    yield seen
    for hook in hooks:
        hook.remove()


@pytest.fixture
def net_calls(runner: SDXLRunner):
    """How many times each loaded ControlNet ran, by local id."""
    calls: Counter[str] = Counter()
    hooks = [
        net.register_forward_hook(lambda *_, local=local: calls.update([local]))
        for local, net in runner._controlnets.items()
    ]
    yield calls
    for hook in hooks:
        hook.remove()


def steps_with_residuals(calls: list[bool], scheduler: str) -> list[int]:
    """The 1-based steps whose UNet calls all had residuals: one call per step, but Heun makes two per
    step except the schedule's last, a single Euler call. A step with residuals on only some of its
    calls fails the test."""
    per_call = 2 if scheduler == "Heun" else 1
    steps: dict[int, set[bool]] = {}
    for index, given in enumerate(calls):
        steps.setdefault(index // per_call + 1, set()).add(given)
    assert all(len(kinds) == 1 for kinds in steps.values()), f"a step with residuals on some calls only: {steps}"
    return sorted(step for step, kinds in steps.items() if kinds == {True})


def unet_calls(scheduler: str, steps: int) -> int:
    return 2 * steps - 1 if scheduler == "Heun" else steps


# Six steps run either way: from text, or the last 6 of 10 from an image at strength 0.6.
RANGES = [(1, 6), (1, 2), (3, 5), (6, 6), (2, 2)]


@pytest.mark.parametrize("scheduler", ["Euler", "DPM++ 2M Karras", "Heun"])
@pytest.mark.parametrize("from_image", [False, True], ids=["text", "image"])
@pytest.mark.parametrize(("start", "end"), RANGES)
def test_residuals_are_added_on_exactly_the_asked_steps(
    runner, residuals, net_calls, guide_sha, init_sha, scheduler, from_image, start, end
):
    """Steps start..end of the steps that run get the ControlNet's residuals, and no other step, on every sampler."""
    image_fields = {"steps": 10, "strength": 0.6, "init_image": init_sha} if from_image else {"steps": 6}
    image = run(runner, scheduler=scheduler, cfg_scale=1.0, controlnets=(cn(guide_sha, start, end),), **image_fields)
    assert len(residuals["base"]) == unet_calls(scheduler, 6)
    assert steps_with_residuals(residuals["base"], scheduler) == list(range(start, end + 1))
    # The ControlNet itself runs only there: Heun's last step is one call, the others two.
    expected = sum(1 if scheduler != "Heun" or step == 6 else 2 for step in range(start, end + 1))
    assert net_calls == {"tiny:controlnet": expected}
    assert image.meta["controlnet_steps"] == [[start, end]]


def test_weight_zero_is_no_controlnet(runner, guide_sha, init_sha):
    """A ControlNet at weight 0 makes the very image made without one, from text and from an image."""
    assert run(runner, controlnets=(cn(guide_sha, weight=0.0),)).data == run(runner).data
    from_image = {"steps": 8, "strength": 0.5, "init_image": init_sha}
    assert run(runner, controlnets=(cn(guide_sha, weight=0.0),), **from_image).data == run(runner, **from_image).data


def test_same_job_twice_gives_the_same_bytes(runner, guide_sha):
    first = run(runner, controlnets=(cn(guide_sha, 2, 3),))
    assert run(runner, controlnets=(cn(guide_sha, 2, 3),)).data == first.data


def test_a_controlnet_changes_the_image(runner, guide_sha):
    """The tiny ControlNet's output convolutions are random, so it moves the pixels: most on the early, noisy steps."""
    plain = pixels(run(runner).data)
    change = {
        steps: np.abs(pixels(run(runner, controlnets=(cn(guide_sha, *steps),)).data) - plain).mean()
        for steps in ((1, 4), (1, 1), (4, 4))
    }
    assert change[1, 4] > 5
    assert change[1, 1] > 5 * change[4, 4] > 0


def test_the_guide_matters(runner, guide_sha, init_sha):
    """Another guide image, same everything else: another picture."""
    assert run(runner, controlnets=(cn(guide_sha),)).data != run(runner, controlnets=(cn(init_sha),)).data


def test_two_controlnets_at_once_each_on_its_steps(runner, residuals, net_calls, guide_sha):
    """Two ControlNets act together, each on its own steps; the image is neither one's alone."""
    both = job(runner.data_dir, cfg_scale=1.0, controlnets=(cn(guide_sha, 1, 2), cn(guide_sha, 3, 4)))
    other = second(job(runner.data_dir, cfg_scale=1.0, controlnets=(cn(guide_sha, 3, 4),))).controlnets[0]
    both = both.model_copy(update={"controlnets": (both.controlnets[0], other)})
    image = runner.run(both)[0]
    assert steps_with_residuals(residuals["base"], "Euler") == [1, 2, 3, 4]
    assert net_calls == {"tiny:controlnet": 2, "tiny:controlnet-2": 2}
    assert image.meta["controlnet_steps"] == [[1, 2], [3, 4]]
    first_alone = runner.run(both.model_copy(update={"controlnets": both.controlnets[:1]}))[0]
    second_alone = runner.run(both.model_copy(update={"controlnets": both.controlnets[1:]}))[0]
    assert len({image.data, first_alone.data, second_alone.data}) == 3


def test_two_controlnets_on_the_same_steps_add_up(runner, guide_sha):
    """Residuals of ControlNets on one step add up: the same ControlNet twice at 0.5 is it once at 1."""
    halves = run(runner, controlnets=(cn(guide_sha, weight=0.5), cn(guide_sha, weight=0.5)))
    whole = run(runner, controlnets=(cn(guide_sha),))
    assert np.abs(pixels(halves.data) - pixels(whole.data)).max() <= 2


def test_the_three_modes_make_three_images(runner, guide_sha):
    images = {
        mode: run(runner, controlnets=(cn(guide_sha, mode=mode),)).data for mode in ("balanced", "prompt", "controlnet")
    }
    assert len(set(images.values())) == 3


@pytest.mark.parametrize(("mode", "guess_mode"), [("balanced", False), ("controlnet", True)])
def test_modes_are_the_bare_diffusers_pipeline(runner, guide_sha, tiny_data_dir, mode, guess_mode):
    """balanced is diffusers' ControlNet pipeline as it is; controlnet is the same with guess_mode=True: same pixels."""
    ours = run(runner, cfg_scale=7.0, controlnets=(cn(guide_sha, mode=mode),))
    net = runner._controlnet(Asset(name="tiny-controlnet", local="tiny:controlnet"))
    pipe = StableDiffusionXLControlNetPipeline.from_pipe(runner.base, controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    request = tiny_request()
    with Image.open(tiny_data_dir / input_path(guide_sha)) as guide:
        bare = pipe(
            prompt=request.prompt,
            image=guide.convert("RGB"),
            width=128,
            height=128,
            num_inference_steps=request.steps,
            guidance_scale=7.0,
            generator=[torch.Generator("cpu").manual_seed(request.seed)],
            controlnet_conditioning_scale=1.0,
            guess_mode=guess_mode,
        ).images[0]
    assert np.array_equal(pixels(ours.data), np.asarray(bare.convert("RGB"), dtype=np.int16))


def test_a_batch_with_a_controlnet_gives_each_image_its_own_seed(runner, guide_sha):
    """count=2 and a batch of two jobs: every image is the one its seed and prompt make alone, guided alike."""
    controls = (cn(guide_sha, 1, 3),)
    pair = runner.run(job(runner.data_dir, count=2, controlnets=controls))
    alone = run(runner, seed=1235, controlnets=controls)
    assert np.abs(pixels(pair[1].data) - pixels(alone.data)).max() <= 2
    jobs = [job(runner.data_dir, prompt=prompt, controlnets=controls) for prompt in ("a red cube", "a blue ball")]
    batched = runner.run_batch(jobs)
    for one, images in zip(jobs, batched, strict=True):
        assert np.abs(pixels(images[0].data) - pixels(runner.run(one)[0].data)).max() <= 2
        assert images[0].meta["controlnet_steps"] == [[1, 3]]


def test_switching_controlnets_does_not_reload(runner, guide_sha):
    """Both tiny ControlNets stay loaded: going back and forth loads nothing and gives back each one's image."""
    one = job(runner.data_dir, controlnets=(cn(guide_sha),))
    before = dict(runner.loads)
    images = [runner.run(candidate)[0].data for candidate in (one, second(one), one, second(one))]
    assert dict(runner.loads) == before
    assert runner.stats()["controlnet"] == 2
    assert images[0] == images[2] != images[1] == images[3]


# Refiner hand-off after a ControlNet base pass: the split's UNet calls are unchanged, the ControlNet
# acts in the base only, and a range reaching past the base's last step ends with it.
@pytest.mark.parametrize("scheduler", ["Euler", "DPM++ 2M Karras", "Heun"])
@pytest.mark.parametrize("from_image", [False, True], ids=["text", "image"])
def test_refiner_after_a_controlnet_base(runner, residuals, guide_sha, init_sha, scheduler, from_image):
    """10 steps run, the refiner from 80 %: the base runs 8, the ControlNet on 3..8 of 3..10; the refiner 2, bare."""
    spec = RefinerSpec(model="tiny-refiner", start_percent=80)
    image_fields = {"steps": 20, "strength": 0.5, "init_image": init_sha} if from_image else {"steps": 10}
    image = run(
        runner, scheduler=scheduler, cfg_scale=1.0, refiner=spec, controlnets=(cn(guide_sha, 3, 10),), **image_fields
    )
    heun = scheduler == "Heun"
    assert (len(residuals["base"]), len(residuals["refiner"])) == ((16, 3) if heun else (8, 2))
    assert steps_with_residuals(residuals["base"], scheduler) == [3, 4, 5, 6, 7, 8]
    assert not any(residuals["refiner"])
    assert (image.meta["base_steps"], image.meta["refiner_steps"]) == (8, 2)
    assert image.meta["controlnet_steps"] == [[3, 8]]
    assert "ends with the base at step 8" in image.meta["controlnet_note"]


@pytest.mark.parametrize("from_image", [False, True], ids=["text", "image"])
def test_weight_zero_with_the_refiner_is_the_plain_hand_off(runner, guide_sha, init_sha, from_image):
    """The ControlNet pipelines hand the refiner the latents the plain ones do (image-to-image stops itself)."""
    spec = RefinerSpec(model="tiny-refiner", start_percent=80)
    image_fields = {"steps": 20, "strength": 0.5, "init_image": init_sha} if from_image else {"steps": 10}
    for scheduler in ("Euler", "Heun"):
        fields = {"scheduler": scheduler, "refiner": spec, **image_fields}
        assert run(runner, controlnets=(cn(guide_sha, 1, 10, weight=0.0),), **fields).data == run(runner, **fields).data


def test_inpainting_with_a_controlnet(runner, residuals, guide_sha, init_sha, tiny_data_dir):
    """The ControlNet inpainting pipeline also acts on exactly its steps and keeps what the mask keeps."""
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (0, 0, 64, 128))
    mask_sha = store_input(tiny_data_dir, mask)
    fields = {"steps": 8, "strength": 0.75, "init_image": init_sha, "mask_image": mask_sha, "cfg_scale": 1.0}
    image = run(runner, controlnets=(cn(guide_sha, 2, 5),), **fields)
    assert steps_with_residuals(residuals["base"], "Euler") == [2, 3, 4, 5]
    plain = run(runner, **fields)
    kept = slice(None), slice(80, None)  # right half, away from the seam
    assert np.abs(pixels(image.data)[kept] - pixels(plain.data)[kept]).mean() < 3
    assert image.data != plain.data


def test_build_job_resolves_the_guide_and_the_controlnet(tiny_data_dir, guide_sha):
    """The worker is given the stored guide's absolute path and the catalog's local id, with the user's settings."""
    built = job(tiny_data_dir, steps=8, controlnets=(cn(guide_sha, 2, 6, weight=0.8, mode="prompt"),))
    (control,) = built.controlnets
    assert Path(control.guide) == tiny_data_dir / input_path(guide_sha)
    assert Path(control.guide).is_file()
    assert control.asset.local == "tiny:controlnet"
    assert (control.start_step, control.end_step, control.weight, control.mode) == (2, 6, 0.8, "prompt")
    assert tiny.resolve(control.asset.local, tiny_data_dir)[0].joinpath("config.json").is_file()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_worker_process_makes_the_runners_image(backend, tiny_data_dir, guide_sha):
    """Through the real worker process: the ControlNet image is the in-process runner's, byte for byte."""
    request = tiny_request(controlnets=(cn(guide_sha, 2, 3),))
    remote = await backend.generate(request)
    local = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32").run(build_job(request, CATALOG, tiny_data_dir))
    assert remote[0].data == local[0].data
    assert remote[0].meta["controlnet_steps"] == [[2, 3]]
    assert (await backend.stats())["controlnet"] == 1


def test_a_bfloat16_runner_stays_bfloat16(tiny_data_dir, guide_sha, init_sha):
    """from_pipe casts the modules it is given to float32 unless told otherwise; they are the base's own,
    so an image job with a ControlNet would leave a GPU's bfloat16 base in float32 (twice the memory)."""
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="bfloat16")
    image = run(runner, steps=4, strength=0.5, init_image=init_sha, controlnets=(cn(guide_sha, 1, 2),))
    assert image.meta["controlnet_steps"] == [[1, 2]]
    modules = [runner.base.unet, runner.base.vae, runner.base.text_encoder_2, *runner._controlnets.values()]
    assert {module.dtype for module in modules} == {torch.bfloat16}

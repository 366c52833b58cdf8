"""The inpainter on the local worker: SDXL's 9-channel inpainting UNet repaints masks and outpaints for the model.

On the tiny model's real pipelines: the tiny inpainter is the base UNet widened to 9 input channels (noise, mask,
kept pixels), as the real one was made from SDXL base.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.catalog import KINDS, Catalog, CatalogEntry, load_catalog
from bot.errors import InvalidOption
from bot.request import ControlNetSpec, Outpaint, RefinerSpec, WeightedName
from inference.local._job import build_job, check_installed
from tests.inference.test_local_image_inputs import gradient, store_input
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

from inference.local._pipeline import JobFailed, SDXLRunner

# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()


def with_entries(*extra: CatalogEntry) -> Catalog:
    return Catalog([*(entry for kind in KINDS for entry in CATALOG.entries(kind)), *extra])


@pytest.fixture(scope="module")
def runner(tiny_data_dir: Path) -> SDXLRunner:
    return SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def init_sha(tiny_data_dir: Path) -> str:
    return store_input(tiny_data_dir, gradient())


@pytest.fixture(scope="module")
def left_half(tiny_data_dir: Path) -> str:
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (0, 0, 64, 128))
    return store_input(tiny_data_dir, mask)


def run(runner: SDXLRunner, catalog: Catalog = CATALOG, **fields: Any) -> Any:
    return runner.run(build_job(tiny_request(**fields), catalog, runner.data_dir))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.fixture
def calls(runner: SDXLRunner, init_sha: str, left_half: str) -> Iterator[Counter[str]]:
    """UNet forward calls while the test runs, by UNet, and the input channels each saw."""
    run(runner, steps=2, strength=1.0, init_image=init_sha, mask_image=left_half, inpainter="tiny-inpainter")
    seen: Counter[str] = Counter()
    unets = {"base": runner.base.unet, "inpainter": runner.inpainter.unet}

    def hook(name: str) -> Any:
        return lambda module, args, kwargs: seen.update([f"{name}:{args[0].shape[1]}"])

    hooks = [unet.register_forward_pre_hook(hook(name), with_kwargs=True) for name, unet in unets.items()]
    yield seen
    for handle in hooks:
        handle.remove()


def test_the_inpainter_repaints_the_mask_and_the_kept_half_stays_the_inputs(runner, calls, init_sha, left_half):
    """Every step runs on the 9-channel UNet (latents, mask, kept pixels), none on the model's; the right half is
    the input pixel for pixel, and the left half is not what the model itself paints there."""
    fields = {"steps": 8, "strength": 1.0, "init_image": init_sha, "mask_image": left_half, "cfg_scale": 1.0}
    image = run(runner, inpainter="tiny-inpainter", **fields)[0]
    assert calls == Counter({"inpainter:9": 8})
    assert image.meta["inpainter"] == "tiny-inpainter" and image.meta["base_steps"] == 8
    source = np.asarray(gradient(), dtype=np.int16)
    inpainted = pixels(image.data)
    assert np.array_equal(inpainted[:, 64:], source[:, 64:])
    calls.clear()
    by_model = run(runner, **fields)[0]
    assert calls == Counter({"base:4": 8}) and "inpainter" not in by_model.meta
    assert np.abs(inpainted[:, :56] - pixels(by_model.data)[:, :56]).mean() > 5


def test_the_inpainter_outpaints_and_keeps_the_middle(runner, calls, init_sha):
    """An outpaint (the border is its mask) runs on the inpainter too, and keeps the input's middle exactly."""
    fields = {"init_image": init_sha, "width": 256, "height": 128, "outpaint": Outpaint(left=64, right=64)}
    image = run(runner, steps=5, strength=1.0, cfg_scale=1.0, inpainter="tiny-inpainter", **fields)[0]
    assert calls == Counter({"inpainter:9": 5})
    assert (image.width, image.height) == (256, 128)
    assert np.array_equal(pixels(image.data)[:, 80:176], np.asarray(gradient(), dtype=np.int16)[:, 16:112])


def test_the_refiner_takes_its_steps_after_the_inpainter(runner, calls, init_sha, left_half):
    """20 steps at strength 0.5 run 10: with the refiner from 80 %, the inpainter runs 8 and the refiner 2."""
    refiner_calls: Counter[str] = Counter()
    spec = RefinerSpec(model="tiny-refiner", start_percent=80)
    fields = {"steps": 20, "strength": 0.5, "init_image": init_sha, "mask_image": left_half, "cfg_scale": 1.0}
    run(runner, refiner=spec, inpainter="tiny-inpainter", **fields)
    handle = runner.refiner.unet.register_forward_hook(lambda *_: refiner_calls.update(["refiner"]))
    calls.clear()
    try:
        image = run(runner, refiner=spec, inpainter="tiny-inpainter", **fields)[0]
    finally:
        handle.remove()
    assert calls == Counter({"inpainter:9": 8}) and refiner_calls == Counter({"refiner": 2})
    assert (image.meta["base_steps"], image.meta["refiner_steps"]) == (8, 2)
    assert np.array_equal(pixels(image.data)[:, 64:], np.asarray(gradient(), dtype=np.int16)[:, 64:])


def test_a_controlnet_guides_the_inpainter_on_its_steps(runner, calls, init_sha, left_half, tiny_data_dir):
    """A ControlNet with an inpainter: diffusers' SDXL ControlNet inpainting pipeline on the 9-channel UNet; the
    ControlNet runs on its steps (2 to 3 of 4), the inpainter on all 4."""
    guide = store_input(tiny_data_dir, gradient().transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    control = ControlNetSpec(model="tiny-controlnet", guide=guide, start_step=2, end_step=3)
    fields = {"steps": 4, "strength": 1.0, "init_image": init_sha, "mask_image": left_half, "cfg_scale": 1.0}
    run(runner, controlnets=(control,), inpainter="tiny-inpainter", **fields)
    controlnet_calls: Counter[str] = Counter()
    net = runner._controlnets[next(iter(runner._controlnets))]
    handle = net.register_forward_hook(lambda *_: controlnet_calls.update(["controlnet"]))
    calls.clear()
    try:
        image = run(runner, controlnets=(control,), inpainter="tiny-inpainter", **fields)[0]
    finally:
        handle.remove()
    assert calls == Counter({"inpainter:9": 4}) and controlnet_calls == Counter({"controlnet": 2})
    assert np.array_equal(pixels(image.data)[:, 64:], np.asarray(gradient(), dtype=np.int16)[:, 64:])


def test_the_inpainter_is_loaded_once_and_shares_the_models_encoders_and_vae(runner, init_sha, left_half):
    fields = {"steps": 2, "strength": 1.0, "init_image": init_sha, "mask_image": left_half}
    run(runner, inpainter="tiny-inpainter", **fields)
    loads = runner.stats()["inpainter"]
    run(runner, inpainter="tiny-inpainter", seed=99, **fields)
    run(runner, **fields)
    run(runner, inpainter="tiny-inpainter", **fields)
    assert runner.stats()["inpainter"] == loads == 1
    for name in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae"):
        assert getattr(runner.inpainter, name) is getattr(runner.base, name)
    assert runner.inpainter.unet is not runner.base.unet


def test_an_inpainter_that_is_not_an_inpainting_unet_fails_with_a_sentence(tiny_data_dir, init_sha, left_half):
    """A catalog inpainter whose UNet takes 4 channels (a plain model's) fails the job with its name: no traceback."""
    wrong = CatalogEntry(name="plain", kind="inpainter", architecture="sdxl-inpainting", local="tiny:base")
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")
    fields = {"steps": 2, "strength": 1.0, "init_image": init_sha, "mask_image": left_half}
    with pytest.raises(JobFailed, match="inpainter 'plain' is not an inpainting UNet"):
        run(runner, with_entries(wrong), inpainter="plain", **fields)
    assert runner.inpainter is None


def test_the_job_refuses_what_the_inpainter_cannot_take(tiny_data_dir, init_sha, left_half):
    """An IP-Adapter (weights for the model's own UNet) or a missing inpainter folder is one sentence, before
    anything is queued; LoRAs are refused by the request itself."""
    fields = {"steps": 4, "strength": 1.0, "init_image": init_sha, "mask_image": left_half}
    adapter = ControlNetSpec(model="tiny-ip-adapter", guide=init_sha, end_step=4)
    with pytest.raises(InvalidOption, match="'tiny-inpainter' cannot take an IP-Adapter"):
        build_job(tiny_request(controlnets=(adapter,), inpainter="tiny-inpainter", **fields), CATALOG, tiny_data_dir)
    with pytest.raises(ValueError, match="with no LoRA"):
        tiny_request(loras=(WeightedName(name="tiny-lora"),), inpainter="tiny-inpainter", **fields)
    with pytest.raises(ValueError, match="repaints a mask or an outpaint"):
        tiny_request(steps=4, strength=0.5, init_image=init_sha, inpainter="tiny-inpainter")
    gone = CatalogEntry(name="gone", kind="inpainter", architecture="sdxl-inpainting", local=str(tiny_data_dir / "no"))
    job = build_job(tiny_request(inpainter="gone", **fields), with_entries(gone), tiny_data_dir)
    with pytest.raises(
        InvalidOption, match=r"^Inpainter 'gone' is not installed on this bot; ask its operator to download it\.$"
    ):
        check_installed(job)

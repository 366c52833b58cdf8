"""IP-Adapters (image prompts) on the local worker's runner, on the tiny model: the image, its steps, its weight.

The tiny IP-Adapter's projections are random, so an image prompt moves the pixels and the tests
that it acts, acts only on its steps, or leaves the base as it was afterwards can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bot.catalog import KINDS, Catalog, load_catalog
from bot.errors import InvalidOption
from bot.request import ControlNetSpec, RefinerSpec
from inference import tiny
from inference.local._job import build_job
from tests.inference.test_local_controlnet import job, pixels, run, square, steps_with_residuals
from tests.inference.test_local_image_inputs import gradient, store_input
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

from inference.local._pipeline import SDXLRunner

# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def red(tiny_data_dir: Path) -> str:
    return store_input(tiny_data_dir, Image.new("RGB", (96, 160), (220, 30, 30)))


@pytest.fixture(scope="module")
def ramp(tiny_data_dir: Path) -> str:
    return store_input(tiny_data_dir, gradient())


@pytest.fixture(scope="module")
def runner(tiny_data_dir: Path, red: str) -> SDXLRunner:
    runner = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")
    runner.run(job(tiny_data_dir, steps=3, refiner=RefinerSpec(model="tiny-refiner", start_step=2)))
    return runner


def ip(image: str, start: int = 1, end: int = 4, **fields: object) -> ControlNetSpec:
    return ControlNetSpec(model="tiny-ip-adapter", guide=image, start_step=start, end_step=end, **fields)


@pytest.fixture
def image_tokens(runner: SDXLRunner):
    """For each base UNet call, whether the image tokens its first cross-attention read were non-zero.

    With an IP-Adapter loaded, the UNet hands each cross-attention (text states, [image tokens]).
    """
    seen: list[bool] = []
    attention = next(m for name, m in runner.base.unet.named_modules() if name.endswith("attn2"))

    def hook(module, args, kwargs):
        states = kwargs.get("encoder_hidden_states")
        if isinstance(states, tuple):
            seen.append(any(bool(tokens.abs().sum() > 0) for tokens in states[1]))

    handle = attention.register_forward_pre_hook(hook, with_kwargs=True)
    yield seen
    handle.remove()


def test_an_image_prompt_changes_the_image_and_the_image_matters(runner, red, ramp):
    plain = run(runner)
    prompted = run(runner, controlnets=(ip(red),))
    assert np.abs(pixels(prompted.data) - pixels(plain.data)).mean() > 5
    assert run(runner, controlnets=(ip(ramp),)).data != prompted.data
    assert run(runner, controlnets=(ip(red),)).data == prompted.data  # the same job twice: the same bytes
    assert prompted.meta["controlnet_steps"] == [[1, 4]]


def test_weight_zero_is_no_image_prompt(runner, red):
    image = run(runner, controlnets=(ip(red, weight=0.0),))
    assert image.data == run(runner).data
    assert image.meta["controlnet_steps"] == [None]


def test_a_heavier_weight_moves_the_image_further(runner, red):
    plain = pixels(run(runner).data)
    change = [
        np.abs(pixels(run(runner, controlnets=(ip(red, weight=weight),)).data) - plain).mean() for weight in (0.3, 1.5)
    ]
    assert 0 < change[0] < change[1]


@pytest.mark.parametrize(("start", "end"), [(1, 4), (1, 1), (2, 3), (4, 4)])
def test_the_image_prompt_acts_on_exactly_its_steps(runner, image_tokens, red, start, end):
    image = run(runner, cfg_scale=1.0, controlnets=(ip(red, start, end),))
    assert steps_with_residuals(image_tokens, "Euler") == list(range(start, end + 1))
    assert image.meta["controlnet_steps"] == [[start, end]]


def test_after_an_image_prompt_the_base_makes_what_it_made_before(runner, red):
    """The IP-Adapter stays loaded for the next job naming it, and is unloaded for one without: the bytes the same."""
    before = run(runner).data
    run(runner, controlnets=(ip(red),))
    assert runner.base.unet.encoder_hid_proj is not None
    assert run(runner).data == before
    assert runner.base.unet.encoder_hid_proj is None and runner.base.image_encoder is None
    # Its weights and encoder stay in memory: a later image prompt reads no file again.
    loads = runner.stats()["ip-adapter"]
    run(runner, controlnets=(ip(red),))
    assert runner.stats()["ip-adapter"] == loads


def test_with_a_controlnet_both_act_each_on_its_steps(runner, red, tiny_data_dir):
    edges = store_input(tiny_data_dir, square())
    control = ControlNetSpec(model="tiny-controlnet", guide=edges, start_step=1, end_step=2)
    alone = run(runner, controlnets=(control,))
    both = run(runner, controlnets=(ip(red, 3, 4), control))
    assert both.data != alone.data
    assert both.meta["controlnet_steps"] == [[3, 4], [1, 2]]


def test_from_an_image_and_with_two_seeds(runner, red, ramp):
    from_image = {"steps": 8, "strength": 0.5, "init_image": ramp, "count": 2}
    plain = runner.run(job(runner.data_dir, **from_image))
    prompted = runner.run(job(runner.data_dir, controlnets=(ip(red, 1, 4),), **from_image))
    assert [image.seed for image in prompted] == [1234, 1235]
    assert all(a.data != b.data for a, b in zip(plain, prompted, strict=True))
    assert prompted[0].data != prompted[1].data


def test_with_a_refiner_it_ends_with_the_base(runner, red):
    image = run(runner, refiner=RefinerSpec(model="tiny-refiner", start_step=3), controlnets=(ip(red),))
    assert image.meta["controlnet_steps"] == [[1, 3]]
    assert image.meta["controlnet_note"] == (
        "IP-Adapter 'tiny-ip-adapter' ends with the base at step 3 (asked: steps 1–4); it acted on steps 1–3"
    )


def test_two_ip_adapters_with_other_encoders_are_refused_before_the_worker(red, tiny_data_dir):
    extra = Catalog.from_toml(
        '[controlnet.other-ip]\narchitecture = "sdxl"\nlocal = "tiny:ip-adapter"\n'
        'image_encoder = "elsewhere"\nip_adapter = true\n'
    )
    catalog = Catalog([*(entry for kind in KINDS for entry in CATALOG.entries(kind)), *extra.entries("controlnet")])
    other = ControlNetSpec(model="other-ip", guide=red, end_step=4)
    with pytest.raises(InvalidOption) as refused:
        build_job(tiny_request(controlnets=(ip(red), other)), catalog, tiny_data_dir)
    assert str(refused.value) == (
        "IP-Adapters 'tiny-ip-adapter' and 'other-ip' read images with different encoders; use one of them at a time."
    )


def test_weights_that_do_not_fit_the_base_fail_the_job_and_leave_the_base_as_it_was(runner, red, tmp_path):
    """An IP-Adapter made for other cross-attention sizes fails in one sentence; the next job is unchanged."""
    import shutil

    from safetensors.torch import load_file, save_file

    from inference.local._pipeline import JobFailed

    folder, weight_name = tiny.resolve("tiny:ip-adapter", runner.data_dir)
    broken = tmp_path / "broken-ip"
    shutil.copytree(folder / "image_encoder", broken / "image_encoder")
    tensors = load_file(folder / weight_name)
    key = next(name for name in tensors if name.endswith("to_k_ip.weight"))
    tensors[key] = tensors[key][:, :-1].contiguous()  # one input too few for its cross-attention
    save_file(tensors, broken / "broken.safetensors")
    before = run(runner).data
    made = job(runner.data_dir, controlnets=(ip(red),))
    asset = made.controlnets[0].asset.model_copy(
        update={"name": "broken-ip", "local": str(broken), "weight_name": "broken.safetensors"}
    )
    made = made.model_copy(update={"controlnets": (made.controlnets[0].model_copy(update={"asset": asset}),)})
    with pytest.raises(JobFailed) as failed:
        runner.run(made)
    assert failed.value.message == "the IP-Adapter 'broken-ip' does not fit the model 'tiny'"
    assert runner.base.unet.encoder_hid_proj is None
    assert run(runner).data == before


def test_one_ip_adapter_named_for_two_images_blends_them(runner, image_tokens, red, ramp):
    """The same IP-Adapter twice, each with its image, weight and steps: a blend, neither image's alone."""
    alone = [run(runner, cfg_scale=1.0, controlnets=(ip(image, 1, 4, weight=0.5),)).data for image in (red, ramp)]
    loads = runner.stats()["ip-adapter"]
    image_tokens.clear()
    blend = run(runner, cfg_scale=1.0, controlnets=(ip(red, 1, 2, weight=0.5), ip(ramp, 1, 4, weight=0.5)))
    assert blend.meta["controlnet_steps"] == [[1, 2], [1, 4]]
    assert steps_with_residuals(image_tokens, "Euler") == [1, 2, 3, 4]
    assert blend.data not in alone
    assert runner.stats()["ip-adapter"] == loads  # its file read before, now loaded as two adapters


def test_two_ip_adapters_of_one_folder_are_told_apart_by_their_files(runner, red, tmp_path):
    """One hub repo holds several IP-Adapters (plain, plus…): each file is its own weights, loaded apart."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder, weight_name = tiny.resolve("tiny:ip-adapter", runner.data_dir)
    both = tmp_path / "two-ips"
    shutil.copytree(folder / "image_encoder", both / "image_encoder")
    tensors = load_file(folder / weight_name)
    save_file(tensors, both / "plain.safetensors")
    save_file({name: -tensor for name, tensor in tensors.items()}, both / "other.safetensors")
    made = job(runner.data_dir, controlnets=(ip(red),))

    def with_file(file: str):
        asset = made.controlnets[0].asset.model_copy(update={"local": str(both), "weight_name": file})
        return made.model_copy(update={"controlnets": (made.controlnets[0].model_copy(update={"asset": asset}),)})

    loads = runner.stats()["ip-adapter"]
    plain, other = (runner.run(with_file(file))[0].data for file in ("plain.safetensors", "other.safetensors"))
    assert runner.stats()["ip-adapter"] == loads + 2
    assert other != plain
    assert plain == runner.run(made)[0].data  # the same weights as the tiny one's


# ---------------------------------------------------------------------------
# Style references (--sref): the IP-Adapter on the style layers alone (InstantStyle)

STYLE_LAYER = "up_blocks.0.attentions.1"  # the second attention of the first up block


@pytest.fixture
def first_call_outputs(runner: SDXLRunner):
    """Each transformer block's output at the base UNet's first call, by module name."""
    seen: dict[str, torch.Tensor] = {}
    blocks = [(name, m) for name, m in runner.base.unet.named_modules() if type(m).__name__ == "Transformer2DModel"]

    def recorder(name: str):
        def hook(module, args, output):
            seen.setdefault(name, output[0].detach().clone())

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in blocks]
    yield seen
    for handle in handles:
        handle.remove()


def test_a_style_reference_changes_only_the_style_layer_and_what_follows_it(runner, red, first_call_outputs):
    """At the first step every attention before the style layer computes what it computes without the reference."""
    plain = run(runner, cfg_scale=1.0)
    before = dict(first_call_outputs)
    first_call_outputs.clear()
    styled = run(runner, cfg_scale=1.0, controlnets=(ip(red, style=True),))
    order = list(before)
    assert STYLE_LAYER in order
    for name in order[: order.index(STYLE_LAYER)]:
        assert torch.equal(first_call_outputs[name], before[name]), name
    assert not torch.equal(first_call_outputs[STYLE_LAYER], before[STYLE_LAYER])
    assert styled.data != plain.data
    assert styled.meta["controlnet_steps"] == [[1, 4]]
    # The whole IP-Adapter changes the layers before it too: a style reference is not an image prompt.
    first_call_outputs.clear()
    whole = run(runner, cfg_scale=1.0, controlnets=(ip(red),))
    assert whole.data != styled.data
    changed = [
        name for name in order[: order.index(STYLE_LAYER)] if not torch.equal(first_call_outputs[name], before[name])
    ]
    assert changed


def test_a_style_reference_scales_the_style_layer_alone_and_the_next_image_prompt_every_layer(runner, red, ramp):
    run(runner, controlnets=(ip(red, style=True, weight=0.7), ip(ramp, weight=0.4)))
    scales = {
        name: list(processor.scale)
        for name, processor in runner.base.unet.attn_processors.items()
        if hasattr(processor, "scale")
    }
    assert scales and all(
        scale == ([0.7, 0.4] if name.startswith(f"{STYLE_LAYER}.") else [0.0, 0.4]) for name, scale in scales.items()
    )
    # The same adapter file next as a whole image prompt: every layer at its weight, the bytes as before.
    whole = run(runner, controlnets=(ip(red),))
    assert whole.data == run(runner, controlnets=(ip(red),)).data
    assert all(
        processor.scale == [1.0]
        for processor in runner.base.unet.attn_processors.values()
        if hasattr(processor, "scale")
    )


def test_a_style_reference_of_weight_zero_is_none(runner, red):
    assert run(runner, controlnets=(ip(red, style=True, weight=0.0),)).data == run(runner).data


def test_a_style_reference_acts_in_an_outpaint_as_zoom_out_and_pan_keep_it(runner, red, ramp):
    """Zoom Out and Pan keep a result's style references: the inpainting pipeline takes the image prompt too."""
    from bot.request import Outpaint

    outpaint = {
        "init_image": ramp,
        "strength": 1.0,
        "width": 256,
        "height": 128,
        "outpaint": Outpaint(left=64, right=64),
    }
    plain = run(runner, steps=4, **outpaint)
    styled = run(runner, steps=4, controlnets=(ip(red, style=True),), **outpaint)
    assert styled.data != plain.data
    assert styled.meta["controlnet_steps"] == [[1, 4]]
    # The image's middle is kept either way: only the new border takes the look.
    middle = (slice(None), slice(64, 192))
    assert (
        np.abs(pixels(styled.data)[middle] - pixels(plain.data)[middle]).mean()
        < np.abs(pixels(styled.data)[:, :64] - pixels(plain.data)[:, :64]).mean()
    )

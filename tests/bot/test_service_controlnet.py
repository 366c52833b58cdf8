"""ControlNet through the service: guides loaded, made into canny maps and stored; exact steps; refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from bot.errors import InvalidOption, NotFound
from bot.guides import MADE_HERE, make_guide
from bot.images import InputImage, input_path
from bot.jobs import Requester
from bot.options import Limits
from bot.pngmeta import parse_parameters, read_text
from bot.summary import result_fields
from tests.fakes.service import memory_service

ALICE = Requester("console", "alice", workspace="w1")


@pytest.fixture
async def service(backend, tmp_path):
    async with memory_service(
        backend,
        tmp_path,
        limits=Limits(pixel_budget=512 * 512),
    ) as service:
        yield service


def square(fill: str | tuple[int, int, int] = "black") -> bytes:
    """A square on white (black unless said): its canny map is the square's outline."""
    image = Image.new("RGB", (128, 128), "white")
    ImageDraw.Draw(image).rectangle((32, 32, 95, 95), fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def load(ref: str, option: str) -> bytes:
    return {"square.png": square(), "grey.png": square((200, 200, 200)), "notes.png": b"just text"}[ref]


async def guide_made_here(service, backend, tmp_path, preprocess: str, guide: str = "square.png") -> np.ndarray:
    """Make an image with a guide preprocessed here; return the stored guide map's pixels (RGB)."""
    await (
        await service.imagine(f"a fox --cn tiny-controlnet --guide {guide} --preprocess {preprocess}", ALICE, load=load)
    ).result()
    control = backend.requests[-1].controlnets[0]
    assert control.preprocess == preprocess
    return np.asarray(Image.open(tmp_path / input_path(control.guide)).convert("RGB"))


async def test_a_guide_becomes_its_canny_map_on_exact_steps(service, backend, tmp_path):
    """`--cn tiny-controlnet --guide square.png --cn-end 50%`: the square's outline is stored as the guide,
    the photo as its source, and the ControlNet acts on steps 1–10 of 20."""
    job = await service.imagine("a fox --cn tiny-controlnet --guide square.png --cn-end 50%", ALICE, load=load)
    generation = await job.result()
    control = backend.requests[-1].controlnets[0]
    assert (control.model, control.preprocess, control.start_step, control.end_step) == (
        "tiny-controlnet",
        "canny",
        1,
        10,
    )
    edges = np.asarray(Image.open(tmp_path / input_path(control.guide)).convert("L")) > 0
    assert edges[31:34, 40:88].any(axis=0).all() and not edges[50:80, 50:80].any()  # the outline, not the inside
    assert (tmp_path / input_path(control.source)).read_bytes() != (tmp_path / input_path(control.guide)).read_bytes()
    assert ("ControlNet", "tiny-controlnet (canny, weight 1, balanced) on steps 1–10 of 20") in result_fields(
        generation
    )
    fields = parse_parameters(read_text((tmp_path / generation.images[0].path).read_bytes())["parameters"])["fields"]
    assert fields["ControlNet 0"].startswith(
        "Module: canny, Model: tiny-controlnet, Weight: 1, Guidance Start: 0, Guidance End: 0.5, Control Mode: Balanced"
    )


async def test_compact_form_with_an_image_counts_steps_among_those_that_run(service, backend):
    """From an image, 20 steps at strength 0.5 run 10: `@3-5` and `@0%-50%` are counted among those 10."""
    await (await service.imagine("a red fox", ALICE)).result()
    await (
        await service.imagine(
            "a fox --image #1 --strength 0.5 --cn tiny-controlnet=#1:0.6@3-5 --preprocess none --cn-mode prompt", ALICE
        )
    ).result()
    control = backend.requests[-1].controlnets[0]
    assert (control.start_step, control.end_step, control.weight, control.mode) == (3, 5, 0.6, "prompt")
    assert control.preprocess == "none" and control.source is None
    assert control.guide == backend.requests[-1].init_image  # the same stored image, kept once


async def test_an_ip_adapter_takes_the_image_as_it_is_beside_a_controlnet_that_maps_its_own(service, backend, tmp_path):
    """`--preprocess canny --cn-mode prompt` apply to the ControlNet; the IP-Adapter reads the given image, balanced."""
    line = "a fox --preprocess canny --cn-mode prompt --cn tiny-controlnet=square.png, tiny-ip-adapter=grey.png:0.6@1-5"
    generation = await (await service.imagine(line, ALICE, load=load)).result()
    control, adapter = backend.requests[-1].controlnets
    assert (control.preprocess, control.mode) == ("canny", "prompt")
    assert (adapter.model, adapter.preprocess, adapter.mode, adapter.source) == (
        "tiny-ip-adapter",
        "none",
        "balanced",
        None,
    )
    assert (adapter.weight, adapter.start_step, adapter.end_step) == (0.6, 1, 5)
    stored = Image.open(tmp_path / input_path(adapter.guide)).convert("RGB")
    assert stored.tobytes() == Image.open(io.BytesIO(square((200, 200, 200)))).convert("RGB").tobytes()
    fields = result_fields(generation, service.catalog)
    assert ("ControlNet", "tiny-controlnet (canny, weight 1, prompt) on steps 1–20 of 20") in fields
    assert ("IP-Adapter", "tiny-ip-adapter (weight 0.6) on steps 1–5 of 20") in fields


async def test_one_ip_adapter_may_take_several_images_to_blend_them(service, backend):
    line = "a fox --cn tiny-ip-adapter=square.png:0.5, tiny-ip-adapter=grey.png:0.5@1-10"
    await (await service.imagine(line, ALICE, load=load)).result()
    first, second = backend.requests[-1].controlnets
    assert (first.model, second.model) == ("tiny-ip-adapter", "tiny-ip-adapter") and first.guide != second.guide
    assert [(c.weight, c.start_step, c.end_step) for c in (first, second)] == [(0.5, 1, 20), (0.5, 1, 10)]


async def test_reroll_keeps_the_controlnets_and_vary_leaves_them(service, backend):
    await (await service.imagine("a fox --cn tiny-controlnet --guide square.png", ALICE, load=load)).result()
    await (await service.reroll(ALICE, 1)).result()
    assert backend.requests[-1].controlnets == backend.requests[0].controlnets
    await (await service.vary(ALICE, 1, "subtle")).result()
    assert backend.requests[-1].controlnets == ()  # the result is the structure now


async def test_style_references_are_the_models_ip_adapter_on_the_style_layers_on_every_step(service, backend, tmp_path):
    """`--sref square.png grey.png:0.5 --sw 80`: Midjourney's style reference, on the tiny model's IP-Adapter."""
    line = "a fox --sref square.png grey.png:0.5 --sw 80"
    generation = await (await service.imagine(line, ALICE, load=load)).result()
    first, second = backend.requests[-1].controlnets
    assert [(c.model, c.style, c.weight, c.start_step, c.end_step, c.preprocess) for c in (first, second)] == [
        ("tiny-ip-adapter", True, 0.8, 1, 20, "none"),
        ("tiny-ip-adapter", True, 0.5, 1, 20, "none"),
    ]
    stored = Image.open(tmp_path / input_path(second.guide)).convert("RGB")
    assert stored.tobytes() == Image.open(io.BytesIO(square((200, 200, 200)))).convert("RGB").tobytes()
    fields = result_fields(generation, service.catalog)
    assert ("Style reference", "tiny-ip-adapter (style layers, weight 0.8) on steps 1–20 of 20") in fields
    png = parse_parameters(read_text((tmp_path / generation.images[0].path).read_bytes())["parameters"])["fields"]
    assert png["ControlNet 1"].endswith(f"Guide hash: {second.guide}, Layers: style")


async def test_style_references_follow_the_controlnets_and_vary_keeps_them(service, backend):
    """A ControlNet and a style reference together; Vary drops the structure (the ControlNet) and keeps the look."""
    await (await service.imagine("a red fox", ALICE)).result()
    line = "a fox --sref #1:0.6 --cn tiny-controlnet --guide square.png"
    await (await service.imagine(line, ALICE, load=load)).result()
    control, style = backend.requests[-1].controlnets
    assert (control.model, control.style, style.style, style.weight) == ("tiny-controlnet", False, True, 0.6)
    await (await service.vary(ALICE, 2, "strong")).result()
    varied = backend.requests[-1]
    assert varied.controlnets == (style.model_copy(update={"end_step": varied.run_steps}),)
    assert varied.run_steps < 20
    await (await service.reroll(ALICE, 2)).result()
    assert backend.requests[-1].controlnets == (control, style)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a fox --sw 50", "--sw needs --sref: it weighs the style references."),
        ("a fox --sref square.png --sw 300", "--sw must be a whole percent from 0 to 200"),
        ("a fox --sref square.png --sw 0.5", "--sw must be a whole percent from 0 to 200"),
        ("a fox --sref square.png:3", "--sref weight must be a number from 0 to 2, not '3'."),
        ("a fox --sref square.png=2", "--sref 'square.png=2' should be an image with a weight if you like"),
        ("a fox --sref a.png b.png c.png d.png", "--sref takes at most 3 images, not 4."),
        (
            "a fox --cn tiny-controlnet=square.png, tiny-ip-adapter=square.png --sref a.png b.png",
            "--sref and --cn take at most 3 images in all, not 4.",
        ),
        ("a fox --sref notes.png", "--sref must be a PNG, JPEG or WebP file"),
        ("a fox --sref square.png --preprocess canny", "--preprocess needs --cn"),
        ("a fox --sref #9", "There is no generation #9"),
    ],
)
async def test_style_reference_refusals_are_one_sentence_and_store_nothing(service, tmp_path, line, message):
    with pytest.raises((InvalidOption, NotFound)) as refused:
        await service.imagine(line, ALICE, load=load)
    assert str(refused.value).startswith(message), str(refused.value)
    assert await service.history(ALICE) == []
    assert not (tmp_path / "inputs").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a fox --cn nosuch --guide square.png", "--cn 'nosuch' is not in the catalog"),
        ("a fox --cn tiny-controlnet=square.png@5-3", "--cn tiny-controlnet would start at step 5, after its end"),
        ("a fox --cn tiny-controlnet --guide square.png --cn-end 40", "--cn-end must be a step from 1 to 20"),
        ("a fox --cn tiny-controlnet --guide square.png --cn-weight 3", "--cn-weight must be a number from 0 to 2"),
        ("a fox --cn tiny-controlnet --guide notes.png", "--guide must be a PNG, JPEG or WebP file"),
        (
            "a fox --cn tiny-controlnet --guide square.png --preprocess depth",
            "--preprocess 'depth' needs its annotator",
        ),
        ("a fox --guide square.png", "--guide needs --cn"),
        (
            "a fox --cn tiny-controlnet=square.png, tiny-controlnet=grey.png",
            "--cn names one ControlNet twice; give each once.",
        ),
        (
            "a fox --cn tiny-ip-adapter --guide square.png --preprocess canny",
            "--preprocess is for ControlNets that read a map; the IP-Adapter 'tiny-ip-adapter' reads the image itself.",
        ),
        (
            "a fox --cn tiny-ip-adapter --guide square.png --cn-mode prompt",
            "--cn-mode is for ControlNets that read a map; the IP-Adapter 'tiny-ip-adapter' reads the image itself.",
        ),
        ("a fox --cn a=square.png, b=square.png, c=square.png, d=square.png", "--cn takes at most 3 ControlNets"),
    ],
)
async def test_refusals_are_one_sentence_and_store_nothing(service, tmp_path, line, message):
    with pytest.raises(InvalidOption) as refused:
        await service.imagine(line, ALICE, load=load)
    assert str(refused.value).startswith(message), str(refused.value)
    assert await service.history(ALICE) == []
    assert not (tmp_path / "inputs").exists()


async def test_show_guide_gives_the_preprocessed_guides_to_whoever_may_see_the_image(service, tmp_path):
    """ "Show guide" (and `guide [#id]`): the canny map the ControlNet saw, labelled with its steps; a
    result made without a ControlNet has no such button and the command says why."""
    from bot.actions import result_actions
    from bot.chat import ChatFlow, Guides

    flow = ChatFlow(service)
    plain = await (await service.imagine("a fox", ALICE)).result()
    guided = await (await service.imagine("a fox --cn tiny-controlnet --guide square.png", ALICE, load=load)).result()
    assert "guide" in result_actions(guided.request) and "guide" not in result_actions(plain.request)

    reply = await flow.action(ALICE, "guide", guided.id)
    assert isinstance(reply, Guides) and reply.generation_id == guided.id
    (shown,) = reply.images
    control = guided.request.controlnets[0]
    assert shown.data == (tmp_path / input_path(control.guide)).read_bytes()  # the map, not the photo
    assert shown.label == f"#{guided.id} guide 1: tiny-controlnet (canny, weight 1, balanced) on steps 1–20 of 20"
    latest = await flow.text(ALICE, "guide")
    assert isinstance(latest, Guides) and latest.images == reply.images

    with pytest.raises(NotFound, match=f"^There is no guide image of #{plain.id}: it was made without a ControlNet.$"):
        await flow.text(ALICE, f"guide #{plain.id}")
    bob = Requester("console", "bob", workspace="w1")
    assert isinstance(await flow.action(bob, "guide", guided.id), Guides)  # a public image's guide is public
    await service.user_settings.update(ALICE, {"private": True})
    private = await (await service.imagine("a cat --cn tiny-controlnet --guide square.png", ALICE, load=load)).result()
    with pytest.raises(NotFound, match=f"There is no generation #{private.id}"):
        await flow.action(bob, "guide", private.id)
    assert await flow.text(ALICE, "guide of the galaxy") is None  # on Slack, a prompt


async def test_a_scribble_guide_is_made_here_as_a1111s_xdog_strokes(service, backend, tmp_path):
    """`--preprocess scribble` with no backend annotator: white strokes on black along the square's dark rim only."""
    strokes = await guide_made_here(service, backend, tmp_path, "scribble")
    assert set(np.unique(strokes)) <= {0, 255} and (strokes[..., 0] == strokes[..., 2]).all()
    white = strokes[..., 0] == 255
    assert white[32:36, 40:88].any(axis=0).all()  # the square's rim, on its dark side
    assert not white[:28].any() and not white[50:78, 50:78].any()  # not the white page, not the flat inside


async def test_line_art_is_made_here_as_a1111s_lineart_standard(service, backend, tmp_path):
    """`--preprocess lineart` with no backend annotator: grey lines on black inside the square's rim, fading inwards."""
    art = await guide_made_here(service, backend, tmp_path, "lineart")
    assert (art[..., 0] == art[..., 1]).all() and (art[..., 0] == art[..., 2]).all()
    line = art[..., 0].astype(int)
    assert (line[:32] == 0).all() and (line[:, 96:] == 0).all()  # the white page has no line
    assert (line[32, 40:88] == 255).all() and (line[34, 40:88] > line[38, 40:88]).all()  # the rim, fading in
    assert (line[56:72, 56:72] == 0).all()  # the flat inside, far from any edge


@pytest.mark.parametrize("preprocess", sorted(MADE_HERE))
@settings(max_examples=25, deadline=None)
@given(
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(["RGB", "L", "RGBA", "P", "1"]),
)
def test_a_guide_made_here_is_a_grey_png_of_the_image_size_for_any_image(preprocess, size, seed, mode):
    """Whatever a checked image holds (noise, one pixel, a palette, transparency): a grey PNG of its size."""
    noise = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).convert(mode).save(buffer, format="PNG")
    made = make_guide(InputImage(buffer.getvalue(), size[0], size[1], "0" * 64), preprocess)
    with Image.open(io.BytesIO(made.data)) as opened:
        assert (opened.format, opened.mode, opened.size) == ("PNG", "RGB", size)
        grey = np.asarray(opened)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 0] == grey[..., 2]).all()
    assert made.sha256 != "0" * 64 and (made.width, made.height) == size


async def test_the_line_art_of_a_faint_drawing_is_as_clear_as_a_dark_ones(service, backend, tmp_path):
    """A1111's median scaling: a light grey square's rim still comes out as a clear line, not a faint one."""
    art = await guide_made_here(service, backend, tmp_path, "lineart", guide="grey.png")
    assert (art[32, 40:88, 0] > 127).all()  # 55 levels darker than the page: unscaled, a line of 27 at most

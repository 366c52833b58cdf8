"""`imagine_command`: the /imagine text of a request, which the parser reads back as the same request."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bot.controls import Guide
from bot.errors import InvalidOption
from bot.options import Defaults, Inputs, imagine_command, parse_text
from bot.permutations import permutations
from bot.request import (
    CONTROL_MODES,
    PREPROCESSORS,
    SIDE,
    ControlNetSpec,
    GenerationRequest,
    Outpaint,
    RefinerSpec,
    WeightedName,
    run_steps,
)
from bot.rules import SCHEDULERS, check
from tests.bot.test_options_properties import CATALOG, LIMITS, PROPERTY, clean_text

SIDES = st.integers(SIDE.low // SIDE.step, 24).map(lambda n: n * SIDE.step)
SHAS = st.text("0123456789abcdef", min_size=64, max_size=64)
# Prompts as the parser leaves them: stripped, no control character but newlines and tabs, with flags and quotes.
TRICKY_WORDS = ["--seed", "—steps", "--bogus", "--", '"', "'", "“", "”", "‘", "’", ",", "a,", '"quoted"', "--no=x"]
PROMPTS = st.one_of(
    clean_text,
    st.lists(st.one_of(st.sampled_from(TRICKY_WORDS), st.text(string.ascii_letters + "\"'“”", max_size=6)))
    .map(" ".join)
    .filter(lambda s: len(s.strip()) >= 2),
).map(lambda s: s.replace("\r\n", "\n").strip())


def _weighted(kind: str) -> st.SearchStrategy[tuple[WeightedName, ...]]:
    weights = st.one_of(st.just(1.0), st.floats(-4, 4, allow_nan=False), st.sampled_from([0.8, -0.5, 1.25]))
    return st.lists(st.sampled_from(CATALOG.names(kind)), unique=True, max_size=3).flatmap(
        lambda names: st.tuples(*(st.builds(WeightedName, name=st.just(n), weight=weights) for n in names))
    )


@st.composite
def requests(draw: st.DrawFn) -> GenerationRequest:
    """Any request the parser could make: catalog names, sizes, refiner, LoRAs, an input image, ControlNets."""
    model = CATALOG.get("model", draw(st.sampled_from(CATALOG.names("model"))))
    steps = draw(st.integers(1, 100))
    width, height = draw(SIDES), draw(SIDES)
    fields: dict[str, object] = {}
    if draw(st.booleans()):
        strength = draw(st.one_of(st.floats(0.01, 1), st.sampled_from([0.35, 0.7, 0.8, 1.0])))
        assume(run_steps(steps, strength) >= 1)
        fields |= {"init_image": draw(SHAS), "strength": strength}
        choice = draw(st.sampled_from(["plain", "mask", "outpaint"]))
        if choice == "mask":
            fields["mask_image"] = draw(SHAS)
        elif choice == "outpaint":
            extra = st.integers(0, 4).map(lambda n: n * SIDE.step)
            sides = [draw(extra) for _ in range(4)]
            assume(any(sides))
            outpaint = Outpaint(
                top=sides[0], right=sides[1], bottom=sides[2], left=sides[3], blur=draw(st.integers(0, 32))
            )
            width, height = width + outpaint.left + outpaint.right, height + outpaint.top + outpaint.bottom
            assume(width <= SIDE.high and height <= SIDE.high)
            fields["outpaint"] = outpaint
    ran = steps if "strength" not in fields else run_steps(steps, float(fields["strength"]))  # type: ignore[arg-type]
    if model.refiner is not None and draw(st.booleans()):
        fields["refiner"] = RefinerSpec(model=model.refiner, start_percent=draw(st.integers(1, 99)))
    controls = [c for c in CATALOG.names("controlnet") if CATALOG.get("controlnet", c).architecture == "sdxl"]
    if model.architecture.removesuffix("-distilled") == "sdxl" and controls:
        mode = draw(st.sampled_from(CONTROL_MODES))
        chosen = draw(st.sampled_from([None, *PREPROCESSORS]))
        specs = []
        for name in draw(st.lists(st.sampled_from(controls), unique=True, max_size=3)):
            # An IP-Adapter reads the image as given, always balanced: the parser makes no other.
            adapter = CATALOG.is_ip_adapter(name)
            preprocess = "none" if adapter else chosen or CATALOG.get("controlnet", name).preprocess or "none"
            start = draw(st.integers(1, ran))
            specs.append(
                ControlNetSpec(
                    model=name,
                    guide=draw(SHAS),
                    source=None if preprocess == "none" else draw(SHAS),
                    preprocess=preprocess,
                    weight=draw(st.one_of(st.just(1.0), st.floats(0, 2))),
                    start_step=start,
                    end_step=draw(st.integers(start, ran)),
                    mode="balanced" if adapter else mode,
                )
            )
        # Style references (--sref) follow the ControlNets, the model's IP-Adapter on every step that runs.
        if model.blend is not None:
            for _ in range(draw(st.integers(0, 3 - len(specs)))):
                weight = draw(st.one_of(st.just(1.0), st.floats(0, 2)))
                specs.append(
                    ControlNetSpec(model=model.blend, guide=draw(SHAS), weight=weight, end_step=ran, style=True)
                )
        fields["controlnets"] = tuple(specs)
    request = GenerationRequest(
        prompt=draw(PROMPTS),
        negative_prompt=draw(st.one_of(st.none(), PROMPTS)),
        model=model.name,
        width=width,
        height=height,
        steps=steps,
        cfg_scale=draw(st.one_of(st.floats(0, 50), st.sampled_from([0.0, 1.0, 7.0, 6.5]))),
        scheduler=draw(st.sampled_from(SCHEDULERS)),
        seed=draw(st.integers(1, 2**63 - 1)),
        count=draw(st.integers(1, 4)),
        clip_skip=draw(st.integers(0, 2)),
        tiling=draw(st.booleans()),
        **(
            {"variation_seed": draw(st.integers(1, 2**32)), "variation_strength": draw(st.floats(0.01, 1))}
            if "init_image" not in fields and draw(st.booleans())
            else {}
        ),
        vae=draw(st.one_of(st.none(), st.sampled_from(CATALOG.names("vae")))),
        loras=draw(_weighted("lora")),
        embeddings=draw(_weighted("embedding")),
        output_format=draw(st.sampled_from(["png", "jpg", "webp"])),
        **fields,
    )
    try:
        check(request, CATALOG, LIMITS)  # the core's one check: a request it refuses is no request
    except InvalidOption:
        assume(False)
    return request


def _refs(request: GenerationRequest) -> dict[str, str]:
    """Name every input image a previous image, as the gallery finds them: #1, #2.2, …"""
    shas = [request.init_image, request.mask_image]
    shas += [sha for control in request.controlnets for sha in (control.source or control.guide,)]
    return {sha: f"#{number}" + (".2" if number % 2 else "") for number, sha in enumerate(shas, 1) if sha}


def _read_back(text: str, request: GenerationRequest, defaults: Defaults) -> GenerationRequest:
    """Parse the command as the chats do, with the input images the refs name already loaded."""
    inputs = None
    if request.init_image is not None:
        top, right, bottom, left = request.outpaint.sides if request.outpaint else (0, 0, 0, 0)
        extra_w, extra_h = left + right, top + bottom
        inputs = Inputs(request.init_image, request.width - extra_w, request.height - extra_h, request.mask_image)
    guides = [Guide(control.guide, control.source) for control in request.controlnets]
    assert text.startswith("/imagine ")
    (one,) = permutations(text.removeprefix("/imagine "))  # its braces are the prompt's own: one prompt
    parsed = parse_text(one, catalog=CATALOG, defaults=defaults, limits=LIMITS, inputs=inputs, guides=guides)
    return parsed.request


DEFAULTS = st.builds(
    Defaults,
    model=st.sampled_from(CATALOG.names("model")),
    steps=st.one_of(st.none(), st.integers(1, 100)),
    refiner_percent=st.one_of(st.none(), st.integers(1, 99)),
    width=st.one_of(st.none(), st.just(640)),
    height=st.one_of(st.none(), st.just(384)),
    scheduler=st.one_of(st.none(), st.sampled_from(SCHEDULERS)),
    cfg=st.one_of(st.none(), st.floats(0, 50)),
)


@PROPERTY
@given(requests(), DEFAULTS)
def test_the_command_of_a_request_parses_back_to_it_whatever_the_readers_defaults(request, defaults):
    """parse(render(request)) == request, with LoRAs, refiner, #id inputs and ControlNets, under any saved defaults."""
    text = imagine_command(request, CATALOG, _refs(request))
    if text is None:
        # No quote protects a text that closes every kind of quote where a word ends.
        assert any(
            all(close in words for close in "\"'”’") for words in (request.prompt, request.negative_prompt or "")
        )
        return
    assert _read_back(text, request, defaults) == request


def _request(**fields: object) -> GenerationRequest:
    base: dict[str, object] = {"prompt": "a red fox", "model": "tiny", "width": 128, "height": 128, "steps": 4}
    return GenerationRequest(**(base | {"seed": 7, "scheduler": "Euler a", "cfg_scale": 7.0} | fields))


def test_a_plain_request_reads_like_what_a_user_types():
    """Every setting is written out, the shortest way that reads back exactly."""
    request = _request(loras=(WeightedName(name="tiny-lora", weight=0.8),), negative_prompt="blurry")
    assert imagine_command(request, CATALOG, {}) == (
        "/imagine a red fox --no blurry --model tiny --size 128x128 --steps 4 --cfg 7 --scheduler Euler a"
        " --seed 7 --refiner off --lora tiny-lora:0.8"
    )


def test_braces_of_a_stored_prompt_are_written_as_its_own_characters():
    """A prompt that holds braces (an old one, or escaped when typed) is one prompt again, not choices."""
    request = _request(prompt=r"a {red, blue} fox \{x}", negative_prompt="{text}")
    text = imagine_command(request, CATALOG, {})
    assert text is not None and text.startswith(r"/imagine a \{red, blue\} fox \\{x\} --no \{text\} --model tiny")
    assert _read_back(text, request, Defaults(model="tiny")) == request


def test_style_references_are_written_as_sref_after_the_controlnets():
    styles = tuple(
        ControlNetSpec(model="tiny-ip-adapter", guide=sha * 64, weight=weight, end_step=4, style=True)
        for sha, weight in (("a", 0.6), ("b", 1.0))
    )
    net = ControlNetSpec(model="tiny-controlnet", guide="c" * 64, end_step=4)
    refs = {"a" * 64: "#3", "b" * 64: "#4.2", "c" * 64: "#5"}
    text = imagine_command(_request(controlnets=(net, *styles)), CATALOG, refs)
    assert text is not None and text.endswith(" --cn tiny-controlnet=#5@1-4 --preprocess none --sref #3:0.6 #4.2")
    # What --sref cannot say: a style reference before a ControlNet, or on some steps only.
    assert imagine_command(_request(controlnets=(styles[0], net)), CATALOG, refs) is None
    partial = styles[0].model_copy(update={"end_step": 3})
    assert imagine_command(_request(controlnets=(partial,)), CATALOG, refs) is None


def test_a_prompt_that_reads_as_flags_is_quoted():
    """A prompt holding ``--seed`` is quoted, so the seed stays in the prompt."""
    text = imagine_command(_request(prompt="a sign saying --seed 5"), CATALOG, {})
    assert text is not None and text.startswith('/imagine "a sign saying --seed 5" --model tiny')


@pytest.mark.parametrize(
    "fields",
    [
        {"init_image": "a" * 64, "strength": 0.3, "upscale": 2},
        {"refiner": RefinerSpec(model="tiny-refiner", start_step=3)},
        {"refiner": RefinerSpec(model="sdxl-refiner", start_percent=80)},
        {"init_image": "b" * 64, "strength": 0.5},
    ],
    ids=["upscale", "refiner-step", "other-refiner", "attachment"],
)
def test_what_no_imagine_asks_has_no_command(fields):
    """An upscale, a refiner no flag names, or an input that is no previous image: None."""
    assert imagine_command(_request(**fields), CATALOG, {}) is None

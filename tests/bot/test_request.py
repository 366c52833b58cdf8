"""The request model's own pieces: the ranges it declares and the one reader of ``WxH`` text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.catalog import load_catalog
from bot.errors import InvalidOption, shown
from bot.options import Defaults, Limits, parse_text
from bot.policy import Policy
from bot.request import (
    CFG,
    CLIP_SKIP,
    COUNT,
    MAX_ADDONS,
    PROMPT_LENGTH,
    REFINER_PERCENT,
    SEED,
    SIDE,
    STEPS,
    WEIGHT,
    GenerationRequest,
    Range,
    parse_size,
)

# A side may hold digits (ASCII or not), spaces, a letter or a dot, but never a separator.
SIDES = st.one_of(st.integers(0, 10**6).map(str), st.text(alphabet="0123456789 .a٣", max_size=7))
SEPARATORS = st.sampled_from(["x", "X", "×", "*", "", "-", ":", "xx", "by", "÷", "x*"])
PADS = st.sampled_from(["", " ", "  ", "\t"])


def is_side(text: str) -> bool:
    side = text.strip()
    return side.isascii() and side.isdigit() and 1 <= len(side) <= 5


@given(
    width=SIDES,
    separator=SEPARATORS,
    height=SIDES,
    pads=st.tuples(PADS, PADS, PADS, PADS),
    option=st.sampled_from(["size", "max size"]),
)
def test_size_text_gives_its_two_numbers_or_one_sentence_naming_the_option(
    width: str, separator: str, height: str, pads: tuple[str, str, str, str], option: str
) -> None:
    """'WxH' (x, X, × or *, spaces around) gives the two numbers; anything else is one InvalidOption sentence."""
    text = f"{pads[0]}{width}{pads[1]}{separator}{pads[2]}{height}{pads[3]}"
    if separator in ("x", "X", "×", "*") and is_side(width) and is_side(height):
        assert parse_size(text, option) == (int(width), int(height))
        return
    with pytest.raises(InvalidOption) as caught:
        parse_size(text, option)
    message = str(caught.value)
    assert caught.value.option == option
    assert message.startswith(option[0].upper() + option[1:] + " must be WIDTHxHEIGHT")
    assert message.endswith(f"not '{shown(text)}'.")
    assert message.splitlines() == [message]


def test_the_model_checks_the_sides_the_size_reader_leaves_to_its_callers() -> None:
    """`SIDE` is what the request model takes: multiples of 64 from 128 to 2048."""
    assert (SIDE.low, SIDE.high, SIDE.step) == (128, 2048, 64)
    assert 1216 in SIDE and 1000 not in SIDE and 2112 not in SIDE
    GenerationRequest(prompt="a fox", model="sdxl", width=SIDE.high, height=SIDE.low)
    with pytest.raises(ValueError, match="multiple of 64"):
        GenerationRequest(prompt="a fox", model="sdxl", width=1000)


def test_a_range_without_a_step_takes_any_value_between() -> None:
    """A float range has no step; its ends are inside it."""
    cfg = Range(0.0, 50.0)
    assert 0.0 in cfg and 50.0 in cfg and 7.5 in cfg
    assert -0.1 not in cfg and 50.1 not in cfg


CATALOG = load_catalog()
RANGES = [
    # (flag, request field, range, a value just outside it)
    ("steps", "steps", STEPS, STEPS.high + 1),
    ("cfg", "cfg_scale", CFG, CFG.high + 0.5),
    ("n", "count", COUNT, COUNT.high + 1),
    ("seed", "seed", SEED, SEED.low - 1),
    ("clip-skip", "clip_skip", CLIP_SKIP, CLIP_SKIP.high + 1),
]


def number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@pytest.mark.parametrize(("flag", "field", "allowed", "outside"), RANGES)
def test_the_option_parser_takes_the_models_own_range(flag: str, field: str, allowed: Range, outside: float) -> None:
    """What the model takes, the parser takes; what it refuses, the parser refuses naming the same range."""
    limits = Limits(pixel_budget=4 * 2048**2)
    for value in (allowed.low, allowed.high):
        GenerationRequest(prompt="a fox", model="sdxl", **{field: value})
        parse_text(f"a fox --{flag} {value}", catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=limits)
    with pytest.raises(ValidationError):
        GenerationRequest(prompt="a fox", model="sdxl", **{field: outside})
    sentence = f"must be from {number(allowed.low)} to {number(allowed.high)}, not {number(outside)}"
    with pytest.raises(InvalidOption, match=sentence):
        parse_text(f"a fox --{flag} {outside}", catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=limits)


def test_the_prompt_and_addon_limits_are_the_models() -> None:
    """The parser refuses a prompt or a LoRA list just past what the model takes, in its own words."""
    defaults, limits = Defaults(model="sdxl"), Limits(pixel_budget=4 * 2048**2)
    too_long = "a" * (PROMPT_LENGTH.high + 1)
    with pytest.raises(ValidationError):
        GenerationRequest(prompt=too_long, model="sdxl")
    with pytest.raises(InvalidOption, match=f"the most is {PROMPT_LENGTH.high}"):
        parse_text(too_long, catalog=CATALOG, defaults=defaults, limits=limits)
    loras = ", ".join(["tiny-lora"] * (MAX_ADDONS + 1))
    with pytest.raises(InvalidOption, match=f"takes at most {MAX_ADDONS} names"):
        parse_text(f"a fox --lora {loras}", catalog=CATALOG, defaults=defaults, limits=limits)
    with pytest.raises(InvalidOption, match=f"from {WEIGHT.low:g} to {WEIGHT.high:g}"):
        parse_text(f"a fox --lora tiny-lora:{WEIGHT.high + 1}", catalog=CATALOG, defaults=defaults, limits=limits)


def test_a_refine_percent_is_the_refiner_specs_range() -> None:
    """`refined` refuses what `RefinerSpec` would, with the option's sentence."""
    request = GenerationRequest(prompt="a fox", model="sdxl")
    assert request.refined("sdxl-refiner", REFINER_PERCENT.high).refiner is not None
    with pytest.raises(InvalidOption, match=f"from {REFINER_PERCENT.low} to {REFINER_PERCENT.high}"):
        request.refined("sdxl-refiner", REFINER_PERCENT.high + 1)


@pytest.mark.parametrize(("key", "allowed"), [("max_steps", STEPS), ("max_count", COUNT)])
def test_a_server_limit_is_within_what_a_request_may_be(key: str, allowed: Range) -> None:
    """A server may lower a limit to the request's least, and not raise it past its most."""
    Policy(**{key: allowed.low})
    Policy(**{key: allowed.high})
    with pytest.raises(ValidationError):
        Policy(**{key: allowed.high + 1})


def test_an_upscale_no_model_redraws_has_no_strength_and_older_rows_still_load() -> None:
    """Strength None only in an upscale (then no step runs); an upscaler only then; a stored hires-fix row loads."""
    image = {"prompt": "a fox", "model": "tiny", "width": 256, "height": 256, "init_image": "a" * 64}
    alone = GenerationRequest(**image, upscale=2, upscaler="tiny-upscaler")
    assert alone.upscales_alone and alone.run_steps == 0 and alone.split == (0, 0)
    assert GenerationRequest.from_dict(alone.to_dict()) == alone
    # rows stored before upscalers: a Runware upscale with strength 0.3 and no `upscaler` key
    old = {**image, "upscale": 2, "strength": 0.3, "steps": 30}
    assert GenerationRequest.from_dict(old).run_steps == 9
    for bad in (
        {**image},  # an init image with no strength is not an upscale
        {**image, "upscale": 2, "strength": 0.3, "upscaler": "tiny-upscaler"},  # an upscaler and a redraw
        {"prompt": "a fox", "model": "tiny", "upscaler": "tiny-upscaler"},
        {**image, "upscale": 2, "refiner": {"model": "tiny-refiner", "start_percent": 80}},
    ):
        with pytest.raises(ValidationError):
            GenerationRequest(**bad)

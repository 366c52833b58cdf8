"""The request model's own pieces: the ranges it declares and the one reader of ``WxH`` text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import InvalidOption, shown
from bot.request import SIDE, GenerationRequest, Range, parse_size

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

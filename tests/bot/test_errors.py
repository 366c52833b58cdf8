"""The error hierarchy's shared pieces: how a refusal echoes what the user typed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import InvalidOption, QuotaReached, shown


@given(st.text(max_size=200))
def test_shown_is_one_short_line(text: str) -> None:
    """An echoed value is one line of at most 40 characters, whatever was typed."""
    echoed = shown(text)
    assert len(echoed) <= 40
    assert "\n" not in echoed and "\r" not in echoed


def test_shown_keeps_short_values_and_marks_cut_ones() -> None:
    """A short value is echoed as typed (spaces folded); a long one ends in an ellipsis."""
    assert shown("  a  red\nfox ") == "a red fox"
    assert shown("x" * 50) == "x" * 39 + "…"


def test_invalid_option_is_one_sentence_naming_the_option() -> None:
    """The message starts with the option, capitalised, and ends with a full stop or a question."""
    assert str(InvalidOption("steps", "must be from 1 to 100, not 500")) == "Steps must be from 1 to 100, not 500."
    assert str(InvalidOption("model", "is unknown", ["sdxl"])) == "Model is unknown; did you mean 'sdxl'?"
    # An option the user typed is shown as typed: "cfg" in Discord's options, "--cfg" in text.
    assert str(InvalidOption("cfg", "must be from 0 to 50, not 99", typed=True)) == "cfg must be from 0 to 50, not 99."


@pytest.mark.parametrize(
    ("limit", "personal", "left", "asked", "said"),
    [
        (5, False, 0, 1, "This server has made its 5 images for today"),
        (1, True, 0, 1, "You have made your 1 image for today in this server"),
        (5, False, 2, 4, "This server has 2 of its 5 images for today left, and this asks for 4"),
        (10, True, 3, 8, "You have 3 of your 10 images for today left in this server, and this asks for 8"),
    ],
)
def test_a_quota_refusal_says_what_is_left_when_some_is(
    limit: int, personal: bool, left: int, asked: int, said: str
) -> None:
    """ "Made its 5" only when none is left; else how many are left and how many were asked for."""
    refused = QuotaReached(limit, 3 * 3600 + 60 * 4, personal=personal, left=left, asked=asked)
    assert str(refused) == f"{said}; the quota resets in 3 h 4 min (UTC midnight)."

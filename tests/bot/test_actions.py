import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.actions import (
    IMAGE_ACTIONS,
    RefArgs,
    decode_action,
    encode_action,
    format_image_ref,
    format_ref,
    parse_ref_args,
)
from bot.errors import InvalidOption


@pytest.mark.parametrize(
    ("text", "allow_percent", "expected"),
    [
        ("", False, RefArgs()),
        ("#12", False, RefArgs(12)),
        ("", True, RefArgs()),
        ("90", True, RefArgs(None, 90)),
        ("90%", True, RefArgs(None, 90)),
        ("#12 85", True, RefArgs(12, 85)),
        ("85 #12", True, RefArgs(12, 85)),
        ("#90", True, RefArgs(90, None)),
    ],
)
def test_reference_arguments(text, allow_percent, expected):
    """`refine 90` is a percent on the latest image; `refine #90` is image 90."""
    assert parse_ref_args(text, allow_percent=allow_percent) == expected


@pytest.mark.parametrize(
    ("text", "allow_percent", "sentence"),
    [
        ("12", False, "Argument '12' is not understood; expected '#id' (ids start with #)."),
        ("100", True, "refine must be a percent from 1 to 99, not '100'."),
        ("0", True, "refine must be a percent from 1 to 99, not '0'."),
        ("#0", True, "'#0' is not a generation id."),
        ("#" + "9" * 19, True, "'#9999999999999999999' is not a generation id."),
        ("#1 #2", True, "Argument '#2' is not understood; expected '#id' and a percent from 1 to 99."),
        ("fox", True, "Argument 'fox' is not understood; expected '#id' and a percent from 1 to 99."),
    ],
)
def test_bad_reference_arguments(text, allow_percent, sentence):
    with pytest.raises(InvalidOption) as caught:
        parse_ref_args(text, allow_percent=allow_percent)
    assert str(caught.value) == sentence


def test_format_ref():
    assert format_ref(12) == "#12"


# Ids of up to 18 digits: a 19-digit one can pass SQLite's 2**63 - 1.
@given(st.sampled_from(["reroll", "refine", "details", "delete", "cancel"]), st.integers(1, 10**18 - 1))
def test_action_ids_round_trip_within_discord_limit(action, generation_id):
    custom_id = encode_action(action, generation_id)
    assert len(custom_id) <= 100
    assert decode_action(custom_id) == (action, generation_id, 0)


# A button on one image of several names it as users do; the first needs no number, so old buttons read the same.
@given(st.sampled_from(sorted(IMAGE_ACTIONS)), st.integers(1, 10**18 - 1), st.integers(0, 3))
def test_one_image_ids_round_trip_named_as_users_name_the_image(action, generation_id, index):
    custom_id = encode_action(action, generation_id, index)
    assert custom_id == f"ib:{action}:{format_image_ref(generation_id, index)[1:]}"
    assert len(custom_id) <= 100
    assert decode_action(custom_id) == (action, generation_id, index)


@pytest.mark.parametrize(("action", "index"), [("reroll", 1), ("details", 3), ("pick", 4), ("vary-strong", -1)])
def test_an_image_number_only_on_one_image_buttons_and_within_a_generation(action, index):
    with pytest.raises(ValueError, match="cannot encode"):
        encode_action(action, 12, index)


@pytest.mark.parametrize(
    "custom_id",
    [
        "",
        "ib:reroll:",
        "ib:reroll:0",
        "ib:upscale:3",
        "other:reroll:3",
        "ib:reroll:3x",
        "ib:reroll:3.2",  # reroll acts on the whole generation
        "ib:pick:3.1",  # the first image has no number
        "ib:pick:3.5",  # a generation has at most four
        "ib:vary-strong:3.",
        "ib:vary-strong:3.2.2",
        "ib:vary-strong:3.2\n",
    ],
)
def test_foreign_ids_are_not_ours(custom_id):
    assert decode_action(custom_id) is None

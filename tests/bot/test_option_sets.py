"""Option sets (Midjourney's custom options): ``--mine`` in a prompt stands for the flags the user saved."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.catalog import load_catalog
from bot.errors import InvalidOption
from bot.option_sets import TEXT_MOST, checked_flags, checked_name, expanded, sets_text
from bot.options import Defaults, Limits, parse_text

SETS = {"mine": "--ar 2:3 --no blurry --steps 4", "wide": "--ar 21:9", "fast": "--steps 2 --cfg 1"}


def parsed(text: str):
    return parse_text(
        text, catalog=load_catalog(), defaults=Defaults("sdxl"), limits=Limits(pixel_budget=4 * 1024 * 1024)
    ).request


@pytest.mark.parametrize(
    ("text", "made"),
    [
        ("a fox --mine", "a fox --ar 2:3 --no blurry --steps 4"),
        ("a fox --mine --seed 3", "a fox --ar 2:3 --no blurry --steps 4 --seed 3"),
        ("a fox --MINE", "a fox --ar 2:3 --no blurry --steps 4"),
        ("a fox —mine", "a fox --ar 2:3 --no blurry --steps 4"),
        # What the prompt gives itself wins, wherever it stands.
        ("a fox --mine --ar 1:1", "a fox --no blurry --steps 4 --ar 1:1"),
        ("a fox --steps 9 --mine", "a fox --steps 9 --ar 2:3 --no blurry"),
        ("a fox --ar 1:1 --wide", "a fox --ar 1:1 "),
        ("a fox --wide --fast", "a fox --ar 21:9 --steps 2 --cfg 1"),
        # Quoted text is the user's words, never a set.
        ('a fox --no "--mine"', 'a fox --no "--mine"'),
        ("a fox", "a fox"),
    ],
)
def test_a_set_in_a_prompt_becomes_its_flags(text: str, made: str) -> None:
    assert expanded(text, SETS) == made


def test_a_set_fills_what_the_prompt_leaves_out() -> None:
    """Read by the parser: the set's size and negative, the prompt's own steps."""
    request = parsed(str(expanded("a red fox --mine --steps 6", SETS)))
    assert (request.prompt, request.negative_prompt, request.steps) == ("a red fox", "blurry", 6)
    assert (request.width, request.height) == (832, 1216)  # SDXL's 2:3 bucket


def test_typed_options_win_over_a_sets_flags() -> None:
    """Discord's typed ``ar`` is the prompt's own: the set's --ar is left out, the rest kept."""
    typed = {"prompt": "a fox --mine", "ar": "1:1", "negative": None}
    assert expanded(typed, SETS) == {"prompt": "a fox --no blurry --steps 4", "ar": "1:1", "negative": None}
    assert expanded({"prompt": "a fox --mine", "no": "dust"}, SETS) == {
        "prompt": "a fox --ar 2:3 --steps 4",
        "no": "dust",
    }


@pytest.mark.parametrize(
    ("text", "made"),
    [
        ("a fox", "a fox --ar 16:9 --no blurry"),
        ("a fox --seed 3", "a fox --seed 3 --ar 16:9 --no blurry"),
        # The prompt's own flag, or a set it names, wins without a sentence: the suffix is the weakest.
        ("a fox --ar 1:1", "a fox --ar 1:1 --no blurry"),
        ("a fox --mine", "a fox --ar 2:3 --no blurry --steps 4"),
        ("a fox --wide --seed 3", "a fox --ar 21:9 --seed 3 --no blurry"),
        # Named, it stands where it is named, once.
        ("a fox --suffix --seed 3", "a fox --ar 16:9 --no blurry --seed 3"),
    ],
)
def test_a_set_named_suffix_comes_with_every_prompt(text: str, made: str) -> None:
    """Midjourney's ``/prefer suffix``: flags added to every prompt, unless the prompt gives that option."""
    assert expanded(text, {**SETS, "suffix": "--ar 16:9 --no blurry"}) == made


def test_a_suffix_fills_what_typed_options_leave_out() -> None:
    """Discord's typed ``ar`` is the prompt's own: the suffix gives the rest."""
    typed = {"prompt": "a fox", "ar": "1:1"}
    assert expanded(typed, {"suffix": "--ar 16:9 --no blurry"}) == {"prompt": "a fox --no blurry", "ar": "1:1"}


def test_choices_in_a_set_are_choices_of_the_command() -> None:
    assert expanded("a fox --both", {"both": "--ar {1:1, 16:9}"}) == "a fox --ar {1:1, 16:9}"


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("a fox --mine --mine", "--mine is given twice."),
        ("a fox --mine please", "--mine is your option set and takes no value, not 'please'."),
        ("a fox --mine --wide", "--wide and --mine both give --ar; name one, or type it yourself."),
    ],
)
def test_a_set_used_wrongly_is_one_sentence(text: str, sentence: str) -> None:
    with pytest.raises(InvalidOption) as refused:
        expanded(text, SETS)
    assert str(refused.value) == sentence


def test_a_name_that_is_no_set_is_left_for_the_parser_unless_it_is_close_to_one() -> None:
    """``--mnie`` with a set ``mine``: did you mean it; ``--sed``: the parser's own sentence and suggestions."""
    with pytest.raises(InvalidOption) as refused:
        expanded("a fox --mnie", SETS)
    assert str(refused.value) == "--mnie is not an option; did you mean '--mine'?"
    assert expanded("a fox --sed 3", SETS) == "a fox --sed 3"
    with pytest.raises(InvalidOption, match=r"^--sed is not an option; did you mean '--seed'"):
        parsed("a fox --sed 3")


@pytest.mark.parametrize(
    ("typed", "name"), [("mine", "mine"), ("--My_Set", "my-set"), ("—portrait2", "portrait2"), (" x ", "x")]
)
def test_a_sets_name_is_saved_as_it_is_typed_in_a_prompt(typed: str, name: str) -> None:
    assert checked_name(typed) == name


@pytest.mark.parametrize(
    ("typed", "sentence"),
    [
        ("ar", "Option set name 'ar' is /imagine's own --ar; choose another."),
        ("--No", "Option set name 'no' is /imagine's own --no; choose another."),
        ("2fast", "Option set name must be a letter then letters, digits or '-', at most 24, not '2fast'."),
        ("a b", "Option set name must be a letter then letters, digits or '-', at most 24, not 'a b'."),
        ("x" * 25, f"Option set name must be a letter then letters, digits or '-', at most 24, not '{'x' * 25}'."),
    ],
)
def test_a_name_that_cannot_be_a_flag_of_its_own_is_refused(typed: str, sentence: str) -> None:
    with pytest.raises(InvalidOption) as refused:
        checked_name(typed)
    assert str(refused.value) == sentence


@pytest.mark.parametrize(
    ("flags", "sentence"),
    [
        ("a fox --ar 2:3", "Option set holds flags only, like --ar 16:9 --no blurry, not 'a fox'."),
        ("  ", "Option set holds flags only, like --ar 16:9 --no blurry."),
        (
            "--image #3 --strength 0.5",
            "Option set cannot name images (--image, --mask, a guide); type those in the prompt.",
        ),
        (
            "--sref #3 look.png",
            "Option set names its style references as previous images like #12, not 'look.png'.",
        ),
        ("--ar 2:3\x07", "Option set must not hold control characters."),
        ("--no " + "x" * TEXT_MOST, f"Option set is {TEXT_MOST + 5} characters; the most is {TEXT_MOST}."),
    ],
)
def test_a_set_holds_flags_alone(flags: str, sentence: str) -> None:
    with pytest.raises(InvalidOption) as refused:
        checked_flags(flags)
    assert str(refused.value) == sentence


def test_the_list_names_each_set_as_it_is_typed() -> None:
    assert (
        sets_text({"wide": "--ar 21:9", "mine": "--ar 2:3"}) == "Your option sets:\n--mine  --ar 2:3\n--wide  --ar 21:9"
    )
    assert sets_text({}, "/imagine prefer NAME --flags…") == (
        "You have no option sets; `/imagine prefer NAME --flags…` makes one, typed as --NAME in a prompt."
    )


# Not "suffix": that set comes with every prompt unnamed (tested on its own above).
_NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True).filter(
    lambda name: name not in ("ar", "n", "r", "no", "suffix")
)
_WORDS = st.text(st.sampled_from("ab -—'\"{},:="), max_size=30)


@given(
    sets=st.dictionaries(_NAMES, st.sampled_from([*SETS.values(), "--tile", "--seed 5", '--no "x --y"']), max_size=4),
    text=st.lists(st.one_of(_WORDS, _NAMES.map(lambda name: f" --{name} ")), max_size=6).map("".join),
)
def test_any_text_with_any_sets_is_text_or_one_sentence(sets: dict[str, str], text: str) -> None:
    """Whatever is typed: text again (itself where it names no set), or one sentence; never another error."""
    try:
        made = expanded(text, sets)
    except InvalidOption as refused:
        assert "\n" not in str(refused) and str(refused).endswith((".", "?"))  # "did you mean …?"
        return
    assert isinstance(made, str)
    if not any(f"--{name}" in text.lower() or f"—{name}" in text.lower() for name in sets):
        assert made == text
    assert expanded(text, {}) == text

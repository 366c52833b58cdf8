"""Permutation prompts: ``a {red, blue} fox`` reads as the prompts Midjourney makes of it, or one sentence."""

import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bot.errors import InvalidOption
from bot.permutations import MOST, Draw, escaped, permutations, variants
from tests.properties.sentences import assert_sentence


@pytest.mark.parametrize(
    ("text", "prompts"),
    [
        ("a red fox", ["a red fox"]),
        ("a {red, blue} fox", ["a red fox", "a blue fox"]),
        # Every combination, in reading order; a flag's value is text like any other.
        (
            "a {red, blue} fox --ar {1:1, 16:9}",
            ["a red fox --ar 1:1", "a red fox --ar 16:9", "a blue fox --ar 1:1", "a blue fox --ar 16:9"],
        ),
        # Nested choices are choices of their own.
        ("a {red, {dark, pale} blue} fox", ["a red fox", "a dark blue fox", "a pale blue fox"]),
        # An empty choice is a prompt without the words.
        ("a {big ,}fox", ["a bigfox", "a fox"]),
        ("{}fox", ["fox"]),
        # Escapes: a brace itself anywhere, a comma inside braces; other backslashes stay for the weights.
        (r"a \{red\} fox", ["a {red} fox"]),
        (r"a {red\, blue, green} fox", ["a red, blue fox", "a green fox"]),
        (r"a \(fox\) \, {x}", [r"a \(fox\) \, x"]),
        # A backslash before an escaped brace is itself: what `escaped` writes of a stored "\{".
        (r"a \\{x, y\}", [r"a \{x, y}"]),
    ],
)
def test_braces_make_every_combination(text, prompts):
    assert permutations(text) == prompts


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("a {red, blue fox", "Prompt has a '{' without its '}' (write \\{ for a brace itself)."),
        ("a red} fox", "Prompt has a '}' with no '{' before it (write \\} for a brace itself)."),
        ("{" * 9 + "x" + "}" * 9, "Prompt opens more than 8 braces inside each other."),
        ("{a,b}" * 6, f"Prompt makes more than {MOST} prompts with its {{…}} choices."),
        # Counted, not written out: a million prompts are refused at once.
        ("{a,b,c,d,e,f,g,h,i,j}" * 6, f"Prompt makes more than {MOST} prompts with its {{…}} choices."),
    ],
)
def test_what_cannot_be_read_is_one_sentence(text, sentence):
    with pytest.raises(InvalidOption) as caught:
        permutations(text)
    assert str(caught.value) == sentence


@given(st.text(alphabet="{},\\ ab", max_size=40), st.integers(0, 60))
@example("{a,b} {c,d,e}", 4)
def test_the_prompt_at_a_place_alone_is_that_of_all_of_them(text, place):
    """Another job of one prompt of several (`--repeat`) draws that one alone: the same as it is among all."""
    try:
        every = permutations(text)
    except InvalidOption:
        return
    assert permutations(text, only=place) == [every[place % len(every)]]
    fields = {"prompt": text, "negative": "{x, y, z}", "steps": 4}
    combined = variants(fields)
    assert variants(fields, only=place % len(combined)) == [combined[place % len(combined)]]


def test_a_prompt_at_a_place_draws_no_other():
    """Forty prompts, each with a pick: the fifth alone draws once, where all of them draw forty times."""
    text = "{" + ", ".join(str(n) for n in range(40)) + "} {x|y}"
    alone, every = Draw({}, random.Random(0)), Draw({}, random.Random(0))
    (fifth,) = permutations(text, draw=alone, only=5)
    assert fifth in ("5 x", "5 y") and alone.tally.draws == 1
    assert len(permutations(text, draw=every)) == 40 and every.tally.draws == 40


def test_typed_fields_combine_in_field_order():
    """Discord's fields: each field's choices, combined; other values stay as they are."""
    made = variants({"prompt": "a {red, blue} fox", "negative": "{text, blur}", "steps": 20})
    assert made == [
        {"prompt": "a red fox", "negative": "text", "steps": 20},
        {"prompt": "a red fox", "negative": "blur", "steps": 20},
        {"prompt": "a blue fox", "negative": "text", "steps": 20},
        {"prompt": "a blue fox", "negative": "blur", "steps": 20},
    ]
    with pytest.raises(InvalidOption) as caught:
        variants({"prompt": "{a,b,c,d,e}", "negative": "{a,b,c,d,e,f,g,h,i}"})
    assert str(caught.value) == "Prompt and its fields make 45 prompts with their {…} choices; the most is 40."
    with pytest.raises(InvalidOption, match=r"^Negative has a '\{' without"):
        variants({"prompt": "a fox", "negative": "{text"})


@given(st.text(max_size=200))
@example("a \\{")
@example("\\")
def test_any_text_escaped_reads_back_as_itself(text):
    """What the bot writes of a stored prompt (Edit, PNG info) reads back as that prompt, whatever it holds."""
    assert permutations(escaped(text)) == [text]


@given(st.text(alphabet="_\\{}|,$:ax ", max_size=60))
@example("a __a__ fox")
@example("\\__a__")
@example("x\\_")
def test_any_text_escaped_reads_back_as_itself_where_its_words_name_wildcards(text):
    """A prompt stored where its ``__a__`` was words (no wildcards then) is itself again once `a` is a wildcard."""
    assert permutations(escaped(text), draw=Draw({"a": ("drawn",), "x": ("drawn",)}, random.Random(0))) == [text]


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        # An escaped underscore is the character, and two of them never open a wildcard.
        (r"a \_\_shade\_\_ fox", "a __shade__ fox"),
        (r"snake\_case __shade__", "snake_case light"),
        # One escaped, the rest read on: the wildcard starts after it.
        (r"\__shade__", "__shade__"),
        (r"\___shade__", "_light"),
        # Inside a pick, and in a wildcard's line.
        (r"{\_\_shade\_\_|\_\_shade\_\_}", "__shade__"),
        ("__under__", "__init__ light"),
    ],
)
def test_an_escaped_underscore_is_itself_and_no_wildcard(text, prompt):
    library = {"shade": ("light",), "under": (r"\_\_init\_\_ __shade__",)}
    assert permutations(text, draw=Draw(library, random.Random(0))) == [prompt]
    # Where the bot has no wildcards it is the character too: one meaning, whatever the operator adds.
    assert permutations(r"snake\_case", draw=Draw({}, random.Random(0))) == ["snake_case"]


@given(st.text(alphabet="{},\\ ab", max_size=60), st.integers(1, MOST))
def test_any_text_makes_at_most_most_prompts_or_one_sentence(text, most):
    """Any mix of braces, commas and backslashes: some prompts, none with a brace left unread, or one sentence."""
    try:
        prompts = permutations(text, most=most)
    except InvalidOption as error:
        assert_sentence(error)
        return
    assert 1 <= len(prompts) <= most
    if "\\" not in text:
        assert not any("{" in prompt or "}" in prompt for prompt in prompts)


# -- picks and wildcards ----------------------------------------------------------------------------------------

LIBRARY = {
    "color": ("red", "dark {blue|green}", "__shade__ grey"),
    "shade": ("light", "deep"),
    "colors/warm": ("amber",),
    "loop": ("a __loop__",),
    "wide": ("__v__ " * 5,),
    "v": ("y" * 900,),
}


def drawn(text: str, runs: int = 60, library=None) -> set[str]:
    """Every prompt `text` makes over `runs` seeded draws."""
    return {
        prompt
        for seed in range(runs)
        for prompt in permutations(text, draw=Draw(LIBRARY if library is None else library, random.Random(seed)))
    }


@pytest.mark.parametrize(
    ("text", "possible"),
    [
        ("a {red|blue|green} fox", {"a red fox", "a blue fox", "a green fox"}),
        # Inside a pick commas are words, and braces are picks.
        ("a {red, dark|blue} fox", {"a red, dark fox", "a blue fox"}),
        ("a {big {red|pale}|small} fox", {"a big red fox", "a big pale fox", "a small fox"}),
        (r"a {x\|y|z}", {"a x|y", "a z"}),
        ("--ar {1:1|16:9}", {"--ar 1:1", "--ar 16:9"}),
        # A wildcard's line is drawn, its picks and wildcards in turn; names ignore case; folders are names.
        (
            "a __color__ fox",
            {"a red fox", "a dark blue fox", "a dark green fox", "a light grey fox", "a deep grey fox"},
        ),
        ("__Colors/Warm__ light", {"amber light"}),
        # A bar outside braces, and underscores that name no wildcard pattern, are words.
        ("a | b __ c", {"a | b __ c"}),
        # Several options: each once while there are enough, then again; ", " between, or the joiner given.
        ("{2$$a|b|c}", {"a, b", "a, c", "b, a", "b, c", "c, a", "c, b"}),
        ("{2$$ and $$a|b}", {"a and b", "b and a"}),
        ("{3$$a|b}", {"a, b, a", "a, b, b", "b, a, a", "b, a, b"}),
        ("{2$$a}", {"a, a"}),
        # A range; an omitted least is 0, an omitted most is every option.
        ("{-$$a|b}", {"", "a", "b", "a, b", "b, a"}),
        ("{1-2$$a|b}", {"a", "b", "a, b", "b, a"}),
        ("{2-$$ a | b }", {"a, b", "b, a"}),
        # Weights: 0 is never drawn; a weighted option of a wildcard's line too.
        ("{0::a|b}", {"b"}),
        ("{2$$0::a|b|c}", {"b, c", "c, b"}),
        ("__pair__", {"x + y", "y + x"}),
        # A wildcard alone in a pick: its lines are the options, each taken once while any is left.
        ("{2$$__shade__}", {"light, deep", "deep, light"}),
        ("{-$$ __Shade__ }", {"", "light", "deep", "light, deep", "deep, light"}),
        (
            "{3$$ or $$__shade__}",
            {"light or deep or light", "light or deep or deep", "deep or light or light", "deep or light or deep"},
        ),
        ("{2$$__colors/warm__}", {"amber, amber"}),
    ],
)
def test_a_pick_or_a_wildcard_draws_one_of_its_options(text, possible):
    assert drawn(text, library=LIBRARY | {"pair": ("{2$$ + $$x|0.5::y}",)}) == possible


def test_weights_draw_options_as_often_as_they_say():
    """`{3::blue|red}`: blue three times as often as red; `{blue|0.25::red}`: four times; `{1-3$$…}` each count."""
    blue = sum(permutations("{3::blue|red}", draw=Draw({}, random.Random(seed))) == ["blue"] for seed in range(2000))
    assert 0.70 < blue / 2000 < 0.80
    blue = sum(
        permutations("{blue|0.25::red}", draw=Draw({}, random.Random(seed)))[0] == "blue" for seed in range(2000)
    )
    assert 0.75 < blue / 2000 < 0.85
    counts = {permutations("{1-3$$a|b|c}", draw=Draw({}, random.Random(seed)))[0].count(",") + 1 for seed in range(60)}
    assert counts == {1, 2, 3}


def test_picks_make_no_more_prompts_and_each_combination_draws_its_own():
    """`{red, blue}` makes two prompts; the `{cat|dog}` of each is drawn for it, not shared."""
    made = [permutations("a {red, blue} {cat|dog}", draw=Draw({}, random.Random(seed))) for seed in range(40)]
    assert all(len(prompts) == 2 and prompts[0].startswith("a red ") for prompts in made)
    assert {prompts[0][-3:] for prompts in made} == {"cat", "dog"}
    assert any(prompts[0][-3:] != prompts[1][-3:] for prompts in made)


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("a {x|{b, c}}", "Prompt has {…, …} choices inside a {…|…} pick; a pick's options are drawn, not made."),
        (
            "a __colour__ fox",
            "Prompt names the wildcard __colour__, which this bot does not have; did you mean '__color__'?",
        ),
        ("__loop__", "Prompt draws wildcards inside wildcards more than 8 deep."),
        (
            "{2$$__colour__}",
            "Prompt names the wildcard __colour__, which this bot does not have; did you mean '__color__'?",
        ),
        ("{2$$__loop__}", "Prompt draws wildcards inside wildcards more than 8 deep."),
        ("__wide__ " * 5, "Prompt grows past 20,000 characters as its wildcards are drawn."),
        ("{100$$__v__|x}", "Prompt grows past 20,000 characters as its picks are drawn."),
        ("{3-2$$a|b}", "Prompt asks a pick for 3 to 2 of its options; write the fewer first."),
        ("{101$$a|b}", "Prompt asks a pick for 101 of its options; the most is 100."),
        ("{" + "9" * 40 + "$$a|b}", "Prompt asks a pick for " + "9" * 19 + "… of its options; the most is 100."),
        ("{1001::a|b}", "Prompt weighs a pick's option 1001; the most is 1,000."),
        ("{0::a|0.0::b}", "Prompt weighs every option of a pick 0, so none can be drawn."),
        # Lines of short wildcards, ten to a line, five deep: 100,000 draws, none of them long.
        ("__fan1__", "Prompt takes more than 10,000 draws of its picks and wildcards."),
    ],
)
def test_what_cannot_be_drawn_is_one_sentence(text, sentence):
    fans = {f"fan{depth}": (f"__fan{depth + 1}__" * 10,) for depth in range(1, 5)} | {"fan5": ("{|}",)}
    with pytest.raises(InvalidOption) as caught:
        permutations(text, draw=Draw(LIBRARY | fans, random.Random(0)))
    assert str(caught.value) == sentence


def test_without_wildcards_a_name_between_underscores_is_words():
    assert permutations("a __cat__ fox") == ["a __cat__ fox"]
    assert permutations("a __cat__ fox", draw=Draw({}, random.Random(0))) == ["a __cat__ fox"]


@given(st.text(alphabet="{}|,\\ ab_$:-2", max_size=60), st.integers(0, 3))
@example("{a|b}{c,d}", 0)
def test_any_text_with_picks_makes_as_many_prompts_on_every_draw_or_one_sentence(text, seed):
    """Picks and wildcards never change how many prompts a text makes (so each job of it can be drawn again), and
    what is drawn holds no pick left unread."""
    library = {"a": ("a {b|_}",), "b": ("b",)}
    try:
        first = permutations(text, draw=Draw(library, random.Random(seed)))
    except InvalidOption as error:
        assert_sentence(error)
        return
    again = permutations(text, draw=Draw(library, random.Random(seed + 10)))
    assert len(again) == len(first) >= 1
    if "\\" not in text:
        assert not any("{" in prompt or "}" in prompt for prompt in first + again)

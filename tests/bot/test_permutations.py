"""Permutation prompts: ``a {red, blue} fox`` reads as the prompts Midjourney makes of it, or one sentence."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bot.errors import InvalidOption
from bot.permutations import MOST, escaped, permutations, variants
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

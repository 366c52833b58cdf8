"""A1111's prompt emphasis, read without a tokenizer: the parts, runs and weights a prompt holds."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import InvalidOption
from bot.request import GenerationRequest
from bot.weighting import MAX_OPEN, MAX_WEIGHT, Run, is_plain, parse_weights, weights_reason
from tests.bot.test_options import error_of, text
from tests.properties.sentences import FUZZ, assert_sentence_text


def runs(prompt: str) -> list[list[tuple[str, float]]]:
    """The parts of a prompt as (text, weight) pairs, weights rounded as people write them."""
    return [[(run.text, round(run.weight, 4)) for run in part] for part in parse_weights(prompt)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red fox", [[("a red fox", 1.0)]]),
        ("a (red) fox", [[("a ", 1.0), ("red", 1.1), (" fox", 1.0)]]),
        ("a ((red)) fox", [[("a ", 1.0), ("red", 1.21), (" fox", 1.0)]]),
        ("a [red] fox", [[("a ", 1.0), ("red", 0.9091), (" fox", 1.0)]]),
        ("a (red:1.5) fox", [[("a ", 1.0), ("red", 1.5), (" fox", 1.0)]]),
        ("a ( red : 0.5 ) fox", [[("a ", 1.0), (" red ", 0.5), (" fox", 1.0)]]),
        # nested brackets multiply
        ("((red:2) fox:0.5)", [[("red", 1.0), (" fox", 0.5)]]),
        ("([red] fox)", [[("red", 1.0), (" fox", 1.1)]]),
        # the characters themselves
        (r"a \(red\) fox \[1\] \\", [[("a (red) fox [1] \\", 1.0)]]),
        # a bracket left open weighs the rest; one closed with none open is a character
        ("a (red fox", [[("a ", 1.0), ("red fox", 1.1)]]),
        ("a red) fox] :-)", [[("a red) fox] :-)", 1.0)]]),
        # a colon that closes nothing is a character, and a weight must be a number
        ("ratio 16:9", [[("ratio 16:9", 1.0)]]),
        ("(red:1..2)", [[("red:1..2", 1.1)]]),
        # brackets of the two kinds overlapping, as A1111 reads them
        ("(a [b) c]", [[("a ", 1.1), ("b", 1.0), (" c", 0.9091)]]),
        # BREAK, a word of its own in capitals, starts a part; weights reach across it
        ("a fox BREAK snow", [[("a fox", 1.0)], [("snow", 1.0)]]),
        ("(fox BREAK snow)", [[("fox", 1.1)], [("snow", 1.1)]]),
        ("BREAKING news, a break", [[("BREAKING news, a break", 1.0)]]),
        ("BREAK", []),
    ],
)
def test_parse(prompt, expected):
    """Each construct weighs what A1111 weighs (its parse_prompt_attention's cases)."""
    assert runs(prompt) == expected


def test_weight_one_is_the_words_alone():
    """(fox:1) weighs fox 1, exactly: the same tokens and weights as the bare word."""
    assert parse_weights("a (fox:1) in snow") == ((Run("a fox in snow", 1.0),),)


@pytest.mark.parametrize(
    ("prompt", "plain"),
    [
        ("a red fox, 16:9, f/2.8", True),
        ("a red) fox", True),
        ("a (red) fox", False),
        ("a (red:1) fox", False),  # the brackets are syntax, though they weigh nothing
        (r"a \(red\) fox", False),  # the backslashes go
        ("fox BREAK snow", False),
    ],
)
def test_is_plain(prompt, plain):
    """A prompt is plain when reading it as A1111 does changes nothing: it reaches the model as written."""
    assert is_plain(prompt) is plain


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "a (fox:5) in snow",
            r"Prompt gives 'fox' a weight of 5; weights run from 0 to 3 (write \( for a bracket itself).",
        ),
        (
            "a ((((((((((((fox)))))))))))) in snow",
            r"Prompt gives 'fox' a weight of 3.14; weights run from 0 to 3 (write \( for a bracket itself).",
        ),
        (
            "a fox --no (blurry:-1)",
            r"--no gives 'blurry' a weight of -1; weights run from 0 to 3 (write \( for a bracket itself).",
        ),
        (
            "a " + "[" * (MAX_OPEN + 1) + "fox",
            r"Prompt opens more than 32 brackets at once; write \( for a bracket itself.",
        ),
    ],
)
def test_a_weight_out_of_range_is_one_sentence(line, message):
    """A weight past 3 (or below 0), or brackets opened too deep, is refused with the words it weighs."""
    assert error_of(line) == message


def test_a_weighted_prompt_is_kept_as_written():
    """The request holds the prompt and negative as typed; the backend reads the weights."""
    parsed = text("a (red:1.3) fox, [blurry] BREAK snow --no (text:1.2)")
    assert parsed.request.prompt == "a (red:1.3) fox, [blurry] BREAK snow"
    assert parsed.request.negative_prompt == "(text:1.2)"
    assert parsed.request.prompt_weighting is True


def test_the_request_refuses_weights_out_of_range_unless_read_as_written():
    """The request model holds the bound too; a generation stored before weighting reads its prompt as written."""
    with pytest.raises(ValueError, match="weight of 5"):
        GenerationRequest(prompt="a (fox:5)", model="sdxl")
    assert GenerationRequest(prompt="a (fox:5)", model="sdxl", prompt_weighting=False).prompt == "a (fox:5)"


_SYNTAX = re.compile(r"[()\[\]\\:]|\bBREAK\b")


def escaped(prompt: str) -> str:
    """The prompt with each bracket and backslash written as itself (``\\(``)."""
    return re.sub(r"([()\[\]\\])", r"\\\1", prompt)


@FUZZ
@given(st.text(max_size=300))
def test_any_prompt_gives_runs_or_one_sentence(prompt):
    """Whatever is typed, the reading ends: runs whose weights are numbers, or a sentence refusing it."""
    reason = weights_reason(prompt)
    if reason is not None:
        assert_sentence_text(f"Prompt {reason}.")
        with pytest.raises(InvalidOption):
            text(f"a {prompt}" if prompt.strip() else "a fox")
        return
    for run in (run for part in parse_weights(prompt) for run in part):
        assert run.text and 0 <= run.weight <= MAX_WEIGHT


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300))
def test_escaped_brackets_are_the_prompt_itself(prompt):
    """Every bracket and backslash escaped, any prompt without BREAK reads back as itself, weight 1."""
    if "BREAK" in prompt:
        prompt = prompt.replace("BREAK", "break")
    assert parse_weights(escaped(prompt)) == ((Run(prompt, 1.0),),)
    if _SYNTAX.search(prompt) is None:
        assert is_plain(prompt)

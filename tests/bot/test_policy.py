"""Banned-word matching on normalised text, as property tests: however a word is dressed, it is found."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import ContentBlocked
from bot.policy import Policy, normalise
from bot.request import GenerationRequest

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10)
_DISGUISE = {"o": "0Oóö", "i": "1Iíï", "e": "3EéÊ", "a": "4@Aàä", "s": "5$S", "t": "7T"}


def request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, model="sdxl", seed=1)


@given(
    word=WORDS,
    data=st.data(),
    before=st.sampled_from(["", "a ", "x, ", "(("]),
    after=st.sampled_from(["", " now", "!", "..."]),
)
def test_a_banned_word_is_found_in_any_case_accent_or_leet(
    word: str, data: st.DataObject, before: str, after: str
) -> None:
    disguised = "".join(data.draw(st.sampled_from([char, char.upper(), *_DISGUISE.get(char, "")])) for char in word)
    with pytest.raises(ContentBlocked, match="banned word rule 1"):
        Policy(banned=(word,)).check(request(f"{before}{disguised}{after} here"))


@given(word=WORDS, extra=WORDS)
def test_a_banned_word_does_not_ban_longer_words_that_contain_it(word: str, extra: str) -> None:
    Policy(banned=(word,)).check(request(f"an image of {word}{extra} and {extra}{word}"))


@given(text=st.text(max_size=60))
def test_normalised_text_is_stable_and_plain(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert once.startswith(" ") and once.endswith(" ")
    assert set(once) <= set("abcdefghijklmnopqrstuvwxyz0123456789 ") - set("013457")

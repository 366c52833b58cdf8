"""The one home of the sentence property and the fuzz settings every entry-point test shares."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import HealthCheck, settings

from bot.errors import MAX_MESSAGE, BotError, InvalidOption
from tests.conftest import FUZZ_EXAMPLES

# 10,000 examples each under `make test`, a few under `make test-fast`.
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def assert_sentence_text(text: str, typed: str = "") -> None:
    """Assert that a message is one printable sentence of at most `MAX_MESSAGE` characters.

    It starts with a capital, or with `typed`: the word the user typed, as they typed it (``cfg must…``).
    """
    assert 0 < len(text) <= MAX_MESSAGE, text
    assert text.isprintable(), repr(text)  # one line, no control characters
    # Ends as a sentence does: a message cut at MAX_MESSAGE (ending "…") echoed too much of the input.
    assert text.endswith((".", "?")), text
    assert text[0].isupper() or not text[0].isalpha() or (typed and text.startswith(typed)), text


def assert_sentence(error: BaseException, typed: Mapping[str, str] | None = None) -> None:
    """Assert that a refusal is the project's own: one printable sentence of at most `MAX_MESSAGE` characters.

    Args:
        error: what the entry point raised.
        typed: an option's label or name (``cfg``, ``aspect ratio``) → how the user typed it (``--cfg``,
            ``--ar``); an error about that option must name it as typed.
    """
    assert isinstance(error, BotError), f"not the project's own error: {type(error).__name__}: {error}"
    option = error.option if isinstance(error, InvalidOption) else ""
    assert_sentence_text(str(error), option)
    if typed and option in typed:
        assert option == typed[option], f"names {option!r}, but the user typed {typed[option]!r}: {error}"

r"""Permutation prompts, Midjourney's: ``a {red, blue} fox`` is two prompts, ``a red fox`` and ``a blue fox``.

Braces hold choices separated by commas; a choice may hold braces of its own, and any part of
the text may be a choice, a flag's value too (``--ar {1:1, 16:9}``). The prompts are every
combination, in reading order, each becoming a job of its own. ``\{`` and ``\}`` stand for the
brace itself and, inside braces, ``\,`` for a comma; any other backslash is itself, left for the
prompt's weights (`bot.weighting`) to read. How many prompts a text makes is counted before
any is written out, so ``{a,b}`` twenty times over is one sentence, not a million strings.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from bot.errors import InvalidOption

__all__ = ["MOST", "escaped", "permutations", "variants"]

# Midjourney's most for one command (its Pro plan's); the queue's room per user is checked after.
MOST = 40
# Braces open at once: deeper nesting is no prompt a person writes, and it keeps the reading flat.
MOST_OPEN = 8


@dataclass(frozen=True, slots=True)
class _Choice:
    """``{…}``: its choices, each a sequence of text and further choices."""

    options: tuple[tuple[str | _Choice, ...], ...]


def permutations(text: str, *, most: int = MOST, option: str = "prompt") -> list[str]:
    """Return the prompts `text` makes: every combination of its choices, or `text` alone without braces.

    Raises:
        InvalidOption: a brace without its partner, braces nested too deep, or more than `most` prompts.
    """
    if "{" not in text and "}" not in text:
        return [text]
    parts = _parse(text, option)
    if _count(parts, most) > most:
        more = "makes several prompts with its {…} choices; one is taken here"
        raise InvalidOption(option, more if most == 1 else f"makes more than {most} prompts with its {{…}} choices")
    return ["".join(pieces) for pieces in _expand(parts)]


def variants(given: str | Mapping[str, object], *, most: int = MOST) -> list[str | dict[str, object]]:
    """Return what chat text or typed options make: one per combination of the choices in any text of them.

    Typed options (Discord's fields) combine their fields' choices in field order.
    """
    if isinstance(given, str):
        return list(permutations(given, most=most))
    fields = [
        permutations(value, most=most, option=key) if isinstance(value, str) else [value]
        for key, value in given.items()
    ]
    made = 1
    for choices in fields:
        made *= len(choices)
    if made > most:
        raise InvalidOption(
            "prompt", f"and its fields make {made} prompts with their {{…}} choices; the most is {most}"
        )
    return [dict(zip(given, values, strict=True)) for values in itertools.product(*fields)]


def escaped(text: str) -> str:
    """Return `text` written so that `permutations` reads it back as itself: its braces escaped."""
    return text.replace("{", "\\{").replace("}", "\\}")


def _parse(text: str, option: str) -> tuple[str | _Choice, ...]:
    """Read `text` into text and choices, without recursion: a stack of the braces open."""
    # Each open brace: the parts before it, the choices it has so far, and the current choice's parts.
    stack: list[tuple[list[str | _Choice], list[tuple[str | _Choice, ...]]]] = []
    parts: list[str | _Choice] = []
    chars: list[str] = []
    at = 0
    while at < len(text):
        char = text[at]
        pair = text[at : at + 2]
        if pair in ("\\{", "\\}") or (pair == "\\," and stack):
            chars.append(pair[1])
            at += 2
            continue
        if char == "{":
            if len(stack) == MOST_OPEN:
                raise InvalidOption(option, f"opens more than {MOST_OPEN} braces inside each other")
            parts.append("".join(chars))
            stack.append((parts, []))
            parts, chars = [], []
        elif char == "," and stack:
            parts.append("".join(chars))
            stack[-1][1].append(_trimmed(parts))
            parts, chars = [], []
        elif char == "}":
            if not stack:
                raise InvalidOption(option, "has a '}' with no '{' before it (write \\} for a brace itself)")
            parts.append("".join(chars))
            outer, options = stack.pop()
            options.append(_trimmed(parts))
            outer.append(_Choice(tuple(options)))
            parts, chars = outer, []
        else:
            chars.append(char)
        at += 1
    if stack:
        raise InvalidOption(option, "has a '{' without its '}' (write \\{ for a brace itself)")
    parts.append("".join(chars))
    return tuple(part for part in parts if part != "")


def _trimmed(parts: Sequence[str | _Choice]) -> tuple[str | _Choice, ...]:
    """Return a choice's parts without the spaces around it: ``{red, blue}`` is ``red`` and ``blue``."""
    kept = list(parts)
    if kept and isinstance(kept[0], str):
        kept[0] = kept[0].lstrip()
    if kept and isinstance(kept[-1], str):
        kept[-1] = kept[-1].rstrip()
    return tuple(part for part in kept if part != "")


def _count(parts: Sequence[str | _Choice], most: int) -> int:
    """Return how many prompts `parts` makes, up to `most` + 1 (any number past `most` reads as that)."""
    made = 1
    for part in parts:
        if isinstance(part, _Choice):
            made = min(made * sum(_count(option, most) for option in part.options), most + 1)
    return made


def _expand(parts: Sequence[str | _Choice]) -> Iterator[tuple[str, ...]]:
    """Yield each combination of `parts` as the strings to join, in reading order."""
    pools: list[list[tuple[str, ...]]] = [
        [pieces for option in part.options for pieces in _expand(option)] if isinstance(part, _Choice) else [(part,)]
        for part in parts
    ]
    for combination in itertools.product(*pools):
        yield tuple(piece for pieces in combination for piece in pieces)

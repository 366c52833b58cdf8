r"""Permutation prompts, Midjourney's, and random picks and wildcards, Dynamic Prompts' (A1111's extension).

``a {red, blue} fox`` is two prompts, ``a red fox`` and ``a blue fox``: braces hold choices
separated by commas; a choice may hold braces of its own, and any part of the text may be a
choice, a flag's value too (``--ar {1:1, 16:9}``). The prompts are every combination, in reading
order, each becoming a job of its own. ``\{`` and ``\}`` stand for the brace itself and, inside
braces, ``\,`` and ``\|`` for a comma and a bar; any other backslash is itself, left for the prompt's
weights (`bot.weighting`) to read. How many prompts a text makes is counted before any is
written out, so ``{a,b}`` twenty times over is one sentence, not a million strings.

Braces whose options are separated by ``|`` are a random **pick** instead: ``a {red|blue} fox`` is
one prompt, ``a red fox`` or ``a blue fox``, drawn for each prompt made (each combination of the
choices, each job of ``--repeat``; `Draw`). Inside a pick commas are words, and braces are picks
too. ``__name__`` is a **wildcard**: a line drawn from the operator's file ``name.txt``
(`bot.wildcards`), whose own braces are picks and whose ``__other__`` wildcards are drawn in
turn. Where the bot has no wildcards, ``__name__`` is words like any other.
"""

from __future__ import annotations

import difflib
import itertools
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from bot.errors import InvalidOption, shown
from bot.wildcards import Wildcards

__all__ = ["MOST", "Draw", "draws", "escaped", "permutations", "variants"]

# Midjourney's most for one command (its Pro plan's); the queue's room per user is checked after.
MOST = 40
# Braces open at once: deeper nesting is no prompt a person writes, and it keeps the reading flat.
MOST_OPEN = 8
# Wildcards drawn inside wildcards: a file naming itself, or a chain of them, ends here.
MOST_NESTED = 8
# The most characters one drawn text may reach while its wildcards are filled in: a line holding
# its own wildcard twice doubles at each level, and that is cut short long before memory is.
MOST_DRAWN = 20_000
_WILDCARD = re.compile(r"__([A-Za-z0-9][A-Za-z0-9_/-]*?)__")


@dataclass(frozen=True, slots=True)
class _Choice:
    """``{…}``: its options, each a sequence of text and further choices; `pick`: one is drawn (``{a|b}``)."""

    options: tuple[tuple[str | _Choice, ...], ...]
    pick: bool = False


@dataclass(frozen=True)
class Draw:
    """How picks and wildcards are drawn: the wildcard files' lines by name, and the random source."""

    wildcards: Wildcards = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.SystemRandom)

    def fill(self, text: str, option: str, depth: int = 0) -> str:
        """Return `text` with each ``__name__`` replaced by a drawn line of that wildcard, its picks drawn too."""
        if not self.wildcards or "__" not in text:
            return text

        def line(match: re.Match[str]) -> str:
            name = match[1].lower()
            lines = self.wildcards.get(name)
            if lines is None:
                close = difflib.get_close_matches(name, list(self.wildcards), n=3, cutoff=0.6)
                raise InvalidOption(
                    option,
                    f"names the wildcard __{shown(name, 60)}__, which this bot does not have",
                    [f"__{other}__" for other in close],
                )
            if depth == MOST_NESTED:
                raise InvalidOption(option, f"draws wildcards inside wildcards more than {MOST_NESTED} deep")
            drawn = self.rng.choice(lines)
            return "".join(self.picked(part, option, depth + 1) for part in _parse(drawn, option, picks_only=True))

        filled = _WILDCARD.sub(line, text)
        if len(filled) > MOST_DRAWN:
            raise InvalidOption(option, f"grows past {MOST_DRAWN:,} characters as its wildcards are drawn")
        return filled

    def picked(self, part: str | _Choice, option: str, depth: int = 0) -> str:
        """Return a part of a prompt as drawn: text with its wildcards filled, a pick's drawn option."""
        if isinstance(part, str):
            return self.fill(part, option, depth)
        chosen = self.rng.choice(part.options) if part.options else ()
        return "".join(self.picked(piece, option, depth) for piece in chosen)


def permutations(text: str, *, most: int = MOST, option: str = "prompt", draw: Draw | None = None) -> list[str]:
    """Return the prompts `text` makes: every combination of its choices, each with its picks and wildcards drawn.

    Raises:
        InvalidOption: a brace without its partner, braces nested too deep, more than `most`
            prompts, or a wildcard the bot does not have.
    """
    draw = draw or Draw()
    if "{" not in text and "}" not in text and (not draw.wildcards or "__" not in text):
        return [text]
    parts = _parse(text, option)
    if _count(parts, most) > most:
        more = "makes several prompts with its {…} choices; one is taken here"
        raise InvalidOption(option, more if most == 1 else f"makes more than {most} prompts with its {{…}} choices")
    return ["".join(draw.picked(piece, option) for piece in pieces) for pieces in _expand(parts)]


def variants(
    given: str | Mapping[str, object], *, most: int = MOST, draw: Draw | None = None
) -> list[str | dict[str, object]]:
    """Return what chat text or typed options make: one per combination of the choices in any text of them.

    Typed options (Discord's fields) combine their fields' choices in field order. Each call
    draws the picks and wildcards anew.
    """
    if isinstance(given, str):
        return list(permutations(given, most=most, draw=draw))
    fields = [
        permutations(value, most=most, option=key, draw=draw) if isinstance(value, str) else [value]
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


def draws(given: str | Mapping[str, object]) -> bool:
    """Tell whether chat text or typed options hold a pick or a wildcard: each job of it is drawn anew."""
    texts = [given] if isinstance(given, str) else [value for value in given.values() if isinstance(value, str)]
    return any("__" in text or ("{" in text and "|" in text) for text in texts)


def escaped(text: str) -> str:
    """Return `text` written so that `permutations` reads it back as itself: its braces escaped."""
    return text.replace("{", "\\{").replace("}", "\\}")


def _parse(text: str, option: str, *, picks_only: bool = False) -> tuple[str | _Choice, ...]:
    """Read `text` into text, choices and picks, without recursion: a stack of the braces open.

    `picks_only` (a wildcard's line): every pair of braces is a pick, its commas words.
    """
    # Each open brace: the parts before it, the options it has so far, and whether it is a pick.
    stack: list[tuple[list[str | _Choice], list[tuple[str | _Choice, ...]], bool]] = []
    parts: list[str | _Choice] = []
    chars: list[str] = []
    at = 0
    while at < len(text):
        char = text[at]
        pair = text[at : at + 2]
        if pair in ("\\{", "\\}") or (pair in ("\\,", "\\|") and stack):
            chars.append(pair[1])
            at += 2
            continue
        pick = bool(stack) and stack[-1][2]
        if char == "{":
            if len(stack) == MOST_OPEN:
                raise InvalidOption(option, f"opens more than {MOST_OPEN} braces inside each other")
            opens_pick = picks_only or _is_pick(text, at + 1)
            if pick and not opens_pick:
                raise InvalidOption(
                    option, "has {…, …} choices inside a {…|…} pick; a pick's options are drawn, not made"
                )
            parts.append("".join(chars))
            stack.append((parts, [], opens_pick))
            parts, chars = [], []
        elif (char == "," and stack and not pick) or (char == "|" and pick):
            parts.append("".join(chars))
            stack[-1][1].append(_trimmed(parts))
            parts, chars = [], []
        elif char == "}":
            if not stack:
                raise InvalidOption(option, "has a '}' with no '{' before it (write \\} for a brace itself)")
            parts.append("".join(chars))
            outer, options, was_pick = stack.pop()
            options.append(_trimmed(parts))
            outer.append(_Choice(tuple(options), pick=was_pick))
            parts, chars = outer, []
        else:
            chars.append(char)
        at += 1
    if stack:
        raise InvalidOption(option, "has a '{' without its '}' (write \\{ for a brace itself)")
    parts.append("".join(chars))
    return tuple(part for part in parts if part != "")


def _is_pick(text: str, at: int) -> bool:
    """Tell whether the braces opened just before `at` separate their options with ``|`` (a pick)."""
    depth = 0
    while at < len(text):
        if text[at] == "\\":
            at += 2
            continue
        if text[at] == "{":
            depth += 1
        elif text[at] == "}":
            if depth == 0:
                return False
            depth -= 1
        elif text[at] == "|" and depth == 0:
            return True
        at += 1
    return False


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
        if isinstance(part, _Choice) and not part.pick:  # a pick is one prompt, drawn later
            made = min(made * sum(_count(option, most) for option in part.options), most + 1)
    return made


def _expand(parts: Sequence[str | _Choice]) -> Iterator[tuple[str | _Choice, ...]]:
    """Yield each combination of `parts` as the pieces to join, in reading order; picks stay to be drawn."""
    pools: list[list[tuple[str | _Choice, ...]]] = [
        [pieces for option in part.options for pieces in _expand(option)]
        if isinstance(part, _Choice) and not part.pick
        else [(part,)]
        for part in parts
    ]
    for combination in itertools.product(*pools):
        yield tuple(piece for pieces in combination for piece in pieces)

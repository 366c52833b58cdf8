r"""Permutation prompts, Midjourney's, and random picks and wildcards, Dynamic Prompts' (A1111's extension).

``a {red, blue} fox`` is two prompts, ``a red fox`` and ``a blue fox``: braces hold choices
separated by commas; a choice may hold braces of its own, and any part of the text may be a
choice, a flag's value too (``--ar {1:1, 16:9}``). The prompts are every combination, in reading
order, each becoming a job of its own. ``\{`` and ``\}`` stand for the brace itself and, inside
braces, ``\,`` and ``\|`` for a comma and a bar; ``\_`` is an underscore that never starts or ends a
wildcard (below); any other backslash is itself, left for the prompt's weights (`bot.weighting`) to
read. How many prompts a text makes is counted before any is written out, so ``{a,b}`` twenty
times over is one sentence, not a million strings.

Braces whose options are separated by ``|`` are a random **pick** instead: ``a {red|blue} fox`` is
one prompt, ``a red fox`` or ``a blue fox``, drawn for each prompt made (each combination of the
choices, each job of ``--repeat``; `Draw`). Inside a pick commas are words, and braces are picks
too. As in Dynamic Prompts, an option may weigh more (``{3::red|blue}``: red three times as
often), and a pick may take several options (``{2$$red|blue|green}``: two of them, joined by
``, ``; ``{1-3$$…}`` one to three; ``{2$$ and $$…}`` joined by `` and ``; ``{2$$__name__}`` two
lines of a wildcard), each at most once while there are enough. ``__name__`` is a **wildcard**:
a line drawn from the operator's file ``name.txt`` (`bot.wildcards`), whose own braces are picks
and whose ``__other__`` wildcards are drawn in turn. Where the bot has no wildcards, ``__name__``
is words like any other.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
# Draws one command may take, its picks' options and its wildcards' lines, in all its prompts and
# jobs together: lines that each draw further wildcards, all short, would otherwise draw millions
# of times before growing long, on the event loop.
MOST_DRAWS = 10_000
# The most options one pick takes (``{100$$…}``), and the most an option weighs (``{1000::…}``).
MOST_PICKED = 100
MOST_WEIGHT = 1000
# A backslash before an underscore makes it the character itself, never a wildcard's (``\__init__``).
_WILDCARD = re.compile(r"(?<!\\)__([A-Za-z0-9][A-Za-z0-9_/-]*?)__")
# What `escaped` writes as ``\_``: underscores in a run of two or more, and one after a backslash.
_UNDERSCORES = re.compile(r"(?<=\\)_+|_{2,}")
# A pick's count, before its first option: ``2$$``, ``1-3$$``, ``-3$$``, ``2-$$``, ``-$$``, each with a
# joiner between two ``$$`` if wanted (``2$$ and $$``).
_COUNT = re.compile(
    r"\s*(?:(?P<least>\d+)\s*(?P<range>-\s*(?P<most>\d*))?|-\s*(?P<upto>\d*))\s*\$\$(?:(?P<joiner>[^$]*)\$\$)?"
)
_WEIGHT = re.compile(r"\s*(?P<weight>\d+(?:\.\d*)?|\.\d+)\s*::")


@dataclass(frozen=True, slots=True)
class _Choice:
    """``{…}``: its options, each a sequence of text and further choices.

    A `pick` draws its options (``{a|b}``): from `least` to `most` of them (a count prefix,
    ``{2$$a|b}``; `most` None: all it has), each as often as its weight says (``{3::a|b}``; none
    given: all alike), joined by `joiner`. A pick of one wildcard alone (``{2$$__animal__}``) draws
    from the wildcard's lines.
    """

    options: tuple[tuple[str | _Choice, ...], ...]
    pick: bool = False
    weights: tuple[float, ...] = ()
    least: int = 1
    most: int | None = 1
    joiner: str = ", "


@dataclass
class _Tally:
    """The draws taken so far with one `Draw`."""

    draws: int = 0


@dataclass(frozen=True)
class Draw:
    """How one command's picks and wildcards are drawn: the wildcard files' lines by name, and the random source.

    Its draws are counted, all its prompts together, up to `MOST_DRAWS`: make one for each command.
    """

    wildcards: Wildcards = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.SystemRandom)
    tally: _Tally = field(default_factory=_Tally, compare=False, repr=False)

    def prompt(self, pieces: Sequence[str | _Choice], option: str) -> str:
        """Return one prompt: `pieces` joined, each pick's options and each wildcard's line drawn."""
        drawing = _Drawing(self, option)
        return "".join(drawing.picked(piece) for piece in pieces).replace("\\_", "_")


@dataclass
class _Drawing:
    """One prompt being drawn: what draws it, and the option named in a refusal."""

    draw: Draw
    option: str

    def fill(self, text: str, depth: int = 0) -> str:
        """Return `text` with each ``__name__`` replaced by a drawn line of that wildcard, its picks drawn too."""
        if not self.draw.wildcards or "__" not in text:
            return text

        def line(match: re.Match[str]) -> str:
            lines = self._lines(match[1], depth)
            self._count()
            return self._line(self.draw.rng.choice(lines), depth)

        return self._bounded(_WILDCARD.sub(line, text), "as its wildcards are drawn")

    def picked(self, part: str | _Choice, depth: int = 0) -> str:
        """Return a part of a prompt as drawn: text with its wildcards filled, a pick's drawn options."""
        if isinstance(part, str):
            return self.fill(part, depth)
        if not part.options:
            return ""
        lone = _lone_wildcard(part.options) if self.draw.wildcards else None
        if lone is not None:
            # ``{2$$__animal__}`` takes two lines of the file, each once while any is left (Dynamic Prompts').
            lines = self._lines(lone, depth)
            count = self._count_of(part, len(lines))
            drawn = part.joiner.join(self._line(lines[at], depth) for at in self._chosen((), len(lines), count))
        else:
            count = self._count_of(part, len(part.options))
            drawn = part.joiner.join(
                "".join(self.picked(piece, depth) for piece in part.options[at])
                for at in self._chosen(part.weights, len(part.options), count)
            )
        return self._bounded(drawn, "as its picks are drawn")

    def _lines(self, name: str, depth: int) -> tuple[str, ...]:
        """Return the lines of the wildcard `name` (any case) to draw from, `depth` wildcards deep (at most 8)."""
        wildcards = self.draw.wildcards
        lines = wildcards.get(name.lower())
        if lines is None:
            close = difflib.get_close_matches(name.lower(), list(wildcards), n=3, cutoff=0.6)
            raise InvalidOption(
                self.option,
                f"names the wildcard __{shown(name.lower(), 60)}__, which this bot does not have",
                [f"__{other}__" for other in close],
            )
        if depth == MOST_NESTED:
            raise InvalidOption(self.option, f"draws wildcards inside wildcards more than {MOST_NESTED} deep")
        return lines

    def _line(self, line: str, depth: int) -> str:
        """Return a wildcard's line as drawn: its braces are picks, its wildcards drawn a level deeper."""
        return "".join(self.picked(part, depth + 1) for part in _parsed_line(line, self.option))

    def _count_of(self, part: _Choice, options: int) -> int:
        """Draw how many options a pick takes; an open count (``{2-$$…}``) goes up to all it has, 100 at most."""
        most = max(part.least, min(options, MOST_PICKED)) if part.most is None else part.most
        return self.draw.rng.randint(part.least, most)

    def _chosen(self, weights: Sequence[float], options: int, count: int) -> list[int]:
        """Draw `count` of the places of `options`, each once while any is left, then again from all.

        By `weights`; none: all alike.
        """
        rng = self.draw.rng
        chosen: list[int] = []
        if not weights:  # a sample a round: no list of the options is made for each draw
            while len(chosen) < count:
                take = min(count - len(chosen), options)
                self._count(take)
                chosen += rng.sample(range(options), take)
            return chosen
        drawable = [index for index, weight in enumerate(weights) if weight > 0]
        left: list[int] = []
        for _ in range(count):
            self._count()
            left = left or list(drawable)
            chosen.append(left.pop(rng.choices(range(len(left)), [weights[i] for i in left])[0]))
        return chosen

    def _count(self, draws: int = 1) -> None:
        self.draw.tally.draws += draws
        if self.draw.tally.draws > MOST_DRAWS:
            raise InvalidOption(self.option, f"takes more than {MOST_DRAWS:,} draws of its picks and wildcards")

    def _bounded(self, text: str, how: str) -> str:
        if len(text) > MOST_DRAWN:
            raise InvalidOption(self.option, f"grows past {MOST_DRAWN:,} characters {how}")
        return text


def permutations(
    text: str, *, most: int = MOST, option: str = "prompt", draw: Draw | None = None, only: int | None = None
) -> list[str]:
    """Return the prompts `text` makes: every combination of its choices, each with its picks and wildcards drawn.

    `only`: the prompt at that place alone, no other drawn (another job of a prompt made before).

    Raises:
        InvalidOption: a brace without its partner, braces nested too deep, more than `most`
            prompts, or a wildcard the bot does not have.
    """
    draw = draw or Draw()
    if "{" not in text and "}" not in text and "\\_" not in text and (not draw.wildcards or "__" not in text):
        return [text]
    parts = _parse(text, option)
    made = _count(parts, most)
    if made > most:
        more = "makes several prompts with its {…} choices; one is taken here"
        raise InvalidOption(option, more if most == 1 else f"makes more than {most} prompts with its {{…}} choices")
    combinations: Iterable[tuple[str | _Choice, ...]] = _expand(parts)
    if only is not None:
        combinations = itertools.islice(combinations, only % made, only % made + 1)
    return [draw.prompt(pieces, option) for pieces in combinations]


def variants(
    given: str | Mapping[str, object], *, most: int = MOST, draw: Draw | None = None, only: int | None = None
) -> list[str | dict[str, object]]:
    """Return what chat text or typed options make: one per combination of the choices in any text of them.

    Typed options (Discord's fields) combine their fields' choices in field order. Each call
    draws the picks and wildcards anew; `only`: the one at that place, no other drawn.
    """
    if isinstance(given, str):
        return list(permutations(given, most=most, draw=draw, only=only))
    if only is not None:
        # Its place in each field's prompts: the last field's change fastest, as in `itertools.product`.
        places = []
        for key, value in reversed(list(given.items())):
            only, place = divmod(only, _made(value, most, key) if isinstance(value, str) else 1)
            places.append(place)
        values = [
            permutations(value, most=most, option=key, draw=draw, only=place)[0] if isinstance(value, str) else value
            for (key, value), place in zip(given.items(), reversed(places), strict=True)
        ]
        return [dict(zip(given, values, strict=True))]
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
    return any("__" in text or ("{" in text and ("|" in text or "$$" in text)) for text in texts)


def escaped(text: str) -> str:
    """Return `text` written so that `permutations` reads it back as itself, wildcards or none.

    Its braces are escaped, and its underscores where they could read as a wildcard's or an escape.
    """
    text = _UNDERSCORES.sub(lambda run: "\\_" * len(run[0]), text)
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
            outer.append(_pick(options, option) if was_pick else _Choice(tuple(options)))
            parts, chars = outer, []
        else:
            chars.append(char)
        at += 1
    if stack:
        raise InvalidOption(option, "has a '{' without its '}' (write \\{ for a brace itself)")
    parts.append("".join(chars))
    return tuple(part for part in parts if part != "")


def _pick(options: Sequence[tuple[str | _Choice, ...]], option: str) -> _Choice:
    """Return a pick of `options`, its count read from before the first (``2$$``) and each one's weight (``3::``).

    Raises:
        InvalidOption: a count past `MOST_PICKED` or backwards, a weight past `MOST_WEIGHT`, or no option
            left to draw (every weight 0).
    """
    options = list(options)
    least, joiner = 1, ", "
    most: int | None = 1
    if counted := _lead(options[0], _COUNT):
        found, options[0] = counted
        upto = found["most"] if found["range"] else found["upto"]
        least = _number(found["least"] or "0", option)
        most = None if upto == "" else least if upto is None else _number(upto, option)
        if most is not None and least > most:
            raise InvalidOption(option, f"asks a pick for {least} to {most} of its options; write the fewer first")
        joiner = joiner if found["joiner"] is None else found["joiner"]
    weights = []
    for index, parts in enumerate(options):
        weighed = _lead(parts, _WEIGHT)
        if weighed is None:
            weights.append(1.0)
            continue
        found, options[index] = weighed
        if (weight := float(found["weight"])) > MOST_WEIGHT:
            raise InvalidOption(
                option, f"weighs a pick's option {shown(found['weight'], 20)}; the most is {MOST_WEIGHT:,}"
            )
        weights.append(weight)
    if not any(weights):
        raise InvalidOption(option, "weighs every option of a pick 0, so none can be drawn")
    even = all(weight == 1.0 for weight in weights)
    return _Choice(tuple(options), True, () if even else tuple(weights), least, most, joiner)


def _lone_wildcard(options: Sequence[tuple[str | _Choice, ...]]) -> str | None:
    """Return the name of the one wildcard that is a pick's one option (``{2$$__animal__}``), else None."""
    if len(options) == 1 and len(options[0]) == 1 and isinstance(options[0][0], str):
        found = _WILDCARD.fullmatch(options[0][0])
        return None if found is None else found[1]
    return None


def _lead(
    parts: tuple[str | _Choice, ...], pattern: re.Pattern[str]
) -> tuple[re.Match[str], tuple[str | _Choice, ...]] | None:
    """Match `pattern` at the start of an option: the match, and the option without what it matched."""
    head = parts[0] if parts else None
    if not isinstance(head, str) or not (found := pattern.match(head)):
        return None
    return found, _trimmed((head[found.end() :], *parts[1:]))


def _number(digits: str, option: str) -> int:
    """Return a pick's count, at most `MOST_PICKED`."""
    if len(digits) > 3 or int(digits) > MOST_PICKED:
        raise InvalidOption(option, f"asks a pick for {shown(digits, 20)} of its options; the most is {MOST_PICKED}")
    return int(digits)


@functools.lru_cache(maxsize=4096)
def _parsed_line(line: str, option: str) -> tuple[str | _Choice, ...]:
    """Return a wildcard file's line read into text and picks, once: a command may draw it thousands of times."""
    return _parse(line, option, picks_only=True)


def _is_pick(text: str, at: int) -> bool:
    """Tell whether the braces opened just before `at` are a pick: options separated by ``|``, or a count first."""
    if _COUNT.match(text, at):
        return True
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


def _made(text: str, most: int, option: str) -> int:
    """Return how many prompts `text` makes (up to `most` + 1), none drawn."""
    return _count(_parse(text, option), most) if "{" in text or "}" in text else 1


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

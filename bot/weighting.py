r"""A1111's prompt emphasis: ``(words)``, ``[words]``, ``(words:1.3)`` and ``BREAK``.

Stable Diffusion users write weights into the prompt, and every tool they come
from (A1111, Forge, ComfyUI, Civitai) reads them the same way:

- ``(words)`` multiplies the attention paid to the words by 1.1, ``((words))`` by 1.21;
- ``[words]`` divides it by 1.1;
- ``(words:1.3)`` multiplies it by 1.3 (nested brackets multiply);
- ``\(`` and ``\)`` (and ``\[``, ``\]``, ``\\``) are the characters themselves;
- a bracket left open weighs everything after it, one closed with none open is a character;
- ``BREAK`` (in capitals, a word of its own) starts a new 75-token chunk of the prompt.

This module reads that syntax, without a tokenizer, so that the core can check a
prompt's weights before it is queued and each backend can tell whether a prompt
holds any. Encoding the weights is the backend's (the local worker's text
encoders; Runware's ``promptWeighting``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.errors import shown

__all__ = ["MAX_OPEN", "MAX_WEIGHT", "Run", "is_plain", "parse_weights", "weights_reason"]

# The heaviest a run of words may weigh (and the lightest, 0: left out). A1111 takes any number,
# but past 2 or so an image falls apart, and a number without a bound can be 1e300.
MAX_WEIGHT = 3.0
# The most brackets open at once: A1111 prompts nest three or four deep, and the bound keeps
# the reading linear in the prompt's length whatever it holds (each run is multiplied once per
# bracket around it).
MAX_OPEN = 32
_ROUND = 1.1  # what ( ) multiplies by, and [ ] divides by
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# One token of the syntax; a weight is `:number)` closing a round bracket. A1111's own pattern,
# but a weight must be a number (A1111's `[.\d]+` lets `1..2` through, and then fails on it).
_TOKEN = re.compile(
    rf"\\[()\[\]\\]|\\|\(|\[|:\s*({_NUMBER})\s*\)|\)|\]|[^\\()\[\]:]+|:",
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
# A prompt without any of these is plain: read without the parser (most prompts, on every request).
_SYNTAX = re.compile(r"[()\[\]\\]|BREAK")


@dataclass(frozen=True, slots=True)
class Run:
    """Words of a prompt and the weight they carry (1.0: as written)."""

    text: str
    weight: float


def parse_weights(text: str) -> tuple[tuple[Run, ...], ...]:
    """Read a prompt's emphasis: its parts (split at ``BREAK``), each a sequence of weighted runs.

    Neighbouring runs of one weight are joined, and empty ones dropped; a prompt without any
    syntax is one part of one run, itself.

    Raises:
        ValueError: more than `MAX_OPEN` brackets are open at once.
    """
    parts: list[list[list[str | float]]] = [[]]
    # The open brackets: the part and run each opened at, and what its closing multiplies by.
    round_open: list[tuple[int, int]] = []
    square_open: list[tuple[int, int]] = []

    def multiply(start: tuple[int, int], by: float) -> None:
        part, run = start
        for index in range(part, len(parts)):
            for item in parts[index][run if index == part else 0 :]:
                item[1] = float(item[1]) * by

    def position() -> tuple[int, int]:
        return len(parts) - 1, len(parts[-1])

    for match in _TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            parts[-1].append([token[1:], 1.0])
        elif token in "([":
            (round_open if token == "(" else square_open).append(position())
            if len(round_open) + len(square_open) > MAX_OPEN:
                raise ValueError(f"opens more than {MAX_OPEN} brackets at once")
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), _ROUND)
        elif token == "]" and square_open:
            multiply(square_open.pop(), 1 / _ROUND)
        else:
            for index, piece in enumerate(_BREAK.split(token)):
                if index:
                    parts.append([])
                parts[-1].append([piece, 1.0])
    for start in round_open:
        multiply(start, _ROUND)
    for start in square_open:
        multiply(start, 1 / _ROUND)
    return tuple(_joined(part) for part in parts if any(text for text, _ in part))


def _joined(part: list[list[str | float]]) -> tuple[Run, ...]:
    runs: list[Run] = []
    for text, weight in part:
        if not text:
            continue
        if runs and runs[-1].weight == weight:
            runs[-1] = Run(runs[-1].text + str(text), runs[-1].weight)
        else:
            runs.append(Run(str(text), float(weight)))
    return tuple(runs)


def is_plain(text: str) -> bool:
    """Tell whether a prompt holds no emphasis: no brackets that weigh, no escapes, no ``BREAK``."""
    if not _SYNTAX.search(text):
        return True
    try:
        parts = parse_weights(text)
    except ValueError:
        return False
    return parts == ((Run(text, 1.0),),)


def weights_reason(text: str) -> str | None:
    """Return why a prompt's emphasis cannot run (a weight out of range, brackets too deep), or None."""
    if not _SYNTAX.search(text):
        return None
    try:
        parts = parse_weights(text)
    except ValueError as exc:
        return f"{exc}; write \\( for a bracket itself"
    for run in (run for part in parts for run in part):
        if not 0 <= run.weight <= MAX_WEIGHT:
            return (
                f"gives '{shown(run.text.strip())}' a weight of {run.weight:.3g}; weights run from"
                f" 0 to {MAX_WEIGHT:g} (write \\( for a bracket itself)"
            )
    return None

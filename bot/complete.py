"""Autocomplete suggestions for catalog and wildcard names, shared by every chat platform.

A platform shows at most a handful of suggestions (Discord: 25, each at most
100 characters), but they are searched over the whole catalog: typing ``pix``
finds ``pixel-art`` wherever it sorts. For a weighted list (``--lora
pixel-art:0.8, film``) only the item being typed is completed; the items
before it are kept as typed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.catalog import Catalog, Kind
from bot.wildcards import Wildcards, search

__all__ = ["Suggestion", "complete_name", "complete_weighted", "complete_wildcard"]

MAX_SUGGESTIONS = 25
_MAX_CHOICE_LENGTH = 100


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One autocomplete choice: what is shown and what is filled in."""

    label: str
    value: str


def _label(text: str) -> str:
    return text if len(text) <= _MAX_CHOICE_LENGTH else text[: _MAX_CHOICE_LENGTH - 1] + "…"


def complete_name(catalog: Catalog, kind: Kind, typed: str, limit: int = MAX_SUGGESTIONS) -> list[Suggestion]:
    """Return catalog entries of one kind matching what was typed, best first."""
    found = catalog.search(kind, typed, limit=limit)
    return [
        Suggestion(_label(f"{entry.name} — {entry.description}" if entry.description else entry.name), entry.name)
        for entry in found
    ]


def complete_weighted(catalog: Catalog, kind: Kind, typed: str, limit: int = MAX_SUGGESTIONS) -> list[Suggestion]:
    """Complete the last item of a ``name:weight, other`` list, keeping the items before it.

    A completed item gets the weight that was typed for it, else none (weight 1).
    Suggestions whose whole value would not fit in a choice are left out.
    """
    head, comma, last = typed.rpartition(",")
    prefix = f"{head.strip()}, " if comma else ""
    name, colon, weight = last.strip().partition(":")
    taken = {item.strip().partition(":")[0].strip().lower() for item in head.split(",")} if comma else set()
    suggestions = []
    for entry in catalog.search(kind, name, limit=limit + len(taken)):
        if entry.name in taken:
            continue
        value = prefix + entry.name + (f":{weight.strip()}" if colon and weight.strip() else "")
        if len(value) > _MAX_CHOICE_LENGTH:
            continue
        label = value if not entry.description else f"{value} — {entry.description}"
        suggestions.append(Suggestion(_label(label), value))
    return suggestions[:limit]


def complete_wildcard(wildcards: Wildcards, typed: str, limit: int = MAX_SUGGESTIONS) -> list[Suggestion]:
    """Return the wildcards whose name holds what was typed (``__`` around it or not), as `wildcards` lists them.

    Each is shown as a prompt writes it, with how many choices it has and the first of them.
    """
    found = [(name, lines) for name, lines in search(wildcards, typed) if len(name) <= _MAX_CHOICE_LENGTH][:limit]
    return [Suggestion(_label(f"__{name}__ ({len(lines)}): {', '.join(lines[:3])}"), name) for name, lines in found]

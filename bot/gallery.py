"""What the web gallery asks of the history: one page of a user's generations, searched and filtered.

Pure values and functions; the read model that answers them is a port (`bot.ports.GalleryStore`)
implemented in `storage/gallery.py`, and the web pages live in `adapters/gallery/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_SEARCH_WORDS", "PAGE_SIZE", "GalleryQuery", "match_expression"]

PAGE_SIZE = 24
MAX_SEARCH_WORDS = 12
# Letters and digits only: FTS5's unicode61 tokenizer splits on everything else anyway.
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class GalleryQuery:
    """One page of a user's gallery.

    Pages are keyset pages: `after` is the last id the previous page showed, so a
    page costs an index range read however deep it is, and new images arriving
    meanwhile never shift what the next page shows.

    Attributes:
        words: prompt words, all of which must match (the last one as a prefix).
        model: only this model's generations.
        lora: only generations with this LoRA (at any weight).
        since, until: only generations created in [since, until), in seconds since the epoch.
        starred: only generations their owner starred for the server's showcase.
        oldest_first: the sort by date; newest first by default.
        after: the last id of the previous page (None: the first page).
        limit: generations per page.
    """

    words: str = ""
    model: str | None = None
    lora: str | None = None
    since: float | None = None
    until: float | None = None
    starred: bool = False
    oldest_first: bool = False
    after: int | None = None
    limit: int = PAGE_SIZE


def match_expression(words: str) -> str | None:
    """Return an FTS5 MATCH expression for what a user typed, or None when it holds no word.

    Each word becomes a quoted string, so nothing a user types is FTS5 syntax (``AND``,
    ``"``, ``*``, ``NEAR(``, ``col:``): a search can never be a syntax error. The last
    word matches as a prefix, so "fo" finds "fox" while typing.
    """
    found = _WORD.findall(words)[:MAX_SEARCH_WORDS]
    if not found:
        return None
    quoted = [f'"{word}"' for word in found]
    quoted[-1] += "*"
    return " ".join(quoted)

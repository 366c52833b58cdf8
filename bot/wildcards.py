"""Wildcards: the operator's files of choices that ``__name__`` in a prompt draws a line from (Dynamic Prompts').

A folder of ``.txt`` files (``IMAGEBOT_WILDCARDS``, else ``<data dir>/wildcards`` when it exists).
A file's name is its path under the folder without ``.txt``, in lower case: ``colors/warm.txt``
is ``__colors/warm__``. Every line that is not empty or a ``#`` comment is one choice, and may
hold ``{a|b}`` picks and other wildcards (`bot.permutations.Draw`). The files are read at start
and checked as any text is: UTF-8, no control characters, bounded in files, bytes, lines and line
length, so a mistake stops the start with the file and line named rather than reaching a user.
After that `WildcardFolder` reads them again when one changes, as Dynamic Prompts does: an edit is
live at the next prompt; an edit that breaks a rule is logged, and the files as last read whole
stay in use.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["MOST_FILES", "WildcardFolder", "Wildcards", "load_wildcards", "search"]

log = logging.getLogger(__name__)

Wildcards = Mapping[str, tuple[str, ...]]

MOST_FILES = 1000
MOST_FILE_BYTES = 1024 * 1024
MOST_LINES = 10_000
MOST_LINE = 1000  # characters; a choice is words for a prompt of at most 3000
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}(/[a-z0-9][a-z0-9_-]{0,49}){0,3}")


def load_wildcards(folder: Path | None) -> dict[str, tuple[str, ...]]:
    """Read the wildcard files under `folder` (none: no wildcards), name by name.

    Raises:
        ValueError: a file or line that breaks a rule above, named with its path and line number.
    """
    if folder is None or not folder.is_dir():
        return {}
    files = sorted(path for path in folder.rglob("*.txt") if path.is_file())
    if len(files) > MOST_FILES:
        raise ValueError(f"{folder} holds {len(files)} wildcard files; the most is {MOST_FILES}")
    library: dict[str, tuple[str, ...]] = {}
    for path in files:
        name = path.relative_to(folder).with_suffix("").as_posix().lower()
        if not _NAME.fullmatch(name):
            raise ValueError(f"{path}: a wildcard's name is letters, digits, _ and - (folders with /), not {name!r}")
        if name in library:
            raise ValueError(f"{path}: another file is the wildcard __{name}__ too (names ignore case)")
        library[name] = _lines(path)
    return library


class WildcardFolder:
    """The operator's wildcard folder, read again when a file in it changes (its names, sizes, times).

    Looked at, in a thread, at most every `every` seconds and only when a prompt or a listing asks:
    an edit is live within seconds, and an idle bot reads nothing. A folder made after the start
    is read too; one removed leaves no wildcards.
    """

    def __init__(
        self,
        folder: Path | None,
        wildcards: Wildcards | None = None,
        *,
        every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read `folder` now (or take `wildcards`, read already: a fixed library when `folder` is None).

        Raises:
            ValueError: a file or line that breaks a rule, named (`load_wildcards`).
        """
        self.folder = folder
        self._every, self._clock = every, clock
        self._seen = _stamp(folder)
        self.wildcards: Wildcards = load_wildcards(folder) if wildcards is None else wildcards
        self._looked = clock()

    async def current(self) -> Wildcards:
        """Return the wildcards as the files are now, reading them again if any changed since last read."""
        if self.folder is not None and self._clock() - self._looked >= self._every:
            self._looked = self._clock()
            await asyncio.to_thread(self._read_if_changed, self.folder)
        return self.wildcards

    def _read_if_changed(self, folder: Path) -> None:
        stamp = _stamp(folder)
        if stamp == self._seen:
            return
        self._seen = stamp  # a broken edit is logged once, not at every look
        try:
            self.wildcards = load_wildcards(folder)
        except (OSError, ValueError) as error:
            log.warning("wildcards not read again, the files as last read stay in use: %s", error)
            return
        log.info("wildcards read again from %s: %d files", folder, len(self.wildcards))


def _stamp(folder: Path | None) -> tuple[tuple[str, int, int], ...]:
    """Return what tells a change of the wildcard files: each one's path, size and modification time."""
    if folder is None or not folder.is_dir():
        return ()
    stamps = []
    for path in folder.rglob("*.txt"):
        try:
            stat = path.stat()
        except OSError:  # removed meanwhile: the next look sees it gone
            continue
        stamps.append((path.as_posix(), stat.st_size, stat.st_mtime_ns))
        if len(stamps) > MOST_FILES:  # too many to read: `load_wildcards` says so
            break
    return tuple(sorted(stamps))


def _lines(path: Path) -> tuple[str, ...]:
    if path.stat().st_size > MOST_FILE_BYTES:
        raise ValueError(f"{path} is over {MOST_FILE_BYTES // 1024} KiB")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    lines: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MOST_LINE:
            raise ValueError(f"{path}, line {number}: {len(line)} characters; a choice is at most {MOST_LINE}")
        if any(unicodedata.category(char) in ("Cc", "Cs") and char != "\t" for char in line):
            raise ValueError(f"{path}, line {number}: a control character; a choice is words")
        lines.append(line)
    if not lines:
        raise ValueError(f"{path} has no choices (lines that are not empty or # comments)")
    if len(lines) > MOST_LINES:
        raise ValueError(f"{path} has {len(lines)} choices; the most is {MOST_LINES}")
    return tuple(lines)


def search(wildcards: Wildcards, text: str) -> list[tuple[str, tuple[str, ...]]]:
    """Return the wildcards whose name holds `text` (all when empty), by name, with their choices."""
    needle = text.strip().lower().strip("_")
    return [(name, wildcards[name]) for name in sorted(wildcards) if needle in name]

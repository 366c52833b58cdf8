"""Catalog folders that are never downloaded (annotators, captioners): present on this machine, or not offered.

Their `local` is a folder (absolute, or ``./`` under the data dir) or ``tiny:<part>`` (`bot.catalog`),
never a repo id, so that no weights are fetched while a request waits: the operator puts the
files there, and the local backend offers what they do only while they are present.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bot.catalog import CatalogEntry
from inference import tiny

__all__ = ["first_present", "weights_folder"]


def first_present(entries: Iterable[CatalogEntry], data_dir: Path) -> tuple[CatalogEntry, Path] | None:
    """Return the first of `entries` whose files are on this machine, and its folder; None when none is.

    An operator's entry wins over a tiny one; among the rest, the catalog's order (by name).
    """
    for entry in sorted(entries, key=lambda entry: (entry.local or "").startswith("tiny:")):
        folder = weights_folder(entry, data_dir)
        if folder is not None:
            return entry, folder
    return None


def weights_folder(entry: CatalogEntry, data_dir: Path) -> Path | None:
    """Return the folder of an entry's weights if they are on this machine, else None (building nothing).

    A folder counts once it holds a transformers ``config.json``; a ``tiny:`` part once the tiny model is built.
    """
    local = entry.local or ""
    if local.startswith("tiny:"):
        if not tiny.is_built(data_dir):
            return None
        folder, _ = tiny.resolve(local, data_dir)
    elif local.startswith("./"):
        folder = Path(data_dir) / local[2:]
    elif local.startswith("/"):
        folder = Path(local)
    else:
        return None
    return folder if (folder / "config.json").is_file() else None

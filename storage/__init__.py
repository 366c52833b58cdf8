"""Durable state in SQLite (generations, images, settings) and image files under the data directory."""

from storage.files import ImageFiles
from storage.history import (
    Action,
    AuditEntry,
    Generation,
    HistoryStore,
    InMemoryHistory,
    NewGeneration,
    SqliteHistory,
    Status,
    StoredImage,
)

__all__ = [
    "Action",
    "AuditEntry",
    "Generation",
    "HistoryStore",
    "ImageFiles",
    "InMemoryHistory",
    "NewGeneration",
    "SqliteHistory",
    "Status",
    "StoredImage",
]

"""Backends that turn a `GenerationRequest` into images; they know nothing of chats."""

from inference.base import Backend, ProgressCallback

__all__ = ["Backend", "ProgressCallback"]

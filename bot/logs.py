"""Log lines: JSON objects when stderr is not a terminal (a container, systemd), text otherwise.

Every line goes through one formatter that replaces the value of every secret
setting (tokens, keys, the signing secret) with ``***``, whichever library
logged it, so a debug log of discord.py or httpx cannot leak one. A record
may carry ``job_id`` and ``user_id`` (``extra=``); they become JSON fields.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

from pydantic import SecretStr

from bot.config import SETTINGS, CoreSettings

__all__ = ["RedactingFormatter", "secret_values", "setup_logging"]

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Secrets that reach the worker through its environment rather than through our settings.
_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def secret_values() -> list[str]:
    """Return the value of every secret setting that is set, longest first."""
    values = [os.environ[name] for name in _SECRET_ENV if os.environ.get(name)]
    for settings in SETTINGS:
        try:
            instance = settings()
        except ValueError:
            continue  # `imagebot doctor` explains invalid settings
        values += [value.get_secret_value() for value in instance.__dict__.values() if isinstance(value, SecretStr)]
    # Longest first, so that a secret containing another is replaced whole.
    return sorted({value for value in values if len(value) >= 4}, key=len, reverse=True)


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one JSON object."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "user_id", "platform"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class RedactingFormatter(logging.Formatter):
    """Format with another formatter, then replace each secret with ``***``."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        self._secrets = list(secrets)

    def format(self, record: logging.LogRecord) -> str:
        """Return the inner formatter's line with the secrets replaced."""
        text = self._inner.format(record)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def setup_logging(core: CoreSettings, stream: IO[str]) -> None:
    """Send every log line to `stream`, as JSON unless it is a terminal (or as configured), secrets redacted."""
    as_json = core.log_format == "json" or (core.log_format == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(_Json() if as_json else logging.Formatter(_TEXT), secret_values()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(core.log_level.upper())

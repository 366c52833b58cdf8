"""Find backends and chats by name, through the ``imagebot.backends`` and ``imagebot.chats`` entry points.

Entry points are how Python packages announce plugins (pytest, Sphinx and
setuptools work so): an operator adds a backend or a chat by installing a
package that declares one, without editing this repository.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from bot.plugins import BACKENDS, CHATS, BackendPlugin, ChatPlugin, ConfigurationError

__all__ = ["backend_plugin", "backend_plugins", "chat_plugins"]


def backend_plugins() -> dict[str, BackendPlugin]:
    """Return every installed backend plugin by name."""
    found = {point.name: point.load() for point in entry_points(group=BACKENDS)}
    return {name: plugin for name, plugin in sorted(found.items()) if isinstance(plugin, BackendPlugin)}


def chat_plugins() -> dict[str, ChatPlugin]:
    """Return every installed chat plugin by name."""
    found = {point.name: point.load() for point in entry_points(group=CHATS)}
    return {name: plugin for name, plugin in sorted(found.items()) if isinstance(plugin, ChatPlugin)}


def backend_plugin(name: str) -> BackendPlugin:
    """Return the backend plugin of that name, or raise `ConfigurationError` listing the installed ones."""
    plugins = backend_plugins()
    if name not in plugins:
        raise ConfigurationError(f"IMAGEBOT_BACKEND={name} is not available in this version; use {', '.join(plugins)}.")
    return plugins[name]

"""Backends that turn a `GenerationRequest` into images: each implements `bot.ports.Backend`; none knows chats."""

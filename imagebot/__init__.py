"""The composition root: settings → stores → backend → service → chats, and the ``imagebot`` command.

The only package that imports every layer; nothing imports it.
"""

"""Buttons under generations: persistent, because their custom_id carries the generation id.

A `GenerationButton` is a discord.py `DynamicItem`: after a restart, a click on
a button posted days ago is matched by its custom_id (``ib:reroll:12``, or
``ib:vary-strong:12.2`` for one image of several: the encoding of `bot.actions`)
and handled like a fresh one. A `WordsButton` (``ib:words``) under a ``/describe`` answer names
no generation: it opens the /imagine form holding the words of the message it is under.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import discord

from bot.actions import (
    ACTION_ID_PATTERN,
    RESULT_ACTIONS,
    WORDS_ID_PATTERN,
    WORDS_LOOK,
    ButtonAction,
    button_looks,
    button_rows,
    decode_action,
    encode_action,
    words_id,
    words_number,
)
from bot.chat import EDIT_MOST

__all__ = [
    "ActionHandler",
    "EditModal",
    "GenerationButton",
    "GuideHandler",
    "GuideModal",
    "ImageModal",
    "ImageSubmit",
    "TextSubmit",
    "WordsButton",
    "WordsHandler",
    "result_view",
    "running_view",
    "words_view",
]

# The buttons that stand out; every other one is grey (secondary).
_STYLES: dict[ButtonAction, discord.ButtonStyle] = {
    "reroll": discord.ButtonStyle.primary,
    "delete": discord.ButtonStyle.danger,
    "cancel": discord.ButtonStyle.danger,
}


class ActionHandler(Protocol):
    """What a button click is handed to (the cog)."""

    async def on_action(
        self, interaction: discord.Interaction, action: ButtonAction, generation_id: int, index: int
    ) -> None:
        """Handle a click of `action` on a generation (on its image `index`)."""
        ...


class GenerationButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=ACTION_ID_PATTERN):
    """A button acting on one generation (on its image `index`, 0 the first)."""

    def __init__(self, action: ButtonAction, generation_id: int, index: int = 0, row: int | None = None) -> None:
        emoji, label = button_looks(action, index)
        style = _STYLES.get(action, discord.ButtonStyle.secondary)
        custom_id = encode_action(action, generation_id, index)
        super().__init__(discord.ui.Button(emoji=emoji, label=label or None, style=style, custom_id=custom_id), row=row)
        self.action: ButtonAction = action
        self.generation_id = generation_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> GenerationButton:
        """Rebuild the button from a clicked custom_id."""
        custom_id = getattr(item, "custom_id", None)
        decoded = decode_action(custom_id or "")
        if decoded is None:  # the template matched, so this cannot happen
            raise ValueError(f"not a generation button: {custom_id!r}")
        return cls(*decoded)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the click to the cog."""
        handler: ActionHandler | None = interaction.client.get_cog("Images")  # type: ignore[attr-defined]
        if handler is not None:
            await handler.on_action(interaction, self.action, self.generation_id, self.index)


class WordsHandler(Protocol):
    """What a click of "Imagine these words" is handed to (the cog)."""

    async def on_words(self, interaction: discord.Interaction, number: int) -> None:
        """Open the /imagine form holding the `number`-th words of the answer the button is under."""
        ...


class WordsButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=WORDS_ID_PATTERN):
    """A button under a /describe answer; its words are the answer's own, read back when it is clicked.

    Under one description it reads "Imagine these words"; under several, one each: "1", "2"…
    """

    def __init__(self, number: int = 1, several: bool = False) -> None:
        emoji, label = WORDS_LOOK
        self.number = number
        button: discord.ui.Button[Any] = discord.ui.Button(
            emoji=emoji,
            label=str(number) if several else label,
            style=discord.ButtonStyle.primary,
            custom_id=words_id(number),
        )
        super().__init__(button)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> WordsButton:
        """Rebuild the button from its custom_id (which words: ``ib:words`` the first, ``ib:words:2``…)."""
        return cls(words_number(match.string) or 1)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the click to the cog."""
        handler: WordsHandler | None = interaction.client.get_cog("Images")  # type: ignore[attr-defined]
        if handler is not None:
            await handler.on_words(interaction, self.number)


# What an `ImageModal` hands its answer to (a method of the cog): the attachment, the prompt, and the second field.
ImageSubmit = Callable[[discord.Interaction, discord.Attachment, str, str], Awaitable[None]]


class ImageModal(discord.ui.Modal):
    """Asks for the prompt (and one optional value) of a new image made with a message's image attachment.

    "Imagine from this image" asks a strength, "Use as style reference" a style weight. The value
    goes to the service as typed, so a bad one gets the same sentence as its flag would.
    """

    prompt: discord.ui.TextInput[ImageModal] = discord.ui.TextInput(
        label="Prompt", style=discord.TextStyle.paragraph, max_length=2000, placeholder="flags such as --seed 7 work"
    )

    def __init__(
        self, title: str, label: str, placeholder: str, submit: ImageSubmit, attachment: discord.Attachment
    ) -> None:
        # Discord keeps an unanswered modal open for 15 minutes at most; so does the bot.
        super().__init__(title=title, timeout=15 * 60)
        # Made here, after the prompt, with its own label: a label set later is deprecated in discord.py.
        self.value: discord.ui.TextInput[ImageModal] = discord.ui.TextInput(
            label=label, placeholder=placeholder, required=False, max_length=10
        )
        self.add_item(self.value)
        self.submit = submit
        self.attachment = attachment

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Hand the prompt and the value to the cog."""
        await self.submit(interaction, self.attachment, self.prompt.value, self.value.value)


# What an `EditModal` hands its text to (a method of the cog).
TextSubmit = Callable[[discord.Interaction, str], Awaitable[None]]


class EditModal(discord.ui.Modal):
    """Holds text to change and send: a result's /imagine text (Edit), words to imagine, a remix's prompt."""

    def __init__(self, submit: TextSubmit, text: str, title: str, label: str = "Prompt and flags") -> None:
        super().__init__(title=title[:45], timeout=15 * 60)  # Discord's most for a modal's title
        self.text: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
            label=label, style=discord.TextStyle.paragraph, max_length=EDIT_MOST, default=text
        )
        self.add_item(self.text)
        self.submit = submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Hand the changed text to the cog."""
        await self.submit(interaction, self.text.value)


class GuideHandler(Protocol):
    """What the "Use as ControlNet guide" modal is handed to (the cog)."""

    async def on_guide(
        self, interaction: discord.Interaction, attachment: discord.Attachment, prompt: str, control: str
    ) -> None:
        """Queue a generation guided by `attachment` through the ControlNet named (as typed)."""
        ...


class GuideModal(discord.ui.Modal, title="Use as ControlNet guide"):
    """Asks for the prompt and the ControlNet of a new image guided by a message's image attachment.

    The ControlNet's name goes to the service as typed, so a wrong one gets the same sentence
    (with its suggestions) as the ``control`` option would.
    """

    prompt: discord.ui.TextInput[GuideModal] = discord.ui.TextInput(
        label="Prompt",
        style=discord.TextStyle.paragraph,
        max_length=2000,
        placeholder="flags such as --cn-end 40% work",
    )
    control: discord.ui.TextInput[GuideModal] = discord.ui.TextInput(label="ControlNet", max_length=100)

    def __init__(self, handler: GuideHandler, attachment: discord.Attachment, names: str) -> None:
        super().__init__(timeout=15 * 60)
        self.handler = handler
        self.attachment = attachment
        # Discord shows at most 100 characters of a placeholder.
        self.control.placeholder = (names if len(names) <= 100 else names[:99] + "…") or None

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Hand the prompt and ControlNet to the cog."""
        await self.handler.on_guide(interaction, self.attachment, self.prompt.value, self.control.value)


def words_view(count: int = 1) -> discord.ui.View:
    """Return the buttons under a /describe answer of `count` descriptions."""
    view = discord.ui.View(timeout=None)
    for number in range(1, count + 1):
        view.add_item(WordsButton(number, several=count > 1))
    return view


def _view(*buttons: GenerationButton) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(button)
    return view


def running_view(generation_id: int) -> discord.ui.View:
    """Return the buttons under an image that is queued or being made."""
    return _view(GenerationButton("cancel", generation_id))


def result_view(
    generation_id: int, actions: Sequence[ButtonAction] = RESULT_ACTIONS, *, picks: Sequence[int] = (), index: int = 0
) -> discord.ui.View:
    """Return the buttons under a finished result, or for its image `index`, in their rows.

    `actions`: the service's `result_actions` of its request, or its `image_actions`; `picks`:
    the images of several that get an "Image N" button (those the channel sees).
    """
    rows = button_rows(actions, picks=picks, index=index)
    return _view(
        *(GenerationButton(action, generation_id, n, row) for row, buttons in enumerate(rows) for action, n in buttons)
    )

"""Describe (Midjourney's ``/describe``): an image put into words that ``/imagine`` can take as a prompt.

A backend that has a captioning model (`bot.ports.DescribingBackend`: the local worker's catalog
captioner, BLIP; Runware's ``imageCaption`` task) reads a checked image and answers with a
sentence. That sentence is text from outside, like any API's answer: `as_prompt` makes it one
printable line a prompt may hold, without what ``/imagine`` would read as more than words
(flags, ``{…}`` choices, an option set, ``<lora:…>`` tags) or backticks, so that copying it
into ``/imagine`` asks for the image it describes and nothing more. As Midjourney's do, the
words end with the image's shape (`aspect_flag`: ``--ar 3:2``), so they make an image of it, and a
backend may say it several ways (the local captioner: up to `DESCRIPTIONS`, numbered in the answer,
each with a button).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot import metrics
from bot.admin import ServerAdmin, managers
from bot.errors import BackendUnavailable, ContentBlocked, InvalidOption
from bot.images import InputImage
from bot.jobs import Requester
from bot.ports import Backend, DescribingBackend, ImageCheckingBackend

__all__ = [
    "DESCRIBING",
    "DESCRIPTIONS",
    "MAX_DESCRIPTION",
    "Describer",
    "Description",
    "answer_text",
    "as_prompt",
    "aspect_flag",
    "prompt_of",
    "words_in",
]

log = logging.getLogger(__name__)

# What a backend that failed to describe could not do: "The local backend could not describe the image: …".
DESCRIBING = "describe the image"
# Longer than any caption BLIP or Runware writes, short enough to quote in a chat message with room to spare.
MAX_DESCRIPTION = 600
# The most descriptions of one image an answer holds: Midjourney's four, within as many characters as
# a Discord message keeps room for with its words around them (each is at most `MAX_DESCRIPTION`).
DESCRIPTIONS = 4
_ANSWER_MOST = 1600
# How an answer numbers its descriptions (keycap digits, as Midjourney's buttons read).
_NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")
# What /imagine would read as more than words: a flag or option set (--x, —x) at a word's start, {…} choices,
# A1111's <lora:…> tags; and backticks, which would end the code block a chat shows the words in.
_NOT_WORDS = re.compile(r"(?:(?<=\s)|^)(?:--+|—+)|[{}<>`]")
# The shapes a description names (Midjourney's usual ones, within --ar's 1:4 to 4:1), as width and height.
_SHAPES = tuple(
    (w, h)
    for w, h in ((1, 1), (5, 4), (4, 3), (3, 2), (16, 9), (2, 1), (21, 9), (3, 1), (4, 1))
    for w, h in ((w, h), (h, w))
)
# A description as `Describer` makes it: words, then the shape's flag.
_DESCRIPTION = re.compile(r"(.*?)(?:(?:^| )--ar ([0-9]{1,2}):([0-9]{1,2}))?")


@dataclass(frozen=True, slots=True)
class Description:
    """An image in words, other ways to say it, and what it cost.

    From a backend (`bot.ports.DescribingBackend`) the texts are its answer, unchecked; from
    `Describer` each is a prompt: `as_prompt`'s words, then the image's ``--ar``, none twice.
    """

    text: str  # the backend's best words
    cost: float | None = None  # None: free, or the backend does not say
    more: tuple[str, ...] = ()  # other words for the same image, best first

    @property
    def texts(self) -> tuple[str, ...]:
        """Return every way it was said, the best first."""
        return (self.text, *self.more)


def as_prompt(text: str) -> str:
    """Return a caption as a prompt: one printable line of words, at most `MAX_DESCRIPTION` characters.

    Control characters go, whitespace runs become one space, flag dashes at a word's start,
    braces, angle brackets and backticks are dropped; a long caption is cut at a word. Empty when nothing of it is left.
    """
    printable = "".join(c if c.isprintable() else " " for c in text)
    words = " ".join(_NOT_WORDS.sub(" ", printable).split())
    if len(words) <= MAX_DESCRIPTION:
        return words
    cut = words[: MAX_DESCRIPTION + 1].rsplit(" ", 1)[0]
    return cut if cut and len(cut) <= MAX_DESCRIPTION else words[:MAX_DESCRIPTION]


def aspect_flag(width: int, height: int) -> str:
    """Return the ``--ar`` of the usual shape nearest to `width` × `height` (``--ar 3:2``)."""
    w, h = min(_SHAPES, key=lambda shape: abs(math.log(shape[0] / shape[1] * height / width)))
    return f"--ar {w}:{h}"


def prompt_of(text: str) -> str | None:
    """Return a description read back from outside (a chat's message or button) as `Describer` makes one.

    Its words are made a prompt again (`as_prompt`), and a trailing ``--ar W:H`` of one of the shapes
    `aspect_flag` names is kept; None when no words are left.
    """
    match = _DESCRIPTION.fullmatch(text.strip())
    words = as_prompt(match[1]) if match else ""
    if not words:
        return None
    shape = (int(match[2]), int(match[3])) if match and match[2] else None
    return f"{words} --ar {shape[0]}:{shape[1]}" if shape in _SHAPES else words


def answer_text(what: str, words: Sequence[str]) -> str:
    """Return a describe answer as a chat shows it: what was described, then the words in a code block.

    `words` are a `Describer` description's texts (no backticks), already in the chat's markup;
    several are numbered, one to a line. `words_in` reads them back.
    """
    if len(words) == 1:
        return f"📝 {what} in words, to send with /imagine for one like it:\n```\n{words[0]}\n```"
    lines = "\n".join(f"{number} {text}" for number, text in zip(_NUMBERS, words, strict=False))
    return f"📝 {what} in words, {len(words)} ways; send one with /imagine for one like it:\n```\n{lines}\n```"


def words_in(answer: str, number: int = 1) -> str | None:
    """Return the words of a describe answer (`answer_text`) as a prompt (the `number`-th of several), or None.

    A chat whose button carries no words (Discord's id holds 100 characters) reads them back from
    the answer it is under; they are made a prompt again (`prompt_of`), as anything read from a message is.
    """
    match = re.search(r"\n```\n(.+)\n```$", answer, re.DOTALL)
    if match is None:
        return None
    lines = match[1].split("\n")
    if len(lines) == 1:  # one description, as it is (an answer from before there were several, too)
        return prompt_of(lines[0]) if number == 1 else None
    if not 1 <= number <= min(len(lines), len(_NUMBERS)):
        return None
    mark = _NUMBERS[number - 1] + " "
    line = lines[number - 1]
    return prompt_of(line.removeprefix(mark)) if line.startswith(mark) else None


class Describer:
    """Describe's use case: which backend puts an image into words, and the checks around it.

    The image is found and read by the service (a result of the user's, or a chat's file) and
    checked like any input. A server's channel list applies as to ``/imagine``; a server that
    withholds flagged images describes none either (an image it never shows is not told in words),
    and an upload is run through the backend's safety check first where it has one. Each user has
    one description running at a time: a paid API is not asked twice while the first answer is on
    its way.

    Args:
        admin: the servers' rules.
    """

    def __init__(self, admin: ServerAdmin) -> None:
        self._admin = admin
        self._running: set[tuple[str, str]] = set()

    async def backend(self, who: Requester, backend: Backend) -> DescribingBackend:
        """Return `backend` as one that describes for `who` now, or raise the sentence that says why not.

        Before any image is read: the server's channel list, then the backend's own check.
        """
        policy = await self._admin.policy(who)
        policy.check_channel(None if who.direct else who.channel, managers(who))
        if not isinstance(backend, DescribingBackend):
            raise InvalidOption("describe", f"is not available on the {backend.name} backend")
        backend.check_describe()
        return backend

    @asynccontextmanager
    async def turn(self, who: Requester) -> AsyncIterator[None]:
        """Hold the user's one turn while their image is read and described, or refuse a second."""
        if who.key in self._running:
            raise InvalidOption("describe", "is still reading your last image; wait for its answer")
        self._running.add(who.key)
        try:
            yield
        finally:
            self._running.discard(who.key)

    async def describe(
        self,
        who: Requester,
        backend: DescribingBackend,
        model: str,
        image: InputImage,
        *,
        flagged: bool | None,
        name: str,
    ) -> Description:
        """Return what `image` shows as prompts ending with its shape (``--ar 3:2``, up to four), and what it cost.

        Args:
            who: who asked.
            backend: the backend of the user's model, as `backend` returned it.
            model: the user's model, whose safety check an upload gets.
            image: the image, checked.
            flagged: the stored safety verdict of a result; None for an upload (no verdict yet).
            name: the image as a refusal names it (``#12``, ``the uploaded image``).
        """
        if (await self._admin.policy(who)).flagged == "withhold":
            if flagged is None and isinstance(backend, ImageCheckingBackend):
                flagged = (await backend.flags(model, [image.data]))[0]
            if flagged:
                raise ContentBlocked(
                    f"{name} was flagged by the safety check, and this server withholds flagged images"
                )
        try:
            said = await backend.describe(image.data)
            # Each made a prompt; what reads the same once made one is said once, and at most four.
            found = dict.fromkeys(words for text in said.texts if (words := as_prompt(text)))
            if not found:
                raise BackendUnavailable(backend.name, "its answer held no words", cost=said.cost, doing=DESCRIBING)
        except BackendUnavailable:
            metrics.DESCRIPTIONS.labels(backend.name, "failed").inc()
            raise
        metrics.DESCRIPTIONS.labels(backend.name, "done").inc()
        log.info(
            "described %s for %s:%s on %s (cost %s)",
            name,
            who.platform,
            who.user_id,
            backend.name,
            "unknown" if said.cost is None else f"{said.cost:g}",
            extra={"user_id": who.user_id, "platform": who.platform},
        )
        shape = aspect_flag(image.width, image.height)
        kept = [f"{words} {shape}" for words in list(found)[:DESCRIPTIONS]]
        while len(kept) > 1 and sum(len(text) for text in kept) > _ANSWER_MOST:
            kept.pop()
        return Description(kept[0], said.cost, tuple(kept[1:]))

"""How users and buttons refer to generations: ``#12`` in text, ``ib:reroll:12`` in component ids.

A button acting on one image of a several-image result names it as users do:
``ib:vary-strong:12.2`` is Vary (Strong) of ``#12.2``; without the suffix, the first image.

Ids are shown and typed with a leading ``#`` so that ``refine 90`` (90 % on
your latest image) never collides with ``refine #90``. Button and shortcut ids
share one encoding on every platform; Discord caps a custom_id at 100
characters, Slack an action_id at 255, and the check lives here.

One button names no generation: ``ib:words``, under a ``/describe`` answer, opens the ``/imagine``
form holding the words it shows (`WORDS_ID`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from bot.errors import InvalidOption, shown
from bot.options import PanDirection
from bot.request import COUNT, REFINER_PERCENT, SIDE, GenerationRequest, refiner_percent_reason

__all__ = [
    "ACTION_ID_PATTERN",
    "BUTTON_LOOKS",
    "IMAGE_ACTIONS",
    "PAN_ACTIONS",
    "RESULT_ACTIONS",
    "WORDS_ID",
    "WORDS_ID_PATTERN",
    "WORDS_LOOK",
    "ButtonAction",
    "RefArgs",
    "button_looks",
    "button_rows",
    "decode_action",
    "encode_action",
    "format_image_ref",
    "format_ref",
    "parse_image_ref",
    "parse_ref_args",
    "result_actions",
    "words_id",
    "words_number",
]

ButtonAction = Literal[
    "reroll",
    "refine",
    "vary-subtle",
    "vary-strong",
    "upscale-2",
    "upscale-4",
    "zoom-out",
    "zoom-out-2",
    "square",
    "region",
    "pan-left",
    "pan-right",
    "pan-up",
    "pan-down",
    "details",
    "delete",
    "cancel",
    "show",
    "guide",
    "star",
    "unstar",
    "pick",
    "edit",
]
# "show": a flagged image withheld from a Slack channel, sent to its author privately;
# "guide": the guide images a result's ControlNets saw, shown privately;
# "star", "unstar": the ⭐ reaction added or taken back, for the server's showcase (`bot.showcase`);
# "pick": one image of a several-image result, its own buttons shown privately (Midjourney's U1–U4);
# "edit": a form holding the result's /imagine text, to change and run;
# "square": the short side extended on both ends to the long one (Midjourney's Make Square);
# "region": Vary (Region), a private link to the gallery's page that selects the parts to make again.
_ACTIONS: dict[str, ButtonAction] = {action: action for action in get_args(ButtonAction)}
# Pan buttons by the direction each extends the canvas to.
PAN_ACTIONS: dict[ButtonAction, PanDirection] = {
    "pan-left": "left",
    "pan-right": "right",
    "pan-up": "up",
    "pan-down": "down",
}
# How each button reads on every chat: its emoji and its words (the pan arrows, as Midjourney's, have none).
BUTTON_LOOKS: dict[ButtonAction, tuple[str, str]] = {
    "reroll": ("🔄", "Reroll"),
    "refine": ("✨", "Refine"),
    "vary-subtle": ("🌿", "Vary (Subtle)"),
    "vary-strong": ("🌪️", "Vary (Strong)"),
    "upscale-2": ("🔍", "Upscale 2×"),
    "upscale-4": ("🔍", "Upscale 4×"),
    "zoom-out": ("🔭", "Zoom Out 1.5×"),
    "zoom-out-2": ("🔭", "Zoom Out 2×"),
    "square": ("🔲", "Make Square"),
    "region": ("🖌️", "Vary (Region)"),
    "pan-left": ("⬅️", ""),
    "pan-right": ("➡️", ""),
    "pan-up": ("⬆️", ""),
    "pan-down": ("⬇️", ""),
    "details": ("ℹ️", "Details"),
    "delete": ("🗑", "Delete"),
    "cancel": ("⏹", "Cancel"),
    "show": ("🔞", "Show"),
    "guide": ("🧭", "Show guide"),
    "pick": ("🖼️", "Image"),
    "edit": ("✏️", "Edit"),
}
# The buttons that act on one image of a result, and so may name which (``ib:pan-left:12.2``).
_OWN_IMAGE: tuple[ButtonAction, ...] = (
    "vary-subtle", "vary-strong", "upscale-2", "upscale-4", "zoom-out", "zoom-out-2", "square", "region", "pick"
)  # fmt: skip
IMAGE_ACTIONS: frozenset[ButtonAction] = frozenset((*_OWN_IMAGE, *PAN_ACTIONS))
# The buttons under a finished image, in rows of what belongs together, alike on every platform:
# new images from it; larger or wider ones (Vary (Region) ends the pans' row); about it ("Show guide"
# joins this row); one image of several. Five rows, Discord's most.
_RESULT_ROWS: tuple[tuple[ButtonAction, ...], ...] = (
    ("reroll", "refine", "vary-subtle", "vary-strong", "edit"),
    ("upscale-2", "upscale-4", "zoom-out", "zoom-out-2", "square"),
    (*PAN_ACTIONS, "region"),
    ("details", "delete", "guide"),
    ("pick",),
)
# The buttons under one square image with no ControlNets, large enough for Zoom Out, where no gallery is served.
RESULT_ACTIONS: tuple[ButtonAction, ...] = tuple(
    a for row in _RESULT_ROWS for a in row if a not in ("guide", "pick", "square", "region")
)


# The smallest side a result needs for Zoom Out: a border of 64 on both ends, and the smallest image between.
ZOOM_OUT_SIDE = 2 * 64 + SIDE.low


def result_actions(request: GenerationRequest) -> tuple[ButtonAction, ...]:
    """Return the buttons under a finished generation of `request`.

    "Show guide" too where ControlNets acted; no "Zoom Out" under an image too small for one, no
    "Make Square" under a square one; "Image 1"… for each image of several.
    What a server's limits or a backend rule out is the service's to leave out (`ImageService.result_actions`).
    """
    small = min(request.width, request.height) < ZOOM_OUT_SIDE

    def offered(action: ButtonAction) -> bool:
        if action in ("zoom-out", "zoom-out-2"):
            return not small
        if action == "square":
            return request.width != request.height
        if action == "pick":
            return request.count > 1
        return action != "guide" or bool(request.controlnets)

    return tuple(action for row in _RESULT_ROWS for action in row if offered(action))


def button_rows(
    actions: Sequence[ButtonAction], *, picks: Sequence[int] = (), index: int = 0
) -> list[list[tuple[ButtonAction, int]]]:
    """Return `actions` (from `result_actions`) in their rows, each with the image it acts on.

    Every button acts on image `index` (the first of the result, or the one "Image 2" picked),
    but "Image…", which comes once for each image in `picks` (those the chat shows). A row left
    empty goes; other actions come last.
    """
    rows = [[action for action in row if action in actions] for row in _RESULT_ROWS]
    grouped = {action for row in _RESULT_ROWS for action in row}
    rows.append([action for action in actions if action not in grouped])
    buttons = [[(action, n) for action in row for n in (picks if action == "pick" else (index,))] for row in rows]
    return [row for row in buttons if row]


def button_looks(action: ButtonAction, index: int = 0) -> tuple[str, str]:
    """Return how a button reads (emoji, words); "Image" buttons say which image: "Image 2"."""
    emoji, words = BUTTON_LOOKS[action]
    return emoji, f"{words} {index + 1}" if action == "pick" else words


# Ids of at most 18 digits: SQLite's row ids end at 2**63 - 1 (19 digits), and a larger one fails a lookup.
# Only the buttons acting on one image take an image number, 2 up to the most images a generation has
# (the conditional group `(?(1)…)` applies where the first alternative, those buttons, matched).
_ONE_IMAGE = "|".join(action for action in _ACTIONS if action in IMAGE_ACTIONS)
_WHOLE = "|".join(action for action in _ACTIONS if action not in IMAGE_ACTIONS)
_WHICH = rf"(?(1)(?:\.([2-{COUNT.high}]))?)"
# The button under a /describe answer: it acts on the words the answer shows, not on a generation.
# Under several, one each: ``ib:words`` the first (as under one, and before there were several), ``ib:words:2``…
WORDS_ID = "ib:words"
WORDS_LOOK = ("🎨", "Imagine these words")
WORDS_ID_PATTERN = re.compile(rf"^{WORDS_ID}(?::([2-9]))?$")


def words_id(number: int) -> str:
    """Return the id of the button that imagines a /describe answer's `number`-th words (1 the first)."""
    return WORDS_ID if number == 1 else f"{WORDS_ID}:{number}"


def words_number(custom_id: str) -> int | None:
    """Return which words a /describe answer's button imagines (1 the first), or None for another id."""
    match = WORDS_ID_PATTERN.fullmatch(custom_id)
    return None if match is None else int(match[1] or 1)


ACTION_ID_PATTERN = re.compile(rf"^ib:(?:({_ONE_IMAGE})|({_WHOLE})):([1-9][0-9]{{0,17}}){_WHICH}$")
_MAX_ID_LENGTH = 100


def format_ref(generation_id: int) -> str:
    """Return how a generation id is shown to users: ``#12``."""
    return f"#{generation_id}"


@dataclass(frozen=True, slots=True)
class RefArgs:
    """The arguments of ``reroll [#id]`` or ``refine [#id] [percent]``."""

    generation_id: int | None = None
    percent: int | None = None


def parse_ref_args(text: str, *, allow_percent: bool) -> RefArgs:
    """Parse ``[#id] [percent]`` (either order, both optional).

    Args:
        text: what follows the command word.
        allow_percent: whether a bare number (a refiner percent) is accepted.
    """
    generation_id: int | None = None
    percent: int | None = None
    for word in text.split():
        if re.fullmatch(r"#[0-9]+", word) and generation_id is None:
            # A row id has at most 18 digits here (see ACTION_ID_PATTERN); a longer one names no generation.
            generation_id = int(word[1:]) if len(word) <= 19 else 0
            if generation_id < 1:
                raise InvalidOption(f"'{shown(word)}'", "is not a generation id")
        elif allow_percent and re.fullmatch(r"[0-9]+%?", word) and percent is None:
            percent = int(word.rstrip("%")) if len(word) <= 4 else 0
            if percent not in REFINER_PERCENT:
                raise InvalidOption("refine", refiner_percent_reason(word.rstrip("%")), typed=True)
        else:
            low, high = REFINER_PERCENT.low, REFINER_PERCENT.high
            expected = f"'#id' and a percent from {low} to {high}" if allow_percent else "'#id'"
            hint = " (ids start with #)" if word.isascii() and word.isdigit() and not allow_percent else ""
            raise InvalidOption("Argument", f"'{shown(word)}' is not understood; expected {expected}{hint}")
    return RefArgs(generation_id, percent)


_IMAGE_REF = re.compile(r"#([1-9][0-9]{0,17})(?:\.([1-9][0-9]?))?")


def format_image_ref(generation_id: int, index: int) -> str:
    """Return how users name one image of a generation: ``#12`` for the first, ``#12.2`` for the second."""
    return format_ref(generation_id) + (f".{index + 1}" if index else "")


def parse_image_ref(text: str) -> tuple[int, int] | None:
    """Return (generation id, image index) of ``#12`` (its first image) or ``#12.2`` (its second), else None."""
    match = _IMAGE_REF.fullmatch(text.strip())
    if match is None:
        return None
    return int(match[1]), int(match[2] or 1) - 1


def encode_action(action: ButtonAction, generation_id: int, index: int = 0) -> str:
    """Return the component id of a button acting on a generation (on its image `index`, 0 the first)."""
    custom_id = f"ib:{action}:{generation_id}" + (f".{index + 1}" if index else "")
    if decode_action(custom_id) != (action, generation_id, index) or len(custom_id) > _MAX_ID_LENGTH:
        raise ValueError(f"cannot encode {action} of image {index + 1} of generation {generation_id}")
    return custom_id


def decode_action(custom_id: str) -> tuple[ButtonAction, int, int] | None:
    """Return (action, generation id, image index) of a component id, or None if it is not ours."""
    match = ACTION_ID_PATTERN.fullmatch(custom_id)  # `$` alone would take a trailing newline
    if match is None:
        return None
    return _ACTIONS[match[1] or match[2]], int(match[3]), int(match[4] or 1) - 1

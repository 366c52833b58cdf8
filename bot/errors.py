"""Errors whose text is shown to users as it is.

Every error a user may see derives from `BotError`; its message is one plain
sentence built from structured fields. Adapters show `str(error)` for these and
a generic reply (plus a log line) for anything else.

    BotError
    ├── InvalidOption       an option's value is out of range, unknown or malformed
    ├── NotFound            no such generation (or not yours to see)
    ├── NotAllowed          the generation belongs to someone else
    ├── QueueFull           the queue is at its cap; try again later
    ├── RateLimited         the user has too many jobs queued or running
    ├── BackendUnavailable  the image backend failed or cannot be reached
    ├── JobCancelled        the job was cancelled before it finished
    ├── ContentBlocked      a prompt or image was refused by policy
    ├── NotEnabledHere      the server's policy does not let the bot answer in this channel
    └── GalleryOff          the operator has not turned the web gallery on
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_MESSAGE = 300  # every chat shows this much in one line (Discord allows 2,000, a Slack section 3,000)

__all__ = [
    "BackendUnavailable",
    "BotError",
    "ContentBlocked",
    "GalleryOff",
    "InvalidOption",
    "JobCancelled",
    "NotAllowed",
    "NotEnabledHere",
    "NotFound",
    "QueueFull",
    "QuotaReached",
    "RateLimited",
    "shown",
]


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute" + ("s" if minutes != 1 else "")


def shown(value: object, limit: int = 40) -> str:
    """Return a user's value as a message may echo it: one line, printable, at most `limit` characters.

    Control characters (a terminal's colour codes, say) become U+FFFD, so no
    chat or terminal acts on them.
    """
    text = " ".join("".join(c if c.isprintable() or c.isspace() else "\ufffd" for c in str(value)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class BotError(Exception):
    """Base of every error whose message is meant for the user.

    The message is kept to one printable line of at most `MAX_MESSAGE` characters,
    whatever a subclass echoes, so a chat never refuses to show it.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(shown(message, MAX_MESSAGE))


class InvalidOption(BotError):
    """An option is out of range, unknown or malformed.

    The message starts with the option. One the user typed (``--cfg`` in text, ``cfg``
    in Discord's options, ``max_steps`` in an admin command) is shown as typed, so
    they recognise their own words; a name the bot chose starts the sentence capitalised.

    Args:
        option: the option's user-facing name (`steps`, `lora`, `prompt`…), or as the user typed it.
        reason: what is wrong, phrased to follow the option name
            (``"must be from 1 to 100, not 500"``).
        suggestions: close matches to offer as "did you mean …".
        typed: `option` is the user's own word, shown as it is.
    """

    def __init__(self, option: str, reason: str, suggestions: Sequence[str] = (), *, typed: bool = False) -> None:
        self.option = option
        self.reason = reason
        self.suggestions = tuple(suggestions)
        message = f"{option} {reason}".strip()
        if self.suggestions:
            message += "; did you mean " + " or ".join(f"'{s}'" for s in self.suggestions) + "?"
        else:
            message += "."
        super().__init__(message if typed else message[0].upper() + message[1:])


class NotFound(BotError):
    """No generation with that id exists (or the user cannot see it)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"There is no {what}.")


class NotAllowed(BotError):
    """The user may not act on a generation that belongs to someone else (or change what only admins may)."""

    def __init__(self, action: str, *, only: str = "the author of this image", what: str = "it") -> None:
        self.action = action
        super().__init__(f"Only {only} can {action} {what}.")


class QueueFull(BotError):
    """The queue is at its global cap."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"The queue is full; try again in {_minutes(retry_after)}.")


class QuotaReached(BotError):
    """A server or workspace, or one member in it, has not the images left today that a request asks for.

    Args:
        limit: the daily quota.
        retry_after: seconds until it resets.
        where: "server" or "workspace".
        personal: the member's own quota rather than the server's.
        left, asked: the images left today and those asked for, when some are left.
    """

    def __init__(
        self,
        limit: int,
        retry_after: float,
        where: str = "server",
        *,
        personal: bool = False,
        left: int = 0,
        asked: int = 0,
    ) -> None:
        self.limit = limit
        self.retry_after = retry_after
        hours, minutes = divmod(max(1, round(retry_after / 60)), 60)
        wait = f"{hours} h {minutes} min" if hours else f"{minutes} min"
        images = f"{limit} image{'s' if limit > 1 else ''} for today"
        if left > 0:  # some are left, fewer than asked: "made its 5" would not be true
            if personal:
                said = f"You have {left} of your {images} left in this {where}, and this asks for {asked}"
            else:
                said = f"This {where} has {left} of its {images} left, and this asks for {asked}"
        else:
            said = f"You have made your {images} in this {where}" if personal else f"This {where} has made its {images}"
        super().__init__(f"{said}; the quota resets in {wait} (UTC midnight).")


class RateLimited(BotError):
    """The user has reached their limit of queued or running jobs."""

    def __init__(self, limit: int, retry_after: float | None = None, *, asked: int = 1, waiting: int = 0) -> None:
        self.limit = limit
        self.retry_after = retry_after
        text = f"You already have {limit} image job" + ("s" if limit != 1 else "") + " waiting"
        if asked > 1:  # several prompts at once ({…} choices), more than the room left
            text = (
                f"Those {asked} prompts would make {waiting + asked} image jobs of yours waiting; the most is {limit}"
            )
        if retry_after is not None:
            text += f"; try again in {_minutes(retry_after)}"
        super().__init__(text + ".")


class BackendUnavailable(BotError):
    """The image backend failed or cannot be reached.

    Args:
        backend: the backend's name as users read it.
        reason: what went wrong, phrased to follow a colon.
        cost: what the attempt was charged anyway (a remote API that took the job), if known.
        doing: what it was asked, to follow "could not".
    """

    def __init__(self, backend: str, reason: str, *, cost: float | None = None, doing: str = "make the image") -> None:
        self.backend = backend
        self.reason = reason
        self.cost = cost
        super().__init__(f"The {backend} backend could not {doing}: {reason}.")


class JobCancelled(BotError):
    """The job was cancelled before it finished."""

    def __init__(self) -> None:
        super().__init__("The generation was cancelled.")


class ContentBlocked(BotError):
    """A prompt or an image was refused by the server's policy."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        super().__init__(f"This request is not allowed here ({rule}).")


class NotEnabledHere(BotError):
    """The server's policy lists the channels where the bot answers, and this is not one of them."""

    def __init__(self, managers: str = "server managers") -> None:
        self.managers = managers
        super().__init__(f"Image generation is not enabled in this channel; {managers} choose where it is.")


class GalleryOff(BotError):
    """A user asked for a gallery link, and this bot serves no gallery."""

    def __init__(self) -> None:
        super().__init__("The web gallery is not turned on for this bot; its operator can set IMAGEBOT_GALLERY_PORT.")

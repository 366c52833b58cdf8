"""A server's own rules for its members (a Discord guild's, a Slack workspace's); what any request may be: `bot.rules`.

Pure checks, no I/O: `bot.admin` reads a server's policy and runs them.

Banned words are matched on normalised text, so ``Nüde``, ``NUDE`` and ``n00d3``
all match ``nude``: case folded, accents stripped, the digits and signs people
use for letters mapped back (0→o, 1→i, 3→e, 4→a, 5→s, 7→t, @→a, $→s), and
everything that is not a letter or digit turned into one space. A rule that
starts with ``re:`` is a regular expression over that normalised text. A
refusal names the rule by its number, never the word list.

Adult content is kept to age-restricted channels (Discord's flag on the channel, or
a channel the policy lists, as Slack has no such flag): outside them a prompt with
one of a few built-in explicit terms is refused, and an image the backend's safety
check flagged is never shown plainly (`Policy.display`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.catalog import Catalog, Kind
from bot.errors import ContentBlocked, InvalidOption, NotEnabledHere, shown
from bot.request import COUNT, SIDE, STEPS, GenerationRequest, parse_size

__all__ = [
    "ADMIN_WORDS",
    "FLAGGED",
    "Display",
    "Flagged",
    "Policy",
    "normalise",
    "parse_admin",
    "rule_changes",
]

Flagged = Literal["spoiler", "withhold", "allow"]
FLAGGED: tuple[Flagged, ...] = ("spoiler", "withhold", "allow")
Display = Literal["show", "spoiler", "withhold"]

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_NOT_WORD = re.compile(r"[^0-9a-z]+")
_MAX_RULES = 200
_MAX_CHANNELS = 500
# Refused outside age-restricted channels whatever the server's own rules say; whole words of
# the normalised prompt, so "sexton" or "Essex" pass.
_EXPLICIT = (
    "nsfw", "nude", "nudes", "nudity", "naked", "porn", "porno", "pornographic", "hentai", "xxx",
    "sex", "sexual", "topless", "nipple", "nipples", "genitals", "penis", "vagina", "erotic", "lewd",
)  # fmt: skip
_EXPLICIT_PATTERN = re.compile("|".join(re.escape(f" {term} ") for term in _EXPLICIT))
# A policy field → the admin command word that sets it, which an error names.
_TYPED = {"banned": "ban", "max_pixels": "max_size", "user_daily_quota": "member_quota", "showcase_since": "showcase"}
# A number an admin types: str.isdigit() takes "²", which int() refuses, and int() refuses 5,000 digits.
_NUMBER = re.compile(r"[0-9]{1,9}")
_CHANNEL = re.compile(r"<#(\w+)(?:\|[^>]*)?>|#?(\w+)")


def normalise(text: str) -> str:
    """Return text as banned words are matched: folded, unaccented, de-leeted, single-spaced."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " " + _NOT_WORD.sub(" ", plain.translate(_LEET)).strip() + " "


@lru_cache(maxsize=1024)
def _pattern(rule: str) -> re.Pattern[str]:
    if rule.startswith("re:"):
        return re.compile(rule[3:])
    # A word or phrase matches whole words only: "ass" must not ban "class".
    return re.compile(re.escape(normalise(rule)))


class Policy(BaseModel):
    """What a server allows. Every field is optional; an empty policy allows everything."""

    model_config = ConfigDict(extra="forbid")

    open_reroll: bool = False
    banned: tuple[str, ...] = Field(default=(), max_length=_MAX_RULES)
    models: tuple[str, ...] = ()  # allowlist; empty: every catalog model
    blocked_models: tuple[str, ...] = ()  # denylist, beside the allowlist
    loras: tuple[str, ...] = ()  # allowlist; empty: every catalog LoRA not blocked
    blocked_loras: tuple[str, ...] = ()
    max_steps: int | None = Field(default=None, ge=STEPS.low, le=STEPS.high)
    max_count: int | None = Field(default=None, ge=COUNT.low, le=COUNT.high)
    max_pixels: int | None = Field(default=None, ge=SIDE.low**2, le=SIDE.high**2)  # width × height
    user_daily_quota: int | None = Field(default=None, ge=1)
    channels: tuple[str, ...] = Field(default=(), max_length=_MAX_CHANNELS)  # where the bot answers; empty: all
    adult_channels: tuple[str, ...] = Field(default=(), max_length=_MAX_CHANNELS)  # age-restricted besides the flag
    flagged: Flagged = "spoiler"  # a flagged image in an age-restricted channel; elsewhere never shown plainly
    # When the showcase was turned on, in milliseconds since the epoch (None: off). Its link carries
    # this value, so turning the showcase off and on again makes a new link and kills the old one.
    showcase_since: int | None = Field(default=None, ge=0)
    # The model a member's request runs on when neither it nor the member's settings name one.
    default_model: str | None = None

    @model_validator(mode="after")
    def _default_allowed(self) -> Self:
        model = self.default_model
        if model is not None and ((self.models and model not in self.models) or model in self.blocked_models):
            raise ValueError(
                f"the default model '{model}' would not be allowed (set default_model to another, or none)"
            )
        return self

    @field_validator("banned")
    @classmethod
    def _valid_rules(cls, rules: tuple[str, ...]) -> tuple[str, ...]:
        for rule in rules:
            try:
                _pattern(rule)
            except re.error as error:
                raise ValueError(f"'{shown(rule)}' is not a valid regular expression ({error})") from error
            if not normalise(rule.removeprefix("re:")).strip():
                raise ValueError(f"'{shown(rule)}' has no letters or digits to match")
        return rules

    @classmethod
    def load(cls, stored: Mapping[str, Any]) -> Policy:
        """Return the policy from its stored JSON form (unknown keys from older versions are ignored)."""
        return cls.model_validate({key: value for key, value in stored.items() if key in cls.model_fields})

    def changed(self, changes: Mapping[str, Any]) -> Policy:
        """Return the policy with changes applied (None: back to the default), refusing invalid values."""
        values = self.model_dump()
        for key, value in changes.items():
            if key not in type(self).model_fields:
                raise InvalidOption(
                    "Server setting", f"'{shown(key)}' does not exist (settings: {', '.join(type(self).model_fields)})"
                )
            values[key] = type(self).model_fields[key].default if value is None else value
        try:
            return type(self).model_validate(values)
        except ValidationError as error:
            first = error.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            message = first["msg"].removeprefix("Value error, ")
            reason = "is invalid: " + message[:1].lower() + message[1:]
            raise InvalidOption(_TYPED.get(field, field) or "Server setting", reason, typed=bool(field)) from None

    def summary(self) -> str:
        """Return the policy as one line for its admins (the banned rules by number, not in full)."""
        parts = [f"rerolls: {'everyone' if self.open_reroll else 'the author only'}"]
        if self.banned:
            parts.append(f"{len(self.banned)} banned word rule" + ("s" if len(self.banned) != 1 else ""))
        if self.default_model is not None:
            parts.append(f"default model: {self.default_model}")
        if self.models:
            parts.append("models: " + ", ".join(self.models))
        if self.blocked_models:
            parts.append("blocked models: " + ", ".join(self.blocked_models))
        if self.loras:
            parts.append("LoRAs: " + ", ".join(self.loras))
        if self.blocked_loras:
            parts.append("blocked LoRAs: " + ", ".join(self.blocked_loras))
        if self.max_pixels is not None:
            parts.append(f"at most {self.max_pixels} pixels an image")
        if self.max_steps is not None:
            parts.append(f"at most {self.max_steps} steps")
        if self.max_count is not None:
            parts.append(f"at most {self.max_count} images a request")
        if self.user_daily_quota is not None:
            quota = self.user_daily_quota
            parts.append(f"{quota} image{'s' if quota > 1 else ''} a member a day")
        if self.channels:
            parts.append(f"answers in {len(self.channels)} channel" + ("s" if len(self.channels) != 1 else ""))
        if self.adult_channels:
            parts.append(f"{len(self.adult_channels)} age-restricted channel" + "s" * (len(self.adult_channels) != 1))
        if self.flagged != "spoiler":
            parts.append(f"flagged images: {self.flagged}")
        if self.showcase_since is not None:
            parts.append("showcase: on")
        return "; ".join(parts) + "."

    def is_age_restricted(self, channel: str | None, flagged_by_platform: bool = False) -> bool:
        """Tell whether a channel is age-restricted: by the platform's own flag or by this policy's list."""
        return flagged_by_platform or (channel is not None and channel in self.adult_channels)

    def check_channel(self, channel: str | None, managers: str = "server managers") -> None:
        """Raise `NotEnabledHere` when the policy lists channels and this is not one (None: a direct message)."""
        if self.channels and channel is not None and channel not in self.channels:
            raise NotEnabledHere(managers)

    def display(self, nsfw: bool | None, age_restricted: bool) -> Display:
        """Return how an image with this safety verdict is shown in a channel.

        Outside age-restricted channels a flagged image is spoilered or withheld, never shown plainly.
        """
        if not nsfw:
            return "show"
        if self.flagged == "withhold":
            return "withhold"
        return "show" if self.flagged == "allow" and age_restricted else "spoiler"

    def check(
        self, request: GenerationRequest, *, age_restricted: bool = False, flagged_inputs: Sequence[str] = ()
    ) -> None:
        """Raise when the request breaks a rule: `ContentBlocked` for words, `InvalidOption` for limits.

        `flagged_inputs` names the input images (``#12``, ``#12.2``) whose stored safety verdict
        is flagged. A server that withholds flagged images refuses them as inputs too: what it
        never shows, it does not let members redraw, vary or upscale either. (Under ``spoiler``
        and ``allow`` the result is judged on its own and shown as the policy says.)
        """
        if flagged_inputs and self.flagged == "withhold":
            raise ContentBlocked(
                f"{flagged_inputs[0]} was flagged by the safety check, and this server withholds flagged images"
            )
        text = normalise(f"{request.prompt} {request.negative_prompt or ''}")
        for number, rule in enumerate(self.banned, start=1):
            if _pattern(rule).search(text):
                raise ContentBlocked(f"banned word rule {number}")
        # Only the prompt: "--no nudity" in the negative prompt asks for less of it, not more.
        if not age_restricted and _EXPLICIT_PATTERN.search(normalise(request.prompt)):
            raise ContentBlocked("adult content is only allowed in age-restricted channels")
        if self.models and request.model not in self.models:
            raise InvalidOption("model", f"'{request.model}' is not allowed here (allowed: {', '.join(self.models)})")
        if request.model in self.blocked_models:
            raise InvalidOption("model", f"'{request.model}' is not allowed here")
        for lora in request.loras:
            if lora.name in self.blocked_loras or (self.loras and lora.name not in self.loras):
                raise InvalidOption("lora", f"'{lora.name}' is not allowed here")
        if self.max_pixels is not None and request.width * request.height > self.max_pixels:
            raise InvalidOption(
                "size",
                f"is at most {self.max_pixels} pixels here (e.g. 1024x1024 is 1048576), "
                f"not {request.width}x{request.height}",
            )
        if self.max_steps is not None and request.steps > self.max_steps:
            raise InvalidOption("steps", f"are at most {self.max_steps} here, not {request.steps}")
        if self.max_count is not None and request.count > self.max_count:
            raise InvalidOption("count", f"is at most {self.max_count} here, not {request.count}")


def rule_changes(
    policy: Policy,
    catalog: Catalog,
    *,
    open_reroll: bool | None = None,
    ban: str | None = None,
    unban: str | None = None,
    models: str | None = None,
    loras: str | None = None,
    blocked_models: str | None = None,
    blocked_loras: str | None = None,
    max_steps: int | None = None,
    max_count: int | None = None,
    max_size: str | None = None,
    member_quota: int | None = None,
    channels: str | None = None,
    adult_channels: str | None = None,
    flagged: str | None = None,
    showcase: bool | None = None,
    default_model: str | None = None,
    here: str | None = None,
) -> dict[str, object]:
    """Return the policy changes an admin asked for, as every chat's admin command takes them.

    `unban` is a rule's number or text; `models` and `loras` (allowlists) comma lists (``all``: every one),
    `blocked_models` and `blocked_loras` too (``none``: none blocked);
    `channels` and `adult_channels` channel ids or mentions (``here``: the channel `here`, ``all``/``none``:
    the empty list); `max_size` ``WxH``; 0 lifts a limit. `showcase` turns the server's showcase on or off
    (`bot.admin.ServerAdmin.update_policy` turns True into the time it was turned on). `default_model` is
    the model members' requests run on when they name none (``none``: the bot's own default).
    """
    changes: dict[str, object] = {}
    if open_reroll is not None:
        changes["open_reroll"] = open_reroll
    if showcase is not None:
        changes["showcase_since"] = showcase
    if ban:
        changes["banned"] = (*policy.banned, ban.strip())
    if unban:
        rules = list(policy.banned)
        index = int(unban) - 1 if _NUMBER.fullmatch(unban) else rules.index(unban) if unban in rules else -1
        if not 0 <= index < len(rules):
            raise InvalidOption("unban", f"'{shown(unban)}' is not a banned rule (there are {len(rules)})", typed=True)
        changes["banned"] = tuple(rule for i, rule in enumerate(rules) if i != index)
    lists: tuple[tuple[str, Kind, str, str | None], ...] = (
        ("models", "model", "all", models),
        ("loras", "lora", "all", loras),
        ("blocked_models", "model", "none", blocked_models),
        ("blocked_loras", "lora", "none", blocked_loras),
    )
    for key, kind, clears, given in lists:
        if given is not None:
            names = [name.strip() for name in given.split(",") if name.strip()]
            # An unknown name gets "did you mean"; the stored name is the catalog's own.
            changes[key] = () if names == [clears] else tuple(catalog.get(kind, name, key).name for name in names)
    for key, given in (("channels", channels), ("adult_channels", adult_channels)):
        if given is not None:
            changes[key] = _channel_ids(given, here, key)
    if default_model is not None:
        name = default_model.strip()
        changes["default_model"] = (
            None if name.lower() in ("none", "") else catalog.get("model", name, "default model").name
        )
    if flagged is not None:
        if flagged.strip().lower() not in FLAGGED:
            raise InvalidOption("flagged", f"must be spoiler, withhold or allow, not '{shown(flagged)}'", typed=True)
        changes["flagged"] = flagged.strip().lower()
    if max_size is not None:
        changes["max_pixels"] = None if max_size.strip() in ("0", "") else _max_pixels(max_size)
    for key, value in (("max_steps", max_steps), ("max_count", max_count), ("user_daily_quota", member_quota)):
        if value is not None:
            changes[key] = value or None
    return changes


def _max_pixels(text: str) -> int:
    """Return the pixels of a ``WxH`` largest size (any sides a request may have, not only multiples of 64)."""
    width, height = parse_size(text, "max_size", "such as 1024x1024 (0: no limit)", typed=True)
    if not (SIDE.low <= width <= SIDE.high and SIDE.low <= height <= SIDE.high):
        raise InvalidOption(
            "max_size", f"must have sides from {SIDE.low} to {SIDE.high}, not {width}x{height}", typed=True
        )
    return width * height


def _channel_ids(text: str, here: str | None, what: str) -> tuple[str, ...]:
    """Return the channel ids of a comma or space list of ids, ``<#id>`` mentions and ``here``."""
    words = [word for word in re.split(r"[\s,]+", text.strip()) if word]
    if [word.lower() for word in words] in (["all"], ["none"]):
        return ()
    ids: list[str] = []
    for word in words:
        if word.lower() == "here":
            if here is None:
                raise InvalidOption(what, "cannot say 'here' outside a channel", typed=True)
            ids.append(here)
            continue
        match = _CHANNEL.fullmatch(word)
        if match is None:
            raise InvalidOption(what, f"takes channel ids or #mentions, not '{shown(word)}'", typed=True)
        ids.append(match[1] or match[2])
    if not ids:
        raise InvalidOption(
            what, "needs channels ('here', ids or #mentions; 'all' or 'none' clears the list)", typed=True
        )
    return tuple(dict.fromkeys(ids))


ADMIN_WORDS = (
    "ban",
    "unban",
    "models",
    "loras",
    "blocked_models",
    "blocked_loras",
    "max_steps",
    "max_count",
    "max_size",
    "member_quota",
    "open_reroll",
    "channels",
    "adult_channels",
    "flagged",
    "showcase",
    "default_model",
)


def parse_admin(text: str) -> dict[str, Any]:
    """Parse a text admin command (``ban gore``, ``max_steps 30``, ``open_reroll on``) into `rule_changes` options."""
    word, _, rest = text.strip().partition(" ")
    word, rest = word.lower(), rest.strip()
    if word not in ADMIN_WORDS:
        raise InvalidOption("Admin command", f"'{shown(word)}' is unknown (commands: audit, {', '.join(ADMIN_WORDS)})")
    if not rest:
        raise InvalidOption(word, "needs a value", typed=True)
    if word in ("open_reroll", "showcase"):
        if rest.lower() not in ("on", "off", "true", "false", "yes", "no"):
            raise InvalidOption(word, f"must be on or off, not '{shown(rest)}'", typed=True)
        return {word: rest.lower() in ("on", "true", "yes")}
    if word in ("max_steps", "max_count", "member_quota"):
        if not _NUMBER.fullmatch(rest):
            raise InvalidOption(word, f"must be a number (0: no limit), not '{shown(rest)}'", typed=True)
        return {word: int(rest)}
    return {word: rest}

"""A user's saved defaults (``settings steps=30 private=true``): which exist, what each takes, what they fill in.

They change for their own reasons (a new default, a new range) and are read by every use
case that makes a request, so they live here and `bot.service` asks for them.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot import option_sets, options, permutations
from bot.catalog import Catalog
from bot.controls import PROBE
from bot.errors import InvalidOption, shown
from bot.jobs import Requester
from bot.ports import SettingsStore
from bot.request import parse_size

__all__ = ["SETTING_KEYS", "UserSettings"]

# What each saved default must be before the request rules check its range.
_KINDS: dict[str, tuple[type, str]] = {
    "model": (str, "a model name"),
    "steps": (int, "a whole number"),
    "refiner_percent": (int, "a whole number"),
    "width": (int, "a whole number"),
    "height": (int, "a whole number"),
    "scheduler": (str, "a scheduler name"),
    "cfg": (float, "a number"),
    "private": (bool, "true or false"),
    "batching": (bool, "true or false"),
    "remix": (bool, "true or false"),
    "vary_subtle": (float, "a strength over 0, at most 1"),
    "vary_strong": (float, "a strength over 0, at most 1"),
    "vary_region": (float, "a strength over 0, at most 1"),
    "upscale_strength": (float, "a strength over 0, at most 1"),
}
SETTING_KEYS = tuple(_KINDS)
# The saved document's key for the user's option sets (`bot.option_sets`), kept apart from the defaults.
_SETS = "option_sets"
# What a user may type besides the saved keys: /imagine's own flag names, and size for width and height.
_TYPED_AS = {"refiner": "refiner_percent", "sampler": "scheduler"}
_NAMED = ", ".join(key for key in SETTING_KEYS if key != "height").replace("width", "size (or width and height)")
# Image-to-image strengths: more than 0 (a run of no step) and at most 1.
_STRENGTHS = frozenset({"vary_subtle", "vary_strong", "vary_region", "upscale_strength"})
# The request option (as a parser error names it) → the saved default that feeds it.
_SETTING_OF_OPTION = {
    option: _TYPED_AS.get(option, option) for option in ("model", "steps", "refiner", "scheduler", "cfg")
}


class UserSettings:
    """Reads, checks and saves users' defaults.

    Args:
        store: where they are kept.
        catalog, limits: what a request may name and ask for; a default is checked as a request would be.
        default_model: the model used when neither the request nor the user's settings name one.
    """

    def __init__(self, store: SettingsStore, catalog: Catalog, limits: options.Limits, default_model: str) -> None:
        self._store = store
        self._catalog = catalog
        self._limits = limits
        self.default_model = default_model

    async def get(self, who: Requester) -> dict[str, object]:
        """Return the user's saved defaults."""
        return (await self.read(who))[0]

    async def option_sets(self, who: Requester) -> dict[str, str]:
        """Return the user's option sets: name → the flags it stands for."""
        return (await self.read(who))[1]

    async def read(self, who: Requester) -> tuple[dict[str, object], dict[str, str]]:
        """Return the user's saved defaults and option sets, from one read of the store."""
        saved = await self._store.get(*who.key)
        sets = saved.pop(_SETS, None)  # the store's answer is a copy of its own
        return saved, {str(name): str(flags) for name, flags in sets.items()} if isinstance(sets, dict) else {}

    async def set_option(self, who: Requester, name: str, flags: str | None) -> dict[str, str]:
        """Save the option set `name` as `flags` (checked as a request would read them), or remove it (None).

        Returns the user's sets.
        """
        name = option_sets.checked_name(name)
        sets = await self.option_sets(who)
        if flags is None:
            if name not in sets:
                yours = ", ".join(f"--{known}" for known in sorted(sets)) or "none"
                raise InvalidOption("Option set", f"--{name} is not one of yours (yours: {yours})")
            del sets[name]
        else:
            flags = option_sets.checked_flags(flags)
            if name not in sets and len(sets) >= option_sets.MOST:
                reason = f"are at most {option_sets.MOST}; prefer NAME none removes one"
                raise InvalidOption("Option sets", reason)
            defaults = self.defaults(await self.get(who))
            # Each of its choices read as a request would be: a wrong value is refused now, not at every use.
            for variant in permutations.variants(f"option set check {flags}"):
                probes = [PROBE] * len(options.image_refs(variant).every_guide)  # its style references' images
                options.parse_text(
                    variant, catalog=self._catalog, defaults=defaults, limits=self._limits, guides=probes
                )
            sets[name] = flags
        await self._save(who, await self.get(who), sets)
        return sets

    async def update(self, who: Requester, changes: Mapping[str, object]) -> dict[str, object]:
        """Check and save some of the user's defaults; None removes one. Returns them all.

        ``size=WxH`` sets width and height (``size=none`` removes both); ``refiner`` and
        ``sampler``, the /imagine flags' names, are ``refiner_percent`` and ``scheduler``.
        """
        unknown = sorted(set(changes) - set(SETTING_KEYS) - {"size", *_TYPED_AS})
        if unknown:
            raise InvalidOption("Setting", f"'{shown(unknown[0])}' does not exist (settings: {_NAMED})")
        changes = _saved_keys(changes)
        for key, value in changes.items():
            if value is not None:
                _check(key, value)
        merged = {**await self.get(who), **changes}
        current = {key: value for key, value in merged.items() if value is not None}
        if ("width" in current) != ("height" in current):
            raise InvalidOption("Width and height", "are saved together, like width=1024 height=768")
        # Parsing a probe prompt with the new defaults checks them with the same rules as a request.
        try:
            options.parse_text(
                "settings check", catalog=self._catalog, defaults=self.defaults(current), limits=self._limits
            )
        except InvalidOption as error:
            # The user typed steps=500 or refiner_percent=500: name the setting as typed, not the option it feeds.
            key = _SETTING_OF_OPTION.get(error.option, "")
            if key in changes:
                raise InvalidOption(key, error.reason, error.suggestions, typed=True) from None
            raise
        await self._save(who, current, await self.option_sets(who))
        return current

    async def clear(self, who: Requester) -> None:
        """Forget all the user's defaults and option sets."""
        await self._store.put(who.platform, who.user_id, {})

    async def _save(self, who: Requester, defaults: Mapping[str, object], sets: Mapping[str, str]) -> None:
        await self._store.put(who.platform, who.user_id, {**defaults, **({_SETS: dict(sets)} if sets else {})})

    async def wants_private(self, who: Requester) -> bool:
        """Tell whether the user's saved settings ask for private delivery."""
        return private(await self.get(who))

    def defaults(self, saved: Mapping[str, object], server_model: str | None = None) -> options.Defaults:
        """Return what saved settings fill in of a request that leaves it out.

        The model: the user's saved one, else `server_model` (the server's rule), else the bot's default.
        """

        def number(key: str) -> int | None:
            value = saved.get(key)
            return int(value) if isinstance(value, int | float) else None

        cfg = saved.get("cfg")
        scheduler = saved.get("scheduler")
        return options.Defaults(
            model=str(saved.get("model") or server_model or self.default_model),
            steps=number("steps"),
            refiner_percent=number("refiner_percent"),
            width=number("width"),
            height=number("height"),
            scheduler=str(scheduler) if scheduler else None,
            cfg=float(cfg) if isinstance(cfg, int | float) else None,
        )


def private(saved: Mapping[str, object]) -> bool:
    """Tell whether saved settings ask for private delivery."""
    return bool(saved.get("private", False))


def remix(saved: Mapping[str, object]) -> bool:
    """Tell whether saved settings ask for remix mode: Vary, Zoom Out, Make Square and Pan offer the prompt first."""
    return saved.get("remix") is True


def batching(saved: Mapping[str, object]) -> bool:
    """Tell whether saved settings let a job share a pipeline call (batched images can differ in the last bit)."""
    return saved.get("batching", True) is not False


def _saved_keys(changes: Mapping[str, object]) -> dict[str, object]:
    """Return typed changes under the keys they are saved as."""
    saved: dict[str, object] = {}
    for key, value in changes.items():
        if key == "size":
            sides = None if value is None else parse_size(str(value), "size", "like size=1024x768", typed=True)
            saved["width"], saved["height"] = sides or (None, None)
        else:
            saved[_TYPED_AS.get(key, key)] = value
    return saved


def _check(key: str, value: object) -> None:
    """Refuse a default of the wrong kind (``steps=abc``, ``private=maybe``) before anything is stored."""
    kind, words = _KINDS[key]
    accepted = int | float if kind is float else kind  # a whole number is a number too
    fits = isinstance(value, accepted) and (kind is bool or not isinstance(value, bool))
    if fits and key in _STRENGTHS:
        fits = 0 < float(value) <= 1  # type: ignore[arg-type]  # a number: checked just above
    if not fits:
        raise InvalidOption(key, f"must be {words}, not '{shown(value)}'", typed=True)

"""A user's option sets (Midjourney's custom options): ``prefer mine --ar 2:3``, then ``/imagine a fox --mine``.

A set is a name and the flags it stands for. Typed in a prompt as ``--NAME``, it is replaced by
its flags before anything else reads the prompt (its ``{…}`` choices included), so what runs
and is stored is the flags themselves: a reroll or an edit of the image needs no set, and a set
changed or removed later changes no image made before. What the prompt gives itself wins: a
set's ``--ar`` is left out where the prompt has an ``--ar`` (or Discord's typed ``ar``) of its
own; two sets giving the same option are one sentence. A set named ``suffix`` (Midjourney's
``/prefer suffix``) comes with every prompt unnamed, its flags the weakest: left out, silently,
where the prompt or another set gives the option. A set holds flags only, no words and no
images but style references that are previous images (``prefer ink --sref #12 --sw 80``: a look
kept, as Midjourney's users keep sref codes), and never another set; ``/imagine``'s own flags
keep their names.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping

from bot import options
from bot.actions import parse_image_ref
from bot.errors import InvalidOption, shown

__all__ = ["MOST", "NAME_MOST", "SUFFIX", "TEXT_MOST", "checked_flags", "checked_name", "expanded", "sets_text"]

# Midjourney keeps about as many; a list of them still fits one chat message.
MOST = 20
NAME_MOST = 24
TEXT_MOST = 400
_NAME = re.compile(r"[a-z][a-z0-9-]*")
# The set every prompt of its user takes without naming it (Midjourney's /prefer suffix), after the prompt's own.
SUFFIX = "suffix"


def checked_name(typed: str) -> str:
    """Return a set's name as saved (``--My_Set`` → ``my-set``), or refuse one that cannot be a flag of its own."""
    name = typed.strip().lstrip("-—").lower().replace("_", "-")
    if not _NAME.fullmatch(name) or len(name) > NAME_MOST:
        reason = f"must be a letter then letters, digits or '-', at most {NAME_MOST}, not '{shown(typed)}'"
        raise InvalidOption("Option set name", reason)
    if options.flag_runs(f"--{name}")[0].option is not None:
        raise InvalidOption("Option set name", f"'{name}' is /imagine's own --{name}; choose another")
    return name


def checked_flags(text: str) -> str:
    """Return a set's flags as saved, or refuse text that is not flags alone (the parser checks their values)."""
    flags = text.strip()
    if any(unicodedata.category(char) == "Cc" for char in flags):
        raise InvalidOption("Option set", "must not hold control characters")
    if len(flags) > TEXT_MOST:
        raise InvalidOption("Option set", f"is {len(flags)} characters; the most is {TEXT_MOST}")
    runs = options.flag_runs(flags)
    words = flags[: runs[0].start] if runs else flags
    if words.strip() or not runs:
        reason = "holds flags only, like --ar 16:9 --no blurry" + (f", not '{shown(words)}'" if words.strip() else "")
        raise InvalidOption("Option set", reason)
    named = options.image_refs(f"set {flags}")
    if named.image is not None or named.mask is not None or named.guides:
        raise InvalidOption("Option set", "cannot name images (--image, --mask, a guide); type those in the prompt")
    # A look kept as a set (Midjourney's sref codes in an option set): images of the bot's, which stay.
    for ref in named.styles:
        if parse_image_ref(ref) is None:
            reason = f"names its style references as previous images like #12, not '{shown(ref, 60)}'"
            raise InvalidOption("Option set", reason)
    return flags


def expanded(given: str | Mapping[str, object], sets: Mapping[str, str]) -> str | dict[str, object]:
    """Return chat text (or typed options) with each ``--NAME`` of the user's `sets` replaced by its flags.

    A set's flag is left out where the text or a typed option gives that option; a flag name
    that is neither an option nor a set is left for the parser to refuse.
    """
    if not sets:
        return given if isinstance(given, str) else dict(given)
    if isinstance(given, str):
        return _expanded_text(given, sets, set())
    typed = {option for key, value in given.items() if value is not None and (option := options.option_named(key))}
    prompt = given.get("prompt")
    if not isinstance(prompt, str):
        return dict(given)
    return {**given, "prompt": _expanded_text(prompt, sets, typed - {"prompt"})}


def _expanded_text(text: str, sets: Mapping[str, str], typed: set[str]) -> str:
    runs = options.flag_runs(text)
    given = typed | {run.option for run in runs if run.option is not None}
    used: dict[str, str] = {}  # option → the set that gave it
    named: set[str] = set()
    pieces: list[str] = []
    last = 0
    for run in runs:
        if run.option is not None:
            continue
        flag = shown(run.flag)
        if run.name not in sets:
            # A misspelt set ("--mnie" for --mine): said here, where the sets are known; else the parser says it.
            close = difflib.get_close_matches(run.name, list(sets), n=3, cutoff=0.6)
            if close:
                raise InvalidOption(flag, "is not an option", [f"--{name}" for name in close], typed=True)
            continue
        if run.value:
            raise InvalidOption(flag, f"is your option set and takes no value, not '{shown(run.value)}'", typed=True)
        if run.name in named:
            raise InvalidOption(flag, "is given twice", typed=True)
        named.add(run.name)
        flags = sets[run.name]
        kept = []
        for own in options.flag_runs(flags):
            if own.option is None or own.option in given:
                continue
            if own.option in used:
                reason = f"and --{used[own.option]} both give {shown(own.flag)}; name one, or type it yourself"
                raise InvalidOption(flag, reason, typed=True)
            used[own.option] = run.name
            kept.append(flags[own.start : own.end].strip())
        pieces += [text[last : run.start], " ".join(kept) + (" " if kept and run.end < len(text) else "")]
        last = run.end
    pieces.append(text[last:])
    if SUFFIX in sets and SUFFIX not in named:
        # The weakest: what the prompt or a set named in it gives leaves the suffix's flag out, without a sentence.
        flags = sets[SUFFIX]
        weakest = given | set(used)
        kept = [
            flags[r.start : r.end].strip() for r in options.flag_runs(flags) if r.option and r.option not in weakest
        ]
        pieces += [" " if kept else "", " ".join(kept)]
    return "".join(pieces)


def sets_text(sets: Mapping[str, str], make: str = "prefer NAME --flags…") -> str:
    """Return a user's option sets as chat lines, each as it is typed and what it stands for.

    `make` is how this chat's users make one.
    """
    if not sets:
        return f"You have no option sets; `{make}` makes one, typed as --NAME in a prompt."
    lines = [f"--{name}  {shown(flags, 120)}" for name, flags in sorted(sets.items())]
    return "Your option sets:\n" + "\n".join(lines)

"""README.md stays true to the code: its options table is the parser's flags; the backends table is the capabilities."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bot.options
from bot.catalog import load_catalog
from bot.errors import InvalidOption
from bot.options import OPTIONS, Defaults, Limits, parse_text

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| flag (text) | option name |"


def options_table() -> list[tuple[list[str], list[str]]]:
    """Return each row of README's options table as (the `--flags` of its first cell, the names of its second)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(HEADER))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        flag_cell, option_cell = line.split("|")[1:3]
        rows.append((re.findall(r"`(--[a-z][a-z0-9-]*)`", flag_cell), re.findall(r"`([a-z_]+)`", option_cell)))
    return rows


def readme_flags() -> dict[str, str]:
    """Return README's flags, each with the option its row names."""
    return {flag: option for flags, options in options_table() for flag in flags for option in options}


def parser_flags() -> dict[str, str]:
    """Return the parser's text flags (as typed, with ``--``), each with the option it sets."""
    return {"--" + flag: option for flag, option in bot.options._FLAGS.items()}


def test_readme_lists_exactly_the_flags_the_parser_accepts() -> None:
    """A flag in README but not the parser, or in the parser but not README, fails."""
    assert set(readme_flags()) == set(parser_flags())


def test_readme_gives_each_flag_the_option_the_parser_sets() -> None:
    """Each README row's flags set the option named in that row."""
    assert readme_flags() == parser_flags()


def test_readme_lists_exactly_the_parsers_option_names() -> None:
    """The option-name column is the parser's `OPTIONS`, each once."""
    names = [name for _, options in options_table() for name in options]
    assert sorted(names) == sorted(OPTIONS)


@pytest.mark.parametrize("flag", sorted(readme_flags()))
def test_every_readme_flag_is_recognised_by_parse_text(flag: str) -> None:
    """Typing a README flag never gets "is not an option" (a bad value may still be refused)."""
    try:
        parse_text(
            f"a red fox {flag} 1",
            catalog=load_catalog(),
            defaults=Defaults(model="tiny"),
            limits=Limits(pixel_budget=4 * 1024 * 1024),
        )
    except InvalidOption as error:
        assert error.reason != "is not an option" and not error.reason.startswith("is not an option ")


def test_the_backends_table_is_what_imagebot_backends_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/operations.md's table of what each backend can do is `imagebot backends`' rows, cell for cell."""
    from bot.config import CoreSettings
    from imagebot.cli import backends_text

    for backend in ("RUNWARE", "MODELSLAB"):
        monkeypatch.delenv(f"IMAGEBOT_{backend}_API_KEY", raising=False)
    section = (README.parent / "docs" / "operations.md").read_text(encoding="utf-8").split("## What each backend", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]

    def cells(text: str) -> list[list[str]]:
        return [re.split(r" {2,}", line.strip()) for line in text.splitlines()[1:]]  # the head names the columns

    assert cells(block) == cells(backends_text(CoreSettings(backend="local")))

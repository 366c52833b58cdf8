"""The operator's wildcard files: read by name, each broken rule named with its file and line; read again if changed."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.wildcards import MOST_LINE, WildcardFolder, load_wildcards, search
from tests.properties.sentences import FUZZ


def write(folder: Path, name: str, data: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def test_each_file_is_a_wildcard_and_each_line_a_choice(tmp_path):
    """Comments, blank lines and the spaces around a line are no choices; a BOM is no character; folders and
    capitals name a wildcard in lower case; other files are not read."""
    write(tmp_path, "color.txt", "\ufeff# colours for foxes\nred\n\n  dark {blue|green}  \n__shade__ grey\n")
    write(tmp_path, "Colors/Warm.txt", "amber\r\nochre\r\n")
    write(tmp_path, "notes.md", "not a wildcard")
    library = load_wildcards(tmp_path)
    assert library == {"color": ("red", "dark {blue|green}", "__shade__ grey"), "colors/warm": ("amber", "ochre")}
    assert load_wildcards(tmp_path / "nowhere") == {} and load_wildcards(None) == {}


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("my colors.txt", "red", "a wildcard's name is letters, digits, _ and - (folders with /), not 'my colors'"),
        ("empty.txt", "# only a comment\n\n", "has no choices (lines that are not empty or # comments)"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "is not UTF-8 text (unexpected end of data at byte 3)"),
        ("bell.txt", "red\nbl\x07ue\n", "line 2: a control character; a choice is words"),
        ("long.txt", "x" * (MOST_LINE + 1), f"line 1: {MOST_LINE + 1} characters; a choice is at most {MOST_LINE}"),
        ("big.txt", "word\n" * 300_000, "is over 1024 KiB"),
        ("many.txt", "word\n" * 10_001, "has 10001 choices; the most is 10000"),
    ],
)
def test_a_file_that_breaks_a_rule_is_named_with_what_is_wrong(tmp_path, name, data, problem):
    path = write(tmp_path, name, data)
    with pytest.raises(ValueError) as caught:
        load_wildcards(tmp_path)
    assert str(caught.value).startswith(str(path)) and str(caught.value).endswith(problem)


def test_two_files_of_one_name_in_other_capitals_are_refused(tmp_path):
    write(tmp_path, "color.txt", "red")
    write(tmp_path, "COLOR.txt", "blue")
    if len(list(tmp_path.iterdir())) == 1:  # a file system that ignores case: the two are one file
        assert load_wildcards(tmp_path) == {"color": ("blue",)}
        return
    with pytest.raises(ValueError, match=r"another file is the wildcard __color__ too \(names ignore case\)$"):
        load_wildcards(tmp_path)


def test_search_finds_names_holding_the_words_with_or_without_underscores():
    library = {"color": ("red",), "colors/warm": ("amber",), "animal": ("fox",)}
    assert [name for name, _ in search(library, "COL")] == ["color", "colors/warm"]
    assert [name for name, _ in search(library, "__animal__")] == ["animal"]
    assert [name for name, _ in search(library, "")] == ["animal", "color", "colors/warm"]
    assert search(library, "zebra") == []


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wildcards")


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_are_choices_or_one_named_refusal(folder, data):
    """Whatever an operator's file holds, it is read as choices of printable words, or refused naming the file."""
    path = write(folder, "any.txt", data)
    try:
        library = load_wildcards(folder)
    except ValueError as error:
        assert str(error).startswith(str(path))
        return
    (choices,) = library.values()
    assert choices and all(choice and choice == choice.strip() and "\n" not in choice for choice in choices)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_an_edited_file_is_read_again_at_the_next_look_and_a_broken_edit_keeps_the_last_good_files(
    tmp_path, caplog
):
    """Looked at every 2 s at most: an edit is live once that has passed; a file added or removed too. An edit that
    breaks a rule is a warning in the log, naming the file, and the files as last read stay in use until it is
    mended."""
    clock = Clock()
    write(tmp_path, "animal.txt", "fox\n")
    folder = WildcardFolder(tmp_path, every=2.0, clock=clock)
    assert await folder.current() == {"animal": ("fox",)}
    write(tmp_path, "animal.txt", "fox\nowl\n")
    write(tmp_path, "colors/warm.txt", "amber\n")
    clock.now += 1.9
    assert await folder.current() == {"animal": ("fox",)}  # not looked at again yet
    clock.now += 0.1
    assert await folder.current() == {"animal": ("fox", "owl"), "colors/warm": ("amber",)}

    write(tmp_path, "animal.txt", "fox\n\x07owl\n")
    clock.now += 2
    with caplog.at_level(logging.WARNING, logger="bot.wildcards"):
        assert await folder.current() == {"animal": ("fox", "owl"), "colors/warm": ("amber",)}
    assert "animal.txt, line 2: a control character" in caplog.text
    (tmp_path / "colors" / "warm.txt").unlink()
    write(tmp_path, "animal.txt", "hare\n")
    clock.now += 2
    assert await folder.current() == {"animal": ("hare",)}


async def test_a_folder_made_after_the_start_is_read_and_one_removed_leaves_none(tmp_path):
    clock = Clock()
    folder = WildcardFolder(tmp_path / "wildcards", every=2.0, clock=clock)
    assert await folder.current() == {}
    write(tmp_path / "wildcards", "animal.txt", "fox\n")
    clock.now += 2
    assert await folder.current() == {"animal": ("fox",)}
    shutil.rmtree(tmp_path / "wildcards")
    clock.now += 2
    assert await folder.current() == {}

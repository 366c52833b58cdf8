"""The ``imagebot`` command line as a shell user meets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagebot.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`imagebot history | head -1`: a closed pipe is no traceback and no failure."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    env |= {"IMAGEBOT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "imagebot", "history"],
            cwd=ROOT,
            env=env,
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr.decode()
    assert "BrokenPipeError" not in done.stderr.decode()
    assert done.returncode == 0


def test_run_without_chat_credentials_says_it_opened_the_console(tmp_path: Path) -> None:
    """`imagebot run </dev/null` on a fresh box says why it is the console, then ends cleanly."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    env |= {"IMAGEBOT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "imagebot", "run"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0
    assert "no chat credentials are set" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_a_malformed_setting_is_one_sentence_not_a_traceback(tmp_path: Path) -> None:
    """A bad IMAGEBOT_ value stops the command with one line naming the variable, and exit status 2."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEBOT_")}
    env |= {"IMAGEBOT_DATA_DIR": str(tmp_path / "data"), "IMAGEBOT_MAX_QUEUE": "many"}
    done = subprocess.run(
        [sys.executable, "-m", "imagebot", "history"], cwd=ROOT, env=env, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 2
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("imagebot: IMAGEBOT_MAX_QUEUE: Input should be a valid integer")
    assert line.endswith("; see deploy/.env.example for its values.")


def test_generate_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """`imagebot generate --help` says what can follow the prompt, not only that there is a prompt."""
    with pytest.raises(SystemExit) as exited:
        main(["generate", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--seed N", "--steps N", "--refiner PERCENT", "--lora NAME[:WEIGHT]", "--size WxH", "--format"):
        assert flag in out

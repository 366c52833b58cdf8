"""The ``imagebot`` command line as a shell user meets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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

"""Console command lines, as `ConsoleChat` reads them from a terminal or a script."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from adapters.console import ConsoleChat
from bot.chat import GENERIC_ERROR
from tests.properties.conftest import Run
from tests.properties.sentences import FUZZ, assert_sentence_text
from tests.properties.strategies import TRICKY, phrases, texts
from tests.properties.world import ALICE, world

COMMANDS = ["imagine", "/imagine", "reroll", "refine", "cancel", "queue", "history", "settings", "forget", "help",
            "HISTORY", "/reroll", "admin", "nosuch", ""]  # fmt: skip
lines = st.one_of(
    st.tuples(st.sampled_from(COMMANDS), st.one_of(st.sampled_from(TRICKY), phrases)).map(" ".join),
    st.tuples(st.sampled_from(["imagine a red fox", "imagine a fox"]), st.sampled_from(TRICKY), texts).map(" ".join),
    texts,
)


@FUZZ
@given(line=lines)
@example(line="history ²")  # was "Something went wrong" and a traceback
@example(line="refine 150")
def test_console_line(run: Run, data_dir: Path, line: str) -> None:
    """A line answers, or says one sentence after ✖; never the generic error, never a traceback."""

    async def body() -> None:
        w = await world(data_dir, started=True)
        out = io.StringIO()
        chat = ConsoleChat(w.service, ALICE, out, data_dir)
        before = await w.stored()
        succeeded = await chat.handle(line)
        await w.service.aclose()
        said = out.getvalue()
        assert GENERIC_ERROR not in said, said
        refusals = [text.removeprefix("✖ ") for text in said.splitlines() if text.startswith("✖ ")]
        if not succeeded and len(said.splitlines()) == 1 and refusals:
            # Refused before anything ran: one sentence, nothing stored.
            first = refusals[0].split(" ", 1)[0]
            assert_sentence_text(refusals[0], first if first.lower() in line.lower() else "")
            assert await w.stored() == before

    run(body())

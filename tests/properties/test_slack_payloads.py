"""Slack's modal submissions and message shortcuts, as the adapter turns them into core calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.slack._blocks import Destination, imagine_options, modal_target, refine_modal, view_values
from bot.actions import parse_ref_args
from bot.jobs import Requester
from tests.properties.conftest import Run
from tests.properties.sentences import FUZZ
from tests.properties.strategies import names, phrases, texts
from tests.properties.world import PEOPLE, world


def typed(value: Any) -> dict[str, Any]:
    return {"value": {"type": "plain_text_input", "value": value}}


def chosen(value: Any) -> dict[str, Any]:
    return {"value": {"type": "static_select", "selected_option": None if value is None else {"value": value}}}


# A "Generate image" modal's state as Slack posts it: text inputs hold anything typed, number inputs digits
# (Slack checks their range, but a client may send others), selects one of the offered values.
state = st.fixed_dictionaries(
    {"prompt": st.one_of(phrases, texts).map(typed)},
    optional={
        "negative": (st.none() | texts).map(typed),
        "seed": (st.none() | texts).map(typed),
        "steps": (st.none() | texts | st.integers(-5, 200).map(str)).map(typed),
        "refiner": (st.none() | texts | st.integers(-5, 200).map(str)).map(typed),
        "model": (st.none() | names).map(chosen),
        "size": (st.none() | st.sampled_from(["1024x1024", "1216x832", "nosuch"])).map(chosen),
        "lora": st.lists(names, max_size=6).map(
            lambda loras: {"value": {"type": "multi_static_select", "selected_options": [{"value": v} for v in loras]}}
        ),
        "channel": st.one_of(st.none(), st.sampled_from(["C1", "D1"])).map(
            lambda c: {"value": {"type": "conversations_select", "selected_conversation": c}}
        ),
    },
)


@FUZZ
@given(values=state)
def test_imagine_modal(run: Run, data_dir: Path, values: dict[str, Any]) -> None:
    """The modal queues a generation, or its refusal is one sentence (shown on the field) and nothing is stored."""
    given_, channel = imagine_options({"state": {"values": values}})
    who = Requester("slack", "1", workspace="T1", channel=channel, direct=bool(channel and channel.startswith("D")))

    async def body() -> None:
        w = await world(data_dir)
        await w.attempt(lambda: w.flow.imagine(who, given_, private=None if who.channel else True))

    run(body())


@FUZZ
@given(
    percent=st.one_of(st.none(), texts, st.integers(-5, 200).map(str)),
    target=st.integers(1, 9),
    who=st.sampled_from(PEOPLE),
)
def test_refine_modal(run: Run, data_dir: Path, percent: str | None, target: int, who: Requester) -> None:
    """ "Refine image…" queues a refine of the image, or refuses in one sentence; its target survives the round trip."""
    view = refine_modal(target, Destination("C1", "1.2"), 85)
    view["private_metadata"] = json.loads(json.dumps(view["private_metadata"]))
    assert modal_target(view) == (target, Destination("C1", "1.2"))
    view["state"] = {"values": {"percent": typed(percent)}}

    async def body() -> None:
        w = await world(data_dir)

        async def refine() -> object:
            text = str(view_values(view).get("percent") or "")
            return await w.service.refine(who, target, parse_ref_args(text, allow_percent=True).percent)

        await w.attempt(refine)

    run(body())


@FUZZ
@given(
    message=st.one_of(st.integers(0, 9).map(lambda n: f"m{n}"), texts),
    shortcut=st.sampled_from(["reroll", "refine"]),
    who=st.sampled_from(PEOPLE),
)
def test_message_shortcut(run: Run, data_dir: Path, message: str, shortcut: str, who: Requester) -> None:
    """A shortcut on any message: not an image of ours (nothing happens), or the action, or one sentence."""

    async def body() -> None:
        w = await world(data_dir)
        generation = await w.service.by_message("discord", message)
        if generation is None:
            return
        await w.attempt(lambda: w.flow.action(who, "reroll" if shortcut == "reroll" else "refine", generation.id))

    run(body())

"""Slack refusing card updates: rate limits and server errors, over the fake Slack.

Whatever Slack answers to chat.update, the user gets the image (on the same card when a
retry gets it through, else on a new card), the bot goes on serving others, and history
holds no half-written image.
"""

from __future__ import annotations

import pytest

from bot.actions import RESULT_ACTIONS
from tests.adapters.slack.conftest import Running, action_ids
from tests.fakes.service import assert_nothing_half_written

pytestmark = pytest.mark.slow


async def _still_serving(running: Running) -> None:
    """With Slack answering again, the next user gets an image; nothing is half-written."""
    running.fake.update_faults.clear()
    before = len(running.cards())
    await running.fake.send_slash(running.url, text="a blue fox --steps 2", user_id="U_BOB")
    card = await running.finished_card(before + 1)
    assert action_ids(card, "ib:reroll:")
    await assert_nothing_half_written(running.history, running.data_dir)


async def test_a_rate_limited_update_is_retried_and_the_image_arrives_on_the_card(running: Running) -> None:
    """A 429 with Retry-After is waited out and the update sent again, as slack-sdk's retry handler does."""
    fake = running.fake
    fake.fail_updates(1, 429)
    await fake.send_slash(running.url, text="a red fox --seed 7 --steps 2 --size 256x256")
    card = await running.finished_card(1)
    assert [call.status for call in fake.calls_to("chat.update")].count(429) == 1
    assert action_ids(card) == [f"ib:{action}:1" for action in RESULT_ACTIONS]  # Zoom Out too: 256² has room
    assert [m for m in fake.channel_messages() if m.files]  # the image, below the card
    await _still_serving(running)


@pytest.mark.parametrize("fail_with", [None, "the GPU is on fire"], ids=["image", "failure"])
async def test_a_card_that_cannot_be_updated_is_replaced_by_a_new_one(running: Running, fail_with: str | None) -> None:
    """Every chat.update answers 500: progress is dropped, the job goes on, and its end comes on a new card."""
    fake = running.fake
    running.backend.fail_with = fail_with
    fake.fail_updates(100, 500)
    await fake.send_slash(running.url, text="a red fox --seed 7 --steps 2")
    card = await running.finished_card(2)
    assert len(running.cards()[0].updates) == 1  # the first card was never updated
    if fail_with is None:  # a 128×128 image is too small to zoom out of: no such button
        assert action_ids(card) == [f"ib:{action}:1" for action in RESULT_ACTIONS if not action.startswith("zoom-out")]
    else:
        assert card.text.startswith("✖ #1 ·") and "the GPU is on fire" in card.text
    running.backend.fail_with = None
    await _still_serving(running)
    if fail_with is None:  # reactions and shortcuts on the new card act on the image
        assert (await running.service.by_message("slack", f"C1:{card.ts}")).id == 1

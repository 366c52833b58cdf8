"""Discord refusing message edits: rate limits, server errors and expired tokens, over the fake Discord.

Whatever Discord answers to an edit, the user gets the image (on the same message when
discord.py's retries get it through, else as a new message), the bot goes on serving
others, and history holds no half-written image.
"""

from __future__ import annotations

import pytest

from bot.actions import RESULT_ACTIONS, encode_action
from tests.adapters.discord.conftest import Running
from tests.adapters.discord.test_discord_bot import _custom_ids, _finished, _imagine
from tests.fakes.service import assert_nothing_half_written

pytestmark = pytest.mark.slow


async def _still_serving(running: Running) -> None:
    """With Discord answering again, the next user gets an image; nothing is half-written."""
    fake = running.fake
    fake.edit_faults.clear()
    _, message = await _imagine(fake, {"prompt": "a blue fox", "steps": 2}, user=fake.bob)
    assert message.attachments and _custom_ids(message)[0].startswith("ib:reroll:")
    await assert_nothing_half_written(running.history, running.data_dir)


@pytest.mark.parametrize(("status", "count"), [(429, 3), (500, 1)], ids=["429-retry-after", "500"])
async def test_edits_refused_for_a_while_are_retried_and_the_image_arrives_in_place(
    running: Running, status: int, count: int
) -> None:
    """discord.py waits out a 429's Retry-After, and a 500 for a second, then edits again."""
    fake = running.fake
    fake.fail_edits(count, status)
    interaction, message = await _imagine(fake, {"prompt": "a red fox", "seed": "7", "steps": 2, "size": "1024x1024"})
    assert [call.status for call in fake.calls if call.method == "PATCH"].count(status) == count
    assert message is interaction.original and message.attachments
    assert _custom_ids(message) == [encode_action(a, 1) for a in RESULT_ACTIONS]  # Zoom Out too: 1024² has room
    await _still_serving(running)


async def test_a_message_that_cannot_be_edited_gets_its_image_as_a_new_message(running: Running) -> None:
    """Every edit of a reaction's message answers 503, which discord.py does not retry: progress is
    dropped, the job goes on, and the image is posted anew in the channel for its author."""
    fake = running.fake
    _, first = await _imagine(fake, {"prompt": "a red fox", "seed": "7", "steps": 2})
    fake.fail_edits(100, 503)
    before = set(fake.messages)
    await fake.react(first.id, "🔄")
    await fake.wait_for(lambda: len(set(fake.messages) - before) == 2)
    queued, anew = (fake.messages[i] for i in sorted(set(fake.messages) - before))
    result = await _finished(fake, anew)
    assert len(queued.edits) == 1  # never edited: every edit was refused
    assert result.channel_id == fake.channel_id and f"<@{fake.alice['id']}>" in result.content
    assert result.attachments and _custom_ids(result)[0] == encode_action("reroll", 2)
    await _still_serving(running)
    # Reactions on the new message act on the image, as on any result.
    assert (await running.service.by_message("discord", str(result.id))).id == 2


async def test_an_expired_interaction_gets_its_image_as_a_new_message(running: Running) -> None:
    """After 15 minutes Discord forgets an interaction's token (404 Unknown Webhook): the image comes anew."""
    fake = running.fake
    fake.fail_edits(100, 404)
    interaction = await fake.slash("imagine", {"prompt": "a red fox", "seed": "7", "steps": 2})
    await interaction.response()
    await fake.wait_for(lambda: any(m.interaction_id is None for m in fake.messages.values()))
    (anew,) = (m for m in fake.messages.values() if m.interaction_id is None)
    result = await _finished(fake, anew)
    assert result.attachments and _custom_ids(result)[0] == encode_action("reroll", 1)
    assert f"<@{fake.alice['id']}>" in result.content
    await _still_serving(running)


async def test_a_failure_whose_message_cannot_be_edited_is_told_in_a_new_message(running: Running) -> None:
    fake = running.fake
    running.backend.fail_with = "the GPU is on fire"  # type: ignore[attr-defined]
    fake.fail_edits(100, 404)
    interaction = await fake.slash("imagine", {"prompt": "a red fox", "steps": 2})
    await interaction.response()
    told = "✖ #1 · The fake backend could not make the image: the GPU is on fire."
    await fake.wait_for(lambda: any(told in m.content for m in fake.messages.values() if m.interaction_id is None))
    running.backend.fail_with = None  # type: ignore[attr-defined]
    await _still_serving(running)

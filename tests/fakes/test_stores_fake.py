"""The in-memory stores' copy, which each property example starts from (tests/properties/world.py)."""

from __future__ import annotations

from bot.history import AuditEntry, NewGeneration
from bot.request import GenerationRequest
from tests.fakes.stores import InMemoryDatabase

FOX = GenerationRequest(prompt="a red fox", model="tiny", width=128, height=128, steps=2, seed=7)


async def _contents(db: InMemoryDatabase) -> tuple[object, ...]:
    return (
        [await db.generations.get(i) for i in (1, 2, 3)],
        await db.settings.get("discord", "1"),
        await db.policies.get("discord", "g1"),
        await db.policies.recent_audit("discord", "g1"),
    )


async def test_a_copy_and_its_original_never_see_each_others_changes() -> None:
    original = InMemoryDatabase.create(clock=lambda: 1.0)
    await original.generations.add(NewGeneration("discord", "1", FOX, "generate", "fake", "g1", "c1"))
    await original.settings.put("discord", "1", {"steps": 4})
    before = await _contents(original)

    copy = original.copy()
    assert await _contents(copy) == before
    await copy.generations.add(NewGeneration("discord", "1", FOX, "generate", "fake", "g1", "c1"))
    await copy.generations.mark_done(1, [])
    await copy.settings.put("discord", "1", {"steps": 8})
    await copy.policies.put("discord", "g1", {"banned": ["gore"]})
    await copy.policies.audit(AuditEntry("discord", "g1", "1", "ban"))
    assert await _contents(original) == before
    changed = await _contents(copy)

    await original.generations.delete(1)
    await original.settings.put("discord", "1", {"steps": 2})
    assert await _contents(copy) == changed
    # Ids go on from where each was copied: the copy's next is 3, the original's 2.
    assert (await original.generations.add(NewGeneration("discord", "1", FOX, "generate", "fake", "g1", "c1"))).id == 2

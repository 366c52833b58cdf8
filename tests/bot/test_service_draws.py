"""Picks and wildcards through the service and the chat flow: drawn for each job, stored as drawn, or one sentence."""

from __future__ import annotations

import random

import pytest

from bot.chat import ChatFlow, Text
from bot.errors import InvalidOption
from bot.jobs import Requester
from bot.options import Limits
from bot.wildcards import WildcardFolder
from tests.fakes.service import memory_service

ALICE = Requester("console", "alice", workspace="w1")
LIBRARY = {"animal": ("fox", "owl", "hare {in snow|at dusk}"), "colors/warm": ("amber", "ochre", "rust", "gold")}


@pytest.fixture
async def service(backend, tmp_path):
    async with memory_service(
        backend, tmp_path, limits=Limits(pixel_budget=512 * 512), max_per_user=20, wildcards=LIBRARY,
        draws=random.Random(5),
    ) as service:  # fmt: skip
        yield service


async def test_each_job_of_a_repeat_draws_its_own_pick_and_wildcard_and_stores_what_it_drew(service, backend):
    """`--repeat 8`: eight jobs, each drawing its colour and animal; the prompts stored are the drawn ones, and the
    seeds move on as without picks (`--seed 7 --n 2`: job k starts at 7 + 2k)."""
    jobs = await service.imagine_each("a {red|blue} __animal__ --seed 7 --n 2 --repeat 8", ALICE)
    made = [await job.result() for job in jobs]
    prompts = [generation.request.prompt for generation in made]
    assert prompts == [request.prompt for request in backend.requests]
    animals = {"fox", "owl", "hare in snow", "hare at dusk"}
    assert all(prompt.split(" ", 2)[1] in ("red", "blue") and prompt.split(" ", 2)[2] in animals for prompt in prompts)
    assert len(set(prompts)) > 1  # drawn per job, not once per command
    assert [generation.seed for generation in made] == [7 + 2 * k for k in range(8)]
    # A reroll keeps the words it drew: the same settings, a new seed.
    rerolled = await (await service.reroll(ALICE, made[0].id)).result()
    assert rerolled.request.prompt == prompts[0] and rerolled.seed != made[0].seed


async def test_choices_and_picks_together_make_the_choices_prompts_each_with_a_draw(service, backend):
    jobs = await service.imagine_each("a {small, big} __colors/warm__ fox", ALICE)
    prompts = [(await job.result()).request.prompt for job in jobs]
    assert [prompt.split()[1] for prompt in prompts] == ["small", "big"]
    assert all(prompt.split()[2] in ("amber", "ochre", "rust", "gold") for prompt in prompts)


async def test_a_wildcard_the_bot_lacks_is_one_sentence_and_nothing_is_queued(service, backend):
    with pytest.raises(InvalidOption) as caught:
        await service.imagine_each("a __animals__ at night --repeat 2", ALICE)
    assert (
        str(caught.value)
        == "Prompt names the wildcard __animals__, which this bot does not have; did you mean '__animal__'?"
    )
    assert backend.requests == []


class FirstThenLast(random.Random):
    """Draws the first option the first time and the last ever after."""

    def __init__(self) -> None:
        super().__init__(0)
        self.calls = 0

    def choice(self, seq):  # type: ignore[override]
        self.calls += 1
        return seq[0] if self.calls == 1 else seq[-1]


async def test_a_later_job_of_a_repeat_that_draws_a_prompt_too_long_refuses_the_whole_command(backend, tmp_path):
    async with memory_service(
        backend, tmp_path, wildcards={"part": ("y", "x" * 3000)}, draws=FirstThenLast()
    ) as service:
        with pytest.raises(InvalidOption, match=r"^Prompt is 3006 characters long; the most is 3000\.$"):
            await service.imagine_each("a __part__ fox --repeat 2", ALICE)
        assert service.queue(ALICE)[1] == []
    assert backend.requests == []


async def test_a_commands_draws_count_together_its_jobs_too_and_past_the_most_none_is_queued(service, backend):
    """Each `{100$$$$|}` draws 100 empty options: thirty of them are 3,000 draws a job. Three jobs (9,000) are made;
    four (12,000) pass the 10,000 one command may draw, on the event loop, and none is queued."""
    jobs = await service.imagine_each("a fox " + "{100$$$$|}" * 30 + " --repeat 3", ALICE)
    assert [(await job.result()).request.prompt for job in jobs] == ["a fox"] * 3
    with pytest.raises(InvalidOption, match=r"^Prompt takes more than 10,000 draws of its picks and wildcards\.$"):
        await service.imagine_each("a fox " + "{100$$$$|}" * 30 + " --repeat 4", ALICE)
    assert len(backend.requests) == 3


async def test_the_chat_lists_the_wildcards_with_a_few_of_their_choices(service):
    flow = ChatFlow(service)
    listed = await flow.text(ALICE, "wildcards")
    assert listed == Text(
        "A line of each is drawn where a prompt names it:\n"
        "__animal__ (3): fox; owl; hare {in snow|at dusk}\n"
        "__colors/warm__ (4): amber; ochre; rust; …"
    )
    assert await flow.text(ALICE, "wildcards __col") == Text(
        "A line of each is drawn where a prompt names it:\n__colors/warm__ (4): amber; ochre; rust; …"
    )
    assert await flow.text(ALICE, "wildcards zebra") == Text("No wildcard's name holds 'zebra'.")
    # Words after it are a prompt where the chat takes prompts (Slack), a sentence in the console.
    assert await flow.text(ALICE, "wildcards in the sky") is None
    with pytest.raises(InvalidOption, match=r"^wildcards takes a name or part of one, not 'in the sky'\.$"):
        await flow.text(ALICE, "wildcards in the sky", strict=True)


async def test_without_wildcards_the_list_says_so_and_underscores_are_words(backend, tmp_path):
    async with memory_service(backend, tmp_path) as service:
        assert await ChatFlow(service).wildcards() == Text(
            "This bot has no wildcards: its operator adds them as files of choices, one a line."
        )
        await (await service.imagine("a __init__ method", ALICE)).result()
    assert backend.requests[-1].prompt == "a __init__ method"


async def test_a_long_list_of_wildcards_fits_a_chat_message(backend, tmp_path):
    """Fifteen lines of names and choices at most, then how many more: within Discord's 2,000 characters."""
    library = {f"{'n' * 50}/{'m' * 50}/{k:03d}": ("x" * 1000,) * 9 for k in range(40)}
    async with memory_service(backend, tmp_path, wildcards=library) as service:
        listed = await ChatFlow(service).wildcards()
    lines = listed.text.splitlines()
    assert len(listed.text) <= 2000 and len(lines) == 17
    assert lines[-1] == "…and 25 more: name part of one to narrow the list."


async def test_a_wildcard_file_added_while_the_bot_runs_is_drawn_from_and_listed(backend, tmp_path):
    """No restart: the next prompt draws from a file the operator wrote, and `wildcards` lists it."""
    folder = tmp_path / "wildcards"
    folder.mkdir()
    (folder / "animal.txt").write_text("fox\n", encoding="utf-8")
    async with memory_service(backend, tmp_path, wildcards=WildcardFolder(folder, every=0)) as service:
        with pytest.raises(InvalidOption, match=r"^Prompt names the wildcard __bird__, which this bot does not have"):
            await service.imagine("a __bird__", ALICE)
        (folder / "bird.txt").write_text("owl\n", encoding="utf-8")
        await (await service.imagine("a __bird__ and a __animal__", ALICE)).result()
        assert (await ChatFlow(service).wildcards("bird")).text.endswith("__bird__ (1): owl")
    assert backend.requests[-1].prompt == "a owl and a fox"


async def test_a_prompt_made_before_its_words_named_a_wildcard_is_made_again_by_its_edit(backend, tmp_path):
    """`a __fox__ kit` was words while the bot had no wildcard `fox`; once the operator adds one, the image's
    Edit text still asks for those words, and the old image's reroll keeps them."""
    folder = tmp_path / "wildcards"
    async with memory_service(backend, tmp_path, wildcards=WildcardFolder(folder, every=0)) as service:
        made = await (await service.imagine(r"a __fox__ kit, snake\_case --steps 4", ALICE)).result()
        assert made.request.prompt == "a __fox__ kit, snake_case"
        folder.mkdir()
        (folder / "fox.txt").write_text("red fox\n", encoding="utf-8")
        await (await service.imagine("a __fox__", ALICE)).result()
        edit = await ChatFlow(service).edit(ALICE, made.id)
        assert edit.text.startswith(r"a \_\_fox\_\_ kit, snake_case --model")
        again = await (await service.imagine(edit.text, ALICE)).result()
        rerolled = await (await service.reroll(ALICE, made.id)).result()
    assert again.request.prompt == rerolled.request.prompt == "a __fox__ kit, snake_case"
    assert [request.prompt for request in backend.requests][1] == "a red fox"

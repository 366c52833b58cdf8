"""Discord's typed options (/imagine, /settings, /imagine-admin) as the cog hands them to the core."""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from adapters.discord._cog import settings_changes
from bot.jobs import Job, Requester
from bot.policy import Policy, rule_changes
from bot.summary import defaults_line
from tests.properties.conftest import Run
from tests.properties.sentences import FUZZ
from tests.properties.strategies import names, numbers, phrases, texts
from tests.properties.world import ALICE, STRANGER, World, world

# What discord.py hands `ImagesCog.imagine`: each option typed (Range options as int or float), or None.
# Options left out are absent (drawing None for each would cost as much and find nothing more).
IMAGINE = {
    "negative": texts,
    "seed": texts,
    "steps": numbers,
    "refiner": numbers,
    "lora": names | phrases,
    "model": names,
    "size": texts,
    "cfg": st.floats(allow_nan=True) | numbers,
    "scheduler": texts,
    "count": numbers,
    "private": st.none() | st.booleans(),
    "tile": st.none() | st.booleans(),
    "variation": st.none() | st.floats(0, 1) | numbers,
}
# An error names the option by its Discord name, never by the parser's label for it.
LABELS = {"negative": "negative prompt"}


@FUZZ
@given(given_=st.fixed_dictionaries({"prompt": phrases}, optional=IMAGINE))
@example(given_={"prompt": "a red fox", "cfg": 99.0})  # "Cfg must…": now "cfg must…"
@example(given_={"prompt": "a red fox", "negative": "\x00"})  # "Negative prompt…": now "negative…"
def test_imagine_options(run: Run, data_dir: Path, given_: dict[str, object]) -> None:
    """/imagine's options queue a generation per prompt, or one sentence names the option as Discord shows it."""

    async def body() -> None:
        w = await world(data_dir)
        options = {key: value for key, value in given_.items() if key != "private"}
        private = given_.get("private")
        assert private is None or isinstance(private, bool)
        typed = {LABELS[key]: key for key in options if key in LABELS}
        started = await w.attempt(lambda: w.flow.imagine(ALICE, options, private=private), typed)
        for job in started.jobs if started is not None else ():
            assert isinstance(job, Job)
            generation = await w.db.generations.get(job.id)
            assert generation is not None and generation.request == job.request and generation.status == "queued"

    run(body())


strengths = st.none() | st.floats(0, 1) | st.sampled_from([0.0, 1.0, 0.35])


@FUZZ
@given(
    reset=st.booleans(),
    given_=st.fixed_dictionaries(
        {
            "model": st.none() | names,
            "steps": st.none() | numbers,
            "refiner": st.none() | numbers,
            "size": st.none() | texts | st.sampled_from(["1024x1024", "1216x832", "100x100", "99999x99999"]),
            "scheduler": st.none() | texts | st.sampled_from(["Euler a", "DPM++ 2M Karras", "nosuch"]),
            "cfg": st.none() | st.floats(0, 50) | st.sampled_from([0.0, 50.0, 7.5]),
            "private": st.none() | st.booleans(),
            "batching": st.none() | st.booleans(),
            "vary_subtle": strengths,
            "vary_strong": strengths,
            "vary_region": strengths,
            "upscale_strength": strengths,
        }
    ),
)
@example(reset=False, given_={"size": "garbage"})
@example(reset=True, given_={"refiner": 0, "vary_subtle": 0.0})
def test_settings_options(run: Run, data_dir: Path, reset: bool, given_: dict[str, object]) -> None:
    """/settings saves what it was given, or refuses in one sentence and saves nothing."""

    async def body() -> None:
        w = await world(data_dir)
        await w.db.settings.put(*ALICE.key, {"steps": 4, "vary_strong": 0.5})

        reply = await w.attempt(lambda: w.flow.settings(ALICE, settings_changes(given_), reset=reset))
        if reply is not None:
            assert reply.text == defaults_line(await w.service.user_settings.get(ALICE))
            # What was saved makes requests: a prompt gives a job or a sentence, never a crash.
            await w.attempt(lambda: w.service.imagine("a red fox", ALICE))

    run(body())


ADMIN = {
    "open_reroll": st.booleans(),
    "ban": texts,
    "unban": texts,
    "models": names | phrases,
    "loras": names | phrases,
    "blocked_models": names,
    "blocked_loras": names,
    "max_steps": numbers,
    "max_count": numbers,
    "max_size": texts,
    "member_quota": numbers,
    "channels": texts | phrases,
    "flagged": texts,
    "default_model": names | st.sampled_from(["none", "NONE", ""]),
}


@FUZZ
@given(
    options=st.fixed_dictionaries({}, optional=ADMIN),
    manager=st.booleans(),
    banned=st.lists(st.sampled_from(["gore", "re:bl(oo)d"]), max_size=2),
)
def test_admin_options(run: Run, data_dir: Path, options: dict[str, object], manager: bool, banned: list[str]) -> None:
    """/imagine-admin changes the server's rules, or refuses in one sentence and changes nothing."""

    async def change(w: World, who: Requester) -> None:
        async def update() -> Policy:
            policy = await w.service.admin.policy(who)
            changes = rule_changes(policy, w.service.catalog, **options, here=who.channel)  # type: ignore[arg-type]
            return await w.service.admin.update_policy(who, changes, may_manage=manager)

        policy = await w.attempt(update)
        if policy is not None:
            assert await w.service.admin.policy(who) == policy
            assert policy.summary().endswith(".")
            # A server's new rules judge requests with sentences too.
            await w.attempt(lambda: w.service.imagine("a red fox --lora pixel-art --steps 30", who))

    async def body() -> None:
        w = await world(data_dir, {"banned": banned})
        await change(w, ALICE)  # in a server
        await change(w, STRANGER)  # a member of another server, whose own rules change

    run(body())

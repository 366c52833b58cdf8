"""What users type in a chat: `settings key=value`, `#id` references, admin commands, /imagine text."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from bot.chat import ChatFlow, Started
from bot.images import input_path
from bot.jobs import Requester
from bot.options import OPTIONS
from bot.policy import ADMIN_WORDS
from tests.properties.conftest import Run
from tests.properties.sentences import FUZZ
from tests.properties.strategies import TRICKY, phrases, texts
from tests.properties.world import PEOPLE, world

SETTING_KEYS = ["model", "steps", "refiner_percent", "width", "height", "scheduler", "cfg", "private", "batching"]
setting_values = st.one_of(
    st.sampled_from(["", "none", "default", "true", "off", "30", "4", "500", "-1", "85", "0", "7.5", "99", "nan",
                     "inf", "1e400", "9" * 5000, "tiny", "sdxl", "sdxl-turbo", "nosuch", "Euler a", "1024", "100"]),
    texts,
)  # fmt: skip
pairs = st.lists(
    st.tuples(st.one_of(st.sampled_from(SETTING_KEYS), texts), st.sampled_from(["=", "=", ""]), setting_values).map(
        "".join
    ),
    max_size=4,
).map(" ".join)


@FUZZ
@given(text=pairs, who=st.sampled_from(PEOPLE))
@example(text="steps=500", who=PEOPLE[0])  # "Steps must…": now "steps must…", as typed
@example(text="refiner_percent=500", who=PEOPLE[0])  # named refiner_percent, as typed, not "refiner"
@example(text="x" * 400 + "=1", who=PEOPLE[0])  # an unknown key was echoed whole, past the 300 characters
def test_settings_text(run: Run, data_dir: Path, text: str, who: Requester) -> None:
    """`settings key=value …` saves the defaults, or refuses in one sentence naming the key and saves nothing."""

    async def body() -> None:
        w = await world(data_dir)
        typed = {"refiner": "refiner_percent"} if "refiner_percent=" in text else None
        reply = await w.attempt(lambda: w.flow.text(who, f"settings {text}", strict=True), typed)
        if reply is not None:
            # Saved defaults make requests: a prompt gives a job or a sentence, never a crash.
            await w.attempt(lambda: w.service.imagine("a red fox", who))

    run(body())


set_names = st.one_of(st.sampled_from(["mine", "--Mine", "—x2", "ar", "AR", "no-blur", "x" * 30, "2x", "m_1"]), texts)
set_flags = st.one_of(
    st.sampled_from(["--ar 2:3", "--steps 4 --no blurry", "--ar {1:1, 16:9}", "--image #1", "--tile", "none", "NONE",
                     "--mine", "--steps 500", "--no '--ar 1:1'", "--n 4 --repeat 40", "--lora pixel-art:0.8", ""]),
    st.sampled_from(TRICKY),
    phrases,
    texts,
)  # fmt: skip


@FUZZ
@given(names=st.lists(set_names, min_size=1, max_size=3), flags=st.lists(set_flags, min_size=1, max_size=3),
       prompt=st.one_of(st.sampled_from(["a red fox", "a fox --ar 1:1", "a {red, blue} fox"]), phrases, texts),
       strict=st.booleans())  # fmt: skip
@example(names=["mine"], flags=["--ar 2:3"], prompt="a red fox", strict=True)
def test_option_sets(run: Run, data_dir: Path, names: list[str], flags: list[str], prompt: str, strict: bool) -> None:
    """`prefer NAME --flags`: saved, no command, or one sentence and nothing saved; a prompt naming each set then
    gives its jobs or one sentence."""

    async def body() -> None:
        w = await world(data_dir)
        who = PEOPLE[0]
        for name, typed in zip(names, flags * 3, strict=False):
            before = await w.service.user_settings.option_sets(who)
            reply = await w.attempt(lambda: w.flow.text(who, f"prefer {name} {typed}", strict=strict))  # noqa: B023
            if reply is None:
                assert await w.service.user_settings.option_sets(who) == before
        named = " ".join(f"--{name}" for name in await w.service.user_settings.option_sets(who))
        started = await w.attempt(lambda: w.flow.imagine(who, f"{prompt} {named}"))
        if started is not None:
            for job in started.jobs:
                assert await w.db.generations.get(job.id) is not None
        assert await w.attempt(lambda: w.flow.text(who, "prefer", strict=True)) is not None

    run(body())


settings_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts)


@FUZZ
@given(changes=st.dictionaries(st.one_of(st.sampled_from(SETTING_KEYS), texts), settings_values, max_size=4))
def test_settings_mapping(run: Run, data_dir: Path, changes: dict[str, object]) -> None:
    """`UserSettings.update` with any typed values: saved, or one sentence and nothing saved."""

    async def body() -> None:
        w = await world(data_dir)
        saved = await w.attempt(lambda: w.service.user_settings.update(PEOPLE[0], changes))
        if saved is not None:
            assert await w.service.user_settings.get(PEOPLE[0]) == saved
            await w.attempt(lambda: w.service.imagine("a red fox", PEOPLE[0]))

    run(body())


ref_words = st.sampled_from(
    ["reroll", "refine", "cancel", "history", "forget", "queue", "star", "unstar", "gallery", "REROLL", "Refine",
     "info", "guide", "vary", "upscale", "zoom", "Zoom", "pan", "PAN"]
)  # fmt: skip
ref_args = st.lists(
    st.one_of(
        st.sampled_from(
            [w for w in TRICKY if w.startswith("#")]
            + ["85", "150", "0", "99%", "confirm", "5", "²", "showcase"]
            + ["1.5", "2x", "4×", "3", "1.05", "subtle", "strong", "#1.2", "#2.9", "left", "UP", "down", "right"]
        ),
        st.integers(0, 10).map(lambda n: f"#{n}"),
        st.integers().map(str),
        texts,
    ),
    max_size=3,
).map(" ".join)


@FUZZ
@given(word=ref_words, rest=ref_args, who=st.sampled_from(PEOPLE), strict=st.booleans())
@example(word="history", rest="²", who=PEOPLE[0], strict=True)  # str.isdigit() took it, int() did not
@example(word="refine", rest="150", who=PEOPLE[0], strict=True)  # says the range as --refiner 500 does
@example(word="reroll", rest="#" + "9" * 19, who=PEOPLE[0], strict=True)  # past SQLite's largest id
@example(word="zoom", rest="#1 1.5", who=PEOPLE[0], strict=True)
@example(word="zoom", rest="9.99", who=PEOPLE[0], strict=True)
@example(word="pan", rest="#1 left", who=PEOPLE[0], strict=True)
def test_references(run: Run, data_dir: Path, word: str, rest: str, who: Requester, strict: bool) -> None:
    """`reroll #3`, `refine #3 90`, `zoom #3.2 2`, `pan left`, `info`…: a reply, no command, or one sentence."""

    async def body() -> None:
        w = await world(data_dir)
        reply = await w.attempt(lambda: w.flow.text(who, f"{word} {rest}", strict=strict))
        if isinstance(reply, Started):
            assert await w.db.generations.get(reply.job.id) is not None

    run(body())


admin_lines = st.tuples(
    st.one_of(st.sampled_from(ADMIN_WORDS), texts), st.one_of(st.sampled_from(TRICKY), phrases)
).map(" ".join)


async def manages(who: Requester) -> bool:
    """The platform's check of a server manager: user "1" is one."""
    return who.user_id == "1"


@FUZZ
@given(text=admin_lines, who=st.sampled_from(PEOPLE))
@example(text="max_steps ²", who=PEOPLE[0])  # str.isdigit() took it, int() did not
@example(text="unban ²", who=PEOPLE[0])
@example(text="max_steps " + "9" * 5000, who=PEOPLE[0])  # int() refuses 5,000 digits
def test_admin_text(run: Run, data_dir: Path, text: str, who: Requester) -> None:
    """`admin ban gore`, `admin max_steps 30`…: the rules change, or one sentence and nothing changes."""

    async def body() -> None:
        w = await world(data_dir, {"banned": ["gore"]})
        flow = ChatFlow(w.service, may_manage=manages)
        await w.attempt(lambda: flow.text(who, f"admin {text}", strict=True))

    run(body())


flags = st.lists(
    st.tuples(st.sampled_from([f"--{o}" for o in OPTIONS] + ["--n", "--no", "--sampler", "—seed", "--bogus"]), texts),
    max_size=4,
)


@FUZZ
@given(prompt=st.one_of(st.just("a red fox"), texts), options=flags)
@example(prompt="a red fox", options=[("--cfg", "99")])  # "Cfg must…": now "--cfg must…", as typed
@example(prompt="a red fox", options=[("--ar", "9:1")])  # "Aspect ratio must…": now "--ar must…"
@example(prompt="a red fox", options=[("--" + "a" * 400, "1")])  # a long flag was echoed past 300 characters
def test_imagine_text(run: Run, data_dir: Path, prompt: str, options: list[tuple[str, str]]) -> None:
    """/imagine text (Slack, the console) queues a generation, or refuses naming each flag as typed."""

    async def body() -> None:
        w = await world(data_dir)
        line = " ".join([prompt, *(f"{flag} {value}" for flag, value in options)])
        typed = typed_names(options)
        await w.attempt(lambda: w.flow.imagine(PEOPLE[0], line), typed)

    run(body())


def typed_names(options: list[tuple[str, str]]) -> dict[str, str]:
    """Return option label → the flag as typed; a `--prompt` flag names nothing (the prompt is never a flag)."""
    return {
        label: flag
        for flag, _ in options
        if flag != "--prompt"
        for label in (flag.lstrip("-—"), LABELS.get(flag))
        if label
    }


LABELS = {
    "--ar": "aspect ratio",
    "--no": "negative prompt",
    "--negative": "negative prompt",
    "--clip_skip": "clip skip",
}


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (200, 40, 40, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def _flip(data: bytes, at: int, mask: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]


PNGS = [_png(128, 128), _png(64, 32), _png(1, 1), _png(3000, 2)]
attachments = st.one_of(
    st.sampled_from(PNGS),
    st.binary(max_size=64),
    st.tuples(st.sampled_from(PNGS), st.integers(0, 120)).map(lambda cut: cut[0][: cut[1]]),
    st.tuples(st.sampled_from(PNGS), st.integers(0, 10_000), st.integers(1, 255)).map(lambda flip: _flip(*flip)),
)


def _inputs(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "inputs").rglob("*"))


@FUZZ
@given(data=attachments, options=flags)
@example(data=PNGS[0], options=[("--strength", "0.01")])  # no step would run
@example(data=PNGS[3], options=[])  # a strip: kept within the sides and the budget
def test_imagine_from_an_attachment(run: Run, data_dir: Path, data: bytes, options: list[tuple[str, str]]) -> None:
    """An attachment (valid, truncated, a byte flipped, noise) with any flags: a job from that image, or one
    sentence, and a refusal leaves no input file behind."""

    async def body() -> None:
        w = await world(data_dir)

        async def load(ref: str, option: str) -> bytes:
            return data

        line = " ".join(["a red fox --image upload", *(f"{flag} {value}" for flag, value in options)])
        typed = typed_names(options)
        # Each example's world is new: the inputs of earlier ones would only make the folder slow to read.
        shutil.rmtree(data_dir / "inputs", ignore_errors=True)
        started = await w.attempt(lambda: w.flow.imagine(PEOPLE[0], line, load=load), typed)
        if started is None:
            assert _inputs(data_dir) == []
        else:
            for job in started.jobs:
                assert job.request.init_image is not None
                assert (data_dir / input_path(job.request.init_image)).is_file()

    run(body())

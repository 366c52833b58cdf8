"""Property tests of the parser: any input gives a request or an `InvalidOption`, nothing else."""

import json
import math
from importlib import resources
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot.catalog import Catalog
from bot.errors import InvalidOption
from bot.options import OPTIONS, SDXL_BUCKETS, Defaults, Limits, Parsed, parse_options, parse_text
from bot.request import GenerationRequest
from bot.rules import SCHEDULERS, check
from tests.properties.sentences import assert_sentence


def catalog() -> Catalog:
    """The shipped catalog plus the test entries (film-grain, FLUX, SD 1.5, wrong entries)."""
    shipped = resources.files("bot").joinpath("models.toml").read_text(encoding="utf-8")
    extra = Path(__file__).with_name("options_catalog.toml").read_text(encoding="utf-8")
    return Catalog.from_toml(shipped + "\n" + extra)


CATALOG = catalog()
LIMITS = Limits(pixel_budget=4 * 1024 * 1024)
MODELS = CATALOG.names("model")
PROPERTY = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)

defaults_st = st.builds(
    Defaults,
    model=st.sampled_from([*MODELS, "nope"]),
    steps=st.one_of(st.none(), st.integers(-5, 120)),
    refiner_percent=st.one_of(st.none(), st.integers(-5, 120)),
    width=st.one_of(st.none(), st.sampled_from([128, 512, 1000, 1024, 1216, 4096])),
    height=st.one_of(st.none(), st.sampled_from([128, 512, 832, 1024, 4096])),
    scheduler=st.one_of(st.none(), st.sampled_from([*SCHEDULERS, "euler_a", "bogus"])),
    cfg=st.one_of(st.none(), st.floats(-5, 60)),
)


def outcome(call) -> Parsed | InvalidOption:
    """Run a parse; only `InvalidOption` may escape it (anything else fails the test)."""
    try:
        parsed = call()
    except InvalidOption as error:
        assert_sentence(error)
        return error
    assert isinstance(parsed, Parsed)
    assert all(isinstance(warning, str) and warning.endswith(".") for warning in parsed.warnings)
    return parsed


# ---------------------------------------------------------------------------
# Arbitrary text

FLAG_WORDS = [
    "--seed", "--steps", "--refiner", "--lora", "--no", "--negative", "--ar", "--size", "--cfg",
    "--sampler", "--scheduler", "--n", "--count", "--model", "--vae", "--clip-skip", "--embedding",
    "--format", "--style", "--bogus", "--", "—seed", "--seed=", "--ar=16:9", "--sref", "--sw",
]  # fmt: skip
VALUE_WORDS = [
    "42", "0", "-1", "30", "85", "99", "100", "off", "16:9", "4:1", "1216x832", "1000x832", "6.5", "nan",
    "pixel-art:0.8,", "film-grain", "toy-face:9", "a:b:c", "../x", "sdxl", "tiny", "sdxl-turbo",
    "flux-dev", "cinematic", "grain", "{prompt}", "(red:1.3)", "[x]", "(x:9)", "((", "\\(", "BREAK",
    "<lora:pixel-art:0.8>", "<lora:toy-face>", "<lora:>", "<lora:nope:1>", "<LORA:a:b:c>",
    "Euler a", "DPM++", "2M", "Karras", "png", "jpeg", '"', "'", "“", "”", ",", ":", "%",
    str(2**63), "9" * 40, "\x00", "\n", "\r", "\t", "\ud800", "é", "🦊", "#3", "#3.2:0.6", "#4:", "150",
]  # fmt: skip

flag_soup = st.lists(
    st.one_of(st.sampled_from(FLAG_WORDS), st.sampled_from(VALUE_WORDS), st.text(max_size=8)),
    max_size=24,
).map(" ".join)
prompt_like = st.text(min_size=2, max_size=40).filter(lambda s: len(s.strip()) >= 2)
# Text without control characters or lone surrogates: what a valid prompt is made of.
clean_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=2, max_size=60).filter(
    lambda s: len(s.strip()) >= 2
)


@PROPERTY
@given(line=st.one_of(st.text(max_size=200), flag_soup, st.tuples(prompt_like, flag_soup).map(" ".join)))
def test_any_text_gives_a_request_or_invalid_option(line):
    """Whatever is typed, the parser answers with a request or one user-facing error."""
    outcome(lambda: parse_text(line, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS))


@PROPERTY
@given(line=flag_soup, defaults=defaults_st, budget=st.integers(1, 2**24))
def test_any_defaults_and_limits_give_a_request_or_invalid_option(line, defaults, budget):
    """Odd user defaults and budgets are reported as errors too, never as crashes."""
    outcome(
        lambda: parse_text("a red fox " + line, catalog=CATALOG, defaults=defaults, limits=Limits(pixel_budget=budget))
    )


sref_words = st.one_of(
    st.sampled_from(["#3", "#12.2", "#3:0.6", "#4:2", "#5:2.5", "#6:-1", "a.png", "x=y", "#7:", ":0.5", ",", "@1"]),
    st.text(max_size=8),
)


@PROPERTY
@given(words=st.lists(sref_words, max_size=5), sw=st.one_of(st.none(), st.sampled_from(["0", "80", "200", "201", "x"])))
def test_any_sref_gives_style_references_on_every_step_or_one_error(words, sw):
    """``--sref``: at most three images, each the model's IP-Adapter on the style layers, weight 0–2, every step."""
    from bot.controls import Guide
    from bot.options import image_refs

    line = "a red fox --steps 30 --sref " + " ".join(words) + (f" --sw {sw}" if sw else "")
    try:
        named = image_refs(line)
    except InvalidOption as error:
        assert_sentence(error)
        return
    guides = [Guide(f"{n:064x}") for n in range(len(named.every_guide))]
    parsed = outcome(
        lambda: parse_text(line, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS, guides=guides)
    )
    if isinstance(parsed, InvalidOption):
        return
    styles = parsed.request.controlnets
    assert 1 <= len(styles) <= 3 and [spec.guide for spec in styles] == [guide.guide for guide in guides]
    for spec in styles:
        assert (spec.model, spec.style, spec.start_step, spec.end_step) == ("ip-adapter-sdxl", True, 1, 30)
        assert 0 <= spec.weight <= 2


# ---------------------------------------------------------------------------
# Arbitrary typed options

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=30),
        st.sampled_from(VALUE_WORDS),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
option_keys = st.one_of(
    st.sampled_from([*OPTIONS, "no", "n", "sampler", "negative_prompt", "clip-skip", "Seed", "width", "", " prompt "]),
    st.text(max_size=10),
)


@PROPERTY
@given(mapping=st.dictionaries(option_keys, json_values, max_size=10))
def test_any_option_mapping_gives_a_request_or_invalid_option(mapping):
    """Whatever a platform hands over, the parser answers with a request or one user-facing error."""
    outcome(lambda: parse_options(mapping, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS))


@PROPERTY
@given(mapping=st.dictionaries(st.sampled_from(OPTIONS), json_values, max_size=16), prompt=prompt_like)
def test_option_mapping_with_a_prompt(mapping, prompt):
    """With a usable prompt, any other values still give a request or one error."""
    outcome(
        lambda: parse_options(
            {**mapping, "prompt": prompt}, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS
        )
    )


# ---------------------------------------------------------------------------
# Valid requests round-trip and pass the rules again

SDXL_FAMILY = ["sdxl", "sdxl-turbo", "tiny", "juggernaut", "lightning"]


@st.composite
def valid_options(draw):
    """Options that mostly make a valid request (SDXL-family models and add-ons)."""
    model = draw(st.sampled_from(SDXL_FAMILY))
    optional = {
        "negative": clean_text,
        "steps": st.integers(1, 100),
        "cfg": st.one_of(st.integers(0, 50), st.floats(0, 50), st.floats(0, 50).map(str)),
        "scheduler": st.sampled_from(SCHEDULERS),
        "seed": st.integers(1, 2**63 - 4),
        "count": st.integers(1, 4),
        "clip_skip": st.integers(0, 2),
        "lora": st.sampled_from(["pixel-art", "pixel-art:0.8, toy-face:-1", "film-grain:4", "tiny-lora:-4"]),
        "embedding": st.sampled_from(["tiny-embedding:0.5", "tiny-embedding"]),
        "vae": st.sampled_from(["sdxl-vae-fp16-fix", "tiny-vae"]),
        "ar": st.tuples(st.integers(1, 40), st.integers(1, 40))
        .filter(lambda r: 1 / 4 <= r[0] / r[1] <= 4)
        .map(lambda r: f"{r[0]}:{r[1]}"),
        "format": st.sampled_from(["png", "jpg", "jpeg", "webp"]),
    }
    if model in ("sdxl", "tiny"):
        optional["refiner"] = st.one_of(st.just("off"), st.integers(60, 95))
        optional["steps"] = st.integers(20, 100)
    mapping = draw(st.fixed_dictionaries({"prompt": clean_text}, optional=optional))
    if draw(st.booleans()):
        mapping["model"] = model
    return mapping


@PROPERTY
@given(mapping=valid_options())
def test_parsed_requests_round_trip(mapping):
    """Any request the parser accepts survives its stored JSON form and passes the rules again."""
    result = outcome(lambda: parse_options(mapping, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS))
    assume(isinstance(result, Parsed))
    request = result.request
    assert GenerationRequest.from_dict(request.to_dict()) == request
    assert GenerationRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    assert check(request, CATALOG, LIMITS) == tuple(
        w for w in result.warnings if not w.startswith(("Aspect ratio", "Your default"))
    )


@PROPERTY
@given(mapping=valid_options())
def test_parsing_is_deterministic_and_text_agrees(mapping):
    """The same options as text give the same request as the mapping."""
    parsed = outcome(lambda: parse_options(mapping, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS))
    assume(isinstance(parsed, Parsed))
    flags = {"negative": "no", "clip_skip": "clip-skip"}
    assume(not any(word in mapping["prompt"] for word in ("--", "—", '"', "'", "“", "‘")))
    assume(not any(c in mapping.get("negative", "") for c in ("-", "—", '"', "'", "“", "‘")))
    line = mapping["prompt"]
    for key, value in mapping.items():
        if key != "prompt":
            line += f" --{flags.get(key, key)} {value}"
    again = outcome(lambda: parse_text(line, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS))
    assert again == parsed


# ---------------------------------------------------------------------------
# Aspect ratios


@PROPERTY
@given(
    width=st.integers(1, 9999),
    height=st.integers(1, 9999),
    model=st.sampled_from(MODELS),
    count=st.integers(1, 4),
)
def test_ar_gives_multiples_of_64_within_budget(width, height, model, count):
    """Any ratio within 1:4–4:1 gives sides that are multiples of 64 in 128–2048, within the budget."""
    line = f"a red fox --model {model} --ar {width}:{height} --n {count}"
    result = outcome(lambda: parse_text(line, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS))
    if not 1 / 4 <= width / height <= 4:
        assert isinstance(result, InvalidOption)
        assert str(result).startswith("--ar must be WIDTH:HEIGHT between 1:4 and 4:1")
        return
    if isinstance(result, InvalidOption):
        # Only the model's own rules may refuse it (none of which is about the size).
        assert result.option != "size", str(result)
        return
    request = result.request
    for side in (request.width, request.height):
        assert side % 64 == 0 and 128 <= side <= 2048
    assert request.width * request.height * request.count <= LIMITS.pixel_budget
    if CATALOG.find("model", model).width == 1024:
        assert (request.width, request.height) in SDXL_BUCKETS
    # A landscape ratio never gives a portrait size, nor the other way round.
    if width > height:
        assert request.width >= request.height
    elif height > width:
        assert request.height >= request.width
    # The warning says so exactly when the ratio made is more than 5 % off.
    off = abs(math.log(request.width / request.height * height / width))
    assume(abs(off - math.log(1.05)) > 1e-9)
    warned = any(w.startswith("Aspect ratio") for w in result.warnings)
    assert warned == (off > math.log(1.05))


SIDES = st.integers(2, 32).map(lambda n: n * 64)  # every side a result can have: 128–2048 in 64s


@PROPERTY
@given(width=SIDES, height=SIDES, zoom=st.floats(1.01, 2.0))
def test_zoom_out_keeps_the_size_and_frames_the_image_in_the_middle(width: int, height: int, zoom: float) -> None:
    """Zoom Out of any result: a border of 64s, even on both ends of each axis, the image between, its ratio
    within one 64 step per side of the original; None exactly when a side is under 192 (no room for both)."""
    from bot.actions import ZOOM_OUT_SIDE
    from bot.options import zoom_out

    border = zoom_out(width, height, zoom)
    assert (border is None) == (min(width, height) < ZOOM_OUT_SIDE)
    if border is None:
        return
    assert (border.top, border.left) == (border.bottom, border.right) and border.blur == 0
    assert all(side >= 64 and side % 64 == 0 for side in border.sides)
    inner_w, inner_h = width - 2 * border.left, height - 2 * border.top
    assert inner_w >= 64 and inner_h >= 64
    # the shrink per axis is the zoom's, to one border pair (128) either way
    for side, inner in ((width, inner_w), (height, inner_h)):
        assert abs(inner - side / zoom) <= 128 or inner == side - 128


def test_zoom_out_examples() -> None:
    """The usual cases, to the pixel: square 1.5× and 2×, and a wide SDXL size whose ratio stays close."""
    from bot.options import zoom_out

    assert zoom_out(1024, 1024, 1.5).sides == (192, 192, 192, 192)  # type: ignore[union-attr]
    assert zoom_out(1024, 1024, 2).sides == (256, 256, 256, 256)  # type: ignore[union-attr]
    assert zoom_out(1152, 896, 1.5).sides == (128, 192, 128, 192)  # type: ignore[union-attr]  # 768×640
    assert zoom_out(128, 1024, 1.5) is None


@PROPERTY
@given(
    width=SIDES,
    height=SIDES,
    direction=st.sampled_from(["left", "right", "up", "down"]),
    budget=st.sampled_from([512 * 512, 1024 * 1024, 4 * 1024 * 1024]),
)
def test_pan_grows_one_side_by_about_half_within_the_limits(width: int, height: int, direction, budget: int) -> None:
    """Pan of any result: one side grows, in 64s, by half the image's side along it (halves up) or by the
    room left under 2048 and the pixel budget, whichever is less; None exactly when not 64 more fit."""
    from bot.options import pan

    strip = pan(width, height, direction, budget)
    along, across = (width, height) if direction in ("left", "right") else (height, width)
    room = min(2048, budget // across) - along
    if room < 64:
        assert strip is None
        return
    assert strip is not None and strip.blur == 0
    named = {"left": strip.left, "right": strip.right, "up": strip.top, "down": strip.bottom}
    grown = named.pop(direction)
    assert not any(named.values())  # the other three sides stay
    assert grown % 64 == 0 and 64 <= grown <= room
    assert along + grown <= 2048 and (along + grown) * across <= budget
    assert grown == min(max(64, math.floor(along / 128 + 0.5) * 64), room // 64 * 64)


@PROPERTY
@given(width=SIDES, height=SIDES, budget=st.sampled_from([512 * 512, 1024 * 1024, 4 * 1024 * 1024]))
def test_make_square_grows_the_short_side_on_both_ends_to_the_long_one(width: int, height: int, budget: int) -> None:
    """Make Square of any result: a square of the long side, the short side grown evenly in 64s (the odd 64 on
    the right or bottom), the long side untouched; None exactly for a square image or a square past the budget."""
    from bot.options import make_square

    strips = make_square(width, height, budget)
    side = max(width, height)
    if width == height or side * side > budget:
        assert strips is None
        return
    assert strips is not None and strips.blur == 0
    assert (width + strips.left + strips.right, height + strips.top + strips.bottom) == (side, side)
    first, second = (strips.left, strips.right) if width < height else (strips.top, strips.bottom)
    assert first % 64 == 0 and second % 64 == 0 and second - first in (0, 64)


def test_make_square_examples() -> None:
    from bot.options import make_square

    big = 4 * 1024 * 1024
    assert make_square(1216, 832, big).sides == (192, 0, 192, 0)  # type: ignore[union-attr]
    assert make_square(768, 1344, big).sides == (0, 320, 0, 256)  # type: ignore[union-attr]  # 576: 256 + 320
    assert make_square(2048, 1024, big).sides == (512, 0, 512, 0)  # type: ignore[union-attr]  # 2048² is the budget
    assert make_square(1024, 1024, big) is None
    assert make_square(1024, 512, 512 * 1024) is None  # a 1024² square passes the budget


def test_pan_examples() -> None:
    """The usual cases, to the pixel: a square grows by half, the last pan takes the room left, none past 2048."""
    from bot.options import pan

    big = 4 * 1024 * 1024
    assert pan(1024, 1024, "left", big).sides == (0, 0, 0, 512)  # type: ignore[union-attr]  # 1536×1024
    assert pan(1024, 1024, "down", big).sides == (0, 0, 512, 0)  # type: ignore[union-attr]
    assert pan(1536, 1024, "right", big).sides == (0, 512, 0, 0)  # type: ignore[union-attr]  # 2048×1024
    assert pan(1792, 1024, "right", big).sides == (0, 256, 0, 0)  # type: ignore[union-attr]  # room for 256
    assert pan(320, 128, "right", big).sides == (0, 192, 0, 0)  # type: ignore[union-attr]  # 160 halves up to 192
    assert pan(2048, 1024, "left", big) is None
    assert pan(512, 512, "up", 512 * 512) is None  # the budget is spent


@PROPERTY
@given(
    prompt=clean_text,
    negative=st.one_of(st.none(), clean_text),
    style=st.sampled_from(CATALOG.names("style")),
    padding=st.integers(0, 3000),
)
def test_a_style_keeps_every_word_typed_and_adds_its_own_or_says_the_prompt_is_too_long(
    prompt, negative, style, padding
):
    """Any prompt and negative (padded toward the 3,000-character limit): a style's result holds the prompt once in
    its place, then the style's negative words after the user's, or one sentence naming the style and the limit."""
    prompt = (prompt.strip() + " " + "x" * padding)[:3000].strip()
    entry = CATALOG.get("style", style)
    given = {"prompt": prompt, "style": style} | ({"negative": negative} if negative is not None else {})
    result = outcome(lambda: parse_options(given, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS))
    if isinstance(result, InvalidOption):
        if not str(result).startswith(f"style {style} makes the "):
            # The prompt's own refusal (it holds a flag, or a weight out of range): the same without the style.
            unstyled = {key: value for key, value in given.items() if key != "style"}
            again = outcome(
                lambda: parse_options(unstyled, catalog=CATALOG, defaults=Defaults(model="sdxl"), limits=LIMITS)
            )
            assert isinstance(again, InvalidOption) and str(again) == str(result)
            return
        assert str(result).endswith("; the most is 3000.")
        return
    request = result.request
    if entry.prompt is None:
        expected = prompt
    elif "{prompt}" in entry.prompt:
        before, _, after = entry.prompt.partition("{prompt}")
        expected = before + prompt + after
    else:
        expected = f"{prompt}, {entry.prompt}"
    assert request.prompt == expected and len(request.prompt) <= 3000
    negatives = [text for text in (negative.strip() if negative else None, entry.negative) if text]
    assert request.negative_prompt == (", ".join(negatives) or None)

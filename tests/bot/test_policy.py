"""Banned-word matching on normalised text, as property tests: however a word is dressed, it is found."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.catalog import load_catalog
from bot.errors import ContentBlocked, InvalidOption, NotEnabledHere
from bot.policy import Policy, normalise, rule_changes
from bot.request import GenerationRequest

CATALOG = load_catalog()
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10)
_DISGUISE = {"o": "0Oóö", "i": "1Iíï", "e": "3EéÊ", "a": "4@Aàä", "s": "5$S", "t": "7T"}


def request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, model="sdxl", seed=1)


@given(
    word=WORDS,
    data=st.data(),
    before=st.sampled_from(["", "a ", "x, ", "(("]),
    after=st.sampled_from(["", " now", "!", "..."]),
)
def test_a_banned_word_is_found_in_any_case_accent_or_leet(
    word: str, data: st.DataObject, before: str, after: str
) -> None:
    disguised = "".join(data.draw(st.sampled_from([char, char.upper(), *_DISGUISE.get(char, "")])) for char in word)
    with pytest.raises(ContentBlocked, match="banned word rule 1"):
        Policy(banned=(word,)).check(request(f"{before}{disguised}{after} here"))


@given(word=WORDS, extra=WORDS)
def test_a_banned_word_does_not_ban_longer_words_that_contain_it(word: str, extra: str) -> None:
    Policy(banned=(word,)).check(request(f"an image of {word}{extra} and {extra}{word}"))


@given(text=st.text(max_size=60))
def test_normalised_text_is_stable_and_plain(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert once.startswith(" ") and once.endswith(" ")
    assert set(once) <= set("abcdefghijklmnopqrstuvwxyz0123456789 ") - set("013457")


# -- adult content, flagged images, channels, sizes ------------------------------------------------


@pytest.mark.parametrize(
    ("flagged", "nsfw", "age_restricted", "display"),
    [
        ("spoiler", None, False, "show"),
        ("spoiler", False, False, "show"),
        ("spoiler", True, False, "spoiler"),
        ("spoiler", True, True, "spoiler"),
        ("allow", True, False, "spoiler"),  # never plainly outside an age-restricted channel
        ("allow", True, True, "show"),
        ("withhold", True, True, "withhold"),
        ("withhold", True, False, "withhold"),
    ],
)
def test_display_of_a_flagged_image(flagged, nsfw, age_restricted, display) -> None:
    """A flagged image is spoilered or withheld, and shown plainly only where the policy allows and adults are."""
    assert Policy(flagged=flagged).display(nsfw, age_restricted) == display


def test_the_channel_allowlist_names_where_the_bot_answers() -> None:
    """Outside the listed channels one sentence refuses; direct messages (no channel) are not refused."""
    policy = Policy(channels=("C1",))
    policy.check_channel("C1")
    policy.check_channel(None)
    with pytest.raises(NotEnabledHere, match="not enabled in this channel"):
        policy.check_channel("C2")


def max_pixels(text: str) -> object:
    return rule_changes(Policy(), CATALOG, max_size=text)["max_pixels"]


@given(st.integers(128, 2048), st.integers(128, 2048), st.sampled_from(["x", "X", "×", "*", " x ", " * "]))
def test_max_size_reads_every_valid_size(width: int, height: int, sep: str) -> None:
    """WxH in any accepted spelling gives its pixel count."""
    assert max_pixels(f"{width}{sep}{height}") == width * height


@given(st.text(max_size=20))
def test_max_size_refuses_garbage_with_a_sentence(text: str) -> None:
    """Anything else is one InvalidOption sentence naming the option, never another exception."""
    try:
        pixels = max_pixels(text)
    except InvalidOption as error:
        assert str(error).startswith("max_size")
    else:
        assert pixels is None or 128 * 128 <= pixels <= 2048 * 2048


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("big", "max_size must be WIDTHxHEIGHT such as 1024x1024 (0: no limit), not 'big'."),
        ("100x1024", "max_size must have sides from 128 to 2048, not 100x1024."),
        ("1000x1000", None),
        ("0", None),
    ],
)
def test_max_size_takes_any_side_within_a_requests_range(text: str, message: str | None) -> None:
    """A largest size need not be a multiple of 64; its sides are those a request may have."""
    if message is None:
        max_pixels(text)
        return
    with pytest.raises(InvalidOption) as caught:
        max_pixels(text)
    assert str(caught.value) == message


def test_blocked_models_and_loras_are_refused_and_none_clears_them() -> None:
    """A denylist beside each allowlist: named entries are refused; 'none' empties it."""
    catalog = load_catalog()
    policy = Policy().changed(rule_changes(Policy(), catalog, blocked_models="SDXL-Turbo", blocked_loras="tiny-lora"))
    assert policy.summary() == "rerolls: the author only; blocked models: sdxl-turbo; blocked LoRAs: tiny-lora."
    with pytest.raises(InvalidOption, match="'sdxl-turbo' is not allowed here"):
        policy.check(GenerationRequest(prompt="a red fox", model="sdxl-turbo"))
    with pytest.raises(InvalidOption, match="'tiny-lora' is not allowed here"):
        policy.check(GenerationRequest(prompt="a red fox", model="tiny", loras=[{"name": "tiny-lora", "weight": 1}]))
    policy.check(GenerationRequest(prompt="a red fox", model="tiny", loras=[{"name": "tiny-lora-2", "weight": 1}]))
    cleared = policy.changed(rule_changes(policy, catalog, blocked_models="none", blocked_loras="none"))
    assert cleared.blocked_models == () and cleared.blocked_loras == ()


@pytest.mark.parametrize(("flagged", "refused"), [("withhold", True), ("spoiler", False), ("allow", False)])
def test_a_flagged_input_is_refused_only_where_flagged_images_are_withheld(flagged: str, refused: bool) -> None:
    request = GenerationRequest(
        prompt="a fox", model="tiny", width=128, height=128, steps=20, cfg_scale=7.0, scheduler="Euler"
    )
    policy = Policy(flagged=flagged)
    policy.check(request)  # no flagged input: nothing to refuse
    if refused:
        with pytest.raises(ContentBlocked, match=r"^This request is not allowed here \(#3.2 was flagged"):
            policy.check(request, flagged_inputs=["#3.2"])
    else:
        policy.check(request, flagged_inputs=["#3.2"])


def test_a_default_model_is_a_catalog_model_the_server_allows_and_none_clears_it() -> None:
    """``default_model`` takes a catalog name as the catalog spells it; one the server's lists refuse is refused."""
    policy = Policy().changed(rule_changes(Policy(), CATALOG, default_model="SDXL-Turbo"))
    assert policy.default_model == "sdxl-turbo" and "default model: sdxl-turbo" in policy.summary()
    assert Policy().changed(rule_changes(policy, CATALOG, default_model="none")).default_model is None
    with pytest.raises(
        InvalidOption, match=r"^Default model 'sdxl-trubo' is not in the catalog; did you mean 'sdxl-turbo'"
    ):
        rule_changes(Policy(), CATALOG, default_model="sdxl-trubo")
    with pytest.raises(InvalidOption) as refused:
        policy.changed(rule_changes(policy, CATALOG, models="tiny"))
    assert str(refused.value) == (
        "Server setting is invalid: the default model 'sdxl-turbo' would not be allowed"
        " (set default_model to another, or none)."
    )
    with pytest.raises(InvalidOption):
        policy.changed(rule_changes(policy, CATALOG, blocked_models="sdxl-turbo"))
